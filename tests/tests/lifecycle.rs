//! How a recording ends (signal, duration, targets exiting) and what it leaves behind.

use std::{path::Path, thread, time::Duration};

use anyhow::{Result, ensure};
use integration_tests::{
    C_CHAIN, Fixture, HOT_C, Pprof, RunOutput, Running, TEST_FREQUENCY, Tmpfs, assert_root,
    check_go_pprof, check_hot_chain, leftover_temp_files, read_checked_profiles, read_profiles,
    record_command, run, run_timeout, samples_of_pid, total_count,
};

/// Bound on the profiler's own wind-down after its last target is gone or a signal arrived.
const WIND_DOWN: Duration = Duration::from_secs(60);
/// Bound on loading BPF and opening the perf events.
const START_UP: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root: loads BPF programs"]
fn sigterm_writes_the_partial_interval() -> Result<()> {
    assert_root();
    signal_writes_the_partial_interval(libc::SIGTERM)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn sigint_writes_the_partial_interval() -> Result<()> {
    assert_root();
    signal_writes_the_partial_interval(libc::SIGINT)
}

/// SIGTERM at any moment of start-up (preflight, BPF load, the first scan) is a clean stop:
/// exit 0, and whatever was written is whole. The kubelet sends it to a pod deleted right after
/// it started.
#[test]
#[ignore = "needs root: loads BPF programs"]
fn sigterm_during_start_up_is_a_clean_stop() -> Result<()> {
    assert_root();
    for delay_ms in [5, 30, 80, 150, 300] {
        let out = tempfile::tempdir()?;
        let frequency = TEST_FREQUENCY.to_string();
        let args = ["--interval", "60", "--frequency", &frequency];
        let profiler = Running::spawn(record_command(out.path(), &args))?;
        // Start-up begins when `main` holds the stop signals, its first act: before that no
        // program can handle one (CI once took more than 5 ms to get there, and the default
        // action killed the process). The delay into start-up is what each round varies.
        ensure!(
            profiler.wait_until_holding(libc::SIGTERM, Duration::from_secs(10)),
            "the profiler never held SIGTERM"
        );
        thread::sleep(Duration::from_millis(delay_ms));
        profiler.signal(libc::SIGTERM)?;
        let output = profiler.wait(WIND_DOWN)?;
        ensure!(
            output.status.code() == Some(0),
            "SIGTERM {delay_ms} ms into start-up: {}; stderr:\n{}",
            output.status,
            output.stderr
        );
        for profile in read_profiles(out.path())? {
            profile.check_well_formed(TEST_FREQUENCY)?;
        }
        check_no_temp_files(out.path())?;
    }
    Ok(())
}

/// With an interval far longer than the run, everything the file holds comes from the drain
/// the signal triggers.
fn signal_writes_the_partial_interval(signal: i32) -> Result<()> {
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let profiler = Running::spawn(record_pid_command(
        &fixture,
        out.path(),
        &["--interval", "60"],
    ))?;
    // Signal once the sampling runs (not during start-up), then give it ~2 s of samples.
    profiler.wait_until_sampling(START_UP);
    thread::sleep(Duration::from_secs(2));
    profiler.signal(signal)?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;

    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    check_hot_chain(&samples_of_pid(&profiles, fixture.pid()), &C_CHAIN)?;
    check_no_temp_files(out.path())?;
    check_go_pprof(&profiles, C_CHAIN.leaf)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn duration_ends_the_recording_in_interval_files() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let cmd = record_pid_command(
        &fixture,
        out.path(),
        &["--duration", "5", "--interval", "2"],
    );
    run(cmd, run_timeout(Duration::from_secs(5)))?.ensure_success()?;

    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    // 5 s in 2 s intervals: at least one full interval plus the final partial one.
    ensure!(
        profiles.len() >= 2,
        "{} file(s) for 5 s in 2 s intervals",
        profiles.len()
    );
    check_time_order(&profiles)?;
    check_hot_chain(&samples_of_pid(&profiles, fixture.pid()), &C_CHAIN)?;
    check_no_temp_files(out.path())?;
    check_go_pprof(&profiles, C_CHAIN.leaf)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn target_exiting_ends_the_recording() -> Result<()> {
    assert_root();
    // A lifetime of a few seconds: long enough to outlive the profiler's start-up.
    let mut fixture = Fixture::spawn(HOT_C, &["5"])?;
    let out = tempfile::tempdir()?;
    let profiler = Running::spawn(record_pid_command(&fixture, out.path(), &[]))?;
    // Reap the fixture as soon as it exits: a zombie still has a /proc entry.
    fixture.wait(Duration::from_secs(60))?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;

    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    check_hot_chain(&samples_of_pid(&profiles, fixture.pid()), &C_CHAIN)?;
    check_go_pprof(&profiles, C_CHAIN.leaf)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn killed_target_ends_the_recording() -> Result<()> {
    assert_root();
    let mut fixture = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let profiler = Running::spawn(record_pid_command(&fixture, out.path(), &[]))?;
    // Once the sampling runs, ~2 s of samples before the kill (the stacks checked below).
    profiler.wait_until_sampling(START_UP);
    thread::sleep(Duration::from_secs(2));
    integration_tests::send_signal(fixture.pid(), libc::SIGKILL)?;
    fixture.wait(Duration::from_secs(10))?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;

    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    check_hot_chain(&samples_of_pid(&profiles, fixture.pid()), &C_CHAIN)?;
    check_go_pprof(&profiles, C_CHAIN.leaf)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn recording_lasts_until_every_target_exits() -> Result<()> {
    assert_root();
    let mut first = Fixture::spawn(HOT_C, &[])?;
    let mut second = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let mut cmd = record_pid_command(&first, out.path(), &[]);
    cmd.args(["--pid", &second.pid_arg()]);
    let mut profiler = Running::spawn(cmd)?;
    // Once the sampling runs, ~2 s of samples of both before the first goes.
    profiler.wait_until_sampling(START_UP);
    thread::sleep(Duration::from_secs(2));

    integration_tests::send_signal(first.pid(), libc::SIGKILL)?;
    first.wait(Duration::from_secs(10))?;
    // One target left: the profiler must keep recording it. This sleep is the check: it must
    // still run 3 s later.
    thread::sleep(Duration::from_secs(3));
    ensure!(
        profiler.is_running()?,
        "profiler stopped while a target still ran"
    );
    // One more second of samples of the survivor alone.
    thread::sleep(Duration::from_secs(1));
    integration_tests::send_signal(second.pid(), libc::SIGKILL)?;
    second.wait(Duration::from_secs(10))?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;

    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    for fixture in [&first, &second] {
        let samples = samples_of_pid(&profiles, fixture.pid());
        ensure!(
            total_count(&samples) > 0,
            "no sample of pid {}",
            fixture.pid()
        );
    }
    // The survivor ran alone for seconds after the first one died: check its stacks fully.
    check_hot_chain(&samples_of_pid(&profiles, second.pid()), &C_CHAIN)
}

/// `record --pid <fixture> --frequency 99 <extra>`, no duration.
fn record_pid_command(fixture: &Fixture, out: &Path, extra: &[&str]) -> std::process::Command {
    let (pid, frequency) = (fixture.pid_arg(), TEST_FREQUENCY.to_string());
    let mut args = vec!["--pid", &pid, "--frequency", &frequency];
    args.extend(extra);
    record_command(out, &args)
}

/// Files come in time order (names sort by start) and their time ranges do not go backwards.
fn check_time_order(profiles: &[Pprof]) -> Result<()> {
    for pair in profiles.windows(2) {
        let (a, b) = (&pair[0].profile, &pair[1].profile);
        ensure!(
            a.time_nanos < b.time_nanos,
            "{} starts at {} but {} at {}",
            pair[1].path.display(),
            b.time_nanos,
            pair[0].path.display(),
            a.time_nanos
        );
    }
    Ok(())
}

/// Files are written under a temp name and renamed: none may be left after a clean exit.
fn check_no_temp_files(dir: &Path) -> Result<()> {
    let left = leftover_temp_files(dir)?;
    ensure!(left.is_empty(), "temp files left behind: {left:?}");
    Ok(())
}

/// Gives `path` a modification time in 2000: a profile left over from long ago.
fn age(path: &Path) -> Result<()> {
    let long_ago = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800);
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(long_ago)?;
    Ok(())
}

/// Records `fixture` into `out` for 3 s in 1 s intervals under `--max-disk-mb max_mb`.
fn record_with_disk_limit(fixture: &Fixture, out: &Path, max_mb: &str) -> Result<RunOutput> {
    let (pid, frequency) = (fixture.pid_arg(), TEST_FREQUENCY.to_string());
    let args = [
        "--pid",
        &pid,
        "--frequency",
        &frequency,
        "--duration",
        "3",
        "--interval",
        "1",
        "--max-disk-mb",
        max_mb,
    ];
    let output = run(
        record_command(out, &args),
        run_timeout(Duration::from_secs(3)),
    )?;
    output.ensure_success()?;
    Ok(output)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn max_disk_mb_deletes_the_oldest_profiles_first() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    // A left-over profile from an earlier run, older and larger than the whole allowance.
    let old = out.path().join("cpu-20000101T000000Z.pb.gz");
    std::fs::write(&old, vec![0u8; 2 << 20])?;
    age(&old)?;

    let output = record_with_disk_limit(&fixture, out.path(), "1")?;
    ensure!(!old.exists(), "the oldest profile is still there");
    ensure!(
        output
            .stderr
            .contains("deleted the oldest profiles to stay under --max-disk-mb"),
        "no deletion in the log:\n{}",
        output.stderr
    );
    // What this recording wrote stays: it fits in 1 MiB.
    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    ensure!(profiles.len() >= 2, "{} profiles kept", profiles.len());
    Ok(())
}

#[test]
#[ignore = "needs root: mounts a tmpfs and loads BPF programs"]
fn a_full_disk_frees_the_oldest_profiles_and_recording_goes_on() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let disk = Tmpfs::mount("1m")?;
    // An old profile fills the disk to the last byte.
    let filler = disk.path().join("cpu-20000101T000000Z.pb.gz");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler)?;
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.flush();
    }
    age(&filler)?;

    let output = record_with_disk_limit(&fixture, disk.path(), "0")?;
    ensure!(
        output
            .stderr
            .contains("disk full: deleted the oldest profiles to make room"),
        "no room made in the log:\n{}",
        output.stderr
    );
    ensure!(
        !filler.exists(),
        "the old profile that filled the disk is still there"
    );
    let profiles = read_checked_profiles(disk.path(), TEST_FREQUENCY)?;
    ensure!(profiles.len() >= 2, "{} profiles written", profiles.len());
    ensure!(
        leftover_temp_files(disk.path())?.is_empty(),
        "temporary files left behind"
    );
    Ok(())
}
