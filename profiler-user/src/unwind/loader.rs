//! Keeps the kernel's unwind maps in step with the processes sampled: a process gets its code
//! ranges when it is first sampled (the BPF program announces it), the tables of the files it
//! maps are asked of the store (built off this thread), and each table reaches the kernel when
//! built; the ranges that name it are rewritten then. A table the store evicts leaves the
//! kernel, and the ranges that named it go back to pending until it is built again.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use profiler_common::unwind::{CodeRange, ProcessSlot, TABLE_NONE, TABLE_PENDING};

use super::{
    arena::Arena,
    kernel_maps::{KernelTables, LoadError, UnwindArrays},
    layout::KernelTable,
    mappings::{CodeMapping, Fingerprint, code_mappings_and_fingerprint, fingerprint},
    ranges::process_ranges,
    store::{Changes, FileKey, Lookup, TableStore},
};

/// Where the loader writes the processes' ranges: the BPF maps, or vectors in tests.
pub trait RangesMap {
    type Error: std::fmt::Display;
    /// Writes `ranges` into the shared range array from index `at`.
    fn write_ranges(&mut self, at: u32, ranges: &[CodeRange]) -> Result<(), Self::Error>;
    /// Points process `pid` at its ranges.
    fn set_process(&mut self, pid: u32, slot: ProcessSlot) -> Result<(), Self::Error>;
    fn remove_process(&mut self, pid: u32);
    /// Ends the generation of the ranges and tables the BPF walk's caches of rules were filled
    /// from: called after every change, so that no cached rule outlives what it was read in.
    fn next_generation(&mut self) -> Result<(), Self::Error>;
    /// The processes whose walks met code outside their ranges since the last call.
    fn take_stale(&mut self) -> Vec<u32>;
}

/// What the loader did, for the log and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderStats {
    /// Processes whose stacks are walked by tables now.
    pub processes: usize,
    /// Processes left to frame pointers: the processes map was full.
    pub processes_refused: u64,
    /// Tables in the kernel now, and their bytes.
    pub tables: usize,
    pub table_bytes: u64,
    /// Tables the kernel maps had no room for (fragmented or full), or that failed to write.
    pub load_failures: u64,
    /// Files without usable unwind information (or too large for the budget).
    pub files_without_table: u64,
    /// Executable mappings beyond the 128 ranges a process keeps.
    pub mappings_dropped: u64,
}

struct Process {
    pid_gen: u64,
    mappings: Vec<CodeMapping>,
    /// The executable mappings as last read ([`fingerprint`]), and when.
    fingerprint: Fingerprint,
    checked: Instant,
    /// Where its ranges are in the shared array, once written.
    slot: Option<ProcessSlot>,
}

pub struct Loader<A, R> {
    store: TableStore,
    kernel: KernelTables<A>,
    ranges: R,
    /// Slots of the shared range array.
    range_slots: Arena,
    /// Slots replaced, reused only at the next poll (a walk may still read them).
    retired: Vec<ProcessSlot>,
    max_processes: usize,
    loaded: HashMap<FileKey, u32>,
    /// Tables the kernel had no room for at the last poll, tried once more after the slots of
    /// the tables evicted for them are reclaimed.
    deferred: Vec<(FileKey, KernelTable)>,
    processes: HashMap<u32, Process>,
    stats: LoaderStats,
}

impl<A: UnwindArrays, R: RangesMap> Loader<A, R> {
    pub fn new(
        store: TableStore,
        kernel: KernelTables<A>,
        ranges: R,
        sizes: crate::bpf::UnwindSizes,
    ) -> Self {
        Self {
            store,
            kernel,
            ranges,
            range_slots: Arena::new(sizes.ranges),
            retired: Vec::new(),
            max_processes: sizes.processes as usize,
            loaded: HashMap::new(),
            deferred: Vec::new(),
            processes: HashMap::new(),
            stats: LoaderStats::default(),
        }
    }

    /// Starts walking process `pid`'s stacks by tables: reads its mappings, asks for their
    /// files' tables, and writes its ranges (pending ones fall back to frame pointers).
    pub fn add_process(&mut self, pid: u32, pid_gen: u64) {
        if self
            .processes
            .get(&pid)
            .is_some_and(|known| known.pid_gen == pid_gen)
        {
            return;
        }
        // An earlier image of this PID: its ranges name other code.
        self.forget(pid);
        if self.processes.len() >= self.max_processes {
            self.stats.processes_refused += 1;
            return;
        }
        let Some((fingerprint, mappings)) = read_mappings(pid) else {
            // Gone already, or not readable: its stacks stay on frame pointers.
            return;
        };
        self.processes.insert(
            pid,
            Process {
                pid_gen,
                mappings,
                fingerprint,
                checked: Instant::now(),
                slot: None,
            },
        );
        self.write_ranges(pid, true);
    }

    /// Rereads the mappings of the processes whose walks met code outside their ranges (a
    /// library opened since, or JIT code), each at most every `every`.
    pub fn refresh_stale(&mut self, every: Duration) {
        for pid in self.ranges.take_stale() {
            self.refresh(pid, every);
        }
    }

    /// Reads process `pid`'s mappings again when they were last read more than `every` ago,
    /// and rewrites its ranges when they changed (a library opened or closed since). Call it
    /// for the processes sampled: their code is the code walked.
    pub fn refresh(&mut self, pid: u32, every: Duration) {
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
        if process.checked.elapsed() < every {
            return;
        }
        process.checked = Instant::now();
        if fingerprint(pid as i32).is_ok_and(|now| now == process.fingerprint) {
            return;
        }
        let Some((fingerprint, mappings)) = read_mappings(pid) else {
            self.forget(pid);
            return;
        };
        process.fingerprint = fingerprint;
        process.mappings = mappings;
        self.write_ranges(pid, true);
    }

    /// Forgets process `pid` (its image ended).
    pub fn remove_process(&mut self, pid: u32, pid_gen: u64) {
        if self
            .processes
            .get(&pid)
            .is_some_and(|known| known.pid_gen == pid_gen)
        {
            self.forget(pid);
        }
    }

    /// Takes in the tables built since the last call: loads them into the kernel, takes out
    /// those evicted, and rewrites the ranges of the processes that map them. Call it about
    /// once a second: the slots of tables taken out at one call are reused at the next.
    pub fn poll(&mut self) {
        self.kernel.reclaim();
        for slot in std::mem::take(&mut self.retired) {
            self.range_slots.free(slot.first, slot.count.max(1));
        }
        let changes = self.store.poll();
        // First in line: the room made for them is free now.
        let deferred = std::mem::take(&mut self.deferred);
        self.take(changes, deferred);
    }

    /// Waits for the tables being built and takes them in: tests.
    pub fn wait_idle(&mut self) {
        let changes = self.store.wait_idle();
        self.take(changes, Vec::new());
        while !self.deferred.is_empty() {
            self.poll();
        }
    }

    fn take(&mut self, changes: Changes, deferred: Vec<(FileKey, KernelTable)>) {
        let mut touched: HashSet<FileKey> = HashSet::new();
        for key in changes.evicted {
            if let Some(id) = self.loaded.remove(&key)
                && let Err(err) = self.kernel.unload(id)
            {
                tracing::warn!("taking an unwind table out of the kernel: {err}");
            }
            touched.insert(key);
        }
        let loads = deferred
            .into_iter()
            .map(|table| (table, true))
            .chain(changes.loaded.into_iter().map(|table| (table, false)));
        for ((key, table), retry) in loads {
            if !self.store.holds(&key) {
                // Evicted while it waited.
                continue;
            }
            match self.kernel.load(&table, self.store.rules()) {
                Ok(id) => {
                    self.loaded.insert(key.clone(), id);
                }
                // The slots of the tables evicted to make room come back at the next poll.
                Err(LoadError::NoRoom { .. } | LoadError::NoTableSlot) if !retry => {
                    self.deferred.push((key, table));
                    continue;
                }
                Err(err) => {
                    self.stats.load_failures += 1;
                    self.store.refused(&key);
                    if !matches!(err, LoadError::NoRoom { .. }) {
                        tracing::warn!("loading an unwind table into the kernel: {err}");
                    }
                }
            }
            touched.insert(key);
        }
        for (key, why) in changes.unavailable {
            self.stats.files_without_table += 1;
            tracing::debug!(?key, "no unwind table: {why}");
            touched.insert(key);
        }
        if touched.is_empty() {
            return;
        }
        self.next_generation();
        let pids: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, process)| {
                process.mappings.iter().any(|mapping| {
                    mapping
                        .key
                        .as_ref()
                        .is_some_and(|key| touched.contains(key))
                })
            })
            .map(|(&pid, _)| pid)
            .collect();
        for pid in pids {
            // Not asking again for tables evicted: a working set larger than the budget would
            // rebuild tables in a loop. A process that maps the file later asks again.
            self.write_ranges(pid, false);
        }
    }

    pub fn stats(&self) -> LoaderStats {
        LoaderStats {
            processes: self.processes.len(),
            tables: self.loaded.len(),
            table_bytes: self.kernel.bytes(),
            ..self.stats
        }
    }

    /// Writes `pid`'s ranges with the tables loaded now; `request` asks the store for the
    /// others (else they stay pending until a process asks).
    fn write_ranges(&mut self, pid: u32, request: bool) {
        let Some(process) = self.processes.get(&pid) else {
            return;
        };
        let (store, loaded) = (&mut self.store, &self.loaded);
        let built = process_ranges(&process.mappings, |mapping| {
            let Some(key) = &mapping.key else {
                return TABLE_NONE;
            };
            if let Some(&id) = loaded.get(key) {
                // Marks it used: the store evicts the least recently used.
                let _ = store.lookup(key, || mapping.path.clone());
                return id;
            }
            if !request {
                return match store.is_unavailable(key) {
                    true => TABLE_NONE,
                    false => TABLE_PENDING,
                };
            }
            match store.lookup(key, || mapping.path.clone()) {
                Lookup::Unavailable => TABLE_NONE,
                Lookup::Building | Lookup::Ready => TABLE_PENDING,
            }
        });
        self.stats.mappings_dropped += built.dropped as u64;
        let count = built.ranges.count;
        let ranges = &built.ranges.ranges[..count as usize];
        // Nothing to walk by tables (Go, or code without unwind information): the kernel's own
        // frame-pointer walk costs less than the same walk step by step here.
        if ranges.iter().all(|range| range.table == TABLE_NONE) {
            if let Some(process) = self.processes.get_mut(&pid)
                && let Some(old) = process.slot.take()
            {
                self.ranges.remove_process(pid);
                self.retired.push(old);
                self.next_generation();
            }
            return;
        }
        // A new slot each time, switched to at once: a walk never reads half-written ranges.
        let Some(first) = self.range_slots.alloc(count.max(1)) else {
            self.stats.processes_refused += 1;
            self.forget(pid);
            return;
        };
        let slot = ProcessSlot { first, count };
        let written = self
            .ranges
            .write_ranges(first, ranges)
            .and_then(|()| self.ranges.set_process(pid, slot));
        if let Err(err) = written {
            tracing::debug!(pid, "writing the unwind ranges: {err}");
            self.range_slots.free(first, count.max(1));
            self.stats.processes_refused += 1;
            self.forget(pid);
            return;
        }
        if let Some(process) = self.processes.get_mut(&pid)
            && let Some(old) = process.slot.replace(slot)
        {
            self.retired.push(old);
        }
        self.next_generation();
    }

    /// Moves the walk's generation on (see [`RangesMap::next_generation`]).
    fn next_generation(&mut self) {
        if let Err(err) = self.ranges.next_generation() {
            tracing::warn!("moving the unwind generation on: {err}");
        }
    }

    /// Stops walking `pid` by tables: frame pointers from now on.
    fn forget(&mut self, pid: u32) {
        if let Some(old) = self.processes.remove(&pid) {
            self.ranges.remove_process(pid);
            self.retired.extend(old.slot);
            self.next_generation();
        }
    }
}

/// The ranges maps in memory: tests, and the simulation in `examples/unwind_fleet.rs`.
#[derive(Debug, Default)]
pub struct VecRanges {
    pub ranges: Vec<CodeRange>,
    pub processes: HashMap<u32, ProcessSlot>,
    pub generation: u32,
}

impl VecRanges {
    /// Room for `ranges` code ranges in all.
    pub fn new(ranges: u32) -> Self {
        Self {
            ranges: vec![CodeRange::default(); ranges as usize],
            ..Self::default()
        }
    }

    /// `pid`'s ranges as the BPF walk reads them.
    pub fn of(&self, pid: u32) -> Option<profiler_common::unwind::ProcessRanges> {
        let slot = self.processes.get(&pid)?;
        let list = self
            .ranges
            .get(slot.first as usize..(slot.first + slot.count) as usize)?;
        let mut out = profiler_common::unwind::ProcessRanges::default();
        out.ranges[..list.len()].copy_from_slice(list);
        out.count = slot.count;
        Some(out)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("index {0} past the range array")]
pub struct PastTheRanges(pub usize);

impl RangesMap for VecRanges {
    type Error = PastTheRanges;
    fn write_ranges(&mut self, at: u32, ranges: &[CodeRange]) -> Result<(), PastTheRanges> {
        let end = at as usize + ranges.len();
        self.ranges
            .get_mut(at as usize..end)
            .ok_or(PastTheRanges(end))?
            .copy_from_slice(ranges);
        Ok(())
    }
    fn set_process(&mut self, pid: u32, slot: ProcessSlot) -> Result<(), PastTheRanges> {
        self.processes.insert(pid, slot);
        Ok(())
    }
    fn remove_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }
    fn take_stale(&mut self) -> Vec<u32> {
        Vec::new()
    }
    fn next_generation(&mut self) -> Result<(), PastTheRanges> {
        self.generation += 1;
        Ok(())
    }
}

/// Process `pid`'s executable mappings and their fingerprint; `None` when the process is gone
/// or its maps cannot be read.
fn read_mappings(pid: u32) -> Option<(Fingerprint, Vec<CodeMapping>)> {
    let (mappings, fingerprint) = code_mappings_and_fingerprint(pid as i32).ok()?;
    Some((fingerprint, mappings))
}

#[cfg(test)]
mod tests;
