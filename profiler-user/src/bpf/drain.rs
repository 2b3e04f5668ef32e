//! Double-buffered drain of the aggregation maps.
//!
//! The program writes into the half named by the `ACTIVE` map (an interval number; its low bit
//! is the half). To drain, userspace points `ACTIVE` at the other half (the next number), waits
//! until every program run that may have read the old value has finished (a kernel guarantee:
//! [`ProgramBarrier`]), then reads and clears the old half, which no program writes any more. No
//! sample is lost and none is counted twice.
//!
//! Off-CPU records are the one exception to "the old half is complete": a wait's record is
//! read when it begins (into the interval's stacks and contexts) and counted when it ends,
//! maybe intervals later, in the half active then. What such a record names is kept here
//! ([`Kept`]) after its interval's drain, until no record parked in the kernel names it.

use std::collections::{HashMap as StdHashMap, HashSet};

use std::os::fd::AsFd as _;

use aya::maps::{Array, HashMap, IterableMap as _, MapData, MapError};
use profiler_common::{
    Frames, GoLabels, MediumStack, NO_STACK, OffCpuThread, SampleKey, SampleValue, ShortStack,
    StackTrace, TraceContext, UNSTACKED_WAIT, maps,
};

use super::{
    BpfError,
    barrier::ProgramBarrier,
    batch::{self, BatchError},
};

/// Stacks by hash, innermost frame first.
pub type Stacks = StdHashMap<u64, Box<[u64]>>;

/// Trace contexts by hash.
pub type Contexts = StdHashMap<u64, TraceContext>;

/// Go label sets by hash (with `GO_CONTEXT_BIT` set).
pub type GoLabelSets = StdHashMap<u64, GoLabels>;

/// What one drain took out of the kernel.
#[derive(Debug, Default)]
pub struct Drained {
    pub samples: Vec<(SampleKey, SampleValue)>,
    /// Off-CPU records: waits (`count`) and their nanoseconds (`period_ns`) by key.
    pub off_cpu: Vec<(SampleKey, SampleValue)>,
    pub stacks: Stacks,
    pub contexts: Contexts,
    pub go_labels: GoLabelSets,
}

/// The maps that come in two halves.
pub(crate) struct HalfMaps {
    pub counts: [HashMap<MapData, SampleKey, SampleValue>; 2],
    pub stacks: [StackMaps; 2],
    pub contexts: [HashMap<MapData, u64, TraceContext>; 2],
    pub go_labels: [HashMap<MapData, u64, GoLabels>; 2],
    pub traces: [HashMap<MapData, [u8; 16], u8>; 2],
    /// With off-CPU recording.
    pub off_cpu: Option<OffCpuMaps>,
}

/// The off-CPU program's maps.
pub(crate) struct OffCpuMaps {
    pub counts: [HashMap<MapData, SampleKey, SampleValue>; 2],
    /// What records parked in the interval name (stack and context hashes), by half.
    pub parked: [HashMap<MapData, u64, u8>; 2],
    pub threads: HashMap<MapData, u32, OffCpuThread>,
}

/// Stacks, contexts and Go label sets that off-CPU records parked in the kernel may still name,
/// taken out at an earlier drain.
#[derive(Default)]
struct Kept {
    stacks: Stacks,
    contexts: Contexts,
    go_labels: GoLabelSets,
    /// What the records parked at the previous drain's scan named: a wait that ended between
    /// that drain's flip and its scan is counted in the next interval, and names them.
    named_last: HashSet<u64>,
}

/// One half's stacks, by depth class.
pub(crate) struct StackMaps {
    pub short: HashMap<MapData, u64, ShortStack>,
    pub medium: HashMap<MapData, u64, MediumStack>,
    pub long: HashMap<MapData, u64, StackTrace>,
}

pub(crate) struct Drainer {
    maps: HalfMaps,
    active: Array<MapData, u32>,
    barrier: ProgramBarrier,
    /// Interval number in `ACTIVE`; its low bit is the half being written.
    interval: u32,
    /// Whether the kernel drains maps in batches (it does from 5.6).
    batch: bool,
    kept: Kept,
}

impl Drainer {
    pub(crate) fn new(maps: HalfMaps, mut active: Array<MapData, u32>) -> Result<Self, BpfError> {
        active.set(0, 0, 0).map_err(map_error(maps::ACTIVE))?;
        Ok(Self {
            maps,
            active,
            barrier: ProgramBarrier::new()?,
            interval: 0,
            batch: true,
            kept: Kept::default(),
        })
    }

    /// Flips the halves and returns everything the old half held, leaving it empty.
    pub(crate) fn drain(&mut self) -> Result<Drained, BpfError> {
        let old = (self.interval & 1) as usize;
        let new = self.interval.wrapping_add(1);
        self.active
            .set(0, new, 0)
            .map_err(map_error(maps::ACTIVE))?;
        self.interval = new;
        self.barrier.wait_for_running_programs()?;

        let halves = &mut self.maps;
        let batch = &mut self.batch;
        let samples =
            take_all(&mut halves.counts[old], batch).map_err(map_error(maps::COUNTS[old]))?;
        let off_cpu = match &mut halves.off_cpu {
            Some(off_cpu) => take_all(&mut off_cpu.counts[old], batch)
                .map_err(map_error(maps::OFF_CPU_COUNTS[old]))?,
            None => Vec::new(),
        };
        let class = &mut halves.stacks[old];
        let mut stacks = Stacks::new();
        take_stacks(&mut class.short, batch, &mut stacks)
            .map_err(map_error(maps::SHORT_STACKS[old]))?;
        take_stacks(&mut class.medium, batch, &mut stacks)
            .map_err(map_error(maps::MEDIUM_STACKS[old]))?;
        take_stacks(&mut class.long, batch, &mut stacks)
            .map_err(map_error(maps::LONG_STACKS[old]))?;
        let contexts = take_all(&mut halves.contexts[old], batch)
            .map_err(map_error(maps::CONTEXTS[old]))?
            .into_iter()
            .collect();
        let go_labels = take_all(&mut halves.go_labels[old], batch)
            .map_err(map_error(maps::GO_LABELS[old]))?
            .into_iter()
            .collect();
        // Emptied so that the next interval on this half admits new traces again.
        take_all(&mut halves.traces[old], batch).map_err(map_error(maps::TRACES[old]))?;
        let mut drained = Drained {
            samples,
            off_cpu,
            stacks,
            contexts,
            go_labels,
        };
        if let Some(off_cpu) = &mut halves.off_cpu {
            // After the flip: what is parked from now on is in the other half.
            let parked: Vec<(u64, u8)> = take_all(&mut off_cpu.parked[old], batch)
                .map_err(map_error(maps::OFF_CPU_PARKED[old]))?;
            let named_now = named_by_parked_records(&mut off_cpu.threads, *batch)
                .map_err(map_error(maps::OFF_CPU_THREADS))?;
            self.kept.complete(&mut drained);
            self.kept.keep(
                &drained,
                parked.into_iter().map(|(hash, _)| hash),
                named_now,
            );
        }
        Ok(drained)
    }
}

impl Kept {
    /// Adds to `drained` what its off-CPU records name that an earlier drain took.
    fn complete(&self, drained: &mut Drained) {
        for (key, _) in &drained.off_cpu {
            for hash in names(key) {
                if !drained.stacks.contains_key(&hash)
                    && let Some(stack) = self.stacks.get(&hash)
                {
                    drained.stacks.insert(hash, stack.clone());
                }
                if !drained.contexts.contains_key(&hash)
                    && let Some(context) = self.contexts.get(&hash)
                {
                    drained.contexts.insert(hash, *context);
                }
                if !drained.go_labels.contains_key(&hash)
                    && let Some(labels) = self.go_labels.get(&hash)
                {
                    drained.go_labels.insert(hash, *labels);
                }
            }
        }
    }

    /// Keeps, for the drains to come, what records parked in the drained interval name
    /// (`parked`), and what was kept and is still named by records parked now (`named_now`)
    /// or at the previous drain.
    fn keep(
        &mut self,
        drained: &Drained,
        parked: impl Iterator<Item = u64>,
        named_now: HashSet<u64>,
    ) {
        let old = std::mem::take(self);
        let still_named = named_now
            .iter()
            .chain(&old.named_last)
            .copied()
            .filter(|hash| {
                old.stacks.contains_key(hash)
                    || old.contexts.contains_key(hash)
                    || old.go_labels.contains_key(hash)
            });
        for hash in parked.chain(still_named.collect::<Vec<_>>()) {
            let stack = drained.stacks.get(&hash).or_else(|| old.stacks.get(&hash));
            if let Some(stack) = stack {
                self.stacks.insert(hash, stack.clone());
            }
            let context = drained
                .contexts
                .get(&hash)
                .or_else(|| old.contexts.get(&hash));
            if let Some(context) = context {
                self.contexts.insert(hash, *context);
            }
            let labels = drained
                .go_labels
                .get(&hash)
                .or_else(|| old.go_labels.get(&hash));
            if let Some(labels) = labels {
                self.go_labels.insert(hash, *labels);
            }
        }
        self.named_last = named_now;
    }
}

/// The stack and context hashes an off-CPU record names.
fn names(key: &SampleKey) -> impl Iterator<Item = u64> {
    [key.user_stack, key.kernel_stack, key.context]
        .into_iter()
        .filter(|&hash| hash != NO_STACK && hash != UNSTACKED_WAIT)
}

/// What the records parked in the kernel now name: the waits in progress whose stacks were
/// read.
fn named_by_parked_records(
    threads: &mut HashMap<MapData, u32, OffCpuThread>,
    batch: bool,
) -> Result<HashSet<u64>, MapError> {
    let entries: Vec<(u32, OffCpuThread)> = if batch {
        match batch::read_all(threads.map().fd().as_fd()) {
            Ok(entries) => entries,
            Err(BatchError::Unsupported(_)) => threads.iter().filter_map(Result::ok).collect(),
            Err(BatchError::Failed(io_error)) => {
                return Err(MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error,
                }));
            }
        }
    } else {
        // Entries that go while being read are skipped, not an error.
        threads.iter().filter_map(Result::ok).collect()
    };
    Ok(entries
        .iter()
        .filter(|(_, thread)| thread.parked != 0)
        .flat_map(|(_, thread)| names(&thread.key))
        .collect())
}

/// Takes every entry out of a map nobody writes: in batches, or one entry at a time (three
/// syscalls each) on a kernel without batch operations, which `batch` then remembers.
fn take_all<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    batch: &mut bool,
) -> Result<Vec<(K, V)>, MapError> {
    if *batch {
        match batch::take_all(map.map().fd().as_fd()) {
            Ok(entries) => return Ok(entries),
            Err(BatchError::Unsupported(err)) => {
                tracing::debug!("no batch operations on BPF maps ({err}): draining entry by entry");
                *batch = false;
            }
            Err(BatchError::Failed(io_error)) => {
                return Err(MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_and_delete_batch",
                    io_error,
                }));
            }
        }
    }
    take_one_by_one(map)
}

fn take_one_by_one<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
) -> Result<Vec<(K, V)>, MapError> {
    let entries = map.iter().collect::<Result<Vec<_>, _>>()?;
    for (key, _) in &entries {
        match map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(entries)
}

/// Takes every stack of one depth class into `stacks`.
fn take_stacks<const N: usize>(
    map: &mut HashMap<MapData, u64, Frames<N>>,
    batch: &mut bool,
    stacks: &mut Stacks,
) -> Result<(), MapError> {
    let taken = take_all(map, batch)?;
    stacks.reserve(taken.len());
    stacks.extend(
        taken
            .into_iter()
            .map(|(hash, frames)| (hash, trim(&frames.ips))),
    );
    Ok(())
}

/// Frames up to the first empty slot (the helper zero-fills the rest).
fn trim(ips: &[u64]) -> Box<[u64]> {
    let len = ips.iter().position(|&ip| ip == 0).unwrap_or(ips.len());
    ips[..len].into()
}

fn map_error(name: &'static str) -> impl Fn(MapError) -> BpfError {
    move |source| BpfError::Map { name, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(user_stack: u64, context: u64) -> SampleKey {
        SampleKey {
            pid: 7,
            tid: 8,
            pid_gen: 9,
            user_stack,
            kernel_stack: NO_STACK,
            context,
            comm: [0; 16],
        }
    }

    fn wait() -> SampleValue {
        SampleValue {
            count: 1,
            period_ns: 5_000_000,
        }
    }

    fn context() -> TraceContext {
        TraceContext {
            trace_id: [0xab; 16],
            span_id: [1; 8],
            valid: 1,
            trace_flags: 1,
            attrs_len: 0,
            _pad: [0; 4],
            attrs: [0; profiler_common::MAX_ATTR_BYTES],
        }
    }

    /// A drain of the interval a record was parked in: its stack and context are in it.
    fn drain_with(hash: u64, context_id: u64) -> Drained {
        Drained {
            stacks: [(hash, Box::from([0x40_1000, 0x40_2000]))].into(),
            contexts: [(context_id, context())].into(),
            ..Drained::default()
        }
    }

    /// The drain of a later interval, holding only the record of a wait parked before.
    fn drain_of_record(hash: u64, context_id: u64) -> Drained {
        Drained {
            off_cpu: vec![(waiter(hash, context_id), wait())],
            ..Drained::default()
        }
    }

    #[test]
    fn a_wait_parked_over_several_drains_keeps_its_stack_and_context() {
        let mut kept = Kept::default();
        // Parked in interval 0, still parked at the scans of drains 0 to 2.
        kept.keep(&drain_with(11, 22), [11, 22].into_iter(), [11, 22].into());
        for _ in 0..2 {
            let mut empty = Drained::default();
            kept.complete(&mut empty);
            kept.keep(&empty, std::iter::empty(), [11, 22].into());
        }
        // Ended after drain 3's flip and before its scan: not named by that scan, and counted
        // in interval 4.
        let mut empty = Drained::default();
        kept.complete(&mut empty);
        kept.keep(&empty, std::iter::empty(), HashSet::new());
        let mut drained = drain_of_record(11, 22);
        kept.complete(&mut drained);
        assert_eq!(drained.stacks[&11].as_ref(), &[0x40_1000, 0x40_2000]);
        assert_eq!(drained.contexts[&22].trace_id, [0xab; 16]);
        kept.keep(&drained, std::iter::empty(), HashSet::new());
        // Named by no scan since: dropped at the next drain.
        let mut empty = Drained::default();
        kept.complete(&mut empty);
        kept.keep(&empty, std::iter::empty(), HashSet::new());
        assert!(kept.stacks.is_empty() && kept.contexts.is_empty());
    }

    #[test]
    fn a_wait_that_ends_between_the_flip_and_the_scan_keeps_its_stack() {
        let mut kept = Kept::default();
        // Parked in interval 0 (so listed in the half's parked names), ended right after the
        // flip: no scan ever saw it parked, and its record is in interval 1's counts.
        kept.keep(&drain_with(11, 22), [11, 22].into_iter(), HashSet::new());
        let mut drained = drain_of_record(11, 22);
        kept.complete(&mut drained);
        assert!(drained.stacks.contains_key(&11), "the stack was dropped");
        assert!(
            drained.contexts.contains_key(&22),
            "the context was dropped"
        );
    }

    #[test]
    fn what_no_parked_record_names_is_not_kept() {
        let mut kept = Kept::default();
        kept.keep(&drain_with(11, 22), std::iter::empty(), HashSet::new());
        assert!(kept.stacks.is_empty() && kept.contexts.is_empty());
        // A record of the drained interval itself finds its stack there, not in `kept`.
        let mut drained = drain_with(11, 22);
        drained.off_cpu = vec![(waiter(11, 22), wait())];
        kept.complete(&mut drained);
        assert_eq!(drained.stacks.len(), 1);
    }

    #[test]
    fn trim_stops_at_first_zero() {
        assert_eq!(&*trim(&[3, 2, 1, 0, 0]), &[3, 2, 1]);
        assert_eq!(&*trim(&[0, 0]), &[] as &[u64]);
        assert_eq!(&*trim(&[5, 6]), &[5, 6]);
    }
}
