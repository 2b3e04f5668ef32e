//! The `record` command: preflight, start the sampler, then drain every interval until the
//! duration ends, a signal arrives, or every target has exited; the last partial interval is
//! always written.

mod pipeline;
mod targets;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval_at, sleep},
};

use crate::{
    bpf::{BpfError, CounterSnapshot, Event, EventReader, ProgramCost, Sampler, SamplerOptions},
    cli::RecordArgs,
    preflight::{self, PreflightError},
    process::{ProcessKey, ProcessTable},
    profile::{IntervalMeta, ProfileWriter},
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

    let options = SamplerOptions {
        frequency: args.frequency,
        targets: args.pids.clone(),
        include_idle: args.include_idle,
        kernel_stacks: !args.no_kernel_stacks,
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
    let pipeline = Pipeline::spawn(table.clone(), ProfileWriter::new(&args.output_dir));
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

    fn handle_events(&self, events: Vec<Event>) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for event in events {
            match event {
                Event::NewProcess { pid, pid_gen } => table.on_new(ProcessKey { pid, pid_gen }),
                Event::Ended { pid, pid_gen } => table.on_ended(ProcessKey { pid, pid_gen }),
            }
        }
    }

    /// Flips and drains the maps and hands the interval to the pipeline.
    fn drain(&mut self) -> Result<(), RecordError> {
        let drain_started = Instant::now();
        let drained = self.sampler.drain().map_err(RecordError::Drain)?;
        let epoch = self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .begin_drain();
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
