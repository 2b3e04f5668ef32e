//! Reads the pprof labels of the goroutine running on the sampled thread of a Go process
//! (`pprof.Do(ctx, pprof.Labels("trace_id", ...), f)`), the Go counterpart of the thread-local
//! trace context.
//!
//! Userspace finds, per Go executable, where `g` is relative to the thread pointer and the
//! offsets of `g.m`, `m.curg` and `g.labels` for its release, and writes them to `GO_TARGETS`;
//! this side only follows: thread pointer -> `g` -> `g.m.curg` (the user goroutine, also while
//! the thread runs on its scheduler stack) -> `labels` -> the label set, a `map[string]string`
//! (Go 1.19-1.23: its first bucket) or a slice of pairs (Go 1.24+). At most `GO_MAX_LABELS`
//! pairs, keys cut to `GO_MAX_KEY` and values to `GO_MAX_VALUE` bytes; what is cut is counted.
//! A label set with a `trace_id` is admitted by `TRACES_<half>` like a thread context and
//! stored once per interval under its hash (with `GO_CONTEXT_BIT` set) in `GO_LABELS_<half>`.
//!
//! Every read of the target's memory has a constant size, and the slots are unrolled with
//! constant indices: Linux 5.10 and 6.1 refuse a read whose size the verifier cannot bound
//! from below, and reads sized by the strings' lengths, checked slot by slot, made the
//! verifier walk hundreds of thousands of instructions. A string is read as a window of its
//! buffer's size from its start or, where that window runs into an unmapped page, the window
//! ending at its end (`GoLabels::keys_at_end`); the hash covers only the string's own bytes. A
//! string of the executable's read-only data that neither window reaches (a literal whose page
//! the process never touched) is kept as its address, for userspace to read from the file
//! (`GoLabels::literal`).
//!
//! Label sets are immutable, so each CPU remembers what the last few it read came to, by the
//! set's address and the process's garbage-collection generation (`GoMemo`): a goroutine
//! sampled again under the same set is recorded without reading it (the reads of the set, its
//! pairs and its strings are what labels cost: cold pages, not instructions).

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_get_current_task_btf, bpf_probe_read_user as probe_read_user_raw, bpf_task_pt_regs,
        },
    },
    macros::{map, perf_event, raw_tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{PerfEventContext, RawTracePointContext},
};
use profiler_common::{
    Config, Counter, GO_CONTEXT_BIT, GO_LABELS_MAP, GO_LABELS_SLICE, GO_MAX_KEY, GO_MAX_LABELS,
    GO_MAX_VALUE, GoLabels, GoTarget, NO_CONTEXT, SampleKey, SampleValue, TAIL_GO_LABEL_SLOT,
};

use crate::{
    count,
    origin::{Origin, record},
    trace_context,
};

/// Go processes whose labels are read: tgid -> where.
#[map]
static GO_TARGETS: HashMap<u32, GoTarget> = HashMap::with_max_entries(16384, 0);

/// Distinct label sets of the interval, by hash. Sized by userspace.
#[map]
static GO_LABELS_0: HashMap<u64, GoLabels> = HashMap::with_max_entries(1024, 0);
#[map]
static GO_LABELS_1: HashMap<u64, GoLabels> = HashMap::with_max_entries(1024, 0);

/// A map bucket of `map[string]string`: 8 top-hash bytes, 8 keys, 8 values (string headers),
/// in words.
const BUCKET_WORDS: usize = 1 + 8 * 2 + 8 * 2;
/// `tophash` values below this mark an empty or evacuated slot (runtime `minTopHash`).
const MIN_TOP_HASH: u64 = 5;
/// A slice element, `{key, value string}`, in words.
const PAIR_WORDS: usize = 4;

#[repr(C)]
struct GoScratch {
    labels: GoLabels,
    /// Label sets read before on this CPU, and where the next goes (modulo [`MEMO_SETS`]).
    memo: [GoMemo; MEMO_SETS],
    memo_next: u64,
    /// The generation read for this sample, when the set may be remembered under it;
    /// [`NO_GENERATION`] otherwise.
    memo_generation: u64,
    /// Where the process's generation is (`GoTarget::gc_generation`; 0: unknown, no memo).
    generation_at: u64,
    /// The label set's address, read by `start`, and `g.labels`'s offset to read it again.
    labels_at: u64,
    g_labels: u64,
    /// `GoTarget::labels_kind`.
    labels_kind: u32,
    _pad3: u32,
    /// A bucket, or the slice's first pairs.
    raw: [u64; BUCKET_WORDS],
    /// One pair of a slice read alone (the slice ends near an unmapped page).
    pair: [u64; PAIR_WORDS],
    /// Two words of a header read at once: a slice's pointer and length, or a map's
    /// flags-and-B word and bucket pointer.
    words: [u64; 2],
    /// Where slot 0's key and value headers are in `raw`, and the step from slot to slot, in
    /// words.
    keys_at: u32,
    values_at: u32,
    step: u32,
    _pad: u32,
    /// The hash of the slots read so far.
    hash: u64,
    /// The `trace_id` value's hash (never 0), or 0 when there is none.
    trace_key: u64,
    /// Per slot, the literal key read last in this process (see `GoTarget::readonly_start`):
    /// its pointer (0: none), length and hash; its bytes are still in `labels.keys`.
    key_ptr: [u64; GO_MAX_LABELS],
    key_len: [u64; GO_MAX_LABELS],
    key_hash: [u64; GO_MAX_LABELS],
    /// Whose keys those are: the process and its generation.
    cache_pid: u32,
    _pad2: u32,
    cache_gen: u64,
    /// The sampled process's read-only data, `[start, end)`.
    readonly: [u64; 2],
    /// The goroutine whose labels these are, and the interrupted user code's stack pointer (0
    /// for a sample taken in the kernel: `go_label_slot` then asks the kernel for the one saved
    /// at entry); `stack_checked` once `go_label_slot` compared them.
    owner: u64,
    user_sp: u64,
    stack_checked: u64,
    /// The sample waiting for its labels: its key, value and interval.
    key: SampleKey,
    value: SampleValue,
    interval: u32,
    /// The slot the next `go_label_slot` call reads.
    next_slot: u32,
}

#[map]
static GO_SCRATCH: PerCpuArray<GoScratch> = PerCpuArray::with_max_entries(2, 0);

/// The label sets this CPU stored last, and in which interval: a CPU that runs a few labelled
/// goroutines in turn (requests interleaved on one thread) stores each set once per interval,
/// not at every switch. With one set remembered, a fixture of three labelled goroutines on two
/// CPUs stored at 19% of its samples, 785 ns each (bucket lock and lookups of two hash maps).
#[repr(C)]
#[derive(Clone, Copy)]
struct RecentLabels {
    interval: u32,
    /// Where the next set stored goes in `hashes` (modulo [`RECENT_SETS`]).
    next: u32,
    hashes: [u64; RECENT_SETS],
}

const RECENT_SETS: usize = 4;

/// What one label set came to: [`GoScratch::memo`].
#[repr(C)]
#[derive(Clone, Copy)]
struct GoMemo {
    /// The set's address (0: an empty entry), in the process `pid` of generation `pid_gen`.
    labels: u64,
    pid_gen: u64,
    pid: u32,
    /// The process's garbage-collection generation when the set was read.
    generation: u32,
    /// The interval the set was stored in (once per interval, like `GO_RECENT`).
    interval: u32,
    /// Whether labels were cut (counted again at each sample, as a read would).
    cut: u32,
    /// The sample's context: the set's hash, or `NO_CONTEXT` (no `trace_id`).
    context: u64,
}

/// Label sets remembered per CPU: as many as `GO_RECENT` stores once per interval.
const MEMO_SETS: usize = RECENT_SETS;

/// [`GoScratch::memo_generation`] when the set just read must not be remembered.
const NO_GENERATION: u64 = u64::MAX;

#[map]
static GO_RECENT: PerCpuArray<RecentLabels> = PerCpuArray::with_max_entries(2, 0);

/// The seed of a string's hash when it is kept by address (see `read_string`).
const LITERAL_HASH: u64 = 0x6c69_7465_7261_6c21;

/// `trace_id` as a little-endian word, to find the key with one comparison.
const TRACE_ID_KEY: u64 = u64::from_le_bytes(*b"trace_id");

type Failure = Option<Counter>;

/// Whether `pid` is a Go process whose labels userspace located.
#[inline(always)]
pub(crate) fn is_target(pid: u32) -> bool {
    GO_TARGETS.get_ptr(pid).is_some()
}

/// Starts reading the current goroutine's labels for the sample `key`: finds the label set,
/// then a tail call into [`go_label_slot`], which reads its header and one slot per call and
/// records the sample with its labels. Returns only when there is nothing to read (not a
/// Go target, no labels) or on a failure (counted): the caller records the sample without.
///
/// One slot per program keeps each program small for every verifier: read in one program,
/// eight slots of string reads made Linux 6.1 walk several hundred thousand instructions.
#[inline(always)]
pub(crate) fn start<O: Origin>(
    ctx: &O,
    pid: u32,
    interval: u32,
    config: &Config,
    key: &SampleKey,
    value: SampleValue,
) {
    let Some(target) = GO_TARGETS.get_ptr(pid) else {
        return;
    };
    // SAFETY: map value pointer returned by the kernel.
    let target = unsafe { *target };
    let Some(scratch) = GO_SCRATCH.get_ptr_mut(O::SLOT) else {
        count(Counter::Internal);
        return;
    };
    // SAFETY: per-CPU map value, valid for the duration of the program and its tail calls
    // (perf_event programs do not nest on one CPU).
    let scratch = unsafe { &mut *scratch };
    let (labels, owner) = match label_set(ctx, &target, config) {
        Ok(found) => found,
        Err(Some(counter)) => {
            count(counter);
            return;
        }
        Err(None) => return,
    };
    scratch.labels_at = labels;
    scratch.owner = owner;
    scratch.g_labels = u64::from(target.g_labels);
    scratch.labels_kind = target.labels_kind;
    scratch.generation_at = target.gc_generation;
    scratch.readonly = [target.readonly_start, target.readonly_end];
    scratch.user_sp = ctx.user_sp();
    scratch.stack_checked = 0;
    scratch.key = *key;
    scratch.value = value;
    scratch.interval = interval;
    scratch.hash = 0x1319_8a2e_0370_7344;
    scratch.trace_key = 0;
    // SAFETY: a tail call with this program's own context; it returns only on failure.
    unsafe { O::tail_calls().tail_call(ctx, TAIL_GO_LABEL_SLOT) };
    count(Counter::Internal);
}

/// At the first call, checks the set is the sampled goroutine's and records the sample at once
/// when this CPU read the same set before; else reads its header. Then reads one slot of the
/// set, and the next slot by a tail call into itself; after the last, stores the label set and
/// records the sample under it.
#[perf_event]
pub fn go_label_slot(ctx: PerfEventContext) -> u32 {
    label_slot(&ctx);
    0
}

/// [`go_label_slot`] for an off-CPU record.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn go_label_slot_off_cpu(ctx: RawTracePointContext) -> i32 {
    label_slot(&ctx);
    0
}

#[inline(always)]
fn label_slot<O: Origin>(ctx: &O) {
    let Some(scratch) = GO_SCRATCH.get_ptr_mut(O::SLOT) else {
        count(Counter::Internal);
        return;
    };
    // SAFETY: per-CPU map value that `start` filled on this CPU for this sample.
    let scratch = unsafe { &mut *scratch };
    // Here, not in `start`: a branch there multiplies the states of all `sample` verifies
    // after it (59,419 instructions instead of 15,544 on 6.18).
    let (pid, generation) = (scratch.key.pid, scratch.key.pid_gen);
    if scratch.cache_pid != pid || scratch.cache_gen != generation || generation == 0 {
        forget_keys(scratch);
        scratch.cache_pid = pid;
        scratch.cache_gen = generation;
    }
    // Labels name the goroutine whose stack the sample is on, or none: while the scheduler
    // switches goroutines, the thread's g (or m.curg) is already the next one and the stack
    // still the last one's (a sample in gogo named trace A's hot function under trace B). On
    // the system stack (g0 working for m.curg) the labels are dropped too.
    // A sample taken in the kernel is checked against the user stack pointer saved at kernel
    // entry: the CI matrix (6.1 under TCG) filed trace A's hot function under trace B once
    // more after the user-mode check came in, as a sample in the kernel can catch the thread
    // between `execute` setting `m.curg` and `gogo`.
    if scratch.stack_checked == 0 {
        scratch.stack_checked = 1;
        let sp = match scratch.user_sp {
            0 => kernel_entry_sp(&crate::config()),
            sp => sp,
        };
        if sp == 0 {
            finish::<O>(scratch, NO_CONTEXT);
            return;
        }
        if !read_into(&mut scratch.words, scratch.owner) {
            count(Counter::GoLabelsReadFailed);
            finish::<O>(scratch, NO_CONTEXT);
            return;
        }
        let [low, high] = scratch.words;
        if sp < low || sp >= high {
            finish::<O>(scratch, NO_CONTEXT);
            return;
        }
        if let Some((context, cut)) = remembered(scratch) {
            if cut != 0 {
                count(Counter::GoLabelsCut);
            }
            finish::<O>(scratch, context);
            return;
        }
        match read_header(scratch) {
            Ok(()) => {}
            Err(failure) => {
                if let Some(counter) = failure {
                    count(counter);
                }
                finish::<O>(scratch, NO_CONTEXT);
                return;
            }
        }
        scratch.next_slot = next_present(&scratch.labels, 0);
        // The slots in calls of their own: read in this one too, they would make the verifier
        // walk the header's paths once per slot's (43,670 instructions instead of 6,308).
        if (scratch.next_slot as usize) < GO_MAX_LABELS {
            // SAFETY: a tail call with this program's own context; returns only on failure.
            unsafe { O::tail_calls().tail_call(ctx, TAIL_GO_LABEL_SLOT) };
            count(Counter::Internal);
            finish::<O>(scratch, NO_CONTEXT);
            return;
        }
    }
    let slot = scratch.next_slot as usize;
    if slot < GO_MAX_LABELS {
        if read_slot(scratch, slot) != 0 {
            count(Counter::GoLabelsReadFailed);
            finish::<O>(scratch, NO_CONTEXT);
            return;
        }
        scratch.next_slot = next_present(&scratch.labels, slot + 1);
        if (scratch.next_slot as usize) < GO_MAX_LABELS {
            // SAFETY: a tail call with this program's own context; returns only on failure.
            unsafe { O::tail_calls().tail_call(ctx, TAIL_GO_LABEL_SLOT) };
            count(Counter::Internal);
            finish::<O>(scratch, NO_CONTEXT);
            return;
        }
    }
    let context = match store(scratch, O::SLOT) {
        Ok(hash) => hash,
        Err(Some(counter)) => {
            count(counter);
            finish::<O>(scratch, NO_CONTEXT);
            return;
        }
        Err(None) => NO_CONTEXT,
    };
    remember(scratch, context);
    finish::<O>(scratch, context);
}

/// The context and cut flag of the label set at `scratch.labels_at` when this CPU read it
/// before, in this process and interval and with no garbage collection since. Else sets
/// `memo_generation` for [`remember`] when the set may be remembered.
///
/// The set was reachable when the generation was read: a collection that frees it, after
/// which the runtime may put another set at its address, changes the generation first
/// (`mheap_.sweepgen` goes up by two before the sweep that frees it). The address was read in
/// `start`, before this reading of the generation, so a hit is the same set; for a miss the
/// address is read again after the generation, and the set is remembered only when the
/// goroutine still holds it.
#[inline(always)]
fn remembered(scratch: &mut GoScratch) -> Option<(u64, u32)> {
    scratch.memo_generation = NO_GENERATION;
    if scratch.generation_at == 0 {
        return None;
    }
    let mut generation = 0u32;
    if !read_into(&mut generation, scratch.generation_at) {
        return None;
    }
    let (pid, pid_gen) = (scratch.key.pid, scratch.key.pid_gen);
    for at in 0..MEMO_SETS {
        let entry = &scratch.memo[at];
        if entry.labels == scratch.labels_at
            && entry.pid == pid
            && entry.pid_gen == pid_gen
            && entry.generation == generation
            && entry.interval == scratch.interval
        {
            return Some((entry.context, entry.cut));
        }
    }
    if user_word(scratch.owner.wrapping_add(scratch.g_labels)) == Ok(scratch.labels_at) {
        scratch.memo_generation = u64::from(generation);
    }
    None
}

/// Remembers what the label set just read came to (see [`remembered`]).
#[inline(always)]
fn remember(scratch: &mut GoScratch, context: u64) {
    let generation = scratch.memo_generation;
    if generation == NO_GENERATION || scratch.key.pid_gen == 0 {
        return;
    }
    let at = (scratch.memo_next as usize) % MEMO_SETS;
    scratch.memo_next = scratch.memo_next.wrapping_add(1);
    scratch.memo[at] = GoMemo {
        labels: scratch.labels_at,
        pid_gen: scratch.key.pid_gen,
        pid: scratch.key.pid,
        generation: generation as u32,
        interval: scratch.interval,
        cut: u32::from(scratch.labels.cut),
        context,
    };
}

/// Records the waiting sample under `context`.
#[inline(always)]
fn finish<O: Origin>(scratch: &GoScratch, context: u64) {
    let mut key = scratch.key;
    key.context = context;
    if let Err(counter) = record::<O>(scratch.interval, &key, scratch.value) {
        count(counter);
    }
}

/// The first slot from `from` on that holds a pair, or [`GO_MAX_LABELS`].
#[inline(always)]
fn next_present(labels: &GoLabels, from: usize) -> u32 {
    let mut slot = from;
    while slot < GO_MAX_LABELS && slot < usize::from(labels.count) {
        if labels.present & (1 << slot) != 0 {
            return slot as u32;
        }
        slot += 1;
    }
    GO_MAX_LABELS as u32
}

/// A user word at `address`; a failed read is counted as a failed label read.
#[inline(always)]
fn user_word(address: u64) -> Result<u64, Failure> {
    // SAFETY: a checked user-memory read; failures are returned.
    unsafe { bpf_probe_read_user(address as *const u64) }
        .map_err(|_| Some(Counter::GoLabelsReadFailed))
}

/// `size_of::<T>()` bytes of the target at `address` into `buf`: true when read.
#[inline(always)]
fn read_into<T>(buf: &mut T, address: u64) -> bool {
    let size = core::mem::size_of::<T>() as u32;
    // SAFETY: exactly the size of `buf`, a constant; a checked user read (zero-filled on
    // failure).
    unsafe { probe_read_user_raw((buf as *mut T).cast(), size, address as *const _) >= 0 }
}

/// The running goroutine (maybe `g0`): from the thread's TLS, or (aarch64) from `x28` of the
/// user code; `Err(None)` where the context does not hold it (a tick in the kernel).
#[inline(always)]
fn current_g<O: Origin>(ctx: &O, target: &GoTarget, config: &Config) -> Result<u64, Failure> {
    if target.g_register != 0 {
        return ctx.go_register().ok_or(None);
    }
    let thread_pointer = trace_context::thread_pointer(config)?;
    user_word(thread_pointer.wrapping_add(target.tls_offset as u64))
}

/// The user stack pointer the current task entered the kernel with, 0 when this kernel cannot
/// tell (`bpf_task_pt_regs` came in Linux 5.15; the read-only config turns the call off before
/// the verifier sees it).
#[inline(always)]
fn kernel_entry_sp(config: &Config) -> u64 {
    if config.task_pt_regs == 0 {
        return 0;
    }
    // SAFETY: helpers without preconditions; the registers are read with a checked kernel read.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    #[cfg(bpf_target_arch = "x86_64")]
    let sp = unsafe { core::ptr::addr_of!((*regs).rsp) };
    #[cfg(not(bpf_target_arch = "x86_64"))]
    let sp = unsafe { core::ptr::addr_of!((*regs).sp) };
    // SAFETY: a checked kernel read.
    unsafe { bpf_probe_read_kernel(sp) }.unwrap_or(0)
}

/// The label set's pointer and the goroutine it belongs to, or `Err(None)` when it has none.
///
/// `g.labels` first: set, `g` is the user goroutine (the runtime's own `g0` and `gsignal`
/// never carry labels: `runtime_setProfLabel` sets them on the caller's `g`), and two reads
/// are saved on every labelled sample. Unset, `g` may be `g0` running for the user goroutine
/// (a system stack): that is `g.m.curg`.
#[inline(always)]
fn label_set<O: Origin>(
    ctx: &O,
    target: &GoTarget,
    config: &Config,
) -> Result<(u64, u64), Failure> {
    let g = current_g(ctx, target, config)?;
    if g == 0 {
        return Err(None);
    }
    let labels = user_word(g.wrapping_add(u64::from(target.g_labels)))?;
    if labels != 0 {
        return Ok((labels, g));
    }
    let m = user_word(g.wrapping_add(u64::from(target.g_m)))?;
    if m == 0 {
        return Err(None);
    }
    let curg = user_word(m.wrapping_add(u64::from(target.m_curg)))?;
    if curg == 0 || curg == g {
        return Err(None);
    }
    let labels = user_word(curg.wrapping_add(u64::from(target.g_labels)))?;
    if labels == 0 {
        return Err(None);
    }
    Ok((labels, curg))
}

/// Reads the header of the label set `start` found (the map's first bucket, or the slice's
/// first pairs) into `scratch`; `Err(None)` for an empty set, which is not a failure.
#[inline(always)]
fn read_header(scratch: &mut GoScratch) -> Result<(), Failure> {
    let labels = scratch.labels_at;
    let out = &mut scratch.labels;
    out.cut = 0;
    out.keys_at_end = 0;
    out.values_at_end = 0;
    out.keys_literal = 0;
    out.values_literal = 0;
    // Where each slot's string headers are in `raw`, as (key, value) offsets by slot.
    let (keys_at, values_at, step) = match scratch.labels_kind {
        GO_LABELS_MAP => {
            // labels -> *labelMap -> hmap { count int; flags, B uint8; ...; buckets @16 }
            let hmap = user_word(labels)?;
            if hmap == 0 {
                return Err(None);
            }
            if !read_into(&mut scratch.words, hmap.wrapping_add(8)) {
                return Err(Some(Counter::GoLabelsReadFailed));
            }
            let [flags_and_b, buckets] = scratch.words;
            if buckets == 0 {
                return Err(None);
            }
            // More than one bucket means more than 8 labels: the first bucket is read.
            if (flags_and_b >> 8) & 0xff != 0 {
                out.cut = 1;
            }
            if !read_into(&mut scratch.raw, buckets) {
                return Err(Some(Counter::GoLabelsReadFailed));
            }
            let top_hashes = scratch.raw[0];
            let mut present = 0u8;
            for slot in 0..GO_MAX_LABELS {
                if (top_hashes >> (slot * 8)) & 0xff >= MIN_TOP_HASH {
                    present |= 1 << slot;
                }
            }
            out.present = present;
            out.count = GO_MAX_LABELS as u8;
            (1, 1 + 8 * 2, 2)
        }
        GO_LABELS_SLICE => {
            // labels -> labelMap { list []label } -> { ptr, len, cap }
            if !read_into(&mut scratch.words, labels) {
                return Err(Some(Counter::GoLabelsReadFailed));
            }
            let [list, len] = scratch.words;
            if list == 0 || len == 0 {
                return Err(None);
            }
            if len > GO_MAX_LABELS as u64 {
                out.cut = 1;
            }
            let slots = len.min(GO_MAX_LABELS as u64) as u32;
            out.present = ((1u32 << slots) - 1) as u8;
            out.count = slots as u8;
            read_slice(scratch, list, slots)?;
            (0, 2, PAIR_WORDS)
        }
        _ => return Err(Some(Counter::Internal)),
    };

    scratch.keys_at = keys_at as u32;
    scratch.values_at = values_at as u32;
    scratch.step = step as u32;
    Ok(())
}

/// Stores the label set read into `scratch` in the interval's map (once per CPU and label set)
/// and returns its hash; `Err(None)` without a `trace_id`, which is not a failure.
#[inline(always)]
fn store(scratch: &GoScratch, slot: u32) -> Result<u64, Failure> {
    let interval = scratch.interval;
    let trace_key = scratch.trace_key;
    let hash = scratch.hash;
    let out = &scratch.labels;
    if out.cut != 0 {
        count(Counter::GoLabelsCut);
    }
    let mut hash = mix(hash, u64::from(out.present));
    let mut trace_key = trace_key;
    if out.keys_literal | out.values_literal != 0 {
        // Strings kept by address name this process's executable: not another's set.
        hash = mix(mix(hash, u64::from(scratch.key.pid)), scratch.key.pid_gen);
        // A key kept by address may be `trace_id`: userspace reads it and decides; the set
        // counts against the trace limit as a trace of its own.
        if trace_key == 0 && out.keys_literal != 0 {
            trace_key = hash | 1;
        }
    }
    // Without a trace ID the labels name no trace: userspace would drop them.
    if trace_key == 0 {
        return Err(None);
    }
    let hash = hash | GO_CONTEXT_BIT;

    let recent = GO_RECENT.get_ptr_mut(slot).ok_or(Some(Counter::Internal))?;
    // SAFETY: per-CPU map value, valid for the duration of the program.
    let recent = unsafe { &mut *recent };
    if recent.interval == interval {
        for slot in 0..RECENT_SETS {
            if recent.hashes[slot] == hash {
                return Ok(hash);
            }
        }
    } else {
        recent.interval = interval;
        recent.hashes = [0; RECENT_SETS];
    }
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&trace_key.to_le_bytes());
    // Marks the key as a Go label's hash, apart from the binary IDs of thread contexts.
    trace_id[8..].copy_from_slice(b"golabels");
    trace_context::admit_trace(interval, &trace_id)?;
    let stored = if interval & 1 == 0 {
        &GO_LABELS_0
    } else {
        &GO_LABELS_1
    };
    trace_context::insert_once(stored, hash, out)?;
    recent.hashes[recent.next as usize % RECENT_SETS] = hash;
    recent.next = recent.next.wrapping_add(1);
    Ok(hash)
}

/// Reads slot `slot`'s key and value into the label set and mixes them into the scratch's
/// hash; nonzero on a failed read.
///
/// A function of its own, called once per slot: its state lives in the scratch map, so the
/// stack stays small and the verifier checks one slot's code with no state carried over.
#[inline(always)]
fn read_slot(scratch: &mut GoScratch, slot: usize) -> u32 {
    let slot = slot & (GO_MAX_LABELS - 1);
    if scratch.labels.present & (1 << slot) == 0 {
        return 0;
    }
    let step = scratch.step as usize;
    let (Some(key), Some(value)) = (
        string_header(&scratch.raw, scratch.keys_at as usize + slot * step),
        string_header(&scratch.raw, scratch.values_at as usize + slot * step),
    ) else {
        return 1;
    };
    let Ok((key_len, key_hash)) = read_key(scratch, slot, key) else {
        return 1;
    };
    let readonly = scratch.readonly;
    let out = &mut scratch.labels;
    let Ok((value_len, value_hash)) = read_string(
        &mut out.values[slot],
        StringRead {
            pointer: value.0,
            len: value.1,
            slot,
            readonly,
            at_end: &mut out.values_at_end,
            literal: &mut out.values_literal,
            cut: &mut out.cut,
        },
    ) else {
        return 1;
    };
    out.key_lens[slot] = key_len as u8;
    out.value_lens[slot] = value_len as u8;
    if key_len == 8
        && out.keys_literal & (1 << slot) == 0
        && key_word(&out.keys[slot], out.keys_at_end & (1 << slot) != 0) == TRACE_ID_KEY
    {
        scratch.trace_key = value_hash | 1;
    }
    let mut hash = mix(
        scratch.hash,
        (slot as u64) << 16 | (key_len as u64) << 8 | value_len as u64,
    );
    hash = mix(hash, key_hash);
    scratch.hash = mix(hash, value_hash);
    0
}

/// Slot `slot`'s key `(pointer, length)` into the label set: the bytes already there when it is
/// the literal this slot held last in this process (a string in the executable's read-only
/// data cannot have changed), else read, and remembered when it is such a literal. Literal
/// keys are the rule (`pprof.Labels("trace_id", id)`): one read fewer per label.
#[inline(always)]
fn read_key(
    scratch: &mut GoScratch,
    slot: usize,
    key: (u64, u64),
) -> Result<(usize, u64), Failure> {
    let (pointer, len) = key;
    let literal = pointer >= scratch.readonly[0]
        && pointer < scratch.readonly[1]
        && len <= scratch.readonly[1] - pointer
        && len <= GO_MAX_KEY as u64;
    if literal && pointer == scratch.key_ptr[slot] && len == scratch.key_len[slot] {
        return Ok((len as usize, scratch.key_hash[slot]));
    }
    scratch.key_ptr[slot] = 0;
    let readonly = scratch.readonly;
    let out = &mut scratch.labels;
    let (kept, hash) = read_string(
        &mut out.keys[slot],
        StringRead {
            pointer,
            len,
            slot,
            readonly,
            at_end: &mut out.keys_at_end,
            literal: &mut out.keys_literal,
            cut: &mut out.cut,
        },
    )?;
    // Only a key read from its start: a cached one is then where `GoLabels::key` looks.
    if literal && (out.keys_at_end | out.keys_literal) & (1 << slot) == 0 {
        scratch.key_ptr[slot] = pointer;
        scratch.key_len[slot] = len;
        scratch.key_hash[slot] = hash;
    }
    Ok((kept, hash))
}

/// Forgets the remembered keys (another process on this CPU): stores the compiler keeps as
/// they are (a `memset` call would cost the verifier its precision tracking before 6.4).
#[inline(always)]
fn forget_keys(scratch: &mut GoScratch) {
    let pointers = scratch.key_ptr.as_mut_ptr();
    for slot in 0..GO_MAX_LABELS {
        // SAFETY: within `key_ptr`.
        unsafe { core::ptr::write_volatile(pointers.add(slot), 0) };
    }
}

/// The slice's first `slots` pairs into `raw`: all eight at once, or, when that runs into an
/// unmapped page (a short slice at the end of its span), pair by pair.
#[inline(always)]
fn read_slice(scratch: &mut GoScratch, list: u64, slots: u32) -> Result<(), Failure> {
    if read_into(&mut scratch.raw, list) {
        return Ok(());
    }
    for slot in 0..GO_MAX_LABELS {
        if slot as u32 >= slots {
            break;
        }
        if !read_into(
            &mut scratch.pair,
            list.wrapping_add((slot * PAIR_WORDS * 8) as u64),
        ) {
            return Err(Some(Counter::GoLabelsReadFailed));
        }
        let at = slot * PAIR_WORDS;
        scratch.raw[at..at + PAIR_WORDS].copy_from_slice(&scratch.pair);
    }
    Ok(())
}

/// The Go string header (pointer, length) at word `at` of `raw`.
#[inline(always)]
fn string_header(raw: &[u64; BUCKET_WORDS], at: usize) -> Option<(u64, u64)> {
    if at + 1 >= BUCKET_WORDS {
        return None;
    }
    Some((raw[at], raw[at + 1]))
}

/// Where a string is and what [`read_string`] marks in the label set: `slot`'s bit in
/// `at_end` for a window read backwards or in `literal` for an address kept, and `cut` when
/// the string is longer than the buffer.
struct StringRead<'a> {
    pointer: u64,
    len: u64,
    slot: usize,
    /// The executable's read-only data, `[start, end)`.
    readonly: [u64; 2],
    at_end: &'a mut u8,
    literal: &'a mut u8,
    cut: &'a mut u8,
}

/// Reads the string as `buf`'s window (see the module's comment); returns the bytes kept and
/// their hash. A string in the read-only data that cannot be read (its page not in the
/// process's page tables, which a BPF program cannot fault in) is kept as its address, for
/// userspace to read from the file; anything else unreadable is a failure.
#[inline(always)]
fn read_string<const N: usize>(
    buf: &mut [u8; N],
    string: StringRead<'_>,
) -> Result<(usize, u64), Failure> {
    let StringRead {
        pointer, len, slot, ..
    } = string;
    if len == 0 {
        return Ok((0, 0));
    }
    let kept = if len > N as u64 {
        *string.cut = 1;
        N
    } else {
        len as usize
    };
    if read_into(buf, pointer) {
        return Ok((kept, words_hash(buf, kept)));
    }
    // A window inside a string longer than the buffer has no other to try.
    if len <= N as u64 && read_into(buf, pointer.wrapping_add(len).wrapping_sub(N as u64)) {
        *string.at_end |= 1 << slot;
        // A rare path: its hash differs from the forward one, and userspace merges equal
        // label sets by content anyway.
        return Ok((kept, words_hash(buf, N) ^ len));
    }
    let [start, end] = string.readonly;
    if pointer < start || pointer >= end || len > end - pointer {
        return Err(Some(Counter::GoLabelsReadFailed));
    }
    // SAFETY: the label buffers are 8-byte aligned and at least 8 bytes (assertions below).
    unsafe { buf.as_mut_ptr().cast::<u64>().write(pointer) };
    *string.literal |= 1 << slot;
    // By address: the same in every process of the executable, and `store` adds the process
    // to the set's hash, as another executable may hold another string there.
    Ok((kept, mix(mix(LITERAL_HASH, pointer), len)))
}

/// Word `index` of `buf` (the label buffers are 8-byte aligned: see the assertions below).
#[inline(always)]
fn word<const N: usize>(buf: &[u8; N], index: usize) -> u64 {
    if index >= N / 8 {
        return 0;
    }
    // SAFETY: in bounds (checked above) and aligned.
    unsafe { buf.as_ptr().cast::<u64>().add(index).read() }
}

/// The 8-byte key's word: the buffer's first, or its last when read backwards.
#[inline(always)]
fn key_word<const N: usize>(buf: &[u8; N], at_end: bool) -> u64 {
    word(buf, if at_end { N / 8 - 1 } else { 0 })
}

/// A hash of the first `len` bytes of `buf`, by words (the bytes past `len` in the last word
/// are masked: they are the target's memory after the string).
#[inline(always)]
fn words_hash<const N: usize>(buf: &[u8; N], len: usize) -> u64 {
    let mut hash: u64 = 0xa409_3822_299f_31d0;
    for index in 0..N / 8 {
        let at = index * 8;
        if at >= len {
            break;
        }
        let mut word = word(buf, index);
        let rest = len - at;
        if rest < 8 {
            word &= (1u64 << (rest * 8)) - 1;
        }
        hash = mix(hash, word);
    }
    hash
}

#[inline(always)]
fn mix(hash: u64, word: u64) -> u64 {
    let hash = (hash ^ word).wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 32)
}

// Both layouts' constants are the BPF side's own reading of the runtime: keep them next to
// the kinds userspace picks.
const _: () = assert!(GO_MAX_KEY % 8 == 0 && GO_MAX_VALUE % 8 == 0);
const _: () = assert!(GO_MAX_LABELS * PAIR_WORDS <= BUCKET_WORDS);
// `word` reads the label buffers as aligned words.
const _: () = assert!(
    core::mem::offset_of!(GoLabels, keys) % 8 == 0
        && core::mem::offset_of!(GoLabels, values) % 8 == 0
        && core::mem::align_of::<GoLabels>() == 8
);
