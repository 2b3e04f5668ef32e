//! Trace context: samples of threads that publish an OpenTelemetry thread-local record carry
//! its trace ID, span ID and attributes as labels, and each trace gets its own pprof file and an
//! index line. The C scenario (fixtures/traced_scenario.c) runs in three variants, one per place
//! the thread-local pointer can live; the Rust fixture is profiler-marker's example.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    C_TRACED, C_UNTRACED, Fixture, IndexExpectation, MARKER_SERVICE, MARKER_TRACED,
    MARKER_WORKER_THREAD, MIN_FUNCTION_SAMPLES, Pprof, Sample, TRACE_D, TRACED_EXE, TRACED_GD,
    TRACED_TLSDESC, TracedFn, assert_root, check_go_tagfocus, check_index, check_no_trace_labels,
    check_trace_absent, check_trace_file, check_trace_label_format, check_traced_fn,
    check_traced_fn_labels, check_untraced_fn, count_where, describe_trace_labels, go_pprof_top,
    leaf_samples, read_index, record_fixture, samples_of_pid, total_count, trace_file_ids,
    trace_id_of, traced_worker_bin,
};

/// Long enough for a few hundred samples per thread at 99 Hz on 2 busy cores, in 2 s intervals.
const RECORD_SECONDS: u64 = 6;
/// Bound on a fixture's start-up (threads running, contexts published).
const READY: Duration = Duration::from_secs(30);

#[test]
#[ignore = "needs root: loads BPF programs"]
fn static_tls_in_the_executable() -> Result<()> {
    assert_root();
    check_c_variant(TRACED_EXE).context("variable in the executable")
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn tlsdesc_in_a_shared_library() -> Result<()> {
    assert_root();
    check_c_variant(TRACED_TLSDESC).context("variable in a -mtls-dialect=gnu2 library")
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn general_dynamic_in_a_shared_library() -> Result<()> {
    assert_root();
    check_c_variant(TRACED_GD).context("variable in a -mtls-dialect=gnu library")
}

/// Records one C variant and checks the labels of every hot function, the trace files, the
/// index, and `go tool pprof -tagfocus`.
fn check_c_variant(fixture_path: &str) -> Result<()> {
    let mut fixture = Fixture::spawn_ready(fixture_path, &[], READY)?;
    let out = tempfile::tempdir()?;
    let recording = record(&mut fixture, out.path(), &[])?;
    let samples = samples_of_pid(&recording.profiles, fixture.pid());

    check_trace_label_format(&samples)?;
    for traced in &C_TRACED {
        check_traced_fn(&samples, traced)?;
    }
    for untraced in C_UNTRACED {
        check_untraced_fn(&samples, untraced)?;
    }
    check_trace_absent(&samples, TRACE_D)?;

    check_trace_output(out.path(), &fixture, &C_TRACED, &[], &samples, &recording)?;
    for traced in &C_TRACED {
        check_go_tagfocus(&recording.profiles, traced, &C_TRACED)?;
    }
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn no_trace_context_flag_leaves_samples_unlabelled() -> Result<()> {
    assert_root();
    let mut fixture = Fixture::spawn_ready(TRACED_EXE, &[], READY)?;
    let out = tempfile::tempdir()?;
    let recording = record(&mut fixture, out.path(), &["--no-trace-context"])?;
    let samples = samples_of_pid(&recording.profiles, fixture.pid());

    check_no_trace_labels(&samples)?;
    // The recording itself is unchanged: every thread is sampled.
    for traced in &C_TRACED {
        let n = total_count(&leaf_samples(&samples, traced.function));
        ensure!(
            n >= MIN_FUNCTION_SAMPLES,
            "only {n} samples in {}",
            traced.function.text()
        );
    }
    let files = trace_file_ids(out.path())?;
    ensure!(
        files.is_empty(),
        "trace files written with --no-trace-context: {files:?}"
    );
    let index = read_index(out.path())?;
    ensure!(
        index.is_empty(),
        "{} index lines written with --no-trace-context",
        index.len()
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn max_traces_per_interval_caps_labelled_traces() -> Result<()> {
    assert_root();
    let mut fixture = Fixture::spawn_ready(TRACED_EXE, &[], READY)?;
    let out = tempfile::tempdir()?;
    let recording = record(
        &mut fixture,
        out.path(),
        &["--max-traces-per-interval", "1"],
    )?;
    let samples = samples_of_pid(&recording.profiles, fixture.pid());
    check_trace_label_format(&samples)?;

    for p in &recording.profiles {
        let traces: BTreeSet<&str> = p
            .profile
            .sample
            .iter()
            .filter_map(|s| trace_id_of(p, s))
            .collect();
        ensure!(
            traces.len() <= 1,
            "{} has {} traces with --max-traces-per-interval 1: {traces:?}",
            p.path.display(),
            traces.len()
        );
    }
    // Over the cap, samples lose their trace, not their place in the profile; labels that are
    // there are still right.
    let mut labelled = 0;
    for traced in &C_TRACED {
        labelled += check_traced_fn_labels(&samples, traced)?.1;
    }
    ensure!(labelled > 0, "no sample labelled with a trace at all");
    let unlabelled = count_where(&samples, |p, s| {
        trace_id_of(p, s).is_none() && C_TRACED.iter().any(|t| p.has_leaf(s, t.function))
    });
    ensure!(
        unlabelled > 0,
        "every sample of the four traced functions kept its trace despite the cap; labels:\n{}",
        describe_trace_labels(&samples, 8)
    );
    check_trace_absent(&samples, TRACE_D)
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn marker_library_publishes_service_and_named_attributes() -> Result<()> {
    assert_root();
    let bin = traced_worker_bin()?;
    let bin = bin.to_str().context("marker example path is not UTF-8")?;
    // Its lifetime only bounds a leak: the fixture is killed when dropped.
    let mut fixture = Fixture::spawn_ready(bin, &["3600"], READY)?;
    let out = tempfile::tempdir()?;
    let recording = record(&mut fixture, out.path(), &[])?;
    let samples = samples_of_pid(&recording.profiles, fixture.pid());

    check_trace_label_format(&samples)?;
    for traced in &MARKER_TRACED {
        check_traced_fn(&samples, traced)?;
        let off_worker = count_where(&leaf_samples(&samples, traced.function), |p, s| {
            p.label_str(s, "thread_name") != Some(MARKER_WORKER_THREAD)
        });
        ensure!(
            off_worker == 0,
            "{off_worker} samples of {} off the {MARKER_WORKER_THREAD} thread",
            traced.function.text()
        );
    }
    check_trace_output(
        out.path(),
        &fixture,
        &MARKER_TRACED,
        &[MARKER_SERVICE],
        &samples,
        &recording,
    )?;
    for traced in &MARKER_TRACED {
        check_go_tagfocus(&recording.profiles, traced, &MARKER_TRACED)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A finished recording: its interval files and wall-clock bounds.
struct Recording {
    profiles: Vec<Pprof>,
    started: SystemTime,
    ended: SystemTime,
}

/// Records `fixture` for [`RECORD_SECONDS`] in 2-second intervals with `extra` flags. The
/// profiler must exit 0 (a clean end, no panic) after the whole duration, with the fixture still
/// running: garbage or unmapped memory in a target never stops it early.
fn record(fixture: &mut Fixture, out: &Path, extra: &[&str]) -> Result<Recording> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let profiles = record_fixture(fixture, out, RECORD_SECONDS, extra)?;
    let elapsed = clock.elapsed();
    ensure!(
        elapsed >= Duration::from_secs(RECORD_SECONDS),
        "the profiler ended after {elapsed:?}, before its {RECORD_SECONDS} s duration"
    );
    ensure!(
        fixture.is_running()?,
        "the fixture {} ended during the recording",
        fixture.path().display()
    );
    Ok(Recording {
        profiles,
        started,
        ended: SystemTime::now(),
    })
}

/// The trace files are exactly those of `traced`, each consistent with the interval files, and
/// the index describes each (with `services` as its service names); `go tool pprof` reads them.
fn check_trace_output(
    out: &Path,
    fixture: &Fixture,
    traced: &[TracedFn],
    services: &[&str],
    samples: &[(&Pprof, &Sample)],
    recording: &Recording,
) -> Result<()> {
    let files = trace_file_ids(out)?;
    let wanted: BTreeSet<String> = traced.iter().map(|t| t.trace_id.to_owned()).collect();
    ensure!(
        files == wanted,
        "trace files for {files:?}, want exactly {wanted:?}"
    );
    let index = read_index(out)?;
    for entry in &index {
        ensure!(
            wanted.contains(&entry.trace_id),
            "index line {} for trace {} without a trace file",
            entry.line,
            entry.trace_id
        );
    }
    for t in traced {
        let file = check_trace_file(out, t, traced, fixture.pid(), samples)?;
        let want = IndexExpectation {
            trace: t,
            pid: fixture.pid(),
            service_names: services,
            recorded: (recording.started, recording.ended),
        };
        check_index(&index, &want, &file)?;
        let top = go_pprof_top(&file.path)?;
        ensure!(
            top.contains(t.function.text()),
            "go tool pprof -top {} does not name {}:\n{top}",
            file.path.display(),
            t.function.text()
        );
    }
    Ok(())
}
