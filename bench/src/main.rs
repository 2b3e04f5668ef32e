//! `profiler-bench`: measures the profiler next to `perf record` and bpftrace and writes
//! BENCHMARKS.md. Started by `cargo xtask bench`, which installs the references and builds this
//! harness with debug info (it is also the large binary the symbolization benchmark reads).

mod fdinfo;
mod fixtures;
mod floor;
mod machine;
mod parts;
mod plan;
mod report;
mod stats;
mod tools;
mod workload;

use std::{
    fs,
    os::unix::fs::chown,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use crate::{
    machine::Machine,
    parts::{Bench, Part},
    plan::Plan,
    report::Report,
};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the profiler side by side with perf and bpftrace")]
struct Args {
    /// Fewer rounds and shorter windows: under eight minutes, indicative only.
    #[arg(long)]
    quick: bool,
    /// The profiler binary to measure.
    #[arg(long, value_name = "PATH", default_value = "target/release/profiler")]
    profiler: PathBuf,
    /// A large binary with debug info for the symbolization benchmark (default: this harness).
    #[arg(long, value_name = "PATH")]
    symbols_binary: Option<PathBuf>,
    /// Where to write the report.
    #[arg(long, value_name = "PATH", default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// Repeat every variant this many times instead of the plan's number of rounds.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    rounds: Option<u16>,
    /// Run only these parts (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// The command line the report names as the one that produced it.
    #[arg(long, value_name = "TEXT", default_value = "cargo xtask bench")]
    invoked_as: String,
    /// profile-bee's binary, the second eBPF peer (`cargo xtask bench` installs it there).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "target/bench-tools/profile-bee/bin/probee"
    )]
    profile_bee: PathBuf,
    /// Instead of benchmarking: sample with the kernel-cost part's floor program at this rate
    /// until killed (the part starts the harness so, as one of the tools it measures).
    #[arg(long, value_name = "HZ", hide = true)]
    floor: Option<u64>,
}

impl Args {
    fn parts(&self) -> Vec<Part> {
        if self.only.is_empty() {
            Part::ALL.to_vec()
        } else {
            let mut parts = self.only.clone();
            parts.sort_unstable();
            parts.dedup();
            parts
        }
    }

    fn plan(&self) -> Plan {
        let mut plan = if self.quick {
            Plan::quick()
        } else {
            Plan::full()
        };
        if let Some(rounds) = self.rounds {
            plan.rounds = usize::from(rounds);
            plan.footprint_rounds = usize::from(rounds);
        }
        plan
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.floor {
        Some(rate) => floor::run(rate),
        None => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("profiler-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let parts = args.parts();
    check_prerequisites(&args, &parts)?;
    let started = Instant::now();
    let plan = args.plan();
    let scratch = tempfile::Builder::new()
        .prefix("profiler-bench-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    let harness = std::env::current_exe().context("cannot find this program's binary")?;
    let symbols_binary = args.symbols_binary.clone().unwrap_or(harness.clone());
    println!(
        "profiler-bench: {} run of {} part(s), about {:.0} s",
        if args.quick { "a quick" } else { "a full" },
        parts.len(),
        estimate(&plan, &parts)
    );
    let bench = Bench::new(
        plan,
        args.profiler.clone(),
        args.profile_bee.clone(),
        harness,
        symbols_binary,
        scratch.path(),
    );
    let mut sections = Vec::new();
    let mut targets = Vec::new();
    for part in &parts {
        let result = part
            .run(&bench)
            .with_context(|| format!("the {part:?} benchmark failed"))?;
        sections.push(result.section);
        targets.extend(result.targets);
    }
    let report = Report {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        command: invoked_as(&args),
        quick: args.quick,
        elapsed_s: started.elapsed().as_secs_f64(),
        machine: Machine::describe(&profiler_version(), &args.profile_bee),
        sections,
        targets,
    };
    write_report(&args.output, &report.markdown())?;
    println!("\nprofiler-bench: wrote {}", args.output.display());
    for target in &report.targets {
        let verdict = if target.met { "met" } else { "MISSED" };
        println!("  {verdict:<6} {}: {}", target.goal, target.measured);
    }
    Ok(())
}

/// The command line that reproduces the run, as the report shows it.
fn invoked_as(args: &Args) -> String {
    let mut command = args.invoked_as.clone();
    if args.quick {
        command.push_str(" --quick");
    }
    if let Some(rounds) = args.rounds {
        command.push_str(&format!(" --rounds {rounds}"));
    }
    if !args.only.is_empty() {
        let names: Vec<String> = args
            .parts()
            .iter()
            .filter_map(|p| p.to_possible_value().map(|v| v.get_name().to_owned()))
            .collect();
        command.push_str(&format!(" --only {}", names.join(",")));
    }
    command
}

fn estimate(plan: &Plan, parts: &[Part]) -> f64 {
    plan.estimate_s()
        .iter()
        .zip(Part::ALL)
        .filter(|(_, part)| parts.contains(part))
        .map(|((_, seconds), _)| seconds)
        .sum()
}

fn check_prerequisites(args: &Args, parts: &[Part]) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && let Some(part) = parts.iter().find(|p| p.needs_root()) {
        bail!(
            "the {part:?} benchmark loads BPF programs and needs root: run `cargo xtask bench`, \
             or pass `--only symbolization,output`"
        );
    }
    if parts.iter().any(|p| p.needs_root()) && !args.profiler.is_file() {
        bail!(
            "no profiler binary at {}: build it with `cargo xtask build` or pass --profiler",
            args.profiler.display()
        );
    }
    if parts.iter().any(|p| p.runs_profile_bee()) && !args.profile_bee.is_file() {
        bail!(
            "no profile-bee binary at {}: `cargo xtask bench` installs it, or pass --profile-bee",
            args.profile_bee.display()
        );
    }
    for part in parts {
        for program in part.programs() {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .output()
                .is_ok_and(|out| out.status.success());
            if !found {
                bail!(
                    "{program} is not installed (the {part:?} benchmark needs it): run `cargo xtask bench`, which installs it"
                );
            }
        }
    }
    Ok(())
}

/// The commit the measured profiler was built from, when run inside its git checkout.
fn profiler_version() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!(
                "commit {commit}{}",
                if dirty { " with local changes" } else { "" }
            )
        }
        None => "unknown commit".into(),
    }
}

/// Writes the report atomically; under sudo, gives it to the user who ran sudo.
fn write_report(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let temp = path.with_extension("md.tmp");
    fs::write(&temp, text).with_context(|| format!("cannot write {}", temp.display()))?;
    fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))?;
    let id = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    if let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) {
        let _ = chown(path, Some(uid), Some(gid));
    }
    Ok(())
}

pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(args).expect("valid command line")
    }

    #[test]
    fn cli_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn quick_selects_the_quick_plan() {
        assert_eq!(parse(&["b", "--quick"]).plan(), Plan::quick());
        assert_eq!(parse(&["b"]).plan(), Plan::full());
    }

    #[test]
    fn rounds_override_the_plan() {
        let plan = parse(&["b", "--quick", "--rounds", "7"]).plan();
        assert_eq!((plan.rounds, plan.footprint_rounds), (7, 7));
        assert!(Args::try_parse_from(["b", "--rounds", "0"]).is_err());
    }

    #[test]
    fn only_takes_a_comma_separated_list() {
        let args = parse(&["b", "--only", "output,symbolization,output"]);
        assert_eq!(args.parts(), [Part::Symbolization, Part::Output]);
        assert_eq!(parse(&["b"]).parts(), Part::ALL);
        assert!(Args::try_parse_from(["b", "--only", "nonsense"]).is_err());
    }

    #[test]
    fn report_names_the_command_that_reproduces_it() {
        let args = parse(&["b", "--quick", "--only", "output"]);
        assert_eq!(invoked_as(&args), "cargo xtask bench --quick --only output");
    }

    #[test]
    fn estimate_counts_only_selected_parts() {
        let plan = Plan::quick();
        assert!(estimate(&plan, &[Part::Output]) < estimate(&plan, &Part::ALL));
        assert!(estimate(&plan, &[Part::OffCpu]) > 0.0);
    }

    #[test]
    fn off_cpu_part_is_named_off_cpu() {
        assert_eq!(parse(&["b", "--only", "off-cpu"]).parts(), [Part::OffCpu]);
        // The estimates are listed in the order of the parts.
        let names: Vec<&str> = Plan::full().estimate_s().iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), Part::ALL.len());
        assert_eq!(names.last(), Some(&"off-CPU"));
    }
}
