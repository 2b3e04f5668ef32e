//! Inner cargo invocations.

use std::{env, path::Path, path::PathBuf, process::Command};

use anyhow::{Result, ensure};

use crate::{paths, process};

/// `cargo <args>` in the workspace root. Uses the cargo that started xtask (same toolchain),
/// with cargo's bin directory first on PATH: the nested BPF build needs bpf-linker from there.
pub fn cargo(root: &Path, args: &[&str]) -> Result<Command> {
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let path = paths::prepend_path(&paths::cargo_bin_dir()?, env::var_os("PATH").as_deref())?;
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(root).env("PATH", path);
    Ok(cmd)
}

/// Builds the benchmark harness (optimized, with debug info) and returns its path.
pub fn build_bench_harness(root: &Path) -> Result<PathBuf> {
    process::run(&mut cargo(
        root,
        &[
            "build",
            "--profile",
            "bench-harness",
            "-p",
            "profiler-bench",
        ],
    )?)?;
    let bin = paths::target_dir(root)
        .join("bench-harness")
        .join("profiler-bench");
    ensure!(
        bin.is_file(),
        "the build finished but {} is missing",
        bin.display()
    );
    Ok(bin)
}

/// Builds the release profiler and returns the path of its binary.
pub fn build_profiler(root: &Path) -> Result<PathBuf> {
    process::run(&mut cargo(
        root,
        &["build", "--release", "-p", "profiler-user"],
    )?)?;
    let bin = paths::profiler_bin(root);
    ensure!(
        bin.is_file(),
        "the build finished but {} is missing",
        bin.display()
    );
    Ok(bin)
}
