//! The unwind maps of the BPF program (`profiler_common::unwind`): the shared arrays that
//! `unwind::kernel_maps` fills, written a batch at a time (a large file's table is millions of
//! rows: one `bpf(2)` call per element would take seconds), and each process's code ranges.

use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::Arc,
};

use aya::maps::{HashMap, Map, MapData};
use profiler_common::{
    maps,
    unwind::{CodeRange, KernelRow, KernelRule, PageEntry, ProcessSlot, UnwindTable},
};

use super::{
    BpfError, Epoch,
    syscall::{BPF_MAP_UPDATE_BATCH, MapBatch, bpf},
};
use crate::unwind::{kernel_maps::UnwindArrays, loader::RangesMap};

/// How large the unwind maps are, fixed at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindSizes {
    pub rows: u32,
    pub pages: u32,
    pub tables: u32,
    /// Processes walked by tables at once.
    pub processes: u32,
    /// Code ranges of all those processes together.
    pub ranges: u32,
}

/// The unwind maps: the shared arrays and the processes' ranges, written by different owners.
pub struct UnwindMaps {
    pub arrays: UnwindArrayMaps,
    pub ranges: ProcessRangesMap,
}

/// The shared arrays, by descriptor (batch updates).
pub struct UnwindArrayMaps {
    rows: OwnedFd,
    pages: OwnedFd,
    tables: OwnedFd,
    rules: OwnedFd,
}

/// Each process's code ranges: where they are, and the shared range array.
pub struct ProcessRangesMap {
    processes: HashMap<MapData, u32, ProcessSlot>,
    ranges: OwnedFd,
    /// `UNWIND_GENERATION`: the per-CPU caches of rules hold for one generation.
    generation: OwnedFd,
    current: u32,
    /// `UNWIND_STALE`: processes whose walks met code outside their ranges.
    stale: HashMap<MapData, u32, u32>,
    /// Moved on after a process's ranges come or go (the program remembers who has some).
    epoch: Arc<Epoch>,
}

/// Elements written per `bpf(2)` call: bounds the kernel's time in one call.
const BATCH: usize = 16_384;

impl UnwindMaps {
    pub(super) fn take(ebpf: &mut aya::Ebpf, epoch: Arc<Epoch>) -> Result<Self, BpfError> {
        let fd = |ebpf: &mut aya::Ebpf, name: &'static str| -> Result<OwnedFd, BpfError> {
            let map = ebpf
                .take_map(name)
                .ok_or(BpfError::Missing { kind: "map", name })?;
            let Map::Array(data) = map else {
                return Err(BpfError::Missing {
                    kind: "array map",
                    name,
                });
            };
            data.fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| BpfError::Syscall {
                    call: "dup of an unwind map",
                    source,
                })
        };
        let processes = ebpf.take_map(maps::UNWIND_PROCS).ok_or(BpfError::Missing {
            kind: "map",
            name: maps::UNWIND_PROCS,
        })?;
        Ok(Self {
            arrays: UnwindArrayMaps {
                rows: fd(ebpf, maps::UNWIND_ROWS)?,
                pages: fd(ebpf, maps::UNWIND_PAGES)?,
                tables: fd(ebpf, maps::UNWIND_TABLES)?,
                rules: fd(ebpf, maps::UNWIND_RULES)?,
            },
            ranges: ProcessRangesMap {
                processes: HashMap::try_from(processes).map_err(|source| BpfError::Map {
                    name: maps::UNWIND_PROCS,
                    source,
                })?,
                ranges: fd(ebpf, maps::UNWIND_RANGES)?,
                generation: fd(ebpf, maps::UNWIND_GENERATION)?,
                current: 0,
                epoch,
                stale: {
                    let map = ebpf.take_map(maps::UNWIND_STALE).ok_or(BpfError::Missing {
                        kind: "map",
                        name: maps::UNWIND_STALE,
                    })?;
                    HashMap::try_from(map).map_err(|source| BpfError::Map {
                        name: maps::UNWIND_STALE,
                        source,
                    })?
                },
            },
        })
    }
}

impl RangesMap for ProcessRangesMap {
    type Error = std::io::Error;

    fn write_ranges(&mut self, at: u32, ranges: &[CodeRange]) -> std::io::Result<()> {
        write_array(&self.ranges, at, ranges)
    }

    fn set_process(&mut self, pid: u32, slot: ProcessSlot) -> std::io::Result<()> {
        self.processes
            .insert(pid, slot, 0)
            .map_err(std::io::Error::other)?;
        self.epoch.advance()
    }

    /// Its user stacks go back to frame pointers.
    fn remove_process(&mut self, pid: u32) {
        if self.processes.remove(&pid).is_ok()
            && let Err(err) = self.epoch.advance()
        {
            // The program walks the process's stacks by frame pointers only once the epoch
            // moves; until then it finds no ranges and does so anyway.
            tracing::debug!(pid, "moving the epoch on: {err}");
        }
    }

    fn take_stale(&mut self) -> Vec<u32> {
        // Bounded by the map's 4,096 entries.
        let pids: Vec<u32> = self.stale.keys().filter_map(Result::ok).collect();
        for pid in &pids {
            let _ = self.stale.remove(pid);
        }
        pids
    }

    fn next_generation(&mut self) -> std::io::Result<()> {
        self.current = self.current.wrapping_add(1);
        write_array(&self.generation, 0, &[self.current])
    }
}

/// Writes `values` at indices `at..` of the array `map`, a batch per call.
pub(super) fn write_array<T>(map: impl AsFd, at: u32, values: &[T]) -> std::io::Result<()> {
    for (chunk_index, chunk) in values.chunks(BATCH).enumerate() {
        let first = at as usize + chunk_index * BATCH;
        let keys: Vec<u32> = (0..chunk.len())
            .map(|i| u32::try_from(first + i).unwrap_or(u32::MAX))
            .collect();
        let mut attr = MapBatch {
            keys: keys.as_ptr() as u64,
            values: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: map.as_fd().as_raw_fd() as u32,
            ..MapBatch::default()
        };
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
        if attr.count as usize != chunk.len() {
            return Err(std::io::Error::other(format!(
                "the kernel wrote {} of {} unwind entries",
                attr.count,
                chunk.len()
            )));
        }
    }
    Ok(())
}

impl UnwindArrays for UnwindArrayMaps {
    type Error = std::io::Error;

    fn set_rows(&mut self, at: u32, rows: &[KernelRow]) -> std::io::Result<()> {
        write_array(&self.rows, at, rows)
    }

    fn set_pages(&mut self, at: u32, pages: &[PageEntry]) -> std::io::Result<()> {
        write_array(&self.pages, at, pages)
    }

    fn set_table(&mut self, id: u32, table: &UnwindTable) -> std::io::Result<()> {
        // One element, written last by the loader: the update is a full barrier, so the walk
        // that finds this entry finds its rows too.
        write_array(&self.tables, id, std::slice::from_ref(table))
    }

    fn set_rule(&mut self, id: u16, rule: &KernelRule) -> std::io::Result<()> {
        write_array(&self.rules, u32::from(id), std::slice::from_ref(rule))
    }
}
