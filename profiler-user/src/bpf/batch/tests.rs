use std::os::fd::{AsFd, OwnedFd};

use super::*;
use crate::bpf::syscall::{BPF_MAP_TYPE_HASH, BPF_MAP_UPDATE_BATCH, MapCreate, create_map};

type Value = [u64; 4];

fn value_of(key: u64) -> Value {
    [key, key * 3, !key, 7]
}

/// A hash map holding keys `0..entries`, each with [`value_of`] it.
fn filled_map(entries: u32) -> OwnedFd {
    let map = create_map(
        MapCreate {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 8,
            value_size: std::mem::size_of::<Value>() as u32,
            max_entries: entries,
            ..MapCreate::default()
        },
        "hash map",
    )
    .expect("creating a hash map");
    let keys: Vec<u64> = (0..u64::from(entries)).collect();
    let values: Vec<Value> = keys.iter().map(|&key| value_of(key)).collect();
    let mut attr = MapBatch {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: entries,
        map_fd: map.as_raw_fd() as u32,
        ..MapBatch::default()
    };
    bpf(BPF_MAP_UPDATE_BATCH, &mut attr).expect("filling the map");
    assert_eq!(attr.count, entries);
    map
}

fn check_all_taken(mut taken: Vec<(u64, Value)>, entries: u32) {
    taken.sort_unstable_by_key(|(key, _)| *key);
    assert_eq!(taken.len(), entries as usize, "entries taken");
    for (expected, (key, value)) in (0..u64::from(entries)).zip(taken) {
        assert_eq!(key, expected);
        assert_eq!(value, value_of(key));
    }
}

/// Needs CAP_BPF: `cargo xtask test` runs it as root.
#[test]
#[ignore = "needs root: creates BPF maps"]
fn takes_every_entry_of_a_60k_map_once_and_leaves_it_empty() {
    let map = filled_map(60_000);
    let taken: Vec<(u64, Value)> = take_all(map.as_fd()).expect("draining");
    check_all_taken(taken, 60_000);
    let again: Vec<(u64, Value)> = take_all(map.as_fd()).expect("draining again");
    assert!(again.is_empty(), "{} entries left behind", again.len());
}

/// With room for one entry per call, buckets holding several entries answer "no room":
/// the room grows and nothing is lost or repeated.
#[test]
#[ignore = "needs root: creates BPF maps"]
fn grows_its_room_for_buckets_larger_than_asked() {
    let map = filled_map(512);
    let taken: Vec<(u64, Value)> = take_all_by(map.as_fd(), 1).expect("draining");
    check_all_taken(taken, 512);
}

/// Needs CAP_BPF: `cargo xtask test` runs it as root.
#[test]
#[ignore = "needs root: creates BPF maps"]
fn reads_every_entry_of_a_map_and_leaves_it_full() {
    let map = filled_map(5_000);
    let read: Vec<(u64, Value)> = read_all(map.as_fd()).expect("reading");
    check_all_taken(read, 5_000);
    let again: Vec<(u64, Value)> = read_all(map.as_fd()).expect("reading again");
    check_all_taken(again, 5_000);
}
