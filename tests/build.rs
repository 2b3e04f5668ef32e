//! Builds the test fixtures into OUT_DIR and exports their paths as `FIXTURE_*` env vars.
//!
//! The executables' names are longer than 15 bytes on purpose: the kernel truncates `comm`, and
//! the tests check the profiler reports the truncated name.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Flags of every C fixture: frame pointers so the BPF side can unwind them (see TOOLCHAIN.md).
const CFLAGS: &[&str] = &["-O2", "-g", "-fno-omit-frame-pointer"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let fixtures = manifest_dir.join("fixtures");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    let hot_c = build_c(
        &fixtures.join("hot.c"),
        &out_dir.join("fixture-hot-c-frames"),
    );
    let syscalls = build_c(
        &fixtures.join("syscalls.c"),
        &out_dir.join("fixture-syscalls-loop"),
    );
    let hot_rust = build_rust(
        &fixtures.join("hot.rs"),
        &out_dir.join("fixture-hot-rust-frames"),
    );

    export("FIXTURE_HOT_C", &hot_c);
    export("FIXTURE_SYSCALLS_C", &syscalls);
    export("FIXTURE_HOT_RUST", &hot_rust);
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
}

fn build_c(source: &Path, output: &Path) -> PathBuf {
    println!("cargo:rerun-if-changed={}", source.display());
    let mut cmd = Command::new("gcc");
    cmd.args(CFLAGS).arg("-o").arg(output).arg(source);
    run(cmd);
    output.to_owned()
}

fn build_rust(source: &Path, output: &Path) -> PathBuf {
    println!("cargo:rerun-if-changed={}", source.display());
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition", "2021", "--crate-name", "hot"])
        .args(["-C", "opt-level=2", "-C", "force-frame-pointers=yes", "-g"])
        // rustc's linker call adds no build ID by default; the tests check it is reported.
        .args(["-C", "link-arg=-Wl,--build-id"])
        .arg("-o")
        .arg(output)
        .arg(source);
    run(cmd);
    output.to_owned()
}

fn run(mut cmd: Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

fn export(name: &str, path: &Path) {
    println!("cargo:rustc-env={name}={}", path.display());
}
