//! `cargo xtask bench`: installs the reference tools (perf, bpftrace, addr2line,
//! llvm-symbolizer), builds the profiler and the harness, and runs the harness as root.

use std::{ffi::OsString, path::Path, process::ExitCode};

use anyhow::{Context, Result};

use std::process::Command;

use crate::{cargo_cmd, paths, privilege, process, setup};

pub fn bench(root: &Path, quick: bool, extra: Vec<OsString>) -> Result<ExitCode> {
    setup::setup(root)?;
    setup::setup_bench()?;
    let profiler = cargo_cmd::build_profiler(root)?;
    let harness = cargo_cmd::build_bench_harness(root)?;
    // The harness runs without its debug info: the profilers it measures sample it too, and
    // parsing 90 MiB of DWARF would be charged to their memory. The full binary stays the
    // symbolization benchmark's input.
    let stripped = harness.with_file_name("profiler-bench-stripped");
    process::run(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&harness)
            .arg(&stripped),
    )
    .context("could not strip the harness (objcopy is in binutils)")?;
    let mut cmd = privilege::as_root(&stripped, &[], "the benchmarks")?;
    cmd.current_dir(root)
        .arg("--symbols-binary")
        .arg(&harness)
        .arg("--profiler")
        .arg(&profiler)
        .arg("--output")
        .arg(report_path(root, quick))
        .args(["--invoked-as", "cargo xtask bench"]);
    if quick {
        cmd.arg("--quick");
    }
    let status = cmd
        .args(extra)
        .status()
        .context("could not start the benchmark harness")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The full run writes the committed BENCHMARKS.md; a quick run leaves it alone.
fn report_path(root: &Path, quick: bool) -> std::path::PathBuf {
    if quick {
        paths::target_dir(root)
            .join("bench")
            .join("BENCHMARKS-quick.md")
    } else {
        root.join("BENCHMARKS.md")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_runs_do_not_overwrite_the_committed_report() {
        let root = Path::new("/w");
        assert_eq!(report_path(root, false), Path::new("/w/BENCHMARKS.md"));
        assert!(report_path(root, true).ends_with("bench/BENCHMARKS-quick.md"));
    }
}
