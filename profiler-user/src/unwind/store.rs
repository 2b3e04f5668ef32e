//! The unwind tables held for the kernel, within `--unwind-memory-mb`: one per file, keyed by
//! what the file holds (its build ID, else its device, inode, size and change time), so every
//! process that maps a file, in any container, shares its table. A table is built the first
//! time a sample needs it, on a thread of its own (sampling never waits: until it is ready
//! that file's frames fall back to frame pointers, counted), and the least recently used tables
//! go first when the budget is reached.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    path::PathBuf,
    sync::{Arc, mpsc},
    thread,
    time::Instant,
};

use super::{
    layout::{KernelTable, LayoutError},
    rule::RuleIds,
    table::{self, FileTable, TableError},
};
use crate::elf_file::ElfFile;

/// What a file's table is known by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FileKey {
    BuildId(Vec<u8>),
    Inode {
        device: u64,
        inode: u64,
        size: u64,
        changed_ns: i128,
    },
}

impl FileKey {
    /// The key of an open file: its GNU build ID, else its identity on disk.
    pub fn of(file: File) -> std::io::Result<Self> {
        let metadata = file.metadata()?;
        Ok(Self::of_elf(&ElfFile::new(file), &metadata))
    }

    /// [`Self::of`] for a file already open as `elf`, whose metadata is `metadata`.
    pub fn of_elf(elf: &ElfFile, metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        if let Ok(Some(id)) = crate::elf_file::build_id(elf) {
            return Self::BuildId(id);
        }
        Self::Inode {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            changed_ns: i128::from(metadata.ctime()) * 1_000_000_000
                + i128::from(metadata.ctime_nsec()),
        }
    }
}

/// Why a file has no table (it is not asked for again).
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("cannot open it: {0}")]
    Open(#[source] std::io::Error),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("its table ({bytes} bytes) is larger than --unwind-memory-mb")]
    TooLarge { bytes: usize },
}

/// A file's table, as far as the store knows.
#[derive(Debug)]
pub enum Lookup {
    Ready(Arc<KernelTable>),
    /// Asked for, not built yet.
    Building,
    Unavailable,
}

/// What [`TableStore::poll`] changed, for the loader of the kernel maps.
#[derive(Debug, Default)]
pub struct Changes {
    pub loaded: Vec<FileKey>,
    pub evicted: Vec<FileKey>,
    pub unavailable: Vec<(FileKey, Unavailable)>,
}

struct Entry {
    table: Arc<KernelTable>,
    last_used: u64,
}

pub struct TableStore {
    budget: usize,
    used: usize,
    clock: u64,
    tables: HashMap<FileKey, Entry>,
    building: HashSet<FileKey>,
    unavailable: HashSet<FileKey>,
    rule_ids: RuleIds,
    requests: mpsc::Sender<(FileKey, PathBuf)>,
    built: mpsc::Receiver<(FileKey, Result<FileTable, Unavailable>)>,
}

impl TableStore {
    /// A store of at most `budget` bytes of kernel tables, with its builder thread.
    pub fn new(budget: usize) -> std::io::Result<Self> {
        Self::with_cpu_share(budget, BUILDER_CPU_SHARE)
    }

    /// [`Self::new`] whose builder takes at most `share` of one core (1.0: no pause; tests).
    pub fn with_cpu_share(budget: usize, share: f64) -> std::io::Result<Self> {
        let (requests, jobs) = mpsc::channel::<(FileKey, PathBuf)>();
        let (done, built) = mpsc::channel();
        let pause_per_busy = (1.0 / share.clamp(0.01, 1.0)) - 1.0;
        thread::Builder::new()
            .name("unwind-tables".to_owned())
            .spawn(move || {
                lower_priority();
                // Ends when the store (the only sender) is dropped.
                for (key, path) in jobs {
                    let started = Instant::now();
                    let table = build(&path);
                    let busy = started.elapsed();
                    if done.send((key, table)).is_err() {
                        break;
                    }
                    // A whole host's files at start-up (or a 95 MB library) would otherwise
                    // take a core for seconds: the adaptive controller would see the profiler's
                    // own load, and the overhead budget would pay for it.
                    thread::sleep(busy.mul_f64(pause_per_busy));
                }
            })?;
        Ok(Self {
            budget,
            used: 0,
            clock: 0,
            tables: HashMap::new(),
            building: HashSet::new(),
            unavailable: HashSet::new(),
            rule_ids: RuleIds::default(),
            requests,
            built,
        })
    }

    /// The table of the file `key` names; the first time, asks for it to be built from `path`.
    pub fn lookup(&mut self, key: &FileKey, path: impl FnOnce() -> PathBuf) -> Lookup {
        self.clock += 1;
        if let Some(entry) = self.tables.get_mut(key) {
            entry.last_used = self.clock;
            return Lookup::Ready(entry.table.clone());
        }
        if self.unavailable.contains(key) {
            return Lookup::Unavailable;
        }
        if self.building.insert(key.clone()) && self.requests.send((key.clone(), path())).is_err() {
            // The builder is gone (it never panics on a file: only at shutdown).
            self.building.remove(key);
            return Lookup::Unavailable;
        }
        Lookup::Building
    }

    /// Whether the file `key` names was found to have no table.
    pub fn is_unavailable(&self, key: &FileKey) -> bool {
        self.unavailable.contains(key)
    }

    /// Takes in the tables built since the last call, evicting the least recently used ones
    /// past the budget.
    pub fn poll(&mut self) -> Changes {
        let mut changes = Changes::default();
        while let Ok((key, built)) = self.built.try_recv() {
            self.take(key, built, &mut changes);
        }
        changes
    }

    /// Blocks until nothing is being built: tests, and a clean shutdown.
    pub fn wait_idle(&mut self) -> Changes {
        let mut changes = Changes::default();
        while !self.building.is_empty() {
            let Ok((key, built)) = self.built.recv() else {
                break;
            };
            self.take(key, built, &mut changes);
        }
        changes
    }

    fn take(&mut self, key: FileKey, built: Result<FileTable, Unavailable>, changes: &mut Changes) {
        self.building.remove(&key);
        match built.and_then(|table| self.admit(&table)) {
            Ok(table) => {
                self.clock += 1;
                self.used += table.bytes();
                self.tables.insert(
                    key.clone(),
                    Entry {
                        table: Arc::new(table),
                        last_used: self.clock,
                    },
                );
                changes.loaded.push(key.clone());
                self.evict_for(&key, changes);
            }
            Err(why) => {
                self.unavailable.insert(key.clone());
                changes.unavailable.push((key, why));
            }
        }
    }

    /// Every rule of the tables built so far, by global ID.
    pub fn rules(&self) -> &[super::rule::Rule] {
        self.rule_ids.rules()
    }

    /// Bytes of kernel tables held.
    pub fn used(&self) -> usize {
        self.used
    }

    fn admit(&mut self, table: &FileTable) -> Result<KernelTable, Unavailable> {
        let kernel = KernelTable::new(table, &mut self.rule_ids)?;
        if kernel.bytes() > self.budget {
            return Err(Unavailable::TooLarge {
                bytes: kernel.bytes(),
            });
        }
        Ok(kernel)
    }

    /// Evicts least recently used tables other than `keep` until the budget holds.
    fn evict_for(&mut self, keep: &FileKey, changes: &mut Changes) {
        while self.used > self.budget {
            let Some(oldest) = self
                .tables
                .iter()
                .filter(|(key, _)| *key != keep)
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some(entry) = self.tables.remove(&oldest) {
                self.used -= entry.table.bytes();
            }
            changes.evicted.push(oldest);
        }
    }
}

/// The most of one core the builder thread takes: it pauses after each table for three times
/// as long as the table took.
const BUILDER_CPU_SHARE: f64 = 0.25;

/// The builder yields to everything else on the host (nice 19; a thread's own priority on
/// Linux). Failure leaves it at the process's priority.
fn lower_priority() {
    // SAFETY: plain system calls on the calling thread's own ID.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

fn build(path: &PathBuf) -> Result<FileTable, Unavailable> {
    let file = File::open(path).map_err(Unavailable::Open)?;
    Ok(table::build(&ElfFile::new(file))?)
}

#[cfg(test)]
mod tests;
