//! Double-buffered drain of the aggregation maps.
//!
//! The program writes into the half named by the `ACTIVE` map (an interval number; its low bit
//! is the half). To drain, userspace points `ACTIVE` at the other half (the next number), waits
//! until every program run that may have read the old value has finished (a kernel guarantee:
//! [`ProgramBarrier`]), then reads and clears the old half, which no program writes any more. No
//! sample is lost and none is counted twice.

use std::collections::HashMap as StdHashMap;

use std::os::fd::AsFd as _;

use aya::maps::{Array, HashMap, IterableMap as _, MapData, MapError};
use profiler_common::{
    Frames, GoLabels, MediumStack, SampleKey, SampleValue, ShortStack, StackTrace, TraceContext,
    maps,
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
    pub off_cpu: Option<[HashMap<MapData, SampleKey, SampleValue>; 2]>,
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
            Some(counts) => {
                take_all(&mut counts[old], batch).map_err(map_error(maps::OFF_CPU_COUNTS[old]))?
            }
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
        Ok(Drained {
            samples,
            off_cpu,
            stacks,
            contexts,
            go_labels,
        })
    }
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

    #[test]
    fn trim_stops_at_first_zero() {
        assert_eq!(&*trim(&[3, 2, 1, 0, 0]), &[3, 2, 1]);
        assert_eq!(&*trim(&[0, 0]), &[] as &[u64]);
        assert_eq!(&*trim(&[5, 6]), &[5, 6]);
    }
}
