#![no_main]
//! libFuzzer entry for `cascade_fuzz::queries` (see src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| cascade_fuzz::queries(data));
