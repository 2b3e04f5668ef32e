use std::path::Path;

use super::*;

const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";

fn key(n: u8) -> FileKey {
    FileKey::BuildId(vec![n; 20])
}

/// A file's table as the kernel holds it.
fn kernel_of(path: &str) -> KernelTable {
    let table = build(&PathBuf::from(path)).unwrap();
    KernelTable::new(&table, &mut RuleIds::default()).unwrap()
}

/// Room for `tables` in the kernel arrays.
fn room(tables: &[&KernelTable]) -> Capacity {
    Capacity {
        rows: tables.iter().map(|t| t.rows.len() as u32).sum(),
        pages: tables.iter().map(|t| t.pages.len() as u32).sum(),
        tables: 64,
    }
}

const LARGE: Capacity = Capacity {
    rows: 8 << 20,
    pages: 1 << 20,
    tables: 64,
};

fn ready(store: &mut TableStore, key: &FileKey) -> bool {
    matches!(
        store.lookup(key, || unreachable!("asked again")),
        Lookup::Ready
    )
}

#[test]
fn a_table_is_built_once_off_the_caller_and_shared() {
    let mut store = TableStore::new(LARGE).unwrap();
    let libc = key(1);
    assert!(matches!(
        store.lookup(&libc, || PathBuf::from(LIBC)),
        Lookup::Building
    ));
    // A second process mapping the same file: no second build is asked for.
    assert!(matches!(
        store.lookup(&libc, || unreachable!("built twice")),
        Lookup::Building
    ));
    let changes = store.wait_idle();
    let loaded: Vec<_> = changes.loaded.iter().map(|(key, _)| key).collect();
    assert_eq!(loaded, [&libc]);
    // The table is handed over whole; the store keeps its size only.
    assert_eq!(changes.loaded[0].1, kernel_of(LIBC));
    assert!(ready(&mut store, &libc));
    assert_eq!(store.used(), kernel_of(LIBC).bytes() as u64);
}

#[test]
fn the_least_recently_used_table_goes_first() {
    let (small, large) = (kernel_of(LD_SO), kernel_of(LIBC));
    // Room for libc and one loader table, not two.
    let mut store = TableStore::new(room(&[&large, &small])).unwrap();
    let (a, b, c) = (key(1), key(2), key(3));
    store.lookup(&a, || PathBuf::from(LD_SO));
    store.lookup(&b, || PathBuf::from(LIBC));
    store.wait_idle();
    // `a` is used again, then `c` arrives: `b` is the least recently used.
    assert!(ready(&mut store, &a));
    store.lookup(&c, || PathBuf::from(LD_SO));
    let changes = store.wait_idle();
    assert_eq!(changes.evicted, std::slice::from_ref(&b));
    assert!(ready(&mut store, &a) && ready(&mut store, &c));
    assert_eq!(store.used(), 2 * small.bytes() as u64);
    // An evicted table is built again when asked for.
    assert!(matches!(
        store.lookup(&b, || PathBuf::from(LIBC)),
        Lookup::Building
    ));
}

#[test]
fn files_without_a_table_are_not_asked_for_again() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("script.sh");
    std::fs::write(&text, "#!/bin/sh\n").unwrap();
    let mut store = TableStore::new(LARGE).unwrap();
    let (script, missing, huge) = (key(1), key(2), key(3));
    store.lookup(&script, || text.clone());
    store.lookup(&missing, || Path::new("/nonexistent/lib.so").to_path_buf());
    let changes = store.wait_idle();
    assert_eq!(changes.unavailable.len(), 2);
    for k in [&script, &missing] {
        assert!(matches!(
            store.lookup(k, || unreachable!("asked again")),
            Lookup::Unavailable
        ));
    }
    // A table larger than the whole budget is refused, not evicting everything else.
    let mut small = TableStore::new(Capacity::of_bytes(1024, 64)).unwrap();
    small.lookup(&huge, || PathBuf::from(LIBC));
    let changes = small.wait_idle();
    assert!(
        matches!(
            changes.unavailable.as_slice(),
            [(_, Unavailable::TooLarge { .. })]
        ),
        "{changes:?}"
    );
    assert_eq!(small.used(), 0);
}

#[test]
fn a_file_is_known_by_its_build_id_else_by_its_inode() {
    let libc = FileKey::of(File::open(LIBC).unwrap()).unwrap();
    assert!(
        matches!(&libc, FileKey::BuildId(id) if id.len() == 20),
        "{libc:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain");
    std::fs::write(&path, b"no ELF").unwrap();
    let plain = FileKey::of(File::open(&path).unwrap()).unwrap();
    assert!(matches!(plain, FileKey::Inode { size: 6, .. }), "{plain:?}");
    // A copy of libc is the same table.
    let copy = dir.path().join("libc.so.6");
    std::fs::copy(LIBC, &copy).unwrap();
    assert_eq!(FileKey::of(File::open(&copy).unwrap()).unwrap(), libc);
}
