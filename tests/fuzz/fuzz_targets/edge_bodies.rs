#![no_main]
//! libFuzzer entry for `cascade_fuzz::edge_bodies` (see src/lib.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| cascade_fuzz::edge_bodies(data));
