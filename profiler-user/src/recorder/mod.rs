//! The `record` command: preflight, start the sampler, then drain every interval until the
//! duration ends, a signal arrives, or every target has exited; the last partial interval is
//! always written.

mod pipeline;
mod targets;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval_at, sleep},
};

use crate::{
    bpf::{
        BpfError, CounterSnapshot, Drained, Event, EventReader, ProgramCost, Sampler,
        SamplerOptions, TraceOptions,
    },
    cli::RecordArgs,
    preflight::{self, PreflightError},
    process::{ProcessKey, ProcessSnapshot, ProcessTable},
    profile::{IntervalMeta, ProfileWriter, TraceStore},
    tracectx::{TlsTracker, kernel_btf},
};
use pipeline::{Interval, Pipeline};
use targets::Targets;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("starting the BPF sampler failed")]
    Start(#[source] BpfError),
    #[error("draining the BPF maps failed")]
    Drain(#[source] BpfError),
    #[error("setting up signal handling failed")]
    Signals(#[source] std::io::Error),
    #[error("the profile writer thread stopped unexpectedly")]
    PipelineGone,
}

/// Why recording stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Signal(&'static str),
    TargetsExited,
}

/// Runs `profiler record` to the end.
pub async fn record(args: &RecordArgs) -> Result<StopReason, RecordError> {
    preflight::check_capabilities()?;
    preflight::check_btf(&preflight::kernel_btf_path())?;
    preflight::check_perf_events(args.frequency)?;
    preflight::check_targets(&args.pids)?;
    preflight::prepare_output_dir(&args.output_dir)?;

    let trace = trace_options(args);
    let options = SamplerOptions {
        frequency: args.frequency,
        targets: args.pids.clone(),
        include_idle: args.include_idle,
        kernel_stacks: !args.no_kernel_stacks,
        trace,
    };
    let mut sampler = Sampler::start(&options).map_err(RecordError::Start)?;
    tracing::info!(
        cpus = sampler.cpus(),
        frequency = args.frequency,
        targets = ?args.pids,
        output = %args.output_dir.display(),
        "recording {}",
        if args.pids.is_empty() { "the whole host" } else { "the target processes" }
    );

    let table = Arc::new(Mutex::new(ProcessTable::default()));
    let traces = trace.map(|_| TraceStore::new(args.output_dir.join("traces")));
    let pipeline = Pipeline::spawn(table.clone(), ProfileWriter::new(&args.output_dir), traces);
    let events = sampler.take_events().expect("events are taken once, here");
    let mut recording = Recording {
        sampler,
        table,
        pipeline,
        period_ns: 1_000_000_000 / args.frequency,
        started: SystemTime::now(),
        started_at: Instant::now(),
        counters: CounterSnapshot::default(),
        cost: ProgramCost::default(),
        tls: trace.map(|_| TlsState::default()),
    };
    let reason = recording.run(args, events).await;
    // Whatever stopped us, the partial interval is written before we return.
    let flushed = recording.drain();
    let finished = recording.pipeline.finish();
    let reason = reason?;
    flushed?;
    finished?;
    tracing::info!(?reason, "recording stopped");
    Ok(reason)
}

struct Recording {
    sampler: Sampler,
    table: Arc<Mutex<ProcessTable>>,
    pipeline: Pipeline,
    period_ns: u64,
    /// Start of the interval being recorded.
    started: SystemTime,
    started_at: Instant,
    counters: CounterSnapshot,
    cost: ProgramCost,
    /// Trace-context resolution, when enabled.
    tls: Option<TlsState>,
}

/// Which process image each PID's TLS location in the BPF map belongs to.
#[derive(Default)]
struct TlsState {
    tracker: TlsTracker,
    located: HashMap<u32, u64>,
}

/// Trace-context settings, or `None` when disabled by flag or impossible on this kernel.
fn trace_options(args: &RecordArgs) -> Option<TraceOptions> {
    if args.no_trace_context {
        return None;
    }
    match kernel_btf::thread_pointer_offset(&preflight::kernel_btf_path()) {
        Ok(task_tp_offset) => Some(TraceOptions {
            task_tp_offset,
            tcb_dtv_offset: kernel_btf::tcb_dtv_offset(),
            max_traces: args.max_traces_per_interval,
        }),
        Err(err) => {
            tracing::warn!(
                "trace contexts will not be read: {}",
                crate::error_chain(&err)
            );
            None
        }
    }
}

impl Recording {
    async fn run(
        &mut self,
        args: &RecordArgs,
        events: EventReader,
    ) -> Result<StopReason, RecordError> {
        // SAFETY: the reader owns the ring buffer's descriptor and keeps it open while held here.
        let mut events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|err| RecordError::Signals(err.into()))?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(RecordError::Signals)?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(RecordError::Signals)?;
        let every = Duration::from_secs(args.interval);
        let mut ticks = interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let deadline = sleep(args.duration.map_or(Duration::MAX / 4, Duration::from_secs));
        tokio::pin!(deadline);
        let mut targets = Targets::new(&args.pids);
        let mut watch = tokio::time::interval(Duration::from_secs(1));

        loop {
            tokio::select! {
                _ = ticks.tick() => self.drain()?,
                ready = events.readable_mut() => {
                    let mut guard = ready.map_err(RecordError::Signals)?;
                    self.handle_events(guard.get_inner_mut().read_available());
                    guard.clear_ready();
                }
                _ = watch.tick(), if !targets.is_empty() => {
                    if targets.all_exited() {
                        return Ok(StopReason::TargetsExited);
                    }
                }
                _ = &mut deadline, if args.duration.is_some() => return Ok(StopReason::Duration),
                _ = sigint.recv() => return Ok(StopReason::Signal("SIGINT")),
                _ = sigterm.recv() => return Ok(StopReason::Signal("SIGTERM")),
            }
        }
    }

    fn handle_events(&mut self, events: Vec<Event>) {
        for event in events {
            match event {
                Event::NewProcess { pid, pid_gen } => {
                    let key = ProcessKey { pid, pid_gen };
                    let snapshot = self.lock_table().get_or_capture(key);
                    self.locate_tls(key, &snapshot);
                }
                Event::Ended { pid, pid_gen } => {
                    let key = ProcessKey { pid, pid_gen };
                    self.lock_table().on_ended(key);
                    self.forget_tls(key);
                }
            }
        }
    }

    fn lock_table(&self) -> std::sync::MutexGuard<'_, ProcessTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves where `key`'s threads keep their trace context and tells the BPF program.
    fn locate_tls(&mut self, key: ProcessKey, snapshot: &ProcessSnapshot) {
        let Some(tls) = &mut self.tls else { return };
        let Some(location) = tls.tracker.locate(key, snapshot) else {
            return;
        };
        match self.sampler.set_tls_location(key.pid, location) {
            Ok(()) => {
                tls.located.insert(key.pid, key.pid_gen);
                tracing::debug!(pid = key.pid, ?location, "reading trace contexts");
            }
            Err(err) => tracing::warn!(pid = key.pid, "{}", crate::error_chain(&err)),
        }
    }

    fn forget_tls(&mut self, key: ProcessKey) {
        let Some(tls) = &mut self.tls else { return };
        tls.tracker.forget(&key);
        if tls.located.get(&key.pid) == Some(&key.pid_gen) {
            tls.located.remove(&key.pid);
            self.sampler.forget_tls_location(key.pid);
        }
    }

    /// Looks again at sampled processes without a location: a library with the variable may
    /// have been opened since their snapshot.
    fn retry_tls(&mut self, drained: &Drained) {
        let Some(tls) = &self.tls else { return };
        let due: HashSet<ProcessKey> = drained
            .samples
            .iter()
            .map(|(key, _)| ProcessKey {
                pid: key.pid,
                pid_gen: key.pid_gen,
            })
            .filter(|key| tls.tracker.due_for_retry(key))
            .collect();
        for key in due {
            if preflight::process_alive(key.pid) {
                let snapshot = self.lock_table().recapture(key);
                self.locate_tls(key, &snapshot);
            } else if let Some(tls) = &mut self.tls {
                tls.tracker.forget(&key);
            }
        }
    }

    /// Flips and drains the maps and hands the interval to the pipeline.
    fn drain(&mut self) -> Result<(), RecordError> {
        let drain_started = Instant::now();
        let drained = self.sampler.drain().map_err(RecordError::Drain)?;
        let epoch = self.lock_table().begin_drain();
        self.retry_tls(&drained);
        let counters = self.sampler.counters().map_err(RecordError::Drain)?;
        let cost = self.sampler.program_cost().unwrap_or_default();
        let meta = IntervalMeta {
            start: self.started,
            duration: self.started_at.elapsed(),
            period_ns: self.period_ns,
        };
        self.started = SystemTime::now();
        self.started_at = Instant::now();
        let interval = Interval {
            drained,
            meta,
            epoch,
            counters: counters.since(&self.counters),
            bpf_ns_per_sample: cost.per_run_since(&self.cost),
            drain_started,
        };
        self.counters = counters;
        self.cost = cost;
        self.pipeline.send(interval)
    }
}
