//! Process lifetimes on a long-running host: a main thread that exits before its workers, a PID
//! reused by a fork without exec after such a process, code mapped after a process was first
//! seen (`dlopen`), and 10,000 short-lived processes after which the profiler is back to its
//! baseline.
//!
//! They change what the host runs (`ns_last_pid`, whole-host recording), so they run one at a
//! time ([`serial`]).

use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use integration_tests::{
    Fixture, LIFETIMES, LoggedRun, PLUGIN, Pprof, Sample, Want, assert_root, describe_top_stacks,
    read_checked_profiles, record_command, samples_of_pid, send_signal, serial, total_count,
    wait_until,
};

/// Bound on loading BPF and opening the perf events.
const START_UP: Duration = Duration::from_secs(60);
/// Bound on the profiler's wind-down after a signal.
const WIND_DOWN: Duration = Duration::from_secs(60);
const FREQUENCY: u32 = 99;
const FREQUENCY_ARG: &str = "99";
const READY: Duration = Duration::from_secs(10);
/// The log line of an interval file written.
const WROTE_LOG: &str = "profiler::recorder::pipeline: wrote ";

/// Share of a process's samples whose leaf must be its hot function.
const NAMED_SHARE: f64 = 0.9;

/// A recording of `pid` at 99 Hz in 2-second intervals, plus `extra` flags, once it samples.
fn record_pid(out: &Path, pid: u32, extra: &[&str]) -> Result<LoggedRun> {
    let pid = pid.to_string();
    let mut args = vec![
        "--pid",
        &pid,
        "--frequency",
        FREQUENCY_ARG,
        "--interval",
        "2",
    ];
    args.extend(extra);
    let mut profiler = LoggedRun::spawn(record_command(out, &args))?;
    profiler.wait_until_recording(START_UP)?;
    Ok(profiler)
}

/// Waits until the profiler has written `n` interval files in all.
fn wait_for_intervals(profiler: &mut LoggedRun, n: usize) -> Result<()> {
    profiler
        .wait_for_log(Duration::from_secs(60), "interval files", |log| {
            log.matches(WROTE_LOG).count() >= n
        })
        .map(drop)
}

/// Waits until `pid`'s main thread is a zombie (it called `pthread_exit`) while the process runs.
fn wait_for_zombie_leader(pid: u32) -> Result<()> {
    let status = format!("/proc/{pid}/status");
    wait_until(
        Duration::from_secs(10),
        &format!("zombie main thread of {pid}"),
        || {
            let text = fs::read_to_string(&status).with_context(|| format!("reading {status}"))?;
            Ok(text
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
                .then_some(()))
        },
    )
}

/// The samples among `samples` whose leaf is `hot`, and their share of the count.
fn leaf_share(samples: &[(&Pprof, &Sample)], hot: &str) -> (i64, i64) {
    let total = total_count(samples);
    let named: i64 = samples
        .iter()
        .filter(|(p, s)| p.has_leaf(s, Want::Exact(hot)))
        .map(|(p, s)| p.count(s))
        .sum();
    (named, total)
}

fn ensure_named(samples: &[(&Pprof, &Sample)], hot: &str, what: &str) -> Result<()> {
    let (named, total) = leaf_share(samples, hot);
    println!("{what}: {hot} is the leaf of {named} of {total} samples");
    ensure!(
        total >= 20 && named as f64 >= total as f64 * NAMED_SHARE,
        "{what}: {hot} is the leaf in {named} of {total} samples; top stacks:\n{}",
        describe_top_stacks(samples, 5)
    );
    Ok(())
}

/// Samples of `pid` in the files that started after `after`.
fn samples_after(
    profiles: &[Pprof],
    pid: u32,
    after: std::time::SystemTime,
) -> Vec<(&Pprof, &Sample)> {
    let after = after
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let later: Vec<&Pprof> = profiles
        .iter()
        .filter(|p| p.profile.time_nanos >= after)
        .collect();
    later
        .into_iter()
        .flat_map(|p| p.samples_of_pid(pid).map(move |s| (p, s)))
        .collect()
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_process_whose_main_thread_exits_first_stays_named() -> Result<()> {
    assert_root();
    let _serial = serial();
    let out = tempfile::tempdir()?;
    let fixture = Fixture::spawn_ready(LIFETIMES, &["leader-exits"], READY)?;
    let pid = fixture.pid();
    let mut profiler = record_pid(out.path(), pid, &[])?;
    // The process is known, with its main thread alive, before that thread leaves.
    wait_for_intervals(&mut profiler, 1)?;
    send_signal(pid, libc::SIGUSR1)?;
    wait_for_zombie_leader(pid)?;
    let left = std::time::SystemTime::now();
    wait_for_intervals(&mut profiler, 4)?;
    ensure!(
        profiler.is_running()?,
        "recording of --pid {pid} stopped when its main thread exited; log:\n{}",
        profiler.log()
    );
    profiler.signal(libc::SIGINT)?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;
    let profiles = read_checked_profiles(out.path(), FREQUENCY)?;
    ensure_named(
        &samples_after(&profiles, pid, left),
        "worker_hot_fn",
        "after the main thread's exit",
    )
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_process_whose_main_thread_left_before_the_first_sample_is_named() -> Result<()> {
    assert_root();
    let _serial = serial();
    let out = tempfile::tempdir()?;
    let fixture = Fixture::spawn_ready(LIFETIMES, &["leader-exits"], READY)?;
    let pid = fixture.pid();
    send_signal(pid, libc::SIGUSR1)?;
    wait_for_zombie_leader(pid)?;
    let mut profiler = record_pid(out.path(), pid, &[])?;
    wait_for_intervals(&mut profiler, 2)?;
    profiler.signal(libc::SIGINT)?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;
    let profiles = read_checked_profiles(out.path(), FREQUENCY)?;
    ensure_named(
        &samples_of_pid(&profiles, pid),
        "worker_hot_fn",
        "main thread gone before the first sample",
    )
}

#[test]
#[ignore = "needs root: sets ns_last_pid and loads BPF programs"]
fn a_pid_reused_by_a_fork_without_exec_gets_its_own_mappings() -> Result<()> {
    assert_root();
    let _serial = serial();
    let out = tempfile::tempdir()?;
    // The first program is another file, so that its mappings cannot pass for the second's.
    let first_program = out.path().join("first-program");
    fs::copy(LIFETIMES, &first_program)?;
    let first_program = first_program.to_string_lossy().into_owned();
    let traces = out.path().join("profiles");
    let mut profiler = LoggedRun::spawn(record_command(
        &traces,
        &["--frequency", FREQUENCY_ARG, "--interval", "2"],
    ))?;
    profiler.wait_until_recording(START_UP)?;

    // A process whose main thread leaves first, sampled before and after, then killed.
    let mut first = Fixture::spawn_ready(&first_program, &["leader-exits"], READY)?;
    let pid = first.pid();
    wait_for_intervals(&mut profiler, 1)?;
    send_signal(pid, libc::SIGUSR1)?;
    wait_for_zombie_leader(pid)?;
    let written = profiler.log().matches(WROTE_LOG).count();
    wait_for_intervals(&mut profiler, written + 1)?;
    send_signal(pid, libc::SIGKILL)?;
    first.wait(Duration::from_secs(10))?;

    // A child forked without exec by another program takes the PID.
    let mut child = None;
    for _ in 0..20 {
        let parent = Fixture::spawn_ready(LIFETIMES, &["fork-child", &pid.to_string()], READY)?;
        let children = format!("/proc/{0}/task/{0}/children", parent.pid());
        let forked: Option<u32> = fs::read_to_string(&children)?
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok());
        if forked == Some(pid) {
            child = Some(parent);
            break;
        }
    }
    let Some(_parent) = child else {
        bail!("no forked child got PID {pid} in 20 tries");
    };
    let reused = std::time::SystemTime::now();
    let written = profiler.log().matches(WROTE_LOG).count();
    wait_for_intervals(&mut profiler, written + 3)?;
    profiler.signal(libc::SIGINT)?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;

    let profiles = read_checked_profiles(&traces, FREQUENCY)?;
    let samples = samples_after(&profiles, pid, reused);
    let foreign: Vec<String> = samples
        .iter()
        .flat_map(|(p, s)| p.frames(s))
        .filter(|f| f.mapping == first_program)
        .map(|f| f.function)
        .collect();
    ensure!(
        foreign.is_empty(),
        "samples of the forked child at PID {pid} named through the earlier process's \
         mappings: {foreign:?}"
    );
    ensure_named(
        &samples,
        "forked_child_hot_fn",
        "forked child on a reused PID",
    )
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_library_opened_after_the_first_sample_is_named() -> Result<()> {
    assert_root();
    let _serial = serial();
    let out = tempfile::tempdir()?;
    let fixture = Fixture::spawn_ready(LIFETIMES, &["dlopen", PLUGIN], READY)?;
    let pid = fixture.pid();
    // Without trace contexts: their periodic retry would read the mappings again too.
    let mut profiler = record_pid(out.path(), pid, &["--no-trace-context"])?;
    wait_for_intervals(&mut profiler, 1)?;
    send_signal(pid, libc::SIGUSR1)?;
    wait_for_mapping(pid, PLUGIN)?;
    let opened = std::time::SystemTime::now();
    let written = profiler.log().matches(WROTE_LOG).count();
    wait_for_intervals(&mut profiler, written + 3)?;
    profiler.signal(libc::SIGINT)?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;
    let profiles = read_checked_profiles(out.path(), FREQUENCY)?;
    let samples = samples_after(&profiles, pid, opened);
    ensure_named(&samples, "plugin_hot_fn", "library opened with dlopen")?;
    let plugin = fs::canonicalize(PLUGIN)?.to_string_lossy().into_owned();
    let from_plugin = samples
        .iter()
        .filter(|(p, s)| p.frames(s).first().is_some_and(|f| f.mapping == plugin))
        .count();
    ensure!(
        from_plugin > 0,
        "no leaf frame's mapping is {plugin}: {}",
        describe_top_stacks(&samples, 3)
    );
    Ok(())
}

/// Waits until `pid` maps `library`.
fn wait_for_mapping(pid: u32, library: &str) -> Result<()> {
    let name = Path::new(library)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    wait_until(
        Duration::from_secs(10),
        &format!("mapping of {library}"),
        || {
            Ok(fs::read_to_string(format!("/proc/{pid}/maps"))?
                .contains(&name)
                .then_some(()))
        },
    )
}

/// Short-lived processes of the churn test, in all.
const CHURN_PROCESSES: usize = 10_000;
/// Shells that start them one after another, in the test's cgroup.
const CHURN_SHELLS: usize = 2;

/// The open descriptors of `pid`.
fn open_fds(pid: u32) -> Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// 10,000 short-lived processes in a cgroup the profiler targets: afterwards the profiler's
/// process table and open files are back within 10% of what they were before (after a first
/// churn of 1,000), and its resident size within 10% of what it was after the first 5,000.
#[test]
#[ignore = "needs root: creates a cgroup and loads BPF programs"]
fn after_10000_short_lived_processes_the_profiler_returns_to_its_baseline() -> Result<()> {
    assert_root();
    let _serial = serial();
    let root = integration_tests::cgroup_root()?;
    let name = format!("profiler-churn-{}", std::process::id());
    let cgroup = integration_tests::TestCgroup::create(&root, &[&name])?;
    let out = tempfile::tempdir()?;
    let metrics = integration_tests::free_local_address()?;
    let address = metrics.to_string();
    let target = root.join(&name).to_string_lossy().into_owned();
    let mut profiler = LoggedRun::spawn(record_command(
        out.path(),
        &[
            "--cgroup",
            &target,
            "--frequency",
            FREQUENCY_ARG,
            "--interval",
            "2",
            "--metrics-address",
            &address,
        ],
    ))?;
    profiler.wait_until_recording(START_UP)?;
    wait_for_intervals(&mut profiler, 2)?;
    let held = |body: &str| integration_tests::metric_value(body, "profiler_processes");
    let scrape = || -> Result<String> {
        Ok(integration_tests::http_get(metrics, "/metrics", Duration::from_secs(5))?.body)
    };
    let pid = profiler.pid();
    let procs = cgroup.procs_file()?;
    // A first churn of 1,000 warms what stays loaded (kernel symbols, the fixture's and libc's
    // symbols). The allocator's working set of a busy interval is not always warm after it (a
    // CI run measured 19 MiB there and 37 MiB after the 10,000), so the resident size is
    // compared between the two halves of the churn: what a leak holds grows with the processes
    // seen, and the second 5,000 would add as much as the first.
    wait_for_shells(churn_shells(&procs, 500)?, Instant::now(), || Ok(()))?;
    let table_before = settle(&scrape, 0.0)?;
    let fds_before = open_fds(pid)?;

    let started = Instant::now();
    let mut table_peak = table_before;
    let half = CHURN_PROCESSES / 2 / CHURN_SHELLS;
    wait_for_shells(churn_shells(&procs, half)?, started, || {
        table_peak = table_peak.max(held(&scrape()?).unwrap_or(0.0));
        Ok(())
    })?;
    settle(&scrape, table_before)?;
    let rss_half = integration_tests::proc_status_kib(pid, "VmRSS")?;
    let second = Instant::now();
    wait_for_shells(churn_shells(&procs, half)?, second, || {
        table_peak = table_peak.max(held(&scrape()?).unwrap_or(0.0));
        Ok(())
    })?;
    let churn = started.elapsed();

    // Ends are noticed at once or by the sweep (every 6 intervals): wait for the table to empty.
    let settled = Instant::now();
    let table_after = settle(&scrape, table_before);
    let (fds_after, rss_after) = (
        open_fds(pid)?,
        integration_tests::proc_status_kib(pid, "VmRSS")?,
    );
    println!(
        "churn: {CHURN_PROCESSES} processes in {:.0} s; process table {table_before} before, \
         {table_peak} at most, {table_after:?} {:.1} s after; open files {fds_before} -> \
         {fds_after}; VmRSS {rss_half} KiB after half, {rss_after} KiB at the end",
        churn.as_secs_f64(),
        settled.elapsed().as_secs_f64()
    );
    profiler.signal(libc::SIGINT)?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;
    table_after?;
    ensure!(
        fds_after as f64 <= fds_before as f64 * 1.1,
        "open files {fds_before} before the churn, {fds_after} after"
    );
    ensure!(
        rss_after as f64 <= rss_half as f64 * 1.1,
        "VmRSS {rss_half} KiB after half the churn, {rss_after} KiB after all of it"
    );
    Ok(())
}

/// Shells in the cgroup of `procs` that start `each` short-lived processes one after another.
fn churn_shells(procs: &Path, each: usize) -> Result<Vec<std::process::Child>> {
    (0..CHURN_SHELLS)
        .map(|_| {
            std::process::Command::new("sh")
                .args([
                    "-c",
                    r#"echo $$ > "$0" && i=0 && while [ $i -lt "$1" ]; do "$2" 5 || exit 1; i=$((i+1)); done"#,
                ])
                .arg(procs)
                .arg(each.to_string())
                .arg(integration_tests::CHURN_C)
                .spawn()
                .context("spawning a churn shell")
        })
        .collect()
}

/// Waits for the churn shells to succeed, calling `meanwhile` every half second.
fn wait_for_shells(
    shells: Vec<std::process::Child>,
    started: Instant,
    mut meanwhile: impl FnMut() -> Result<()>,
) -> Result<()> {
    for mut shell in shells {
        loop {
            if let Some(status) = shell.try_wait()? {
                ensure!(status.success(), "a churn shell failed: {status}");
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the churn took over 10 minutes"
            );
            meanwhile()?;
            thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

/// Waits (up to a minute: the sweep runs every 6 intervals) until the profiler holds at most
/// `bound` processes, and returns how many it holds.
fn settle(scrape: &impl Fn() -> Result<String>, bound: f64) -> Result<f64> {
    integration_tests::wait_until(
        Duration::from_secs(60),
        "the process table to settle",
        || {
            let body = scrape()?;
            let now =
                integration_tests::metric_value(&body, "profiler_processes").unwrap_or(f64::MAX);
            Ok((now <= bound).then_some(now))
        },
    )
}
