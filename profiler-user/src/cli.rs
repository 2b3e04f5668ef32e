//! Command line: subcommands and flags, each flag also readable from a `PROFILER_*` variable.

use std::{net::SocketAddr, path::PathBuf};

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "profiler",
    version,
    about = "Whole-host eBPF CPU profiler writing pprof files"
)]
pub struct Cli {
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample CPU stacks and write one pprof file per interval.
    Record(RecordArgs),
}

#[derive(Clone, Debug, Args, PartialEq)]
pub struct RecordArgs {
    /// Only sample these processes (repeat, or comma-separate); default: the whole host.
    #[arg(
        long = "pid",
        value_name = "PID",
        env = "PROFILER_PID",
        value_delimiter = ','
    )]
    pub pids: Vec<u32>,
    /// Only sample processes in this cgroup v2 or below it: a directory of the cgroup2 mount,
    /// or the path /proc/PID/cgroup shows (repeat, or comma-separate).
    #[arg(
        long = "cgroup",
        value_name = "PATH",
        env = "PROFILER_CGROUP",
        value_delimiter = ','
    )]
    pub cgroups: Vec<PathBuf>,
    /// Only sample this container's processes: its ID (64 hex digits, a unique prefix of 12 or
    /// more, or runtime://ID as Kubernetes shows it); repeat, or comma-separate.
    #[arg(
        long = "container",
        value_name = "ID",
        env = "PROFILER_CONTAINER",
        value_delimiter = ','
    )]
    pub containers: Vec<String>,
    /// Samples per second on each CPU.
    #[arg(long, value_name = "HZ", env = "PROFILER_FREQUENCY", default_value_t = 19,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub frequency: u64,
    /// Stop after this many seconds; default: until SIGINT or SIGTERM.
    #[arg(long, value_name = "SECONDS", env = "PROFILER_DURATION",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,
    /// Write a profile every this many seconds.
    #[arg(long, value_name = "SECONDS", env = "PROFILER_INTERVAL", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
    /// Directory for the pprof files (created if missing).
    #[arg(
        long,
        value_name = "DIR",
        env = "PROFILER_OUTPUT_DIR",
        default_value = "profiles"
    )]
    pub output_dir: PathBuf,
    /// Keep the output under this many MiB: the oldest profiles are deleted first (0: no limit).
    #[arg(
        long,
        value_name = "MB",
        env = "PROFILER_MAX_DISK_MB",
        default_value_t = 1024
    )]
    pub max_disk_mb: u64,
    /// Do not read kernel stacks.
    #[arg(long, env = "PROFILER_NO_KERNEL_STACKS")]
    pub no_kernel_stacks: bool,
    /// Also sample the idle task (pid 0).
    #[arg(long, env = "PROFILER_INCLUDE_IDLE")]
    pub include_idle: bool,
    /// Do not read the threads' OpenTelemetry trace context (no trace labels, no trace files).
    #[arg(long, env = "PROFILER_NO_TRACE_CONTEXT")]
    pub no_trace_context: bool,
    /// Distinct traces kept per interval; samples of further traces keep their stacks only.
    #[arg(long, value_name = "N", env = "PROFILER_MAX_TRACES_PER_INTERVAL", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_traces_per_interval: u32,
    /// Serve Prometheus metrics, /healthz and /readyz on this address (`off`: no server).
    #[arg(long, value_name = "ADDRESS", env = "PROFILER_METRICS_ADDRESS",
          default_value = "127.0.0.1:9464", value_parser = metrics_address)]
    pub metrics_address: MetricsAddress,
    /// The node name written into profiles and metrics; default: this host's name.
    #[arg(long, value_name = "NAME", env = "PROFILER_NODE_NAME")]
    pub node_name: Option<String>,
    #[command(flatten)]
    pub adaptive: AdaptiveArgs,
}

/// Where the metrics server listens; `None` when turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddress(pub Option<SocketAddr>);

fn metrics_address(text: &str) -> Result<MetricsAddress, String> {
    if text == "off" {
        return Ok(MetricsAddress(None));
    }
    text.parse()
        .map(|address| MetricsAddress(Some(address)))
        .map_err(|_| format!("{text:?} is not an IP:PORT address (or `off`)"))
}

/// Adaptive sampling: follow host load, capture incidents, stay under an overhead budget.
#[derive(Clone, Debug, Args, PartialEq)]
pub struct AdaptiveArgs {
    /// Keep the rate fixed at --frequency: no incident captures, no overhead governor.
    #[arg(long, env = "PROFILER_NO_ADAPTIVE")]
    pub no_adaptive: bool,
    /// Host CPU utilization (0-1) above which an incident is captured.
    #[arg(long, value_name = "FRACTION", env = "PROFILER_CPU_THRESHOLD", default_value_t = 0.70,
          value_parser = fraction)]
    pub cpu_threshold: f64,
    /// Host memory in use (0-1) above which an incident is captured.
    #[arg(long, value_name = "FRACTION", env = "PROFILER_MEM_THRESHOLD", default_value_t = 0.80,
          value_parser = fraction)]
    pub mem_threshold: f64,
    /// Sampling rate during an incident capture, per CPU.
    #[arg(long, value_name = "HZ", env = "PROFILER_CAPTURE_FREQUENCY", default_value_t = 99,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub capture_frequency: u64,
    /// Length of an incident capture.
    #[arg(long, value_name = "SECONDS", env = "PROFILER_CAPTURE_DURATION", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub capture_duration: u64,
    /// At most one capture per this many seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "PROFILER_CAPTURE_MIN_INTERVAL",
        default_value_t = 600
    )]
    pub capture_min_interval: u64,
    /// The profiler's own cost ceiling, as a fraction of the host's CPU capacity.
    #[arg(long, value_name = "FRACTION", env = "PROFILER_OVERHEAD_BUDGET", default_value_t = 0.01,
          value_parser = fraction)]
    pub overhead_budget: f64,
    /// The rate the overhead governor never goes below.
    #[arg(long, value_name = "HZ", env = "PROFILER_MIN_FREQUENCY", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub min_frequency: u64,
}

/// A number in (0, 1].
fn fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!("{value} is not in (0, 1]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(args: &[&str]) -> Result<RecordArgs, clap::Error> {
        let cli = Cli::try_parse_from(["profiler", "record"].iter().chain(args))?;
        let Command::Record(record) = cli.command;
        Ok(record)
    }

    #[test]
    fn defaults() {
        let args = record(&[]).unwrap();
        assert_eq!(args.frequency, 19);
        assert_eq!(args.interval, 10);
        assert_eq!(args.duration, None);
        assert_eq!(args.output_dir, PathBuf::from("profiles"));
        assert_eq!(args.max_disk_mb, 1024);
        assert!(args.pids.is_empty() && !args.no_kernel_stacks && !args.include_idle);
        assert!(args.cgroups.is_empty() && args.containers.is_empty());
        assert!(!args.no_trace_context);
        assert_eq!(args.max_traces_per_interval, 10_000);
        assert_eq!(
            args.metrics_address,
            MetricsAddress(Some("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(args.node_name, None);
        let adaptive = &args.adaptive;
        assert!(!adaptive.no_adaptive);
        assert_eq!(
            (adaptive.cpu_threshold, adaptive.mem_threshold),
            (0.70, 0.80)
        );
        assert_eq!(
            (adaptive.capture_frequency, adaptive.capture_duration),
            (99, 30)
        );
        assert_eq!(adaptive.capture_min_interval, 600);
        assert_eq!(
            (adaptive.overhead_budget, adaptive.min_frequency),
            (0.01, 1)
        );
    }

    #[test]
    fn repeated_and_comma_separated_pids() {
        let args = record(&["--pid", "1", "--pid", "2,3", "--frequency", "99"]).unwrap();
        assert_eq!(args.pids, vec![1, 2, 3]);
        assert_eq!(args.frequency, 99);
    }

    #[test]
    fn metrics_address_takes_an_address_or_off() {
        let args = record(&["--metrics-address", "0.0.0.0:1234"]).unwrap();
        assert_eq!(
            args.metrics_address.0,
            Some("0.0.0.0:1234".parse().unwrap())
        );
        let args = record(&["--metrics-address", "[::1]:9"]).unwrap();
        assert_eq!(args.metrics_address.0, Some("[::1]:9".parse().unwrap()));
        assert_eq!(
            record(&["--metrics-address", "off"])
                .unwrap()
                .metrics_address
                .0,
            None
        );
        assert!(record(&["--metrics-address", "localhost"]).is_err());
    }

    #[test]
    fn cgroup_and_container_targets() {
        let args = record(&[
            "--cgroup",
            "/a.slice",
            "--container",
            "abc,def",
            "--cgroup",
            "b",
        ])
        .unwrap();
        assert_eq!(
            args.cgroups,
            vec![PathBuf::from("/a.slice"), PathBuf::from("b")]
        );
        assert_eq!(args.containers, vec!["abc", "def"]);
    }

    #[test]
    fn rejects_nonsense() {
        assert!(record(&["--frequency", "0"]).is_err());
        assert!(record(&["--interval", "0"]).is_err());
        assert!(record(&["--pid", "abc"]).is_err());
        assert!(record(&["--duration", "-1"]).is_err());
        assert!(record(&["--max-traces-per-interval", "0"]).is_err());
        assert!(record(&["--cpu-threshold", "1.5"]).is_err());
        assert!(record(&["--overhead-budget", "0"]).is_err());
        assert!(record(&["--mem-threshold", "abc"]).is_err());
    }

    #[test]
    fn verbose_counts() {
        let cli = Cli::try_parse_from(["profiler", "-vv", "record"]).unwrap();
        assert_eq!(cli.verbose, 2);
    }
}
