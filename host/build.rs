//! Runs within the first minute of a cold build (it needs nothing but the
//! vendored embedder's C build), long before the host is compiled: makes
//! sure the toolchain can build stages, so `cargo run -- serve` on a
//! machine whose rustup toolchain lacks the component target does not fail
//! half an hour later with "can't find crate for `std`".

use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    native_tools();
    stage_target();
}

/// whisper.cpp is built with cmake and bound with libclang: without them the
/// build fails minutes later, deep in whisper-rs-sys. Say it now.
fn native_tools() {
    let mut missing = Vec::new();
    if Command::new("cmake").arg("--version").output().is_err() {
        missing.push("cmake");
    }
    if cfg!(target_os = "linux") && std::env::var_os("LIBCLANG_PATH").is_none() && !libclang_found()
    {
        missing.push("libclang-dev");
    }
    if !missing.is_empty() {
        let hint = if missing.contains(&"libclang-dev") {
            "\n(or set LIBCLANG_PATH to the directory holding libclang.so)"
        } else {
            ""
        };
        panic!(
            "\n\ncallpipe builds whisper.cpp, which needs {}.\nOn Debian or Ubuntu: apt-get install {}{hint}\n",
            missing.join(" and "),
            missing.join(" ")
        );
    }
}

/// `libclang.so` itself, as libclang-dev installs it (libclang-cpp, which
/// other packages bring, is not it).
fn libclang_found() -> bool {
    let dirs = [
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ];
    let has = |dir: &std::path::Path| {
        std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("libclang.so"))
        })
    };
    if dirs.iter().any(|d| has(std::path::Path::new(d))) {
        return true;
    }
    // Debian's llvm-N packages.
    std::fs::read_dir("/usr/lib").is_ok_and(|rd| {
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
            .any(|e| has(&e.path().join("lib")))
    })
}

/// Where the toolchain keeps the target's standard library: watched, so
/// the script runs again (quietly) once the target is there, instead of
/// cargo replaying an old "missing" warning on every build.
fn target_dir_in_sysroot() -> Option<std::path::PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    Some(
        std::path::Path::new(sysroot.trim())
            .join("lib")
            .join("rustlib")
            .join(TARGET),
    )
}

fn stage_target() {
    if let Some(dir) = target_dir_in_sysroot() {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let rustup = std::env::var("RUSTUP").unwrap_or_else(|_| "rustup".into());
    let installed = match Command::new(&rustup)
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        // No rustup: the stages' build will say what is missing.
        _ => return,
    };
    if installed.lines().any(|l| l.trim() == TARGET) {
        return;
    }
    println!(
        "cargo:warning=the Rust target {TARGET} (for the pipeline's stages) is missing: running `rustup target add {TARGET}`"
    );
    let added = Command::new(&rustup)
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added {
        println!(
            "cargo:warning=`rustup target add {TARGET}` failed: run it yourself before `callpipe serve` builds the stages"
        );
    }
}
