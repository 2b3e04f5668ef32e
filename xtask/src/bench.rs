//! `cargo xtask bench`: installs the reference tools (perf, bpftrace, addr2line,
//! llvm-symbolizer) and builds profile-bee, builds the profiler and the harness, and runs the
//! harness as root.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, ensure};

use std::process::Command;

use crate::{cargo_cmd, paths, privilege, process, setup};

pub fn bench(root: &Path, quick: bool, extra: Vec<OsString>) -> Result<ExitCode> {
    setup::setup(root)?;
    setup::setup_bench()?;
    let profile_bee = install_profile_bee(root)?;
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
        .arg("--profile-bee")
        .arg(&profile_bee)
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

/// profile-bee, the second eBPF peer of the kernel-cost and footprint parts (issue 18): this
/// release from crates.io, whose crate ships its BPF object prebuilt (`ebpf-bin/`), so only its
/// userspace is compiled, by the workspace's stable toolchain. Newer releases may need a newer
/// compiler; change the pin and the note in BENCHMARKS.md together.
const PROFILE_BEE_VERSION: &str = "0.3.13";

/// Installs `probee` under the target directory, unless this version is there already, and
/// returns its path. Without default features: they add the TUI, the AWS SDK (most of a
/// 20-minute build), the OTLP exporter and a symbol server, none of which the benchmark's
/// invocation (frame pointers, pprof files) uses. Built once in its own target directory, so
/// an interrupted build resumes.
fn install_profile_bee(root: &Path) -> Result<PathBuf> {
    let tools = paths::target_dir(root).join("bench-tools");
    let install = tools.join("profile-bee");
    let bin = install.join("bin").join("probee");
    let wanted = format!("profile-bee {PROFILE_BEE_VERSION}");
    let installed = process::output_if_ok(Command::new(&bin).arg("--version"));
    if installed.as_deref().map(str::trim) == Some(wanted.as_str()) {
        println!("setup: {wanted} is installed");
        return Ok(bin);
    }
    println!("setup: building {wanted} from crates.io (a few minutes, once)");
    let install_dir = install.to_string_lossy().into_owned();
    let target_dir = tools
        .join("profile-bee-build")
        .to_string_lossy()
        .into_owned();
    let version = format!("={PROFILE_BEE_VERSION}");
    process::run(&mut cargo_cmd::cargo(
        root,
        &[
            "install",
            "profile-bee",
            "--version",
            &version,
            "--locked",
            "--no-default-features",
            // Our check above found it missing or another version: cargo's record may not.
            "--force",
            "--root",
            &install_dir,
            "--target-dir",
            &target_dir,
        ],
    )?)
    .context("could not build profile-bee from crates.io")?;
    ensure!(
        bin.is_file(),
        "cargo install finished but {} is missing",
        bin.display()
    );
    Ok(bin)
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
