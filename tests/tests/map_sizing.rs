//! BPF map sizes: maps made tiny by flag take every map-full path (counted, no crash), and maps
//! sized from the host take every sample of many threads at a high rate without dropping any.
//!
//! Both load the host with CPU-bound threads, so they run one at a time ([`serial`]).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, TimeDelta, Utc};
use integration_tests::{
    Fixture, HOT_C, LIFETIMES, LoggedRun, Poll, Poller, assert_root, free_local_address, http_get,
    metric_value, read_checked_profiles, record_command, serial,
};

const START_UP: Duration = Duration::from_secs(60);
const WIND_DOWN: Duration = Duration::from_secs(90);
/// The log line of an interval file written.
const WROTE_LOG: &str = "profiler::recorder::pipeline: wrote ";

fn scrape(address: SocketAddr) -> Result<String> {
    Ok(http_get(address, "/metrics", Duration::from_secs(5))?.body)
}

/// Records the whole host at `hz` in intervals of `interval` seconds with `extra` flags, serving
/// metrics on `metrics`, until `intervals` files are written; returns the metrics scraped then,
/// and the run's output.
fn record_intervals(
    out: &std::path::Path,
    metrics: SocketAddr,
    hz: &str,
    interval: &str,
    extra: &[&str],
    intervals: usize,
) -> Result<(String, integration_tests::RunOutput)> {
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
    let (body, output) = record_intervals(out.path(), free_local_address()?, "99", "2", &tiny, 3)?;
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
/// tens of thousands of distinct (thread, stack) entries an interval. The maps sized from the
/// CPU count, the rate and the interval hold them all (the sizes a 64-CPU node gets are checked
/// by `bpf::sizing`'s unit tests), and `/healthz` answers while they drain.
#[test]
#[ignore = "needs root: loads BPF programs"]
fn maps_sized_from_the_host_hold_every_sample_of_2000_threads_at_999_hz() -> Result<()> {
    assert_root();
    let _serial = serial();
    let processes: Vec<Fixture> = (0..200)
        .map(|_| Fixture::spawn_ready(LIFETIMES, &["threads", "10"], Duration::from_secs(30)))
        .collect::<Result<_>>()?;
    let out = tempfile::tempdir()?;
    let metrics = free_local_address()?;
    let poller = Poller::start(metrics, "/healthz");
    let recorded = record_intervals(out.path(), metrics, "999", "30", &["-v"], 1);
    let polls = poller.stop();
    drop(processes);
    let (body, output) = recorded?;
    output.ensure_success()?;
    answered_while_draining(&output.stderr, &polls)?;
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

/// A drain as the profiler logs it (`-v`): when it ended, how long it took, entries taken.
struct Drain {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    entries: u64,
}

fn drains(log: &str) -> Vec<Drain> {
    log.lines()
        .filter(|line| line.contains("drained the maps"))
        .filter_map(|line| {
            let end = DateTime::parse_from_rfc3339(line.split_whitespace().next()?)
                .ok()?
                .with_timezone(&Utc);
            let ms: f64 = field(line, "drain_ms")?.parse().ok()?;
            let entries = field(line, "entries")?.parse().ok()?;
            Some(Drain {
                start: end - TimeDelta::microseconds((ms * 1e3) as i64),
                end,
                entries,
            })
        })
        .collect()
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

/// While a drain of thousands of entries runs, `/healthz` answers: requests sent and answered
/// inside the drain, and those overlapping it answered within 100 ms (median: the host runs
/// 2,000 threads and timings spike now and then). A drain on the endpoints' own thread, as
/// before, let no request complete inside it.
fn answered_while_draining(log: &str, polls: &[Poll]) -> Result<()> {
    let drains = drains(log);
    let big: Vec<&Drain> = drains.iter().filter(|d| d.entries >= 5_000).collect();
    ensure!(
        !big.is_empty(),
        "no drain of 5,000 entries or more logged; drains: {:?}",
        drains
            .iter()
            .map(|d| (d.entries, d.end - d.start))
            .collect::<Vec<_>>()
    );
    for drain in big {
        let overlapping: Vec<&Poll> = polls
            .iter()
            .filter(|poll| poll.sent < drain.end && poll.answered() > drain.start)
            .collect();
        let inside = overlapping
            .iter()
            .filter(|poll| poll.ok && poll.sent >= drain.start && poll.answered() <= drain.end)
            .count();
        let mut latencies: Vec<Duration> = overlapping.iter().map(|poll| poll.latency).collect();
        latencies.sort_unstable();
        let median = latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default();
        let took = (drain.end - drain.start).to_std().unwrap_or_default();
        println!(
            "drain of {} entries in {took:?}: {} requests overlapped it, {inside} sent and \
             answered inside it, median {median:?}, slowest {:?}",
            drain.entries,
            overlapping.len(),
            latencies.last()
        );
        ensure!(
            inside > 0,
            "no /healthz request was answered during a drain of {} entries ({took:?}): the \
             endpoints wait for the drain",
            drain.entries
        );
        ensure!(
            median < Duration::from_millis(100),
            "/healthz took {median:?} (median) during a drain of {} entries",
            drain.entries
        );
    }
    Ok(())
}
