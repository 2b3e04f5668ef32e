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

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_user, generated::bpf_probe_read_user as probe_read_user_raw},
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use profiler_common::{
    Config, Counter, GO_CONTEXT_BIT, GO_LABELS_MAP, GO_LABELS_SLICE, GO_MAX_KEY, GO_MAX_LABELS,
    GO_MAX_VALUE, GoLabels, GoTarget, NO_CONTEXT,
};

use crate::{EEXIST, count, trace_context};

/// Go processes whose labels are read: tgid -> where.
#[map]
static GO_TARGETS: HashMap<u32, GoTarget> = HashMap::with_max_entries(16384, 0);

/// Distinct label sets of the interval, by hash. Sized by userspace.
#[map]
static GO_LABELS_0: HashMap<u64, GoLabels> = HashMap::with_max_entries(1024, 0);
#[map]
static GO_LABELS_1: HashMap<u64, GoLabels> = HashMap::with_max_entries(1024, 0);

/// A map bucket of `map[string]string`: 8 top-hash bytes, 8 keys, 8 values (string headers).
const BUCKET_LEN: usize = 8 + 8 * 16 + 8 * 16;
/// `tophash` values below this mark an empty or evacuated slot (runtime `minTopHash`).
const MIN_TOP_HASH: u8 = 5;
/// A slice element: `{key, value string}`.
const PAIR_LEN: usize = 32;
/// Raw bytes read from the target before the strings: a bucket or up to 8 pairs.
const RAW_LEN: usize = BUCKET_LEN + 8;

#[repr(C)]
struct GoScratch {
    labels: GoLabels,
    raw: [u8; RAW_LEN],
    /// The `trace_id` value's hash (never 0), or 0 when there is none.
    trace_key: u64,
    /// Per slot: the map bucket's top hash (below [`MIN_TOP_HASH`]: empty), or a full mark.
    top_hash: [u8; GO_MAX_LABELS],
}

#[map]
static GO_SCRATCH: PerCpuArray<GoScratch> = PerCpuArray::with_max_entries(1, 0);

/// The label set this CPU stored last, and in which interval (as for thread contexts).
#[repr(C)]
#[derive(Clone, Copy)]
struct LastLabels {
    interval: u32,
    _pad: u32,
    hash: u64,
}

#[map]
static GO_LAST: PerCpuArray<LastLabels> = PerCpuArray::with_max_entries(1, 0);

/// `trace_id` as a little-endian word, to find the key with one comparison.
const TRACE_ID_KEY: u64 = u64::from_le_bytes(*b"trace_id");

/// The hash of the current goroutine's label set, stored in the active map, or [`NO_CONTEXT`]
/// (not a Go target, no labels, no `trace_id`, or a failure, which is counted).
pub(crate) fn read(pid: u32, interval: u32, config: &Config) -> u64 {
    let Some(target) = GO_TARGETS.get_ptr(pid) else {
        return NO_CONTEXT;
    };
    // SAFETY: map value pointer returned by the kernel.
    let target = unsafe { *target };
    match try_read(&target, interval, config) {
        Ok(hash) => hash,
        Err(Some(counter)) => {
            count(counter);
            NO_CONTEXT
        }
        Err(None) => NO_CONTEXT,
    }
}

/// A user word at `address`; a failed read is counted as a failed label read.
#[inline(always)]
fn user_word(address: u64) -> Result<u64, Option<Counter>> {
    // SAFETY: a checked user-memory read; failures are returned.
    unsafe { bpf_probe_read_user(address as *const u64) }
        .map_err(|_| Some(Counter::GoLabelsReadFailed))
}

/// `Err(None)`: no labels (or none with a trace ID), which is not a failure.
fn try_read(target: &GoTarget, interval: u32, config: &Config) -> Result<u64, Option<Counter>> {
    let thread_pointer = trace_context::thread_pointer(config)?;
    let g = user_word(thread_pointer.wrapping_add(target.tls_offset as u64))?;
    if g == 0 {
        return Err(None);
    }
    let m = user_word(g.wrapping_add(u64::from(target.g_m)))?;
    if m == 0 {
        return Err(None);
    }
    let curg = user_word(m.wrapping_add(u64::from(target.m_curg)))?;
    if curg == 0 {
        return Err(None);
    }
    let labels = user_word(curg.wrapping_add(u64::from(target.g_labels)))?;
    if labels == 0 {
        return Err(None);
    }
    let scratch = GO_SCRATCH.get_ptr_mut(0).ok_or(Some(Counter::Internal))?;
    // SAFETY: per-CPU map value, valid for the duration of the program.
    let scratch = unsafe { &mut *scratch };
    // Flags live in the map value, not in registers: the verifier does not split its states on
    // them, which would multiply with every slot.
    scratch.labels.cut = 0;
    scratch.labels.present = 0;
    scratch.labels._pad = [0; 5];
    // Where each pair's string headers are in `raw`, and how many slots to look at.
    let (slots, key_at, value_at, step) = match target.labels_kind {
        GO_LABELS_MAP => {
            // labels -> *labelMap -> hmap { count int; flags, B uint8; ...; buckets @16 }
            let hmap = user_word(labels)?;
            if hmap == 0 {
                return Err(None);
            }
            let count_and_b = user_word(hmap.wrapping_add(8))?;
            let buckets = user_word(hmap.wrapping_add(16))?;
            if buckets == 0 {
                return Err(None);
            }
            // More than one bucket means more than 8 labels: the first bucket is read.
            if (count_and_b >> 8) & 0xff != 0 {
                scratch.labels.cut = 1;
            }
            read_raw(&mut scratch.raw, buckets, BUCKET_LEN as u32)?;
            let mut top_hash = [0u8; GO_MAX_LABELS];
            top_hash.copy_from_slice(&scratch.raw[..GO_MAX_LABELS]);
            scratch.top_hash = top_hash;
            (GO_MAX_LABELS, 8usize, 8 + 8 * 16, 16usize)
        }
        GO_LABELS_SLICE => {
            // labels -> labelMap { list []label } -> { ptr, len, cap }
            let list = user_word(labels)?;
            let len = user_word(labels.wrapping_add(8))?;
            if list == 0 || len == 0 {
                return Err(None);
            }
            let n = if len > GO_MAX_LABELS as u64 {
                scratch.labels.cut = 1;
                GO_MAX_LABELS
            } else {
                len as usize
            };
            read_raw(&mut scratch.raw, list, (n * PAIR_LEN) as u32)?;
            // A slice has no empty slots: the map's top-hash test passes for every one.
            scratch.top_hash = [MIN_TOP_HASH; GO_MAX_LABELS];
            (n, 0, 16, PAIR_LEN)
        }
        _ => return Err(Some(Counter::Internal)),
    };
    scratch.labels.count = slots as u8;

    // First the strings, then the hash: two simple loops verify in far fewer steps than one.
    for slot in 0..GO_MAX_LABELS {
        if slot >= slots {
            break;
        }
        if scratch.top_hash[slot] < MIN_TOP_HASH {
            continue;
        }
        let key = raw_pair(&scratch.raw, key_at + slot * step);
        let value = raw_pair(&scratch.raw, value_at + slot * step);
        let key_len = copy_string(&mut scratch.labels.keys[slot], key, &mut scratch.labels.cut)?;
        let value_len = copy_string(
            &mut scratch.labels.values[slot],
            value,
            &mut scratch.labels.cut,
        )?;
        scratch.labels.key_lens[slot] = key_len as u8;
        scratch.labels.value_lens[slot] = value_len as u8;
        scratch.labels.present |= 1 << slot;
    }
    let out = &scratch.labels;
    if out.cut != 0 {
        count(Counter::GoLabelsCut);
    }
    let mut hash: u64 = 0x1319_8a2e_0370_7344;
    scratch.trace_key = 0;
    for slot in 0..GO_MAX_LABELS {
        if out.present & (1 << slot) == 0 {
            continue;
        }
        let key_len = usize::from(out.key_lens[slot]);
        let value_len = usize::from(out.value_lens[slot]);
        let value_hash = words_hash(&out.values[slot], value_len);
        if key_len == 8 && first_word(&out.keys[slot]) == TRACE_ID_KEY {
            scratch.trace_key = value_hash | 1;
        }
        hash = mix(
            hash,
            (slot as u64) << 16 | (key_len as u64) << 8 | value_len as u64,
        );
        hash = mix(hash, words_hash(&out.keys[slot], key_len));
        hash = mix(hash, value_hash);
    }
    // Without a trace ID the labels name no trace: userspace would drop them.
    let trace_key = scratch.trace_key;
    if trace_key == 0 {
        return Err(None);
    }
    let hash = mix(hash, u64::from(out.present)) | GO_CONTEXT_BIT;

    let last = GO_LAST.get_ptr_mut(0).ok_or(Some(Counter::Internal))?;
    // SAFETY: per-CPU map value, valid for the duration of the program.
    let last = unsafe { &mut *last };
    if last.interval == interval && last.hash == hash {
        return Ok(hash);
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
    match stored.insert(hash, &scratch.labels, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(err) if err == -(EEXIST as i32) => {}
        Err(_) => return Err(Some(Counter::ContextsMapFull)),
    }
    last.interval = interval;
    last.hash = hash;
    Ok(hash)
}

/// Reads `len` (at most [`RAW_LEN`]) bytes of the target at `address` into `raw`.
#[inline(always)]
fn read_raw(raw: &mut [u8; RAW_LEN], address: u64, len: u32) -> Result<(), Option<Counter>> {
    let len = if len > RAW_LEN as u32 {
        RAW_LEN as u32
    } else {
        len
    };
    // SAFETY: `len` is bounded by the size of `raw`; checked user read.
    let read = unsafe { probe_read_user_raw(raw.as_mut_ptr().cast(), len, address as *const _) };
    if read < 0 {
        return Err(Some(Counter::GoLabelsReadFailed));
    }
    Ok(())
}

/// The Go string header (pointer, length) at `at` in `raw`.
#[inline(always)]
fn raw_pair(raw: &[u8; RAW_LEN], at: usize) -> (u64, u64) {
    if at + 16 > RAW_LEN {
        return (0, 0);
    }
    let mut pointer = [0u8; 8];
    let mut len = [0u8; 8];
    pointer.copy_from_slice(&raw[at..at + 8]);
    len.copy_from_slice(&raw[at + 8..at + 16]);
    (u64::from_le_bytes(pointer), u64::from_le_bytes(len))
}

/// Copies the string (pointer, length) into `buf`, cut to its size (and `cut` set); returns
/// the bytes kept.
#[inline(always)]
fn copy_string<const N: usize>(
    buf: &mut [u8; N],
    (pointer, len): (u64, u64),
    cut: &mut u8,
) -> Result<usize, Option<Counter>> {
    let kept = if len > N as u64 {
        *cut = 1;
        N
    } else {
        len as usize
    };
    if kept == 0 {
        return Ok(0);
    }
    // SAFETY: `kept` is bounded by the size of `buf`; checked user read.
    let read =
        unsafe { probe_read_user_raw(buf.as_mut_ptr().cast(), kept as u32, pointer as *const _) };
    if read < 0 {
        return Err(Some(Counter::GoLabelsReadFailed));
    }
    Ok(kept)
}

#[inline(always)]
fn first_word<const N: usize>(buf: &[u8; N]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&buf[..8]);
    u64::from_le_bytes(word)
}

/// A hash of the first `len` bytes of `buf`, by words (the bytes past `len` in the last word
/// are masked: they are left over from earlier samples).
#[inline(always)]
fn words_hash<const N: usize>(buf: &[u8; N], len: usize) -> u64 {
    let len = if len > N { N } else { len };
    let mut hash: u64 = 0xa409_3822_299f_31d0;
    for index in 0..N / 8 {
        let at = index * 8;
        if at >= len {
            break;
        }
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&buf[at..at + 8]);
        let mut word = u64::from_le_bytes(bytes);
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
