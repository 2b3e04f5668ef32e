//! Reads the sampled thread's OpenTelemetry trace context (OTEP 4947 thread-local record).
//!
//! Userspace resolves, per process, where `otel_thread_ctx_v1` lives relative to the thread
//! pointer and writes it to `TLS_TARGETS`; this side only follows: thread pointer (from the
//! task, at an offset read from BTF), the variable (static TLS, or glibc's DTV), the record
//! pointer, the 28-byte head, then up to `MAX_ATTR_BYTES` of attributes. A process without an
//! entry costs one map lookup. Each distinct context is stored once per interval under its hash,
//! and the number of distinct traces per interval is bounded by the size of `TRACES_<half>`.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_task, bpf_probe_read_user as probe_read_user_raw},
    },
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use profiler_common::{
    Config, Counter, GO_CONTEXT_BIT, MAX_ATTR_BYTES, NO_CONTEXT, RECORD_HEAD_LEN, TLS_DTV,
    TLS_STATIC, TlsLocation, TraceContext,
};

use crate::{EEXIST, PROCESS_MEMO, count};

/// Processes that publish a trace context: tgid -> where the variable is.
#[map]
static TLS_TARGETS: HashMap<u32, TlsLocation> = HashMap::with_max_entries(16384, 0);

/// Distinct contexts of the interval, by hash. Sized by userspace (4 x the trace limit).
#[map]
static CONTEXTS_0: HashMap<u64, TraceContext> = HashMap::with_max_entries(40000, 0);
#[map]
static CONTEXTS_1: HashMap<u64, TraceContext> = HashMap::with_max_entries(40000, 0);

/// Distinct trace IDs of the interval; its size is `--max-traces-per-interval`.
#[map]
static TRACES_0: HashMap<[u8; 16], u8> = HashMap::with_max_entries(10000, 0);
#[map]
static TRACES_1: HashMap<[u8; 16], u8> = HashMap::with_max_entries(10000, 0);

#[map]
static CONTEXT_SCRATCH: PerCpuArray<TraceContext> = PerCpuArray::with_max_entries(2, 0);

/// The context this CPU stored last, and in which interval: a thread sampled again under the
/// same context skips the trace-limit and store map operations.
#[repr(C)]
#[derive(Clone, Copy)]
struct LastContext {
    interval: u32,
    _pad: u32,
    hash: u64,
}

#[map]
static LAST_CONTEXT: PerCpuArray<LastContext> = PerCpuArray::with_max_entries(2, 0);

/// Size of one glibc `dtv_t` entry (a pointer and a flag, padded).
const DTV_ENTRY_SIZE: u64 = 16;
/// glibc's marker for a DTV slot whose block is not allocated yet.
const TLS_DTV_UNALLOCATED: u64 = u64::MAX;

/// Where userspace located `pid`'s trace-context record, if it did.
#[inline(always)]
pub(crate) fn location(pid: u32) -> Option<TlsLocation> {
    // SAFETY: map value pointer returned by the kernel, copied at once.
    TLS_TARGETS
        .get_ptr(pid)
        .map(|location| unsafe { *location })
}

/// The hash of the current thread's context, stored in the active contexts map, or
/// [`NO_CONTEXT`]. Every failure is counted and leaves the sample without a trace. The
/// process's location is the one `process_of` copied into this CPU's memo (`MEMO_TLS`): no
/// second lookup of `TLS_TARGETS` for each sample.
pub(crate) fn read(interval: u32, config: &Config, slot: u32) -> u64 {
    let Some(memo) = PROCESS_MEMO.get_ptr(slot) else {
        count(Counter::Internal);
        return NO_CONTEXT;
    };
    // SAFETY: per-CPU map value, written by `process_of` earlier in this run.
    let location = unsafe { (*memo).tls };
    match try_read(&location, interval, config, slot) {
        Ok(hash) => hash,
        Err(Some(counter)) => {
            count(counter);
            NO_CONTEXT
        }
        Err(None) => NO_CONTEXT,
    }
}

/// `Err(None)`: no context published, which is not a failure.
fn try_read(
    location: &TlsLocation,
    interval: u32,
    config: &Config,
    slot: u32,
) -> Result<u64, Option<Counter>> {
    let variable = variable_address(location, config)?;
    // SAFETY: a user-memory read through the checked helper; failures are returned.
    let record: u64 = unsafe { bpf_probe_read_user(variable as *const u64) }
        .map_err(|_| Some(Counter::RecordReadFailed))?;
    if record == 0 {
        return Err(None);
    }
    let scratch = CONTEXT_SCRATCH
        .get_ptr_mut(slot)
        .ok_or(Some(Counter::Internal))?;
    // SAFETY: per-CPU map value, valid for the duration of the program.
    let context = unsafe { &mut *scratch };
    read_record(record, context)?;
    let hash = context_hash(context);
    let last = LAST_CONTEXT
        .get_ptr_mut(slot)
        .ok_or(Some(Counter::Internal))?;
    // SAFETY: per-CPU map value, valid for the duration of the program.
    let last = unsafe { &mut *last };
    if last.interval == interval && last.hash == hash {
        return Ok(hash);
    }

    let half = interval & 1;
    admit_trace(interval, &context.trace_id)?;
    let contexts = if half == 0 { &CONTEXTS_0 } else { &CONTEXTS_1 };
    insert_once(contexts, hash, &*context)?;
    last.interval = interval;
    last.hash = hash;
    Ok(hash)
}

/// Stores `value` under `hash` unless another CPU stored it first.
#[inline(always)]
pub(crate) fn insert_once<V>(
    map: &HashMap<u64, V>,
    hash: u64,
    value: &V,
) -> Result<(), Option<Counter>> {
    // Stored already, the common case: a lookup takes no lock, an insert locks its bucket even
    // when BPF_NOEXIST then refuses.
    if map.get_ptr(&hash).is_some() {
        return Ok(());
    }
    match map.insert(hash, value, BPF_NOEXIST as u64) {
        Ok(()) => Ok(()),
        Err(err) if err == -(EEXIST as i32) => Ok(()),
        Err(_) => Err(Some(Counter::ContextsMapFull)),
    }
}

/// Counts the trace in the interval's traces (`--max-traces-per-interval`); a trace that does
/// not fit is refused with [`Counter::TraceLimit`]. Go label sets share the limit.
pub(crate) fn admit_trace(interval: u32, trace_id: &[u8; 16]) -> Result<(), Option<Counter>> {
    let traces = if interval & 1 == 0 {
        &TRACES_0
    } else {
        &TRACES_1
    };
    if traces.get_ptr(trace_id).is_none() {
        match traces.insert(trace_id, 1, BPF_NOEXIST as u64) {
            Ok(()) => {}
            Err(err) if err == -(EEXIST as i32) => {}
            Err(_) => return Err(Some(Counter::TraceLimit)),
        }
    }
    Ok(())
}

/// The sampled thread's user thread pointer (x86_64 `fsbase`), at the offset in `task_struct`
/// that userspace read from BTF.
pub(crate) fn thread_pointer(config: &Config) -> Result<u64, Option<Counter>> {
    // SAFETY: helper without preconditions; the task pointer is only used for a checked read.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: checked kernel read at an offset taken from the kernel's own BTF.
    let thread_pointer: u64 = unsafe {
        bpf_probe_read_kernel(task.wrapping_add(config.task_tp_offset as usize) as *const u64)
    }
    .map_err(|_| Some(Counter::TlsReadFailed))?;
    if thread_pointer == 0 {
        return Err(Some(Counter::TlsReadFailed));
    }
    Ok(thread_pointer)
}

fn variable_address(location: &TlsLocation, config: &Config) -> Result<u64, Option<Counter>> {
    let thread_pointer = thread_pointer(config)?;
    match location.kind {
        TLS_STATIC => Ok(thread_pointer.wrapping_add(location.offset as u64)),
        TLS_DTV => {
            let dtv_slot = thread_pointer.wrapping_add(u64::from(config.tcb_dtv_offset));
            // SAFETY: checked user reads.
            let dtv: u64 = unsafe { bpf_probe_read_user(dtv_slot as *const u64) }
                .map_err(|_| Some(Counter::TlsReadFailed))?;
            let entry = dtv.wrapping_add(location.module.wrapping_mul(DTV_ENTRY_SIZE));
            let block: u64 = unsafe { bpf_probe_read_user(entry as *const u64) }
                .map_err(|_| Some(Counter::TlsReadFailed))?;
            // Not allocated yet: the thread never touched the variable, so it set no context.
            if block == 0 || block == TLS_DTV_UNALLOCATED {
                return Err(None);
            }
            Ok(block.wrapping_add(location.offset as u64))
        }
        _ => Err(Some(Counter::Internal)),
    }
}

/// Reads the record's head, validates it, then its attributes (cut to `MAX_ATTR_BYTES`).
fn read_record(record: u64, context: &mut TraceContext) -> Result<(), Option<Counter>> {
    let base = (context as *mut TraceContext).cast::<u8>();
    // SAFETY: `context` is a per-CPU map value larger than the head; checked user read.
    let read =
        unsafe { probe_read_user_raw(base.cast(), RECORD_HEAD_LEN as u32, record as *const _) };
    if read < 0 {
        return Err(Some(Counter::RecordReadFailed));
    }
    if context.valid != 1 || context.trace_id == [0; 16] {
        return Err(None);
    }
    // Clear leftovers of the previous sample so that equal contexts hash and compare equal.
    clear_attrs(context);
    let mut len = context.attrs_len as u32;
    if len > MAX_ATTR_BYTES as u32 {
        len = MAX_ATTR_BYTES as u32;
    }
    context.attrs_len = len as u16;
    context._pad = [0; 4];
    if len > 0 {
        let source = record.wrapping_add(RECORD_HEAD_LEN as u64);
        // SAFETY: `len` is bounded by the size of `attrs`; checked user read.
        let read = unsafe {
            probe_read_user_raw(context.attrs.as_mut_ptr().cast(), len, source as *const _)
        };
        if read < 0 {
            return Err(Some(Counter::RecordReadFailed));
        }
    }
    Ok(())
}

/// A 64-bit hash of the whole context, with [`GO_CONTEXT_BIT`] clear; never [`NO_CONTEXT`].
fn context_hash(context: &TraceContext) -> u64 {
    // SAFETY: TraceContext is plain data of a multiple of 8 bytes, and 8-byte aligned.
    let words = unsafe {
        &*(context as *const TraceContext).cast::<[u64; size_of::<TraceContext>() / 8]>()
    };
    let mut hash: u64 = 0x243f_6a88_85a3_08d3;
    for word in words {
        // Read in turn from the map value: otherwise LLVM keeps the words it knows (the zeroed
        // attributes) in 13 stack slots, and `read`'s frame (144 bytes) and its callers' passed
        // Linux 5.10's 512-byte limit for the off-CPU program.
        // SAFETY: a word of `context`.
        let word = unsafe { core::ptr::read_volatile(word) };
        hash = (hash ^ word).wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 32;
    }
    let hash = hash & !GO_CONTEXT_BIT;
    if hash == NO_CONTEXT { 1 } else { hash }
}

/// Zeroes `context.attrs` by words, with stores the compiler cannot turn into a call of
/// `memset`: a BPF-to-BPF call makes Linux before 6.4 give up precision tracking and walk many
/// more states.
#[inline(always)]
fn clear_attrs(context: &mut TraceContext) {
    let words = context.attrs.as_mut_ptr().cast::<u64>();
    for index in 0..MAX_ATTR_BYTES / 8 {
        // SAFETY: within `attrs`; aligned, as `attrs` is at a multiple of 8 in the per-CPU map
        // value, which the kernel aligns to 8 (asserted below).
        unsafe { core::ptr::write_volatile(words.add(index), 0) };
    }
}

const _: () =
    assert!(core::mem::offset_of!(TraceContext, attrs) % 8 == 0 && MAX_ATTR_BYTES % 8 == 0);
