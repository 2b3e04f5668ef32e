//! The operator's view of a running profiler: Prometheus metrics, `/healthz` and `/readyz`, and
//! that scraping them hard does not disturb sampling.

use std::{
    fs,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Fixture, HOT_C, Running, TEST_FREQUENCY, assert_root, free_local_address, http_get,
    metric_value, process_cpu_nanos, read_checked_profiles, record_command, run, samples_of_pid,
    total_count,
};

const STEP: Duration = Duration::from_secs(5);
const START_UP: Duration = Duration::from_secs(60);
const WIND_DOWN: Duration = Duration::from_secs(60);
const INTERVAL_SECS: u64 = 2;

/// Polls `path` until it answers `status`; returns the last body.
fn wait_for_status(
    address: SocketAddr,
    path: &str,
    status: u16,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = http_get(address, path, STEP);
        if let Ok(response) = &last
            && response.status == status
        {
            return Ok(response.body.clone());
        }
        ensure!(
            Instant::now() < deadline,
            "GET {path} did not answer {status} within {timeout:?}; last: {last:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn start_profiler(out: &std::path::Path, address: SocketAddr) -> Result<Running> {
    let interval = INTERVAL_SECS.to_string();
    let frequency = TEST_FREQUENCY.to_string();
    Running::spawn(record_command(
        out,
        &[
            "--frequency",
            &frequency,
            "--interval",
            &interval,
            "--metrics-address",
            &address.to_string(),
            "--node-name",
            "test-node-7",
        ],
    ))
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn metrics_answer_with_the_expected_series_and_a_scrape_storm_does_not_stall_sampling() -> Result<()>
{
    assert_root();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let address = free_local_address()?;
    let profiler = start_profiler(out.path(), address)?;
    wait_for_status(address, "/readyz", 200, START_UP)?;
    let cpu_at_ready = process_cpu_nanos(fixture.pid())?;
    let health = http_get(address, "/healthz", STEP)?;
    ensure!(health.status == 200, "/healthz: {health:?}");

    // Two threads scrape as fast as they can over four intervals, beside the CPU-bound fixture.
    let stop = Arc::new(AtomicBool::new(false));
    let scrapers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || -> Result<(u64, Duration)> {
                let (mut scrapes, mut slowest) = (0, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let response = http_get(address, "/metrics", STEP)?;
                    ensure!(response.status == 200, "scrape: {response:?}");
                    slowest = slowest.max(started.elapsed());
                    scrapes += 1;
                }
                Ok((scrapes, slowest))
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(4 * INTERVAL_SECS));
    stop.store(true, Ordering::Relaxed);
    let (mut scrapes, mut slowest) = (0, Duration::ZERO);
    for scraper in scrapers {
        let (n, slow) = scraper.join().expect("scraper thread")?;
        scrapes += n;
        slowest = slowest.max(slow);
    }
    eprintln!(
        "{scrapes} scrapes in {} s, slowest {slowest:?}",
        4 * INTERVAL_SECS
    );
    ensure!(scrapes > 100, "only {scrapes} scrapes answered");

    let text = http_get(address, "/metrics", STEP)?.body;
    let cpu_at_end = process_cpu_nanos(fixture.pid())?;
    profiler.signal(libc::SIGINT)?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;
    check_series(&text)?;

    // Sampling went on undisturbed: the fixture's samples account for its CPU time, and the
    // intervals were cut on time.
    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    let samples = total_count(&samples_of_pid(&profiles, fixture.pid()));
    let period = 1e9 / f64::from(TEST_FREQUENCY);
    let expected = (cpu_at_end - cpu_at_ready) as f64 / period;
    eprintln!("fixture: {samples} samples for {expected:.0} expected from its CPU time");
    ensure!(
        samples as f64 >= 0.8 * expected,
        "{samples} samples of the fixture, expected at least 80% of {expected:.0}"
    );
    let starts: Vec<i64> = profiles.iter().map(|p| p.profile.time_nanos).collect();
    for pair in starts.windows(2) {
        let gap = Duration::from_nanos((pair[1] - pair[0]).max(0) as u64);
        ensure!(
            gap < Duration::from_secs(INTERVAL_SECS) + Duration::from_millis(1500),
            "intervals {gap:?} apart (interval {INTERVAL_SECS} s): a drain was held up"
        );
    }
    Ok(())
}

fn check_series(text: &str) -> Result<()> {
    let value = |series: &str| {
        metric_value(text, series).with_context(|| format!("no series {series} in:\n{text}"))
    };
    ensure!(value("profiler_samples_total")? > 0.0);
    ensure!(value("profiler_sampling_frequency_hertz")? == f64::from(TEST_FREQUENCY));
    ensure!(value("profiler_files_written_total{kind=\"interval\"}")? >= 2.0);
    ensure!(value("profiler_written_bytes_total{kind=\"interval\"}")? > 0.0);
    ensure!(value("profiler_symbol_cache_misses_total")? > 0.0);
    ensure!(value("profiler_symbol_cache_hits_total")? >= 0.0);
    ensure!(value("profiler_processes")? > 0.0);
    let per_sample = value("profiler_kernel_per_sample_seconds")?;
    ensure!(
        per_sample > 0.0 && per_sample < 1e-3,
        "kernel cost per sample {per_sample} s"
    );
    ensure!(value("profiler_bpf_runs_total")? > 0.0);
    let rss = value("process_resident_memory_bytes")?;
    ensure!(rss > 1e6 && rss < 512e6, "RSS {rss}");
    ensure!(value("process_max_resident_memory_bytes")? >= rss);
    ensure!(value("process_cpu_seconds_total")? > 0.0);
    ensure!(
        text.lines()
            .any(|l| l.starts_with("profiler_info{") && l.contains("node=\"test-node-7\"")),
        "no profiler_info with the node name in:\n{text}"
    );
    ensure!(text.ends_with("# EOF\n"), "not a complete exposition");
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn readiness_follows_the_output_directory() -> Result<()> {
    assert_root();
    let scratch = tempfile::tempdir()?;
    let out = scratch.path().join("profiles");
    let address = free_local_address()?;
    let profiler = start_profiler(&out, address)?;
    wait_for_status(address, "/readyz", 200, START_UP)?;

    // A file where the directory was: nothing can be written until it goes.
    fs::remove_dir_all(&out)?;
    fs::write(&out, b"in the way")?;
    let reason = wait_for_status(address, "/readyz", 503, STEP)?;
    ensure!(
        reason.contains("output directory"),
        "/readyz said {reason:?}"
    );
    // Two intervals in which the writer fails again: readiness must not come back meanwhile.
    thread::sleep(Duration::from_secs(2 * INTERVAL_SECS));
    let still = http_get(address, "/readyz", STEP)?;
    ensure!(
        still.status == 503,
        "ready while nothing can be written: {still:?}"
    );
    let live = http_get(address, "/healthz", STEP)?;
    ensure!(
        live.status == 200,
        "a lost directory is not a dead process: {live:?}"
    );

    // Once it is out of the way, the writer makes the directory again.
    fs::remove_file(&out)?;
    wait_for_status(
        address,
        "/readyz",
        200,
        Duration::from_secs(4 * INTERVAL_SECS),
    )?;
    profiler.signal(libc::SIGTERM)?;
    profiler.wait(WIND_DOWN)?.ensure_success()?;
    ensure!(
        fs::read_dir(&out)?.count() > 0,
        "no profile written after the directory came back"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: the profiler refuses a user before this check"]
fn a_metrics_port_in_use_is_a_one_line_error() -> Result<()> {
    assert_root();
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = taken.local_addr()?.to_string();
    let out = tempfile::tempdir()?;
    let output = run(
        record_command(
            out.path(),
            &["--metrics-address", &address, "--duration", "5"],
        ),
        START_UP,
    )?;
    output.ensure_error(&["cannot serve metrics", &address, "--metrics-address"])
}
