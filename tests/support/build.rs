//! Gives the end-to-end package's tests and benches a run path to libtorch: they link it through
//! cascade-origin and, like the `cascade` binary, need a run path of their own.

include!("../../origin/libtorch_rpath.rs");

fn main() {
    emit_libtorch_rpath();
}
