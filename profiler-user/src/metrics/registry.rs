//! The Prometheus series of a recording. Recorder, writer thread and HTTP server share one
//! [`Metrics`]; every update is an atomic add or store, so a scrape never waits for a drain and
//! a drain never waits for a scrape.

use std::sync::{Mutex, atomic::AtomicU64};

use profiler_common::Counter as BpfCounter;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::{Registry, Unit},
};

use super::{health::Health, own_process::OwnProcess};
use crate::{
    bpf::{CounterSnapshot, ProgramCost},
    symbolize::CacheStats,
};

type Labelled<M = Counter> = Family<[(&'static str, &'static str); 1], M>;

/// What a written file was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Interval,
    /// An `offcpu-` interval file.
    OffCpu,
    Incident,
    Trace,
}

impl FileKind {
    fn label(self) -> &'static str {
        match self {
            FileKind::Interval => "interval",
            FileKind::OffCpu => "off_cpu",
            FileKind::Incident => "incident",
            FileKind::Trace => "trace",
        }
    }
}

/// What went wrong, as the `kind` label of `profiler_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A profile could not be written (other than for lack of space).
    Write,
    /// The disk was full when writing.
    DiskFull,
    /// A per-trace file or the trace index could not be written.
    TraceWrite,
    /// `--max-disk-mb` could not delete old files.
    Retention,
    /// Retuning the sampling rate failed.
    RateChange,
    /// Telling the BPF program where a process keeps its trace context failed.
    TraceContext,
    /// A binary or library shrank while the symbolizer read it (truncated in place): the
    /// SIGBUS was recovered, the frames left unnamed.
    TruncatedFile,
}

impl ErrorKind {
    fn label(self) -> &'static str {
        match self {
            ErrorKind::Write => "write",
            ErrorKind::DiskFull => "disk_full",
            ErrorKind::TraceWrite => "trace_write",
            ErrorKind::Retention => "retention",
            ErrorKind::RateChange => "rate_change",
            ErrorKind::TraceContext => "trace_context",
            ErrorKind::TruncatedFile => "truncated_file",
        }
    }
}

/// Why a drained interval never reached a file, as the `reason` label of
/// `profiler_intervals_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The writer thread was too far behind: its queue was full.
    WriterBehind,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::WriterBehind => "writer_behind",
        }
    }
}

/// What became of an OTLP request, as the `outcome` label of `profiler_otlp_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpOutcome {
    /// The collector took it (replays from the spool included).
    Sent,
    /// An attempt failed and the request will be tried again.
    Retried,
    /// Written to the spool.
    Spooled,
    /// Lost: refused by the collector, evicted from the full spool, or not writable there.
    Dropped,
}

impl OtlpOutcome {
    fn label(self) -> &'static str {
        match self {
            OtlpOutcome::Sent => "sent",
            OtlpOutcome::Retried => "retried",
            OtlpOutcome::Spooled => "spooled",
            OtlpOutcome::Dropped => "dropped",
        }
    }
}

/// How a BPF counter shows in the metrics.
#[derive(Debug, PartialEq, Eq)]
enum Effect {
    Taken,
    Traced,
    /// Not sampled on purpose (not a target, the idle task).
    Skipped,
    /// The sample was lost.
    Dropped,
    /// The sample was kept with less than asked (a stack, a process, a trace context missing).
    Degraded,
    /// A sample's user stack was walked by unwind tables.
    Unwound,
    /// What became of the target threads' waits off the CPU (`--off-cpu`).
    OffCpu,
}

fn effect(counter: BpfCounter) -> Effect {
    match counter {
        BpfCounter::Samples => Effect::Taken,
        BpfCounter::Traced => Effect::Traced,
        BpfCounter::Filtered | BpfCounter::Idle => Effect::Skipped,
        BpfCounter::CountsMapFull | BpfCounter::Internal => Effect::Dropped,
        BpfCounter::KernelStackFailed
        | BpfCounter::UserStackFailed
        | BpfCounter::StacksMapFull
        | BpfCounter::ProcessesMapFull
        | BpfCounter::EventsLost
        | BpfCounter::TlsReadFailed
        | BpfCounter::RecordReadFailed
        | BpfCounter::TraceLimit
        | BpfCounter::ContextsMapFull
        | BpfCounter::TaskReadFailed
        | BpfCounter::GoLabelsReadFailed
        | BpfCounter::GoLabelsCut
        | BpfCounter::UserStackTruncated
        | BpfCounter::UnwindUnsupported
        | BpfCounter::UnwindTablePending
        | BpfCounter::UnwindReadFailed => Effect::Degraded,
        BpfCounter::UnwindWalks => Effect::Unwound,
        BpfCounter::OffCpuWaits
        | BpfCounter::OffCpuShort
        | BpfCounter::OffCpuRecords
        | BpfCounter::OffCpuThreadsFull
        | BpfCounter::OffCpuUnstacked
        | BpfCounter::OffCpuThreadsAdded
        | BpfCounter::OffCpuThreadsRemoved
        | BpfCounter::OffCpuParkedFull => Effect::OffCpu,
    }
}

pub struct Metrics {
    registry: Registry,
    samples: Counter,
    traced: Counter,
    skipped: Labelled,
    dropped: Labelled,
    degraded: Labelled,
    off_cpu: Labelled,
    frequency: Gauge,
    kernel_seconds_per_sample: Gauge<f64, AtomicU64>,
    bpf_runs: Counter,
    bpf_run_seconds: Counter<f64, AtomicU64>,
    cache_hits: Counter,
    cache_misses: Counter,
    files: Labelled,
    bytes: Labelled,
    errors: Labelled,
    profiles_dropped: Counter,
    intervals_dropped: Labelled,
    incident_left_out: Counter,
    index_rotations: Counter,
    processes: Gauge,
    bpf_map_bytes: Gauge,
    unwound: Counter,
    unwind: Labelled<Gauge>,
    unwind_events: Labelled,
    /// The loader's totals at the last [`Self::set_unwind`], to count what came since.
    unwind_seen: Mutex<crate::unwind::loader::LoaderStats>,
    connections_refused: Labelled,
    pull_requests: Labelled,
    otlp_requests: Labelled,
    otlp_spool_bytes: Gauge,
    /// Liveness and readiness, for `/healthz` and `/readyz`.
    pub health: Health,
}

impl Metrics {
    /// `node`: the node name reported in `profiler_info`.
    pub fn new(node: &str, health: Health) -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            registry: Registry::default(),
            samples: Counter::default(),
            traced: Counter::default(),
            skipped: Labelled::default(),
            dropped: Labelled::default(),
            degraded: Labelled::default(),
            off_cpu: Labelled::default(),
            frequency: Gauge::default(),
            kernel_seconds_per_sample: Gauge::default(),
            bpf_runs: Counter::default(),
            bpf_run_seconds: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            files: Labelled::default(),
            bytes: Labelled::default(),
            errors: Labelled::default(),
            profiles_dropped: Counter::default(),
            intervals_dropped: Labelled::default(),
            incident_left_out: Counter::default(),
            index_rotations: Counter::default(),
            processes: Gauge::default(),
            bpf_map_bytes: Gauge::default(),
            unwound: Counter::default(),
            unwind: Labelled::default(),
            unwind_events: Labelled::default(),
            unwind_seen: Mutex::default(),
            connections_refused: Labelled::default(),
            pull_requests: Labelled::default(),
            otlp_requests: Labelled::default(),
            otlp_spool_bytes: Gauge::default(),
            health,
        };
        let r = &mut registry;
        r.register(
            "profiler",
            "The profiler's version and the node it runs on",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("node", node.to_owned()),
            ]),
        );
        r.register(
            "profiler_samples",
            "Samples taken and stored",
            metrics.samples.clone(),
        );
        r.register(
            "profiler_samples_traced",
            "Stored samples that carry a trace context",
            metrics.traced.clone(),
        );
        r.register(
            "profiler_samples_skipped",
            "Samples not taken on purpose, by reason (not a target process, the idle task)",
            metrics.skipped.clone(),
        );
        r.register(
            "profiler_samples_dropped",
            "Samples lost, by reason",
            metrics.dropped.clone(),
        );
        r.register(
            "profiler_samples_degraded",
            "Samples stored with less than asked (a stack, a process event or a trace context missing), by reason",
            metrics.degraded.clone(),
        );
        r.register(
            "profiler_off_cpu_events",
            "With --off-cpu, by event: waits timed at or above --off-cpu-min-us (off_cpu_waits) or below it (off_cpu_short), records written with their stacks (off_cpu_records) and without, at a place whose last wait was short (off_cpu_unstacked) or because the map of parked stacks was full (off_cpu_parked_full); waits lost because the map of waiting threads was full (off_cpu_threads_full); threads that began to be timed (off_cpu_threads_added) and were forgotten at their exit (off_cpu_threads_removed)",
            metrics.off_cpu.clone(),
        );
        r.register(
            "profiler_sampling_frequency_hertz",
            "Current sampling rate per CPU",
            metrics.frequency.clone(),
        );
        r.register_with_unit(
            "profiler_kernel_per_sample",
            "Mean kernel-side run time of the sampling program per sample, over the last interval",
            Unit::Seconds,
            metrics.kernel_seconds_per_sample.clone(),
        );
        r.register(
            "profiler_bpf_runs",
            "Runs of the sampling program (when the kernel keeps BPF statistics)",
            metrics.bpf_runs.clone(),
        );
        r.register_with_unit(
            "profiler_bpf_run",
            "Kernel-side run time of the sampling program",
            Unit::Seconds,
            metrics.bpf_run_seconds.clone(),
        );
        r.register(
            "profiler_symbol_cache_hits",
            "Frames served from the symbolization cache",
            metrics.cache_hits.clone(),
        );
        r.register(
            "profiler_symbol_cache_misses",
            "Frames symbolized from the binary",
            metrics.cache_misses.clone(),
        );
        r.register(
            "profiler_files_written",
            "Profile files written, by kind (interval, incident, trace)",
            metrics.files.clone(),
        );
        r.register_with_unit(
            "profiler_written",
            "Bytes of profile files written, by kind",
            Unit::Bytes,
            metrics.bytes.clone(),
        );
        r.register(
            "profiler_errors",
            "Errors the profiler recovered from, by kind",
            metrics.errors.clone(),
        );
        r.register(
            "profiler_profiles_dropped",
            "Profiles lost because the disk stayed full after deleting the oldest",
            metrics.profiles_dropped.clone(),
        );
        r.register(
            "profiler_intervals_dropped",
            "Drained intervals written to no file, by reason (writer_behind: the writer's queue was full)",
            metrics.intervals_dropped.clone(),
        );
        r.register(
            "profiler_incident_samples_left_out",
            "Samples of an incident capture left out of its file: the capture held its most distinct stacks",
            metrics.incident_left_out.clone(),
        );
        r.register(
            "profiler_trace_index_rotations",
            "Times traces/index.jsonl grew past its limit and was renamed aside",
            metrics.index_rotations.clone(),
        );
        r.register(
            "profiler_processes",
            "Processes whose mappings are held for symbolization",
            metrics.processes.clone(),
        );
        r.register(
            "profiler_bpf_map_bytes",
            "Kernel memory held by the BPF maps (charged to the memory cgroup, not in the RSS)",
            metrics.bpf_map_bytes.clone(),
        );
        r.register(
            "profiler_samples_unwound",
            "Samples whose user stack was walked by the files' unwind tables (not frame pointers)",
            metrics.unwound.clone(),
        );
        r.register(
            "profiler_unwind",
            "Unwind tables now: processes walked by tables, tables in the kernel and their bytes",
            metrics.unwind.clone(),
        );
        r.register(
            "profiler_unwind_events",
            "Unwind-table setbacks: processes left to frame pointers (map full), tables that found no room in the kernel, files without usable unwind information, executable mappings past a process's 128 ranges",
            metrics.unwind_events.clone(),
        );
        r.register(
            "profiler_connections_refused",
            "Connections closed at once because the listener (metrics, web) had as many open as it keeps",
            metrics.connections_refused.clone(),
        );
        r.register(
            "profiler_pull_requests",
            "Requests to /debug/pprof/profile by outcome: served, bad_request, unauthorized (401), forbidden (403: exposed without a token), busy (429), cancelled (the client left), unavailable",
            metrics.pull_requests.clone(),
        );
        r.register(
            "profiler_otlp_requests",
            "OTLP export requests by outcome: sent (spool replays included), retried (each failed attempt tried again), spooled (written to the spool), dropped (refused by the collector, or lost to a full spool or disk)",
            metrics.otlp_requests.clone(),
        );
        r.register_with_unit(
            "profiler_otlp_spool",
            "Bytes of OTLP requests waiting in the spool",
            Unit::Bytes,
            metrics.otlp_spool_bytes.clone(),
        );
        r.register_collector(Box::new(OwnProcess));
        Self {
            registry,
            ..metrics
        }
    }

    /// The counter of connections `listener` (`metrics`, `web`) refused, for the listener to add
    /// to.
    pub fn connections_refused(&self, listener: &'static str) -> Counter {
        self.connections_refused
            .get_or_create(&[("listener", listener)])
            .clone()
    }

    /// One more request to the pull endpoint ended with `outcome`.
    pub fn pull_request(&self, outcome: &'static str) {
        self.pull_requests
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// The OpenMetrics text exposition of every series.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Adds what the BPF program counted during an interval.
    pub fn add_counters(&self, interval: &CounterSnapshot) {
        for counter in BpfCounter::ALL {
            let value = interval.get(counter);
            if value == 0 {
                continue;
            }
            let label = [("reason", counter.name())];
            match effect(counter) {
                Effect::Taken => self.samples.inc_by(value),
                Effect::Traced => self.traced.inc_by(value),
                Effect::Skipped => self.skipped.get_or_create(&label).inc_by(value),
                Effect::Dropped => self.dropped.get_or_create(&label).inc_by(value),
                Effect::Degraded => self.degraded.get_or_create(&label).inc_by(value),
                Effect::Unwound => self.unwound.inc_by(value),
                Effect::OffCpu => self
                    .off_cpu
                    .get_or_create(&[("event", counter.name())])
                    .inc_by(value),
            };
        }
    }

    /// Adds the program's run statistics between two readings.
    pub fn add_program_cost(&self, earlier: &ProgramCost, now: &ProgramCost) {
        let runs = now.run_count.saturating_sub(earlier.run_count);
        let nanos = now.run_time_ns.saturating_sub(earlier.run_time_ns);
        self.bpf_runs.inc_by(runs);
        self.bpf_run_seconds.inc_by(nanos as f64 / 1e9);
        if let Some(per_run) = now.per_run_since(earlier) {
            self.kernel_seconds_per_sample.set(per_run as f64 / 1e9);
        }
    }

    pub fn set_frequency(&self, hz: u64) {
        self.frequency.set(hz.try_into().unwrap_or(i64::MAX));
    }

    pub fn set_bpf_map_bytes(&self, bytes: u64) {
        self.bpf_map_bytes.set(bytes.try_into().unwrap_or(i64::MAX));
    }

    /// The unwind tables' state (`unwind::loader`).
    pub fn set_unwind(&self, stats: &crate::unwind::loader::LoaderStats) {
        let now = [
            ("processes", stats.processes as u64),
            ("tables", stats.tables as u64),
            ("table_bytes", stats.table_bytes),
        ];
        for (what, value) in now {
            self.unwind
                .get_or_create(&[("what", what)])
                .set(value.try_into().unwrap_or(i64::MAX));
        }
        let mut seen = self.unwind_seen.lock().unwrap_or_else(|p| p.into_inner());
        let totals = |s: &crate::unwind::loader::LoaderStats| {
            [
                ("processes_refused", s.processes_refused),
                ("load_failures", s.load_failures),
                ("files_without_table", s.files_without_table),
                ("mappings_dropped", s.mappings_dropped),
            ]
        };
        for ((what, value), (_, before)) in totals(stats).into_iter().zip(totals(&seen)) {
            self.unwind_events
                .get_or_create(&[("what", what)])
                .inc_by(value.saturating_sub(before));
        }
        *seen = *stats;
    }

    pub fn set_processes(&self, processes: usize) {
        self.processes.set(processes.try_into().unwrap_or(i64::MAX));
    }

    /// Adds the cache counters between two readings of the symbolizer's totals, and its reads
    /// of truncated files as errors.
    pub fn add_cache_stats(&self, earlier: &CacheStats, now: &CacheStats) {
        self.cache_hits
            .inc_by(now.hits.saturating_sub(earlier.hits));
        self.cache_misses
            .inc_by(now.misses.saturating_sub(earlier.misses));
        let truncated = now.truncated_reads.saturating_sub(earlier.truncated_reads);
        if truncated > 0 {
            let kind = [("kind", ErrorKind::TruncatedFile.label())];
            self.errors.get_or_create(&kind).inc_by(truncated);
        }
    }

    pub fn file_written(&self, kind: FileKind, bytes: u64) {
        let label = [("kind", kind.label())];
        self.files.get_or_create(&label).inc();
        self.bytes.get_or_create(&label).inc_by(bytes);
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&[("kind", kind.label())]).inc();
    }

    pub fn profile_dropped(&self) {
        self.profiles_dropped.inc();
    }

    pub fn interval_dropped(&self, reason: DropReason) {
        self.intervals_dropped
            .get_or_create(&[("reason", reason.label())])
            .inc();
    }

    pub fn incident_samples_left_out(&self, samples: u64) {
        self.incident_left_out.inc_by(samples);
    }

    pub fn index_rotated(&self) {
        self.index_rotations.inc();
    }

    pub fn otlp_request(&self, outcome: OtlpOutcome) {
        self.otlp_requests
            .get_or_create(&[("outcome", outcome.label())])
            .inc();
    }

    pub fn set_otlp_spool_bytes(&self, bytes: u64) {
        self.otlp_spool_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new("node-a", Health::new("/nonexistent".into(), 10))
    }

    /// The value of the series `name` (with labels, exactly as exposed).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn bpf_counters_land_in_their_series() {
        let m = metrics();
        let mut interval = CounterSnapshot::default();
        interval.values[BpfCounter::Samples as usize] = 120;
        interval.values[BpfCounter::Traced as usize] = 7;
        interval.values[BpfCounter::Filtered as usize] = 30;
        interval.values[BpfCounter::CountsMapFull as usize] = 2;
        interval.values[BpfCounter::UserStackFailed as usize] = 5;
        m.add_counters(&interval);
        m.add_counters(&interval);
        let text = m.encode();
        assert_eq!(value(&text, "profiler_samples_total"), Some(240.0));
        assert_eq!(value(&text, "profiler_samples_traced_total"), Some(14.0));
        assert_eq!(
            value(
                &text,
                r#"profiler_samples_skipped_total{reason="filtered"}"#
            ),
            Some(60.0)
        );
        assert_eq!(
            value(
                &text,
                r#"profiler_samples_dropped_total{reason="counts_map_full"}"#
            ),
            Some(4.0)
        );
        assert_eq!(
            value(
                &text,
                r#"profiler_samples_degraded_total{reason="user_stack_failed"}"#
            ),
            Some(10.0)
        );
        // A reason that never happened has no series.
        assert!(!text.contains("stacks_map_full"), "{text}");
    }

    #[test]
    fn the_unwind_loaders_state_is_gauges_and_its_setbacks_counters() {
        use crate::unwind::loader::LoaderStats;
        let m = metrics();
        let mut stats = LoaderStats {
            processes: 12,
            tables: 30,
            table_bytes: 4096,
            files_without_table: 3,
            ..LoaderStats::default()
        };
        m.set_unwind(&stats);
        stats.processes = 5;
        stats.files_without_table = 4;
        m.set_unwind(&stats);
        m.set_unwind(&stats);
        let text = m.encode();
        assert_eq!(
            value(&text, r#"profiler_unwind{what="processes"}"#),
            Some(5.0)
        );
        assert_eq!(
            value(
                &text,
                r#"profiler_unwind_events_total{what="files_without_table"}"#
            ),
            Some(4.0)
        );
        assert_eq!(
            value(
                &text,
                r#"profiler_unwind_events_total{what="processes_refused"}"#
            ),
            Some(0.0)
        );
    }

    #[test]
    fn every_bpf_counter_has_an_effect() {
        let effects: Vec<Effect> = BpfCounter::ALL.into_iter().map(effect).collect();
        assert_eq!(effects.iter().filter(|e| **e == Effect::Taken).count(), 1);
        assert!(effects.contains(&Effect::Dropped));
    }

    #[test]
    fn cost_files_errors_and_own_process() {
        let m = metrics();
        m.set_frequency(99);
        m.add_program_cost(
            &ProgramCost::default(),
            &ProgramCost {
                run_time_ns: 5_000_000,
                run_count: 1000,
            },
        );
        m.add_cache_stats(
            &CacheStats {
                hits: 1,
                misses: 1,
                truncated_reads: 0,
            },
            &CacheStats {
                hits: 11,
                misses: 4,
                truncated_reads: 2,
            },
        );
        m.file_written(FileKind::Interval, 1000);
        m.file_written(FileKind::Interval, 500);
        m.file_written(FileKind::Trace, 10);
        m.error(ErrorKind::DiskFull);
        m.profile_dropped();
        m.interval_dropped(DropReason::WriterBehind);
        m.incident_samples_left_out(40);
        m.index_rotated();
        m.otlp_request(OtlpOutcome::Sent);
        m.otlp_request(OtlpOutcome::Sent);
        m.otlp_request(OtlpOutcome::Spooled);
        m.set_otlp_spool_bytes(4096);
        let text = m.encode();
        assert_eq!(
            value(&text, "profiler_sampling_frequency_hertz"),
            Some(99.0)
        );
        assert_eq!(
            value(&text, "profiler_kernel_per_sample_seconds"),
            Some(5e-6)
        );
        assert_eq!(value(&text, "profiler_bpf_runs_total"), Some(1000.0));
        assert_eq!(value(&text, "profiler_symbol_cache_hits_total"), Some(10.0));
        assert_eq!(
            value(&text, "profiler_symbol_cache_misses_total"),
            Some(3.0)
        );
        assert_eq!(
            value(&text, r#"profiler_files_written_total{kind="interval"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&text, r#"profiler_written_bytes_total{kind="interval"}"#),
            Some(1500.0)
        );
        assert_eq!(
            value(&text, r#"profiler_errors_total{kind="disk_full"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"profiler_errors_total{kind="truncated_file"}"#),
            Some(2.0)
        );
        assert_eq!(value(&text, "profiler_profiles_dropped_total"), Some(1.0));
        assert_eq!(
            value(
                &text,
                r#"profiler_intervals_dropped_total{reason="writer_behind"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "profiler_incident_samples_left_out_total"),
            Some(40.0)
        );
        assert_eq!(
            value(&text, "profiler_trace_index_rotations_total"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"profiler_otlp_requests_total{outcome="sent"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(&text, r#"profiler_otlp_requests_total{outcome="spooled"}"#),
            Some(1.0)
        );
        assert_eq!(value(&text, "profiler_otlp_spool_bytes"), Some(4096.0));
        assert!(text.contains(r#"profiler_info{version=""#), "{text}");
        assert!(text.contains(r#"node="node-a""#), "{text}");
        assert!(value(&text, "process_resident_memory_bytes").is_some_and(|v| v > 1e6));
        assert!(value(&text, "process_cpu_seconds_total").is_some_and(|v| v > 0.0));
        assert!(text.ends_with("# EOF\n"));
    }
}
