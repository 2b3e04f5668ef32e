//! Off-CPU time (issue 16): where target threads wait, and for how long.
//!
//! One program on the scheduler's `sched_switch` raw tracepoint ([`off_cpu_switch`]) does it
//! all. The thread that leaves the CPU blocked notes the time in `OFF_CPU_THREADS`; when a
//! switch puts it back, the time it was off is known. A wait shorter than `--off-cpu-min-us`
//! ends there, counted.
//!
//! Stacks can only be read when the thread leaves the CPU: it is then the current task, whose
//! user memory is readable (once back, it runs user code at once). Reading them at every switch
//! would cost a stack walk per switch on a host with hundreds of thousands of them, most short.
//! So they are read only at a place ([`current_place`]: where the thread entered the kernel)
//! whose last wait was long: a server's `epoll_wait`, a pool's condition wait, a call to
//! another service. What is read (everything a sample reads, by the same code: process, user
//! stack, kernel stack, trace context or Go labels) is parked in the thread's entry, and
//! recorded when the wait ends long. A long wait at a place not predicted is recorded without
//! stacks ([`UNSTACKED_WAIT`], counted `off_cpu_unstacked`), and its place is predicted from
//! then on. A thread reads no place until its first long wait (a ping-pong of short waits
//! costs two lookups and a clock read per switch); the wait after it is read wherever it is.
//!
//! A parked record names stacks and contexts kept in the interval it was read in; when it is
//! recorded in a later one, userspace still has them: it keeps what parked records name
//! (`OFF_CPU_PARKED_<half>`, and the scan of `OFF_CPU_THREADS`; see `bpf/drain.rs`).
//!
//! A thread preempted while runnable waits for a CPU, not for something: not timed.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, pt_regs},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::{map, raw_tracepoint},
    maps::HashMap,
    programs::RawTracePointContext,
};
use profiler_common::{
    Config, Counter, NO_CONTEXT, NO_STACK, OFF_CPU_PLACES, OffCpuThread, SLOT_OFF_CPU, SampleKey,
    SampleValue, UNSTACKED_WAIT,
};

use crate::{
    ACTIVE, MEMO_TLS, SCRATCH, TARGETS, add_sample, config, count, current_comm, finish_record,
    origin::{pc_at, sp_at},
    process_of, read_stack, targeted, trace_context,
};

/// Target threads seen leaving the CPU blocked: tid -> their state. Sized by userspace for the
/// host's threads; an entry goes when its thread exits (`sched_process_exit`).
#[map]
static OFF_CPU_THREADS: HashMap<u32, OffCpuThread> = HashMap::with_max_entries(1, 0);

/// Time off the CPU by (process generation, thread, stacks, context, name): waits and their
/// nanoseconds, double-buffered like `COUNTS_<half>`. Sized by userspace.
#[map]
static OFF_CPU_COUNTS_0: HashMap<SampleKey, SampleValue> = HashMap::with_max_entries(1, 0);
#[map]
static OFF_CPU_COUNTS_1: HashMap<SampleKey, SampleValue> = HashMap::with_max_entries(1, 0);

/// The stacks and contexts parked records named in the interval (hash -> 1), by half: what
/// userspace keeps past the interval's drain. Sized by userspace.
#[map]
static OFF_CPU_PARKED_0: HashMap<u64, u8> = HashMap::with_max_entries(1, 0);
#[map]
static OFF_CPU_PARKED_1: HashMap<u64, u8> = HashMap::with_max_entries(1, 0);

/// `task_struct.flags` bits of a kernel thread, and of a thread on its way out: past
/// `sched_process_exit`, which forgets its entry, it may still wait (closing its files) and
/// must not make a new one that nothing would remove.
const PF_KTHREAD: u32 = 0x0020_0000;
const PF_EXITING: u32 = 0x0000_0004;

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn off_cpu_switch(ctx: RawTracePointContext) -> i32 {
    let config = config();
    // Read once, and only by a switch that times something: another process's switch reads
    // no clock.
    let mut clock = Clock(0);
    // sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next
    //              [, unsigned int prev_state (5.18+)])
    arriving(&config, &mut clock, ctx.arg::<u64>(2) as *const u8);
    // Last: reading the stacks ends in tail calls that do not come back.
    if ctx.arg::<u64>(0) & 0xff == 0 {
        leaving(&ctx, &config, &mut clock);
    }
    0
}

/// The time of this switch, read at the first need.
struct Clock(u64);

impl Clock {
    #[inline(always)]
    fn now(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: helper without preconditions.
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }
}

/// Ends the wait of the thread a switch puts back on the CPU: a long one is recorded, with the
/// stacks parked when it began or without, and its place remembered either way.
#[inline(always)]
fn arriving(config: &Config, clock: &mut Clock, next: *const u8) {
    let tid = task_word(next, config.task.pid);
    if tid == 0 {
        return;
    }
    let Some(thread) = OFF_CPU_THREADS.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: map value pointer returned by the kernel; only this thread's own switches write
    // it, one at a time.
    let thread = unsafe { &mut *thread };
    if thread.since == 0 {
        return;
    }
    let off = clock.now().wrapping_sub(thread.since);
    thread.since = 0;
    let parked = thread.parked;
    thread.parked = 0;
    if off < config.off_cpu_min_ns {
        count(Counter::OffCpuShort);
        if parked != 0 {
            // Predicted long, was short: not predicted here again until a long wait.
            forget_place(thread);
            // The one wait read wherever it was (see `leaving`) is over.
            thread.next_place |= 1;
        }
        return;
    }
    count(Counter::OffCpuWaits);
    // Its place is predicted from now on. A thread's first long wait only starts the reading
    // of its places.
    if thread.learning == 0 {
        thread.learning = 1;
    } else if thread.place != 0 && !knows_place(thread) {
        let slot = (thread.next_place as usize) % OFF_CPU_PLACES;
        thread.long_places[slot] = thread.place;
        thread.next_place = thread.next_place.wrapping_add(1);
    }
    let value = SampleValue {
        count: 1,
        period_ns: off,
    };
    let half = ACTIVE.get(0).copied().unwrap_or(0) & 1;
    let counts = if half == 0 {
        &OFF_CPU_COUNTS_0
    } else {
        &OFF_CPU_COUNTS_1
    };
    if parked != 0 {
        match add_sample(counts, &thread.key, value) {
            Ok(()) => count(Counter::OffCpuRecords),
            Err(counter) => count(counter),
        }
        return;
    }
    // Not predicted: filed under the thread alone (and its process's generation as its last
    // parked record read it; 0 before the first).
    let key = SampleKey {
        user_stack: UNSTACKED_WAIT,
        kernel_stack: NO_STACK,
        context: NO_CONTEXT,
        ..thread.key
    };
    match add_sample(counts, &key, value) {
        Ok(()) => count(Counter::OffCpuUnstacked),
        Err(counter) => count(counter),
    }
}

/// Whether the place of the wait that ended is one whose last wait was long.
#[inline(always)]
fn knows_place(thread: &OffCpuThread) -> bool {
    let mut known = false;
    for slot in 0..OFF_CPU_PLACES {
        known |= thread.long_places[slot] == thread.place;
    }
    known
}

/// Forgets the place of the wait that ended (its last wait was short).
#[inline(always)]
fn forget_place(thread: &mut OffCpuThread) {
    for slot in 0..OFF_CPU_PLACES {
        if thread.long_places[slot] == thread.place {
            thread.long_places[slot] = 0;
        }
    }
}

/// Notes the time the current thread leaves the CPU, when it blocks and is a target, and reads
/// its stacks when its place's last wait was long. Every switch of the host runs this: a
/// target with short waits only costs one map lookup and no read it can do without.
#[inline(always)]
fn leaving(ctx: &RawTracePointContext, config: &Config, clock: &mut Clock) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid == 0 {
        return;
    }
    // Filter first, as `sample` does: another process's switch costs this one lookup.
    if config.filter_cgroups == 0 && config.filter_pids != 0 && TARGETS.get_ptr(pid).is_none() {
        return;
    }
    // SAFETY: helper without preconditions; the pointer is only used for checked reads.
    let task = || unsafe { bpf_get_current_task() } as *const u8;
    // The read-only config decides before the verifier looks: a kernel whose tracepoint has
    // three arguments never sees the fourth read.
    let state = if config.switch_prev_state != 0 {
        ctx.arg::<u64>(3) as u32
    } else {
        task_word(task(), config.task.state)
    };
    if state == 0 {
        // Still runnable (a yield): it waits for a CPU, not for something.
        return;
    }
    let Some(thread) = OFF_CPU_THREADS.get_ptr_mut(tid) else {
        start_timing(pid, tid, config, clock, task());
        return;
    };
    // SAFETY: map value pointer returned by the kernel (see `arriving`).
    let thread = unsafe { &mut *thread };
    thread.since = clock.now();
    thread.place = 0;
    if thread.learning == 0 {
        return;
    }
    thread.place = current_place(config);
    // The wait after a thread's first long one is read wherever it is: a thread that always
    // waits long in one place loses the stacks of one wait, not two.
    if thread.next_place == 0 || knows_place(thread) {
        // Parked by the record's end (`origin::record`), which may be a tail call.
        if let Err(counter) = read_record(ctx, config, pid, tid) {
            count(counter);
        }
    }
}

/// Makes the entry of a target thread that blocks for the first time.
#[inline(always)]
fn start_timing(pid: u32, tid: u32, config: &Config, clock: &mut Clock, task: *const u8) {
    if config.filter_cgroups != 0 && !targeted(pid, config) {
        return;
    }
    if task_word(task, config.task.flags) & (PF_KTHREAD | PF_EXITING) != 0 {
        return;
    }
    let thread = OffCpuThread {
        since: clock.now(),
        key: SampleKey {
            pid,
            tid,
            pid_gen: 0,
            user_stack: NO_STACK,
            kernel_stack: NO_STACK,
            context: NO_CONTEXT,
            comm: current_comm(),
        },
        long_places: [0; OFF_CPU_PLACES],
        place: 0,
        parked: 0,
        learning: 0,
        next_place: 0,
    };
    match OFF_CPU_THREADS.insert(tid, thread, BPF_NOEXIST as u64) {
        Ok(()) => count(Counter::OffCpuThreadsAdded),
        Err(_) => count(Counter::OffCpuThreadsFull),
    }
}

/// Reads what a sample reads for the current thread, which is leaving the CPU; the record is
/// parked, not counted ([`park`]).
#[inline(always)]
fn read_record(
    ctx: &RawTracePointContext,
    config: &Config,
    pid: u32,
    tid: u32,
) -> Result<(), Counter> {
    let interval = ACTIVE.get(0).copied().ok_or(Counter::Internal)?;
    let scratch = SCRATCH.get_ptr_mut(SLOT_OFF_CPU).ok_or(Counter::Internal)?;
    // SAFETY: per-CPU map value of this kind of program's slot.
    let scratch = unsafe { &mut *scratch };
    let (pid_gen, flags) = process_of(pid, config, SLOT_OFF_CPU)?;
    let kernel_stack = if config.kernel_stacks != 0 {
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
        trace_context::read(interval, config, SLOT_OFF_CPU)
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
    let value = SampleValue {
        count: 0,
        period_ns: 0,
    };
    finish_record(ctx, &mut key, value, interval, flags, config, scratch)
}

/// Parks `key` as the record of the current thread's wait, and notes the stacks and context
/// it names as parked in `interval`.
#[inline(always)]
pub(crate) fn park(interval: u32, key: &SampleKey) -> Result<(), Counter> {
    let thread = OFF_CPU_THREADS
        .get_ptr_mut(key.tid)
        .ok_or(Counter::Internal)?;
    let parked = if interval & 1 == 0 {
        &OFF_CPU_PARKED_0
    } else {
        &OFF_CPU_PARKED_1
    };
    for hash in [key.user_stack, key.kernel_stack, key.context] {
        if hash != NO_STACK && parked.insert(hash, 1, BPF_ANY as u64).is_err() {
            // Userspace may drop what this record names if its wait spans a drain: not park
            // it (its wait is then recorded without stacks).
            return Err(Counter::OffCpuParkedFull);
        }
    }
    // SAFETY: map value pointer returned by the kernel (see `arriving`).
    let thread = unsafe { &mut *thread };
    thread.key = *key;
    thread.parked = 1;
    Ok(())
}

/// A 4-byte field of a task (0 when it cannot be read).
#[inline(always)]
fn task_word(task: *const u8, offset: u32) -> u32 {
    // SAFETY: a checked kernel read at an offset from the kernel's BTF.
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset as usize).cast::<u32>()) }.unwrap_or(0)
}

/// Where the current thread waits, never 0: the user code address it entered the kernel from
/// (a system call's site, in libc shared by all its callers) mixed with its stack pointer then
/// (which tells the callers apart: a path to a site keeps its depth from one call to the
/// next). 1 for every place where the kernel cannot tell (before Linux 5.15), which predicts a
/// thread's wait from its last one.
#[inline(always)]
fn current_place(config: &Config) -> u32 {
    if config.task_pt_regs == 0 {
        return 1;
    }
    // SAFETY: helpers without preconditions; the registers are read with checked reads.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    let place = pc_at(regs) ^ sp_at(regs).rotate_left(29);
    (place ^ place >> 32) as u32 | 1
}

/// Forgets the exiting thread's waits (`sched_process_exit` fires for every thread).
#[inline(always)]
pub(crate) fn forget_current_thread() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if OFF_CPU_THREADS.remove(tid).is_ok() {
        count(Counter::OffCpuThreadsRemoved);
    }
}
