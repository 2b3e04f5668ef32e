//! Trace context in a library opened after the profiler first looked at the process: the
//! profiler finds no `otel_thread_ctx_v1` in the process's first snapshot, looks again at sampled
//! processes without a location every 10 s (recapturing their mappings), and from then on the
//! samples of the thread that publishes a context carry its trace. The fixture
//! (fixtures/traced_dlopen.c) dlopens the TLSDESC library `libotelctx_gnu2.so` when told to.
//!
//! glibc gives a module opened with dlopen a block of the static TLS surplus while it has room
//! (the TLSDESC descriptor then holds a thread-pointer offset) and dynamic TLS otherwise (the
//! descriptor points to the module ID and offset, and BPF walks glibc's DTV). The first test runs
//! the fixture as is, the second with the optional surplus turned off, to get the DTV case.

use std::{
    collections::BTreeSet,
    fs, thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use integration_tests::{
    Fixture, IndexExpectation, Pprof, Running, SERVICE_NAME_LABEL, SPAN_DLOPEN, Sample,
    TEST_FREQUENCY, TRACE_DLOPEN, TRACED_DLOPEN, TracedFn, Want, assert_root, check_index,
    check_trace_file, check_trace_label_format, check_traced_fn, check_traced_fn_labels,
    check_untraced_fn, count_where, describe_trace_labels, log_lines, profile_start,
    read_checked_profiles, read_index, record_command, run_timeout, samples_of_pid,
    seconds_between, send_signal, trace_file_ids, trace_id_of, utc, wait_for_profile,
};

/// Length of the recording: the dlopen, the profiler's retry, and two intervals after it.
const RECORD_SECONDS: u64 = 24;
/// Interval length (`--interval`).
const INTERVAL_SECONDS: u64 = 3;
/// The profiler looks again at a process without a location this long after its last look
/// (`RETRY_AFTER` in profiler-user/src/tracectx/tracker.rs), at the first interval end after it.
const RETRY_SECONDS: f64 = 10.0;
/// Intervals that start this long after the recording started come after the retry: the dlopen
/// at ~3 s, the retry at the first interval end 10 s after the first look (12 s), and one
/// interval of slack for a late first look.
const LATE_INTERVAL_SECONDS: f64 = 16.0;
/// The dlopen must come before the retry looks at the process again (at an interval end at least
/// 10 s after the first look) for the retry to find the library; 2 s of margin.
const LATEST_DLOPEN_SECONDS: f64 = RETRY_SECONDS - 2.0;
/// Bound on the fixture's start-up, on the profiler's, and on the dlopen.
const READY: Duration = Duration::from_secs(30);
const SAMPLING: Duration = Duration::from_secs(60);
const DLOPEN: Duration = Duration::from_secs(10);
/// Bound on the first interval file with the fixture's samples before the dlopen.
const FIRST_FILE: Duration = Duration::from_secs(30);
/// The library the fixture opens, as `/proc/<pid>/maps` names it.
const LIBRARY: &str = "libotelctx_gnu2.so";

const BEFORE: Want<'static> = Want::Exact("before_dlopen_fn");
const AFTER: TracedFn<'static> = TracedFn {
    function: Want::Exact("after_dlopen_fn"),
    trace_id: TRACE_DLOPEN,
    span_id: Some(SPAN_DLOPEN),
    labels: &[],
    absent: &["attr_0", SERVICE_NAME_LABEL],
};

/// `TlsLocation::kind` values (profiler-common) as the profiler's debug line prints them.
const TLS_STATIC: u32 = 1;
const TLS_DTV: u32 = 2;
/// glibc tunable leaving no static TLS for modules opened later: their TLS is dynamic.
const NO_OPTIONAL_STATIC_TLS: (&str, &str) = ("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=0");

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_library_opened_later_is_found() -> Result<()> {
    assert_root();
    // Static TLS surplus or DTV, whichever this glibc chooses.
    check_dlopen(&[], &[TLS_STATIC, TLS_DTV])
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_library_opened_later_in_dynamic_tls_is_found() -> Result<()> {
    assert_root();
    check_dlopen(&[NO_OPTIONAL_STATIC_TLS], &[TLS_DTV])
        .context("library TLS in glibc's DTV (glibc.rtld.optional_static_tls=0)")
}

/// Runs the fixture with `env` added, records it, has it dlopen the library once the profiler
/// samples, and checks the samples, the trace file and the index; the location the profiler
/// found must be of one of the `kinds`.
fn check_dlopen(env: &[(&str, &str)], kinds: &[u32]) -> Result<()> {
    // Its lifetime only bounds a leak: it must outlive the recording, and is killed when dropped.
    let lifetime = (RECORD_SECONDS + 120).to_string();
    let mut fixture = Fixture::spawn_ready_with_env(TRACED_DLOPEN, &[&lifetime], env, READY)?;
    let out = tempfile::tempdir()?;

    let (pid, frequency) = (fixture.pid_arg(), TEST_FREQUENCY.to_string());
    let (duration, interval) = (RECORD_SECONDS.to_string(), INTERVAL_SECONDS.to_string());
    let args = [
        "--pid",
        &pid,
        "--frequency",
        &frequency,
        "--duration",
        &duration,
        "--interval",
        &interval,
        // Debug lines say when the profiler looked for the variable and what it found.
        "-v",
    ];
    let started = SystemTime::now();
    let clock = Instant::now();
    let profiler = Running::spawn(record_command(out.path(), &args))?;
    if !profiler.wait_until_sampling(SAMPLING) {
        let output = profiler.wait(run_timeout(Duration::from_secs(RECORD_SECONDS)))?;
        bail!(
            "the profiler did not start sampling within {SAMPLING:?} ({}); stderr:\n{}",
            output.status,
            output.stderr
        );
    }
    // The profiler takes the process's first snapshot when it first samples it (it burns CPU,
    // so at once), and names its frames from that snapshot: a file with a named sample of
    // before_dlopen_fn shows the profiler has looked before the library is there.
    wait_for_profile(
        out.path(),
        FIRST_FILE,
        &format!(
            "interval file with a sample of {} in {}",
            fixture.pid(),
            BEFORE.text()
        ),
        |p| {
            p.samples_of_pid(fixture.pid())
                .any(|s| p.has_leaf(s, BEFORE))
        },
    )?;
    send_signal(fixture.pid(), libc::SIGUSR1)?;
    let dlopened = wait_for_library(fixture.pid())?;

    let output = profiler.wait(run_timeout(Duration::from_secs(RECORD_SECONDS)))?;
    output.ensure_success()?;
    let elapsed = clock.elapsed();
    ensure!(
        elapsed >= Duration::from_secs(RECORD_SECONDS),
        "the profiler ended after {elapsed:?}, before its {RECORD_SECONDS} s duration"
    );
    ensure!(
        fixture.is_running()?,
        "the fixture ended during the recording"
    );
    let ended = SystemTime::now();
    let mut profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    profiles.sort_by_key(|p| (p.profile.time_nanos, p.path.clone()));
    let recording_start = profile_start(&profiles[0]);
    let log = tls_log(&output.stderr, fixture.pid(), recording_start);
    let dlopen_at = seconds_between(utc(dlopened), recording_start);
    ensure!(
        dlopen_at <= LATEST_DLOPEN_SECONDS,
        "the fixture opened {LIBRARY} {dlopen_at:.1} s after the recording started, later than \
         the {LATEST_DLOPEN_SECONDS} s the test needs to see the profiler's retry (host too \
         slow?); trace-context log:\n{log}"
    );

    let samples = samples_of_pid(&profiles, fixture.pid());
    check_trace_label_format(&samples)?;
    // Before the dlopen no library defines the variable: no trace.
    check_untraced_fn(&samples, BEFORE).context("before the dlopen")?;
    // No sample anywhere carries another trace, and every one of this trace has its span.
    let all: Vec<(&Pprof, &Sample)> = profiles
        .iter()
        .flat_map(|p| p.profile.sample.iter().map(move |s| (p, s)))
        .collect();
    let foreign = count_where(&all, |p, s| {
        trace_id_of(p, s).is_some_and(|t| t != TRACE_DLOPEN)
    });
    ensure!(
        foreign == 0,
        "{foreign} samples carry another trace than {TRACE_DLOPEN}:\n{}",
        describe_trace_labels(&all, 8)
    );
    let (_, labelled) = check_traced_fn_labels(&samples, &AFTER)?;

    // Intervals that start after the retry: at least 90% of the samples in after_dlopen_fn carry
    // the trace (`check_traced_fn`).
    let late: Vec<(&Pprof, &Sample)> = samples
        .iter()
        .filter(|(p, _)| seconds_between(profile_start(p), recording_start) > LATE_INTERVAL_SECONDS)
        .copied()
        .collect();
    let late_files: BTreeSet<String> = late
        .iter()
        .map(|(p, _)| describe_interval(p, recording_start))
        .collect();
    check_traced_fn(&late, &AFTER).with_context(|| {
        format!(
            "in the intervals starting more than {LATE_INTERVAL_SECONDS} s after the recording \
             started ({late_files:?}); dlopen seen {dlopen_at:.1} s after the start; per \
             interval:\n{}\ntrace-context log:\n{log}",
            per_interval(&profiles, fixture.pid(), recording_start)
        )
    })?;

    // The one location the profiler found is of the kind this glibc setup gives.
    let kind = location_kind(&log)?;
    ensure!(
        kinds.contains(&kind),
        "the profiler found a location of kind {kind}, want one of {kinds:?}; trace-context \
         log:\n{log}"
    );

    // The trace's own file and index lines, with exactly the labelled samples of the intervals.
    let files = trace_file_ids(out.path())?;
    let wanted = BTreeSet::from([TRACE_DLOPEN.to_owned()]);
    ensure!(
        files == wanted,
        "trace files for {files:?}, want exactly {wanted:?}"
    );
    let file = check_trace_file(out.path(), &AFTER, &[AFTER], fixture.pid(), &samples)?;
    let index = read_index(out.path())?;
    let want = IndexExpectation {
        trace: &AFTER,
        pid: fixture.pid(),
        service_names: &[],
        recorded: (started, ended),
    };
    check_index(&index, &want, &file)?;
    // Nothing of the trace before the library was there (1 s for clock conversions).
    let first = index
        .iter()
        .filter(|e| e.trace_id == TRACE_DLOPEN)
        .map(|e| e.first_sample_time.with_timezone(&Utc))
        .min()
        .context("no index line")?;
    ensure!(
        seconds_between(first, utc(dlopened)) > -1.0,
        "first sample of {TRACE_DLOPEN} at {first}, before the dlopen was seen at {}",
        utc(dlopened)
    );
    eprintln!(
        "dlopen seen {dlopen_at:.1} s after the recording started; {labelled} samples traced; \
         trace-context log:\n{log}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Waits until `pid` maps [`LIBRARY`]; returns when that was seen.
fn wait_for_library(pid: u32) -> Result<SystemTime> {
    let maps = format!("/proc/{pid}/maps");
    let deadline = Instant::now() + DLOPEN;
    loop {
        let text = fs::read_to_string(&maps).with_context(|| format!("reading {maps}"))?;
        if text.contains(LIBRARY) {
            return Ok(SystemTime::now());
        }
        ensure!(
            Instant::now() < deadline,
            "the fixture did not map {LIBRARY} within {DLOPEN:?} of SIGUSR1"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The profiler's log lines about `pid`'s trace-context location, each with its time since the
/// recording started, for messages.
fn tls_log(stderr: &str, pid: u32, recording_start: DateTime<Utc>) -> String {
    let field = format!("pid={pid}");
    log_lines(stderr)
        .into_iter()
        .filter(|l| {
            l.text.contains(&field)
                && (l.text.contains("trace context") || l.text.contains("trace-context"))
        })
        .map(|l| {
            let at = seconds_between(l.time, recording_start);
            format!("  +{at:.1} s {} {}", l.level, l.text)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `kind` of the one location the profiler found (`reading trace contexts ... location=
/// TlsLocation { kind: N, ... }`), from [`tls_log`]'s lines.
fn location_kind(log: &str) -> Result<u32> {
    let found: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reading trace contexts"))
        .collect();
    let [line] = found[..] else {
        bail!(
            "{} `reading trace contexts` lines for the fixture, want 1; trace-context log:\n{log}",
            found.len()
        );
    };
    line.split_once("location=TlsLocation { kind: ")
        .and_then(|(_, rest)| rest.split_once(','))
        .and_then(|(kind, _)| kind.parse().ok())
        .with_context(|| format!("no location kind in {line:?}"))
}

/// `<file> (+<start> s)`.
fn describe_interval(p: &Pprof, recording_start: DateTime<Utc>) -> String {
    let name = p.path.file_name().unwrap_or_default().to_string_lossy();
    let at = seconds_between(profile_start(p), recording_start);
    format!("{name} (+{at:.1} s)")
}

/// Per interval file: its start, and the samples of each hot function of `pid` with and without
/// the trace.
fn per_interval(profiles: &[Pprof], pid: u32, recording_start: DateTime<Utc>) -> String {
    profiles
        .iter()
        .map(|p| {
            let samples: Vec<(&Pprof, &Sample)> = p.samples_of_pid(pid).map(|s| (p, s)).collect();
            let count = |function: Want, traced: bool| {
                count_where(&samples, |p, s| {
                    p.has_leaf(s, function) && (trace_id_of(p, s) == Some(TRACE_DLOPEN)) == traced
                })
            };
            format!(
                "  {}: {} untraced in {}; {} traced, {} untraced in {}",
                describe_interval(p, recording_start),
                count(BEFORE, false),
                BEFORE.text(),
                count(AFTER.function, true),
                count(AFTER.function, false),
                AFTER.function.text()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
