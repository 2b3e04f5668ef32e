//! The `record` command: preflight, start the sampler, then drain every interval until the
//! duration ends, a signal arrives, or every target has exited; the last partial interval is
//! always written.

mod pipeline;
mod targets;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
    time::{MissedTickBehavior, interval_at, sleep},
};

use crate::adaptive::{
    controller::{Controller, ControllerConfig, Decision, Reason},
    signals::{BpfRunTime, CostReader, LoadReader},
};
use crate::bpf::sizing::{Load, MapSizes, OffCpuSizes, SizeOverrides};
use crate::kernel_features::KernelFeatures;
use crate::stop_signals::StopSignals;
use crate::{
    bpf::{
        BpfError, CounterSnapshot, Drained, Event, EventReader, ProgramCost, Sampler,
        SamplerOptions, TraceOptions, UnwindMaps, UnwindSizes, period_ns,
        unwind_maps::{ProcessRangesMap, UnwindArrayMaps},
    },
    cli::RecordArgs,
    golabels::GoTracker,
    metrics::{ErrorKind, Health, Metrics, MetricsError, MetricsServer},
    preflight::{self, PreflightError},
    process::{
        Liveness, ProcessKey, ProcessSnapshot, ProcessTable,
        cgroup_targets::{self, CgroupTargetError},
        liveness,
    },
    profile::{IntervalMeta, ProfileWriter, Retention, TraceStore},
    pull::{
        Opened, PullMessage, PullRequest,
        endpoint::{Access, PullEndpoint},
        token::{TokenError, TokenFile},
    },
    tracectx::{
        TlsTracker,
        kernel_btf::{self, KernelBtf},
    },
    unwind::{
        kernel_maps::{Capacity, KernelTables},
        loader::Loader,
        store::TableStore,
    },
};
use pipeline::{Interval, Job, Part, Pipeline};
use targets::Targets;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    #[error(transparent)]
    Cgroup(#[from] CgroupTargetError),
    #[error("starting the BPF sampler failed")]
    Start(#[source] BpfError),
    #[error(
        "the kernel's verifier refused BPF program `{program}` ({errno}): {reason}; its whole log \
         is in {log}: please report it with this kernel's version (uname -r)"
    )]
    Refused {
        program: &'static str,
        errno: std::io::Error,
        reason: String,
        log: String,
    },
    #[error(transparent)]
    KernelBtf(#[from] crate::tracectx::kernel_btf::KernelBtfError),
    #[error(
        "this kernel cannot filter by cgroup: its BTF has neither cgroup.ancestor_ids (Linux \
         5.5 to 5.19) nor the helper bpf_get_current_ancestor_cgroup_id (Linux 5.11 on); drop \
         --cgroup and --container, or name the processes with --pid"
    )]
    NoCgroupFilter,
    #[error("draining the BPF maps failed")]
    Drain(#[source] BpfError),
    #[error("setting up signal handling failed")]
    Signals(#[source] std::io::Error),
    #[error("the profile writer thread stopped unexpectedly")]
    PipelineGone,
    #[error("the recording's worker thread stopped unexpectedly")]
    WorkerGone,
    #[error(transparent)]
    OtlpConfig(#[from] crate::otlp::config::ConfigError),
    #[error(transparent)]
    OtlpSpool(#[from] crate::otlp::spool::SpoolError),
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
    // First: a signal during the slow start-up below waits for the loop, which stops at once.
    let signals = StopSignals::install().map_err(RecordError::Signals)?;
    preflight::check_capabilities()?;
    preflight::check_kernel_version()?;
    preflight::check_btf(&preflight::kernel_btf_path())?;
    // A capture raises the rate: check the highest rate the recording may ask for.
    let highest = if args.adaptive.no_adaptive {
        args.frequency
    } else {
        args.frequency.max(args.adaptive.capture_frequency)
    };
    preflight::check_perf_events(highest)?;
    preflight::check_targets(&args.pids)?;
    let cgroups = cgroup_targets::resolve(&args.cgroups, &args.containers)?;
    if !args.no_kernel_stacks && !preflight::kallsyms_visible() {
        tracing::warn!(
            "/proc/kallsyms hides kernel addresses from this process: kernel frames will not be \
             named; grant CAP_SYSLOG (or set the sysctl kernel.kptr_restrict=0), or pass \
             --no-kernel-stacks"
        );
    }
    preflight::prepare_output_dir(&args.output_dir)?;
    let token = args
        .http_token_file
        .as_deref()
        .map(TokenFile::open)
        .transpose()?;

    let node = args.node_name.clone().unwrap_or_else(host_name);
    let metrics = Arc::new(Metrics::new(
        &node,
        Health::new(args.output_dir.clone(), args.interval),
    ));
    // Before the (slow) BPF load: a mistyped endpoint fails at once.
    let otlp = otlp_exporter(args, &metrics)?;
    // Up before the (slow) BPF load, so that probes hear "not ready yet" rather than nothing.
    // Profile requests made before the recording runs wait for it.
    let (_server, pulls) = match args.metrics_address.0 {
        Some(address) => {
            let max_connections = args.listeners.max_connections as usize;
            let access = Access::of(address, token);
            if matches!(access, Access::Closed) {
                tracing::warn!(
                    "--metrics-address {address} is reachable from other hosts: \
                     /debug/pprof/profile answers 403 until --http-token-file is given"
                );
            }
            let (endpoint, pulls) = PullEndpoint::new(access, metrics.clone());
            let routes = Some(endpoint.routes());
            let server =
                MetricsServer::start(address, metrics.clone(), max_connections, routes).await?;
            tracing::info!(
                "serving metrics on http://{}/metrics (health: /healthz, /readyz; profiles: \
                 /debug/pprof/profile?seconds=N{})",
                server.address(),
                if args.http_token_file.is_some() {
                    ", with the token"
                } else {
                    ""
                }
            );
            (Some(server), Some(pulls))
        }
        None => (None, None),
    };
    let _web = match args.serve {
        Some(address) => {
            let options = crate::serve::WebOptions {
                flag: "--serve",
                max_connections: args.listeners.max_connections as usize,
                allowed_hosts: args.listeners.allowed_hosts.clone(),
                refused: Some(metrics.connections_refused("web")),
            };
            Some(crate::serve::Server::start(&args.output_dir, address, options).await?)
        }
        None => None,
    };

    let btf = KernelBtf::read(&preflight::kernel_btf_path())?;
    let features = KernelFeatures::detect(&btf);
    for missing in features.missing() {
        tracing::warn!("{missing}");
    }
    let cgroup_read = match (cgroups.is_empty(), features.cgroup_read) {
        (true, _) => None,
        (false, Some(read)) => Some(read),
        (false, None) => return Err(RecordError::NoCgroupFilter),
    };
    let trace = trace_options(args, &features);
    let task = btf.task_offsets()?;
    let unwind_budget =
        (!args.no_dwarf_unwinding).then(|| UnwindBudget::of_mib(args.unwind_memory_mb));
    drop(btf);
    let sizes = map_sizes(args, highest);
    let options = SamplerOptions {
        frequency: args.frequency,
        targets: args.pids.clone(),
        target_cgroups: cgroups.iter().map(|c| c.id).collect(),
        cgroup_read,
        include_idle: args.include_idle,
        kernel_stacks: !args.no_kernel_stacks,
        trace,
        task,
        sizes,
        task_pt_regs: features.task_pt_regs,
        unwind: unwind_budget.map(|budget| budget.sizes),
        off_cpu_min_ns: args
            .off_cpu
            .then(|| args.off_cpu_min_us.saturating_mul(1000)),
        switch_prev_state: features.switch_prev_state,
    };
    let mut sampler = Sampler::start(&options).map_err(|err| refused(err, &args.output_dir))?;
    let unwind = match (unwind_budget, sampler.take_unwind_maps()) {
        (Some(budget), Some(maps)) => Some(budget.loader(maps).map_err(RecordError::Signals)?),
        _ => None,
    };
    metrics.health.set_attached();
    metrics.set_frequency(args.frequency);
    let map_bytes = crate::bpf::map_memory::held_bytes();
    metrics.set_bpf_map_bytes(map_bytes);
    tracing::info!(
        cpus = sampler.cpus(),
        frequency = args.frequency,
        bpf_map_mib = format!("{:.1}", map_bytes as f64 / (1 << 20) as f64),
        counts_entries = sizes.counts,
        stacks_entries = ?sizes.stacks,
        targets = ?args.pids,
        cgroups = ?cgroups.iter().map(|c| c.path.display().to_string()).collect::<Vec<_>>(),
        output = %args.output_dir.display(),
        "recording {}",
        if args.pids.is_empty() && cgroups.is_empty() { "the whole host" } else { "the targets" }
    );

    let table = Arc::new(Mutex::new(ProcessTable::default()));
    let traces = trace.map(|_| {
        let store = TraceStore::new(args.output_dir.join("traces"));
        if args.off_cpu {
            store.with_off_cpu()
        } else {
            store
        }
    });
    let retention = Retention::new(&args.output_dir, args.max_disk_mb);
    match retention.remove_temporaries() {
        Ok(removed) if removed.files > 0 => {
            tracing::info!(
                files = removed.files,
                "removed temporary files an earlier run left"
            )
        }
        Ok(_) => {}
        Err(err) => tracing::warn!("cannot remove temporary files an earlier run left: {err}"),
    }
    let pipeline = Pipeline::spawn(
        table.clone(),
        ProfileWriter::new(&args.output_dir),
        traces,
        retention,
        metrics.clone(),
        args.off_cpu,
        otlp,
    );
    let events = sampler.take_events().expect("events are taken once, here");
    let cpus = sampler.cpus();
    let recording = Recording {
        sampler,
        table,
        pipeline,
        started: SystemTime::now(),
        started_at: Instant::now(),
        counters: CounterSnapshot::default(),
        cost: ProgramCost::default(),
        off_cpu_cost_ns: 0,
        tls: trace.map(|_| TlsState::default()),
        control: (!args.adaptive.no_adaptive).then(|| Control::new(args, cpus)),
        unwind,
        rate_changes: Vec::new(),
        node,
        metrics,
        baseline_hz: args.frequency,
        pull_hz_limit: preflight::max_sample_rate().map_or(highest, |limit| limit.min(highest)),
        pull_rates: HashMap::new(),
    };
    // Processes come and go in a cgroup: only a recording of PIDs alone ends with its targets.
    let watched: &[u32] = if cgroups.is_empty() { &args.pids } else { &[] };
    let mut slot = Some(Box::new(recording));
    let reason = run(&mut slot, args, watched, events, signals, pulls).await;
    // Whatever stopped us, the partial interval (and capture) is written before we return.
    let flushed = off_thread(&mut slot, |recording| {
        recording.pipeline.closing();
        let flushed = recording
            .drain()
            .and_then(|()| recording.end_capture_early());
        let finished = recording.pipeline.finish();
        if let Some(unwind) = &recording.unwind {
            let stats = unwind.stats();
            tracing::info!(
                processes = stats.processes,
                tables = stats.tables,
                table_bytes = stats.table_bytes,
                files_without_table = stats.files_without_table,
                load_failures = stats.load_failures,
                "unwind tables at the end"
            );
        }
        flushed.and(finished)
    })
    .await;
    let reason = reason?;
    flushed??;
    tracing::info!(?reason, "recording stopped");
    Ok(reason)
}

struct Recording {
    sampler: Sampler,
    table: Arc<Mutex<ProcessTable>>,
    pipeline: Pipeline,
    /// Start of the interval being recorded.
    started: SystemTime,
    started_at: Instant,
    counters: CounterSnapshot,
    cost: ProgramCost,
    /// The off-CPU programs' estimated run time at the last drain.
    off_cpu_cost_ns: u64,
    /// Trace-context resolution, when enabled.
    tls: Option<TlsState>,
    /// Adaptive sampling, unless `--no-adaptive`.
    control: Option<Control>,
    /// Unwind tables for the processes sampled, unless `--no-dwarf-unwinding`.
    unwind: Option<UnwindLoader>,
    /// Rate changes since the last drain, for the interval's comments.
    rate_changes: Vec<String>,
    /// The node name written into each profile.
    node: String,
    metrics: Arc<Metrics>,
    /// `--frequency`: the rate without a capture or a request.
    baseline_hz: u64,
    /// The most a profile request may raise the rate to: the highest rate the maps were sized
    /// for, within the kernel's limit.
    pull_hz_limit: u64,
    /// The rates profile requests under way asked for, by request.
    pull_rates: HashMap<u64, u64>,
}

/// The adaptive controller and what feeds it.
struct Control {
    controller: Controller,
    load: LoadReader,
    cost: CostReader,
    started: Instant,
    /// Start-up and the first interval's cold symbolization are one-off costs, not what the
    /// budget governs: cost readings begin once the first drain is behind.
    warm_up: Duration,
}

impl Control {
    fn new(args: &RecordArgs, cpus: usize) -> Self {
        let adaptive = &args.adaptive;
        let config = ControllerConfig {
            adaptive: true,
            baseline_hz: args.frequency,
            capture_hz: adaptive.capture_frequency,
            min_hz: adaptive.min_frequency.min(args.frequency),
            cpu_threshold: adaptive.cpu_threshold,
            mem_threshold: adaptive.mem_threshold,
            capture_duration: Duration::from_secs(adaptive.capture_duration),
            capture_min_interval: Duration::from_secs(adaptive.capture_min_interval),
            overhead_budget: adaptive.overhead_budget,
        };
        Self {
            controller: Controller::new(config),
            load: LoadReader::new(),
            cost: CostReader::new(cpus, Duration::from_secs(args.interval.clamp(5, 60))),
            started: Instant::now(),
            warm_up: Duration::from_secs(args.interval) + Duration::from_secs(1),
        }
    }
}

type UnwindLoader = Loader<UnwindArrayMaps, ProcessRangesMap>;

/// How often a sampled process's mappings are compared with those its ranges came from.
const UNWIND_REFRESH: Duration = Duration::from_secs(5);
/// How often tables built are taken into the kernel: a new process's frames in a file whose
/// table is being built fall back to frame pointers until then.
const UNWIND_POLL: Duration = Duration::from_millis(250);

/// How `--unwind-memory-mb` is shared: three eighths to the kernel's rows and page entries
/// (the store admits what those hold), one sixteenth to the processes' code ranges (32 bytes
/// each), the rules' 1 MiB, and the rest to the tables being built in userspace (the store
/// keeps no table once the kernel has it).
#[derive(Clone, Copy, Debug)]
struct UnwindBudget {
    sizes: UnwindSizes,
    capacity: Capacity,
}

impl UnwindBudget {
    /// Table entries: far more than the distinct files a host maps.
    const TABLES: u32 = 8192;
    /// Processes walked by tables at once (8 bytes of map value each).
    const PROCESSES: u32 = 16_384;

    fn of_mib(mib: u64) -> Self {
        let bytes = mib << 20;
        let kernel = bytes * 3 / 8;
        let capacity = Capacity::of_bytes(kernel, Self::TABLES);
        let range_bytes = std::mem::size_of::<profiler_common::unwind::CodeRange>() as u64;
        let ranges = u32::try_from(bytes / 16 / range_bytes).unwrap_or(u32::MAX);
        Self {
            sizes: UnwindSizes {
                rows: capacity.rows,
                pages: capacity.pages,
                tables: capacity.tables,
                processes: Self::PROCESSES,
                ranges,
            },
            capacity,
        }
    }

    fn loader(self, maps: UnwindMaps) -> std::io::Result<UnwindLoader> {
        let store = TableStore::new(self.capacity)?;
        let kernel = KernelTables::new(maps.arrays, self.capacity);
        Ok(Loader::new(store, kernel, maps.ranges, self.sizes))
    }
}

/// Which process image each PID's TLS location in the BPF map belongs to.
#[derive(Default)]
struct TlsState {
    tracker: TlsTracker,
    /// Go executables, whose goroutines carry labels instead of a thread-local record.
    go: GoTracker,
    located: HashMap<u32, u64>,
    /// Drains since the last check of `located` against `/proc`.
    drains_since_sweep: u32,
}

/// Drains between two checks of the trace-context state against `/proc`, for processes whose
/// end the BPF program could not report: a location left in the BPF map would otherwise be
/// followed in a later process that reuses the PID.
const TLS_SWEEP_EVERY: u32 = 6;

/// Map sizes for this recording: derived from the host and the rates, or set by flag.
fn map_sizes(args: &RecordArgs, highest_hz: u64) -> MapSizes {
    let cpus = aya::util::online_cpus().map_or(1, |online| online.len());
    let mut sizes = MapSizes::derive(
        Load {
            cpus: cpus as u32,
            highest_hz,
            interval_secs: args.interval,
        },
        SizeOverrides {
            counts: args.maps.counts_map_entries,
            stacks: args.maps.stacks_map_entries,
            processes: args.maps.processes_map_entries,
            events_kib: args.maps.events_buffer_kib,
        },
    );
    if args.off_cpu {
        let threads = crate::bpf::sizing::host_threads().unwrap_or(0);
        sizes.off_cpu = Some(OffCpuSizes::derive(threads, sizes.counts));
    }
    sizes
}

/// A start that failed because the verifier refused a program becomes one line with its reason,
/// and the log a file in the output directory.
fn refused(err: BpfError, output_dir: &Path) -> RecordError {
    let Some((program, errno, log)) = crate::bpf::verifier::refusal(&err) else {
        return RecordError::Start(err);
    };
    tracing::debug!("the verifier's log of `{program}`:\n{log}");
    let reason = crate::bpf::verifier::reason(&log)
        .unwrap_or("the verifier said nothing")
        .to_owned();
    let log = match crate::bpf::verifier::keep_log(output_dir, program, &log) {
        Ok(path) => path.display().to_string(),
        Err(write) => format!("no file ({write}); run with -v to see it"),
    };
    RecordError::Refused {
        program,
        errno: std::io::Error::from_raw_os_error(errno.raw_os_error().unwrap_or(0)),
        reason,
        log,
    }
}

/// Trace-context settings, or `None` when disabled by flag or impossible on this kernel (said
/// once, with the other features this kernel lacks).
fn trace_options(args: &RecordArgs, features: &KernelFeatures) -> Option<TraceOptions> {
    if args.no_trace_context {
        return None;
    }
    let task_tp_offset = *features.thread_pointer.as_ref().ok()?;
    Some(TraceOptions {
        task_tp_offset,
        tcb_dtv_offset: kernel_btf::tcb_dtv_offset(),
        max_traces: args.max_traces_per_interval,
    })
}

/// Waits for what is due (an interval's end, process events, a control tick, the end of
/// recording) and does it. The work that blocks (map drains, `/proc` reads, ELF parsing) runs
/// on a blocking thread ([`off_thread`]), so the endpoints served by this async thread answer
/// while an interval drains.
async fn run(
    slot: &mut Slot,
    args: &RecordArgs,
    watched: &[u32],
    events: EventReader,
    mut signals: StopSignals,
    mut pulls: Option<mpsc::UnboundedReceiver<PullMessage>>,
) -> Result<StopReason, RecordError> {
    // SAFETY: the reader owns the ring buffer's descriptor and keeps it open while held here.
    let mut events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|err| RecordError::Signals(err.into()))?;
    let every = Duration::from_secs(args.interval);
    let mut ticks = interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = sleep(args.duration.map_or(Duration::MAX / 4, Duration::from_secs));
    tokio::pin!(deadline);
    let mut targets = Targets::new(watched);
    let mut watch = tokio::time::interval(Duration::from_secs(1));
    // The first reading covers a full second: a shorter one would count as a whole reading.
    let second = Duration::from_secs(1);
    let adaptive = slot
        .as_ref()
        .is_some_and(|recording| recording.control.is_some());
    let mut control = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    let unwinding = slot
        .as_ref()
        .is_some_and(|recording| recording.unwind.is_some());
    let mut unwind_poll = tokio::time::interval(UNWIND_POLL);
    unwind_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    control.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = ticks.tick() => off_thread(slot, Recording::drain).await??,
            ready = events.readable_mut() => {
                let mut guard = ready.map_err(RecordError::Signals)?;
                let read = guard.get_inner_mut().read_available();
                guard.clear_ready();
                off_thread(slot, move |recording| recording.handle_events(read)).await?;
            }
            _ = control.tick(), if adaptive => off_thread(slot, Recording::control).await??,
            Some(message) = next_pull(&mut pulls) => {
                off_thread(slot, move |recording| recording.pull(message)).await??;
            }
            _ = unwind_poll.tick(), if unwinding => {
                off_thread(slot, Recording::poll_unwind).await?;
            }
            _ = watch.tick() => {
                slot.as_mut().ok_or(RecordError::WorkerGone)?.sampler.tick_cost();
                if !targets.is_empty() && targets.all_exited() {
                    return Ok(StopReason::TargetsExited);
                }
            }
            _ = &mut deadline, if args.duration.is_some() => return Ok(StopReason::Duration),
            name = signals.recv() => return Ok(StopReason::Signal(name)),
        }
    }
}

/// The next profile request message; never, without the endpoint.
async fn next_pull(
    pulls: &mut Option<mpsc::UnboundedReceiver<PullMessage>>,
) -> Option<PullMessage> {
    match pulls {
        Some(pulls) => pulls.recv().await,
        None => std::future::pending().await,
    }
}

/// The recording, owned by the async loop between two pieces of blocking work.
type Slot = Option<Box<Recording>>;

/// Runs `work` on the recording on a blocking thread and waits for it without holding up the
/// async thread. A panic in `work` loses the recording: [`RecordError::WorkerGone`].
async fn off_thread<T: Send + 'static>(
    slot: &mut Slot,
    work: impl FnOnce(&mut Recording) -> T + Send + 'static,
) -> Result<T, RecordError> {
    let mut recording = slot.take().ok_or(RecordError::WorkerGone)?;
    let (recording, done) = tokio::task::spawn_blocking(move || {
        let done = work(&mut recording);
        (recording, done)
    })
    .await
    .map_err(|_| RecordError::WorkerGone)?;
    *slot = Some(recording);
    Ok(done)
}

impl Recording {
    fn handle_events(&mut self, events: Vec<Event>) {
        for event in events {
            match event {
                Event::NewProcess { pid, pid_gen } => {
                    let key = ProcessKey { pid, pid_gen };
                    let snapshot = self.lock_table().get_or_capture(key);
                    self.locate_tls(key, &snapshot);
                    if let Some(unwind) = &mut self.unwind {
                        unwind.add_process(pid, pid_gen);
                    }
                }
                Event::Ended { pid, pid_gen } => {
                    let key = ProcessKey { pid, pid_gen };
                    self.lock_table().on_ended(key);
                    self.forget_tls(key);
                    if let Some(unwind) = &mut self.unwind {
                        unwind.remove_process(pid, pid_gen);
                    }
                }
            }
        }
    }

    /// Takes in the unwind tables built since the last call, and rereads the mappings of the
    /// processes whose walks met code outside their ranges (at most every [`UNWIND_REFRESH`]
    /// each): a library opened since their first sample has no range, its frames no table.
    fn poll_unwind(&mut self) {
        let Some(unwind) = &mut self.unwind else {
            return;
        };
        unwind.refresh_stale(UNWIND_REFRESH);
        unwind.poll();
        self.metrics.set_unwind(&unwind.stats());
    }

    fn lock_table(&self) -> std::sync::MutexGuard<'_, ProcessTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves where `key`'s threads keep their trace context and tells the BPF program.
    fn locate_tls(&mut self, key: ProcessKey, snapshot: &ProcessSnapshot) {
        let Some(tls) = &mut self.tls else { return };
        if let Some(target) = tls.go.locate(snapshot) {
            // A Go program: its labels are the trace context, no thread-local record is looked
            // for (nor retried).
            match self.sampler.set_go_target(key.pid, target) {
                Ok(()) => {
                    tls.located.insert(key.pid, key.pid_gen);
                    tracing::debug!(pid = key.pid, ?target, "reading goroutine labels");
                }
                Err(err) => {
                    self.metrics.error(ErrorKind::TraceContext);
                    tracing::warn!(pid = key.pid, "{}", crate::error_chain(&err));
                }
            }
            return;
        }
        let Some(location) = tls.tracker.locate(key, snapshot) else {
            return;
        };
        match self.sampler.set_tls_location(key.pid, location) {
            Ok(()) => {
                tls.located.insert(key.pid, key.pid_gen);
                tracing::debug!(pid = key.pid, ?location, "reading trace contexts");
            }
            Err(err) => {
                self.metrics.error(ErrorKind::TraceContext);
                tracing::warn!(pid = key.pid, "{}", crate::error_chain(&err));
            }
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

    /// Forgets the trace-context state of process images that `/proc` says are gone.
    fn sweep_tls(&mut self) {
        let Some(tls) = &mut self.tls else { return };
        tls.drains_since_sweep += 1;
        if tls.drains_since_sweep < TLS_SWEEP_EVERY {
            return;
        }
        tls.drains_since_sweep = 0;
        let gone: Vec<ProcessKey> = tls
            .located
            .iter()
            .map(|(&pid, &pid_gen)| ProcessKey { pid, pid_gen })
            .filter(|key| liveness(key.pid, key.pid_gen) == Liveness::Gone)
            .collect();
        for key in gone {
            self.forget_tls(key);
        }
        if let Some(tls) = &mut self.tls {
            tls.tracker
                .retain(|key| liveness(key.pid, key.pid_gen) == Liveness::Running);
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
        // The flip ends this interval and starts the next: both take its time, not the time
        // the drain's work (the barrier, `/proc` reads) ends.
        let (flipped, drain_started) = (SystemTime::now(), Instant::now());
        let (drained, epoch) = self.take_drain()?;
        self.sweep_tls();
        let counters = self.sampler.counters().map_err(RecordError::Drain)?;
        let cost = self.sampler.program_cost().unwrap_or_default();
        let off_cpu_cost = self.sampler.off_cpu_cost();
        let frequency = self.sampler.frequency();
        let interval_counters = counters.since(&self.counters);
        self.metrics.add_counters(&interval_counters);
        self.metrics.add_program_cost(&self.cost, &cost);
        let meta = IntervalMeta {
            start: self.started,
            duration: drain_started.saturating_duration_since(self.started_at),
            period_ns: period_ns(frequency),
        };
        self.started = flipped;
        self.started_at = drain_started;
        // The rate at the end stays the last comment: readers look for it there.
        let mut comments = vec![self.node_comment()];
        comments.append(&mut self.rate_changes);
        comments.push(format!("sampling frequency at the end: {frequency} Hz"));
        let interval = Interval {
            drained,
            meta,
            epoch,
            counters: interval_counters,
            bpf_ns_per_sample: cost.per_run_since(&self.cost),
            off_cpu_kernel_ns: off_cpu_cost.map(|ns| ns.saturating_sub(self.off_cpu_cost_ns)),
            drain_started,
            comments,
        };
        self.counters = counters;
        self.cost = cost;
        self.off_cpu_cost_ns = off_cpu_cost.unwrap_or(self.off_cpu_cost_ns);
        tracing::debug!(
            interval = epoch,
            entries = interval.drained.samples.len(),
            stacks = interval.drained.stacks.len(),
            drain_ms = drain_started.elapsed().as_secs_f64() * 1e3,
            "drained the maps"
        );
        self.pipeline.send(Job::Interval(Box::new(interval)))
    }

    /// A drain that does not end the interval: a profile request's capture opens or closes on
    /// it, and the interval's file takes its samples with its last part.
    fn drain_part(&mut self) -> Result<(), RecordError> {
        let (drained, epoch) = self.take_drain()?;
        self.pipeline
            .send(Job::Part(Box::new(Part { drained, epoch })))
    }

    /// Flips and drains the maps, numbers the drain, and looks again for the trace contexts of
    /// sampled processes without one: what every drain does, whether it ends an interval or not.
    fn take_drain(&mut self) -> Result<(Drained, u64), RecordError> {
        let drained = self.sampler.drain().map_err(RecordError::Drain)?;
        let epoch = self.lock_table().begin_drain();
        self.retry_tls(&drained);
        Ok((drained, epoch))
    }

    /// Opens, closes or forgets a profile request's capture. Its rate is set before the drain
    /// that opens it, and restored after the drain that closes it, as a capture's.
    fn pull(&mut self, message: PullMessage) -> Result<(), RecordError> {
        match message {
            PullMessage::Start {
                id,
                request,
                opened,
            } => {
                let PullRequest {
                    seconds,
                    filter,
                    hz,
                } = request;
                let mut comments = vec![
                    format!("profile request over HTTP: {seconds} s, {filter}"),
                    self.node_comment(),
                ];
                if let Some(asked) = hz {
                    let granted = asked.min(self.pull_hz_limit);
                    if granted < asked {
                        comments.push(format!(
                            "hz={asked} lowered to {granted} Hz, the highest rate this recording \
                             may use (--capture-frequency, within the kernel's limit)"
                        ));
                    }
                    self.pull_rates.insert(id, granted);
                    self.retarget_for_pulls()?;
                }
                self.drain_part()?;
                self.pipeline.send(Job::PullStart {
                    id,
                    start: SystemTime::now(),
                    filter,
                    comments,
                })?;
                let hz = self.sampler.frequency();
                let _ = opened.send(Ok(Opened { hz }));
            }
            PullMessage::End { id, profile } => {
                self.drain_part()?;
                let frequency = self.sampler.frequency();
                self.pipeline.send(Job::PullEnd {
                    id,
                    end: SystemTime::now(),
                    frequency,
                    profile,
                })?;
                if self.pull_rates.remove(&id).is_some() {
                    self.retarget_for_pulls()?;
                }
            }
            PullMessage::Cancel { id } => {
                self.pipeline.send(Job::PullCancel { id })?;
                if self.pull_rates.remove(&id).is_some() {
                    self.retarget_for_pulls()?;
                }
            }
        }
        Ok(())
    }

    /// Sets the rate the requests under way ask for: through the controller, whose governor
    /// may hold it lower; without one, directly.
    fn retarget_for_pulls(&mut self) -> Result<(), RecordError> {
        let wanted = self.pull_rates.values().max().copied();
        let decisions = match &mut self.control {
            Some(control) => control
                .controller
                .request(control.started.elapsed(), wanted),
            None => {
                let hz = wanted.map_or(self.baseline_hz, |hz| hz.max(self.baseline_hz));
                if hz == self.sampler.frequency() {
                    Vec::new()
                } else {
                    vec![Decision::SetFrequency {
                        hz,
                        reason: Reason::Pulled { hz: wanted },
                    }]
                }
            }
        };
        for decision in decisions {
            self.apply(decision)?;
        }
        Ok(())
    }

    /// Once a second: reads load and cost, and applies what the controller decides.
    fn control(&mut self) -> Result<(), RecordError> {
        let Some(control) = &mut self.control else {
            return Ok(());
        };
        let Some(load) = control.load.sample() else {
            return Ok(());
        };
        let cost = if control.started.elapsed() < control.warm_up {
            None
        } else {
            // The off-CPU programs' time counts against the budget too; the rate cannot lower
            // it, so past the budget they take the sampling rate down to its floor.
            let off_cpu = self.sampler.off_cpu_cost().unwrap_or(0);
            let run_time = self.sampler.program_cost().map(|cost| BpfRunTime {
                ns: cost.run_time_ns + off_cpu,
            });
            control.cost.sample(run_time)
        };
        let decisions = control
            .controller
            .step(control.started.elapsed(), load, cost);
        for decision in rate_before_capture(decisions) {
            self.apply(decision)?;
        }
        Ok(())
    }

    fn apply(&mut self, decision: Decision) -> Result<(), RecordError> {
        match decision {
            Decision::StartCapture(trigger) => {
                let description = trigger.describe();
                tracing::warn!("incident capture started: {description}");
                // The incident starts on an interval boundary: earlier samples stay out of it.
                self.drain()?;
                self.pipeline.send(Job::CaptureStart {
                    start: SystemTime::now(),
                    comments: vec![description, self.node_comment()],
                })
            }
            Decision::EndCapture => {
                self.drain()?;
                let frequency = self.sampler.frequency();
                tracing::info!("incident capture ended");
                self.pipeline.send(Job::CaptureEnd {
                    end: SystemTime::now(),
                    frequency,
                    comments: vec![format!("capture frequency at the end: {frequency} Hz")],
                })
            }
            Decision::SetFrequency { hz, reason } => {
                let from = self.sampler.frequency();
                match self.sampler.set_frequency(hz) {
                    Ok(()) => {
                        self.metrics.set_frequency(hz);
                        let note = format!("sampling frequency {from} Hz -> {hz} Hz: {reason}");
                        tracing::info!(from, to = hz, "{note}");
                        self.rate_changes.push(note);
                    }
                    Err(err) => {
                        self.metrics.error(ErrorKind::RateChange);
                        tracing::error!(
                            "changing the sampling frequency to {hz} Hz failed: {}",
                            crate::error_chain(&err)
                        );
                    }
                }
                Ok(())
            }
        }
    }

    fn node_comment(&self) -> String {
        format!("node: {}", self.node)
    }

    /// Ends a capture cut short by the end of recording, after the final drain.
    fn end_capture_early(&mut self) -> Result<(), RecordError> {
        let capturing = self
            .control
            .as_ref()
            .is_some_and(|control| control.controller.capturing());
        if !capturing {
            return Ok(());
        }
        let frequency = self.sampler.frequency();
        self.pipeline.send(Job::CaptureEnd {
            end: SystemTime::now(),
            frequency,
            comments: vec![
                "capture cut short: recording stopped".to_owned(),
                format!("capture frequency at the end: {frequency} Hz"),
            ],
        })
    }
}

/// This machine's name, for `--node-name`'s default.
/// The controller's decisions in the order they take effect best: a capture's new rate before
/// the drain that opens it. The other way round, a tick the old rate armed and that fired
/// between that drain's flip and the change lands in the incident with the old period (the
/// adaptive test's burners saw one 52.6 ms sample among 355 at 99 Hz); this way the ticks of
/// the new rate before the flip stay in the interval that says the rate changed.
fn rate_before_capture(mut decisions: Vec<Decision>) -> Vec<Decision> {
    if let [Decision::StartCapture(_), Decision::SetFrequency { .. }, ..] = decisions.as_slice() {
        decisions.swap(0, 1);
    }
    decisions
}

/// The OTLP exporter `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_*`) asks for, and where its
/// samples come from.
fn otlp_exporter(
    args: &RecordArgs,
    metrics: &Arc<Metrics>,
) -> Result<Option<(crate::otlp::Exporter, crate::otlp::encode::Origin)>, RecordError> {
    let lookup = |name: &str| std::env::var(name).ok();
    let Some(config) = crate::otlp::config::OtlpConfig::resolve(&args.otlp, lookup)? else {
        return Ok(None);
    };
    tracing::info!(endpoint = %config.endpoint, "sending OTLP profiles");
    let exporter = crate::otlp::Exporter::start(
        config,
        &args.output_dir,
        Retention::new(&args.output_dir, args.max_disk_mb).max_bytes(),
        metrics.clone(),
    )?;
    let origin = crate::otlp::encode::Origin {
        host_name: host_name(),
        node_name: args.node_name.clone(),
    };
    Ok(Some((exporter, origin)))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod decision_order_tests {
    use super::*;
    use crate::adaptive::controller::{Reason, Signal, Trigger};

    fn start() -> Decision {
        Decision::StartCapture(Trigger {
            signal: Signal::Cpu,
            value: 0.9,
            threshold: 0.7,
            cpu_pressure: None,
            memory_pressure: None,
        })
    }

    fn rate(hz: u64, reason: Reason) -> Decision {
        Decision::SetFrequency { hz, reason }
    }

    #[test]
    fn a_capture_opens_after_its_rate_is_set() {
        assert_eq!(
            rate_before_capture(vec![start(), rate(99, Reason::CaptureStarted)]),
            [rate(99, Reason::CaptureStarted), start()]
        );
    }

    #[test]
    fn other_decisions_keep_their_order() {
        let end = vec![Decision::EndCapture, rate(19, Reason::CaptureEnded)];
        assert_eq!(rate_before_capture(end.clone()), end);
        assert_eq!(rate_before_capture(vec![start()]), [start()]);
        let governed = vec![rate(9, Reason::CaptureEnded)];
        assert_eq!(rate_before_capture(governed.clone()), governed);
    }
}
