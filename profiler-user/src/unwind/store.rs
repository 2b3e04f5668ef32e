//! The unwind tables held for the kernel, within its arrays' capacity (a share of
//! `--unwind-memory-mb`, counted in row and page slots as the arrays hold them): one per file, keyed by
//! what the file holds (its build ID, else its device, inode, size and change time), so every
//! process that maps a file, in any container, shares its table. A table is built the first
//! time a sample needs it, on a thread of its own (sampling never waits: until it is ready
//! that file's frames fall back to frame pointers, counted), and the least recently used tables
//! go first when the budget is reached. A built table goes to the kernel and is not kept here:
//! the store remembers only its size (the rows would double the memory tables take), and a
//! table evicted is built again when a process asks for it.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    path::PathBuf,
    sync::mpsc,
    thread,
    time::Instant,
};

use super::{
    kernel_maps::{Capacity, SLOT_BYTES},
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
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Built and handed over (in [`Changes::loaded`]).
    Ready,
    /// Asked for, not built yet.
    Building,
    Unavailable,
}

/// What [`TableStore::poll`] changed, for the loader of the kernel maps.
#[derive(Debug, Default)]
pub struct Changes {
    /// Tables built, to load into the kernel: the store keeps only their size.
    pub loaded: Vec<(FileKey, KernelTable)>,
    pub evicted: Vec<FileKey>,
    pub unavailable: Vec<(FileKey, Unavailable)>,
}

struct Entry {
    slots: Slots,
    last_used: u64,
}

/// Row and page-entry slots of the kernel arrays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slots {
    rows: u64,
    pages: u64,
}

impl Slots {
    fn of(table: &KernelTable) -> Self {
        Self {
            rows: table.rows.len() as u64,
            pages: table.pages.len() as u64,
        }
    }

    fn within(self, capacity: Self) -> bool {
        self.rows <= capacity.rows && self.pages <= capacity.pages
    }
}

pub struct TableStore {
    capacity: Slots,
    used: Slots,
    clock: u64,
    tables: HashMap<FileKey, Entry>,
    building: HashSet<FileKey>,
    unavailable: HashSet<FileKey>,
    rule_ids: RuleIds,
    requests: mpsc::Sender<(FileKey, PathBuf)>,
    built: mpsc::Receiver<(FileKey, Result<FileTable, Unavailable>)>,
}

impl TableStore {
    /// A store of the tables the kernel arrays of `capacity` hold, with its builder thread.
    pub fn new(capacity: Capacity) -> std::io::Result<Self> {
        Self::with_cpu_share(capacity, BUILDER_CPU_SHARE)
    }

    /// [`Self::new`] whose builder takes at most `share` of one core (1.0: no pause; tests).
    pub fn with_cpu_share(capacity: Capacity, share: f64) -> std::io::Result<Self> {
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
                    let large = table
                        .as_ref()
                        .is_ok_and(|table| table.rows.len() >= LARGE_TABLE_ROWS);
                    if done.send((key, table)).is_err() {
                        break;
                    }
                    // Its entries, rows and file data are freed by now.
                    if large {
                        crate::allocator::release_free_memory();
                    }
                    let busy = started.elapsed();
                    // A whole host's files at start-up (or a 95 MB library) would otherwise
                    // take a core for seconds: the adaptive controller would see the profiler's
                    // own load, and the overhead budget would pay for it.
                    thread::sleep(busy.mul_f64(pause_per_busy));
                }
            })?;
        Ok(Self {
            capacity: Slots {
                rows: u64::from(capacity.rows),
                pages: u64::from(capacity.pages),
            },
            used: Slots::default(),
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
            return Lookup::Ready;
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

    /// Whether the table of `key` is held (built, and not evicted since).
    pub fn holds(&self, key: &FileKey) -> bool {
        self.tables.contains_key(key)
    }

    /// Whether the file `key` names was found to have no table.
    pub fn is_unavailable(&self, key: &FileKey) -> bool {
        self.unavailable.contains(key)
    }

    /// The table of `key` could not be put into the kernel: its bytes are free again, and the
    /// file is not asked for again (like a file without a table).
    pub fn refused(&mut self, key: &FileKey) {
        if let Some(entry) = self.tables.remove(key) {
            self.release(entry.slots);
        }
        self.unavailable.insert(key.clone());
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
                let slots = Slots::of(&table);
                self.used.rows += slots.rows;
                self.used.pages += slots.pages;
                self.tables.insert(
                    key.clone(),
                    Entry {
                        slots,
                        last_used: self.clock,
                    },
                );
                self.evict_for(&key, changes);
                changes.loaded.push((key, table));
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

    /// Bytes the tables held take in the kernel arrays.
    pub fn used(&self) -> u64 {
        (self.used.rows + self.used.pages) * SLOT_BYTES
    }

    fn release(&mut self, slots: Slots) {
        self.used.rows -= slots.rows;
        self.used.pages -= slots.pages;
    }

    fn admit(&mut self, table: &FileTable) -> Result<KernelTable, Unavailable> {
        let kernel = KernelTable::new(table, &mut self.rule_ids)?;
        if !Slots::of(&kernel).within(self.capacity) {
            return Err(Unavailable::TooLarge {
                bytes: kernel.bytes(),
            });
        }
        Ok(kernel)
    }

    /// Evicts least recently used tables other than `keep` until the capacity holds.
    fn evict_for(&mut self, keep: &FileKey, changes: &mut Changes) {
        while !self.used.within(self.capacity) {
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
                self.release(entry.slots);
            }
            // Built in this same poll: not handed over after all.
            changes.loaded.retain(|(key, _)| *key != oldest);
            changes.evicted.push(oldest);
        }
    }
}

/// Rows from which a table's build gives its memory back at once (1.5 MiB of build entries
/// and more; a trim costs about 2 ms, and a host has a few dozen such files).
const LARGE_TABLE_ROWS: usize = 1 << 16;

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
