//! BPF map sizes: maps made tiny by flag take every map-full path (counted, no crash), and maps
//! sized from the host take every sample of many threads at a high rate without dropping any.
//!
//! Both load the host with CPU-bound threads, so they run one at a time ([`serial`]).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Fixture, HOT_C, LIFETIMES, LoggedRun, assert_root, free_local_address, http_get, metric_value,
    read_checked_profiles, record_command, serial,
};

const START_UP: Duration = Duration::from_secs(60);
const WIND_DOWN: Duration = Duration::from_secs(90);
/// The log line of an interval file written.
const WROTE_LOG: &str = "profiler::recorder::pipeline: wrote ";

fn scrape(address: std::net::SocketAddr) -> Result<String> {
    Ok(http_get(address, "/metrics", Duration::from_secs(5))?.body)
}

/// Records the whole host at `hz` in intervals of `interval` seconds with `extra` flags until
/// `intervals` files are written; returns the metrics scraped then, and the run's output.
fn record_intervals(
    out: &std::path::Path,
    hz: &str,
    interval: &str,
    extra: &[&str],
    intervals: usize,
) -> Result<(String, integration_tests::RunOutput)> {
    let metrics = free_local_address()?;
    let address = metrics.to_string();
    let mut args = vec!["--frequency", hz, "--interval", interval];
    args.extend(["--metrics-address", &address]);
    args.extend(extra);
    let mut profiler = LoggedRun::spawn(record_command(out, &args))?;
    profiler.wait_until_recording(START_UP)?;
    profiler.wait_for_log(Duration::from_secs(180), "the intervals", |log| {
        log.matches(WROTE_LOG).count() >= intervals
    })?;
    let body = scrape(metrics)?;
    profiler.signal(libc::SIGINT)?;
    Ok((body, profiler.wait(WIND_DOWN)?))
}

fn series(body: &str, name: &str) -> f64 {
    metric_value(body, name).unwrap_or(0.0)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn tiny_maps_count_what_does_not_fit_and_keep_recording() -> Result<()> {
    assert_root();
    let _serial = serial();
    let _busy: Vec<Fixture> = (0..4)
        .map(|_| Fixture::spawn(HOT_C, &[]))
        .collect::<Result<_>>()?;
    let out = tempfile::tempdir()?;
    let tiny = [
        "--counts-map-entries",
        "8",
        "--stacks-map-entries",
        "4",
        "--processes-map-entries",
        "2",
        "--events-buffer-kib",
        "4",
    ];
    let (body, output) = record_intervals(out.path(), "99", "2", &tiny, 3)?;
    output.ensure_success()?;
    let counts_full = series(
        &body,
        r#"profiler_samples_dropped_total{reason="counts_map_full"}"#,
    );
    let stacks_full = series(
        &body,
        r#"profiler_samples_degraded_total{reason="stacks_map_full"}"#,
    );
    let taken = series(&body, "profiler_samples_total");
    println!(
        "tiny maps: {taken} samples stored, {counts_full} dropped (counts map full), {stacks_full} without a stack (stacks map full)"
    );
    ensure!(
        counts_full > 0.0 && stacks_full > 0.0,
        "tiny maps: {counts_full} samples dropped for a full counts map, {stacks_full} for a \
         full stacks map; metrics:\n{body}"
    );
    ensure!(taken > 0.0, "no sample stored; metrics:\n{body}");
    ensure!(
        output.stderr.contains("lost or degraded samples"),
        "the log does not report the lost samples:\n{}",
        output.stderr
    );
    read_checked_profiles(out.path(), 99).context("the files written with tiny maps")?;
    Ok(())
}

/// 2,000 threads in 200 processes at 999 Hz on every CPU, each thread burning now and then:
/// thousands of distinct (thread, stack) entries an interval. The maps sized from the CPU count,
/// the rate and the interval hold them all. (On 2 CPUs they fit the fixed sizes of before too:
/// the sizes a 64-CPU node gets are checked by `bpf::sizing`'s unit tests.)
#[test]
#[ignore = "needs root: loads BPF programs"]
fn maps_sized_from_the_host_hold_every_sample_of_2000_threads_at_999_hz() -> Result<()> {
    assert_root();
    let _serial = serial();
    let processes: Vec<Fixture> = (0..200)
        .map(|_| Fixture::spawn_ready(LIFETIMES, &["threads", "10"], Duration::from_secs(30)))
        .collect::<Result<_>>()?;
    let out = tempfile::tempdir()?;
    let (body, output) = record_intervals(out.path(), "999", "30", &[], 1)?;
    drop(processes);
    output.ensure_success()?;
    let taken = series(&body, "profiler_samples_total");
    let counts_full = series(
        &body,
        r#"profiler_samples_dropped_total{reason="counts_map_full"}"#,
    );
    let stacks_full = series(
        &body,
        r#"profiler_samples_degraded_total{reason="stacks_map_full"}"#,
    );
    let stacks_line = output
        .stderr
        .lines()
        .filter(|l| l.contains(WROTE_LOG))
        .map(|l| l.to_owned())
        .next()
        .unwrap_or_default();
    println!(
        "999 Hz, 2000 threads: {taken} samples stored, {counts_full} dropped for room, \
         {stacks_full} without a stack for room; first interval: {stacks_line}"
    );
    ensure!(taken > 10_000.0, "only {taken} samples; metrics:\n{body}");
    ensure!(
        counts_full == 0.0 && stacks_full == 0.0,
        "{counts_full} samples dropped and {stacks_full} stored without their stack for lack \
         of room; metrics:\n{body}"
    );
    Ok(())
}
