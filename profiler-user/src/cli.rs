//! Command line: subcommands and flags, each flag also readable from a `PROFILER_*` variable.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::report::{
    Options, ReportConfig, ReportFormat, files::ReadLimits, select::Selection, stacks::ValueKind,
    top::Order,
};

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
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per run: the size of the enum does not matter"
)]
pub enum Command {
    /// Sample CPU stacks and write one pprof file per interval.
    Record(RecordArgs),
    /// Top functions, flame graph or folded stacks of a directory of profiles (or one profile).
    Report(ReportArgs),
    /// Serve a directory of profiles as web pages: traces, flame graphs, timeline, diffs.
    Serve(ServeArgs),
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
    #[arg(long, env = "PROFILER_NO_KERNEL_STACKS",
          value_parser = boolean("PROFILER_NO_KERNEL_STACKS"))]
    pub no_kernel_stacks: bool,
    /// Also sample the idle task (pid 0).
    #[arg(long, env = "PROFILER_INCLUDE_IDLE", value_parser = boolean("PROFILER_INCLUDE_IDLE"))]
    pub include_idle: bool,
    /// Do not read the threads' OpenTelemetry trace context (no trace labels, no trace files).
    #[arg(long, env = "PROFILER_NO_TRACE_CONTEXT",
          value_parser = boolean("PROFILER_NO_TRACE_CONTEXT"))]
    pub no_trace_context: bool,
    /// Walk user stacks by frame pointers only, not by the files' unwind tables (.eh_frame):
    /// code built without frame pointers then shows its leaf frames alone.
    #[arg(long, env = "PROFILER_NO_DWARF_UNWINDING",
          value_parser = boolean("PROFILER_NO_DWARF_UNWINDING"))]
    pub no_dwarf_unwinding: bool,
    /// Also record where threads wait: the stack each target thread left the CPU with and how
    /// long it was off, into `offcpu-<start>.pb.gz` per interval and the trace files.
    #[arg(long, env = "PROFILER_OFF_CPU", value_parser = boolean("PROFILER_OFF_CPU"))]
    pub off_cpu: bool,
    /// With --off-cpu: the shortest time off the CPU that is recorded, in microseconds;
    /// shorter waits are counted, not recorded.
    #[arg(long, value_name = "US", env = "PROFILER_OFF_CPU_MIN_US", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000_000))]
    pub off_cpu_min_us: u64,
    /// Memory for unwind tables, in MiB: the BPF maps and the tables built in userspace; the
    /// least recently used tables go first when it is reached.
    #[arg(long, value_name = "MB", env = "PROFILER_UNWIND_MEMORY_MB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(8..=4096))]
    pub unwind_memory_mb: u64,
    /// Distinct traces kept per interval; samples of further traces keep their stacks only.
    #[arg(long, value_name = "N", env = "PROFILER_MAX_TRACES_PER_INTERVAL", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_traces_per_interval: u32,
    /// Serve Prometheus metrics, /healthz, /readyz and on-demand profiles
    /// (/debug/pprof/profile?seconds=N) on this address (`off`: no server).
    #[arg(long, value_name = "ADDRESS", env = "PROFILER_METRICS_ADDRESS",
          default_value = "127.0.0.1:9464", value_parser = metrics_address)]
    pub metrics_address: MetricsAddress,
    /// Require `Authorization: Bearer TOKEN` on /debug/pprof/profile, TOKEN being this file's
    /// content (read again at each request; /metrics and the health checks stay open).
    #[arg(long, value_name = "PATH", env = "PROFILER_HTTP_TOKEN_FILE")]
    pub http_token_file: Option<PathBuf>,
    /// The node name written into profiles and metrics; default: this host's name.
    #[arg(long, value_name = "NAME", env = "PROFILER_NODE_NAME")]
    pub node_name: Option<String>,
    /// Also serve the output directory's web pages on this address (as `profiler serve`).
    #[arg(long, value_name = "ADDRESS", env = "PROFILER_SERVE")]
    pub serve: Option<SocketAddr>,
    /// With --serve: the most a profile may take decompressed, decoded or expanded into stacks;
    /// larger ones are skipped with a warning.
    #[arg(long, value_name = "MB", env = "PROFILER_MAX_PROFILE_MB",
          default_value_t = ReadLimits::DEFAULT_MB, value_parser = max_profile_mb())]
    pub max_profile_mb: u64,
    #[command(flatten)]
    pub listeners: ListenerArgs,
    #[command(flatten)]
    pub adaptive: AdaptiveArgs,
    #[command(flatten)]
    pub maps: MapArgs,
    #[command(flatten)]
    pub otlp: crate::otlp::config::OtlpArgs,
}

/// Sizes of the BPF maps; by default derived from the CPU count, the highest rate the recording
/// may use and the interval (see `bpf::sizing`).
#[derive(Clone, Debug, Default, Args, PartialEq, Eq)]
pub struct MapArgs {
    /// Distinct (thread, stacks, context) entries per interval in the kernel.
    #[arg(long, value_name = "N", env = "PROFILER_COUNTS_MAP_ENTRIES",
          value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    pub counts_map_entries: Option<u32>,
    /// Distinct stacks of up to 16 frames per interval in the kernel; deeper stacks get maps of
    /// half and an eighth of this.
    #[arg(long, value_name = "N", env = "PROFILER_STACKS_MAP_ENTRIES",
          value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    pub stacks_map_entries: Option<u32>,
    /// Processes the kernel remembers having announced.
    #[arg(long, value_name = "N", env = "PROFILER_PROCESSES_MAP_ENTRIES",
          value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    pub processes_map_entries: Option<u32>,
    /// Size of the ring buffer of process events, in KiB (rounded up to a power of two pages).
    #[arg(long, value_name = "KIB", env = "PROFILER_EVENTS_BUFFER_KIB",
          value_parser = clap::value_parser!(u32).range(4..=1_048_576))]
    pub events_buffer_kib: Option<u32>,
}

/// `profiler report`. Its flags have no `PROFILER_*` variables: a recorder's `PROFILER_PID`
/// must not narrow a report run in the same environment.
#[derive(Clone, Debug, Args, PartialEq)]
pub struct ReportArgs {
    /// A directory of profiles (the recording's output directory), or one profile.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Only profiles of the last DURATION (`30s`, `10m`, `2h`, `1d`; at most 100 years).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub since: Option<Duration>,
    /// The most a profile may take decompressed, decoded or expanded into stacks; larger ones
    /// are skipped with a warning.
    #[arg(long, value_name = "MB", default_value_t = ReadLimits::DEFAULT_MB,
          value_parser = max_profile_mb())]
    pub max_profile_mb: u64,
    /// Only this trace: its trace file, else the samples labelled with it.
    #[arg(long, value_name = "TRACE_ID", value_parser = trace_id)]
    pub trace: Option<String>,
    /// Only these processes (repeat, or comma-separate).
    #[arg(long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Functions listed in the text report (0: all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// Sort the text report by cumulative rather than self time.
    #[arg(long)]
    pub cum: bool,
    /// The sample value to weigh by: cpu (time on the CPU), samples, off-cpu (time off the
    /// CPU, blocked or waiting: the `offcpu-*` files and trace files of `record --off-cpu`) or
    /// switches (times off the CPU). Default: cpu for a directory, a profile's own default type
    /// for one profile and with --each.
    #[arg(long, value_enum)]
    pub value: Option<ValueKind>,
    /// text (top functions), svg (flame graph) or folded (stacks); default: by --output's
    /// extension, else text.
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,
    /// Write the report to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE", conflicts_with = "each")]
    pub output: Option<PathBuf>,
    /// One report per profile, written beside it: <name>.txt and <name>.svg next to each
    /// <name>.pb.gz (only the --format one when given); prints the files written.
    #[arg(long)]
    pub each: bool,
}

impl From<ReportArgs> for ReportConfig {
    /// `--since` counts back from now (from the epoch at the earliest); `--top 0` lists all
    /// functions.
    fn from(args: ReportArgs) -> Self {
        ReportConfig {
            path: args.path,
            selection: Selection {
                since: args.since.map(|since| {
                    SystemTime::now()
                        .checked_sub(since)
                        .unwrap_or(SystemTime::UNIX_EPOCH)
                        .max(SystemTime::UNIX_EPOCH)
                }),
                trace: args.trace,
                pids: args.pids,
            },
            options: Options {
                top: if args.top == 0 { usize::MAX } else { args.top },
                order: if args.cum { Order::Cum } else { Order::Flat },
                value: args.value,
            },
            format: args.format,
            output: args.output,
            each: args.each,
        }
    }
}

/// `profiler serve`.
#[derive(Clone, Debug, Args, PartialEq)]
pub struct ServeArgs {
    /// The directory of profiles (a recording's output directory).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Address to listen on (`0.0.0.0:8080` to let others in; port 0 picks a free one).
    #[arg(
        long,
        value_name = "ADDRESS",
        env = "PROFILER_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// The most a profile may take decompressed, decoded or expanded into stacks; larger ones
    /// are skipped with a warning.
    #[arg(long, value_name = "MB", env = "PROFILER_MAX_PROFILE_MB",
          default_value_t = ReadLimits::DEFAULT_MB, value_parser = max_profile_mb())]
    pub max_profile_mb: u64,
    #[command(flatten)]
    pub listeners: ListenerArgs,
}

/// What the HTTP listeners (metrics, web pages) accept.
#[derive(Clone, Debug, Args, PartialEq, Eq)]
pub struct ListenerArgs {
    /// Connections each listener keeps open at once; more are refused (and counted). At most an
    /// eighth of the open-file limit.
    #[arg(long, value_name = "N", env = "PROFILER_MAX_CONNECTIONS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// A host name the web pages answer to besides IP addresses and localhost (repeat, or
    /// separate with commas); other `Host` headers get 403 (DNS rebinding).
    #[arg(
        long = "allowed-host",
        value_name = "NAME",
        env = "PROFILER_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
}

impl Command {
    /// What reading one profile may take in this command (`record` reads only with `--serve`).
    pub fn read_limits(&self) -> ReadLimits {
        ReadLimits::mb(match self {
            Command::Record(args) => args.max_profile_mb,
            Command::Report(args) => args.max_profile_mb,
            Command::Serve(args) => args.max_profile_mb,
        })
    }
}

/// 1 MiB to 1 TiB.
fn max_profile_mb() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=1 << 20)
}

/// The longest duration ago that `--since` and the web pages' `since` and `until` take: 100
/// years, far before any profile, and far from the ends of `SystemTime` and chrono's range.
pub const MAX_AGO: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

/// A duration such as `90s`, `10m`, `2h` or `1d`, at most [`MAX_AGO`].
pub fn duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration like 10m or 2h: {err}"))?;
    if duration > MAX_AGO {
        return Err(format!("{text:?} is longer than 100 years"));
    }
    Ok(duration)
}

/// A W3C trace ID: 32 hex digits, not all zero (taken in either case, kept in lowercase).
fn trace_id(text: &str) -> Result<String, String> {
    let id = text.to_ascii_lowercase();
    if crate::report::files::is_trace_id(&id) {
        Ok(id)
    } else {
        Err(format!("{text:?} is not a trace ID (32 hex digits)"))
    }
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

/// The adaptive settings with every flag left out: the flags' defaults, and what
/// [`RecordArgs::check`] compares with under `--no-adaptive`.
const DEFAULT_ADAPTIVE: AdaptiveArgs = AdaptiveArgs {
    no_adaptive: false,
    cpu_threshold: 0.70,
    mem_threshold: 0.80,
    capture_frequency: 99,
    capture_duration: 30,
    capture_min_interval: 600,
    overhead_budget: 0.01,
    min_frequency: 1,
};

/// Adaptive sampling: follow host load, capture incidents, stay under an overhead budget.
#[derive(Clone, Debug, Args, PartialEq)]
pub struct AdaptiveArgs {
    /// Keep the rate fixed at --frequency: no incident captures, no overhead governor.
    #[arg(long, env = "PROFILER_NO_ADAPTIVE", value_parser = boolean("PROFILER_NO_ADAPTIVE"))]
    pub no_adaptive: bool,
    /// Host CPU utilization (0-1) above which an incident is captured.
    #[arg(long, value_name = "FRACTION", env = "PROFILER_CPU_THRESHOLD", default_value_t = DEFAULT_ADAPTIVE.cpu_threshold,
          value_parser = fraction)]
    pub cpu_threshold: f64,
    /// Host memory in use (0-1) above which an incident is captured.
    #[arg(long, value_name = "FRACTION", env = "PROFILER_MEM_THRESHOLD", default_value_t = DEFAULT_ADAPTIVE.mem_threshold,
          value_parser = fraction)]
    pub mem_threshold: f64,
    /// Sampling rate during an incident capture, per CPU.
    #[arg(long, value_name = "HZ", env = "PROFILER_CAPTURE_FREQUENCY", default_value_t = DEFAULT_ADAPTIVE.capture_frequency,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub capture_frequency: u64,
    /// Length of an incident capture.
    #[arg(long, value_name = "SECONDS", env = "PROFILER_CAPTURE_DURATION", default_value_t = DEFAULT_ADAPTIVE.capture_duration,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub capture_duration: u64,
    /// At most one capture per this many seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "PROFILER_CAPTURE_MIN_INTERVAL",
        default_value_t = DEFAULT_ADAPTIVE.capture_min_interval
    )]
    pub capture_min_interval: u64,
    /// The profiler's own cost ceiling, as a fraction of the host's CPU capacity.
    #[arg(long, value_name = "FRACTION", env = "PROFILER_OVERHEAD_BUDGET", default_value_t = DEFAULT_ADAPTIVE.overhead_budget,
          value_parser = fraction)]
    pub overhead_budget: f64,
    /// The rate the overhead governor never goes below.
    #[arg(long, value_name = "HZ", env = "PROFILER_MIN_FREQUENCY", default_value_t = DEFAULT_ADAPTIVE.min_frequency,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub min_frequency: u64,
}

/// A switch's value, from its variable: 1/0, true/false, yes/no, on/off (any case). The error
/// names the variable: the flag itself takes no value.
fn boolean(variable: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone + Send + Sync {
    move |text| match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!(
            "{variable}={text:?} is not a switch: set it to 1 or 0 (true/false, yes/no, on/off)"
        )),
    }
}

impl RecordArgs {
    /// Refuses flags that contradict each other, and drops repeated targets. Returns what the
    /// caller should warn about once (flags that have no effect, repeats).
    pub fn check(&mut self) -> Result<Vec<String>, String> {
        if self
            .node_name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(
                "--node-name (PROFILER_NODE_NAME) is empty: pass a name, or leave it \
                        out for the host name"
                    .into(),
            );
        }
        let adaptive = self.adaptive.clone();
        let mut warnings = Vec::new();
        if adaptive.no_adaptive {
            let ignored: Vec<&str> = adaptive
                .differences(&DEFAULT_ADAPTIVE)
                .into_iter()
                .filter(|flag| *flag != "--no-adaptive")
                .collect();
            if !ignored.is_empty() {
                warnings.push(format!(
                    "--no-adaptive: {} take no effect (the rate stays at --frequency)",
                    ignored.join(", ")
                ));
            }
        } else {
            if adaptive.min_frequency > self.frequency {
                return Err(format!(
                    "--min-frequency {} is above --frequency {}: the governor lowers the rate \
                     from --frequency toward --min-frequency; lower one or raise the other",
                    adaptive.min_frequency, self.frequency
                ));
            }
            if adaptive.capture_frequency < self.frequency {
                // `--frequency` raised alone: captures keep it rather than lower it.
                warnings.push(format!(
                    "--capture-frequency {} is below --frequency {}: captures keep {} Hz",
                    adaptive.capture_frequency, self.frequency, self.frequency
                ));
                self.adaptive.capture_frequency = self.frequency;
            }
        }
        warnings.extend(dedup("--pid", &mut self.pids));
        warnings.extend(dedup("--cgroup", &mut self.cgroups));
        warnings.extend(dedup("--container", &mut self.containers));
        Ok(warnings)
    }
}

/// Drops repeats of `flag`'s values, keeping the first of each; says which were repeated.
fn dedup<T: PartialEq + std::fmt::Debug>(flag: &str, values: &mut Vec<T>) -> Option<String> {
    let mut repeated = Vec::new();
    let mut kept: Vec<T> = Vec::with_capacity(values.len());
    for value in values.drain(..) {
        if kept.contains(&value) {
            repeated.push(format!("{value:?}"));
        } else {
            kept.push(value);
        }
    }
    *values = kept;
    (!repeated.is_empty()).then(|| {
        format!(
            "{flag} {} given more than once: each counts once",
            repeated.join(", ")
        )
    })
}

impl AdaptiveArgs {
    /// The flags whose values differ from `other`'s.
    fn differences(&self, other: &Self) -> Vec<&'static str> {
        let pairs = [
            ("--no-adaptive", self.no_adaptive != other.no_adaptive),
            ("--cpu-threshold", self.cpu_threshold != other.cpu_threshold),
            ("--mem-threshold", self.mem_threshold != other.mem_threshold),
            (
                "--capture-frequency",
                self.capture_frequency != other.capture_frequency,
            ),
            (
                "--capture-duration",
                self.capture_duration != other.capture_duration,
            ),
            (
                "--capture-min-interval",
                self.capture_min_interval != other.capture_min_interval,
            ),
            (
                "--overhead-budget",
                self.overhead_budget != other.overhead_budget,
            ),
            ("--min-frequency", self.min_frequency != other.min_frequency),
        ];
        pairs
            .into_iter()
            .filter_map(|(flag, differs)| differs.then_some(flag))
            .collect()
    }
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
        let Command::Record(record) = cli.command else {
            unreachable!("parsed a record command")
        };
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
    fn record_serves_on_request() {
        assert_eq!(record(&[]).unwrap().serve, None);
        let args = record(&["--serve", "127.0.0.1:0"]).unwrap();
        assert_eq!(args.serve, Some("127.0.0.1:0".parse().unwrap()));
        assert!(record(&["--serve", "localhost"]).is_err());
    }

    fn report(args: &[&str]) -> Result<ReportArgs, clap::Error> {
        let cli = Cli::try_parse_from(["profiler", "report"].iter().chain(args))?;
        let Command::Report(report) = cli.command else {
            unreachable!("parsed a report command")
        };
        Ok(report)
    }

    #[test]
    fn report_flags() {
        let args = report(&["profiles"]).unwrap();
        assert_eq!(args.path, PathBuf::from("profiles"));
        assert_eq!((args.top, args.since, args.format), (20, None, None));
        assert_eq!(args.value, None);
        for (flag, value) in [
            ("off-cpu", ValueKind::OffCpu),
            ("switches", ValueKind::Switches),
        ] {
            assert_eq!(report(&["--value", flag, "d"]).unwrap().value, Some(value));
        }
        assert!(report(&["--value", "off_cpu", "d"]).is_err());
        assert!(!args.each && !args.cum && args.pids.is_empty());
        let args = report(&[
            "--since",
            "10m",
            "--trace",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "--pid",
            "1,2",
            "--top",
            "5",
            "--format",
            "svg",
            "dir",
        ])
        .unwrap();
        assert_eq!(args.since, Some(Duration::from_secs(600)));
        assert_eq!(
            args.trace.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(args.pids, [1, 2]);
        assert_eq!(args.format, Some(ReportFormat::Svg));
        assert!(report(&["--since", "soon", "d"]).is_err());
        assert_eq!(args.max_profile_mb, ReadLimits::DEFAULT_MB);
        assert!(report(&["--trace", "xyz", "d"]).is_err());
        assert!(report(&["--each", "--output", "x.svg", "d"]).is_err());
        assert!(report(&[]).is_err(), "a path is needed");
    }

    #[test]
    fn report_flags_become_a_report_config() {
        let config = ReportConfig::from(report(&["--top", "0", "--cum", "d"]).unwrap());
        assert_eq!(config.options.top, usize::MAX, "--top 0 lists all");
        assert_eq!(config.options.order, Order::Cum);
        assert_eq!(config.selection.since, None);
        let before = SystemTime::now();
        let config = ReportConfig::from(report(&["--since", "10m", "d"]).unwrap());
        let since = config.selection.since.expect("--since");
        assert!(since <= before - Duration::from_secs(600) + Duration::from_secs(1));
        assert!(since >= before - Duration::from_secs(600));
        assert_eq!(config.options.order, Order::Flat);
    }

    #[test]
    fn out_of_range_durations_are_refused_not_panics() {
        for since in [
            "100000000d",
            "18446744073709551615s",
            "600000y",
            "101years",
            "99999999999999999999999s",
        ] {
            assert!(report(&["--since", since, "d"]).is_err(), "{since}");
        }
        let config = ReportConfig::from(report(&["--since", "100years", "d"]).unwrap());
        assert!(config.selection.since.unwrap() >= SystemTime::UNIX_EPOCH);
        assert!(!config.selection.describe().is_empty());
    }

    #[test]
    fn max_profile_mb_on_every_command_that_reads_profiles() {
        let limits = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command.read_limits());
        let mb = |n: u64| ReadLimits::mb(n);
        assert_eq!(
            limits(&["p", "report", "d"]).unwrap(),
            ReadLimits::default()
        );
        assert_eq!(
            limits(&["p", "report", "--max-profile-mb", "8", "d"]).unwrap(),
            mb(8)
        );
        assert_eq!(
            limits(&["p", "serve", "--max-profile-mb", "9", "d"]).unwrap(),
            mb(9)
        );
        assert_eq!(
            limits(&["p", "record", "--max-profile-mb", "10"]).unwrap(),
            mb(10)
        );
        assert!(limits(&["p", "report", "--max-profile-mb", "0", "d"]).is_err());
    }

    #[test]
    fn serve_listens_on_localhost_by_default() {
        let cli = Cli::try_parse_from(["profiler", "serve", "profiles"]).unwrap();
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed a serve command")
        };
        assert_eq!(args.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args.dir, PathBuf::from("profiles"));
    }

    #[test]
    fn verbose_counts() {
        let cli = Cli::try_parse_from(["profiler", "-vv", "record"]).unwrap();
        assert_eq!(cli.verbose, 2);
    }

    #[test]
    fn adaptive_defaults_match_the_flags() {
        assert_eq!(record(&[]).unwrap().adaptive, DEFAULT_ADAPTIVE);
    }

    #[test]
    fn contradictory_flags_are_refused_or_warned_once() {
        let check = |args: &[&str]| record(args).unwrap().check();
        let err = check(&["--min-frequency", "100", "--frequency", "19"]).unwrap_err();
        assert!(
            err.contains("--min-frequency 100 is above --frequency 19"),
            "{err}"
        );
        let mut args = record(&["--frequency", "199"]).unwrap();
        let warnings = args.check().unwrap();
        assert_eq!(args.adaptive.capture_frequency, 199, "{warnings:?}");
        let err = check(&["--node-name", ""]).unwrap_err();
        assert!(err.contains("--node-name"), "{err}");
        // Without adaptive sampling these say nothing, and do nothing.
        let warnings = check(&["--no-adaptive", "--capture-frequency", "50"]).unwrap();
        assert_eq!(
            warnings,
            ["--no-adaptive: --capture-frequency take no effect (the rate stays at --frequency)"]
        );
        let mut args = record(&["--pid", "1", "--pid", "1", "--pid", "2"]).unwrap();
        let warnings = args.check().unwrap();
        assert_eq!(args.pids, [1, 2]);
        assert_eq!(warnings, ["--pid 1 given more than once: each counts once"]);
        assert!(check(&[]).unwrap().is_empty());
    }

    #[test]
    fn switches_take_the_usual_spellings_and_name_their_variable() {
        let parse = boolean("PROFILER_NO_ADAPTIVE");
        for yes in ["1", "true", "YES", "on", "True"] {
            assert_eq!(parse(yes), Ok(true), "{yes}");
        }
        for no in ["0", "false", "no", "OFF", ""] {
            assert_eq!(parse(no), Ok(false), "{no}");
        }
        let err = parse("maybe").unwrap_err();
        assert!(err.starts_with("PROFILER_NO_ADAPTIVE=\"maybe\""), "{err}");
    }
}
