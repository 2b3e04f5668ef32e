//! 1. Kernel-side cost per sample: run time over run count of the sampling BPF programs
//!    (`kernel.bpf_stats_enabled`), ours and bpftrace's, on stacks of known depth.

use std::thread;

use anyhow::{Context, Result};

use super::{Bench, PartResult, rotated};
use crate::{
    fdinfo::StatsEnabled,
    report::{Section, Table, Target},
    stats::{Summary, ratios},
    tools::{Invocation, Running, Tool},
    workload,
};

/// Whether the fixture publishes a trace context, which our program then reads on every sample.
const FIXTURES: [bool; 2] = [false, true];

pub fn run(bench: &Bench) -> Result<PartResult> {
    let _stats = StatsEnabled::new()?;
    let plan = &bench.plan;
    let fixtures = bench.fixtures()?;
    let mut table = Table::new(&[
        "Stack depth",
        "profiler, µs",
        "bpftrace, µs",
        "profiler / bpftrace",
        "profiler + trace context, µs",
        "bpftrace, µs ",
        "profiler + context / bpftrace",
        "profiler, Go, µs",
        "profiler, Go + labels, µs",
        "Go labels − plain Go, µs",
    ]);
    let mut targets = Vec::new();
    for &frames in &plan.cost_frames {
        // Nanoseconds per sample per round: [fixture][ours, bpftrace].
        let mut ns: [[Vec<f64>; 2]; 2] = Default::default();
        // Nanoseconds per sample of ours over adjacent windows of the Go fixture, pair by
        // pair: [plain, labels].
        let mut go: [Vec<f64>; 2] = Default::default();
        for round in 0..plan.rounds {
            for traced in rotated(&FIXTURES, round) {
                let bin = if traced {
                    &fixtures.work_traced
                } else {
                    &fixtures.work
                };
                bench.progress(&format!(
                    "kernel cost: {frames} frames{}, round {}",
                    if traced { ", trace context" } else { "" },
                    round + 1
                ));
                // Who starts first alternates: the pair's timer phases favour one of them.
                let args = [frames.to_string(), "0".into()];
                let [ours, theirs] =
                    side_by_side(bench, bin, &args, [Tool::Ours, Tool::Bpftrace], round)?;
                bench.progress(&format!(
                    "  profiler {:.2} µs, bpftrace {:.2} µs per sample",
                    ours / 1e3,
                    theirs / 1e3
                ));
                ns[usize::from(traced)][0].push(ours);
                ns[usize::from(traced)][1].push(theirs);
            }
        }
        if let (Some((go_bin, go_version)), true) =
            (&fixtures.work_go, plan.go_cost_frames.contains(&frames))
        {
            bench.progress(&format!(
                "kernel cost: {frames} frames, Go {go_version}, plain and labelled in turn, {} \
                 pairs of {} ms windows",
                plan.go_rounds, GO_WINDOW_MS
            ));
            go = toggled(bench, go_bin, frames, plan.go_rounds)?;
        }
        let us = |values: &[f64]| {
            Summary::of(values).map_or("n/a".into(), |s| s.scaled(1e-3).show(2, "").to_string())
        };
        let ratio = |pair: &[Vec<f64>; 2]| Summary::of(&ratios(&pair[0], &pair[1]));
        let show = |r: Option<Summary>| r.map_or("n/a".into(), |s| s.show(2, "×").to_string());
        let mut row = vec![format!("{frames} frames")];
        for (traced, pair) in ns.iter().enumerate() {
            row.extend([us(&pair[0]), us(&pair[1]), show(ratio(pair))]);
            if let Some(r) = ratio(pair) {
                let what = if traced == 1 {
                    ", trace context read"
                } else {
                    ""
                };
                targets.push(Target {
                    goal: format!("Kernel cost per sample ≤ bpftrace's ({frames} frames{what})"),
                    measured: format!("{:.2}× bpftrace's", r.median),
                    met: r.median <= 1.0,
                });
            }
        }
        // Labels' cost: each labelled window less the plain one next to it.
        let added: Vec<f64> = go[1].iter().zip(&go[0]).map(|(l, p)| l - p).collect();
        let added = Summary::of(&added);
        row.extend([
            us(&go[0]),
            us(&go[1]),
            added.map_or("n/a".into(), |s| s.scaled(1e-3).show(2, "").to_string()),
        ]);
        if let Some(added) = added {
            targets.push(Target {
                goal: format!(
                    "Go labels add ≤ 1 µs per sample to a plain Go sample ({frames} frames)"
                ),
                measured: format!("{:+.2} µs", added.median / 1e3),
                met: added.median <= 1_000.0,
            });
        }
        table.row(row);
    }
    let unwinding = unwinding(bench, fixtures, &mut targets)?;
    // The method's own noise: our program beside itself, on the first depth's plain fixture.
    let control_frames = plan.cost_frames[0];
    let mut control = Vec::new();
    for round in 0..plan.rounds {
        bench.progress(&format!(
            "kernel cost: control, profiler beside itself, round {}",
            round + 1
        ));
        let args = [control_frames.to_string(), "0".into()];
        let [a, b] = side_by_side(bench, &fixtures.work, &args, [Tool::Ours, Tool::Ours], 0)?;
        control.push(a / b);
    }
    let control = Summary::of(&control);
    let window = plan.cost_window.as_secs();
    let section = Section {
        title: "Kernel-side cost per sample".into(),
        method: format!(
            "With `kernel.bpf_stats_enabled=1`, the run time over the run count of each profiler's \
             `perf_event` programs (read from each profiler's own descriptors in /proc/PID/fdinfo), \
             both profilers sampling side by side over the same {window} s window, which opens \
             {} s after they start, whole host at {} Hz, while one fixture per CPU spins at the \
             bottom of a user stack of the given depth (`bench/fixtures/work.c`, frame pointers, \
             gcc -O2). The trace-context variant runs the same fixture built with an OpenTelemetry \
             thread context published (OTEP 4947), which our program reads on every sample. \
             bpftrace runs the issue's program `{}`. Each ratio divides the two programs' costs \
             in the same window: the machine's drift from window to window (large on a shared \
             virtual machine) cancels out. Lower is better.",
            crate::tools::SETTLE.as_secs(),
            plan.cost_rate,
            crate::tools::bpftrace_program(plan.cost_rate)
        ),
        commands: vec![
            "sysctl kernel.bpf_stats_enabled=1".into(),
            format!(
                "work <frames> 0 &   # one per CPU, frames = {:?}",
                plan.cost_frames
            ),
            Invocation::new(Tool::Ours, plan.cost_rate).shown(),
            Invocation::new(Tool::Bpftrace, plan.cost_rate).shown(),
        ],
        table,
        notes: vec![
            unwinding,
            go_note(fixtures, plan.go_rounds),
            format!(
                "{} rounds; in each round the plain and the traced fixture took turns, in \
                 rotated order, and which profiler started first alternated from round to \
                 round. The two bpftrace columns are its cost beside each fixture (it reads no \
                 trace context).",
                plan.rounds
            ),
            format!(
                "Control: our program beside a second copy of itself ({control_frames} frames, \
                 same method), the first started over the second: {}. The profiler that starts \
                 first tends to pay more (a pair's timer phases stay fixed for its life), which \
                 is why the start order alternates above; differences within this spread are \
                 the method's noise, not the programs'.",
                control.map_or("n/a".into(), |s| s.show(2, "×").to_string())
            ),
        ],
    };
    Ok(PartResult { section, targets })
}

/// The note on the Go columns: which toolchain, what the fixture does, how it is measured.
fn go_note(fixtures: &crate::fixtures::Fixtures, pairs: usize) -> String {
    match &fixtures.work_go {
        Some((_, version)) => format!(
            "Go columns: `bench/fixtures/work.go toggle` built with {version} (the newest \
             toolchain `cargo xtask setup` installs): one goroutine per CPU spinning at the \
             given depth, all of them under `pprof.Do` with `trace_id`, `span_id` and \
             `http.route` labels (which our program then reads on every sample) or all \
             without, switching every {GO_WINDOW_MS} ms and saying so on a line of output. One \
             profiler, started once with `--pid` on the fixture (whole-host samples of the \
             profiler's own drains, larger with labels, would weigh in otherwise), is read at \
             each switch: {pairs} pairs of adjacent \
             windows, the plain Go sample following thread pointer, g, m, curg and finding no \
             labels. \"labels − plain\" is each labelled window less the plain one next to \
             it, median over the pairs. No second profiler samples beside it (side-by-side \
             pairs differ by up to 20% by start order alone, see the control) and no process \
             starts between windows."
        ),
        None => "Go columns: n/a, no Go toolchain (run `cargo xtask setup`).".into(),
    }
}

/// The fixture built without frame pointers, its stacks walked by the files' unwind tables,
/// beside the frame-pointer build walked by our frame-pointer path and by bpftrace: per round,
/// one window of ours (tables) and bpftrace on the no-frame-pointer build, then the next of
/// ours with `--no-dwarf-unwinding` and bpftrace on the frame-pointer build. The ratios divide
/// adjacent windows, round by round. Returns the note the report shows.
fn unwinding(
    bench: &Bench,
    fixtures: &crate::fixtures::Fixtures,
    targets: &mut Vec<Target>,
) -> Result<String> {
    let plan = &bench.plan;
    let mut lines = Vec::new();
    for &frames in &plan.unwind_cost_frames {
        // Per round: [tables, ours by frame pointers, bpftrace on the frame-pointer build].
        let mut ns: [Vec<f64>; 3] = Default::default();
        for round in 0..plan.rounds {
            bench.progress(&format!(
                "kernel cost: {frames} frames without frame pointers, round {}",
                round + 1
            ));
            let args = [frames.to_string(), "0".into()];
            let [tables, _] = side_by_side(
                bench,
                &fixtures.work_no_fp,
                &args,
                [Tool::Ours, Tool::Bpftrace],
                round,
            )?;
            let [frame_pointers, bpftrace] = side_by_side(
                bench,
                &fixtures.work,
                &args,
                [Tool::OursFramePointers, Tool::Bpftrace],
                round,
            )?;
            bench.progress(&format!(
                "  tables {:.2} µs, frame pointers {:.2} µs, bpftrace {:.2} µs per sample",
                tables / 1e3,
                frame_pointers / 1e3,
                bpftrace / 1e3
            ));
            for (i, value) in [tables, frame_pointers, bpftrace].into_iter().enumerate() {
                ns[i].push(value);
            }
        }
        let us = |values: &[f64]| {
            Summary::of(values).map_or("n/a".into(), |s| s.scaled(1e-3).show(2, "").to_string())
        };
        let over_fp = Summary::of(&ratios(&ns[0], &ns[1]));
        let over_bpftrace = Summary::of(&ratios(&ns[0], &ns[2]));
        let show = |r: Option<Summary>| r.map_or("n/a".into(), |s| s.show(2, "×").to_string());
        lines.push(format!(
            "{frames} frames: the build without frame pointers walked by unwind tables {} µs, \
             the frame-pointer build by our frame-pointer path {} µs and by bpftrace {} µs per \
             sample; tables / frame pointers {}, tables / bpftrace {}",
            us(&ns[0]),
            us(&ns[1]),
            us(&ns[2]),
            show(over_fp),
            show(over_bpftrace)
        ));
        for (ratio, limit, goal, unit) in [
            (over_fp, 2.0, "≤ 2× our frame-pointer cost", "×"),
            (
                over_bpftrace,
                1.0,
                "≤ bpftrace's frame-pointer walk",
                "× bpftrace's",
            ),
        ] {
            if let Some(r) = ratio {
                targets.push(Target {
                    goal: format!("Unwinding without frame pointers {goal} ({frames} frames)"),
                    measured: format!("{:.2}{unit}", r.median),
                    met: r.median <= limit,
                });
            }
        }
    }
    Ok(format!(
        "Unwinding: `bench/fixtures/work.c` built with `-fomit-frame-pointer` (libc has none \
         either) and walked by the files' unwind tables, beside the same source built with frame \
         pointers and walked by ours with `--no-dwarf-unwinding` and by bpftrace; per round one \
         window on each build, each beside bpftrace, ratios of adjacent windows over {} rounds. \
         {}",
        plan.rounds,
        lines.join(" ")
    ))
}

/// Length of each Go window: the fixture switches phases this often.
const GO_WINDOW_MS: u64 = 1000;

/// Nanoseconds per sample of our program (one profiler, started once) over `pairs` pairs of
/// adjacent windows in which the Go fixture's goroutines run plain, then labelled, or the
/// other way round; [plain, labels], pair by pair.
fn toggled(
    bench: &Bench,
    bin: &std::path::Path,
    frames: u32,
    pairs: usize,
) -> Result<[Vec<f64>; 2]> {
    let plan = &bench.plan;
    let args = [
        frames.to_string(),
        "0".into(),
        "toggle".into(),
        bench.cpus.to_string(),
        GO_WINDOW_MS.to_string(),
    ];
    let mut fixture = workload::phases(bin, &args)?;
    let profiler = Running::start(
        &Invocation::new(Tool::Ours, plan.cost_rate).pid(fixture.pid),
        &bench.profiler,
        &bench.scratch("cost"),
    )?;
    profiler.settle();
    fixture.begin()?;
    // A first pair of phases for the profiler to have the process's label offsets written.
    for _ in 0..2 {
        fixture.next()?;
    }
    let mut out: [Vec<f64>; 2] = Default::default();
    let mut labels = fixture.next()? == "labels";
    let mut before = profiler.bpf_totals()?;
    while out[0].len() < pairs || out[1].len() < pairs {
        let next = fixture.next()?;
        let after = profiler.bpf_totals()?;
        let ns = after
            .ns_per_run_since(before)
            .context("the profiler took no sample in a Go window")?;
        out[usize::from(labels)].push(ns);
        if out[0].len() == out[1].len() {
            bench.progress(&format!(
                "  pair {}: plain {:.2} µs, labels {:.2} µs per sample",
                out[0].len(),
                out[0][out[0].len() - 1] / 1e3,
                out[1][out[1].len() - 1] / 1e3
            ));
        }
        before = after;
        labels = next == "labels";
    }
    drop(fixture);
    profiler.stop()?;
    out[0].truncate(pairs);
    out[1].truncate(pairs);
    Ok(out)
}

/// Nanoseconds per sample of the two tools' programs, both sampling over the same window while
/// one fixture per CPU runs with `args` (`frames 0`: spins `frames` deep). The first starts
/// first in even rounds.
fn side_by_side(
    bench: &Bench,
    bin: &std::path::Path,
    args: &[String],
    [first, second]: [Tool; 2],
    round: usize,
) -> Result<[f64; 2]> {
    let plan = &bench.plan;
    let _workers = workload::spin(bin, args, bench.cpus)?;
    let start = |tool: Tool| {
        Running::start(
            &Invocation::new(tool, plan.cost_rate),
            &bench.profiler,
            &bench.scratch("cost"),
        )
    };
    let (a, b) = if round.is_multiple_of(2) {
        let a = start(first)?;
        (a, start(second)?)
    } else {
        let b = start(second)?;
        (start(first)?, b)
    };
    a.settle();
    let before = [a.bpf_totals()?, b.bpf_totals()?];
    thread::sleep(plan.cost_window);
    let after = [a.bpf_totals()?, b.bpf_totals()?];
    a.stop()?;
    b.stop()?;
    let per_sample = |i: usize, who: &str| {
        after[i]
            .ns_per_run_since(before[i])
            .with_context(|| format!("{who} took no sample in {:?}", plan.cost_window))
    };
    Ok([
        per_sample(0, first.label())?,
        per_sample(1, second.label())?,
    ])
}
