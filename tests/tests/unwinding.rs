//! User stacks without frame pointers, walked in the kernel by the files' unwind tables: code
//! built with `-O2 -fomit-frame-pointer` (the fixture) and Debian's libc show every caller up to
//! `main` and `_start`, and `--no-dwarf-unwinding` shows what frame pointers alone give.

use std::time::Duration;

use anyhow::{Result, ensure};
use integration_tests::{
    Fixture, TEST_FREQUENCY, assert_root, read_checked_profiles, record_fixture_run,
};

const FIXTURE: &str = env!("FIXTURE_UNWIND_SPIN");
/// The same source built with frame pointers.
const FIXTURE_FP: &str = env!("FIXTURE_UNWIND_SPIN_FP");
const RUST: &str = env!("FIXTURE_UNWIND_RUST");
const CPP: &str = env!("FIXTURE_UNWIND_CPP");
/// One profile's stacks of the fixture (function names, leaf first) and their sample counts.
type Interval = Vec<(Vec<String>, i64)>;
const PLUGIN: &str = env!("FIXTURE_UNWIND_PLUGIN");

/// Samples of the fixture whose leaf is `leaf`, and how many of them hold `callers` in order
/// above it (leaf first, not necessarily adjacent), reaching `main`.
struct Counted {
    samples: i64,
    complete: i64,
    truncated: i64,
    /// One stack that is not complete, for the failure message.
    example: Option<Vec<String>>,
}

fn record(mode: &[&str], seconds: u64, extra: &[&str]) -> Result<(Vec<Interval>, String)> {
    record_fixture(FIXTURE, mode, seconds, extra)
}

/// Records the fixture at `path`, started with `mode`, for `seconds` in 1 s intervals; its
/// stacks per interval, and the recorder's log.
fn record_fixture(
    path: &str,
    mode: &[&str],
    seconds: u64,
    extra: &[&str],
) -> Result<(Vec<Interval>, String)> {
    let fixture = Fixture::spawn_ready(path, mode, Duration::from_secs(10))?;
    let out = tempfile::tempdir()?;
    let output = record_fixture_run(&fixture, out.path(), seconds, 1, extra)?;
    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    let stacks = profiles
        .iter()
        .map(|profile| {
            profile
                .samples_of_pid(fixture.pid())
                .map(|sample| (profile.stack_names(sample), profile.count(sample)))
                .collect()
        })
        .collect();
    Ok((stacks, output.stderr))
}

fn count(intervals: &[Interval], leaf: &str, callers: &[&str]) -> Counted {
    let mut counted = Counted {
        samples: 0,
        complete: 0,
        truncated: 0,
        example: None,
    };
    for (names, count) in intervals.iter().flatten() {
        // The fixture's user stack starts at its leaf (a sample in the kernel has kernel frames
        // first).
        let Some(at) = names.iter().position(|name| name.contains(leaf)) else {
            continue;
        };
        counted.samples += count;
        if names.last().map(String::as_str) == Some("[truncated]") {
            counted.truncated += count;
        }
        let mut rest = names[at + 1..].iter();
        if callers
            .iter()
            .all(|caller| rest.any(|name| name.contains(caller)))
        {
            counted.complete += count;
        } else if counted.example.is_none() {
            counted.example = Some(names.clone());
        }
    }
    counted
}

/// The intervals after the first. The first second of a recording covers the build of the
/// fixture's tables (and libc's): its samples are walked by frame pointers and counted as
/// pending, whatever the walk does once the tables are in. CI runs these tests side by side on a
/// loaded machine, in a debug build, where that build took half a second.
fn after_the_first(stacks: &[Interval]) -> &[Interval] {
    stacks.get(1..).unwrap_or_default()
}

/// Samples unwound by tables, from the recorder's lines for each interval (`unwound=N`).
fn unwound(stderr: &str) -> u64 {
    stderr
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("unwound="))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

fn ensure_complete(counted: &Counted, share: f64, what: &str) -> Result<()> {
    ensure!(
        counted.samples >= 50,
        "only {} samples of {what}",
        counted.samples
    );
    ensure!(
        counted.complete as f64 >= counted.samples as f64 * share,
        "{} of {} samples of {what} have every caller; one that has not: {:?}",
        counted.complete,
        counted.samples,
        counted.example
    );
    Ok(())
}

const CHAIN: [&str; 5] = [
    "chain_three",
    "chain_two",
    "chain_one",
    "main",
    "__libc_start_main",
];

#[test]
#[ignore = "needs root: loads BPF programs"]
fn code_without_frame_pointers_shows_every_caller() -> Result<()> {
    assert_root();
    let (stacks, stderr) = record(&["chain"], 5, &[])?;
    let counted = count(after_the_first(&stacks), "spin_leaf", &CHAIN);
    ensure_complete(&counted, 0.9, "spin_leaf")?;
    ensure!(
        unwound(&stderr) > 0,
        "no sample unwound by tables in the log:\n{stderr}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn frame_pointers_alone_lose_the_callers_of_such_code() -> Result<()> {
    assert_root();
    let (stacks, stderr) = record(&["chain"], 3, &["--no-dwarf-unwinding"])?;
    let counted = count(&stacks, "spin_leaf", &CHAIN);
    ensure!(counted.samples >= 30, "only {} samples", counted.samples);
    // What the test above checks is the tables' doing: without them the chain is lost.
    ensure!(
        counted.complete * 10 <= counted.samples,
        "{} of {} samples have every caller without unwind tables",
        counted.complete,
        counted.samples
    );
    ensure!(
        unwound(&stderr) == 0,
        "walks by tables with --no-dwarf-unwinding:\n{stderr}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn the_walk_crosses_libc_without_frame_pointers() -> Result<()> {
    assert_root();
    // A program with frame pointers and one without, each calling libc's qsort (built without)
    // with a comparator that spins.
    for (path, build) in [
        (FIXTURE_FP, "frame pointers"),
        (FIXTURE, "no frame pointers"),
    ] {
        let (stacks, _) = record_fixture(path, &["qsort"], 5, &[])?;
        // libc's own frames are between: the walk went through them, not around.
        let counted = count(
            after_the_first(&stacks),
            "compare_spin",
            &[
                "msort",
                "qsort",
                "sort_numbers",
                "main",
                "__libc_start_call_main",
            ],
        );
        ensure_complete(&counted, 0.9, &format!("compare_spin under qsort, {build}"))?;
    }
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_rust_release_build_shows_every_caller() -> Result<()> {
    assert_root();
    let (stacks, _) = record_fixture(RUST, &["spin"], 5, &[])?;
    let counted = count(
        after_the_first(&stacks),
        "chain_c",
        &["chain_b", "chain_a", "main", "__libc_start_call_main"],
    );
    ensure_complete(&counted, 0.9, "the Rust fixture's chain_c")
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn cpp_with_exceptions_and_inlined_functions_shows_every_caller() -> Result<()> {
    assert_root();
    let (stacks, _) = record_fixture(CPP, &["spin"], 5, &[])?;
    let counted = count(
        after_the_first(&stacks),
        "Worker::block",
        &[
            "Worker::run",
            "run_guarded",
            "main",
            "__libc_start_call_main",
        ],
    );
    ensure_complete(&counted, 0.9, "the C++ fixture's Worker::block")
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn the_walk_crosses_a_signal_frame() -> Result<()> {
    assert_root();
    let (stacks, _) = record(&["signal"], 8, &[])?;
    let counted = count(
        after_the_first(&stacks),
        "signal_spin",
        &["on_alarm", "spin_until_signal", "main", "__libc_start_main"],
    );
    ensure_complete(&counted, 0.7, "signal_spin in a signal handler")
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_walk_deeper_than_the_frame_limit_is_cut_and_marked() -> Result<()> {
    assert_root();
    let (stacks, stderr) = record(&["deep"], 4, &[])?;
    let counted = count(after_the_first(&stacks), "spin_leaf", &["recurse"]);
    ensure!(counted.samples >= 50, "only {} samples", counted.samples);
    ensure!(
        counted.truncated * 10 >= counted.samples * 8,
        "{} of {} samples 200 calls deep end at [truncated]",
        counted.truncated,
        counted.samples
    );
    ensure!(
        stderr.contains("\"user_stack_truncated\""),
        "no user_stack_truncated count in the log:\n{stderr}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_library_opened_after_the_first_sample_is_walked_once_its_mappings_are_reread() -> Result<()> {
    assert_root();
    let (stacks, _) = record(&["dlopen", PLUGIN], 9, &[])?;
    // The mappings are reread at most every 5 s: the last intervals walk through the plugin.
    let last = &stacks[stacks.len().saturating_sub(2)..];
    let counted = count(
        last,
        "plugin_callback",
        &["plugin_call", "run_plugin", "main"],
    );
    ensure_complete(&counted, 0.8, "plugin_callback in the last two intervals")
}
