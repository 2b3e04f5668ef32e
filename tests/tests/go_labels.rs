//! Go: samples of goroutines running under pprof labels (`pprof.Do(ctx, pprof.Labels("trace_id",
//! ...), f)`) carry `trace_id`, `span_id` and the other labels, and each trace gets its own file,
//! for the fixture (fixtures/go/labels) built with every pinned Go toolchain, 1.19 to 1.27; a
//! stripped build keeps its Go names; a build whose layout is unknown is sampled without labels.

use std::{fs, time::Duration};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Fixture, GO_CHURN, GO_TRACED, GO_UNLABELLED, GoFixture, MIN_FUNCTION_SAMPLES, Pprof,
    TEST_FREQUENCY, assert_root, check_no_trace_labels, check_trace_label_format, check_traced_fn,
    check_untraced_fn, count_where, describe_trace_labels, go_fixture, leaf_samples,
    literal_addresses, page_out, page_present, read_checked_profiles, record_fixture,
    record_fixture_run, samples_of_pid, skip_or_fail, total_count, trace_file_ids, trace_id_of,
};

/// Long enough for a few hundred samples per goroutine at 99 Hz on 2 busy cores.
const RECORD_SECONDS: u64 = 6;
/// Bound on the fixture's start-up (goroutines running under their labels).
const READY: Duration = Duration::from_secs(30);

/// The fixture built with `version`, or a skip (a failure in CI) when that toolchain is missing.
fn fixture_or_skip(version: &str) -> Option<GoFixture> {
    let found = go_fixture(version);
    if found.is_none() {
        skip_or_fail(&format!(
            "Go {version} was not installed when the tests were built: run `cargo xtask setup`"
        ));
    }
    found
}

/// Records one build (stripped: `-ldflags="-s -w"`, named from `.gopclntab` alone) and checks
/// every goroutine's labels, the churning one's, and the files.
fn check_version(version: &str, stripped: bool) -> Result<()> {
    let Some(go) = fixture_or_skip(version) else {
        return Ok(());
    };
    let binary = if stripped { go.stripped } else { go.full };
    let version = &format!("{version}{}", if stripped { " stripped" } else { "" });
    let fixture = Fixture::spawn_ready(binary, &[], READY)?;
    let out = tempfile::tempdir()?;
    // With debug logging: a failure shows where the profiler found the labels, and each
    // interval's traced samples and lost or degraded ones.
    let run = record_fixture_run(&fixture, out.path(), RECORD_SECONDS, 2, &["-v"])?;
    check_recording(&fixture, out.path())
        .with_context(|| format!("Go {version}; the profiler's log:\n{}", run.stderr))
}

/// The checks of [`check_version`] on the files of its recording in `out`.
fn check_recording(fixture: &Fixture, out: &std::path::Path) -> Result<()> {
    let profiles = read_checked_profiles(out, TEST_FREQUENCY)?;
    let samples = samples_of_pid(&profiles, fixture.pid());
    check_trace_label_format(&samples)?;
    // Every goroutine's check, not only the first failing: which of them lost their labels
    // tells a lost target from a lost label set.
    let failures: Vec<String> = GO_TRACED
        .iter()
        .map(|traced| check_traced_fn(&samples, traced))
        .chain([check_untraced_fn(&samples, GO_UNLABELLED)])
        .filter_map(|checked| checked.err().map(|err| format!("{err:#}")))
        .collect();
    ensure!(failures.is_empty(), "{}", failures.join("\n"));

    // The goroutine that changes labels every 2 ms, collecting garbage in between: each of its
    // functions' samples carry that function's trace (never the other's, whose label set may
    // have been at the same address a moment before), and nearly all carry one.
    for (function, trace) in GO_CHURN {
        let churn = leaf_samples(&samples, function);
        let total = total_count(&churn);
        ensure!(
            total >= MIN_FUNCTION_SAMPLES,
            "{total} samples of {function:?}"
        );
        let foreign = count_where(&churn, |p, s| trace_id_of(p, s).is_some_and(|t| t != trace));
        ensure!(
            foreign == 0,
            "{foreign} samples of {function:?} carry another trace than {trace}:\n{}",
            describe_trace_labels(&churn, 8)
        );
        let labelled = count_where(&churn, |p, s| trace_id_of(p, s).is_some());
        ensure!(
            labelled * 10 >= total * 9,
            "{labelled} of {total} samples of {function:?} carry a trace:\n{}",
            describe_trace_labels(&churn, 8)
        );
    }

    let files = trace_file_ids(out)?;
    for trace in GO_TRACED
        .iter()
        .map(|t| t.trace_id)
        .chain(GO_CHURN.map(|(_, t)| t))
    {
        ensure!(
            files.contains(trace),
            "no traces/{trace}.pb.gz; files: {files:?}"
        );
    }
    ensure!(files.len() == 4, "trace files of unknown traces: {files:?}");
    Ok(())
}

macro_rules! go_version_tests {
    ($($name:ident, $stripped_name:ident => $version:literal,)*) => {$(
        #[test]
        #[ignore = "needs root: loads BPF programs"]
        fn $name() -> Result<()> {
            assert_root();
            check_version($version, false)
        }

        #[test]
        #[ignore = "needs root: loads BPF programs"]
        fn $stripped_name() -> Result<()> {
            assert_root();
            check_version($version, true)
        }
    )*};
}

go_version_tests! {
    go_1_19, go_1_19_stripped => "1.19.8",
    go_1_21, go_1_21_stripped => "1.21.13",
    go_1_22, go_1_22_stripped => "1.22.10",
    go_1_23, go_1_23_stripped => "1.23.9",
    go_1_24, go_1_24_stripped => "1.24.11",
    go_1_25, go_1_25_stripped => "1.25.5",
    go_1_26, go_1_26_stripped => "1.26.6",
    go_1_27, go_1_27_stripped => "1.27.3",
}

/// The label values are constants the fixture passes on but never reads: once the kernel drops
/// their page (reclaim does so to clean file pages under memory pressure), a BPF program cannot
/// read them, and they are read from the executable. CI once ran a whole recording of Go 1.22
/// with that page out: every labelled sample failed its read and carried no trace.
fn check_literals_paged_out(version: &str) -> Result<()> {
    let Some(go) = fixture_or_skip(version) else {
        return Ok(());
    };
    let fixture = Fixture::spawn_ready(go.full, &[], READY)?;
    let pid = fixture.pid();
    let literals: Vec<&str> = GO_TRACED
        .iter()
        .map(|t| t.trace_id)
        .chain(GO_CHURN.map(|(_, t)| t))
        .collect();
    let addresses = literal_addresses(std::path::Path::new(go.full), &literals)?;
    page_out(pid, &addresses)?;
    let out_pages = || -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for &address in &addresses {
            if !page_present(pid, address)? {
                out.push(address);
            }
        }
        Ok(out)
    };
    ensure!(
        out_pages()? == addresses,
        "Go {version}: the trace IDs' pages stayed in: {:x?} of {addresses:x?} out",
        out_pages()?
    );
    let out = tempfile::tempdir()?;
    let run = record_fixture_run(&fixture, out.path(), RECORD_SECONDS, 2, &["-v"])?;
    check_recording(&fixture, out.path())
        .with_context(|| format!("Go {version}; the profiler's log:\n{}", run.stderr))?;
    // Else the kernel may have read them after all, and the test proved nothing.
    ensure!(
        out_pages()? == addresses,
        "Go {version}: the fixture brought its trace IDs' pages back in: {:x?} of {addresses:x?} out",
        out_pages()?
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn label_values_on_pages_out_of_memory_go_1_21() -> Result<()> {
    assert_root();
    check_literals_paged_out("1.21.13")
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn label_values_on_pages_out_of_memory_go_1_27() -> Result<()> {
    assert_root();
    check_literals_paged_out("1.27.3")
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn no_trace_context_flag_turns_go_labels_off() -> Result<()> {
    assert_root();
    let Some(go) = fixture_or_skip("1.24.11") else {
        return Ok(());
    };
    let fixture = Fixture::spawn_ready(go.full, &[], READY)?;
    let out = tempfile::tempdir()?;
    let profiles = record_fixture(&fixture, out.path(), 4, &["--no-trace-context"])?;
    check_no_trace_labels(&samples_of_pid(&profiles, fixture.pid()))?;
    let files = trace_file_ids(out.path())?;
    ensure!(
        files.is_empty(),
        "trace files with --no-trace-context: {files:?}"
    );
    Ok(())
}

/// A release without a table row and a binary without DWARF: the stripped 1.21 build, its
/// `.go.buildinfo` version patched to 1.20 (no toolchain of 1.20 is at hand, so it has no row).
/// One log line, no labels, nothing misattributed; the process is still sampled.
#[test]
#[ignore = "needs root: loads BPF programs"]
fn an_unknown_release_is_sampled_without_labels_and_logged_once() -> Result<()> {
    assert_root();
    let Some(go) = fixture_or_skip("1.21.13") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let patched = dir.path().join("go-labels-fixture-unknown-release");
    let mut bytes = fs::read(go.stripped)?;
    // Every copy: `.go.buildinfo`'s and `runtime.buildVersion`'s.
    let mut patched_any = false;
    while let Some(at) = find(&bytes, b"go1.21.13") {
        bytes[at..at + 9].copy_from_slice(b"go1.20.13");
        patched_any = true;
    }
    ensure!(patched_any, "no version string in the fixture");
    fs::write(&patched, &bytes)?;
    fs::set_permissions(
        &patched,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;

    let fixture = Fixture::spawn_ready(patched.to_str().context("path")?, &[], READY)?;
    let out = tempfile::tempdir()?;
    let output = record_fixture_run(&fixture, out.path(), 4, 2, &[])?;
    let logged = output
        .stderr
        .lines()
        .filter(|line| line.contains("sampled without goroutine labels"))
        .collect::<Vec<_>>();
    ensure!(
        logged.len() == 1 && logged[0].contains("go1.20"),
        "want one log line naming go1.20, got {logged:?}; stderr:\n{}",
        output.stderr
    );
    let profiles: Vec<Pprof> = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    let samples = samples_of_pid(&profiles, fixture.pid());
    ensure!(
        total_count(&samples) >= MIN_FUNCTION_SAMPLES,
        "the process was not sampled"
    );
    check_no_trace_labels(&samples)?;
    ensure!(
        trace_file_ids(out.path())?.is_empty(),
        "trace files written"
    );
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
