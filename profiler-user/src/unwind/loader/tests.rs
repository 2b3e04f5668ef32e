use std::process::{Child, Command, Stdio};

use profiler_common::unwind::MAX_CODE_RANGES;

use super::*;
use crate::unwind::loader::VecRanges;
use crate::{
    bpf::UnwindSizes,
    unwind::{
        kernel_maps::{Capacity, Found, VecArrays, rule_at},
        mappings::code_mappings,
    },
};

const SIZES: UnwindSizes = UnwindSizes {
    rows: 4 << 20,
    pages: 1 << 16,
    tables: 64,
    processes: 16,
    ranges: 16 * MAX_CODE_RANGES as u32,
};

fn loader(store_bytes: usize, sizes: UnwindSizes) -> Loader<VecArrays, VecRanges> {
    let capacity = Capacity {
        rows: sizes.rows,
        pages: sizes.pages,
        tables: sizes.tables,
    };
    let ranges = VecRanges::new(sizes.ranges);
    Loader::new(
        TableStore::new(Capacity::of_bytes(store_bytes as u64, sizes.tables)).unwrap(),
        KernelTables::new(VecArrays::new(capacity), capacity),
        ranges,
        sizes,
    )
}

/// A process that maps the executable and libc and waits.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Self {
        Self(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tables_of(loader: &Loader<VecArrays, VecRanges>, pid: u32) -> Vec<u32> {
    let ranges = loader.ranges.of(pid).expect("the process has ranges");
    ranges.ranges[..ranges.count as usize]
        .iter()
        .map(|range| range.table)
        .collect()
}

/// Waits for the process's maps to hold its libraries (exec has happened).
fn mapped(pid: u32) {
    for _ in 0..200 {
        if code_mappings(pid as i32).is_ok_and(|m| m.iter().any(|m| m.path.ends_with("libc.so.6")))
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("process {pid} never mapped libc");
}

#[test]
fn a_process_is_pending_until_its_tables_are_built_then_walks_by_them() {
    let sleeper = Sleeper::start();
    let pid = sleeper.pid();
    mapped(pid);
    let mut loader = loader(64 << 20, SIZES);
    loader.add_process(pid, 1);
    let before = tables_of(&loader, pid);
    assert!(before.len() >= 2, "the executable and libc: {before:?}");
    assert!(
        before
            .iter()
            .all(|&table| table == TABLE_PENDING || table == TABLE_NONE)
            && before
                .iter()
                .filter(|&&table| table == TABLE_PENDING)
                .count()
                >= 2,
        "nothing is built before the first poll (the vDSO, no file, has no table): {before:?}"
    );
    loader.wait_idle();
    let after = tables_of(&loader, pid);
    assert!(
        !after.contains(&TABLE_PENDING)
            && after.iter().filter(|&&t| t < TABLE_PENDING).count() >= 2,
        "every file of `sleep` has .eh_frame (the vDSO, no file, has no table): {after:?}"
    );
    // A libc address finds, through the kernel's arrays, the rule libc's own table gives.
    let ranges = loader.ranges.of(pid).unwrap();
    let libc = code_mappings(pid as i32)
        .unwrap()
        .into_iter()
        .find(|m| m.path.ends_with("libc.so.6"))
        .unwrap();
    let arrays = loader.kernel.arrays();
    let middle = libc.start + (libc.end - libc.start) / 2;
    let Found::Rule(rule) = rule_at(&ranges, &arrays.tables, &arrays.pages, &arrays.rows, middle)
    else {
        panic!("no rule in the middle of libc's code");
    };
    assert_ne!(rule, profiler_common::unwind::NO_RULE);
    let stats = loader.stats();
    assert_eq!((stats.processes, stats.load_failures), (1, 0));
    assert!(stats.tables >= 2 && stats.table_bytes > 0, "{stats:?}");
}

#[test]
fn processes_share_tables_and_their_slots_come_back_after_they_end() {
    let (one, two) = (Sleeper::start(), Sleeper::start());
    mapped(one.pid());
    mapped(two.pid());
    let mut loader = loader(64 << 20, SIZES);
    loader.add_process(one.pid(), 1);
    loader.add_process(two.pid(), 1);
    loader.wait_idle();
    let tables = loader.stats().tables;
    assert_eq!(
        tables_of(&loader, one.pid()).len(),
        tables_of(&loader, two.pid()).len()
    );
    assert_eq!(
        {
            let mut a = tables_of(&loader, one.pid());
            a.sort();
            a
        },
        {
            let mut b = tables_of(&loader, two.pid());
            b.sort();
            b
        },
        "the same files, the same tables"
    );
    let used = loader.range_slots.used();
    // The same generation again changes nothing; a later one rereads the process.
    loader.add_process(one.pid(), 1);
    assert_eq!(loader.range_slots.used(), used);
    // An image that ended is forgotten: no ranges, and its slots are free after a poll.
    loader.remove_process(one.pid(), 2);
    assert!(loader.ranges.of(one.pid()).is_some(), "another generation");
    let generation = loader.ranges.generation;
    loader.remove_process(one.pid(), 1);
    assert!(loader.ranges.of(one.pid()).is_none());
    assert!(
        loader.ranges.generation > generation,
        "the walk's cached rules end with the ranges they were read in"
    );
    assert_eq!(loader.range_slots.used(), used, "retired, not reused yet");
    loader.poll();
    assert!(loader.range_slots.used() < used);
    assert_eq!(
        loader.stats().tables,
        tables,
        "tables stay while another maps them"
    );
}

#[test]
fn a_full_processes_map_leaves_a_process_to_frame_pointers_and_says_so() {
    let (one, two) = (Sleeper::start(), Sleeper::start());
    mapped(one.pid());
    mapped(two.pid());
    let mut loader = loader(
        64 << 20,
        UnwindSizes {
            processes: 1,
            ..SIZES
        },
    );
    loader.add_process(one.pid(), 1);
    loader.add_process(two.pid(), 1);
    assert!(loader.ranges.of(two.pid()).is_none());
    assert_eq!(loader.stats().processes_refused, 1);
}

#[test]
fn a_table_evicted_for_the_budget_sends_its_ranges_back_to_pending() {
    let sleeper = Sleeper::start();
    let pid = sleeper.pid();
    mapped(pid);
    // Room for the smaller tables, not for all: libc (0.1 MiB) and another do not fit both.
    let mut loader = loader(120_000, SIZES);
    loader.add_process(pid, 1);
    loader.wait_idle();
    let tables = tables_of(&loader, pid);
    assert!(
        tables.contains(&TABLE_PENDING) || tables.contains(&TABLE_NONE),
        "something did not fit: {tables:?}"
    );
    assert!(
        tables.iter().any(|&table| table < TABLE_PENDING),
        "something did: {tables:?}"
    );
    assert!(loader.stats().table_bytes <= 120_000);
    // What was evicted made room for what came after it, once its slots were reclaimed.
    assert_eq!(loader.stats().load_failures, 0, "{:?}", loader.stats());
}

#[test]
fn what_the_store_admits_the_kernel_holds() {
    let sleeper = Sleeper::start();
    let pid = sleeper.pid();
    mapped(pid);
    // Room for every table of `sleep` as the store counts, barely: the kernel arrays made of
    // the same bytes (as the recorder makes them) must hold them all, or the loader fails to
    // load tables the store keeps room for and never evicts anything to make room.
    let mut probe = loader(64 << 20, SIZES);
    probe.add_process(pid, 1);
    probe.wait_idle();
    let needed = probe.store.used() + probe.store.used() / 10;
    let mut loader = budget_loader(needed);
    loader.add_process(pid, 1);
    loader.wait_idle();
    let stats = loader.stats();
    assert_eq!(stats.load_failures, 0, "{stats:?}");
    assert!(stats.tables >= 2, "{stats:?}");
    assert!(
        !tables_of(&loader, pid).contains(&TABLE_PENDING),
        "{:?}",
        tables_of(&loader, pid)
    );
}

/// A loader whose store and kernel arrays share `bytes`, as the recorder's are made.
fn budget_loader(bytes: u64) -> Loader<VecArrays, VecRanges> {
    let capacity = Capacity::of_bytes(bytes, 64);
    Loader::new(
        TableStore::new(capacity).unwrap(),
        KernelTables::new(VecArrays::new(capacity), capacity),
        VecRanges::new(SIZES.ranges),
        SIZES,
    )
}

#[test]
fn a_table_evicted_for_another_makes_room_for_it_at_the_next_poll() {
    // `sleep` again, without its build ID: another file to the store (known by its inode),
    // with a table of the very size of `sleep`'s.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sleep-copy");
    let status = Command::new("objcopy")
        .args(["--remove-section", ".note.gnu.build-id"])
        .arg(which_sleep())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success(), "objcopy failed");
    let first = Sleeper::start();
    mapped(first.pid());
    // Room for the three tables of `sleep` (itself, libc, ld.so) and not one more.
    let mut probe = loader(64 << 20, SIZES);
    probe.add_process(first.pid(), 1);
    probe.wait_idle();
    let full = probe.kernel.used();
    let mut loader = Loader::new(
        TableStore::new(full).unwrap(),
        KernelTables::new(VecArrays::new(full), full),
        VecRanges::new(SIZES.ranges),
        SIZES,
    );
    loader.add_process(first.pid(), 1);
    loader.wait_idle();
    loader.poll();
    assert_eq!(loader.stats().tables, 3, "{:?}", loader.stats());
    // The copy's table takes the place of `sleep`'s, the least recently used, whose slots are
    // free only once reclaimed: loaded at the poll after the one that evicted it, not lost.
    let second = Sleeper(
        Command::new(&copy)
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    mapped(second.pid());
    loader.add_process(second.pid(), 1);
    loader.wait_idle();
    let stats = loader.stats();
    assert_eq!((stats.tables, stats.load_failures), (3, 0), "{stats:?}");
    assert!(
        tables_of(&loader, second.pid())
            .iter()
            .filter(|&&table| table < TABLE_PENDING)
            .count()
            == 3,
        "{:?}",
        tables_of(&loader, second.pid())
    );
}

fn which_sleep() -> std::path::PathBuf {
    ["/usr/bin/sleep", "/bin/sleep"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|path| path.exists())
        .expect("sleep")
}
