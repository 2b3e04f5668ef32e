//! Recording single fixtures by `--pid`: stacks, labels, mappings, kernel frames.

use anyhow::{Result, ensure};
use integration_tests::{
    C_CHAIN, Fixture, HOT_C, HOT_RUST, Pprof, RUST_CHAIN, RUST_WORKER_THREAD, SYSCALLS_C, Sample,
    Want, assert_root, check_fixture_mapping, check_go_pprof, check_hot_chain, check_labels,
    count_where, describe_top_stacks, record_fixture, samples_of_pid, total_count,
};

const SYSCALL_LOOP: Want = Want::Exact("fixture_syscall_loop");

#[test]
#[ignore = "needs root: loads BPF programs"]
fn c_fixture_stacks_labels_and_mapping() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let profiles = record_fixture(&fixture, out.path(), 4, &[])?;
    let samples = samples_of_pid(&profiles, fixture.pid());

    check_hot_chain(&samples, &C_CHAIN)?;
    // Single-threaded: the only thread is the main one, named like the process.
    let comm = fixture.expected_comm();
    check_labels(&samples, &fixture, |tid, name| {
        ensure!(
            tid == i64::from(fixture.pid()),
            "thread_id {tid} in a single-threaded process"
        );
        ensure!(name == comm, "thread_name {name:?}, want {comm:?}");
        Ok(())
    })?;
    check_fixture_mapping(&samples, &fixture, C_CHAIN.leaf)?;
    check_go_pprof(&profiles, C_CHAIN.leaf)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn rust_fixture_stacks_labels_and_mapping() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(HOT_RUST, &[])?;
    let out = tempfile::tempdir()?;
    let profiles = record_fixture(&fixture, out.path(), 4, &[])?;
    let samples = samples_of_pid(&profiles, fixture.pid());

    check_hot_chain(&samples, &RUST_CHAIN)?;
    // The hot chain runs on a named worker thread: its labels differ from the process's.
    let (pid, comm) = (i64::from(fixture.pid()), fixture.expected_comm());
    check_labels(&samples, &fixture, |tid, name| {
        if name == RUST_WORKER_THREAD {
            ensure!(
                tid != pid,
                "worker thread labelled with the process's id {tid}"
            );
        } else {
            ensure!(
                name == comm,
                "thread_name {name:?}, want {comm:?} or the worker's"
            );
        }
        Ok(())
    })?;
    let leaf_on_other_threads = count_where(&samples, |p, s| {
        p.has_leaf(s, RUST_CHAIN.leaf) && p.label_str(s, "thread_name") != Some(RUST_WORKER_THREAD)
    });
    ensure!(
        leaf_on_other_threads == 0,
        "{leaf_on_other_threads} leaf samples off the worker"
    );
    check_fixture_mapping(&samples, &fixture, RUST_CHAIN.leaf)?;
    check_go_pprof(&profiles, RUST_CHAIN.leaf)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn syscall_fixture_has_named_kernel_frames_under_user_frames() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(SYSCALLS_C, &[])?;
    let out = tempfile::tempdir()?;
    let profiles = record_fixture(&fixture, out.path(), 4, &[])?;
    let samples = samples_of_pid(&profiles, fixture.pid());
    let total = total_count(&samples);
    ensure!(total >= 20, "only {total} samples of the fixture");

    // The fixture lives in read(2): a good share of its samples must carry kernel frames.
    let with_kernel = count_where(&samples, |p, s| p.frames(s).iter().any(|f| f.is_kernel()));
    ensure!(
        with_kernel * 5 >= total,
        "{with_kernel} of {total} samples have kernel frames; top stacks:\n{}",
        describe_top_stacks(&samples, 5)
    );
    check_kernel_frames(&samples)?;

    // Below the kernel part, the user stack still shows who made the syscall.
    let with_caller = count_where(&samples, |p, s| {
        let frames = p.frames(s);
        frames.iter().any(|f| f.is_kernel())
            && frames
                .iter()
                .any(|f| !f.is_kernel() && SYSCALL_LOOP.matches(&f.function))
    });
    ensure!(
        with_caller * 2 >= with_kernel,
        "user part names fixture_syscall_loop in {with_caller} of {with_kernel} kernel samples; \
         top stacks:\n{}",
        describe_top_stacks(&samples, 5)
    );
    check_go_pprof(&profiles, SYSCALL_LOOP)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn no_kernel_stacks_leaves_only_user_frames() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(SYSCALLS_C, &[])?;
    let out = tempfile::tempdir()?;
    let profiles = record_fixture(&fixture, out.path(), 4, &["--no-kernel-stacks"])?;
    let samples = samples_of_pid(&profiles, fixture.pid());
    let total = total_count(&samples);
    ensure!(total >= 20, "only {total} samples of the fixture");

    let with_kernel = count_where(&samples, |p, s| p.frames(s).iter().any(|f| f.is_kernel()));
    ensure!(
        with_kernel == 0,
        "{with_kernel} samples have kernel frames despite the flag"
    );
    // Time spent in the kernel is still attributed to the user code that asked for it.
    let with_caller = count_where(&samples, |p, s| {
        p.stack_names(s).iter().any(|n| SYSCALL_LOOP.matches(n))
    });
    ensure!(
        with_caller * 2 >= total,
        "fixture_syscall_loop in {with_caller} of {total} samples; top stacks:\n{}",
        describe_top_stacks(&samples, 5)
    );
    check_go_pprof(&profiles, SYSCALL_LOOP)
}

/// Kernel frames are named (allowing a rare unresolvable address), include a syscall path
/// somewhere, and all sit on the leaf side of the user frames.
fn check_kernel_frames(samples: &[(&Pprof, &Sample)]) -> Result<()> {
    let (mut kernel, mut named, mut syscall_path) = (0usize, 0usize, false);
    for (p, s) in samples {
        let frames = p.frames(s);
        let user_start = frames
            .iter()
            .position(|f| !f.is_kernel())
            .unwrap_or(frames.len());
        ensure!(
            frames[user_start..].iter().all(|f| !f.is_kernel()),
            "kernel frame above a user frame: {frames:?}"
        );
        for f in &frames[..user_start] {
            kernel += 1;
            named += usize::from(!f.function.is_empty());
            syscall_path |= f.function.to_ascii_lowercase().contains("sys");
        }
    }
    ensure!(
        named * 100 >= kernel * 95,
        "only {named} of {kernel} kernel frames have a function name"
    );
    ensure!(
        syscall_path,
        "no kernel frame names a syscall path (`*sys*`)"
    );
    Ok(())
}
