//! Gives the `cascade` binary a run path to libtorch, so it starts without LD_LIBRARY_PATH.

include!("libtorch_rpath.rs");

fn main() {
    emit_libtorch_rpath();
}
