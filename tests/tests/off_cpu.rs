//! Off-CPU recording (`--off-cpu`, issue 16): where the threads of fixtures/off_cpu.c waited and
//! for how long, against the waits the fixture logged itself, in the interval files and in the
//! trace's own file; and the `--pid` filter.

use std::{collections::BTreeMap, fs, path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Fixture, OFF_CPU_C, Pprof, SPAN_E, SPAN_GO_WAIT, TRACE_E, TRACE_GO_WAIT, assert_root,
    read_index, read_off_cpu_profiles, read_profiles, record_command, run, run_timeout,
    skip_or_fail, trace_id_of,
};

const GO_OFF_CPU: &str = env!("FIXTURE_GO_OFF_CPU");

const SECONDS: u64 = 8;
/// Where the request thread waits (it calls poll) and computes, and where the other waits.
const POLL_FN: &str = "off_cpu_poll_backend";
const COMPUTE_FN: &str = "off_cpu_compute";
const COND_FN: &str = "off_cpu_cond_wait";
const LONG_SLEEP_FN: &str = "off_cpu_long_sleep";
/// How far a measured total may be from the fixture's own: the bar.
const TOLERANCE: f64 = 0.20;

#[test]
#[ignore = "needs root: loads BPF programs"]
fn waits_are_timed_where_they_happen_and_filed_under_their_trace() -> Result<()> {
    assert_root();
    let work = tempfile::tempdir()?;
    let log = work.path().join("waits.log");
    let fixture = Fixture::spawn_ready(
        OFF_CPU_C,
        &["0", log.to_str().context("path")?],
        Duration::from_secs(10),
    )?;
    let out = work.path().join("out");
    let output = record(&fixture, &out, &[])?;

    let off_cpu = read_off_cpu_profiles(&out)?;
    ensure!(!off_cpu.is_empty(), "no offcpu- file; stderr:\n{}", output);
    for p in &off_cpu {
        let types: Vec<(&str, &str)> = p
            .profile
            .sample_type
            .iter()
            .map(|t| (p.str(t.r#type), p.str(t.unit)))
            .collect();
        ensure!(
            types == [("switches", "count"), ("off_cpu", "nanoseconds")],
            "{}: sample types {types:?}",
            p.path.display()
        );
        ensure!(p.str(p.profile.default_sample_type) == "off_cpu");
    }
    let window = window(&off_cpu);
    let logged = logged_waits(&log, window)?;
    let measured = off_cpu_by_function(&off_cpu, fixture.pid(), &[POLL_FN, COND_FN]);
    for (function, kind) in [(POLL_FN, "poll"), (COND_FN, "cond")] {
        let want = logged.get(kind).copied().unwrap_or(0.0);
        let got = measured.get(function).copied().unwrap_or(0) as f64;
        eprintln!(
            "{function}: {:.3} s off the CPU in the profiles, {:.3} s of {kind} waits logged",
            got / 1e9,
            want / 1e9
        );
        ensure!(
            want > 1e9,
            "the fixture logged only {want:.0} ns of {kind} waits in the recording"
        );
        ensure!(
            (got - want).abs() <= TOLERANCE * want,
            "{function}: {got:.0} ns off the CPU in the profiles, the fixture waited {want:.0} \
             ns in the same window ({:+.1}%); per function: {measured:?}",
            (got / want - 1.0) * 100.0
        );
    }
    check_untraced_waits(&off_cpu, fixture.pid())?;

    // The CPU files are still CPU profiles, without off-CPU samples.
    let cpu = read_profiles(&out)?;
    ensure!(!cpu.is_empty(), "no cpu- file");
    for p in &cpu {
        ensure!(p.value_index("off_cpu").is_none(), "{}", p.path.display());
    }

    check_trace_file(&out, &logged, measured[POLL_FN])
}

/// The trace's file holds its CPU samples and its waits, in the right shares, and the index
/// line says the same totals.
fn check_trace_file(out: &Path, logged: &BTreeMap<&str, f64>, poll_ns: u64) -> Result<()> {
    let path = out.join("traces").join(format!("{TRACE_E}.pb.gz"));
    let trace = Pprof::read(&path)?;
    let types: Vec<&str> = trace
        .profile
        .sample_type
        .iter()
        .map(|t| trace.str(t.r#type))
        .collect();
    ensure!(
        types == ["samples", "cpu", "switches", "off_cpu"],
        "trace file sample types {types:?}"
    );
    let (mut cpu_compute, mut cpu_all, mut off_poll, mut off_all) = (0, 0, 0, 0);
    for sample in &trace.profile.sample {
        ensure!(trace_id_of(&trace, sample) == Some(TRACE_E));
        ensure!(trace.label_str(sample, "span_id") == Some(SPAN_E));
        let names = trace.stack_names(sample);
        let (cpu, off) = (trace.value(sample, "cpu"), trace.value(sample, "off_cpu"));
        ensure!(
            cpu == 0 || off == 0,
            "a sample with both CPU and off-CPU time: {names:?}"
        );
        cpu_all += cpu;
        off_all += off;
        if names.iter().any(|n| n == COMPUTE_FN) {
            cpu_compute += cpu;
        }
        if names.iter().any(|n| n == POLL_FN) {
            off_poll += off;
        }
    }
    ensure!(
        cpu_compute > 0 && off_poll > 0,
        "the trace's file lacks {COMPUTE_FN} on the CPU ({cpu_compute} ns) or {POLL_FN} off it \
         ({off_poll} ns)"
    );
    // Every wait of the trace is its poll (the poll total may include the first waits, before
    // the trace context was located).
    ensure!(
        off_poll as f64 >= 0.9 * off_all as f64 && off_poll as u64 <= poll_ns,
        "trace off-CPU {off_all} ns, {off_poll} ns of it in {POLL_FN} (all files: {poll_ns})"
    );
    // The thread computes ~4 ms per ~45 ms wait: its CPU share is about what the wall time
    // outside the logged waits was, within wide bounds (CPU time is sampled at 199 Hz).
    let share = cpu_compute as f64 / (cpu_compute + off_poll) as f64;
    let poll = logged.get("poll").copied().unwrap_or(0.0);
    let window = logged.get("window").copied().unwrap_or(0.0);
    let expected = ((window - poll) / window).clamp(0.0, 1.0);
    ensure!(
        share > expected * 0.4 && share < expected * 2.5 && share < 0.5,
        "{COMPUTE_FN}'s share of the trace's time is {share:.3}, its thread was outside poll \
         {expected:.3} of the window"
    );
    let line = read_index(out)?
        .into_iter()
        .rfind(|e| e.trace_id == TRACE_E)
        .context("no index line for the trace")?;
    ensure!(
        line.off_cpu_nanoseconds == Some(off_all) && line.cpu_nanoseconds == Some(cpu_all),
        "index line: cpu {:?} off-CPU {:?}; the file: cpu {cpu_all} off-CPU {off_all}",
        line.cpu_nanoseconds,
        line.off_cpu_nanoseconds
    );
    Ok(())
}

/// The condition-variable thread publishes no context: its waits carry no trace.
fn check_untraced_waits(profiles: &[Pprof], pid: u32) -> Result<()> {
    for p in profiles {
        for sample in p.samples_of_pid(pid) {
            if p.label_str(sample, "thread_name") == Some("condwait") {
                ensure!(
                    trace_id_of(p, sample).is_none(),
                    "a wait of the untraced thread carries a trace"
                );
            }
        }
    }
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn only_the_target_process_waits_are_timed() -> Result<()> {
    assert_root();
    let work = tempfile::tempdir()?;
    let (target_log, other_log) = (work.path().join("target"), work.path().join("other"));
    let target = Fixture::spawn_ready(
        OFF_CPU_C,
        &["0", target_log.to_str().context("path")?],
        Duration::from_secs(10),
    )?;
    let other = Fixture::spawn_ready(
        OFF_CPU_C,
        &["0", other_log.to_str().context("path")?],
        Duration::from_secs(10),
    )?;
    let out = work.path().join("out");
    let output = record(&target, &out, &[])?;
    let profiles = read_off_cpu_profiles(&out)?;
    for p in &profiles {
        for sample in &p.profile.sample {
            let pid = p.label_num(sample, "pid");
            ensure!(
                pid == Some(i64::from(target.pid())),
                "{}: a sample of pid {pid:?}, only {} was asked for",
                p.path.display(),
                target.pid()
            );
        }
    }
    // The kernel timed the target's waits alone: the other process waited as often.
    let window = window(&profiles);
    let (target_waits, other_waits) = (
        wait_count(&target_log, window)?,
        wait_count(&other_log, window)?,
    );
    let timed: u64 = output
        .lines()
        .filter(|l| l.contains("offcpu-"))
        .filter_map(|l| field(l, "timed"))
        .sum();
    ensure!(
        other_waits > 100 && target_waits > 100,
        "the fixtures logged {target_waits} and {other_waits} waits"
    );
    ensure!(
        (timed as f64) < target_waits as f64 * 1.2 + 10.0
            && (timed as f64) > target_waits as f64 * 0.8,
        "the kernel timed {timed} waits; the target logged {target_waits}, the other process \
         {other_waits}"
    );
    drop(other);
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn threads_that_exit_are_forgotten() -> Result<()> {
    assert_root();
    let work = tempfile::tempdir()?;
    let log = work.path().join("waits");
    let fixture = Fixture::spawn_ready(
        OFF_CPU_C,
        &["0", log.to_str().context("path")?, "churn"],
        Duration::from_secs(10),
    )?;
    let out = work.path().join("out");
    let output = record(&fixture, &out, &[])?;
    let sum = |key| -> u64 {
        output
            .lines()
            .filter(|l| l.contains("offcpu-"))
            .filter_map(|l| field(l, key))
            .sum()
    };
    let (added, removed) = (sum("threads_added"), sum("threads_removed"));
    let churned = waits(&log)?
        .iter()
        .filter(|(kind, ..)| kind == "churn")
        .count();
    ensure!(churned > 200, "the fixture started only {churned} threads");
    // Timed now: the fixture's three long-lived threads and the churning one of the moment.
    ensure!(
        added >= churned as u64 / 2 && added.saturating_sub(removed) <= 8,
        "{added} threads began to be timed and {removed} were forgotten, while {churned} \
         short-lived threads came and went"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_goroutine_blocked_in_a_system_call_waits_under_its_labels() -> Result<()> {
    assert_root();
    if GO_OFF_CPU.is_empty() {
        skip_or_fail("no Go toolchain when the tests were built: run `cargo xtask setup`");
        return Ok(());
    }
    const CALL: &str = "main.(*backend).call";
    let fixture = Fixture::spawn_ready(GO_OFF_CPU, &[], Duration::from_secs(10))?;
    let out = tempfile::tempdir()?;
    record(&fixture, out.path(), &[])?;
    let profiles = read_off_cpu_profiles(out.path())?;
    let window = window(&profiles);
    let (mut labelled, mut unlabelled) = (0i64, 0i64);
    for p in &profiles {
        for sample in p.samples_of_pid(fixture.pid()) {
            if !p.stack_names(sample).iter().any(|n| n == CALL) {
                continue;
            }
            let off = p.value(sample, "off_cpu");
            if trace_id_of(p, sample) == Some(TRACE_GO_WAIT)
                && p.label_str(sample, "span_id") == Some(SPAN_GO_WAIT)
            {
                labelled += off;
            } else {
                unlabelled += off;
            }
        }
    }
    // The goroutine waits nearly all the time; its first waits may come before the profiler
    // located its labels.
    let wall = (window.1 - window.0) as f64;
    eprintln!("{CALL}: {labelled} ns labelled, {unlabelled} ns not, {wall} ns recorded");
    ensure!(
        labelled as f64 > 0.6 * wall && unlabelled as f64 <= 0.2 * wall,
        "{CALL}: {labelled} ns off the CPU under trace {TRACE_GO_WAIT}, {unlabelled} ns without, \
         in {wall} ns of recording"
    );
    let trace = Pprof::read(
        &out.path()
            .join("traces")
            .join(format!("{TRACE_GO_WAIT}.pb.gz")),
    )?;
    ensure!(
        trace.profile.sample.iter().any(
            |s| trace.value(s, "off_cpu") > 0 && trace.stack_names(s).iter().any(|n| n == CALL)
        ),
        "the trace's own file lacks {CALL}'s waits"
    );
    Ok(())
}

/// Waits longer than an interval are read when they begin and counted when they end, a drain
/// later: their stacks and trace must still be there, though the next read of the same stacks
/// comes an interval later still. The fixture's request thread polls 1.1 s, then sleeps 1.1 s
/// elsewhere, each after a 200 µs sleep at a third place, under 1-second intervals.
#[test]
#[ignore = "needs root: loads BPF programs"]
fn waits_that_span_intervals_keep_their_stacks_and_trace() -> Result<()> {
    assert_root();
    let work = tempfile::tempdir()?;
    let log = work.path().join("waits.log");
    let fixture = Fixture::spawn_ready(
        OFF_CPU_C,
        &["0", log.to_str().context("path")?, "long"],
        Duration::from_secs(10),
    )?;
    let out = work.path().join("out");
    let stderr = record_in_intervals(&fixture, &out, 1, &[])?;
    let off_cpu = read_off_cpu_profiles(&out)?;
    ensure!(
        off_cpu.len() >= SECONDS as usize - 1,
        "{} offcpu- files for {SECONDS} 1-second intervals; stderr:\n{stderr}",
        off_cpu.len(),
    );
    let logged = logged_waits(&log, window(&off_cpu))?;
    let polled = logged.get("poll").copied().unwrap_or(0.0);
    let slept = logged.get("sleep").copied().unwrap_or(0.0);
    let (mut stacked, mut unstacked, mut lost) = (0i64, 0i64, 0i64);
    let mut places = BTreeMap::new();
    for p in &off_cpu {
        for sample in p.samples_of_pid(fixture.pid()) {
            if p.label_str(sample, "thread_name") != Some("request") {
                continue;
            }
            let names = p.stack_names(sample);
            let off = p.value(sample, "off_cpu");
            if let Some(place) = names.iter().find(|n| *n == POLL_FN || *n == LONG_SLEEP_FN) {
                ensure!(
                    trace_id_of(p, sample) == Some(TRACE_E),
                    "a wait in {place} without its trace in {}",
                    p.path.display()
                );
                *places.entry(place.clone()).or_insert(0i64) += off;
                stacked += off;
            } else if names == ["[wait: stack not read]"] {
                unstacked += off;
            } else if names.iter().any(|n| n == "[no stack]") {
                lost += off;
            }
        }
    }
    let logged_long = polled + slept;
    eprintln!(
        "request thread: {:.3} s of long waits logged; {:.3} s off the CPU with their stacks \
         ({places:?}), {:.3} s without stacks, {:.3} s whose stacks were lost",
        logged_long / 1e9,
        stacked as f64 / 1e9,
        unstacked as f64 / 1e9,
        lost as f64 / 1e9
    );
    ensure!(
        logged_long > 5e9,
        "only {logged_long:.0} ns of long waits logged"
    );
    ensure!(
        lost == 0,
        "{lost} ns of waits lost their stacks across a drain"
    );
    // The thread's first long wait starts the reading of its places and the next (a short
    // sleep) is read wherever it is; each long place is then learnt at its first wait since.
    ensure!(
        unstacked <= 3 * 1_200_000_000,
        "{unstacked} ns of waits without stacks: more than the thread's first three long waits"
    );
    ensure!(
        places.len() == 2,
        "long waits with their stacks only in {places:?}"
    );
    let recorded = (stacked + unstacked) as f64;
    ensure!(
        (recorded - logged_long).abs() <= TOLERANCE * logged_long,
        "{recorded:.0} ns of the request thread's waits recorded, {logged_long:.0} ns of long \
         waits logged"
    );
    Ok(())
}

/// Records `fixture` by `--pid` with `--off-cpu` for [`SECONDS`] in one interval, at 199 Hz.
fn record(fixture: &Fixture, out: &Path, extra: &[&str]) -> Result<String> {
    record_in_intervals(fixture, out, 30, extra)
}

/// [`record`] in intervals of `interval` seconds.
fn record_in_intervals(
    fixture: &Fixture,
    out: &Path,
    interval: u64,
    extra: &[&str],
) -> Result<String> {
    let pid = fixture.pid_arg();
    let (seconds, interval) = (SECONDS.to_string(), interval.to_string());
    let mut args = vec!["--pid", &pid, "--off-cpu", "--frequency", "199"];
    args.extend(["--duration", &seconds, "--interval", &interval]);
    args.extend(extra);
    let output = run(
        record_command(out, &args),
        run_timeout(Duration::from_secs(SECONDS)),
    )?;
    output.ensure_success()?;
    Ok(output.stderr)
}

/// `[start, end)` in Unix nanoseconds covered by the profiles.
fn window(profiles: &[Pprof]) -> (u64, u64) {
    let start = profiles
        .iter()
        .map(|p| p.profile.time_nanos as u64)
        .min()
        .unwrap_or(0);
    let end = profiles
        .iter()
        .map(|p| (p.profile.time_nanos + p.profile.duration_nanos) as u64)
        .max()
        .unwrap_or(0);
    (start, end)
}

/// Nanoseconds of each kind of wait the fixture logged inside `window` (waits counted whole
/// when they ended inside it: the profiler counts a wait when the thread runs again, and one
/// under way when it attached began unseen), and the window's length under "window".
fn logged_waits(log: &Path, (start, end): (u64, u64)) -> Result<BTreeMap<&'static str, f64>> {
    let mut totals = BTreeMap::new();
    for (kind, from, to) in waits(log)? {
        if to > start && to <= end && from >= start {
            let kind = match kind.as_str() {
                "poll" => "poll",
                "cond" => "cond",
                "short" => "short",
                "sleep" => "sleep",
                _ => "churn",
            };
            *totals.entry(kind).or_insert(0.0) += (to - from) as f64;
        }
    }
    totals.insert("window", end.saturating_sub(start) as f64);
    Ok(totals)
}

fn wait_count(log: &Path, (start, end): (u64, u64)) -> Result<usize> {
    Ok(waits(log)?
        .into_iter()
        .filter(|&(_, from, to)| from >= start && to <= end)
        .count())
}

fn waits(log: &Path) -> Result<Vec<(String, u64, u64)>> {
    let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    text.lines()
        .map(|line| {
            let mut parts = line.split_whitespace();
            let kind = parts.next().context("kind")?.to_owned();
            let from = parts.next().context("start")?.parse()?;
            let to = parts.next().context("end")?.parse()?;
            Ok((kind, from, to))
        })
        .collect()
}

/// Off-CPU nanoseconds of `pid` per function of `functions` on the stack.
fn off_cpu_by_function<'f>(
    profiles: &[Pprof],
    pid: u32,
    functions: &[&'f str],
) -> BTreeMap<&'f str, u64> {
    let mut totals = BTreeMap::new();
    for p in profiles {
        for sample in p.samples_of_pid(pid) {
            let names = p.stack_names(sample);
            for &function in functions {
                if names.iter().any(|n| n == function) {
                    *totals.entry(function).or_insert(0) += p.value(sample, "off_cpu") as u64;
                }
            }
        }
    }
    totals
}

/// `key=<number>` in a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
