//! Snapshots by process generation, and when to let them go.

use std::{collections::HashMap, sync::Arc};

use super::{FileTable, ProcessSnapshot};

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
    /// its end, if noted. Samples already resolved keep the snapshot they were resolved with.
    pub fn recapture(&mut self, key: ProcessKey) -> Arc<ProcessSnapshot> {
        let ended_in = self.processes.get(&key).and_then(|e| e.ended_in);
        let snapshot = self.insert(key);
        if let Some(entry) = self.processes.get_mut(&key) {
            entry.ended_in = ended_in;
        }
        snapshot
    }

    /// Called right after the halves are flipped; returns the number of the drain just begun.
    /// Ends noted from now on belong to the next drain.
    pub fn begin_drain(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch - 1
    }

    /// Called once drain `epoch` has been symbolized: drops the processes that ended before its
    /// flip (it held their last samples) and closes the files nobody maps any more.
    pub fn finish_drain(&mut self, epoch: u64) {
        self.processes
            .retain(|_, entry| entry.ended_in.is_none_or(|ended| ended > epoch));
        self.files.prune();
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
        let snapshot = Arc::new(ProcessSnapshot::capture(key.pid, &mut self.files));
        self.processes.insert(
            key,
            Entry {
                snapshot: snapshot.clone(),
                ended_in: None,
            },
        );
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(pid_gen: u64) -> ProcessKey {
        ProcessKey {
            pid: std::process::id(),
            pid_gen,
        }
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
