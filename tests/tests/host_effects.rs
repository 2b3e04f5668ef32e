//! What the profiler leaves alone on the host: BPF run-time statistics, a global switch (every
//! BPF program of the node pays two clock reads per run while it is on), are on only during the
//! profiler's short measurement windows, not for the whole run.

use std::{fs, thread, time::Duration};

use anyhow::{Context, Result, ensure};
use integration_tests::{Fixture, HOT_C, LoggedRun, assert_root, log_field, record_command};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The log line of an interval file written.
const WROTE_LOG: &str = "profiler::recorder::pipeline: wrote ";
/// `BPF_PROG_TYPE_PERF_EVENT`: the sampling program.
const PROG_TYPE_PERF_EVENT: u64 = 7;

fn stats_sysctl() -> Result<String> {
    Ok(fs::read_to_string(STATS_SYSCTL)
        .with_context(|| format!("reading {STATS_SYSCTL}"))?
        .trim()
        .to_owned())
}

/// Runs the kernel has counted of the perf-event programs `pid` holds (`run_cnt` in their
/// fdinfo): it moves only while statistics are on, for any holder of the switch.
fn counted_runs(pid: u32) -> Result<u64> {
    let mut runs = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if !fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-prog") {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(text) = fs::read_to_string(info) else {
            continue;
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
        };
        if field("prog_type:") == Some(PROG_TYPE_PERF_EVENT) {
            runs += field("run_cnt:").unwrap_or(0);
        }
    }
    Ok(runs)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn bpf_statistics_are_off_outside_measurement_windows() -> Result<()> {
    assert_root();
    let before = stats_sysctl()?;
    let _busy = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let mut profiler = LoggedRun::spawn(record_command(
        out.path(),
        &["--frequency", "99", "--interval", "2"],
    ))?;
    profiler.wait_until_recording(Duration::from_secs(60))?;
    // The first window (the first second) is over once two intervals are written.
    profiler.wait_for_log(Duration::from_secs(60), "two intervals", |log| {
        log.matches(WROTE_LOG).count() >= 2
    })?;
    let (runs_before, sysctl_during) = (counted_runs(profiler.pid())?, stats_sysctl()?);
    // A second and a half of a CPU-bound process at 99 Hz: about 150 runs, if they were counted.
    thread::sleep(Duration::from_millis(1500));
    let runs_after = counted_runs(profiler.pid())?;
    profiler.signal(libc::SIGINT)?;
    let output = profiler.wait(Duration::from_secs(60))?;
    output.ensure_success()?;
    let after = stats_sysctl()?;
    println!(
        "{STATS_SYSCTL}: {before} before, {sysctl_during} while recording, {after} after; \
         runs counted by the kernel outside a window: {}",
        runs_after - runs_before
    );
    ensure!(
        runs_after == runs_before,
        "the kernel counted {} runs of the sampling program outside a measurement window: \
         run-time statistics were left on",
        runs_after - runs_before
    );
    ensure!(
        sysctl_during == before && after == before,
        "{STATS_SYSCTL} read {before} before the profiler, {sysctl_during} while it recorded, \
         {after} after"
    );
    // The window measured the program: the cost per sample is in the interval log.
    let cost = output
        .stderr
        .lines()
        .rev()
        .filter(|l| l.contains(WROTE_LOG))
        .filter_map(|l| log_field(l, "bpf_ns_per_sample"))
        .find_map(|v| v.parse::<u64>().ok());
    ensure!(
        cost.is_some_and(|ns| ns > 0),
        "no kernel cost per sample in the interval log:\n{}",
        output.stderr
    );
    Ok(())
}
