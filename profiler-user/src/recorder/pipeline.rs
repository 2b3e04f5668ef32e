//! The thread that turns drained intervals into files. It owns the symbolizer (blazesym's is
//! not `Send`), so symbolization never delays a drain or the handling of process events. It also
//! gathers the samples of an incident capture, which spans several intervals, into its own file,
//! and those of profile requests over HTTP, which it answers.
//!
//! An interval may come in parts: a request's capture opens and closes with a drain of its own
//! (a [`Job::Part`]), whose samples go to the captures at once and wait for the interval's last
//! part to be written with it, so that interval files keep their boundaries.

mod capture;
mod queue;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime},
};

use super::RecordError;
use crate::{
    bpf::{CounterSnapshot, Drained},
    metrics::{DropReason, ErrorKind, FileKind, Metrics},
    otlp::{Exporter, encode::Origin},
    process::ProcessTable,
    profile::{
        IntervalMeta, ProfileValues, ProfileWriter, Retention, TraceStore, WriteError,
        add_comments, build_profile, build_profile_of, gzipped, proto::Profile,
    },
    pull::{Filter, request::Matcher},
    resolve::{ResolvedSample, resolve_interval},
    symbolize::{CacheStats, Symbolizer},
    tracectx::TraceLabeler,
};
use capture::Capture;
use queue::{QueueSender, Sent};

/// One drained interval on its way to a file.
pub(super) struct Interval {
    pub drained: Drained,
    pub meta: IntervalMeta,
    /// The drain number given by [`ProcessTable::begin_drain`].
    pub epoch: u64,
    /// Counters of the BPF program during this interval.
    pub counters: CounterSnapshot,
    /// Mean kernel-side run time of the sampling program during this interval.
    pub bpf_ns_per_sample: Option<u64>,
    /// Estimated kernel-side run time of the off-CPU programs during this interval.
    pub off_cpu_kernel_ns: Option<u64>,
    /// When the drain began: the time to a written file is measured from here.
    pub drain_started: Instant,
    /// Notes for the profile's comments (rates in force, rate changes).
    pub comments: Vec<String>,
}

/// A drain inside an interval, for a request's capture to open or close on.
pub(super) struct Part {
    pub drained: Drained,
    /// The drain number given by [`ProcessTable::begin_drain`].
    pub epoch: u64,
}

/// Work for the writer thread, in order.
pub(super) enum Job {
    /// An interval's last part, and its files.
    Interval(Box<Interval>),
    Part(Box<Part>),
    /// Samples of the following intervals also go to an incident file.
    CaptureStart {
        start: SystemTime,
        comments: Vec<String>,
    },
    /// Writes the incident file of the capture in progress.
    CaptureEnd {
        end: SystemTime,
        frequency: u64,
        comments: Vec<String>,
    },
    /// Samples of the following parts that pass `filter` go to request `id`'s profile.
    PullStart {
        id: u64,
        start: SystemTime,
        filter: Filter,
        comments: Vec<String>,
    },
    /// Answers request `id`'s profile, gzipped, on `profile`.
    PullEnd {
        id: u64,
        end: SystemTime,
        frequency: u64,
        profile: tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>,
    },
    /// Forgets request `id`.
    PullCancel {
        id: u64,
    },
}

/// Drained intervals queued for the writer, the one being written included. The writer needs
/// tens of milliseconds for an interval in the steady state; this much slack absorbs a slow one
/// (the first interval's cold symbolization, the two forced drains at a capture's edges) and
/// bounds what a writer that fell behind keeps: a drained interval of a busy 64-CPU host at the
/// capture rate is tens of MB. Intervals beyond it are dropped and counted.
const INTERVALS_QUEUED: usize = 4;

/// An interval this short without a sample gets no file: it is a drain forced just after a
/// boundary (a capture's start or end), or a stop just after one. Its file would say nothing,
/// and an incident's comparison would take it as its base.
const SLIVER: Duration = Duration::from_secs(1);

pub(super) struct Pipeline {
    queue: Option<QueueSender<Job>>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
    /// Intervals dropped since start, and the count when the current capture started.
    dropped: AtomicU64,
    dropped_at_capture_start: AtomicU64,
    /// Set once recording stops: the last interval goes in whatever the bound.
    closing: AtomicBool,
}

impl Pipeline {
    /// `traces`: where per-trace files go, when trace contexts are read.
    pub(super) fn spawn(
        table: Arc<Mutex<ProcessTable>>,
        writer: ProfileWriter,
        traces: Option<TraceStore>,
        retention: Retention,
        metrics: Arc<Metrics>,
        off_cpu: bool,
        otlp: Option<(Exporter, Origin)>,
    ) -> Self {
        let (queue, receiver) = queue::bounded::<Job>(INTERVALS_QUEUED);
        let traces = traces.map(|traces| traces.with_disk_limit(retention.max_bytes()));
        let output_metrics = metrics.clone();
        let thread = thread::Builder::new()
            .name("profile-writer".into())
            .spawn(move || {
                let mut output = Output {
                    writer,
                    traces,
                    retention,
                    dropped: 0,
                    symbolizer: Symbolizer::new(),
                    cache_seen: CacheStats::default(),
                    labeler: TraceLabeler::default(),
                    capture: None,
                    pulls: HashMap::new(),
                    earlier_parts: Vec::new(),
                    metrics: output_metrics,
                    off_cpu,
                    otlp,
                };
                for queued in receiver {
                    match queued.job {
                        Job::Interval(interval) => {
                            output.write_interval(*interval, &table);
                            output.prune();
                            crate::allocator::release_free_memory();
                        }
                        Job::Part(part) => {
                            let samples = output.take_part(&part.drained, part.epoch, &table);
                            output.earlier_parts.extend(samples);
                        }
                        Job::PullStart {
                            id,
                            start,
                            filter,
                            comments,
                        } => {
                            let pull = Pull {
                                capture: Capture::new(start, comments),
                                matcher: Matcher::new(filter),
                            };
                            output.pulls.insert(id, pull);
                        }
                        Job::PullEnd {
                            id,
                            end,
                            frequency,
                            profile,
                        } => {
                            let _ = profile.send(output.answer_pull(id, end, frequency));
                        }
                        Job::PullCancel { id } => {
                            output.pulls.remove(&id);
                        }
                        Job::CaptureStart { start, comments } => {
                            output.capture = Some(Capture::new(start, comments));
                        }
                        Job::CaptureEnd {
                            end,
                            frequency,
                            comments,
                        } => {
                            output.write_incident(end, frequency, comments);
                            output.prune();
                        }
                    }
                    output.metrics.health.job_done();
                }
                // Recording stopped: what the exporter holds gets a short try, then the spool.
                if let Some((exporter, _)) = output.otlp.take() {
                    exporter.finish();
                }
            })
            .expect("spawning a thread at start-up");
        Self::with_queue(queue, Some(thread), metrics)
    }

    fn with_queue(
        queue: QueueSender<Job>,
        thread: Option<JoinHandle<()>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            queue: Some(queue),
            thread,
            metrics,
            dropped: AtomicU64::new(0),
            dropped_at_capture_start: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        }
    }

    /// Hands `job` to the writer without waiting. An interval that finds the writer
    /// [`INTERVALS_QUEUED`] behind is dropped and counted (its samples are lost; the recorder
    /// goes on); capture starts and ends always go in.
    pub(super) fn send(&self, mut job: Job) -> Result<(), RecordError> {
        let queue = self.queue.as_ref().ok_or(RecordError::PipelineGone)?;
        match &mut job {
            Job::Interval(_)
            | Job::Part(_)
            | Job::PullStart { .. }
            | Job::PullEnd { .. }
            | Job::PullCancel { .. } => {}
            Job::CaptureStart { .. } => self
                .dropped_at_capture_start
                .store(self.dropped.load(Ordering::Acquire), Ordering::Release),
            Job::CaptureEnd { comments, .. } => {
                let dropped = self.dropped.load(Ordering::Acquire)
                    - self.dropped_at_capture_start.load(Ordering::Acquire);
                // Before the rate at the end, which readers look for in the last comment.
                if dropped > 0 {
                    comments.insert(
                        0,
                        format!(
                            "{dropped} interval(s) of this capture dropped: the writer fell behind"
                        ),
                    );
                }
            }
        }
        let droppable =
            matches!(job, Job::Interval(_) | Job::Part(_)) && !self.closing.load(Ordering::Acquire);
        match queue.send(job, droppable) {
            Sent::Queued => {
                self.metrics.health.job_queued();
                Ok(())
            }
            Sent::Full(_) => {
                let total = self.dropped.fetch_add(1, Ordering::AcqRel) + 1;
                self.metrics.interval_dropped(DropReason::WriterBehind);
                tracing::warn!(
                    dropped_total = total,
                    queued = queue.held(),
                    "the profile writer is behind: dropped a drained interval"
                );
                Ok(())
            }
            Sent::Gone => Err(RecordError::PipelineGone),
        }
    }

    /// From now on intervals are queued whatever the bound: the recording stopped, and its
    /// last interval is written before the process exits.
    pub(super) fn closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Waits until every interval sent has been written.
    pub(super) fn finish(&mut self) -> Result<(), RecordError> {
        self.queue.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(_)) => Err(RecordError::PipelineGone),
            _ => Ok(()),
        }
    }
}

/// Everything the writer thread owns.
struct Output {
    writer: ProfileWriter,
    traces: Option<TraceStore>,
    retention: Retention,
    /// Profiles lost to a full disk since start.
    dropped: u64,
    symbolizer: Symbolizer,
    /// The symbolizer's totals when last reported to the metrics.
    cache_seen: CacheStats,
    labeler: TraceLabeler,
    capture: Option<Capture>,
    /// Profile requests over HTTP under way, by ID.
    pulls: HashMap<u64, Pull>,
    /// Samples of the interval's parts before its last, written with it.
    earlier_parts: Vec<ResolvedSample>,
    metrics: Arc<Metrics>,
    /// Whether the recording has off-CPU records: `offcpu-` files beside the CPU ones.
    off_cpu: bool,
    /// `--otlp-endpoint`: each interval's samples also go to the collector.
    otlp: Option<(Exporter, Origin)>,
}

/// A profile request's capture: the samples that pass its filter.
struct Pull {
    capture: Capture,
    matcher: Matcher,
}

impl Output {
    /// Writes a profile; on a full disk, deletes the oldest profiles and tries once more.
    /// Sampling goes on either way: a profile that still does not fit is counted and dropped.
    fn write_with_room(
        &mut self,
        kind: FileKind,
        prefix: &str,
        time: SystemTime,
        profile: &Profile,
    ) -> Result<(PathBuf, u64), WriteError> {
        let written = self.try_write_with_room(prefix, time, profile);
        match &written {
            Ok((_, bytes)) => self.metrics.file_written(kind, *bytes),
            Err(err) if err.is_disk_full() => self.metrics.error(ErrorKind::DiskFull),
            Err(_) => self.metrics.error(ErrorKind::Write),
        }
        let outcome = written.as_ref().err().map(|err| crate::error_chain(err));
        self.metrics.health.write_outcome(outcome);
        written
    }

    fn try_write_with_room(
        &mut self,
        prefix: &str,
        time: SystemTime,
        profile: &Profile,
    ) -> Result<(PathBuf, u64), WriteError> {
        let first = self.writer.write(prefix, time, profile);
        let Err(err) = &first else {
            return first;
        };
        if !err.is_disk_full() {
            return first;
        }
        // Room for this profile with margin: gzip does not grow it.
        let wanted = (prost::Message::encoded_len(profile) as u64).max(1 << 20);
        match self.retention.free_oldest(wanted) {
            Ok(pruned) => tracing::warn!(
                files = pruned.files,
                bytes = pruned.bytes,
                "disk full: deleted the oldest profiles to make room"
            ),
            Err(err) => {
                self.metrics.error(ErrorKind::Retention);
                tracing::warn!("disk full, and deleting old profiles failed: {err}");
            }
        }
        let retried = self.writer.write(prefix, time, profile);
        if retried.as_ref().is_err_and(WriteError::is_disk_full) {
            self.dropped += 1;
            self.metrics.profile_dropped();
            tracing::error!(
                dropped_total = self.dropped,
                "disk full: a {prefix} profile was dropped"
            );
        }
        retried
    }

    /// Keeps the output directory under `--max-disk-mb`.
    fn prune(&self) {
        match self.retention.enforce() {
            Ok(pruned) if pruned.files > 0 => tracing::info!(
                files = pruned.files,
                bytes = pruned.bytes,
                "deleted the oldest profiles to stay under --max-disk-mb"
            ),
            Ok(_) => {}
            Err(err) => {
                self.metrics.error(ErrorKind::Retention);
                tracing::warn!("could not apply --max-disk-mb: {err}");
            }
        }
    }

    /// Writes an interval's files, then lets the symbolizer's and labeler's caches age by one
    /// interval, whatever was written.
    fn write_interval(&mut self, interval: Interval, table: &Mutex<ProcessTable>) {
        self.write_interval_files(interval, table);
        self.symbolizer.end_interval();
        self.labeler.end_interval();
    }

    fn write_interval_files(&mut self, interval: Interval, table: &Mutex<ProcessTable>) {
        let Interval {
            drained,
            meta,
            epoch,
            counters,
            bpf_ns_per_sample,
            off_cpu_kernel_ns,
            drain_started,
            comments,
        } = interval;
        let last_part = self.take_part(&drained, epoch, table);
        let mut samples = std::mem::take(&mut self.earlier_parts);
        samples.extend(last_part);
        if let Some((exporter, origin)) = &self.otlp
            && let Some(request) = crate::otlp::encode::encode(&samples, &meta, origin)
        {
            exporter.submit(request);
        }
        let cache = self.symbolizer.stats();
        if samples.is_empty() && meta.duration < SLIVER {
            tracing::debug!(
                interval = epoch,
                duration_ms = meta.duration.as_millis() as u64,
                "no file for an empty sliver of an interval"
            );
            return;
        }
        let (mut profile, stats) = build_profile(&samples, meta);
        add_comments(&mut profile, &comments);
        let problems = counters.problems();
        if !problems.is_empty() {
            tracing::warn!(
                interval = epoch,
                ?problems,
                "the BPF program lost or degraded samples"
            );
        }
        match self.write_with_room(FileKind::Interval, "cpu", meta.start, &profile) {
            Ok((path, bytes)) => tracing::info!(
                interval = epoch,
                samples = stats.samples,
                stacks = stats.stacks,
                processes = stats.processes,
                traced = counters.get(profiler_common::Counter::Traced),
                filtered = counters.get(profiler_common::Counter::Filtered),
                unwound = counters.get(profiler_common::Counter::UnwindWalks),
                bytes,
                bpf_ns_per_sample,
                elapsed_ms = drain_started.elapsed().as_millis() as u64,
                cache_hits = cache.hits,
                cache_misses = cache.misses,
                "wrote {}",
                path.display()
            ),
            Err(err) => tracing::error!(interval = epoch, "{}", crate::error_chain(&err)),
        }
        if self.off_cpu {
            self.write_off_cpu(&samples, meta, &counters, epoch, off_cpu_kernel_ns);
        }
        if let Some(traces) = &mut self.traces {
            let metrics = &self.metrics;
            let written = |bytes| metrics.file_written(FileKind::Trace, bytes);
            let (lost_before, rotations_before) = (traces.lost(), traces.rotations());
            match traces.add_interval(&samples, meta, written) {
                Ok(0) => {}
                Ok(files) => tracing::debug!(interval = epoch, files, "wrote trace files"),
                Err(err) if err.is_disk_full() => {
                    metrics.error(ErrorKind::DiskFull);
                    // Room for the retry that comes with the next interval.
                    let freed = self.retention.free_oldest(1 << 20);
                    tracing::warn!(
                        interval = epoch,
                        freed_files = freed.as_ref().map_or(0, |p| p.files),
                        "disk full: trace files will be written again with the next interval: {}",
                        crate::error_chain(&err)
                    );
                }
                Err(err) => {
                    metrics.error(ErrorKind::TraceWrite);
                    tracing::error!(interval = epoch, "{}", crate::error_chain(&err));
                }
            }
            for _ in lost_before..traces.lost() {
                metrics.profile_dropped();
            }
            for _ in rotations_before..traces.rotations() {
                metrics.index_rotated();
            }
            if traces.lost() > lost_before {
                tracing::error!(
                    lost_total = traces.lost(),
                    "trace files dropped: their samples left memory before the disk had room"
                );
            }
        }
    }

    /// Resolves a drain's samples and hands them to the captures under way (the incident's and
    /// the requests'); returns them for the interval's files.
    fn take_part(
        &mut self,
        drained: &Drained,
        epoch: u64,
        table: &Mutex<ProcessTable>,
    ) -> Vec<ResolvedSample> {
        let samples = resolve_interval(drained, table, &mut self.symbolizer, &mut self.labeler);
        let processes = {
            let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
            table.finish_drain(epoch);
            table.len()
        };
        self.metrics.set_processes(processes);
        let cache = self.symbolizer.stats();
        self.metrics.add_cache_stats(&self.cache_seen, &cache);
        self.cache_seen = cache;
        if let Some(capture) = &mut self.capture {
            let left_out = capture.add(samples.clone());
            if left_out > 0 {
                self.metrics.incident_samples_left_out(left_out);
                tracing::warn!(
                    interval = epoch,
                    left_out,
                    left_out_total = capture.left_out(),
                    "incident capture full: samples of new stacks left out of its file"
                );
            }
        }
        for (id, pull) in &mut self.pulls {
            let passed: Vec<ResolvedSample> = samples
                .iter()
                .filter(|sample| pull.matcher.matches(sample))
                .cloned()
                .collect();
            let left_out = pull.capture.add(passed);
            if left_out > 0 {
                tracing::warn!(
                    request = id,
                    left_out,
                    "profile request full: samples of new stacks left out of its answer"
                );
            }
        }
        samples
    }

    /// The gzipped pprof profile of request `id`'s capture.
    fn answer_pull(&mut self, id: u64, end: SystemTime, frequency: u64) -> Result<Vec<u8>, String> {
        let pull = self
            .pulls
            .remove(&id)
            .ok_or_else(|| format!("profile request {id} is not under way"))?;
        let rate = format!("sampling frequency at the end: {frequency} Hz");
        let (profile, stats) = pull.capture.into_profile(end, frequency, vec![rate]);
        let body =
            gzipped(&profile).map_err(|err| format!("encoding the profile failed: {err}"))?;
        tracing::info!(
            request = id,
            samples = stats.samples,
            processes = stats.processes,
            bytes = body.len(),
            "answered a profile request"
        );
        Ok(body)
    }

    /// Writes `offcpu-<start>.pb.gz`: the interval's off-CPU records.
    fn write_off_cpu(
        &mut self,
        samples: &[crate::resolve::ResolvedSample],
        meta: IntervalMeta,
        counters: &CounterSnapshot,
        epoch: u64,
        kernel_ns: Option<u64>,
    ) {
        let (profile, stats) = build_profile_of(ProfileValues::OffCpu, samples, meta);
        match self.write_with_room(FileKind::OffCpu, "offcpu", meta.start, &profile) {
            Ok((path, bytes)) => tracing::info!(
                interval = epoch,
                waits = stats.samples,
                timed = counters.get(profiler_common::Counter::OffCpuWaits),
                stacks = stats.stacks,
                threads_full = counters.get(profiler_common::Counter::OffCpuThreadsFull),
                unstacked = counters.get(profiler_common::Counter::OffCpuUnstacked),
                threads_added = counters.get(profiler_common::Counter::OffCpuThreadsAdded),
                threads_removed = counters.get(profiler_common::Counter::OffCpuThreadsRemoved),
                kernel_ms = kernel_ns.map(|ns| ns / 1_000_000),
                short = counters.get(profiler_common::Counter::OffCpuShort),
                bytes,
                "wrote {}",
                path.display()
            ),
            Err(err) => tracing::error!(interval = epoch, "{}", crate::error_chain(&err)),
        }
    }

    /// Writes `incident-<start>.pb.gz` with every sample since the capture started.
    fn write_incident(&mut self, end: SystemTime, frequency: u64, comments: Vec<String>) {
        let Some(capture) = self.capture.take() else {
            return;
        };
        let start = capture.start;
        let (left_out, entries) = (capture.left_out(), capture.entries());
        let (profile, stats) = capture.into_profile(end, frequency, comments);
        match self.write_with_room(FileKind::Incident, "incident", start, &profile) {
            Ok((path, bytes)) => tracing::info!(
                samples = stats.samples,
                processes = stats.processes,
                entries,
                left_out,
                bytes,
                "wrote incident capture {}",
                path.display()
            ),
            Err(err) => tracing::error!("{}", crate::error_chain(&err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::Health;

    use super::*;

    fn interval() -> Job {
        empty_interval(SystemTime::UNIX_EPOCH, Duration::from_secs(10))
    }

    fn empty_interval(start: SystemTime, duration: Duration) -> Job {
        Job::Interval(Box::new(Interval {
            drained: Drained::default(),
            meta: IntervalMeta {
                start,
                duration,
                period_ns: 1,
            },
            epoch: 0,
            counters: CounterSnapshot::default(),
            bpf_ns_per_sample: None,
            off_cpu_kernel_ns: None,
            drain_started: Instant::now(),
            comments: Vec::new(),
        }))
    }

    fn capture_end() -> Job {
        Job::CaptureEnd {
            end: SystemTime::UNIX_EPOCH,
            frequency: 99,
            comments: vec!["capture frequency at the end: 99 Hz".into()],
        }
    }

    #[test]
    fn a_writer_behind_costs_intervals_never_capture_edges() {
        let metrics = Arc::new(Metrics::new("n", Health::new("/nonexistent".into(), 10)));
        // A writer that takes nothing: the queue fills.
        let (queue, receiver) = queue::bounded(INTERVALS_QUEUED);
        let pipeline = Pipeline::with_queue(queue, None, metrics.clone());
        pipeline
            .send(Job::CaptureStart {
                start: SystemTime::UNIX_EPOCH,
                comments: Vec::new(),
            })
            .unwrap();
        for _ in 0..INTERVALS_QUEUED + 2 {
            pipeline.send(interval()).unwrap();
        }
        pipeline.send(capture_end()).unwrap();
        let text = metrics.encode();
        assert!(
            text.contains(r#"profiler_intervals_dropped_total{reason="writer_behind"} 2"#),
            "{text}"
        );
        // Once stopping, the last interval goes in whatever the bound.
        pipeline.closing();
        pipeline.send(interval()).unwrap();

        let jobs: Vec<Job> = receiver.try_iter().map(|queued| queued.job).collect();
        let kinds: Vec<&str> = jobs
            .iter()
            .map(|job| match job {
                Job::Interval(_) => "interval",
                Job::CaptureStart { .. } => "start",
                Job::CaptureEnd { .. } => "end",
                _ => "pull",
            })
            .collect();
        let mut expected = vec!["start"];
        expected.extend(["interval"; INTERVALS_QUEUED]);
        expected.extend(["end", "interval"]);
        assert_eq!(kinds, expected);
        let comments = jobs
            .iter()
            .find_map(|job| match job {
                Job::CaptureEnd { comments, .. } => Some(comments),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            comments[..],
            [
                "2 interval(s) of this capture dropped: the writer fell behind".to_owned(),
                "capture frequency at the end: 99 Hz".to_owned(),
            ],
            "the rate at the end stays the last comment"
        );
    }

    #[test]
    fn an_empty_sliver_gets_no_file_an_empty_interval_does() {
        let out = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new("n", Health::new(out.path().into(), 10)));
        let mut pipeline = Pipeline::spawn(
            Arc::new(Mutex::new(ProcessTable::default())),
            ProfileWriter::new(out.path()),
            None,
            Retention::new(out.path(), 0),
            metrics,
            false,
            None,
        );
        let start = SystemTime::now();
        pipeline
            .send(empty_interval(start, Duration::from_millis(20)))
            .unwrap();
        pipeline
            .send(empty_interval(
                start + Duration::from_secs(5),
                Duration::from_secs(10),
            ))
            .unwrap();
        pipeline.finish().unwrap();
        let files: Vec<String> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("cpu-"))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
    }
}
