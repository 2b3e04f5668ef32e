//! Types shared by the BPF program and userspace.
//!
//! Everything here is `#[repr(C)]` with explicit padding so that both sides agree on the byte
//! layout of map keys and values. The `user` feature adds aya's `Pod` impls for userspace.
#![no_std]

pub mod unwind;

/// Maximum frames read per stack; the kernel's default `perf_event_max_stack` is 127.
pub const MAX_STACK_DEPTH: usize = 127;

/// Length of a task's `comm`, including the trailing NUL.
pub const COMM_LEN: usize = 16;

/// Aggregation key: one entry per distinct (process generation, thread, stacks, thread name).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// Thread group id (the process id users see).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The process image's generation ([`process_generation`]): the process's start time and
    /// exec count, both kept by the kernel, so two processes that shared a PID (reuse, or exec)
    /// never share a generation and every CPU computes the same one.
    pub pid_gen: u64,
    /// Hash of the user stack in the stacks map; [`NO_STACK`] when there is none.
    pub user_stack: u64,
    /// Hash of the kernel stack in the stacks map; [`NO_STACK`] when there is none.
    pub kernel_stack: u64,
    /// Hash of the thread's trace context in the contexts map; [`NO_CONTEXT`] when none.
    pub context: u64,
    /// The sampled thread's name.
    pub comm: [u8; COMM_LEN],
}

/// Stack hash meaning "no stack was read".
pub const NO_STACK: u64 = 0;

/// Context hash meaning "the thread published no valid trace context".
pub const NO_CONTEXT: u64 = 0;

/// [`SampleKey::user_stack`] of an off-CPU record whose stacks were not read: the thread left
/// the CPU at a place whose last wait was short, and this one turned out long (see
/// [`OffCpuThread`]). Never a stack's hash.
pub const UNSTACKED_WAIT: u64 = u64::MAX;

/// Places a thread remembers as having had a long wait last time ([`OffCpuThread`]).
pub const OFF_CPU_PLACES: usize = 4;

/// A target thread timed off the CPU: `OFF_CPU_THREADS`, by thread ID.
///
/// A wait's stacks are read when the thread leaves the CPU, the only time they can be (its
/// user memory is readable only while it is the current task), and only where its last wait
/// at the same place (the user code address it entered the kernel from) was long: the many
/// short waits of a busy host read none. The record read is parked in `key` until the thread
/// runs again and the wait's length is known.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OffCpuThread {
    /// When the thread left the CPU to wait; 0 while it runs.
    pub since: u64,
    /// The wait's record while `parked` is set; else its process and name only (for a wait
    /// recorded without stacks).
    pub key: SampleKey,
    /// Places (low 32 bits of the user code address, never 0) whose last wait was long.
    pub long_places: [u32; OFF_CPU_PLACES],
    /// The place of the wait in progress; 0 when not read.
    pub place: u32,
    /// 1 while `key` is the record of the wait in progress: userspace keeps the stacks and
    /// contexts it names until it ends, whichever interval that is.
    pub parked: u32,
    /// 1 once the thread had a long wait: its places are read at every wait from then on.
    pub learning: u32,
    /// How many places went to `long_places` (the next goes to this modulo
    /// [`OFF_CPU_PLACES`]); 0 until the first, while the thread's next wait is read wherever it
    /// is (1 once that wait was short).
    pub next_place: u32,
}

/// Attribute bytes of a trace context kept per sample; longer attribute data is cut here.
pub const MAX_ATTR_BYTES: usize = 128;

/// Size of the fixed head of the OpenTelemetry thread-context record (OTEP 4947).
pub const RECORD_HEAD_LEN: usize = 28;

/// A thread's trace context as read from its OTEP 4947 record. The first 28 bytes mirror the
/// record's head, so it is read in place. 8-byte aligned so that it hashes as words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// 1 when the record is valid.
    pub valid: u8,
    pub trace_flags: u8,
    /// Attribute bytes kept in `attrs` (the record's size, cut to [`MAX_ATTR_BYTES`]).
    pub attrs_len: u16,
    pub _pad: [u8; 4],
    /// `key_index u8 | len u8 | utf8[len]` entries; zero beyond `attrs_len`.
    pub attrs: [u8; MAX_ATTR_BYTES],
}

/// How the BPF program finds a process's `otel_thread_ctx_v1` variable from a thread pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsLocation {
    /// [`TLS_STATIC`] or [`TLS_DTV`].
    pub kind: u32,
    pub _pad: u32,
    /// DTV index of the module ([`TLS_DTV`] only).
    pub module: u64,
    /// Offset from the thread pointer ([`TLS_STATIC`], may be negative) or inside the
    /// module's TLS block ([`TLS_DTV`]).
    pub offset: i64,
}

/// [`TlsLocation::kind`]: the variable is at `thread pointer + offset` (static TLS).
pub const TLS_STATIC: u32 = 1;
/// [`TlsLocation::kind`]: the variable is at `dtv[module] + offset` (dynamic TLS, glibc).
pub const TLS_DTV: u32 = 2;

/// How the BPF program finds the current goroutine's pprof labels in a Go process, from the
/// thread pointer: `g = *(tp + tls_offset)`, `curg = g.m.curg` (the user goroutine, also when
/// the thread runs on its scheduler stack), `labels = curg.labels`, read as `labels_kind` says.
/// Offsets come from the binary's DWARF or the per-release table in userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoTarget {
    /// Where `g` is kept relative to the thread pointer (x86_64 `runtime.tlsg`, usually -8);
    /// unused with [`GoTarget::g_register`].
    pub tls_offset: i64,
    /// `runtime.g.m`.
    pub g_m: u32,
    /// `runtime.m.curg`.
    pub m_curg: u32,
    /// `runtime.g.labels`.
    pub g_labels: u32,
    /// [`GO_LABELS_MAP`] or [`GO_LABELS_SLICE`].
    pub labels_kind: u32,
    /// 1: `g` is a register of the interrupted user code (aarch64: `x28`), not in TLS; a
    /// sample taken in the kernel then has no labels.
    pub g_register: u32,
    pub _pad: u32,
    /// The executable's read-only data, as addresses of the process (`[start, end)`; empty
    /// when unknown): a label key there is a string literal, which never changes, so the
    /// program may reuse the key it read last in the same slot of the same process.
    pub readonly_start: u64,
    pub readonly_end: u64,
    /// Where the process's garbage-collection generation is (`runtime.mheap_.sweepgen`, a
    /// `u32`; 0 when unknown): while it stays the same, no label set reachable when it was read
    /// can have been freed and its address reused, so a label set is known by its address
    /// alone and the program may reuse what it read there.
    pub gc_generation: u64,
}

/// [`GoTarget::labels_kind`], Go 1.19 to 1.23: `g.labels` points to a `labelMap`, a
/// `map[string]string` (a pointer to the runtime's `hmap`).
pub const GO_LABELS_MAP: u32 = 1;
/// [`GoTarget::labels_kind`], Go 1.24 on: `g.labels` points to a `labelMap` whose first field
/// is a slice of `{key, value string}` pairs.
pub const GO_LABELS_SLICE: u32 = 2;

/// Labels of a goroutine kept per sample; more are cut (and counted).
pub const GO_MAX_LABELS: usize = 8;
/// Bytes of a label key kept per sample; longer keys are cut (and counted).
pub const GO_MAX_KEY: usize = 64;
/// Bytes of a label value kept per sample; longer values are cut (and counted).
pub const GO_MAX_VALUE: usize = 128;

/// Bit set in [`SampleKey::context`] for a Go label set (stored in `GO_LABELS_<half>`), clear
/// for an OpenTelemetry thread context (in `CONTEXTS_<half>`).
pub const GO_CONTEXT_BIT: u64 = 1 << 63;

/// Index in the BPF program array `TAIL_CALLS` of `go_label_slot`, which reads a goroutine's
/// labels slot by slot and records the sample.
pub const TAIL_GO_LABEL_SLOT: u32 = 0;
/// Index in `TAIL_CALLS` of `unwind_user`, which walks a user stack by the files' unwind tables
/// (issue 15) a few frames per call and then goes on with the sample.
pub const TAIL_UNWIND_USER: u32 = 1;
/// Entries of `TAIL_CALLS` (and of `OFF_CPU_TAIL_CALLS`, the same programs for off-CPU
/// records: `go_label_slot_off_cpu`, `unwind_user_off_cpu`).
pub const TAIL_CALL_SLOTS: u32 = 2;

/// The slot of the per-CPU scratch maps ([`maps::PER_CPU_SCRATCH`]) the sampling program and
/// its tail calls use.
pub const SLOT_SAMPLE: u32 = 0;
/// The slot the off-CPU programs use: a sample (a timer interrupt) may come while the
/// system-call exit program runs on the same CPU, and must not write over its state.
pub const SLOT_OFF_CPU: u32 = 1;

/// A goroutine's pprof labels as read in the kernel: up to [`GO_MAX_LABELS`] slots (a map
/// bucket's slots, or the slice's first pairs), each cut to [`GO_MAX_KEY`] / [`GO_MAX_VALUE`]
/// bytes.
///
/// The kernel reads each string as one window of the buffer's whole size (a constant size is
/// what every verifier from Linux 5.10 accepts at a bearable cost): from the string's start, or,
/// when that window runs into an unmapped page, the window that ends where the string ends. The
/// string is the first `len` bytes of its buffer, or the last `len` when its bit in
/// `keys_at_end` / `values_at_end` is set ([`GoLabels::key`], [`GoLabels::value`]); the other
/// bytes are the target's memory around the string.
///
/// A string in the executable's read-only data that the kernel cannot read (its page is not in
/// the process's page tables: a literal the program never touched, and a BPF program cannot
/// fault it in) is kept as its address instead, in the buffer's first word, with its bit in
/// `keys_literal` / `values_literal` set: userspace reads it from the file
/// ([`GoLabels::literal`]).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoLabels {
    /// Slots looked at.
    pub count: u8,
    /// 1 when a label, a key or a value was cut.
    pub cut: u8,
    /// Bit `i` set: slot `i` holds a pair (a map bucket has empty slots).
    pub present: u8,
    /// Bit `i` set: slot `i`'s key is at the end of its buffer.
    pub keys_at_end: u8,
    /// Bit `i` set: slot `i`'s value is at the end of its buffer.
    pub values_at_end: u8,
    /// Bit `i` set: slot `i`'s key is an address in the executable's read-only data.
    pub keys_literal: u8,
    /// Bit `i` set: slot `i`'s value is an address in the executable's read-only data.
    pub values_literal: u8,
    pub _pad: u8,
    pub key_lens: [u8; GO_MAX_LABELS],
    pub value_lens: [u8; GO_MAX_LABELS],
    pub keys: [[u8; GO_MAX_KEY]; GO_MAX_LABELS],
    pub values: [[u8; GO_MAX_VALUE]; GO_MAX_LABELS],
}

impl GoLabels {
    /// Slot `slot`'s key bytes (empty past [`GO_MAX_LABELS`]).
    pub fn key(&self, slot: usize) -> &[u8] {
        match self.keys.get(slot) {
            Some(buf) => window(
                buf,
                self.key_lens[slot],
                self.keys_at_end & (1 << slot) != 0,
            ),
            None => &[],
        }
    }

    /// Slot `slot`'s value bytes (empty past [`GO_MAX_LABELS`]).
    pub fn value(&self, slot: usize) -> &[u8] {
        match self.values.get(slot) {
            Some(buf) => window(
                buf,
                self.value_lens[slot],
                self.values_at_end & (1 << slot) != 0,
            ),
            None => &[],
        }
    }

    /// Where slot `slot`'s key (`value` false) or value is in the executable's read-only data,
    /// when the kernel kept its address instead of its bytes; `None` for bytes.
    pub fn literal(&self, slot: usize, value: bool) -> Option<u64> {
        let (mask, buf): (u8, &[u8]) = if value {
            (self.values_literal, self.values.get(slot)?)
        } else {
            (self.keys_literal, self.keys.get(slot)?)
        };
        if mask & (1 << slot) == 0 {
            return None;
        }
        let word: [u8; 8] = buf.get(..8)?.try_into().ok()?;
        Some(u64::from_le_bytes(word))
    }
}

/// The `len` bytes of a string read as `buf`'s window, from its start or ending at its end.
fn window(buf: &[u8], len: u8, at_end: bool) -> &[u8] {
    let len = usize::from(len).min(buf.len());
    if at_end {
        &buf[buf.len() - len..]
    } else {
        &buf[..len]
    }
}

/// Aggregated value for one [`SampleKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleValue {
    /// Number of samples.
    pub count: u64,
    /// Sum of the sampling periods in force when each sample was taken, in nanoseconds of CPU
    /// time: stays exact while the sampling rate changes.
    pub period_ns: u64,
}

/// Up to `N` frames of one stack, innermost first; unused slots are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Frames<const N: usize> {
    pub ips: [u64; N],
}

/// A stack as the helper reads it, at the greatest depth.
pub type StackTrace = Frames<MAX_STACK_DEPTH>;

/// Stacks are stored in one of three maps by depth, so that a stack of a few frames does not
/// take a full [`StackTrace`]: most stacks (C, kernel) fit the short class, most of the rest
/// (Go, Java) the medium one.
pub const SHORT_STACK_DEPTH: usize = 16;
pub const MEDIUM_STACK_DEPTH: usize = 48;
pub type ShortStack = Frames<SHORT_STACK_DEPTH>;
pub type MediumStack = Frames<MEDIUM_STACK_DEPTH>;

/// Per-CPU scratch space: stacks are too large for the 512-byte BPF stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Scratch {
    pub user: StackTrace,
    pub kernel: StackTrace,
    /// How many frames of `user` and `kernel` the record names: they are stored only when its
    /// count is new in the interval (`record` in the BPF program).
    pub user_frames: u32,
    pub kernel_frames: u32,
}

/// Load-time configuration, a read-only global of the BPF program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// 1: sample only processes in the target map.
    pub filter_pids: u8,
    /// 1: also sample the idle task (pid 0).
    pub include_idle: u8,
    /// 1: read kernel stacks.
    pub kernel_stacks: u8,
    /// 1: read trace contexts of processes in the TLS map.
    pub trace_context: u8,
    /// Offset of the user thread pointer inside `task_struct` (from the kernel's BTF).
    pub task_tp_offset: u32,
    /// Offset of glibc's DTV pointer from the thread pointer (x86_64: 8, aarch64: 0).
    pub tcb_dtv_offset: u32,
    /// 1: sample only tasks in (or below) a cgroup of the target cgroup map. With `filter_pids`
    /// too, a sample passes either filter.
    pub filter_cgroups: u8,
    /// 1: the cgroup filter reads a task's ancestors from `cgroup.ancestor_ids` through
    /// `cgroup` (before Linux 5.11 perf_event programs may not call
    /// `bpf_get_current_ancestor_cgroup_id`); 0: it calls that helper.
    pub cgroup_ancestor_ids: u8,
    /// 1: the kernel has `bpf_task_pt_regs` (Linux 5.15): a Go sample taken in the kernel
    /// checks its labels against the user stack pointer saved at kernel entry; 0: such a
    /// sample gets no labels.
    pub task_pt_regs: u8,
    /// 1: the user stacks of processes with code ranges in `UNWIND_PROCS` are walked by the
    /// files' unwind tables (`unwind_user`); 0 (`--no-dwarf-unwinding`): frame pointers only.
    pub dwarf_unwinding: u8,
    /// Where the program finds a process's identity and end in kernel memory (from BTF).
    pub task: TaskOffsets,
    /// Where the program finds a task's cgroup ancestry when `cgroup_ancestor_ids` is 1.
    pub cgroup: CgroupOffsets,
    /// 1: off-CPU time is recorded (`--off-cpu`; the switch and system-call exit programs are
    /// loaded).
    pub off_cpu: u8,
    /// 1: `sched_switch` passes the leaving task's state as its fourth argument (Linux 5.18+):
    /// read there, not from the task.
    pub switch_prev_state: u8,
    pub _pad: [u8; 6],
    /// The shortest time off the CPU that is recorded (`--off-cpu-min-us`), in nanoseconds.
    pub off_cpu_min_ns: u64,
}

/// Byte offsets of the path from a task to the IDs of its cgroup v2 ancestors in kernels that
/// keep them in `struct cgroup` (`ancestor_ids[]`, Linux 5.5 to 5.19), from the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupOffsets {
    /// `task_struct.cgroups` (a pointer to the task's `css_set`).
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp` (a pointer to its cgroup in the v2 hierarchy).
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.level` (int): the root is 0.
    pub cgroup_level: u32,
    /// `cgroup.ancestor_ids` (u64[level + 1]): the ID of the ancestor at each level, itself last.
    pub cgroup_ancestor_ids: u32,
}

/// Byte offsets of the kernel fields that identify a process image and tell when its whole
/// thread group is gone, read from the kernel's BTF in userspace (aya emits no CO-RE
/// relocations). All exist in every kernel from 5.10 on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.group_leader` (a pointer).
    pub group_leader: u32,
    /// `task_struct.start_boottime` (u64 ns since boot, suspend included; `/proc/PID/stat`
    /// field 22 is this in clock ticks).
    pub start_boottime: u32,
    /// `task_struct.self_exec_id` (u64 since 5.7): incremented by every exec.
    pub self_exec_id: u32,
    /// `task_struct.signal` (a pointer to the thread group's `signal_struct`).
    pub signal: u32,
    /// `signal_struct.live.counter` (int): threads of the group not yet exiting.
    pub signal_live: u32,
    /// `task_struct.pid` (int): the thread ID, read for the task a switch puts on the CPU.
    pub pid: u32,
    /// `task_struct.flags` (unsigned int): `PF_KTHREAD` marks a kernel thread, which never
    /// returns to user code and has no off-CPU records.
    pub flags: u32,
    /// `task_struct.__state` (unsigned int; `state`, a long, before Linux 5.14: its low half
    /// is read): 0 (`TASK_RUNNING`) for a task that leaves the CPU still runnable.
    pub state: u32,
}

/// Bits of [`process_generation`] that hold the start time in microseconds (142 years).
pub const GENERATION_START_BITS: u32 = 52;

/// The generation of a process image: its group leader's start time since boot in
/// microseconds (low 52 bits) and its exec count modulo 4096 (high 12 bits). Two processes that
/// share a PID cannot start in the same microsecond, and an exec (which keeps the start time)
/// changes the count. Never 0.
pub const fn process_generation(start_boottime_ns: u64, exec_id: u64) -> u64 {
    let start_us = (start_boottime_ns / 1000) & ((1 << GENERATION_START_BITS) - 1);
    let generation = ((exec_id & 0xfff) << GENERATION_START_BITS) | start_us;
    if generation == 0 { 1 } else { generation }
}

/// The start time since boot, in microseconds, that a generation carries.
pub const fn generation_start_us(generation: u64) -> u64 {
    generation & ((1 << GENERATION_START_BITS) - 1)
}

/// The exec count (modulo 4096) that a generation carries.
pub const fn generation_exec_id(generation: u64) -> u64 {
    generation >> GENERATION_START_BITS
}

/// Deepest cgroup v2 level the program looks at for a target ancestor (the root is level 0).
pub const MAX_CGROUP_LEVELS: i32 = 32;

/// Name of the [`Config`] global in the BPF object.
pub const CONFIG_SYMBOL: &str = "PROFILER_CONFIG";

/// Events sent to userspace through the ring buffer: rare, never one per sample.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    pub kind: u32,
    pub pid: u32,
    /// The process generation (see [`SampleKey::pid_gen`]).
    pub pid_gen: u64,
}

/// [`ProcessEvent::kind`]: a process (image) was sampled for the first time.
pub const EVENT_NEW_PROCESS: u32 = 1;
/// [`ProcessEvent::kind`]: a process image ended: its last thread exited, or it exec'd; its
/// samples so far are already in the maps.
pub const EVENT_EXIT: u32 = 2;

/// Indexes of the per-CPU counters map. Each names one thing that happened in the BPF program.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Samples that passed the filter and were counted.
    Samples = 0,
    /// Samples of processes outside the target set, dropped before any stack work.
    Filtered = 1,
    /// Samples of the idle task, dropped.
    Idle = 2,
    /// `bpf_get_stack` failed for the kernel stack.
    KernelStackFailed = 3,
    /// `bpf_get_stack` failed for the user stack.
    UserStackFailed = 4,
    /// The stacks map was full: the sample was counted without that stack.
    StacksMapFull = 5,
    /// The counts map was full: the sample was lost.
    CountsMapFull = 6,
    /// The known-processes map was full: the process is tracked without a generation.
    ProcessesMapFull = 7,
    /// The ring buffer was full: userspace snapshots the process late, at the drain.
    EventsLost = 8,
    /// The per-CPU scratch or the active-half map could not be read (should never happen).
    Internal = 9,
    /// The thread pointer or the DTV of a traced process could not be read.
    TlsReadFailed = 10,
    /// The record pointer or the record itself could not be read (unmapped memory, say).
    RecordReadFailed = 11,
    /// Samples that kept their stack but lost their trace: the per-interval trace limit was hit.
    TraceLimit = 12,
    /// The contexts map was full: the sample was counted without its trace.
    ContextsMapFull = 13,
    /// Samples counted with a trace context.
    Traced = 14,
    /// The task's start time or exec count could not be read: the sample is kept under
    /// generation 0 (its process is then named from a snapshot taken at the drain).
    TaskReadFailed = 15,
    /// A Go goroutine's labels could not be read (unmapped memory, a stale pointer): the sample
    /// is kept without them.
    GoLabelsReadFailed = 16,
    /// Samples whose Go labels were cut to the per-sample bounds (labels, key or value bytes).
    GoLabelsCut = 17,
    /// The user stack filled all [`MAX_STACK_DEPTH`] frames: its outermost callers are cut
    /// (userspace marks such a stack's root `[truncated]`).
    UserStackTruncated = 18,
    /// Walks by unwind tables that stopped at a rule they cannot follow (a CFA that is not
    /// sp- or fp-relative, a return address not on the stack, a frame pointer not known): the
    /// stack ends there, never with a guessed frame.
    UnwindUnsupported = 19,
    /// Walks by unwind tables that met code whose file's table was not loaded yet: those
    /// frames were walked by frame pointer.
    UnwindTablePending = 20,
    /// Walks by unwind tables that stopped on a failed read of the stack.
    UnwindReadFailed = 21,
    /// Samples whose user stack was walked by unwind tables.
    UnwindWalks = 22,
    /// Waits off the CPU of at least `--off-cpu-min-us`, counted when the thread ran again.
    OffCpuWaits = 23,
    /// Waits off the CPU shorter than `--off-cpu-min-us`: timed, not recorded.
    OffCpuShort = 24,
    /// Off-CPU records written with their stacks (one per wait, when the thread ran again).
    OffCpuRecords = 25,
    /// Threads whose waits could not be timed: the map of waiting threads was full.
    OffCpuThreadsFull = 26,
    /// Long waits recorded without stacks: the thread left the CPU at a place whose last wait
    /// was short, so nothing was read ([`UNSTACKED_WAIT`]).
    OffCpuUnstacked = 27,
    /// Threads that began to be timed, and that were forgotten when they exited: the
    /// difference is the threads the kernel times now.
    OffCpuThreadsAdded = 28,
    OffCpuThreadsRemoved = 29,
    /// Waits whose stacks were read but not kept for their record: the map of what parked
    /// records name was full (`OFF_CPU_PARKED_<half>`); recorded without stacks.
    OffCpuParkedFull = 30,
}

/// Number of [`Counter`] slots.
pub const COUNTER_COUNT: u32 = 31;

impl Counter {
    /// All counters, in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::Samples,
        Counter::Filtered,
        Counter::Idle,
        Counter::KernelStackFailed,
        Counter::UserStackFailed,
        Counter::StacksMapFull,
        Counter::CountsMapFull,
        Counter::ProcessesMapFull,
        Counter::EventsLost,
        Counter::Internal,
        Counter::TlsReadFailed,
        Counter::RecordReadFailed,
        Counter::TraceLimit,
        Counter::ContextsMapFull,
        Counter::Traced,
        Counter::TaskReadFailed,
        Counter::GoLabelsReadFailed,
        Counter::GoLabelsCut,
        Counter::UserStackTruncated,
        Counter::UnwindUnsupported,
        Counter::UnwindTablePending,
        Counter::UnwindReadFailed,
        Counter::UnwindWalks,
        Counter::OffCpuWaits,
        Counter::OffCpuShort,
        Counter::OffCpuRecords,
        Counter::OffCpuThreadsFull,
        Counter::OffCpuUnstacked,
        Counter::OffCpuThreadsAdded,
        Counter::OffCpuThreadsRemoved,
        Counter::OffCpuParkedFull,
    ];

    /// A short snake_case name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Samples => "samples",
            Counter::Filtered => "filtered",
            Counter::Idle => "idle",
            Counter::KernelStackFailed => "kernel_stack_failed",
            Counter::UserStackFailed => "user_stack_failed",
            Counter::StacksMapFull => "stacks_map_full",
            Counter::CountsMapFull => "counts_map_full",
            Counter::ProcessesMapFull => "processes_map_full",
            Counter::EventsLost => "events_lost",
            Counter::Internal => "internal",
            Counter::TlsReadFailed => "tls_read_failed",
            Counter::RecordReadFailed => "record_read_failed",
            Counter::TraceLimit => "trace_limit",
            Counter::ContextsMapFull => "contexts_map_full",
            Counter::Traced => "traced",
            Counter::TaskReadFailed => "task_read_failed",
            Counter::GoLabelsReadFailed => "go_labels_read_failed",
            Counter::GoLabelsCut => "go_labels_cut",
            Counter::UserStackTruncated => "user_stack_truncated",
            Counter::UnwindUnsupported => "unwind_unsupported",
            Counter::UnwindTablePending => "unwind_table_pending",
            Counter::UnwindReadFailed => "unwind_read_failed",
            Counter::UnwindWalks => "unwind_walks",
            Counter::OffCpuWaits => "off_cpu_waits",
            Counter::OffCpuShort => "off_cpu_short",
            Counter::OffCpuRecords => "off_cpu_records",
            Counter::OffCpuThreadsFull => "off_cpu_threads_full",
            Counter::OffCpuUnstacked => "off_cpu_unstacked",
            Counter::OffCpuThreadsAdded => "off_cpu_threads_added",
            Counter::OffCpuThreadsRemoved => "off_cpu_threads_removed",
            Counter::OffCpuParkedFull => "off_cpu_parked_full",
        }
    }
}

/// Map names, shared so that userspace cannot misspell them.
pub mod maps {
    pub const COUNTS: [&str; 2] = ["COUNTS_0", "COUNTS_1"];
    /// Stacks by depth class ([`super::SHORT_STACK_DEPTH`], [`super::MEDIUM_STACK_DEPTH`],
    /// [`super::MAX_STACK_DEPTH`]), per half.
    pub const SHORT_STACKS: [&str; 2] = ["STACKS_SHORT_0", "STACKS_SHORT_1"];
    pub const MEDIUM_STACKS: [&str; 2] = ["STACKS_MEDIUM_0", "STACKS_MEDIUM_1"];
    pub const LONG_STACKS: [&str; 2] = ["STACKS_LONG_0", "STACKS_LONG_1"];
    pub const ACTIVE: &str = "ACTIVE";
    pub const TARGETS: &str = "TARGETS";
    pub const TARGET_CGROUPS: &str = "TARGET_CGROUPS";
    pub const PROCESSES: &str = "PROCESSES";
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const TLS_TARGETS: &str = "TLS_TARGETS";
    pub const CONTEXTS: [&str; 2] = ["CONTEXTS_0", "CONTEXTS_1"];
    pub const TRACES: [&str; 2] = ["TRACES_0", "TRACES_1"];
    pub const GO_TARGETS: &str = "GO_TARGETS";
    pub const GO_LABELS: [&str; 2] = ["GO_LABELS_0", "GO_LABELS_1"];
    pub const TAIL_CALLS: &str = "TAIL_CALLS";
    pub const UNWIND_PROCS: &str = "UNWIND_PROCS";
    pub const UNWIND_RANGES: &str = "UNWIND_RANGES";
    pub const UNWIND_TABLES: &str = "UNWIND_TABLES";
    pub const UNWIND_PAGES: &str = "UNWIND_PAGES";
    pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
    pub const UNWIND_RULES: &str = "UNWIND_RULES";
    pub const UNWIND_GENERATION: &str = "UNWIND_GENERATION";
    pub const UNWIND_STALE: &str = "UNWIND_STALE";
    pub const EPOCH: &str = "EPOCH";
    pub const OFF_CPU_COUNTS: [&str; 2] = ["OFF_CPU_COUNTS_0", "OFF_CPU_COUNTS_1"];
    pub const OFF_CPU_THREADS: &str = "OFF_CPU_THREADS";
    pub const OFF_CPU_TAIL_CALLS: &str = "OFF_CPU_TAIL_CALLS";
    pub const OFF_CPU_PARKED: [&str; 2] = ["OFF_CPU_PARKED_0", "OFF_CPU_PARKED_1"];
    /// Per-CPU scratch maps with one slot per kind of program that may interrupt another
    /// ([`SLOT_SAMPLE`](super::SLOT_SAMPLE), [`SLOT_OFF_CPU`](super::SLOT_OFF_CPU)).
    pub const PER_CPU_SCRATCH: [&str; 9] = [
        "SCRATCH",
        "PROCESS_MEMO",
        "CONTEXT_SCRATCH",
        "LAST_CONTEXT",
        "GO_SCRATCH",
        "GO_RECENT",
        "UNWIND_WALK",
        "UNWIND_WINDOW",
        "UNWIND_RULE_CACHE",
    ];
}

/// Low bits of an `EPOCH` value: whose write it is. The kernel writes its clock above the CPU
/// number, userspace a counter above [`EPOCH_USERSPACE`]: no two writes leave the same value.
pub const EPOCH_WRITER_BITS: u32 = 16;
/// The writer bits of userspace's `EPOCH` writes (the kernel's are the CPU, below it).
pub const EPOCH_USERSPACE: u64 = 1 << (EPOCH_WRITER_BITS - 1);

/// Program names in the BPF object.
pub mod programs {
    pub const SAMPLE: &str = "sample";
    pub const EXEC: &str = "sched_process_exec";
    pub const EXIT: &str = "sched_process_exit";
    /// Tail-called by `sample` (index [`super::TAIL_GO_LABEL_SLOT`] of `TAIL_CALLS`).
    pub const GO_LABEL_SLOT: &str = "go_label_slot";
    /// Tail-called by `sample` (index [`super::TAIL_UNWIND_USER`] of `TAIL_CALLS`).
    pub const UNWIND_USER: &str = "unwind_user";
    pub const OFF_CPU_SWITCH: &str = "off_cpu_switch";
    pub const GO_LABEL_SLOT_OFF_CPU: &str = "go_label_slot_off_cpu";
    pub const UNWIND_USER_OFF_CPU: &str = "unwind_user_off_cpu";
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain #[repr(C)] data without padding holes or pointers.
    unsafe impl aya::Pod for SampleKey {}
    unsafe impl aya::Pod for SampleValue {}
    unsafe impl aya::Pod for OffCpuThread {}
    unsafe impl<const N: usize> aya::Pod for Frames<N> {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for TaskOffsets {}
    unsafe impl aya::Pod for ProcessEvent {}
    unsafe impl aya::Pod for TraceContext {}
    unsafe impl aya::Pod for TlsLocation {}
    unsafe impl aya::Pod for GoTarget {}
    unsafe impl aya::Pod for GoLabels {}
    unsafe impl aya::Pod for unwind::KernelRow {}
    unsafe impl aya::Pod for unwind::PageEntry {}
    unsafe impl aya::Pod for unwind::UnwindTable {}
    unsafe impl aya::Pod for unwind::KernelRule {}
    unsafe impl aya::Pod for unwind::ProcessRanges {}
    unsafe impl aya::Pod for unwind::ProcessSlot {}
    unsafe impl aya::Pod for unwind::CodeRange {}
}
