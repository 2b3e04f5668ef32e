//! OTLP export (issue 17): what a recording sends decodes with the official Python classes
//! (tests/otlp_receiver.py, PyPI opentelemetry-proto in the venv `cargo xtask setup` builds),
//! carries the traced fixture's traces as links and names its functions through the
//! dictionary; and a collector that answers 503 for a while loses nothing.

use std::{
    collections::BTreeMap,
    env,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use integration_tests::{
    C_TRACED, Fixture, MIN_FUNCTION_SAMPLES, Pprof, Running, TEST_FREQUENCY, TRACED_EXE, Want,
    assert_root, free_local_address, http_get, leaf_samples, metric_value, read_checked_profiles,
    record_command, record_fixture, run, samples_of_pid, target_dir, trace_id_of,
};
use serde_json::Value;

/// Bound on a fixture's start-up (threads running, contexts published).
const READY: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_secs(5);

/// The receiver, killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    /// Starts tests/otlp_receiver.py with `args`, writing its lines to `out`.
    fn start(out: &Path, args: &[&str]) -> Result<Self> {
        let python = venv_python();
        ensure!(
            python.is_file(),
            "{} is missing: run `cargo xtask setup` (it installs opentelemetry-proto)",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("otlp_receiver.py");
        std::fs::create_dir_all(out)?;
        let out = out.join("received.jsonl");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--out")
            .arg(&out)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        let stdout = child.stdout.take().context("the receiver's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .parse()
            .with_context(|| format!("the receiver printed {line:?}, not its port"))?;
        Ok(Self { child, port, out })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every line written so far.
    fn lines(&self) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).context("a receiver line"))
            .collect()
    }

    /// The requests taken (200), after checking that none failed to decode.
    fn requests(&self) -> Result<Vec<Value>> {
        let lines = self.lines()?;
        let errors: Vec<&Value> = lines.iter().filter(|l| l.get("error").is_some()).collect();
        ensure!(
            errors.is_empty(),
            "requests the official classes could not decode: {errors:?}"
        );
        Ok(lines
            .into_iter()
            .filter(|l| l.get("samples").is_some())
            .collect())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv's Python: `PROFILER_DEPLOY_TOOLS` (set by `cargo xtask test`), else its default
/// place in the target directory.
fn venv_python() -> PathBuf {
    env::var_os("PROFILER_DEPLOY_TOOLS")
        .map_or_else(|| target_dir().join("deploy-tools/bin"), PathBuf::from)
        .join("python")
}

/// The samples of `pid` in the received requests, each with its request's number.
fn samples_of(requests: &[Value], pid: u32) -> Vec<(usize, &Value)> {
    requests
        .iter()
        .enumerate()
        .flat_map(|(n, request)| {
            request["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |sample| (n, sample))
        })
        .filter(|(_, sample)| sample["resource"]["process.pid"].as_u64() == Some(u64::from(pid)))
        .collect()
}

fn cpu_nanos(sample: &Value) -> i64 {
    sample["values"][0].as_i64().unwrap_or(0)
}

/// Every interval with samples of `pid` arrived exactly once, with the same CPU time as its file.
fn check_every_interval_once(requests: &[Value], profiles: &[Pprof], pid: u32) -> Result<()> {
    // Interval start -> (requests that carried it, CPU nanoseconds received).
    let mut received: BTreeMap<u64, (Vec<usize>, i64)> = BTreeMap::new();
    for (n, sample) in samples_of(requests, pid) {
        if sample["type"] != "cpu" {
            continue;
        }
        let start = sample["time_unix_nano"]
            .as_u64()
            .context("time_unix_nano")?;
        let entry = received.entry(start).or_default();
        if !entry.0.contains(&n) {
            entry.0.push(n);
        }
        entry.1 += cpu_nanos(sample);
    }
    let mut on_disk: BTreeMap<u64, i64> = BTreeMap::new();
    for (profile, sample) in samples_of_pid(profiles, pid) {
        *on_disk
            .entry(profile.profile.time_nanos as u64)
            .or_default() += profile.value(sample, "cpu");
    }
    for (start, (carriers, _)) in &received {
        ensure!(
            carriers.len() == 1,
            "the interval starting at {start} arrived {} times",
            carriers.len()
        );
    }
    let received: BTreeMap<u64, i64> = received.into_iter().map(|(k, v)| (k, v.1)).collect();
    ensure!(!on_disk.is_empty(), "no interval file has samples of {pid}");
    ensure!(
        received == on_disk,
        "CPU nanoseconds per interval: received {received:?}, in the files {on_disk:?}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn requests_decode_with_the_official_classes_and_carry_traces_as_links() -> Result<()> {
    assert_root();
    let dir = tempfile::tempdir()?;
    let receiver = Receiver::start(dir.path(), &[])?;
    let fixture = Fixture::spawn_ready(TRACED_EXE, &[], READY)?;
    let out = dir.path().join("out");
    let endpoint = receiver.endpoint();
    let profiles = record_fixture(&fixture, &out, 6, &["--otlp-endpoint", &endpoint])?;
    let requests = receiver.requests()?;
    ensure!(!requests.is_empty(), "no request arrived");
    let samples = samples_of(&requests, fixture.pid());
    ensure!(!samples.is_empty(), "no sample of the fixture arrived");

    let resource = &samples[0].1["resource"];
    ensure!(
        resource["host.name"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "no host.name: {resource}"
    );
    ensure!(
        resource["process.executable.name"].as_str() == Some(&fixture.expected_comm()),
        "process.executable.name: {resource}"
    );
    let on_disk = samples_of_pid(&profiles, fixture.pid());
    for traced in &C_TRACED {
        let Want::Exact(function) = traced.function else {
            bail!("C_TRACED names its functions exactly");
        };
        let own: Vec<&Value> = samples
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| s["type"] == "cpu" && s["functions"][0] == function)
            .collect();
        let nanos: i64 = own.iter().map(|s| cpu_nanos(s)).sum();
        let period = 1_000_000_000 / i64::from(TEST_FREQUENCY);
        ensure!(
            nanos >= MIN_FUNCTION_SAMPLES * period,
            "{function}: {nanos} ns of samples, expected at least {MIN_FUNCTION_SAMPLES} samples' worth"
        );
        // None links to another trace, most to its own (tests/tests/trace_context.rs holds the
        // reading of contexts to 90%; a loaded host, as when this file's tests run side by
        // side, leaves more samples unlabelled near a context switch), and exactly those the
        // files label with it.
        let mut linked = 0;
        for sample in &own {
            if sample["trace_id"].is_null() {
                continue;
            }
            ensure!(
                sample["trace_id"] == traced.trace_id,
                "a sample of {function} links to {} instead of {}",
                sample["trace_id"],
                traced.trace_id
            );
            if let Some(span) = traced.span_id {
                ensure!(
                    sample["span_id"] == span,
                    "{function}: span {}",
                    sample["span_id"]
                );
            }
            linked += cpu_nanos(sample);
        }
        ensure!(
            linked * 2 >= nanos,
            "{function}: {linked} of {nanos} ns link to trace {}",
            traced.trace_id
        );
        let labelled: i64 = leaf_samples(&on_disk, traced.function)
            .iter()
            .filter(|(p, s)| trace_id_of(p, s) == Some(traced.trace_id))
            .map(|(p, s)| p.value(s, "cpu"))
            .sum();
        ensure!(
            linked == labelled,
            "{function}: {linked} ns linked to its trace, {labelled} ns labelled in the files"
        );
    }
    check_every_interval_once(&requests, &profiles, fixture.pid())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_collector_down_for_a_while_loses_nothing_and_the_spool_drains() -> Result<()> {
    assert_root();
    let dir = tempfile::tempdir()?;
    // Down for 6 s from the first request: requests are retried (every second, as Retry-After
    // asks), then spooled after their third try.
    let receiver = Receiver::start(dir.path(), &["--fail-seconds", "6"])?;
    let fixture = Fixture::spawn_ready(TRACED_EXE, &[], READY)?;
    let out = dir.path().join("out");
    let address = free_local_address()?;
    let (pid, frequency, metrics) = (
        fixture.pid_arg(),
        TEST_FREQUENCY.to_string(),
        address.to_string(),
    );
    let endpoint = receiver.endpoint();
    let profiler = Running::spawn(record_command(
        &out,
        &[
            "--pid",
            &pid,
            "--frequency",
            &frequency,
            "--interval",
            "2",
            "--metrics-address",
            &metrics,
            "--otlp-endpoint",
            &endpoint,
        ],
    ))?;
    // Until the collector has answered again and the spool has drained.
    let deadline = Instant::now() + Duration::from_secs(90);
    let text = loop {
        thread::sleep(Duration::from_millis(500));
        let Ok(response) = http_get(address, "/metrics", STEP) else {
            ensure!(Instant::now() < deadline, "/metrics never answered");
            continue;
        };
        let text = response.body;
        let value = |series: &str| metric_value(&text, series).unwrap_or(0.0);
        let sent = value(r#"profiler_otlp_requests_total{outcome="sent"}"#);
        let spooled = value(r#"profiler_otlp_requests_total{outcome="spooled"}"#);
        let retried = value(r#"profiler_otlp_requests_total{outcome="retried"}"#);
        let spool_bytes = metric_value(&text, "profiler_otlp_spool_bytes");
        if spooled > 0.0 && sent > spooled + 1.0 && spool_bytes == Some(0.0) {
            eprintln!("sent {sent}, spooled {spooled}, retried {retried}");
            break text;
        }
        ensure!(
            Instant::now() < deadline,
            "the spool did not drain: sent {sent}, spooled {spooled}, retried {retried}, \
             spool bytes {spool_bytes:?}"
        );
    };
    ensure!(
        metric_value(&text, r#"profiler_otlp_requests_total{outcome="dropped"}"#).unwrap_or(0.0)
            == 0.0,
        "requests dropped:\n{text}"
    );
    profiler.signal(libc::SIGTERM)?;
    let output = profiler.wait(Duration::from_secs(60))?;
    output.ensure_success()?;

    let refused = receiver
        .lines()?
        .iter()
        .filter(|l| l.get("refused").is_some())
        .count();
    ensure!(refused > 0, "the receiver never answered 503");
    let spool = out.join("otlp-spool");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .with_context(|| format!("reading {}", spool.display()))?
        .collect();
    ensure!(left.is_empty(), "left in the spool: {left:?}");
    let profiles = read_checked_profiles(&out, TEST_FREQUENCY)?;
    check_every_interval_once(&receiver.requests()?, &profiles, fixture.pid())
}

/// A mistyped endpoint or header stops the recorder at start with one line saying what to fix,
/// before anything is loaded; so does a standard variable's.
#[test]
#[ignore = "needs root: loads BPF programs"]
fn bad_endpoints_and_headers_are_one_line_errors() -> Result<()> {
    assert_root();
    let out = tempfile::tempdir()?;
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--otlp-endpoint", "grpc://collector:4317"],
            &["--otlp-endpoint", "http or https"],
        ),
        (
            &["--otlp-endpoint", "collector:4318"],
            &["--otlp-endpoint", "not a URL"],
        ),
        (
            &[
                "--otlp-endpoint",
                "http://127.0.0.1:1",
                "--otlp-header",
                "token",
            ],
            &["KEY=VALUE"],
        ),
    ];
    for (args, words) in cases {
        let mut cmd = record_command(out.path(), &[&["--duration", "1"], args].concat());
        cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        run(cmd, Duration::from_secs(60))?
            .ensure_error(words)
            .with_context(|| format!("{args:?}"))?;
    }
    let mut cmd = record_command(out.path(), &["--duration", "1"]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "a=1,broken");
    run(cmd, Duration::from_secs(60))?
        .ensure_error(&["OTEL_EXPORTER_OTLP_HEADERS", "\"broken\" has no `=`"])?;
    Ok(())
}

/// A collector down for a whole recording: at its end every request is in the spool, and the
/// next recording sends them all before its own, each interval once.
#[test]
#[ignore = "needs root: loads BPF programs"]
fn requests_spooled_at_the_end_are_sent_by_the_next_run() -> Result<()> {
    assert_root();
    let dir = tempfile::tempdir()?;
    let fixture = Fixture::spawn_ready(TRACED_EXE, &[], READY)?;
    let out = dir.path().join("out");
    let spool = out.join("otlp-spool");
    let spooled = |spool: &Path| -> Result<usize> { Ok(std::fs::read_dir(spool)?.count()) };
    {
        let down = Receiver::start(&dir.path().join("down"), &["--fail-seconds", "3600"])?;
        let endpoint = down.endpoint();
        record_fixture(&fixture, &out, 4, &["--otlp-endpoint", &endpoint])?;
        ensure!(down.requests()?.is_empty(), "a request got through");
    }
    let left = spooled(&spool)?;
    ensure!(
        left > 0,
        "nothing spooled by a run whose collector was down"
    );

    let up = Receiver::start(&dir.path().join("up"), &[])?;
    let endpoint = up.endpoint();
    let profiles = record_fixture(&fixture, &out, 3, &["--otlp-endpoint", &endpoint])?;
    ensure!(spooled(&spool)? == 0, "the spool did not drain");
    let requests = up.requests()?;
    ensure!(
        requests.len() > left,
        "{} requests for {left} spooled and the second run's",
        requests.len()
    );
    check_every_interval_once(&requests, &profiles, fixture.pid())
}
