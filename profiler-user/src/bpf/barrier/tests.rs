use std::time::Instant;

use super::*;

/// Needs CAP_BPF: `cargo xtask test` runs it as root.
#[test]
#[ignore = "needs root: creates BPF maps"]
fn the_barrier_waits_for_a_grace_period() {
    let barrier = ProgramBarrier::new().expect("creating the barrier maps");
    let started = Instant::now();
    for _ in 0..3 {
        barrier
            .wait_for_running_programs()
            .expect("updating the barrier");
    }
    let per_wait = started.elapsed() / 3;
    // The same update on a plain array map returns at once; a grace period takes at least a
    // scheduler tick or two on every CPU.
    let plain = create_map(
        MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..MapCreate::default()
        },
        "plain array",
    )
    .unwrap();
    let (key, value) = (0u32, 7u32);
    let attr = MapUpdate {
        map_fd: plain.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    let started = Instant::now();
    for _ in 0..3 {
        bpf(BPF_MAP_UPDATE_ELEM, &attr).unwrap();
    }
    let per_plain = started.elapsed() / 3;
    println!("barrier {per_wait:?} per wait, plain update {per_plain:?}");
    assert!(
        per_wait > per_plain * 10,
        "barrier {per_wait:?} per wait, plain update {per_plain:?}: no grace period waited"
    );
}
