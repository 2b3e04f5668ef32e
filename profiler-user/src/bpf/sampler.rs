//! Loads the BPF object, attaches it, and hands out the handles the recorder needs.

use std::sync::Arc;

use crate::kernel_features::CgroupRead;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{PerfEvent, RawTracePoint},
};
use profiler_common::{
    CONFIG_SYMBOL, Config, GoTarget, TAIL_GO_LABEL_SLOT, TAIL_UNWIND_USER, TaskOffsets,
    TlsLocation, maps, programs,
};

use super::{
    BpfError, CounterSnapshot, Drained, Epoch, EventReader, PerfEvents,
    cost::{self, CostMeter, ProgramCost},
    counters,
    drain::{Drainer, HalfMaps, OffCpuMaps, StackMaps},
    unwind_maps::{UnwindMaps, UnwindSizes},
};

/// What to sample, fixed at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamplerOptions {
    /// Sampling frequency per CPU, in Hz.
    pub frequency: u64,
    /// Processes to sample; with `target_cgroups`, both empty means every process.
    pub targets: Vec<u32>,
    /// Cgroup v2 IDs whose tasks (and their descendants' tasks) to sample.
    pub target_cgroups: Vec<u64>,
    /// How the program reads a task's cgroups (`kernel_features`); `None` with no
    /// `target_cgroups`.
    pub cgroup_read: Option<CgroupRead>,
    pub include_idle: bool,
    pub kernel_stacks: bool,
    /// Read trace contexts; `None` turns the feature off.
    pub trace: Option<TraceOptions>,
    /// Where process identities live in kernel memory (`kernel_btf::task_offsets`).
    pub task: TaskOffsets,
    /// Entries of the maps.
    pub sizes: super::sizing::MapSizes,
    /// The kernel has `bpf_task_pt_regs` ([`crate::kernel_features::KernelFeatures`]): a sample
    /// taken in the kernel finds the user registers (Go labels' stack check, unwinding).
    pub task_pt_regs: bool,
    /// Walk user stacks by unwind tables, in maps of these sizes; `None`: frame pointers only.
    pub unwind: Option<UnwindSizes>,
    /// Record off-CPU time, waits of at least this many nanoseconds; `None`: off.
    pub off_cpu_min_ns: Option<u64>,
    /// `sched_switch` passes the leaving task's state ([`crate::kernel_features::KernelFeatures`]).
    pub switch_prev_state: bool,
}

/// Trace-context reading, fixed at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceOptions {
    /// Offset of the user thread pointer in `task_struct`.
    pub task_tp_offset: u32,
    /// Offset of glibc's DTV pointer from the thread pointer.
    pub tcb_dtv_offset: u32,
    /// Distinct traces kept per interval.
    pub max_traces: u32,
}

/// Go label sets kept per interval and half at most (1,024: 1.6 MiB per half).
const MAX_GO_LABEL_SETS: u32 = 1024;

/// The loaded and attached BPF side. Dropping it detaches everything.
pub struct Sampler {
    // Field order is drop order: stop the events before the program and maps go.
    perf_events: PerfEvents,
    drainer: Drainer,
    counters: PerCpuArray<MapData, u64>,
    tls_targets: HashMap<MapData, u32, TlsLocation>,
    go_targets: HashMap<MapData, u32, GoTarget>,
    /// Moved on after each change to `tls_targets` and `go_targets`.
    epoch: Arc<Epoch>,
    /// Held while sampling: the kernel empties a program array when its last user reference
    /// goes.
    _tail_calls: ProgramArray<MapData>,
    _off_cpu_tail_calls: Option<ProgramArray<MapData>>,
    unwind_maps: Option<UnwindMaps>,
    events: Option<EventReader>,
    /// The kernel-side cost, measured in short windows of run-time statistics.
    cost: CostMeter,
    /// The off-CPU programs' (with `--off-cpu`), priced per millisecond of wall time: they
    /// run at every context switch and system call, which no counter counts.
    off_cpu_cost: Option<(CostMeter, std::time::Instant)>,
    ebpf: Ebpf,
}

impl Sampler {
    /// Loads the program, attaches it to a `cpu-clock` event on every online CPU, and starts
    /// sampling at once.
    pub fn start(options: &SamplerOptions) -> Result<Self, BpfError> {
        let trace = options.trace.unwrap_or(TraceOptions {
            task_tp_offset: 0,
            tcb_dtv_offset: 0,
            max_traces: 1,
        });
        let cgroup_offsets = match options.cgroup_read {
            Some(CgroupRead::AncestorIds(offsets)) => Some(offsets),
            Some(CgroupRead::Helper) | None => None,
        };
        let config = Config {
            filter_pids: u8::from(!options.targets.is_empty()),
            include_idle: u8::from(options.include_idle),
            kernel_stacks: u8::from(options.kernel_stacks),
            trace_context: u8::from(options.trace.is_some()),
            task_tp_offset: trace.task_tp_offset,
            tcb_dtv_offset: trace.tcb_dtv_offset,
            filter_cgroups: u8::from(!options.target_cgroups.is_empty()),
            cgroup_ancestor_ids: u8::from(cgroup_offsets.is_some()),
            task_pt_regs: u8::from(options.task_pt_regs),
            dwarf_unwinding: u8::from(options.unwind.is_some()),
            task: options.task,
            cgroup: cgroup_offsets.unwrap_or_default(),
            off_cpu: u8::from(options.off_cpu_min_ns.is_some()),
            switch_prev_state: u8::from(options.switch_prev_state),
            _pad: [0; 6],
            off_cpu_min_ns: options.off_cpu_min_ns.unwrap_or(0),
        };
        let max_traces = trace.max_traces.max(1);
        let mut loader = EbpfLoader::new();
        loader.override_global(CONFIG_SYMBOL, &config, true);
        for (name, entries) in options.sizes.entries() {
            loader.map_max_entries(name, entries);
        }
        for half in 0..2 {
            loader.map_max_entries(maps::TRACES[half], max_traces);
            // Several spans per trace are common; the limit that matters is on traces. There
            // cannot be more distinct contexts in an interval than counts entries.
            let contexts = max_traces
                .saturating_mul(4)
                .min(options.sizes.counts.max(1));
            loader.map_max_entries(maps::CONTEXTS[half], contexts);
            // A Go label set takes 1.5 KiB of kernel memory, preallocated: fewer of them.
            loader.map_max_entries(maps::GO_LABELS[half], contexts.min(MAX_GO_LABEL_SETS));
        }
        // Without unwinding, the smallest maps the program can refer to.
        let unwind = options.unwind.unwrap_or(UnwindSizes {
            rows: 1,
            pages: 1,
            tables: 1,
            processes: 1,
            ranges: 1,
        });
        loader.map_max_entries(maps::UNWIND_ROWS, unwind.rows.max(1));
        loader.map_max_entries(maps::UNWIND_PAGES, unwind.pages.max(1));
        loader.map_max_entries(maps::UNWIND_TABLES, unwind.tables.max(1));
        loader.map_max_entries(maps::UNWIND_PROCS, unwind.processes.max(1));
        loader.map_max_entries(maps::UNWIND_RANGES, unwind.ranges.max(1));
        if options.unwind.is_none() {
            loader.map_max_entries(maps::UNWIND_RULES, 1);
        }
        let mut ebpf = loader.load(super::OBJECT).map_err(BpfError::Load)?;

        let mut targets: HashMap<MapData, u32, u8> =
            HashMap::try_from(take_map(&mut ebpf, maps::TARGETS)?)
                .map_err(map_error(maps::TARGETS))?;
        for &pid in &options.targets {
            targets
                .insert(pid, 1, 0)
                .map_err(map_error(maps::TARGETS))?;
        }
        let mut cgroups: HashMap<MapData, u64, u8> =
            HashMap::try_from(take_map(&mut ebpf, maps::TARGET_CGROUPS)?)
                .map_err(map_error(maps::TARGET_CGROUPS))?;
        for &id in &options.target_cgroups {
            cgroups
                .insert(id, 1, 0)
                .map_err(map_error(maps::TARGET_CGROUPS))?;
        }

        for name in [programs::EXEC, programs::EXIT] {
            let tracepoint: &mut RawTracePoint = program(&mut ebpf, name)?;
            tracepoint.load().map_err(program_error(name))?;
            tracepoint.attach(name).map_err(program_error(name))?;
        }

        let halves = HalfMaps {
            counts: [
                hash_map(&mut ebpf, maps::COUNTS[0])?,
                hash_map(&mut ebpf, maps::COUNTS[1])?,
            ],
            stacks: [stack_maps(&mut ebpf, 0)?, stack_maps(&mut ebpf, 1)?],
            contexts: [
                hash_map(&mut ebpf, maps::CONTEXTS[0])?,
                hash_map(&mut ebpf, maps::CONTEXTS[1])?,
            ],
            go_labels: [
                hash_map(&mut ebpf, maps::GO_LABELS[0])?,
                hash_map(&mut ebpf, maps::GO_LABELS[1])?,
            ],
            traces: [
                hash_map(&mut ebpf, maps::TRACES[0])?,
                hash_map(&mut ebpf, maps::TRACES[1])?,
            ],
            off_cpu: match options.off_cpu_min_ns {
                Some(_) => Some(OffCpuMaps {
                    counts: [
                        hash_map(&mut ebpf, maps::OFF_CPU_COUNTS[0])?,
                        hash_map(&mut ebpf, maps::OFF_CPU_COUNTS[1])?,
                    ],
                    parked: [
                        hash_map(&mut ebpf, maps::OFF_CPU_PARKED[0])?,
                        hash_map(&mut ebpf, maps::OFF_CPU_PARKED[1])?,
                    ],
                    threads: hash_map(&mut ebpf, maps::OFF_CPU_THREADS)?,
                }),
                None => None,
            },
        };
        let active =
            Array::try_from(take_map(&mut ebpf, maps::ACTIVE)?).map_err(map_error(maps::ACTIVE))?;
        let drainer = Drainer::new(halves, active)?;
        let tls_targets = hash_map(&mut ebpf, maps::TLS_TARGETS)?;
        let go_targets = hash_map(&mut ebpf, maps::GO_TARGETS)?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, maps::COUNTERS)?)
            .map_err(map_error(maps::COUNTERS))?;
        let events = EventReader::new(
            RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?)
                .map_err(map_error(maps::EVENTS))?,
        );

        let cpus = aya::util::online_cpus()
            .map_err(|(what, source)| BpfError::OnlineCpus { what, source })?;
        // The program `sample` continues in for a Go process's labels: loaded, never attached.
        let slot_fd = tail_program(&mut ebpf, programs::GO_LABEL_SLOT)?;
        let mut tail_calls = ProgramArray::try_from(take_map(&mut ebpf, maps::TAIL_CALLS)?)
            .map_err(map_error(maps::TAIL_CALLS))?;
        tail_calls
            .set(TAIL_GO_LABEL_SLOT, &slot_fd, 0)
            .map_err(map_error(maps::TAIL_CALLS))?;

        // Before any map is taken out for good: a program loaded later still names the maps
        // by their descriptors.
        let off_cpu_tail_calls = match options.off_cpu_min_ns {
            Some(_) => Some(start_off_cpu(&mut ebpf, options.unwind.is_some())?),
            None => None,
        };
        let epoch = Arc::new(Epoch::take(&mut ebpf)?);
        let unwind_maps = match options.unwind {
            Some(_) => {
                let walk = tail_program(&mut ebpf, programs::UNWIND_USER)?;
                tail_calls
                    .set(TAIL_UNWIND_USER, &walk, 0)
                    .map_err(map_error(maps::TAIL_CALLS))?;
                Some(UnwindMaps::take(&mut ebpf, epoch.clone())?)
            }
            None => None,
        };

        let sample: &mut PerfEvent = program(&mut ebpf, programs::SAMPLE)?;
        sample.load().map_err(program_error(programs::SAMPLE))?;
        let fd = sample.fd().map_err(program_error(programs::SAMPLE))?;
        let perf_events = PerfEvents::open(fd, &cpus, options.frequency)?;

        let mut sampler = Self {
            perf_events,
            drainer,
            counters,
            tls_targets,
            go_targets,
            epoch,
            _tail_calls: tail_calls,
            _off_cpu_tail_calls: off_cpu_tail_calls,
            unwind_maps,
            events: Some(events),
            cost: CostMeter::default(),
            off_cpu_cost: options
                .off_cpu_min_ns
                .map(|_| (CostMeter::default(), std::time::Instant::now())),
            ebpf,
        };
        // The first measurement window opens at once.
        sampler.tick_cost();
        Ok(sampler)
    }

    /// Takes everything aggregated since the last drain.
    pub fn drain(&mut self) -> Result<Drained, BpfError> {
        self.drainer.drain()
    }

    /// Tells the program where `pid`'s threads keep their trace context.
    pub fn set_tls_location(&mut self, pid: u32, location: TlsLocation) -> Result<(), BpfError> {
        self.tls_targets
            .insert(pid, location, 0)
            .map_err(map_error(maps::TLS_TARGETS))?;
        self.advance_epoch()
    }

    /// Tells the program where `pid`'s goroutine labels are.
    pub fn set_go_target(&mut self, pid: u32, target: GoTarget) -> Result<(), BpfError> {
        self.go_targets
            .insert(pid, target, 0)
            .map_err(map_error(maps::GO_TARGETS))?;
        self.advance_epoch()
    }

    /// Forgets `pid`'s trace-context location and Go target (the process image ended).
    pub fn forget_tls_location(&mut self, pid: u32) {
        let tls = self.tls_targets.remove(&pid).is_ok();
        let go = self.go_targets.remove(&pid).is_ok();
        if (tls || go)
            && let Err(err) = self.advance_epoch()
        {
            // Only a later sample of the same PID could see the old entry, and the exit that
            // ended the image moved the epoch already.
            tracing::debug!(pid, "{err}");
        }
    }

    /// Moves the program's epoch on after a change to a per-process map.
    fn advance_epoch(&self) -> Result<(), BpfError> {
        self.epoch.advance().map_err(|source| BpfError::Syscall {
            call: "update of the epoch map",
            source,
        })
    }

    /// Current totals of the program's counters.
    pub fn counters(&self) -> Result<CounterSnapshot, BpfError> {
        counters::read(&self.counters)
    }

    /// The unwind maps (with unwinding on); they can be taken once, by the table loader.
    pub fn take_unwind_maps(&mut self) -> Option<UnwindMaps> {
        self.unwind_maps.take()
    }

    /// The process-event reader; it can be taken once, to be polled elsewhere.
    pub fn take_events(&mut self) -> Option<EventReader> {
        self.events.take()
    }

    /// Estimated cumulative run time and run count of the sampling program (see
    /// [`super::cost`]), once a measurement window has closed.
    pub fn program_cost(&mut self) -> Option<ProgramCost> {
        let runs = cost::runs(&self.counters().ok()?);
        self.cost.estimate(runs)
    }

    /// Estimated cumulative run time of the off-CPU programs (their tail calls included), once
    /// a measurement window has closed; `None` without `--off-cpu`.
    pub fn off_cpu_cost(&mut self) -> Option<u64> {
        let (meter, started) = self.off_cpu_cost.as_mut()?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        meter.estimate(elapsed_ms).map(|cost| cost.run_time_ns)
    }

    /// Opens or closes a measurement window of the kernel's run-time statistics when due; call
    /// it about once a second.
    pub fn tick_cost(&mut self) {
        let now = std::time::Instant::now();
        let enable = || {
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .inspect_err(|err| tracing::debug!("BPF run-time statistics unavailable: {err}"))
                .ok()
        };
        let ebpf = &self.ebpf;
        let totals = || {
            let info = ebpf.program(programs::SAMPLE)?.info().ok()?;
            Some(ProgramCost {
                run_time_ns: info.run_time().as_nanos() as u64,
                run_count: info.run_count(),
            })
        };
        self.cost.tick(now, totals, enable);
        if let Some((meter, started)) = &mut self.off_cpu_cost {
            let started = *started;
            let totals = || {
                let info = ebpf.program(programs::OFF_CPU_SWITCH)?.info().ok()?;
                let run_time = info.run_time().as_nanos() as u64;
                Some(ProgramCost {
                    run_time_ns: run_time,
                    run_count: started.elapsed().as_millis() as u64,
                })
            };
            meter.tick(now, totals, enable);
        }
    }

    /// Retunes the sampling rate of every CPU without reattaching the program.
    pub fn set_frequency(&mut self, frequency: u64) -> Result<(), BpfError> {
        self.perf_events.set_frequency(frequency)
    }

    /// The sampling rate in force.
    pub fn frequency(&self) -> u64 {
        self.perf_events.frequency()
    }

    /// Number of CPUs sampled.
    pub fn cpus(&self) -> usize {
        self.perf_events.cpus()
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, BpfError> {
    ebpf.take_map(name)
        .ok_or(BpfError::Missing { kind: "map", name })
}

fn hash_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, BpfError> {
    HashMap::try_from(take_map(ebpf, name)?).map_err(map_error(name))
}

fn stack_maps(ebpf: &mut Ebpf, half: usize) -> Result<StackMaps, BpfError> {
    Ok(StackMaps {
        short: hash_map(ebpf, maps::SHORT_STACKS[half])?,
        medium: hash_map(ebpf, maps::MEDIUM_STACKS[half])?,
        long: hash_map(ebpf, maps::LONG_STACKS[half])?,
    })
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, BpfError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(BpfError::Missing {
        kind: "program",
        name,
    })?;
    program.try_into().map_err(program_error(name))
}

/// Loads program `name`, which runs only by tail call, and returns its descriptor for the
/// program array.
fn tail_program(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::programs::ProgramFd, BpfError> {
    let tail: &mut PerfEvent = program(ebpf, name)?;
    tail.load().map_err(program_error(name))?;
    duplicate(tail.fd().map_err(program_error(name))?)
}

/// [`tail_program`] for the off-CPU programs' tail calls (raw tracepoints).
fn off_cpu_tail_program(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<aya::programs::ProgramFd, BpfError> {
    let tail: &mut RawTracePoint = program(ebpf, name)?;
    tail.load().map_err(program_error(name))?;
    duplicate(tail.fd().map_err(program_error(name))?)
}

fn duplicate(fd: &aya::programs::ProgramFd) -> Result<aya::programs::ProgramFd, BpfError> {
    fd.try_clone().map_err(|source| BpfError::Syscall {
        call: "dup of a tail-called program",
        source,
    })
}

/// Loads and attaches the off-CPU program: its tail calls first, then the switch program that
/// times the waits and reads their records. Returns its program array, which must be held
/// while it runs.
fn start_off_cpu(ebpf: &mut Ebpf, unwinding: bool) -> Result<ProgramArray<MapData>, BpfError> {
    let name = maps::OFF_CPU_TAIL_CALLS;
    let mut tail_calls = ProgramArray::try_from(take_map(ebpf, name)?).map_err(map_error(name))?;
    let slot = off_cpu_tail_program(ebpf, programs::GO_LABEL_SLOT_OFF_CPU)?;
    tail_calls
        .set(TAIL_GO_LABEL_SLOT, &slot, 0)
        .map_err(map_error(name))?;
    if unwinding {
        let walk = off_cpu_tail_program(ebpf, programs::UNWIND_USER_OFF_CPU)?;
        tail_calls
            .set(TAIL_UNWIND_USER, &walk, 0)
            .map_err(map_error(name))?;
    }
    let switch: &mut RawTracePoint = program(ebpf, programs::OFF_CPU_SWITCH)?;
    switch
        .load()
        .map_err(program_error(programs::OFF_CPU_SWITCH))?;
    switch
        .attach("sched_switch")
        .map_err(program_error(programs::OFF_CPU_SWITCH))?;
    Ok(tail_calls)
}

fn program_error(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> BpfError {
    move |source| BpfError::Program { name, source }
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> BpfError {
    move |source| BpfError::Map { name, source }
}
