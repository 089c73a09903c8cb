// Shared by origin/build.rs and tests/support/build.rs (through `include!`).
//
// torch-sys knows where libtorch is (it exports `DEP_TCH_LIBTORCH_LIB` to crates that depend on it
// directly), but a dependency's link arguments don't reach the final binary: each package that
// links libtorch emits its own run path. `--no-as-needed -ltorch` keeps libtorch_cuda linked on a
// GPU machine; without it `tch::Cuda::is_available()` is silently false (../shared/TOOLCHAIN.md).
fn emit_libtorch_rpath() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
