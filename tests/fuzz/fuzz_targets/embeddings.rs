#![no_main]
//! libFuzzer entry for `cascade_fuzz::embeddings` (see src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| cascade_fuzz::embeddings(data));
