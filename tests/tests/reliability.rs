//! Reliability: the profiler under process churn, a target killed mid-record, a reused PID,
//! SIGTERM while a file is being written, a full disk that recovers, and a process whose
//! executable exists only in its own mount namespace, inside a pod's cgroup.
//!
//! Every test here changes what the whole host runs or sees (thousands of processes, a tmpfs,
//! `ns_last_pid`, cgroups, a loaded CPU), so they run one at a time ([`serial`]). Each prints
//! its measured figures (as root: `cargo test -p integration-tests --test reliability --
//! --include-ignored --nocapture`).

use std::{
    collections::{BTreeSet, HashMap},
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use chrono::Utc;
use integration_tests::{
    C_CHAIN, CHURN_C, CHURN_HOT_FN, Fixture, HOT_C, HOT_RUST, LoggedRun, MemoryWatch,
    MountNsProcess, Pprof, RUST_CHAIN, STACKS_C, STACKS_LEAF, Sample, TestCgroup, Tmpfs, Want,
    assert_root, check_fixture_mapping, check_hot_chain, comm_of, describe_top_stacks,
    free_local_address, http_get, leftover_temp_files, log_field, log_lines, log_lines_with,
    metric_value, online_cpus, proc_status_kib, profile_end, profile_start, read_checked_profiles,
    record_command, samples_of_pid, seconds_between, send_signal, serial, spawn_with_pid,
    total_count, wait_for_profile,
};

/// Bound on loading BPF and opening the perf events.
const START_UP: Duration = Duration::from_secs(60);
/// Bound on the profiler's wind-down after a signal or its last target's exit.
const WIND_DOWN: Duration = Duration::from_secs(60);
/// The rate of the tests that look at what is sampled.
const FREQUENCY: u32 = 99;
const FREQUENCY_ARG: &str = "99";

/// The log line of an interval file written.
const WROTE_LOG: &str = "profiler::recorder::pipeline: wrote ";
/// The log line of a profile dropped for want of room.
const DROPPED_LOG: &str = "disk full: a cpu profile was dropped";
/// The log line of the attempt to make room on a full disk.
const MADE_ROOM_LOG: &str = "disk full: deleted the oldest profiles to make room";

// ---------------------------------------------------------------------------------------------
// 1. Process churn

/// Short-lived processes started while the whole host is recorded.
const CHURN_PROCESSES: usize = 5000;
/// Over about this long.
const CHURN_OVER: Duration = Duration::from_secs(62);
/// Each spins this long (wall time: on 2 CPUs part of it is spent waiting for one).
const CHURN_HOT_MS: &str = "20";
/// Launcher threads (each starts a process and waits for it).
const CHURN_LAUNCHERS: usize = 4;
/// Bound on the first interval file written after the churn (the interval is 5 s).
const CHURN_DRAINED: Duration = Duration::from_secs(30);
/// Bound on the profiler's peak resident size.
const RSS_BOUND_KIB: u64 = 200 * 1024;
/// Share of the churn processes' samples that must name their hot function.
const CHURN_NAMED_SHARE: f64 = 0.80;

#[test]
#[ignore = "needs root: loads BPF programs"]
fn process_churn_keeps_the_profiler_up_bounded_and_naming() -> Result<()> {
    assert_root();
    let _serial = serial();
    let out = tempfile::tempdir()?;
    let mut profiler = LoggedRun::spawn(record_command(
        out.path(),
        &["--frequency", FREQUENCY_ARG, "--interval", "5"],
    ))?;
    profiler.wait_until_recording(START_UP)?;
    let memory = MemoryWatch::start(profiler.pid(), Duration::from_secs(1));

    let churn = integration_tests::churn(
        CHURN_C,
        &[CHURN_HOT_MS],
        CHURN_PROCESSES,
        CHURN_OVER,
        CHURN_LAUNCHERS,
    )?;
    // The last processes' samples reach the profiler: an interval file reaches past the churn.
    let churn_ended = Utc::now();
    wait_for_profile(
        out.path(),
        CHURN_DRAINED,
        "interval file ending after the churn",
        |p| profile_end(p) >= churn_ended,
    )?;
    let alive = profiler.is_running()?;
    let peak_kib = proc_status_kib(profiler.pid(), "VmHWM");
    let rss = memory.stop();
    ensure!(
        alive,
        "the profiler died during the churn; log:\n{}",
        profiler.log()
    );
    let peak_kib = peak_kib?;
    profiler.signal(libc::SIGINT)?;
    let output = profiler.wait(WIND_DOWN)?;
    output.ensure_success()?;

    let rss_max = rss.iter().copied().max().unwrap_or(0);
    let rss_last = rss.last().copied().unwrap_or(0);
    println!(
        "churn: {} processes exited 0 ({} failed) in {:.1} s, {:.0}/s, {CHURN_LAUNCHERS} launchers, \
         {CHURN_HOT_MS} ms hot each; starts at most {:.0} ms late",
        churn.succeeded,
        churn.failed,
        churn.elapsed.as_secs_f64(),
        churn.succeeded as f64 / churn.elapsed.as_secs_f64(),
        churn.max_lateness.as_secs_f64() * 1e3,
    );
    println!(
        "churn: profiler VmHWM {:.1} MiB; VmRSS max {:.1}, last {:.1} MiB; each second (MiB): \
         {:?}",
        mib(peak_kib),
        mib(rss_max),
        mib(rss_last),
        rss.iter().map(|&kib| kib / 1024).collect::<Vec<_>>()
    );
    let degraded = log_lines_with(&output.stderr, "lost or degraded samples");
    for line in &degraded {
        println!("churn: profiler log: {}", line.text);
    }
    ensure!(
        churn.succeeded >= CHURN_PROCESSES && churn.failed == 0,
        "{churn:?}"
    );
    ensure!(
        peak_kib < RSS_BOUND_KIB,
        "profiler peak RSS {:.1} MiB, bound {:.0} MiB",
        mib(peak_kib),
        mib(RSS_BOUND_KIB)
    );
    ensure!(
        log_lines(&output.stderr).iter().all(|l| l.level != "ERROR"),
        "errors in the log:\n{}",
        output.stderr
    );

    let profiles = read_checked_profiles(out.path(), FREQUENCY)?;
    // Samples taken while the process ran the fixture: the kernel's comm at sample time (the
    // `comm` label comes from a snapshot, which a process this short may not outlive).
    let comm = comm_of(CHURN_C);
    let samples: Vec<(&Pprof, &Sample)> = profiles
        .iter()
        .flat_map(|p| p.profile.sample.iter().map(move |s| (p, s)))
        .filter(|(p, s)| p.label_str(s, "thread_name") == Some(comm.as_str()))
        .collect();
    let total = total_count(&samples);
    let hot = Want::Exact(CHURN_HOT_FN);
    let named = count(&samples, |p, s| {
        p.stack_names(s).iter().any(|n| hot.matches(n))
    });
    let leaf = count(&samples, |p, s| p.has_leaf(s, hot));
    let kernel_only = count(&samples, |p, s| p.frames(s).iter().all(|f| f.is_kernel()));
    let snapshotless = count(&samples, |p, s| {
        p.label_str(s, "comm") != Some(comm.as_str())
    });
    let pids: BTreeSet<i64> = samples
        .iter()
        .filter_map(|(p, s)| p.label_num(s, "pid"))
        .collect();
    let share = named as f64 / total.max(1) as f64;
    println!(
        "churn: {total} samples of {} processes ({} files); {CHURN_HOT_FN} in the stack of \
         {named} ({:.1}%), the leaf of {leaf}; kernel frames only: {kernel_only}; comm label not \
         from a snapshot: {snapshotless}",
        pids.len(),
        profiles.len(),
        share * 100.0
    );
    let rest: Vec<_> = samples
        .iter()
        .filter(|(p, s)| !p.stack_names(s).iter().any(|n| hot.matches(n)))
        .copied()
        .collect();
    println!(
        "churn: heaviest stacks without {CHURN_HOT_FN}:\n{}",
        describe_top_stacks(&rest, 3)
    );
    ensure!(
        pids.len() * 2 >= CHURN_PROCESSES,
        "samples of only {} of {CHURN_PROCESSES} processes",
        pids.len()
    );
    ensure!(
        share >= CHURN_NAMED_SHARE,
        "{CHURN_HOT_FN} in {named} of {total} samples of the churn; top stacks:\n{}",
        describe_top_stacks(&samples, 8)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. A target killed with SIGKILL mid-record

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_target_killed_mid_record_ends_it_with_whole_named_files() -> Result<()> {
    assert_root();
    let _serial = serial();
    let mut fixture = Fixture::spawn(HOT_RUST, &[])?;
    let out = tempfile::tempdir()?;
    let pid = fixture.pid_arg();
    let mut profiler = LoggedRun::spawn(record_command(
        out.path(),
        &[
            "--pid",
            &pid,
            "--frequency",
            FREQUENCY_ARG,
            "--interval",
            "2",
        ],
    ))?;
    profiler.wait_until_recording(START_UP)?;
    // The time the target is recorded: its sample count is checked against it below.
    let recorded = Duration::from_secs(3);
    thread::sleep(recorded);
    let killed_at = Utc::now();
    let killed = Instant::now();
    send_signal(fixture.pid(), libc::SIGKILL)?;
    fixture.wait(Duration::from_secs(10))?;
    let output = profiler.wait(WIND_DOWN)?;
    let stopped_after = killed.elapsed();
    output.ensure_success()?;

    let profiles = read_checked_profiles(out.path(), FREQUENCY)?;
    let samples = samples_of_pid(&profiles, fixture.pid());
    let total = total_count(&samples);
    let end = profiles.last().map(profile_end).context("no profile")?;
    let expected = f64::from(FREQUENCY) * recorded.as_secs_f64();
    println!(
        "sigkill: profiler stopped {:.2} s after the kill; {} files; {total} samples of the \
         target (about {expected:.0} if it had a CPU to itself); last file ends {:.0} ms after \
         the kill",
        stopped_after.as_secs_f64(),
        profiles.len(),
        seconds_between(end, killed_at) * 1e3
    );
    ensure!(
        output
            .stderr
            .contains("recording stopped reason=TargetsExited"),
        "the recording did not stop because its target exited; log:\n{}",
        output.stderr
    );
    ensure!(
        stopped_after < Duration::from_secs(10),
        "stopped {stopped_after:?} after the kill"
    );
    let left = leftover_temp_files(out.path())?;
    ensure!(left.is_empty(), "temp files left behind: {left:?}");
    ensure!(
        total as f64 >= expected / 4.0,
        "{total} samples in {recorded:?} at {FREQUENCY} Hz"
    );
    ensure!(
        end >= killed_at,
        "the files end {:.0} ms before the kill",
        seconds_between(killed_at, end) * 1e3
    );
    check_hot_chain(&samples, &RUST_CHAIN)
}

// ---------------------------------------------------------------------------------------------
// 3. A PID reused by a new process

#[test]
#[ignore = "needs root: sets ns_last_pid and loads BPF programs"]
fn a_reused_pid_keeps_each_process_its_own_names() -> Result<()> {
    assert_root();
    let _serial = serial();
    let out = tempfile::tempdir()?;
    // One long interval: both processes most likely land in the same file.
    let mut profiler = LoggedRun::spawn(record_command(
        out.path(),
        &["--frequency", FREQUENCY_ARG, "--interval", "20"],
    ))?;
    profiler.wait_until_recording(START_UP)?;

    let mut first = Fixture::spawn(HOT_C, &[])?;
    let pid = first.pid();
    // The first process runs 2 s: enough samples for its stacks and mapping, checked below.
    thread::sleep(Duration::from_secs(2));
    send_signal(pid, libc::SIGKILL)?;
    first.wait(Duration::from_secs(10))?;
    let (mut second, tries) = spawn_with_pid(
        pid,
        200,
        || Fixture::spawn(CHURN_C, &["2000"]),
        Fixture::pid,
    )?;
    second.wait(Duration::from_secs(30))?;
    profiler.signal(libc::SIGINT)?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;

    let profiles = read_checked_profiles(out.path(), FREQUENCY)?;
    let samples = samples_of_pid(&profiles, pid);
    let (first_comm, second_comm) = (first.expected_comm(), second.expected_comm());
    let by_thread_name = |comm: &str| -> Vec<(&Pprof, &Sample)> {
        samples
            .iter()
            .filter(|(p, s)| p.label_str(s, "thread_name") == Some(comm))
            .copied()
            .collect()
    };
    let (a, b) = (by_thread_name(&first_comm), by_thread_name(&second_comm));
    let files_with_both = profiles
        .iter()
        .filter(|p| {
            let comms: BTreeSet<_> = p
                .samples_of_pid(pid)
                .filter_map(|s| p.label_str(s, "thread_name"))
                .collect();
            comms.contains(first_comm.as_str()) && comms.contains(second_comm.as_str())
        })
        .count();
    println!(
        "pid reuse: pid {pid} reused after {tries} tries; {} samples as {first_comm}, {} as \
         {second_comm}, {} otherwise (before exec); {files_with_both} of {} files hold both",
        total_count(&a),
        total_count(&b),
        total_count(&samples) - total_count(&a) - total_count(&b),
        profiles.len()
    );
    // The `comm` label comes from the snapshot of the process generation, `thread_name` from
    // the kernel at sample time: a generation mixed up with the other shows as a mismatch.
    for (samples, comm) in [(&a, &first_comm), (&b, &second_comm)] {
        for (p, s) in samples {
            ensure!(
                p.label_str(s, "comm") == Some(comm.as_str()),
                "a sample of {comm} is labelled comm={:?}",
                p.label_str(s, "comm")
            );
        }
    }
    let names_of = |samples: &[(&Pprof, &Sample)], prefix: &str| -> BTreeSet<String> {
        samples
            .iter()
            .flat_map(|(p, s)| p.stack_names(s))
            .filter(|n| n.starts_with(prefix))
            .collect()
    };
    let foreign_in_a = names_of(&a, "churn_");
    let foreign_in_b = names_of(&b, "fixture_");
    ensure!(
        foreign_in_a.is_empty(),
        "{second_comm}'s functions {foreign_in_a:?} under {first_comm}"
    );
    ensure!(
        foreign_in_b.is_empty(),
        "{first_comm}'s functions {foreign_in_b:?} under {second_comm}"
    );
    check_hot_chain(&a, &C_CHAIN)?;
    check_fixture_mapping(&a, &first, C_CHAIN.leaf)?;
    let hot = Want::Exact(CHURN_HOT_FN);
    let b_total = total_count(&b);
    let b_named = count(&b, |p, s| p.has_leaf(s, hot));
    ensure!(
        b_total >= 20 && b_named * 10 >= b_total * 9,
        "{CHURN_HOT_FN} is the leaf in {b_named} of {b_total} samples of the second process; \
         top stacks:\n{}",
        describe_top_stacks(&b, 5)
    );
    check_fixture_mapping(&b, &second, hot)
}

// ---------------------------------------------------------------------------------------------
// 4. SIGTERM while a file is being written

/// Whole host at this rate, with [`STACKS_C`] on every CPU: interval files of thousands of
/// deep, distinct stacks, which take a while to encode, compress and sync.
const WRITE_FREQUENCY: u32 = 999;
/// How long after the first interval's write was seen each run sends SIGTERM.
const SIGTERM_OFFSETS_MS: [u64; 10] = [0, 1, 2, 3, 5, 8, 12, 20, 35, 60];

#[test]
#[ignore = "needs root: loads BPF programs"]
fn sigterm_during_a_write_leaves_whole_files_and_the_last_interval() -> Result<()> {
    assert_root();
    let _serial = serial();
    let _load = (0..online_cpus())
        .map(|_| Fixture::spawn(STACKS_C, &[]))
        .collect::<Result<Vec<_>>>()?;
    let stacks_comm = comm_of(STACKS_C);
    let frequency = WRITE_FREQUENCY.to_string();
    let mut during_write = 0;
    for offset in SIGTERM_OFFSETS_MS {
        let out = tempfile::tempdir()?;
        let mut profiler = LoggedRun::spawn(record_command(
            out.path(),
            &["--frequency", &frequency, "--interval", "2"],
        ))?;
        profiler.wait_until_recording(START_UP)?;
        let seen_writing = wait_for_first_write(out.path(), Duration::from_secs(30))?;
        // The offset into the write is what each round varies (not a wait for anything).
        thread::sleep(Duration::from_millis(offset));
        let signalled_at = Utc::now();
        profiler.signal(libc::SIGTERM)?;
        let writing = !leftover_temp_files(out.path())?.is_empty();
        during_write += usize::from(writing);
        let output = profiler.wait(WIND_DOWN)?;
        output.ensure_success()?;

        let left = leftover_temp_files(out.path())?;
        ensure!(left.is_empty(), "temp files left behind: {left:?}");
        let hidden: Vec<_> = fs::read_dir(out.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        ensure!(hidden.is_empty(), "hidden files left behind: {hidden:?}");
        let profiles = read_checked_profiles(out.path(), WRITE_FREQUENCY)?;
        let wrote = log_lines_with(&output.stderr, WROTE_LOG).len();
        ensure!(
            profiles.len() == wrote && profiles.len() >= 2,
            "{} files, {wrote} written in the log",
            profiles.len()
        );
        let (interrupted, last) = (&profiles[profiles.len() - 2], &profiles[profiles.len() - 1]);
        let (start, end) = (profile_start(last), profile_end(last));
        // Distinct pprof samples of the fixture that end in its leaf: named, written whole.
        let stacks: usize = interrupted
            .profile
            .sample
            .iter()
            .filter(|s| interrupted.label_str(s, "thread_name") == Some(stacks_comm.as_str()))
            .filter(|s| interrupted.has_leaf(s, Want::Exact(STACKS_LEAF)))
            .count();
        let bytes = fs::metadata(&interrupted.path)?.len();
        println!(
            "sigterm +{offset:>2} ms: write {} when seen, {} at the signal; first file {} \
             stacks of the fixture, {bytes} bytes; last file {:.0} ms before to {:.0} ms after \
             the signal",
            if seen_writing { "in progress" } else { "done" },
            if writing { "in progress" } else { "done" },
            stacks,
            seconds_between(signalled_at, start) * 1e3,
            seconds_between(end, signalled_at) * 1e3,
        );
        ensure!(
            stacks >= 500,
            "{}: only {stacks} stacks of the fixture",
            interrupted.path.display()
        );
        // The last file is the interval the signal cut short: it runs up to the signal.
        ensure!(
            seconds_between(signalled_at, start) > -0.02
                && seconds_between(end, signalled_at) > -0.02,
            "the last file covers {start:?}..{end:?}, the signal came at {signalled_at:?}"
        );
        // Nothing leaked from one run into the next.
        drop(out);
    }
    println!(
        "sigterm: {during_write} of {} signals arrived while a file was being written",
        SIGTERM_OFFSETS_MS.len()
    );
    ensure!(
        during_write >= 2,
        "only {during_write} signals arrived during a write: the test did not test that"
    );
    Ok(())
}

/// Waits until the first interval file is being written (a temp file exists: true) or has been
/// written (false, when the write was quicker than the polling).
fn wait_for_first_write(dir: &Path, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                return Ok(true);
            }
            if name.ends_with(".pb.gz") {
                return Ok(false);
            }
        }
        thread::sleep(Duration::from_micros(200));
    }
    anyhow::bail!("no file written in {} within {timeout:?}", dir.display())
}

// ---------------------------------------------------------------------------------------------
// 5. A full disk that recovers

#[test]
#[ignore = "needs root: mounts a tmpfs and loads BPF programs"]
fn a_full_disk_drops_intervals_and_writing_resumes_when_room_returns() -> Result<()> {
    assert_root();
    let _serial = serial();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let disk = Tmpfs::mount("1m")?;
    // Not a profile: the profiler must neither delete it nor count it.
    let filler = disk.path().join("filler");
    let filler_bytes = disk.fill("filler")?;
    let pid = fixture.pid_arg();
    let metrics = free_local_address()?;
    let metrics_arg = metrics.to_string();
    let mut profiler = LoggedRun::spawn(record_command(
        disk.path(),
        &[
            "--pid",
            &pid,
            "--frequency",
            FREQUENCY_ARG,
            "--interval",
            "1",
            "--metrics-address",
            &metrics_arg,
        ],
    ))?;
    profiler.wait_until_recording(START_UP)?;

    // Full: intervals are dropped, and recording goes on.
    profiler.wait_for_log(Duration::from_secs(30), "two dropped profiles", |log| {
        log_lines_with(log, DROPPED_LOG).len() >= 2
    })?;
    ensure!(
        profiler.is_running()?,
        "the profiler stopped on a full disk"
    );
    let listing = list(disk.path())?;
    ensure!(
        listing == ["filler"],
        "on the full disk: {listing:?}, want the filler alone"
    );
    ensure!(
        fs::metadata(&filler)?.len() == filler_bytes,
        "the filler changed"
    );
    let full = scrape(metrics)?;
    ensure!(
        full.dropped >= 2.0 && full.written == 0.0,
        "on the full disk the metrics say {full:?}"
    );

    // Room again: the next intervals are written.
    let freed_at = Utc::now();
    fs::remove_file(&filler)?;
    profiler.wait_for_log(
        Duration::from_secs(30),
        "two profiles written after the disk had room",
        |log| log_lines_with(log, WROTE_LOG).len() >= 2,
    )?;
    let recovered = scrape(metrics)?;
    profiler.signal(libc::SIGTERM)?;
    let output = profiler.wait(WIND_DOWN)?;
    output.ensure_success()?;

    let dropped = log_lines_with(&output.stderr, DROPPED_LOG);
    let wrote = log_lines_with(&output.stderr, WROTE_LOG);
    let made_room = log_lines_with(&output.stderr, MADE_ROOM_LOG);
    let totals: Vec<u64> = dropped
        .iter()
        .filter_map(|l| log_field(l.text, "dropped_total")?.parse().ok())
        .collect();
    println!(
        "full disk: filler of {filler_bytes} bytes; {} intervals dropped (dropped_total {:?}), \
         then {} written, the first {:.0} ms after the filler went",
        dropped.len(),
        totals,
        wrote.len(),
        wrote
            .first()
            .map_or(f64::NAN, |l| seconds_between(l.time, freed_at) * 1e3)
    );
    println!("full disk: metrics while full {full:?}, after recovery {recovered:?}");
    let expected: Vec<u64> = (1..=dropped.len() as u64).collect();
    ensure!(
        recovered.dropped == dropped.len() as f64 && recovered.written >= 2.0,
        "after recovery the metrics say {recovered:?}; {} drops logged",
        dropped.len()
    );
    ensure!(
        totals == expected,
        "dropped_total {totals:?} over {} drops",
        dropped.len()
    );
    ensure!(
        made_room.len() >= dropped.len()
            && made_room
                .iter()
                .all(|l| log_field(l.text, "files") == Some("0")),
        "making room deleted something, or was not tried: {made_room:?}"
    );
    let last_drop = dropped.last().map(|l| l.time).context("no drop")?;
    ensure!(
        last_drop <= freed_at,
        "a profile dropped at {last_drop} after the disk had room at {freed_at}"
    );
    ensure!(
        wrote.iter().all(|l| l.time >= freed_at),
        "a profile written while the disk was full: {wrote:?}"
    );
    let profiles = read_checked_profiles(disk.path(), FREQUENCY)?;
    ensure!(
        profiles.len() == wrote.len() && profiles.len() >= 2,
        "{} files, {} written in the log",
        profiles.len(),
        wrote.len()
    );
    let left = leftover_temp_files(disk.path())?;
    ensure!(left.is_empty(), "temp files left behind: {left:?}");
    check_hot_chain(&samples_of_pid(&profiles, fixture.pid()), &C_CHAIN)
}

/// The profile counters of the metrics endpoint.
#[derive(Debug)]
struct ProfileCounters {
    /// `profiler_profiles_dropped_total`.
    dropped: f64,
    /// `profiler_files_written_total{kind="interval"}` (0 before the first).
    written: f64,
}

fn scrape(address: std::net::SocketAddr) -> Result<ProfileCounters> {
    let response = http_get(address, "/metrics", Duration::from_secs(5))?;
    let body = &response.body;
    Ok(ProfileCounters {
        dropped: metric_value(body, "profiler_profiles_dropped_total")
            .with_context(|| format!("no profiler_profiles_dropped_total in\n{body}"))?,
        written: metric_value(body, r#"profiler_files_written_total{kind="interval"}"#)
            .unwrap_or(0.0),
    })
}

// ---------------------------------------------------------------------------------------------
// 6. Own mount namespace, in a pod's container cgroup

const CONTAINER_ID: &str = "4d2f9b7e1c3a5f8d0b2e4c6a8f1d3b5e7c9a2f4d6b8e0c1a3f5d7b9e2c4a6f8d";
const POD_UID: &str = "7b1e3d5f-9a2c-4e6b-8d0f-1a3c5e7b9d2f";

#[test]
#[ignore = "needs root: mounts in a new mount namespace and loads BPF programs"]
fn a_binary_only_in_its_mount_namespace_is_named_and_labelled() -> Result<()> {
    assert_root();
    let _serial = serial();
    let cgroup = TestCgroup::kubernetes_containerd(CONTAINER_ID, POD_UID)?;
    let process = MountNsProcess::spawn(Path::new(HOT_C), Some(&cgroup.procs_file()?), &[])?;
    let pid = process.pid();
    ensure!(
        !process.exe().exists(),
        "{} exists on the host too",
        process.exe().display()
    );
    let own_ns = fs::read_link("/proc/self/ns/mnt")?;
    let its_ns = fs::read_link(format!("/proc/{pid}/ns/mnt"))?;
    ensure!(own_ns != its_ns, "the fixture shares our mount namespace");
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    ensure!(
        cgroups.contains(CONTAINER_ID),
        "the fixture is not in the test cgroup: {cgroups}"
    );

    let out = tempfile::tempdir()?;
    let pid_arg = pid.to_string();
    let args = [
        "--pid",
        &pid_arg,
        "--frequency",
        FREQUENCY_ARG,
        "--duration",
        "4",
        "--interval",
        "2",
    ];
    integration_tests::run(
        record_command(out.path(), &args),
        integration_tests::run_timeout(Duration::from_secs(4)),
    )?
    .ensure_success()?;
    let profiles = read_checked_profiles(out.path(), FREQUENCY)?;
    let samples = samples_of_pid(&profiles, pid);
    let exe = process.exe().to_string_lossy().into_owned();
    let mapped: BTreeSet<String> = samples
        .iter()
        .flat_map(|(p, s)| p.frames(s))
        .filter(|f| C_CHAIN.leaf.matches(&f.function))
        .map(|f| f.mapping)
        .collect();
    let labels: HashMap<(Option<&str>, Option<&str>), i64> =
        samples.iter().fold(HashMap::new(), |mut m, (p, s)| {
            let key = (p.label_str(s, "container_id"), p.label_str(s, "pod_uid"));
            *m.entry(key).or_default() += p.count(s);
            m
        });
    println!(
        "mount namespace: {} samples; {} mapped from {mapped:?}; labels (container_id, pod_uid) \
         -> samples: {labels:?}",
        total_count(&samples),
        C_CHAIN.leaf.text()
    );
    check_hot_chain(&samples, &C_CHAIN)?;
    ensure!(
        mapped.len() == 1 && mapped.contains(&exe),
        "{} mapped from {mapped:?}, want {exe}",
        C_CHAIN.leaf.text()
    );
    let build_ids: BTreeSet<&str> = profiles
        .iter()
        .flat_map(|p| {
            p.profile
                .mapping
                .iter()
                .filter(|m| p.str(m.filename) == exe)
                .map(|m| p.str(m.build_id))
        })
        .collect();
    let want_id = build_id(Path::new(HOT_C))?;
    ensure!(
        build_ids.len() == 1 && build_ids.contains(want_id.as_str()),
        "build IDs {build_ids:?} for {exe}, the ELF's is {want_id}"
    );
    ensure!(
        labels.len() == 1 && labels.contains_key(&(Some(CONTAINER_ID), Some(POD_UID))),
        "container and pod labels {labels:?}"
    );
    drop(process);
    drop(cgroup);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Sum of the counts of the samples for which `keep` holds.
fn count(samples: &[(&Pprof, &Sample)], keep: impl Fn(&Pprof, &Sample) -> bool) -> i64 {
    integration_tests::count_where(samples, keep)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Names in `dir`, sorted.
fn list(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    Ok(names)
}

/// The GNU build ID of an ELF file, lowercase hex.
fn build_id(path: &Path) -> Result<String> {
    use object::Object;
    let data = fs::read(path)?;
    let file = object::File::parse(&*data)?;
    let id = file.build_id()?.context("no build ID")?;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}
