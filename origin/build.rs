//! Gives the `cascade` binary a run path to libtorch, so it starts without LD_LIBRARY_PATH.
//!
//! torch-sys knows where libtorch is (it exports `DEP_TCH_LIBTORCH_LIB` to crates that depend on it
//! directly), but a dependency's link arguments don't reach the final binary: we emit them here.
//! `--no-as-needed -ltorch` keeps libtorch_cuda linked on a GPU machine; without it
//! `tch::Cuda::is_available()` is silently false (../shared/TOOLCHAIN.md).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
