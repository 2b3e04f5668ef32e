//! The thread that turns drained intervals into files. It owns the symbolizer (blazesym's is
//! not `Send`), so symbolization never delays a drain or the handling of process events.

use std::{
    sync::{Arc, Mutex, mpsc},
    thread::{self, JoinHandle},
    time::Instant,
};

use super::RecordError;
use crate::{
    bpf::{CounterSnapshot, Drained},
    process::ProcessTable,
    profile::{IntervalMeta, ProfileWriter, TraceStore, build_profile, resolve_interval},
    symbolize::Symbolizer,
    tracectx::TraceLabeler,
};

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
    /// When the drain began: the time to a written file is measured from here.
    pub drain_started: Instant,
}

pub(super) struct Pipeline {
    sender: Option<mpsc::Sender<Interval>>,
    thread: Option<JoinHandle<()>>,
}

impl Pipeline {
    /// `traces`: where per-trace files go, when trace contexts are read.
    pub(super) fn spawn(
        table: Arc<Mutex<ProcessTable>>,
        writer: ProfileWriter,
        traces: Option<TraceStore>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel::<Interval>();
        let thread = thread::Builder::new()
            .name("profile-writer".into())
            .spawn(move || {
                let mut output = Output {
                    writer,
                    traces,
                    symbolizer: Symbolizer::new(),
                    labeler: TraceLabeler::default(),
                };
                for interval in receiver {
                    output.write_interval(interval, &table);
                }
            })
            .expect("spawning a thread at start-up");
        Self {
            sender: Some(sender),
            thread: Some(thread),
        }
    }

    pub(super) fn send(&self, interval: Interval) -> Result<(), RecordError> {
        self.sender
            .as_ref()
            .and_then(|s| s.send(interval).ok())
            .ok_or(RecordError::PipelineGone)
    }

    /// Waits until every interval sent has been written.
    pub(super) fn finish(&mut self) -> Result<(), RecordError> {
        self.sender.take();
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
    symbolizer: Symbolizer,
    labeler: TraceLabeler,
}

impl Output {
    fn write_interval(&mut self, interval: Interval, table: &Mutex<ProcessTable>) {
        let Interval {
            drained,
            meta,
            epoch,
            counters,
            bpf_ns_per_sample,
            drain_started,
        } = interval;
        let samples = resolve_interval(&drained, table, &mut self.symbolizer, &mut self.labeler);
        table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finish_drain(epoch);
        let (profile, stats) = build_profile(&samples, meta);
        let problems = counters.problems();
        if !problems.is_empty() {
            tracing::warn!(
                interval = epoch,
                ?problems,
                "the BPF program lost or degraded samples"
            );
        }
        match self.writer.write("cpu", meta.start, &profile) {
            Ok((path, bytes)) => tracing::info!(
                interval = epoch,
                samples = stats.samples,
                stacks = stats.stacks,
                processes = stats.processes,
                traced = counters.get(profiler_common::Counter::Traced),
                filtered = counters.get(profiler_common::Counter::Filtered),
                bytes,
                bpf_ns_per_sample,
                elapsed_ms = drain_started.elapsed().as_millis() as u64,
                cache_hits = self.symbolizer.stats().hits,
                cache_misses = self.symbolizer.stats().misses,
                "wrote {}",
                path.display()
            ),
            Err(err) => tracing::error!(interval = epoch, "{}", crate::error_chain(&err)),
        }
        if let Some(traces) = &mut self.traces {
            match traces.add_interval(&samples, meta) {
                Ok(0) => {}
                Ok(files) => tracing::debug!(interval = epoch, files, "wrote trace files"),
                Err(err) => tracing::error!(interval = epoch, "{}", crate::error_chain(&err)),
            }
        }
        self.symbolizer.end_interval();
        self.labeler.end_interval();
    }
}
