//! Off-CPU time (issue 16): where target threads wait, and for how long.
//!
//! A wait is timed by the scheduler's `sched_switch` tracepoint ([`off_cpu_switch`], BTF-typed:
//! the task put on the CPU is a typed pointer the kernel-stack helper accepts): the thread that
//! leaves the CPU blocked notes the time in `OFF_CPU_THREADS`, and when a switch puts it back,
//! the time it was off is known. A wait shorter than `--off-cpu-min-us` ends there, counted.
//!
//! Only then is anything read, so that the host's many short waits cost two map operations and
//! no stack: the kernel stack the thread waited in (the helper reads a task that is not
//! running), then, when the thread leaves the system call it waited in ([`off_cpu_return`], on
//! `raw_syscalls:sys_exit`, the same CPU), everything a sample reads, by the same code: the
//! process, the user stack (by unwind tables or frame pointers), the trace context or the Go
//! labels. All are what they were when the thread left the CPU, as it has not run user code
//! since. The record goes to `OFF_CPU_COUNTS_<half>`: waits and their nanoseconds under the
//! sample's key.
//!
//! A thread that waited outside a system call (a page fault), or whose return another CPU saw,
//! is told by its user code address, which the kernel saved when it entered and which must be
//! the one it returns to (Linux 5.15+, `bpf_task_pt_regs`); its waits are dropped and counted
//! (`off_cpu_unmatched`). A thread preempted while runnable waits for a CPU, not for something:
//! not timed.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, pt_regs, task_struct},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_task, bpf_get_current_task_btf, bpf_get_task_stack, bpf_task_pt_regs,
        },
    },
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use profiler_common::{
    Config, Counter, NO_CONTEXT, NO_STACK, SLOT_OFF_CPU, SampleKey, SampleValue, StackTrace,
};

use crate::{
    ACTIVE, MEMO_TLS, SCRATCH, TARGETS, config, count, current_comm, finish_record, keep_stack,
    origin::{pc_at, return_address},
    process_of, targeted, trace_context,
};

/// A target thread's wait in progress, and the waits gathered for its next record.
#[repr(C)]
#[derive(Clone, Copy)]
struct Waiting {
    /// When the thread left the CPU to wait; 0 while it runs.
    since: u64,
    /// Time off the CPU of the waits gathered.
    off_ns: u64,
    /// The user code address the thread returns to from the first wait gathered (0 where the
    /// kernel cannot tell): a return elsewhere is not from these waits.
    user_pc: u64,
    /// The kernel stack of the first wait gathered, and the interval it was kept in.
    kernel_stack: u64,
    interval: u32,
    /// Waits gathered (0: none).
    waits: u32,
}

/// Target threads seen leaving the CPU blocked: tid -> their wait. Sized by userspace for the
/// host's threads; an entry goes when its thread exits (`sched_process_exit`).
#[map]
static OFF_CPU_THREADS: HashMap<u32, Waiting> = HashMap::with_max_entries(1, 0);

/// Per CPU, the thread a switch last put back with waits to record: the system-call exit
/// program compares it with the current thread, the one thing it does for every other call.
#[map]
static OFF_CPU_HINT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// `task_struct.flags` bits of a kernel thread, and of a thread on its way out: past
/// `sched_process_exit`, which forgets its entry, it may still wait (closing its files) and
/// must not make a new one that nothing would remove.
const PF_KTHREAD: u32 = 0x0020_0000;
const PF_EXITING: u32 = 0x0000_0004;

#[btf_tracepoint(function = "sched_switch")]
pub fn off_cpu_switch(ctx: BtfTracePointContext) -> i32 {
    let config = config();
    // Read once, and only by a switch that times something: another process's switch reads
    // no clock.
    let mut clock = Clock(0);
    // sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next
    //              [, unsigned int prev_state (5.18+)])
    if ctx.arg::<u64>(0) & 0xff == 0 {
        leaving(&ctx, &config, &mut clock);
    }
    arriving(&config, &mut clock, ctx.arg::<*mut task_struct>(2));
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

/// Notes the time the current thread leaves the CPU, when it blocks and is a target. Every
/// switch of the host runs this: a target's costs two map operations and no more reads than
/// needed (the bench's ping-pong pays it twice per round trip).
#[inline(always)]
fn leaving(ctx: &BtfTracePointContext, config: &Config, clock: &mut Clock) {
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
    if let Some(waiting) = OFF_CPU_THREADS.get_ptr_mut(tid) {
        // SAFETY: map value pointer returned by the kernel; only this thread's own switches
        // and its return on one CPU at a time write it.
        let waiting = unsafe { &mut *waiting };
        if waiting.waits != 0 && waiting.user_pc != 0 && current_user_pc(config) != waiting.user_pc
        {
            // Back in user code since the waits gathered, unseen: not this call's.
            count(Counter::OffCpuUnmatched);
            waiting.waits = 0;
        }
        waiting.since = clock.now();
        return;
    }
    if config.filter_cgroups != 0 && !targeted(pid, config) {
        return;
    }
    if task_word(task(), config.task.flags) & (PF_KTHREAD | PF_EXITING) != 0 {
        return;
    }
    let waiting = Waiting {
        since: clock.now(),
        off_ns: 0,
        user_pc: 0,
        kernel_stack: NO_STACK,
        interval: 0,
        waits: 0,
    };
    match OFF_CPU_THREADS.insert(tid, waiting, BPF_NOEXIST as u64) {
        Ok(()) => count(Counter::OffCpuThreadsAdded),
        Err(_) => count(Counter::OffCpuThreadsFull),
    }
}

/// Ends the wait of the thread a switch puts on the CPU: a long one is gathered for its
/// record, with the kernel stack it waited in.
#[inline(always)]
fn arriving(config: &Config, clock: &mut Clock, next: *mut task_struct) {
    let tid = task_word(next.cast(), config.task.pid);
    if tid == 0 {
        return;
    }
    let Some(waiting) = OFF_CPU_THREADS.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: map value pointer returned by the kernel (see `leaving`).
    let waiting = unsafe { &mut *waiting };
    if waiting.since == 0 {
        return;
    }
    let off = clock.now().wrapping_sub(waiting.since);
    waiting.since = 0;
    if off < config.off_cpu_min_ns {
        count(Counter::OffCpuShort);
        return;
    }
    count(Counter::OffCpuWaits);
    if waiting.waits == 0 {
        waiting.user_pc = user_pc(config, next);
        let interval = ACTIVE.get(0).copied().unwrap_or(0);
        waiting.kernel_stack = if config.kernel_stacks != 0 {
            kernel_stack(next, interval)
        } else {
            NO_STACK
        };
        waiting.interval = interval;
        waiting.off_ns = 0;
    }
    waiting.off_ns = waiting.off_ns.wrapping_add(off);
    waiting.waits = waiting.waits.wrapping_add(1);
    if let Some(hint) = OFF_CPU_HINT.get_ptr_mut(0) {
        // SAFETY: per-CPU map value.
        unsafe { *hint = tid };
    }
}

/// The kernel stack `task` waits in, kept in the interval's stacks maps.
#[inline(always)]
fn kernel_stack(task: *mut task_struct, interval: u32) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(SLOT_OFF_CPU) else {
        return NO_STACK;
    };
    // SAFETY: per-CPU map value; the switch and system-call exit programs never run at once
    // on a CPU (a switch cannot come while a program runs).
    let buf: &mut StackTrace = unsafe { &mut (*scratch).kernel };
    let size = core::mem::size_of::<StackTrace>() as u32;
    // SAFETY: `task` is the tracepoint's typed pointer; `buf` a map value of `size` bytes.
    let read = unsafe { bpf_get_task_stack(task, buf.ips.as_mut_ptr().cast(), size, 0) };
    if read <= 0 {
        count(Counter::KernelStackFailed);
        return NO_STACK;
    }
    keep_stack(buf, read as usize / 8, 0, interval & 1)
}

/// A 4-byte field of a task (0 when it cannot be read).
#[inline(always)]
fn task_word(task: *const u8, offset: u32) -> u32 {
    // SAFETY: a checked kernel read at an offset from the kernel's BTF.
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset as usize).cast::<u32>()) }.unwrap_or(0)
}

/// The user code address the current thread entered the kernel from (see [`user_pc`]).
#[inline(always)]
fn current_user_pc(config: &Config) -> u64 {
    if config.task_pt_regs == 0 {
        return 0;
    }
    // SAFETY: a helper without preconditions.
    user_pc(config, unsafe { bpf_get_current_task_btf() })
}

/// The user code address `task` entered the kernel from, 0 where the kernel cannot tell
/// (before Linux 5.15). Read once a wait is long, for the task put back on the CPU: it has
/// run no user code since it left.
#[inline(always)]
fn user_pc(config: &Config, task: *mut task_struct) -> u64 {
    if config.task_pt_regs == 0 {
        return 0;
    }
    // SAFETY: `task` is a typed task pointer (the tracepoint's, or the current task's); the
    // registers are read with a checked read.
    pc_at(unsafe { bpf_task_pt_regs(task) } as *const pt_regs)
}

/// Forgets the exiting thread's waits (`sched_process_exit` fires for every thread).
#[inline(always)]
pub(crate) fn forget_current_thread() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if OFF_CPU_THREADS.remove(tid).is_ok() {
        count(Counter::OffCpuThreadsRemoved);
    }
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn off_cpu_return(ctx: RawTracePointContext) -> i32 {
    if let Err(counter) = returning(&ctx) {
        count(counter);
    }
    0
}

/// Records the waits gathered for the current thread, when it is the one a switch last put
/// back on this CPU with waits to record.
#[inline(always)]
fn returning(ctx: &RawTracePointContext) -> Result<(), Counter> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let hint = OFF_CPU_HINT.get_ptr_mut(0).ok_or(Counter::Internal)?;
    // SAFETY: per-CPU map value.
    if unsafe { *hint } != tid || tid == 0 {
        return Ok(());
    }
    // SAFETY: as above.
    unsafe { *hint = 0 };
    // None: the hinted thread exited without returning, and a later thread got its ID.
    let Some(waiting) = OFF_CPU_THREADS.get_ptr_mut(tid) else {
        return Ok(());
    };
    // SAFETY: map value pointer returned by the kernel (see `leaving`); read where each field
    // is needed, not copied at once: Linux 5.10 refuses a program whose stack and its calls'
    // pass 512 bytes, and this one is near.
    let waiting = unsafe { &mut *waiting };
    if waiting.waits == 0 {
        return Ok(());
    }
    if waiting.user_pc != 0 && return_address(ctx) != waiting.user_pc {
        waiting.waits = 0;
        return Err(Counter::OffCpuUnmatched);
    }
    let config = config();
    let interval = ACTIVE.get(0).copied().ok_or(Counter::Internal)?;
    let scratch = SCRATCH.get_ptr_mut(SLOT_OFF_CPU).ok_or(Counter::Internal)?;
    // SAFETY: per-CPU map value of this kind of program's slot.
    let scratch = unsafe { &mut *scratch };
    let (pid_gen, flags) = process_of(pid, &config, SLOT_OFF_CPU)?;
    let context = if config.trace_context != 0 && flags & MEMO_TLS != 0 {
        trace_context::read(pid, interval, &config, SLOT_OFF_CPU)
    } else {
        NO_CONTEXT
    };
    let mut key = SampleKey {
        pid,
        tid,
        pid_gen,
        user_stack: NO_STACK,
        // Kept at the switch, microseconds ago: in another interval's maps only when the
        // drain moved the interval on in between.
        kernel_stack: if waiting.interval == interval {
            waiting.kernel_stack
        } else {
            NO_STACK
        },
        context,
        comm: current_comm(),
    };
    let value = SampleValue {
        count: u64::from(waiting.waits),
        period_ns: waiting.off_ns,
    };
    // Taken: whatever follows records them (here, or the tail calls).
    waiting.waits = 0;
    finish_record(
        ctx,
        &mut key,
        value,
        interval,
        flags,
        &config,
        &mut scratch.user,
    )
}
