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
        .arg(report_path(root, quick, is_partial(&extra)))
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

/// Whether the harness arguments change the plan (some parts, other rounds): such a run is not
/// the full benchmark and must not replace the committed report.
fn is_partial(extra: &[OsString]) -> bool {
    extra.iter().any(|arg| {
        let arg = arg.to_string_lossy();
        ["--only", "--rounds"]
            .iter()
            .any(|flag| arg == *flag || arg.starts_with(&format!("{flag}=")))
    })
}

/// The full run writes the committed BENCHMARKS.md; a quick or partial run leaves it alone.
fn report_path(root: &Path, quick: bool, partial: bool) -> std::path::PathBuf {
    let bench = paths::target_dir(root).join("bench");
    match (quick, partial) {
        (true, _) => bench.join("BENCHMARKS-quick.md"),
        (false, true) => bench.join("BENCHMARKS-partial.md"),
        (false, false) => root.join("BENCHMARKS.md"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_and_partial_runs_do_not_overwrite_the_committed_report() {
        let root = Path::new("/w");
        assert_eq!(
            report_path(root, false, false),
            Path::new("/w/BENCHMARKS.md")
        );
        assert!(report_path(root, true, false).ends_with("bench/BENCHMARKS-quick.md"));
        assert!(report_path(root, false, true).ends_with("bench/BENCHMARKS-partial.md"));
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(is_partial(&args(&["--only", "output"])));
        assert!(is_partial(&args(&["--rounds=3"])));
        assert!(!is_partial(&args(&[])));
    }
}
