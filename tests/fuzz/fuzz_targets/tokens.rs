#![no_main]
//! libFuzzer entry for `cascade_fuzz::tokens` (see src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| cascade_fuzz::tokens(data));
