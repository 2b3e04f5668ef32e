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
    let plain = one_slot_array().unwrap();
    let started = Instant::now();
    for _ in 0..3 {
        update_u32(plain.as_fd(), 0, 7).unwrap();
    }
    let per_plain = started.elapsed() / 3;
    println!("barrier {per_wait:?} per wait, plain update {per_plain:?}");
    assert!(
        per_wait > per_plain * 10,
        "barrier {per_wait:?} per wait, plain update {per_plain:?}: no grace period waited"
    );
}
