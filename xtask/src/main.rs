//! `cargo xtask <task>`: the workspace's developer tasks (setup, build, run, test, bench,
//! kernels), in Rust so that they need nothing beyond cargo and run the same on a laptop and in
//! CI.

mod bench;
mod cargo_cmd;
mod deploy_tools;
mod fuzz;
mod go_toolchains;
mod kernels;
mod paths;
mod privilege;
mod process;
mod run;
mod setup;
mod test;

use std::{ffi::OsString, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Developer tasks for the profiler workspace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: Debian packages, gcc, bpf-linker, the deploy linters, the Go
    /// toolchains of the Go fixtures.
    Setup,
    /// Install what building needs if missing (not the test tools), then build the release
    /// profiler (target/release/profiler).
    Build,
    /// Set up, build, and run the profiler as root (default arguments: `record`).
    Run {
        /// Arguments for the profiler, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, then rustfmt check, clippy, release build and `cargo test` (all host packages);
    /// as root with `--include-ignored`, which runs the tests that need root.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up (with perf, bpftrace, addr2line, llvm-symbolizer), build, and run the benchmarks
    /// as root; a full run writes BENCHMARKS.md.
    Bench {
        /// Fewer rounds and shorter windows (about seven minutes); writes
        /// target/bench/BENCHMARKS-quick.md instead.
        #[arg(long)]
        quick: bool,
        /// Extra arguments for the harness (e.g. `--only output,symbolization`), after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The kernel matrix: boot pinned Debian kernels (5.10, 6.1, 6.12, 7.3, and 6.1-arm64 with
    /// a cross-built profiler) under QEMU with the release profiler in a minimal initramfs,
    /// check that it loads, samples, reads trace contexts and filters by cgroup, do the same on
    /// the host's own kernel, and print a table; kernels and consoles are kept under
    /// target/kernels/.
    Kernels {
        /// Only this kernel: a series such as `6.1`, `6.1-arm64`, a release, or `host` (repeat
        /// for several).
        #[arg(long = "kernel", value_name = "VERSION")]
        kernels: Vec<String>,
    },
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().task) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(task: Task) -> Result<ExitCode> {
    let root = paths::workspace_root();
    match task {
        Task::Setup => setup::setup(&root)?,
        Task::Build => {
            setup::setup_build(&root)?;
            cargo_cmd::build_profiler(&root)?;
        }
        Task::Run { args } => return run::run(&root, args),
        Task::Test { args } => test::test(&root, args)?,
        Task::Bench { quick, args } => return bench::bench(&root, quick, args),
        Task::Kernels { kernels } => return kernels::kernels(&root, &kernels),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Task {
        Cli::try_parse_from(args).expect("valid command line").task
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_profiler_arguments_after_double_dash() {
        let Task::Run { args } = parse(&["xtask", "run", "--", "record", "--pid", "1"]) else {
            panic!("expected run");
        };
        assert_eq!(args, ["record", "--pid", "1"]);
    }

    #[test]
    fn bench_takes_quick_and_harness_arguments() {
        let Task::Bench { quick, args } =
            parse(&["xtask", "bench", "--quick", "--", "--only", "output"])
        else {
            panic!("expected bench");
        };
        assert!(quick);
        assert_eq!(args, ["--only", "output"]);
    }

    #[test]
    fn kernels_takes_repeated_kernel_flags() {
        let Task::Kernels { kernels } =
            parse(&["xtask", "kernels", "--kernel", "6.1", "--kernel", "5.10"])
        else {
            panic!("expected kernels");
        };
        assert_eq!(kernels, ["6.1", "5.10"]);
    }

    #[test]
    fn test_passes_everything_after_double_dash_to_cargo_test() {
        let Task::Test { args } = parse(&["xtask", "test", "--", "name", "--", "--nocapture"])
        else {
            panic!("expected test");
        };
        assert_eq!(args, ["name", "--", "--nocapture"]);
    }
}
