//! The user stack walked by the files' unwind tables (issue 15), for processes whose code
//! ranges userspace put in `UNWIND_PROCS`. `sample` hands over the sample it built and
//! tail-calls [`unwind_user`], which walks [`FRAMES_PER_CALL`] frames per run into
//! `SCRATCH.user`, tail-calls itself until the stack ends, keeps the stack as `read_stack`
//! does and goes on with the sample (Go labels, or record). An off-CPU record takes the same
//! way through [`unwind_user_off_cpu`], the same walk in a program of its own kind (see
//! `origin`).
//!
//! Each frame: the code range (8 halvings over the process's ranges), its table's entry, the
//! page entry, at most 17 halvings over the page's rows, the rule (a per-CPU cache of rules
//! skips all that for code seen before), then the saved words, from the stack window each run
//! reads at once. Code with no range, no table, or before its table's first row takes a
//! frame-pointer step, so frame-pointer code (Go, JIT code, code built with frame pointers)
//! mixes freely with code that has none. The steps are `unwind/walk.rs`'s (the userspace
//! oracle) and the lookup is `unwind/kernel_maps.rs`'s `rule_at`, kept in step with them.

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, pt_regs},
    helpers::{
        bpf_probe_read_user,
        generated::{
            bpf_get_current_task_btf, bpf_probe_read_user as read_user_into, bpf_task_pt_regs,
        },
    },
    macros::{map, perf_event, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::{PerfEventContext, RawTracePointContext},
};
use profiler_common::{
    Counter, MAX_STACK_DEPTH, NO_CONTEXT, SampleKey, SampleValue, Scratch, StackTrace,
    TAIL_UNWIND_USER,
    unwind::{
        CFA_DEREF_SP, CFA_END, CFA_FP, CFA_FRAME_POINTER, CFA_PLT, CFA_SIGNAL, CFA_SP,
        CODE_RANGE_STEPS, CodeRange, KernelRule, MAX_UNWIND_RULES, NO_RULE, PageEntry, ProcessSlot,
        SAVED_AT_CFA, SAVED_UNCHANGED, TABLE_PENDING, UNWIND_PAGE_BITS, UnwindTable,
    },
};

use crate::{
    PROCESS_MEMO, SCRATCH, config, count, get_stack, go_labels, hash_of,
    origin::{Origin, record, registers_at},
};

/// Processes walked by tables: tgid -> where its code ranges are in `UNWIND_RANGES`. Sized
/// by userspace.
#[map]
static UNWIND_PROCS: HashMap<u32, ProcessSlot> = HashMap::with_max_entries(1, 0);
/// The processes' code ranges, [`MAX_CODE_RANGES`] slots per process.
#[map]
static UNWIND_RANGES: Array<CodeRange> = Array::with_max_entries(1, 0);
/// Tables, rows, page entries and rules shared by every process (`profiler_common::unwind`).
/// Sized by userspace from `--unwind-memory-mb`.
#[map]
static UNWIND_TABLES: Array<UnwindTable> = Array::with_max_entries(1, 0);
#[map]
static UNWIND_PAGES: Array<PageEntry> = Array::with_max_entries(1, 0);
#[map]
static UNWIND_ROWS: Array<profiler_common::unwind::KernelRow> = Array::with_max_entries(1, 0);
#[map]
static UNWIND_RULES: Array<KernelRule> = Array::with_max_entries(MAX_UNWIND_RULES, 0);

/// Frames one run of [`unwind_user`] walks: 127 frames take 16 runs, within the kernel's 33
/// tail calls with the Go labels' 10 after them. The verifier's work grows faster than the
/// frames: 8 frames verify in 184,887 instructions on 6.18, 16 in 643,497.
const FRAMES_PER_CALL: usize = 8;

/// What this CPU's walk has reached, between runs.
#[repr(C)]
struct Walk {
    pc: u64,
    sp: u64,
    fp: u64,
    /// aarch64's link register, for the first frame.
    lr: u64,
    frames: u32,
    /// 1: `pc` is where the thread was (the first frame, or one a signal interrupted), else a
    /// return address, looked up one byte back (the call).
    exact: u32,
    /// 1: `fp` holds the caller's frame pointer.
    fp_known: u32,
    /// Counters met on the way, each counted once per sample at the end.
    pending: u32,
    /// Where the process's code ranges are, read by `start`.
    ranges: ProcessSlot,
    /// The sample waiting for its user stack.
    key: SampleKey,
    value: SampleValue,
    interval: u32,
    _pad: u32,
}

#[map]
static UNWIND_WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(2, 0);

/// Bytes of the stack each run reads at once, from the stack pointer up: the saved words of
/// the run's frames then come from one helper call instead of one or two each (a helper call
/// costs some 30 ns, near what the whole frame's lookup costs with the rule cache).
const WINDOW_BYTES: usize = 1024;
const WINDOW_WORDS: usize = WINDOW_BYTES / 8;

#[repr(C)]
struct StackWindow {
    words: [u64; WINDOW_WORDS],
}

#[map]
static UNWIND_WINDOW: PerCpuArray<StackWindow> = PerCpuArray::with_max_entries(2, 0);

/// The stack from `base` as one run read it; not `read` when that read failed (the window
/// passed the stack's end), and every word is then read on its own.
struct Window<'a> {
    base: u64,
    read: bool,
    words: &'a [u64; WINDOW_WORDS],
}

impl<'a> Window<'a> {
    /// Reads the window at `sp`, rounded down to a word.
    #[inline(always)]
    fn read(buffer: &'a mut StackWindow, sp: u64) -> Self {
        let base = sp & !7;
        // SAFETY: a checked user-memory read into a per-CPU map value of that size.
        let failed = unsafe {
            read_user_into(
                buffer.words.as_mut_ptr().cast(),
                WINDOW_BYTES as u32,
                base as *const core::ffi::c_void,
            )
        } != 0;
        Self {
            base,
            read: !failed,
            words: &buffer.words,
        }
    }

    /// The word at `address` when the window holds it.
    #[inline(always)]
    fn word(&self, address: u64) -> Option<u64> {
        let offset = address.wrapping_sub(self.base);
        // Against a constant: the verifier then knows the word's bounds whatever LLVM makes of
        // the index (it folds `>> 3` and the alignment test into a byte offset).
        if !self.read || offset & 7 != 0 || offset > (WINDOW_BYTES - 8) as u64 {
            return None;
        }
        Some(self.words[(offset >> 3) as usize & (WINDOW_WORDS - 1)])
    }

    /// The word at `address`, from the window or read on its own.
    #[inline(always)]
    fn read_word(&self, address: u64) -> Result<u64, Counter> {
        match self.word(address) {
            Some(word) => Ok(word),
            // SAFETY: a checked user-memory read.
            None => unsafe { bpf_probe_read_user(address as *const u64) }
                .map_err(|_| Counter::UnwindReadFailed),
        }
    }

    /// Two words at `address`: from the window, or in one read.
    #[inline(always)]
    fn read_pair(&self, address: u64) -> Result<[u64; 2], Counter> {
        if let (Some(first), Some(second)) =
            (self.word(address), self.word(address.wrapping_add(8)))
        {
            return Ok([first, second]);
        }
        // SAFETY: a checked user-memory read.
        unsafe { bpf_probe_read_user(address as *const [u64; 2]) }
            .map_err(|_| Counter::UnwindReadFailed)
    }
}

/// What a code address was found to need, remembered per CPU: a hot stack's frames come back
/// sample after sample, and a hit replaces the range, page and row searches (some 25 array
/// lookups and their branches) with one comparison. An entry holds for the generation of the
/// ranges and tables it was found in (`UNWIND_GENERATION`, moved on by userspace at every
/// change), for one process.
#[repr(C)]
#[derive(Clone, Copy)]
struct CachedRule {
    pc: u64,
    pid: u32,
    generation: u32,
    /// [`CACHED_RULE`], [`CACHED_FRAME_POINTER`], [`CACHED_PENDING`], [`CACHED_UNMAPPED`];
    /// 0: empty.
    kind: u32,
    _pad: u32,
    rule: KernelRule,
}

const CACHED_RULE: u32 = 1;
/// No rule: a frame-pointer step.
const CACHED_FRAME_POINTER: u32 = 2;
/// A frame-pointer step while the file's table is built (counted as pending).
const CACHED_PENDING: u32 = 3;
/// A frame-pointer step for code in no range: JIT code, or a library mapped since userspace
/// read the process's mappings (it rereads them, see `UNWIND_STALE`).
const CACHED_UNMAPPED: u32 = 4;

/// `Walk::pending` bits: one per counter a walk may meet (counted once per sample by
/// `finish`), and code outside every range.
const fn pending_bit(counter: Counter) -> u32 {
    1 << (counter as u32 - Counter::UnwindUnsupported as u32)
}
const PENDING_UNSUPPORTED: u32 = pending_bit(Counter::UnwindUnsupported);
const PENDING_TABLE: u32 = pending_bit(Counter::UnwindTablePending);
const PENDING_READ_FAILED: u32 = pending_bit(Counter::UnwindReadFailed);
const PENDING_UNMAPPED: u32 = 1 << 8;

/// Processes whose walks met code in none of their ranges since userspace last looked:
/// tgid -> 1. Userspace rereads their mappings (at most every few seconds each), and only
/// theirs: reading every sampled process's mappings to find the few that changed took 5% of
/// a core on a simulated 64-CPU node.
#[map]
static UNWIND_STALE: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);
/// Entries per CPU (40 bytes each; a per-CPU value may not pass 32 KiB).
const RULE_CACHE_SLOTS: usize = 512;

#[repr(C)]
struct RuleCache {
    entries: [CachedRule; RULE_CACHE_SLOTS],
}

#[map]
static UNWIND_RULE_CACHE: PerCpuArray<RuleCache> = PerCpuArray::with_max_entries(2, 0);

/// The generation of the ranges and tables, moved on by userspace after every change.
#[map]
static UNWIND_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// Where `pid`'s code ranges are, when userspace gave them (it has unwind tables).
#[inline(always)]
pub(crate) fn ranges_of(pid: u32) -> Option<ProcessSlot> {
    // SAFETY: map value pointer returned by the kernel, copied at once.
    UNWIND_PROCS.get_ptr(pid).map(|slot| unsafe { *slot })
}

/// Hands the sample `key` (without its user stack) to [`unwind_user`] when its process is
/// walked by tables; returns only when it is not (or the tail call failed), and the caller
/// reads the user stack by frame pointer.
#[inline(always)]
pub(crate) fn start<O: Origin>(ctx: &O, key: &SampleKey, value: SampleValue, interval: u32) {
    let Some(memo) = PROCESS_MEMO.get_ptr(O::SLOT) else {
        return;
    };
    let Some(walk) = UNWIND_WALK.get_ptr_mut(O::SLOT) else {
        return;
    };
    // SAFETY: per-CPU map value; perf_event programs do not nest on one CPU.
    let walk = unsafe { &mut *walk };
    // The process's slot as `process_of` found it under the current `EPOCH` (userspace moves
    // it after every change of a process's ranges): no second lookup of `UNWIND_PROCS` per
    // sample. Read once per sample, not per run: a slot replaced meanwhile stays readable until
    // userspace's next poll, a quarter of a second later.
    // SAFETY: per-CPU map value, written by `process_of` earlier in this run.
    walk.ranges = unsafe { (*memo).ranges };
    walk.key = *key;
    walk.value = value;
    walk.interval = interval;
    walk.frames = 0;
    // SAFETY: a tail call with this program's own context; returns only on failure.
    unsafe { O::tail_calls().tail_call(ctx, TAIL_UNWIND_USER) };
}

#[perf_event]
pub fn unwind_user(ctx: PerfEventContext) -> u32 {
    run(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn unwind_user_off_cpu(ctx: RawTracePointContext) -> i32 {
    run(&ctx);
    0
}

#[inline(always)]
fn run<O: Origin>(ctx: &O) {
    let Some(walk) = UNWIND_WALK.get_ptr_mut(O::SLOT) else {
        count(Counter::Internal);
        return;
    };
    // SAFETY: per-CPU map value filled by `start` on this CPU for this sample.
    let walk = unsafe { &mut *walk };
    let Some(scratch) = SCRATCH.get_ptr_mut(O::SLOT) else {
        count(Counter::Internal);
        return;
    };
    // SAFETY: per-CPU map value.
    let scratch = unsafe { &mut *scratch };
    let frames = match continue_walk(ctx, walk, &mut scratch.user) {
        Some(frames) => frames,
        None => {
            // SAFETY: a tail call with this program's own context; returns only on failure.
            unsafe { O::tail_calls().tail_call(ctx, TAIL_UNWIND_USER) };
            count(Counter::Internal);
            walk.frames as usize
        }
    };
    finish(ctx, walk, scratch, frames);
}

/// Walks up to [`FRAMES_PER_CALL`] frames; `Some(frames)` once the stack is complete, `None`
/// when there is more.
#[inline(always)]
fn continue_walk<O: Origin>(ctx: &O, walk: &mut Walk, stack: &mut StackTrace) -> Option<usize> {
    if walk.frames == 0 {
        walk.pending = 0;
        walk.exact = 1;
        if !user_registers(ctx, walk) {
            // Linux before 5.15 cannot tell a sample in the kernel its user registers: frame
            // pointers, as the helper walks them.
            let flags = BPF_F_USER_STACK as u64;
            return Some(get_stack(ctx, stack, flags, Counter::UserStackFailed));
        }
    }
    let cache = UNWIND_RULE_CACHE.get_ptr_mut(O::SLOT)?;
    // SAFETY: per-CPU map value; perf_event programs do not nest on one CPU.
    let cache = unsafe { &mut *cache };
    let generation = UNWIND_GENERATION.get(0).copied().unwrap_or(0);
    let buffer = UNWIND_WINDOW.get_ptr_mut(O::SLOT)?;
    // SAFETY: per-CPU map value; perf_event programs do not nest on one CPU.
    let window = Window::read(unsafe { &mut *buffer }, walk.sp);
    let pid = walk.key.pid;
    let ranges = walk.ranges;
    for _ in 0..FRAMES_PER_CALL {
        let at = walk.frames as usize;
        if at >= MAX_STACK_DEPTH {
            count(Counter::UserStackTruncated);
            return Some(MAX_STACK_DEPTH);
        }
        stack.ips[at] = walk.pc;
        walk.frames += 1;
        let lookup = walk.pc.wrapping_sub(u64::from(walk.exact ^ 1));
        let slot = (lookup ^ lookup >> 12 ^ u64::from(pid).wrapping_mul(0x9e37_79b9)) as usize
            & (RULE_CACHE_SLOTS - 1);
        let entry = &mut cache.entries[slot];
        let rule = if entry.pc == lookup
            && entry.pid == pid
            && entry.generation == generation
            && entry.kind != 0
        {
            walk.pending |= match entry.kind {
                CACHED_PENDING => PENDING_TABLE,
                CACHED_UNMAPPED => PENDING_UNMAPPED,
                _ => 0,
            };
            (entry.kind == CACHED_RULE).then_some(entry.rule)
        } else {
            let mut pending = 0;
            let found = rule_for(ranges, lookup, &mut pending);
            walk.pending |= pending;
            entry.pc = lookup;
            entry.pid = pid;
            entry.generation = generation;
            entry.kind = match found {
                Some(_) => CACHED_RULE,
                None if pending & PENDING_TABLE != 0 => CACHED_PENDING,
                None if pending & PENDING_UNMAPPED != 0 => CACHED_UNMAPPED,
                None => CACHED_FRAME_POINTER,
            };
            entry.rule = found.unwrap_or_default();
            found
        };
        match step(walk, &window, rule) {
            Ok(true) => {}
            Ok(false) => return Some(walk.frames as usize),
            Err(counter) => {
                walk.pending |= pending_bit(counter);
                return Some(walk.frames as usize);
            }
        }
    }
    None
}

/// The thread's user registers, from the context or (a tick in the kernel) those saved at
/// kernel entry; false when this kernel cannot give them.
#[inline(always)]
fn user_registers<O: Origin>(ctx: &O, walk: &mut Walk) -> bool {
    walk.fp_known = 1;
    walk.lr = 0;
    if let Some(regs) = ctx.user_registers() {
        walk.pc = regs.pc;
        walk.sp = regs.sp;
        walk.fp = regs.fp;
        walk.lr = regs.lr;
        return walk.pc != 0;
    }
    if config().task_pt_regs == 0 {
        return false;
    }
    // SAFETY: helpers without preconditions; the registers are read with checked reads.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    let regs = registers_at(regs);
    walk.pc = regs.pc;
    walk.sp = regs.sp;
    walk.fp = regs.fp;
    walk.lr = regs.lr;
    walk.pc != 0
}

/// Keeps the walked stack and goes on with the sample as `sample` would have.
#[inline(always)]
fn finish<O: Origin>(ctx: &O, walk: &mut Walk, scratch: &mut Scratch, frames: usize) {
    count(Counter::UnwindWalks);
    let pending = walk.pending;
    if pending & PENDING_UNSUPPORTED != 0 {
        count(Counter::UnwindUnsupported);
    }
    if pending & PENDING_TABLE != 0 {
        count(Counter::UnwindTablePending);
    }
    if pending & PENDING_UNMAPPED != 0 && UNWIND_STALE.get_ptr(walk.key.pid).is_none() {
        // A full map only delays the reread to when there is room.
        let _ = UNWIND_STALE.insert(walk.key.pid, 1, 0);
    }
    if pending & PENDING_READ_FAILED != 0 {
        count(Counter::UnwindReadFailed);
    }
    // A stored stack ends at its first zero (`record` stores it).
    if frames < MAX_STACK_DEPTH {
        scratch.user.ips[frames] = 0;
    }
    scratch.user_frames = frames as u32;
    let mut key = walk.key;
    key.user_stack = hash_of(&scratch.user, frames, BPF_F_USER_STACK as u64);
    let config = config();
    if config.trace_context != 0 && key.context == NO_CONTEXT {
        go_labels::start(ctx, key.pid, walk.interval, &config, &key, walk.value);
    }
    if let Err(counter) = record::<O>(walk.interval, &key, walk.value) {
        count(counter);
    }
}

/// The rule for the code at `pc`, or `None` for a frame-pointer step (no range, no table, no
/// row); notes a table not loaded yet in `pending`.
#[inline(always)]
fn rule_for(ranges: ProcessSlot, pc: u64, pending: &mut u32) -> Option<KernelRule> {
    let (mut low, mut high) = (0u32, ranges.count);
    for _ in 0..CODE_RANGE_STEPS {
        if low >= high {
            break;
        }
        let middle = low + (high - low) / 2;
        if UNWIND_RANGES.get(ranges.first.wrapping_add(middle))?.start <= pc {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    if low == 0 {
        *pending |= PENDING_UNMAPPED;
        return None;
    }
    let range = UNWIND_RANGES.get(ranges.first.wrapping_add(low - 1))?;
    if pc >= range.end {
        *pending |= PENDING_UNMAPPED;
        return None;
    }
    if range.table >= TABLE_PENDING {
        if range.table == TABLE_PENDING {
            *pending |= PENDING_TABLE;
        }
        return None;
    }
    let table = UNWIND_TABLES.get(range.table)?;
    let address = pc.wrapping_sub(range.bias);
    let page = (address >> UNWIND_PAGE_BITS).checked_sub(table.first_page)?;
    let rule = if page >= u64::from(table.page_count) {
        // Past the last page: the last row's rule (an FDE's end); an unloaded table has none.
        if table.page_count == 0 {
            return None;
        }
        table.last_rule
    } else {
        let entry = UNWIND_PAGES.get(table.pages_at.wrapping_add(page as u32))?;
        page_rule(entry, address as u16)
    };
    if rule == NO_RULE {
        return None;
    }
    UNWIND_RULES.get(u32::from(rule)).copied()
}

/// `layout::page_rule`: the page's last row at or below `low`, else its carry.
#[inline(always)]
fn page_rule(page: &PageEntry, low: u16) -> u16 {
    let (mut lo, mut hi) = (0u32, u32::from(page.count));
    for _ in 0..17 {
        if lo >= hi {
            break;
        }
        let middle = lo + (hi - lo) / 2;
        let Some(row) = UNWIND_ROWS.get(page.first.wrapping_add(middle)) else {
            return NO_RULE;
        };
        if row.address_low <= low {
            lo = middle + 1;
        } else {
            hi = middle;
        }
    }
    if lo == 0 {
        return page.carry;
    }
    UNWIND_ROWS
        .get(page.first.wrapping_add(lo - 1))
        .map_or(NO_RULE, |row| row.rule)
}

/// One step to the caller: `Ok(true)` when there is one, `Ok(false)` at the outermost frame,
/// `Err` with why the walk stops.
#[inline(always)]
fn step(walk: &mut Walk, window: &Window, rule: Option<KernelRule>) -> Result<bool, Counter> {
    let rule = rule.unwrap_or(KernelRule {
        cfa: CFA_FRAME_POINTER,
        ..KernelRule::default()
    });
    let cfa = match rule.cfa {
        CFA_SP => walk.sp.wrapping_add(rule.cfa_offset as i64 as u64),
        CFA_FP => {
            if walk.fp_known == 0 {
                return Err(Counter::UnwindUnsupported);
            }
            walk.fp.wrapping_add(rule.cfa_offset as i64 as u64)
        }
        CFA_PLT => {
            let pushed = if (walk.pc & 15) as i64 >= i64::from(rule.cfa_offset) {
                8
            } else {
                0
            };
            walk.sp.wrapping_add(8 + pushed)
        }
        CFA_DEREF_SP => window
            .read_word(walk.sp.wrapping_add(rule.cfa_offset as i64 as u64))?
            .wrapping_add(rule.cfa_post as i64 as u64),
        CFA_SIGNAL => return signal_step(walk, window),
        CFA_FRAME_POINTER => return frame_pointer_step(walk, window),
        CFA_END => return Ok(false),
        _ => return Err(Counter::UnwindUnsupported),
    };
    // The common frame with a frame pointer (`push rbp; mov rbp, rsp`): both saved words in
    // one read, one helper call fewer.
    if rule.ra == SAVED_AT_CFA
        && rule.fp == SAVED_AT_CFA
        && i32::from(rule.fp_offset) + 8 == i32::from(rule.ra_offset)
    {
        let [fp, pc] = window.read_pair(cfa.wrapping_add(rule.fp_offset as i64 as u64))?;
        walk.fp = fp;
        walk.sp = cfa;
        walk.exact = 0;
        return set_pc(walk, pc);
    }
    let pc = match rule.ra {
        SAVED_AT_CFA => window.read_word(cfa.wrapping_add(rule.ra_offset as i64 as u64))?,
        // aarch64: the return address is still in the link register, in the first frame only.
        SAVED_UNCHANGED if walk.frames == 1 && cfg!(bpf_target_arch = "aarch64") => walk.lr,
        _ => return Err(Counter::UnwindUnsupported),
    };
    match rule.fp {
        SAVED_UNCHANGED => {}
        SAVED_AT_CFA => match window.read_word(cfa.wrapping_add(rule.fp_offset as i64 as u64)) {
            Ok(fp) => walk.fp = fp,
            // As walk.rs: an unreadable saved frame pointer is unknown, not a stop.
            Err(_) => walk.fp_known = 0,
        },
        _ => walk.fp_known = 0,
    }
    walk.sp = cfa;
    walk.exact = 0;
    set_pc(walk, pc)
}

/// A frame built with a frame pointer: `[fp]` is the caller's, `[fp + 8]` the return address.
#[inline(always)]
fn frame_pointer_step(walk: &mut Walk, window: &Window) -> Result<bool, Counter> {
    let fp = walk.fp;
    // A chain must go up the stack; a zero frame pointer ends it.
    if walk.fp_known == 0 || fp == 0 || fp < walk.sp {
        return Ok(false);
    }
    let [next, pc] = window.read_pair(fp)?;
    walk.fp = next;
    walk.sp = fp.wrapping_add(16);
    walk.exact = 0;
    set_pc(walk, pc)
}

/// The registers a signal interrupted, from the `ucontext` on the stack (`walk.rs`'s
/// `signal_step` says where).
#[inline(always)]
fn signal_step(walk: &mut Walk, window: &Window) -> Result<bool, Counter> {
    #[cfg(not(bpf_target_arch = "aarch64"))]
    let (fp_at, sp_at, pc_at) = (120u64, 160u64, 168u64);
    #[cfg(bpf_target_arch = "aarch64")]
    let (fp_at, sp_at, pc_at) = {
        let gregs = 128 + 176 + 8;
        (gregs + 29 * 8, gregs + 31 * 8, gregs + 32 * 8)
    };
    let base = walk.sp;
    #[cfg(bpf_target_arch = "aarch64")]
    {
        walk.lr = window.read_word(base.wrapping_add(128 + 176 + 8 + 30 * 8))?;
    }
    let pc = window.read_word(base.wrapping_add(pc_at))?;
    walk.sp = window.read_word(base.wrapping_add(sp_at))?;
    walk.fp = window.read_word(base.wrapping_add(fp_at))?;
    walk.fp_known = 1;
    // The interrupted pc is where the thread was, not a return address.
    walk.exact = 1;
    set_pc(walk, pc)
}

/// Moves to the caller at `pc`: none at a zero return address (the outermost frame).
#[inline(always)]
fn set_pc(walk: &mut Walk, pc: u64) -> Result<bool, Counter> {
    // aarch64 return addresses may carry a pointer-authentication code above bit 48.
    #[cfg(bpf_target_arch = "aarch64")]
    let pc = pc & ((1 << 48) - 1);
    walk.pc = pc;
    Ok(pc != 0)
}
