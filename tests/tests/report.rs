//! `profiler report` against `go tool pprof` on the same files: the same functions in the same
//! order with the same flat% and cum% (pprof prints two decimals), for one profile, a merged
//! directory, and the `--pid`, `--trace`, `--cum` and `--value samples` variants, and the same
//! for off-CPU profiles (`--value off-cpu` and `switches` against `-sample_index=off_cpu` and
//! `switches`, interval and trace files); the flame graph and folded stacks name the hot
//! function; bad input is one line. The synthetic profiles need
//! no root; one test records a fixture (root).

use std::{collections::HashSet, fs, path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Fixture, HOT_C, RunOutput, SYNTHETIC_BLOCKED_FUNCTION, SYNTHETIC_TRACES,
    SYNTHETIC_WAITING_FUNCTION, assert_root, go_pprof, profiler_command, record_fixture, run,
    synthetic_off_cpu_recording, synthetic_recording, tag_regexp,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `profiler report <args>`, expected to succeed; its stdout.
fn report(args: &[&str]) -> Result<String> {
    let output = report_run(args)?;
    output.ensure_success()?;
    Ok(output.stdout)
}

fn report_run(args: &[&str]) -> Result<RunOutput> {
    let mut cmd = profiler_command();
    cmd.arg("report").args(args);
    run(cmd, TIMEOUT)
}

fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp paths")
}

/// One row of a `-top` table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    /// `(inline)`, `(partial-inline)` or "".
    inline: String,
    flat: f64,
    sum: f64,
    cum: f64,
    /// The flat and cum values, with how far the printed rounding may be off.
    flat_value: Value,
    cum_value: Value,
}

/// A printed value (`1.25s`, `30ms`, `42`) in nanoseconds or samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Value {
    value: f64,
    /// Half the last printed digit.
    error: f64,
}

fn value(field: &str) -> Result<Value> {
    let digits = field.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match &field[digits.len()..] {
        "" => 1.0,
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "hrs" => 3.6e12,
        other => anyhow::bail!("unit {other:?} in {field:?}"),
    };
    let number: f64 = digits.parse().with_context(|| format!("value {field:?}"))?;
    Ok(Value {
        value: number * unit,
        error: 0.0051 * unit,
    })
}

/// The rows of a `go tool pprof -top` style table.
fn parse_top(table: &str) -> Result<Vec<Row>> {
    let mut lines = table
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat  flat%"));
    lines.next().context("no `flat  flat%` header")?;
    let percent = |field: &str| -> Result<f64> {
        field
            .trim_end_matches('%')
            .parse()
            .with_context(|| format!("percentage {field:?}"))
    };
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            ensure!(fields.len() >= 6, "short row {line:?}");
            // The name is what follows the fifth field (it may hold spaces).
            let mut rest = line;
            for _ in 0..5 {
                rest = rest.trim_start();
                rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
            }
            let full = rest.trim();
            let (name, inline) = ["(inline)", "(partial-inline)"]
                .iter()
                .find_map(|label| Some((full.strip_suffix(label)?.trim_end(), *label)))
                .unwrap_or((full, ""));
            Ok(Row {
                name: name.to_owned(),
                inline: inline.to_owned(),
                flat: percent(fields[1])?,
                sum: percent(fields[2])?,
                cum: percent(fields[4])?,
                flat_value: value(fields[0])?,
                cum_value: value(fields[3])?,
            })
        })
        .collect()
}

/// Our table (all functions) and pprof's (the functions over 0.5% of the total) agree: every
/// function pprof lists is ours, in the same order, with flat% and cum% equal to pprof's
/// rounding. Returns a side-by-side for the log.
fn compare(ours: &str, go: &str) -> Result<String> {
    compare_as(ours, go, true)
}

/// [`compare`] of a selection with `go tool pprof -tagfocus`, whose percentages are of the
/// whole profile where ours are of the selection: the same functions, order and values.
fn compare_focused(ours: &str, go: &str) -> Result<String> {
    compare_as(ours, go, false)
}

fn compare_as(ours: &str, go: &str, same_total: bool) -> Result<String> {
    let ours = parse_top(ours)?;
    let go = parse_top(go)?;
    ensure!(!go.is_empty(), "go tool pprof listed no function");
    let listed: HashSet<&str> = go.iter().map(|r| r.name.as_str()).collect();
    let ours_listed: Vec<&Row> = ours
        .iter()
        .filter(|r| listed.contains(r.name.as_str()))
        .collect();
    let names = |rows: &[&Row]| rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    let go_rows: Vec<&Row> = go.iter().collect();
    ensure!(
        names(&ours_listed) == names(&go_rows),
        "function order differs:\n ours {:?}\n pprof {:?}",
        names(&ours_listed),
        names(&go_rows)
    );
    let mut side_by_side = format!(
        "{:>8} {:>8} {:>8} {:>8}  function\n",
        "flat%", "pprof", "cum%", "pprof"
    );
    for (ours, go) in ours_listed.iter().zip(&go) {
        ensure!(
            ours.inline == go.inline,
            "{}: {:?} here, {:?} in go tool pprof",
            go.name,
            ours.inline,
            go.inline
        );
        if same_total {
            for (what, a, b) in [("flat%", ours.flat, go.flat), ("cum%", ours.cum, go.cum)] {
                ensure!(
                    (a - b).abs() <= 0.011,
                    "{}: {what} {a} here, {b} in go tool pprof",
                    go.name
                );
            }
        }
        for (what, a, b) in [
            ("flat", ours.flat_value, go.flat_value),
            ("cum", ours.cum_value, go.cum_value),
        ] {
            ensure!(
                (a.value - b.value).abs() <= a.error + b.error,
                "{}: {what} {} here, {} in go tool pprof",
                go.name,
                a.value,
                b.value
            );
        }
        side_by_side.push_str(&format!(
            "{:>8.2} {:>8.2} {:>8.2} {:>8.2}  {}\n",
            ours.flat, go.flat, ours.cum, go.cum, go.name
        ));
    }
    // Functions pprof leaves out are those under its 0.5% cut; everything above is listed.
    if let Some(top) = ours.first() {
        ensure!(
            listed.contains(top.name.as_str()),
            "pprof lacks our top function {}",
            top.name
        );
    }
    Ok(side_by_side)
}

fn go_top(extra: &[&str], files: &[&Path]) -> Result<String> {
    let (last, first) = files.split_last().context("a file")?;
    let mut args = vec!["-top", "-symbolize=none"];
    args.extend(extra);
    let joined: Vec<&str> = first.iter().map(|p| text(p)).collect();
    args.extend(joined);
    go_pprof(&args, last)
}

fn interval_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    files_named(dir, "cpu-")
}

/// The files of `dir` whose names start with `prefix`, sorted.
fn files_named(dir: &Path, prefix: &str) -> Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
    });
    files.sort();
    Ok(files)
}

#[test]
fn one_profile_matches_go_pprof_top_and_top_cum() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    let file = dir.path().join("cpu-20260101T120000Z.pb.gz");
    let ours = report(&["--top", "0", text(&file)])?;
    let go = go_top(&[], &[&file])?;
    eprintln!("ours:\n{ours}\ngo tool pprof -top:\n{go}");
    eprintln!("{}", compare(&ours, &go)?);
    ensure!(ours.contains("\nType: cpu\n"), "{ours}");
    ensure!(ours.contains("File: cpu-20260101T120000Z.pb.gz"), "{ours}");

    let ours = report(&["--top", "0", "--cum", text(&file)])?;
    let go = go_top(&["-cum"], &[&file])?;
    eprintln!("-cum:\n{}", compare(&ours, &go)?);

    let ours = report(&["--top", "0", "--value", "samples", text(&file)])?;
    let go = go_top(&["-sample_index=samples"], &[&file])?;
    eprintln!("samples:\n{}", compare(&ours, &go)?);

    // The default shows the first 20 of the same order.
    let top20 = parse_top(&report(&[text(&file)])?)?;
    let all = parse_top(&report(&["--top", "0", text(&file)])?)?;
    ensure!(top20.len() == 20.min(all.len()) && top20[..] == all[..top20.len()]);
    Ok(())
}

#[test]
fn a_merged_directory_matches_go_pprof_on_its_interval_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    let ours = report(&["--top", "0", text(dir.path())])?;
    let files = interval_files(dir.path())?;
    ensure!(files.len() == 3, "{files:?}");
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let go = go_top(&[], &paths)?;
    eprintln!("merged:\n{}", compare(&ours, &go)?);
    ensure!(
        ours.starts_with(
            "Files: 3 profiles, cpu-20260101T120000Z.pb.gz to cpu-20260101T120020Z.pb.gz\n"
        ),
        "{ours}"
    );
    ensure!(
        !ours.contains("incident_only_function"),
        "the incident repeats samples of the intervals: it is not merged:\n{ours}"
    );
    Ok(())
}

#[test]
fn pid_and_trace_selections_match_go_tagfocus() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    let files = interval_files(dir.path())?;
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();

    let ours = report(&["--top", "0", "--pid", "200", text(dir.path())])?;
    let go = go_top(&["-tagfocus", "pid=200"], &paths)?;
    eprintln!("--pid 200:\n{}", compare_focused(&ours, &go)?);
    ensure!(ours.contains("Selection: pid 200"), "{ours}");

    // Without its trace file, a trace is the samples labelled with it in the interval files.
    let [trace, _] = SYNTHETIC_TRACES;
    fs::remove_dir_all(dir.path().join("traces"))?;
    let ours = report(&["--top", "0", "--trace", trace, text(dir.path())])?;
    let focus = format!("trace_id={}", tag_regexp(trace));
    let go = go_top(&["-tagfocus", &focus], &paths)?;
    eprintln!("--trace:\n{}", compare_focused(&ours, &go)?);
    ensure!(
        ours.contains("checkout_hot_leaf") && !ours.contains("payment_hot_leaf"),
        "{ours}"
    );
    Ok(())
}

#[test]
fn a_trace_with_a_file_is_reported_from_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    let [trace, _] = SYNTHETIC_TRACES;
    let file = dir.path().join("traces").join(format!("{trace}.pb.gz"));
    let ours = report(&[
        "--top",
        "0",
        "--trace",
        &trace.to_uppercase(),
        text(dir.path()),
    ])?;
    let go = go_top(&[], &[&file])?;
    eprintln!("trace file:\n{}", compare(&ours, &go)?);
    ensure!(
        ours.contains(&format!("File: traces/{trace}.pb.gz")),
        "{ours}"
    );
    Ok(())
}

#[test]
fn the_flame_graph_and_folded_stacks_name_the_hot_function() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    let svg = report(&["--format", "svg", text(dir.path())])?;
    ensure!(
        svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"),
        "not an SVG document"
    );
    for name in [
        "synthetic_hot_leaf",
        "inlined_helper",
        "synthetic100 (100)",
        "worker-101 (101)",
        "CPU time: 3 profiles",
    ] {
        ensure!(svg.contains(name), "the flame graph lacks {name}");
    }

    let out = dir.path().join("graph.svg");
    ensure!(report(&["--pid", "100", "--output", text(&out), text(dir.path())])?.is_empty());
    let written = fs::read_to_string(&out)?;
    ensure!(written.contains("synthetic_hot_leaf") && !written.contains("checkout_hot_leaf"));

    let folded = report(&["--format", "folded", text(dir.path())])?;
    let line = folded
        .lines()
        .find(|l| l.starts_with("synthetic100 (100);worker-101 (101);main;run;work;synthetic_hot_leaf;inlined_helper "))
        .context("no folded line of the inlined stack")?;
    // 120 + 240 + 360 samples of 10 ms.
    ensure!(line.ends_with(" 7200000000"), "{line}");
    ensure!(folded.lines().all(|l| {
        l.rsplit_once(' ')
            .is_some_and(|(_, n)| n.parse::<u64>().is_ok())
    }));
    Ok(())
}

#[test]
fn each_profile_gets_its_reports_beside_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    let listed = report(&["--each", text(dir.path())])?;
    let written: Vec<&str> = listed.lines().collect();
    ensure!(
        written.len() == 2 * 6,
        "3 intervals, 1 incident, 2 traces, txt and svg: {written:?}"
    );
    let incident = fs::read_to_string(dir.path().join("incident-20260101T120020Z.txt"))?;
    ensure!(
        incident.contains("trigger: cpu utilization 0.93"),
        "{incident}"
    );
    ensure!(incident.contains("incident_only_function"), "{incident}");
    let trace_svg = fs::read_to_string(
        dir.path()
            .join(format!("traces/{}.svg", SYNTHETIC_TRACES[1])),
    )?;
    ensure!(trace_svg.contains("payment_hot_leaf"));
    let folded = report(&[
        "--each",
        "--format",
        "folded",
        "--pid",
        "100",
        text(dir.path()),
    ])?;
    ensure!(
        folded.lines().count() == 4,
        "3 intervals and the incident have pid 100: {folded}"
    );
    Ok(())
}

#[test]
fn bad_input_is_one_line_and_a_corrupt_file_is_skipped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    fs::write(
        dir.path().join("cpu-20260101T120030Z.pb.gz"),
        b"\x1f\x8bnot gzip at all",
    )?;
    let output = report_run(&["--top", "3", text(dir.path())])?;
    output.ensure_success()?;
    ensure!(
        output.stderr.contains("skipping") && output.stderr.contains("cpu-20260101T120030Z.pb.gz"),
        "no warning about the corrupt file: {}",
        output.stderr
    );

    report_run(&["--pid", "4242", text(dir.path())])?
        .ensure_error(&["no samples selected", "pid 4242"])?;
    report_run(&["--since", "10m", text(dir.path())])?
        .ensure_error(&["no samples selected", "since"])?;
    report_run(&[text(&dir.path().join("missing"))])?.ensure_error(&["cannot read", "missing"])?;
    let empty = tempfile::tempdir()?;
    report_run(&[text(empty.path())])?.ensure_error(&["no profiles in"])?;
    report_run(&["--trace", "nope", text(dir.path())])?.ensure_error(&["not a trace ID"])?;
    report_run(&["--since", "soon", text(dir.path())])?.ensure_error(&["duration"])?;
    Ok(())
}

#[test]
fn off_cpu_profiles_match_go_pprof_sample_index_off_cpu() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_off_cpu_recording(dir.path())?;
    let off = files_named(dir.path(), "offcpu-")?;
    ensure!(off.len() == 3, "{off:?}");
    let file = &off[0];

    let ours = report(&["--top", "0", "--value", "off-cpu", text(file)])?;
    let go = go_top(&["-sample_index=off_cpu"], &[file])?;
    eprintln!("ours:\n{ours}\ngo tool pprof -sample_index=off_cpu -top:\n{go}");
    eprintln!("{}", compare(&ours, &go)?);
    ensure!(ours.contains("\nType: off_cpu\n"), "{ours}");
    ensure!(go.contains("Type: off_cpu"), "{go}");
    ensure!(
        ours.contains("File: offcpu-20260101T120000Z.pb.gz\nKind: off-cpu\n"),
        "{ours}"
    );
    ensure!(
        ours.contains(" switches\n"),
        "the count is of switches: {ours}"
    );
    ensure!(ours.contains(SYNTHETIC_BLOCKED_FUNCTION), "{ours}");

    // One profile without --value: its own default type, as pprof.
    let ours = report(&["--top", "0", text(file)])?;
    let go = go_top(&[], &[file])?;
    eprintln!("default:\n{}", compare(&ours, &go)?);
    ensure!(ours.contains("\nType: off_cpu\n"), "{ours}");

    let ours = report(&["--top", "0", "--cum", "--value", "off-cpu", text(file)])?;
    let go = go_top(&["-cum", "-sample_index=off_cpu"], &[file])?;
    eprintln!("-cum:\n{}", compare(&ours, &go)?);

    let ours = report(&["--top", "0", "--value", "switches", text(file)])?;
    let go = go_top(&["-sample_index=switches"], &[file])?;
    eprintln!("switches:\n{}", compare(&ours, &go)?);
    ensure!(ours.contains("\nType: switches\n"), "{ours}");
    Ok(())
}

#[test]
fn a_merged_off_cpu_report_reads_the_off_cpu_intervals() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_off_cpu_recording(dir.path())?;
    let off = files_named(dir.path(), "offcpu-")?;
    let paths: Vec<&Path> = off.iter().map(|p| p.as_path()).collect();
    let ours = report(&["--top", "0", "--value", "off-cpu", text(dir.path())])?;
    let go = go_top(&["-sample_index=off_cpu"], &paths)?;
    eprintln!("merged off-CPU:\n{}", compare(&ours, &go)?);
    ensure!(
        ours.starts_with(
            "Files: 3 profiles, offcpu-20260101T120000Z.pb.gz to offcpu-20260101T120020Z.pb.gz\n"
        ),
        "{ours}"
    );
    ensure!(
        !ours.contains("synthetic_hot_leaf"),
        "CPU files are not merged: {ours}"
    );

    // CPU stays on the CPU files, whatever else the directory holds.
    let ours = report(&["--top", "0", text(dir.path())])?;
    let cpu = interval_files(dir.path())?;
    let cpu: Vec<&Path> = cpu.iter().map(|p| p.as_path()).collect();
    let go = go_top(&[], &cpu)?;
    eprintln!("merged CPU beside off-CPU files:\n{}", compare(&ours, &go)?);
    ensure!(ours.starts_with("Files: 3 profiles, cpu-"), "{ours}");
    ensure!(!ours.contains(SYNTHETIC_BLOCKED_FUNCTION), "{ours}");

    // A process's waits.
    let ours = report(&[
        "--top",
        "0",
        "--value",
        "off-cpu",
        "--pid",
        "100",
        text(dir.path()),
    ])?;
    let go = go_top(&["-sample_index=off_cpu", "-tagfocus", "pid=100"], &paths)?;
    eprintln!("--pid 100 off-CPU:\n{}", compare_focused(&ours, &go)?);
    ensure!(ours.contains("wait_for_work") && !ours.contains(SYNTHETIC_BLOCKED_FUNCTION));

    // The flame graph and folded stacks, in microseconds and nanoseconds off the CPU.
    let svg = report(&["--value", "off-cpu", "--format", "svg", text(dir.path())])?;
    for name in [
        "Off-CPU time: 3 profiles",
        "µs off-CPU",
        SYNTHETIC_BLOCKED_FUNCTION,
        "pthread_cond_timedwait",
        "synthetic200 (200)",
    ] {
        ensure!(svg.contains(name), "the off-CPU flame graph lacks {name}");
    }
    ensure!(!svg.contains("<script>alert"), "a frame name became markup");
    let folded = report(&["--value", "off-cpu", "--format", "folded", text(dir.path())])?;
    let line = folded
        .lines()
        .find(|l| l.contains(";call_pricing;pricing_request;poll;"))
        .context("no folded line of the blocked stack")?;
    // (20 + 40 + 60) switches of 45 ms.
    ensure!(line.ends_with(" 5400000000"), "{line}");
    Ok(())
}

#[test]
fn a_trace_file_reports_its_cpu_and_its_off_cpu_time() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_off_cpu_recording(dir.path())?;
    let [trace, _] = SYNTHETIC_TRACES;
    let file = dir.path().join("traces").join(format!("{trace}.pb.gz"));
    let ours = report(&[
        "--top",
        "0",
        "--trace",
        trace,
        "--value",
        "off-cpu",
        text(dir.path()),
    ])?;
    let go = go_top(&["-sample_index=off_cpu"], &[&file])?;
    eprintln!("trace off-CPU:\n{}", compare(&ours, &go)?);
    ensure!(
        ours.contains(&format!("File: traces/{trace}.pb.gz")),
        "{ours}"
    );
    ensure!(
        ours.contains(SYNTHETIC_BLOCKED_FUNCTION) && !ours.contains("checkout_hot_leaf"),
        "{ours}"
    );
    // Four sample types: CPU is still read by name, as pprof does by default.
    let ours = report(&["--top", "0", "--trace", trace, text(dir.path())])?;
    let go = go_top(&[], &[&file])?;
    eprintln!("trace CPU:\n{}", compare(&ours, &go)?);
    ensure!(
        ours.contains("checkout_hot_leaf") && !ours.contains(SYNTHETIC_BLOCKED_FUNCTION),
        "{ours}"
    );
    let ours = report(&[
        "--top",
        "0",
        "--trace",
        trace,
        "--value",
        "samples",
        text(dir.path()),
    ])?;
    let go = go_top(&["-sample_index=samples"], &[&file])?;
    eprintln!("trace samples:\n{}", compare(&ours, &go)?);

    // Without its file, the trace's samples in the off-CPU intervals.
    fs::remove_dir_all(dir.path().join("traces"))?;
    let off = files_named(dir.path(), "offcpu-")?;
    let paths: Vec<&Path> = off.iter().map(|p| p.as_path()).collect();
    let ours = report(&[
        "--top",
        "0",
        "--trace",
        trace,
        "--value",
        "off-cpu",
        text(dir.path()),
    ])?;
    let focus = format!("trace_id={}", tag_regexp(trace));
    let go = go_top(&["-sample_index=off_cpu", "-tagfocus", &focus], &paths)?;
    eprintln!(
        "--trace off-CPU from intervals:\n{}",
        compare_focused(&ours, &go)?
    );
    ensure!(!ours.contains("flush_"), "another trace's wait: {ours}");
    Ok(())
}

#[test]
fn off_cpu_of_a_recording_without_it_is_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    report_run(&["--value", "off-cpu", text(dir.path())])?.ensure_error(&[
        "no profile in",
        "has off_cpu values",
        "record --off-cpu",
    ])?;
    let file = dir.path().join("cpu-20260101T120000Z.pb.gz");
    report_run(&["--value", "switches", text(&file)])?
        .ensure_error(&["has switches values", "of sample types samples, cpu"])?;
    report_run(&["--value", "wall", text(dir.path())])?
        .ensure_error(&["invalid value 'wall'", "--value"])?;

    // A directory where only some profiles have it: those are reported, the others counted.
    let mixed = tempfile::tempdir()?;
    synthetic_off_cpu_recording(mixed.path())?;
    let traces = mixed.path().join("traces");
    fs::copy(
        dir.path()
            .join(format!("traces/{}.pb.gz", SYNTHETIC_TRACES[1])),
        traces.join(format!("{}.pb.gz", "ab".repeat(16))),
    )?;
    let ours = report(&["--value", "off-cpu", text(&traces)])?;
    // The two traces that waited; the one that never did has the type but no such sample.
    ensure!(ours.starts_with("Files: 2 profiles, "), "{ours}");
    ensure!(
        ours.contains("\nLeft out: 1 profile without off_cpu values\n"),
        "{ours}"
    );
    ensure!(ours.contains(SYNTHETIC_BLOCKED_FUNCTION), "{ours}");
    ensure!(ours.contains(SYNTHETIC_WAITING_FUNCTION), "{ours}");
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_recording_reports_as_go_pprof_does() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let profiles = record_fixture(&fixture, out.path(), 4, &[])?;
    drop(fixture);
    // When --duration ends with an interval, the last file covers a few milliseconds and may hold
    // no sample: `report` then rightly says it selected nothing.
    for p in profiles.iter().filter(|p| !p.profile.sample.is_empty()) {
        let ours = report(&["--top", "0", text(&p.path)])?;
        let go = go_top(&[], &[&p.path])?;
        eprintln!("{}:\n{}", p.path.display(), compare(&ours, &go)?);
    }
    let ours = report(&["--top", "0", text(out.path())])?;
    let paths: Vec<&Path> = profiles.iter().map(|p| p.path.as_path()).collect();
    let go = go_top(&[], &paths)?;
    eprintln!("merged recording:\n{}", compare(&ours, &go)?);
    ensure!(ours.contains("fixture_hot_leaf"), "{ours}");
    let svg = report(&["--format", "svg", text(out.path())])?;
    ensure!(
        svg.contains("fixture_hot_leaf"),
        "the flame graph lacks the hot function"
    );
    Ok(())
}
