//! The BPF side of the profiler.
//!
//! `sample` runs on every tick of a per-CPU `cpu-clock` perf event. It checks the target filter
//! before anything else, reads the kernel and user stacks into per-CPU scratch, stores each stack
//! once under its hash, and counts the sample under (process generation, thread, stacks, name) in
//! the active half of a double-buffered pair of maps. Userspace flips the halves and drains the
//! idle one. A process image's generation comes from the kernel (start time and exec count), so
//! a PID reused later is never confused with the one before; the two raw tracepoints (no tracefs
//! needed) tell userspace when an image ends: its last thread exits, or it execs.
//!
//! Entry points are thin: each calls a `try_*` function and every failure is counted by reason.
#![no_std]
#![no_main]

mod go_labels;
mod off_cpu;
mod origin;
mod trace_context;
mod unwind;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm as bpf_get_current_comm_raw,
            bpf_get_current_task, bpf_get_stack,
        },
    },
    macros::{map, perf_event, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{PerfEventContext, RawTracePointContext},
};
use origin::{Origin, record};
use profiler_common::{
    COUNTER_COUNT, CgroupOffsets, Config, Counter, EPOCH_USERSPACE, EPOCH_WRITER_BITS, EVENT_EXIT,
    EVENT_NEW_PROCESS, Frames, MAX_CGROUP_LEVELS, MAX_STACK_DEPTH, MEDIUM_STACK_DEPTH, MediumStack,
    NO_CONTEXT, NO_STACK, ProcessEvent, SHORT_STACK_DEPTH, SLOT_SAMPLE, SampleKey, SampleValue,
    Scratch, ShortStack, StackTrace, TaskOffsets, TlsLocation, process_generation,
    unwind::ProcessSlot,
};

/// Set by userspace at load time (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static PROFILER_CONFIG: Config = Config {
    filter_pids: 0,
    include_idle: 0,
    kernel_stacks: 1,
    trace_context: 0,
    task_tp_offset: 0,
    tcb_dtv_offset: 0,
    filter_cgroups: 0,
    cgroup_ancestor_ids: 0,
    task_pt_regs: 0,
    dwarf_unwinding: 0,
    task: TaskOffsets {
        group_leader: 0,
        start_boottime: 0,
        self_exec_id: 0,
        signal: 0,
        signal_live: 0,
        pid: 0,
        flags: 0,
        state: 0,
    },
    cgroup: CgroupOffsets {
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        cgroup_level: 0,
        cgroup_ancestor_ids: 0,
    },
    off_cpu: 0,
    switch_prev_state: 0,
    _pad: [0; 6],
    off_cpu_min_ns: 0,
};

// Sizes are defaults; userspace may resize the maps before load.
#[map]
pub(crate) static COUNTS_0: HashMap<SampleKey, SampleValue> = HashMap::with_max_entries(16384, 0);
#[map]
pub(crate) static COUNTS_1: HashMap<SampleKey, SampleValue> = HashMap::with_max_entries(16384, 0);
#[map]
static STACKS_SHORT_0: HashMap<u64, ShortStack> = HashMap::with_max_entries(8192, 0);
#[map]
static STACKS_SHORT_1: HashMap<u64, ShortStack> = HashMap::with_max_entries(8192, 0);
#[map]
static STACKS_MEDIUM_0: HashMap<u64, MediumStack> = HashMap::with_max_entries(4096, 0);
#[map]
static STACKS_MEDIUM_1: HashMap<u64, MediumStack> = HashMap::with_max_entries(4096, 0);
#[map]
static STACKS_LONG_0: HashMap<u64, StackTrace> = HashMap::with_max_entries(1024, 0);
#[map]
static STACKS_LONG_1: HashMap<u64, StackTrace> = HashMap::with_max_entries(1024, 0);

/// The interval being recorded; its low bit is the half the program writes to. Userspace moves
/// it on before each drain.
#[map]
pub(crate) static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// Target processes (tgid -> 1), consulted only when `filter_pids` is set.
#[map]
pub(crate) static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Target cgroups (cgroup v2 ID -> 1), consulted only when `filter_cgroups` is set.
#[map]
static TARGET_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

/// Processes announced to userspace (tgid -> generation). LRU: an evicted process is simply
/// announced again, which userspace ignores.
#[map]
static PROCESSES: LruHashMap<u32, u64> = LruHashMap::with_max_entries(32768, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Changes whenever what [`ProcessMemo`] remembers may have: a process execs or ends (written
/// here), or userspace adds or removes a process's trace-context location, Go target or unwind
/// ranges (written after the change). Never the same value twice (see `EPOCH_WRITER_BITS`).
#[map]
static EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// The process this CPU sampled last, under the `EPOCH` value read before it was looked up:
/// its generation, which per-process maps hold it, where its trace context and its code
/// ranges are (their values, for the samples that read them). A CPU
/// mostly samples the same process again, and the lookups it saves (`PROCESSES`,
/// `TLS_TARGETS`, `GO_TARGETS`, `UNWIND_PROCS`, the task's start time and exec count) cost
/// most of a sample beside the stack walk.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ProcessMemo {
    pid: u32,
    /// `MEMO_*` bits.
    flags: u32,
    pid_gen: u64,
    epoch: u64,
    /// `TLS_TARGETS`' value when `MEMO_TLS` is set.
    pub(crate) tls: TlsLocation,
    /// `UNWIND_PROCS`' value when `MEMO_UNWIND` is set.
    pub(crate) ranges: ProcessSlot,
}

/// `TLS_TARGETS`, `GO_TARGETS`, `UNWIND_PROCS` hold the process.
pub(crate) const MEMO_TLS: u32 = 1;
pub(crate) const MEMO_GO: u32 = 2;
pub(crate) const MEMO_UNWIND: u32 = 4;

/// One slot per kind of program (`SLOT_SAMPLE`, `SLOT_OFF_CPU`), as every per-CPU scratch map
/// (`maps::PER_CPU_SCRATCH`); userspace leaves one when off-CPU recording is off.
#[map]
pub(crate) static PROCESS_MEMO: PerCpuArray<ProcessMemo> = PerCpuArray::with_max_entries(2, 0);

#[map]
pub(crate) static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(2, 0);

#[perf_event]
pub fn sample(ctx: PerfEventContext) -> u32 {
    if let Err(counter) = try_sample(&ctx) {
        count(counter);
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(_ctx: RawTracePointContext) -> i32 {
    forget_current_process();
    new_epoch();
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) -> i32 {
    // Fires for every exiting thread. The process ends with its last thread, whichever it is: a
    // main thread that calls pthread_exit leaves the workers running.
    let config = config();
    if config.off_cpu != 0 {
        off_cpu::forget_current_thread();
    }
    if thread_group_dead(&config.task) {
        forget_current_process();
        new_epoch();
    }
    0
}

/// Moves `EPOCH` on: the kernel's clock above this CPU's number, a value no other write
/// leaves (two CPUs at the same nanosecond differ in the low bits).
fn new_epoch() {
    if let Some(epoch) = EPOCH.get_ptr_mut(0) {
        // SAFETY: helpers without preconditions.
        let (now, cpu) = unsafe { (bpf_ktime_get_ns(), bpf_get_smp_processor_id()) };
        let writer = u64::from(cpu) & (EPOCH_USERSPACE - 1);
        // SAFETY: array map value; a plain store (word-sized, not torn).
        unsafe { core::ptr::write_volatile(epoch, now << EPOCH_WRITER_BITS | writer) };
    }
}

/// The sampled process's generation and `MEMO_*` flags: remembered from this CPU's last
/// sample of it while `EPOCH` stays put, else read and looked up (and remembered; a generation
/// that could not be read, 0, is looked for again at the next sample).
#[inline(always)]
pub(crate) fn process_of(pid: u32, config: &Config, slot: u32) -> Result<(u64, u32), Counter> {
    // Read before the lookups: a change after them moves it, and the next sample looks again.
    // SAFETY: array map value, copied at once.
    let epoch = EPOCH
        .get_ptr(0)
        .map_or(0, |e| unsafe { core::ptr::read_volatile(e) });
    let memo = PROCESS_MEMO.get_ptr_mut(slot).ok_or(Counter::Internal)?;
    // SAFETY: per-CPU map value; perf_event programs do not nest on one CPU.
    let memo = unsafe { &mut *memo };
    if memo.pid != pid || memo.epoch != epoch || memo.pid_gen == 0 {
        let pid_gen = generation_of(pid, &config.task);
        let mut flags = 0;
        let mut tls = TlsLocation {
            kind: 0,
            _pad: 0,
            module: 0,
            offset: 0,
        };
        if config.trace_context != 0 {
            if let Some(location) = trace_context::location(pid) {
                flags |= MEMO_TLS;
                tls = location;
            }
            if go_labels::is_target(pid) {
                flags |= MEMO_GO;
            }
        }
        let mut ranges = ProcessSlot { first: 0, count: 0 };
        if config.dwarf_unwinding != 0
            && let Some(slot) = unwind::ranges_of(pid)
        {
            flags |= MEMO_UNWIND;
            ranges = slot;
        }
        *memo = ProcessMemo {
            pid,
            flags,
            pid_gen,
            epoch,
            tls,
            ranges,
        };
    }
    // Read back from the map on both paths: the verifier then knows nothing of the flags, and
    // checks what follows once, not once per combination the lookups above could yield
    // (`sample` went from 33,411 to 192,819 instructions on 6.18).
    // SAFETY: the per-CPU map value above.
    Ok(unsafe {
        (
            core::ptr::read_volatile(&memo.pid_gen),
            core::ptr::read_volatile(&memo.flags),
        )
    })
}

/// Whether the current (exiting) task was the last live thread of its group: `do_exit` has
/// decremented `signal->live` before this tracepoint fires (Linux 2.6.x onwards). A read failure
/// answers "no": the periodic sweep in userspace ends such a process instead.
fn thread_group_dead(offsets: &TaskOffsets) -> bool {
    // SAFETY: helper without preconditions; the pointer is only used for checked reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: checked kernel reads at offsets taken from the kernel's own BTF.
    let Ok(signal) = (unsafe {
        bpf_probe_read_kernel(task.wrapping_add(offsets.signal as usize).cast::<u64>())
    }) else {
        return false;
    };
    let live = (signal as *const u8).wrapping_add(offsets.signal_live as usize);
    matches!(unsafe { bpf_probe_read_kernel(live.cast::<i32>()) }, Ok(0))
}

/// The generation of the current task's process image, from its group leader's start time and
/// exec count; `None` when they cannot be read.
fn current_generation(offsets: &TaskOffsets) -> Option<u64> {
    // SAFETY: helper without preconditions; the pointer is only used for checked reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: checked kernel reads at offsets taken from the kernel's own BTF.
    let leader: u64 = unsafe {
        bpf_probe_read_kernel(
            task.wrapping_add(offsets.group_leader as usize)
                .cast::<u64>(),
        )
    }
    .ok()?;
    let leader = leader as *const u8;
    let start: u64 = unsafe {
        bpf_probe_read_kernel(
            leader
                .wrapping_add(offsets.start_boottime as usize)
                .cast::<u64>(),
        )
    }
    .ok()?;
    let exec_id: u64 = unsafe {
        bpf_probe_read_kernel(
            leader
                .wrapping_add(offsets.self_exec_id as usize)
                .cast::<u64>(),
        )
    }
    .ok()?;
    Some(process_generation(start, exec_id))
}

pub(crate) fn config() -> Config {
    // SAFETY: a read-only global; volatile so that the value set at load time is the one read.
    unsafe { core::ptr::read_volatile(&PROFILER_CONFIG) }
}

/// Whether the current task is a target: its process is listed, or its cgroup or one of the
/// cgroup's ancestors is.
#[inline(always)]
pub(crate) fn targeted(pid: u32, config: &Config) -> bool {
    if config.filter_pids != 0 && TARGETS.get_ptr(pid).is_some() {
        return true;
    }
    if config.filter_cgroups == 0 {
        return false;
    }
    // A constant of the read-only config: the verifier never sees the other branch, so the
    // helper that Linux 5.10 refuses to perf_event programs is not in the program it checks.
    if config.cgroup_ancestor_ids != 0 {
        return in_target_cgroup_by_ancestor_ids(&config.cgroup);
    }
    // Root first: a cgroup's ID is 0 past the task's own level, which ends the walk.
    for level in 0..MAX_CGROUP_LEVELS {
        // SAFETY: helper without preconditions (perf_event programs: Linux 5.11+).
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            return false;
        }
        if TARGET_CGROUPS.get_ptr(id).is_some() {
            return true;
        }
    }
    false
}

/// The cgroup filter where the kernel keeps each cgroup's ancestor IDs in `struct cgroup`
/// (Linux 5.5 to 5.19): the same IDs the helper returns, read through the task's `css_set`.
#[inline(always)]
fn in_target_cgroup_by_ancestor_ids(offsets: &CgroupOffsets) -> bool {
    // SAFETY: helper without preconditions; the pointer is only used for checked reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY (all reads): checked kernel reads at offsets taken from the kernel's own BTF.
    let Ok(css_set) = (unsafe {
        bpf_probe_read_kernel(
            task.wrapping_add(offsets.task_cgroups as usize)
                .cast::<u64>(),
        )
    }) else {
        return false;
    };
    let Ok(cgroup) = (unsafe {
        bpf_probe_read_kernel(
            (css_set as *const u8)
                .wrapping_add(offsets.css_set_dfl_cgrp as usize)
                .cast::<u64>(),
        )
    }) else {
        return false;
    };
    let cgroup = cgroup as *const u8;
    let Ok(level) = (unsafe {
        bpf_probe_read_kernel(
            cgroup
                .wrapping_add(offsets.cgroup_level as usize)
                .cast::<i32>(),
        )
    }) else {
        return false;
    };
    let ids = cgroup.wrapping_add(offsets.cgroup_ancestor_ids as usize);
    for ancestor in 0..MAX_CGROUP_LEVELS {
        if ancestor > level {
            return false;
        }
        let Ok(id) = (unsafe {
            bpf_probe_read_kernel(ids.wrapping_add(ancestor as usize * 8).cast::<u64>())
        }) else {
            return false;
        };
        if TARGET_CGROUPS.get_ptr(id).is_some() {
            return true;
        }
    }
    false
}

pub(crate) fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and perf_event programs do not nest on one CPU.
        unsafe { *slot += 1 };
    }
}

fn try_sample(ctx: &PerfEventContext) -> Result<(), Counter> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let pid = (pid_tgid >> 32) as u32;
    let config = config();

    // Filter first: nothing below runs for a process we were not asked about.
    if pid == 0 && config.include_idle == 0 {
        return Err(Counter::Idle);
    }
    if (config.filter_pids != 0 || config.filter_cgroups != 0) && !targeted(pid, &config) {
        return Err(Counter::Filtered);
    }

    let interval = ACTIVE.get(0).copied().ok_or(Counter::Internal)?;
    let scratch = SCRATCH.get_ptr_mut(SLOT_SAMPLE).ok_or(Counter::Internal)?;
    // SAFETY: per-CPU map value, valid for the duration of the program.
    let scratch = unsafe { &mut *scratch };

    let (pid_gen, flags) = process_of(pid, &config, SLOT_SAMPLE)?;
    // A sample of user code has no kernel stack: skip the helper call that would say so.
    let kernel_stack = if config.kernel_stacks != 0 && !interrupted_user_code(ctx) {
        read_stack(
            ctx,
            &mut scratch.kernel,
            &mut scratch.kernel_frames,
            0,
            Counter::KernelStackFailed,
        )
    } else {
        NO_STACK
    };
    let context = if config.trace_context != 0 && flags & MEMO_TLS != 0 {
        trace_context::read(interval, &config, SLOT_SAMPLE)
    } else {
        NO_CONTEXT
    };
    let mut key = SampleKey {
        pid,
        tid,
        pid_gen,
        user_stack: NO_STACK,
        kernel_stack,
        context,
        comm: current_comm(),
    };
    // SAFETY: reading a field of the perf event context is allowed and converted by the verifier.
    let period = unsafe { (*ctx.ctx).sample_period };
    let value = SampleValue {
        count: 1,
        period_ns: period,
    };
    finish_record(ctx, &mut key, value, interval, flags, &config, scratch)
}

/// The end of a record, the same for a sample and an off-CPU record (`off_cpu.rs`): the user
/// stack, the Go labels where there is no trace context, the count.
#[inline(always)]
pub(crate) fn finish_record<O: Origin>(
    ctx: &O,
    key: &mut SampleKey,
    value: SampleValue,
    interval: u32,
    flags: u32,
    config: &Config,
    scratch: &mut Scratch,
) -> Result<(), Counter> {
    if config.dwarf_unwinding != 0 && flags & MEMO_UNWIND != 0 {
        // A process with unwind tables: its user stack is walked by them, in tail calls that
        // go on with the record themselves; back here only for a process without.
        unwind::start(ctx, key, value, interval);
    }
    key.user_stack = read_stack(
        ctx,
        &mut scratch.user,
        &mut scratch.user_frames,
        BPF_F_USER_STACK as u64,
        Counter::UserStackFailed,
    );
    if config.trace_context != 0 && key.context == NO_CONTEXT && flags & MEMO_GO != 0 {
        // A Go program publishes no thread-local record: its goroutines carry labels. Read by
        // tail calls that record the sample themselves; back here only when there are none.
        go_labels::start(ctx, key.pid, interval, config, key, value);
    }
    record::<O>(interval, key, value)
}

/// The current thread's name. Not aya's `bpf_get_current_comm`, whose zeroed buffer becomes a
/// call of `memset` (see `read_stack` on such calls): the helper fills all 16 bytes itself,
/// NUL-padded, or zeroes them when it fails.
#[inline(always)]
pub(crate) fn current_comm() -> [u8; 16] {
    let mut comm = core::mem::MaybeUninit::<[u8; 16]>::uninit();
    // SAFETY: the helper takes uninitialized memory and writes every byte of it.
    unsafe {
        bpf_get_current_comm_raw(comm.as_mut_ptr().cast(), 16);
        comm.assume_init()
    }
}

/// Whether the sample interrupted user code, from the privilege level in the saved registers.
/// On an architecture not listed here the answer is "no", and the kernel stack is always read.
#[inline(always)]
pub(crate) fn interrupted_user_code(ctx: &PerfEventContext) -> bool {
    user_mode(ctx) != 0
}

/// 1 when the sample interrupted user code, else 0, computed without a branch: a branch in
/// `sample` makes the verifier walk the paths after it once more.
#[inline(always)]
pub(crate) fn user_mode(ctx: &PerfEventContext) -> u64 {
    // SAFETY: the verifier allows (and rewrites) 8-byte reads of the context's registers.
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // The code segment selector's low two bits are the privilege level: 3 is user.
        let cs = unsafe { (*ctx.ctx).regs.cs };
        ((cs & 3) + 1) >> 2
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        // PSTATE.M[3:0] is 0 (EL0t) in user code.
        let pstate = unsafe { (*ctx.ctx).regs.pstate };
        1 - (((pstate & 0xf) + 15) >> 4)
    }
    #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
    {
        let _ = ctx;
        0
    }
}

/// Returns the generation of this process image, announcing it to userspace the first time.
///
/// The generation is computed from the kernel's own fields on every sample, never trusted from
/// the map: an entry left behind (an exit seen before a last sample of the dying task, an LRU
/// race) can then never name a later process with the same PID. Every CPU computes the same
/// value, so two first samples at once agree; the insert that wins announces.
fn generation_of(pid: u32, offsets: &TaskOffsets) -> u64 {
    let Some(generation) = current_generation(offsets) else {
        count(Counter::TaskReadFailed);
        return 0;
    };
    let flags = match PROCESSES.get_ptr(pid) {
        // SAFETY: map value pointer returned by the kernel.
        Some(known) if unsafe { *known } == generation => return generation,
        // A stale entry of an earlier image of this PID: replace it.
        Some(_) => BPF_ANY,
        None => BPF_NOEXIST,
    };
    match PROCESSES.insert(pid, generation, flags as u64) {
        Ok(()) => announce(EVENT_NEW_PROCESS, pid, generation),
        // Another CPU announced it between our lookup and insert.
        Err(err) if err == -(EEXIST as i32) => {}
        Err(_) => {
            count(Counter::ProcessesMapFull);
            announce(EVENT_NEW_PROCESS, pid, generation);
        }
    }
    generation
}

fn announce(kind: u32, pid: u32, pid_gen: u64) {
    let event = ProcessEvent { kind, pid, pid_gen };
    if EVENTS.output::<ProcessEvent>(&event, 0).is_err() {
        count(Counter::EventsLost);
    }
}

fn forget_current_process() {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(generation) = PROCESSES.get_ptr(pid) else {
        return;
    };
    // SAFETY: map value pointer returned by the kernel.
    let pid_gen = unsafe { *generation };
    let _ = PROCESSES.remove(pid);
    announce(EVENT_EXIT, pid, pid_gen);
}

/// Reads one stack into `buf` and returns its hash ([`NO_STACK`] when there is none), with its
/// frame count in `frames`. The stack is stored by `record` ([`store_stacks`]), and only when
/// the record's count is new in the interval.
///
/// Inlined, as every function here: Linux before 6.4 gives up tracking precision across a
/// BPF-to-BPF call and then walks many times more states (6.1 verified 88,167 instructions
/// with this and two `memset`s as functions, 32,717 without, the Go labels' start included).
#[inline(always)]
pub(crate) fn read_stack(
    ctx: &impl EbpfContext,
    buf: &mut StackTrace,
    frames: &mut u32,
    flags: u64,
    on_error: Counter,
) -> u64 {
    let read = get_stack(ctx, buf, flags, on_error);
    *frames = read as u32;
    hash_of(buf, read, flags)
}

/// The hash a stack of `frames` frames of `buf` is stored under; [`NO_STACK`] for none.
#[inline(always)]
pub(crate) fn hash_of(buf: &StackTrace, frames: usize, flags: u64) -> u64 {
    if frames == 0 {
        NO_STACK
    } else {
        stack_hash(&buf.ips, frames, flags)
    }
}

/// Reads one stack into `buf` by the helper (frame pointers, for a user stack); its frame count,
/// 0 when it failed (counted as `on_error`). A user stack that fills `buf` is counted as
/// truncated.
#[inline(always)]
pub(crate) fn get_stack(
    ctx: &impl EbpfContext,
    buf: &mut StackTrace,
    flags: u64,
    on_error: Counter,
) -> usize {
    let size = core::mem::size_of::<StackTrace>() as u32;
    // SAFETY: `buf` is a per-CPU map value of `size` bytes; the helper zeroes what it does not fill.
    let read = unsafe { bpf_get_stack(ctx.as_ptr(), buf.ips.as_mut_ptr().cast(), size, flags) };
    if read < 0 {
        count(on_error);
        return 0;
    }
    let frames = read as usize / 8;
    if frames >= MAX_STACK_DEPTH && flags & BPF_F_USER_STACK as u64 != 0 {
        count(Counter::UserStackTruncated);
    }
    frames
}

/// Stores the stacks `key` names from the per-CPU scratch of `slot`, where the record's
/// programs read them, in the interval's half; a stack that finds its map full is counted and
/// its hash in `key` becomes [`NO_STACK`].
#[inline(always)]
pub(crate) fn store_stacks(key: &mut SampleKey, slot: u32, half: u32) -> Result<(), Counter> {
    let scratch = SCRATCH.get_ptr(slot).ok_or(Counter::Internal)?;
    // SAFETY: per-CPU map value, holding this record's stacks (`read_stack`, the unwinder).
    let scratch = unsafe { &*scratch };
    if key.kernel_stack != NO_STACK
        && !keep_stack(
            &scratch.kernel,
            scratch.kernel_frames,
            key.kernel_stack,
            half,
        )
    {
        key.kernel_stack = NO_STACK;
    }
    if key.user_stack != NO_STACK
        && !keep_stack(&scratch.user, scratch.user_frames, key.user_stack, half)
    {
        key.user_stack = NO_STACK;
    }
    Ok(())
}

/// Stores the first `frames` frames of `buf` (followed by a zero unless they fill it) under
/// `hash` in the half's stacks map of their depth class; false (counted) when it is full.
#[inline(always)]
fn keep_stack(buf: &StackTrace, frames: u32, hash: u64, half: u32) -> bool {
    let frames = frames as usize;
    let stored = if frames <= SHORT_STACK_DEPTH {
        store(
            if half == 0 {
                &STACKS_SHORT_0
            } else {
                &STACKS_SHORT_1
            },
            hash,
            buf,
        )
    } else if frames <= MEDIUM_STACK_DEPTH {
        store(
            if half == 0 {
                &STACKS_MEDIUM_0
            } else {
                &STACKS_MEDIUM_1
            },
            hash,
            buf,
        )
    } else {
        store(
            if half == 0 {
                &STACKS_LONG_0
            } else {
                &STACKS_LONG_1
            },
            hash,
            buf,
        )
    };
    if !stored {
        count(Counter::StacksMapFull);
    }
    stored
}

/// Stores the first `N` frames of `buf` under `hash` unless already there; false when the map
/// is full.
fn store<const N: usize>(stacks: &HashMap<u64, Frames<N>>, hash: u64, buf: &StackTrace) -> bool {
    // Already stored, the common case: a lookup takes no lock, an insert locks its bucket even
    // when BPF_NOEXIST then refuses.
    if stacks.get_ptr(hash).is_some() {
        return true;
    }
    // SAFETY: `Frames<N>` is a prefix of `StackTrace` (N <= MAX_STACK_DEPTH, same layout).
    let prefix = unsafe { &*(buf as *const StackTrace).cast::<Frames<N>>() };
    match stacks.insert(hash, prefix, BPF_NOEXIST as u64) {
        Ok(()) => true,
        Err(err) => err == -(EEXIST as i32),
    }
}

pub(crate) const EEXIST: u32 = 17;

/// A 64-bit hash of the first `frames` addresses; never [`NO_STACK`].
fn stack_hash(ips: &[u64; MAX_STACK_DEPTH], frames: usize, seed: u64) -> u64 {
    let mut hash: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    for ip in ips.iter().take(frames) {
        hash = (hash ^ *ip).wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 32;
    }
    if hash == NO_STACK { 1 } else { hash }
}

/// Adds `value` to `key`'s entry in `counts`, creating it when there is none.
#[inline(always)]
pub(crate) fn add_sample(
    counts: &HashMap<SampleKey, SampleValue>,
    key: &SampleKey,
    value: SampleValue,
) -> Result<(), Counter> {
    if add_to_entry(counts, key, value) {
        return Ok(());
    }
    insert_sample(counts, key, value)
}

/// Adds `value` to `key`'s entry in `counts`; false when there is none.
#[inline(always)]
pub(crate) fn add_to_entry(
    counts: &HashMap<SampleKey, SampleValue>,
    key: &SampleKey,
    value: SampleValue,
) -> bool {
    let Some(entry) = counts.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: map value pointer. Plain adds are enough: a key names one thread (each idle task
    // is its own `swapper/N`), and a thread is sampled on one CPU at a time. The BPF target has
    // no atomic read-modify-write in stable `core` anyway.
    unsafe {
        (*entry).count += value.count;
        (*entry).period_ns += value.period_ns;
    }
    true
}

/// Creates `key`'s entry in `counts` with `value`, or adds to it when another CPU created it
/// first.
#[inline(always)]
pub(crate) fn insert_sample(
    counts: &HashMap<SampleKey, SampleValue>,
    key: &SampleKey,
    value: SampleValue,
) -> Result<(), Counter> {
    match counts.insert(key, value, BPF_NOEXIST as u64) {
        Ok(()) => Ok(()),
        Err(err) if err == -(EEXIST as i32) && add_to_entry(counts, key, value) => Ok(()),
        Err(_) => Err(Counter::CountsMapFull),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_get_stack` is a GPL-only helper.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
