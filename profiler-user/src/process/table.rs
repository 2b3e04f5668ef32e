//! Snapshots by process generation, and when to let them go.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use profiler_common::{generation_exec_id, generation_start_us};

use super::{FileTable, Liveness, ProcessSnapshot, liveness};

/// Drains between two sweeps of the table against `/proc`: ends that the BPF program could not
/// report (a full ring buffer) are found within this many intervals.
const SWEEP_EVERY: u64 = 6;

/// The first wait before a process's mappings may be read again for an unknown address; it
/// doubles with each read, up to [`MAX_REMAP_WAIT`]: frame-pointer walks through code without
/// frame pointers produce addresses that no read of the mappings will ever explain.
const FIRST_REMAP_WAIT: Duration = Duration::from_secs(10);
const MAX_REMAP_WAIT: Duration = Duration::from_secs(640);

/// A process image: its PID and the generation the BPF program gave it when first seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub pid: u32,
    pub pid_gen: u64,
}

#[derive(Debug)]
struct Entry {
    snapshot: Arc<ProcessSnapshot>,
    /// The drain epoch during which the process image ended.
    ended_in: Option<u64>,
    /// When the mappings may next be read again for an unknown address, and the wait after.
    remap_after: Option<Instant>,
    remap_wait: Duration,
}

impl Entry {
    fn new(snapshot: Arc<ProcessSnapshot>) -> Self {
        Self {
            snapshot,
            ended_in: None,
            remap_after: None,
            remap_wait: FIRST_REMAP_WAIT,
        }
    }
}

/// Every process image the recorder may still have samples of.
///
/// A snapshot is taken when the BPF program reports a new process, and dropped once the drain
/// whose flip followed its end has been symbolized: that drain held its last samples. Drains are
/// numbered (epochs) because symbolization runs on another thread while events keep coming.
#[derive(Debug, Default)]
pub struct ProcessTable {
    files: FileTable,
    processes: HashMap<ProcessKey, Entry>,
    epoch: u64,
}

impl ProcessTable {
    /// Snapshots a newly reported process (once).
    pub fn on_new(&mut self, key: ProcessKey) {
        if !self.processes.contains_key(&key) {
            self.insert(key);
        }
    }

    /// Notes that a process image ended (exit or exec).
    pub fn on_ended(&mut self, key: ProcessKey) {
        if let Some(entry) = self.processes.get_mut(&key) {
            entry.ended_in.get_or_insert(self.epoch);
        }
    }

    /// The snapshot of `key`, taken now if its announcement was missed.
    pub fn get_or_capture(&mut self, key: ProcessKey) -> Arc<ProcessSnapshot> {
        match self.processes.get(&key) {
            Some(entry) => entry.snapshot.clone(),
            None => self.insert(key),
        }
    }

    /// Takes a fresh snapshot of a live process (new libraries since the first one), keeping
    /// its end, if noted. Samples already resolved keep the snapshot they were resolved with. A
    /// process gone meanwhile keeps the snapshot it had.
    pub fn recapture(&mut self, key: ProcessKey) -> Arc<ProcessSnapshot> {
        let Some(entry) = self.processes.get_mut(&key) else {
            return self.insert(key);
        };
        let fresh = ProcessSnapshot::capture(key.pid, key.pid_gen, &mut self.files);
        if !fresh.mappings.is_empty() {
            entry.snapshot = Arc::new(fresh);
        }
        entry.snapshot.clone()
    }

    /// A fresh snapshot for a sampled address that no known mapping holds (a library opened
    /// with `dlopen`, a plugin, JIT code), if this process is due for one: the wait between
    /// two reads doubles each time. `None`: not due.
    pub fn remap(&mut self, key: ProcessKey, now: Instant) -> Option<Arc<ProcessSnapshot>> {
        let entry = self.processes.get_mut(&key)?;
        if entry.ended_in.is_some() || entry.remap_after.is_some_and(|after| now < after) {
            return None;
        }
        entry.remap_after = Some(now + entry.remap_wait);
        entry.remap_wait = (entry.remap_wait * 2).min(MAX_REMAP_WAIT);
        Some(self.recapture(key))
    }

    /// Called right after the halves are flipped; returns the number of the drain just begun.
    /// Ends noted from now on belong to the next drain.
    pub fn begin_drain(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch - 1
    }

    /// Called once drain `epoch` has been symbolized: drops the processes that ended before its
    /// flip (it held their last samples) and closes the files nobody maps any more. Every
    /// [`SWEEP_EVERY`] drains, also ends what `/proc` says is gone ([`Self::sweep`]).
    pub fn finish_drain(&mut self, epoch: u64) {
        self.processes
            .retain(|_, entry| entry.ended_in.is_none_or(|ended| ended > epoch));
        self.files.prune();
        if epoch % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let ended = self.sweep(liveness);
            if ended > 0 {
                tracing::debug!(ended, "processes found gone without an exit event");
            }
        }
    }

    /// Ends every process image whose end the BPF program could not report (a full ring
    /// buffer; a last thread sampled after its exit): its PID is free or runs another process
    /// (`liveness`), or a newer image of the same process (an exec) is known. They go with the
    /// next drain, which holds their last samples. Returns how many were ended.
    pub fn sweep(&mut self, liveness: impl Fn(u32, u64) -> Liveness) -> usize {
        let mut newest: HashMap<(u32, u64), u64> = HashMap::new();
        for key in self.processes.keys() {
            let exec = newest
                .entry((key.pid, generation_start_us(key.pid_gen)))
                .or_default();
            *exec = (*exec).max(generation_exec_id(key.pid_gen));
        }
        let epoch = self.epoch;
        let mut ended = 0;
        for (key, entry) in &mut self.processes {
            if entry.ended_in.is_some() {
                continue;
            }
            let superseded = newest[&(key.pid, generation_start_us(key.pid_gen))]
                > generation_exec_id(key.pid_gen);
            if superseded || liveness(key.pid, key.pid_gen) == Liveness::Gone {
                entry.ended_in = Some(epoch);
                ended += 1;
            }
        }
        ended
    }

    /// Number of process images held.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// Number of distinct files held open.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    fn insert(&mut self, key: ProcessKey) -> Arc<ProcessSnapshot> {
        let snapshot = Arc::new(ProcessSnapshot::capture(
            key.pid,
            key.pid_gen,
            &mut self.files,
        ));
        self.processes.insert(key, Entry::new(snapshot.clone()));
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own process under a generation of our own start time with the given exec count
    /// (`capture` checks the start time).
    fn own(exec_id: u64) -> ProcessKey {
        let pid = std::process::id();
        let stat = procfs::process::Process::new(pid as i32)
            .unwrap()
            .stat()
            .unwrap();
        let start_ns = stat.starttime * (1_000_000_000 / procfs::ticks_per_second());
        ProcessKey {
            pid,
            pid_gen: profiler_common::process_generation(start_ns, exec_id),
        }
    }

    #[test]
    fn the_sweep_ends_gone_processes_and_older_images() {
        let mut table = ProcessTable::default();
        let gone = ProcessKey {
            pid: std::process::id(),
            pid_gen: own(1).pid_gen + 1_000_000,
        };
        table.on_new(own(1));
        table.on_new(own(2));
        table.on_new(gone);
        assert_eq!(table.len(), 3);
        assert_eq!(table.sweep(super::super::liveness), 2);
        // Already ended: not counted again.
        assert_eq!(table.sweep(super::super::liveness), 0);
        let drain = table.begin_drain();
        table.finish_drain(drain);
        assert_eq!(table.len(), 1);
        assert!(!table.get_or_capture(own(2)).mappings.is_empty());
    }

    #[test]
    fn a_snapshot_of_another_generation_is_empty() {
        let mut table = ProcessTable::default();
        let reused = ProcessKey {
            pid: std::process::id(),
            pid_gen: own(1).pid_gen + 1_000_000,
        };
        let snapshot = table.get_or_capture(reused);
        assert!(snapshot.mappings.is_empty() && snapshot.name.is_empty());
        assert!(!table.get_or_capture(own(1)).mappings.is_empty());
    }

    #[test]
    fn remapping_waits_longer_each_time() {
        let mut table = ProcessTable::default();
        let first = table.get_or_capture(own(1));
        let now = Instant::now();
        let second = table
            .remap(own(1), now)
            .expect("the first remap is due at once");
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(table.remap(own(1), now + FIRST_REMAP_WAIT / 2).is_none());
        assert!(table.remap(own(1), now + FIRST_REMAP_WAIT).is_some());
        // The wait doubled.
        let third = now + FIRST_REMAP_WAIT;
        assert!(table.remap(own(1), third + FIRST_REMAP_WAIT).is_none());
        assert!(table.remap(own(1), third + FIRST_REMAP_WAIT * 2).is_some());
        // Unknown processes are not captured by a remap.
        let other = ProcessKey { pid: 1, pid_gen: 5 };
        assert!(table.remap(other, now).is_none());
    }

    #[test]
    fn a_process_that_ended_before_the_flip_goes_with_that_drain() {
        let mut table = ProcessTable::default();
        table.on_new(own(1));
        assert!(table.open_files() > 0);
        table.on_ended(own(1));
        let drain = table.begin_drain();
        table.finish_drain(drain);
        assert!(table.is_empty());
        assert_eq!(table.open_files(), 0);
    }

    #[test]
    fn a_process_that_ended_after_the_flip_waits_for_the_next_drain() {
        let mut table = ProcessTable::default();
        table.on_new(own(1));
        let first = table.begin_drain();
        // Ends while the first drain is still being symbolized: its last samples are in the next.
        table.on_ended(own(1));
        table.finish_drain(first);
        assert_eq!(table.len(), 1);
        let second = table.begin_drain();
        table.finish_drain(second);
        assert!(table.is_empty());
    }

    #[test]
    fn recapture_replaces_the_snapshot() {
        let mut table = ProcessTable::default();
        let first = table.get_or_capture(own(1));
        let second = table.recapture(own(1));
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(&second, &table.get_or_capture(own(1))));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn generations_of_one_pid_are_distinct() {
        let mut table = ProcessTable::default();
        table.on_new(own(1));
        let second = table.get_or_capture(own(2));
        assert_eq!(table.len(), 2);
        table.on_ended(own(1));
        let drain = table.begin_drain();
        table.finish_drain(drain);
        assert_eq!(table.len(), 1);
        assert!(Arc::ptr_eq(&second, &table.get_or_capture(own(2))));
    }
}
