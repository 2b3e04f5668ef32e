//! 1. Kernel-side cost per sample: run time over run count of the sampling BPF programs
//!    (`kernel.bpf_stats_enabled`), ours, bpftrace's, the floor's (`floor-ebpf/`) and
//!    profile-bee's, side by side on stacks of known depth; issue 18's goals in `cost_goal.rs`.

use std::thread;

use anyhow::{Context, Result};

use super::{Bench, PartResult, cost_goal, rotated};
use crate::{
    fdinfo::{RunTotals, StatsEnabled},
    report::{Section, Table, Target},
    stats::{Summary, ratios},
    tools::{Invocation, Running, Tool},
    workload,
};

/// Whether the fixture publishes a trace context, which our program then reads on every sample.
const FIXTURES: [bool; 2] = [false, true];

/// The programs measured in each window, side by side: ours, the reference, the floor (the
/// least a stack sampler does) and the second eBPF peer. Indexes into [`Window`].
const TOOLS: [Tool; 4] = [Tool::Ours, Tool::Bpftrace, Tool::Floor, Tool::ProfileBee];
const OURS: usize = 0;
const BPFTRACE: usize = 1;
const FLOOR: usize = 2;
const PROFILE_BEE: usize = 3;

/// Nanoseconds per sample of each of [`TOOLS`], round by round.
type Window = [Vec<f64>; TOOLS.len()];

pub fn run(bench: &Bench) -> Result<PartResult> {
    let _stats = StatsEnabled::new()?;
    let plan = &bench.plan;
    let fixtures = bench.fixtures()?;
    let mut table = Table::new(&[
        "Stack depth",
        "profiler, µs",
        "bpftrace, µs",
        "floor, µs",
        "profile-bee, µs",
        "profiler / bpftrace",
        "profiler / floor",
        "floor / bpftrace",
        "profile-bee / bpftrace",
    ]);
    let mut targets = Vec::new();
    let mut go_lines = Vec::new();
    for &frames in &plan.cost_frames {
        // [fixture][tool], nanoseconds per sample per round.
        let mut ns: [Window; 2] = Default::default();
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
                // Who starts first rotates: the timer phases favour one of them.
                let args = [frames.to_string(), "0".into()];
                let costs = side_by_side(bench, bin, &args, TOOLS, round)?;
                let shown: Vec<String> = TOOLS
                    .iter()
                    .zip(costs)
                    .map(|(tool, ns)| format!("{} {:.2} µs", tool.label(), ns / 1e3))
                    .collect();
                bench.progress(&format!("  {} per sample", shown.join(", ")));
                for (i, value) in costs.into_iter().enumerate() {
                    ns[usize::from(traced)][i].push(value);
                }
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
        for (traced, window) in ns.iter().enumerate() {
            let (what, share) = if traced == 1 {
                ("trace context read", cost_goal::TRACED_SHARE)
            } else {
                ("", cost_goal::PLAIN_SHARE)
            };
            let label = if what.is_empty() {
                format!("{frames} frames")
            } else {
                format!("{frames} frames, {what}")
            };
            let ratio = |a: usize, b: usize| Summary::of(&ratios(&window[a], &window[b]));
            let over = [
                ratio(OURS, BPFTRACE),
                ratio(OURS, FLOOR),
                ratio(FLOOR, BPFTRACE),
                ratio(PROFILE_BEE, BPFTRACE),
            ];
            let mut row = vec![label.clone()];
            row.extend(window.iter().map(|v| us(v)));
            row.extend(over.iter().map(|r| times(*r)));
            table.row(row);
            if let [
                Some(ours_bpftrace),
                Some(ours_floor),
                Some(floor_bpftrace),
                _,
            ] = over
            {
                targets.push(cost_goal::target(
                    share,
                    &label,
                    cost_goal::Ratios {
                        ours_over_bpftrace: ours_bpftrace.median,
                        ours_over_floor: ours_floor.median,
                        floor_over_bpftrace: floor_bpftrace.median,
                    },
                ));
            }
        }
        // Labels' cost: each labelled window less the plain one next to it.
        let added: Vec<f64> = go[1].iter().zip(&go[0]).map(|(l, p)| l - p).collect();
        if let Some(added) = Summary::of(&added) {
            go_lines.push(format!(
                "{frames} frames: plain Go {} µs, Go with labels {} µs, labels − plain {} µs \
                 per sample.",
                us(&go[0]),
                us(&go[1]),
                added.scaled(1e-3).show(2, "")
            ));
            targets.push(Target {
                goal: format!(
                    "Go labels add ≤ 1 µs per sample to a plain Go sample ({frames} frames)"
                ),
                measured: format!("{:+.2} µs", added.median / 1e3),
                met: added.median <= 1_000.0,
            });
        }
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
    let window = plan.cost_window.as_secs_f64();
    let section = Section {
        title: "Kernel-side cost per sample".into(),
        method: format!(
            "With `kernel.bpf_stats_enabled=1`, the run time over the run count of each tool's \
             `perf_event` programs (read from each tool's own descriptors in /proc/PID/fdinfo), \
             four tools sampling side by side over the same {window} s window, which opens \
             {} s after the last one starts, whole host at {} Hz, while one fixture per CPU \
             spins at the bottom of a user stack of the given depth (`bench/fixtures/work.c`, \
             frame pointers, gcc -O2). The trace-context variant runs the same fixture built \
             with an OpenTelemetry thread context published (OTEP 4947), which our program \
             reads on every sample. bpftrace runs the issue's program `{}`. The floor is the \
             least a stack sampler does (`bench/floor-ebpf`): `bpf_get_stackid` for the kernel \
             stack and for the user stack (`BPF_F_USER_STACK`, frame pointers) into one stack \
             map, and one per-CPU counter bumped, on the same per-CPU `cpu-clock` events as \
             ours. profile-bee (from crates.io, with the BPF object its crate ships; its version \
             is in the Machine table) runs in its default \
             frame-pointer mode and continuous mode, writing pprof every 10 s. Each ratio \
             divides two programs' costs in the same window: the machine's drift from window \
             to window (large on a shared virtual machine) cancels out. Lower is better.",
            crate::tools::SETTLE.as_secs(),
            plan.cost_rate,
            crate::tools::bpftrace_program(plan.cost_rate),
        ),
        commands: {
            let mut commands = vec![
                "sysctl kernel.bpf_stats_enabled=1".into(),
                format!(
                    "work <frames> 0 &   # one per CPU, frames = {:?}",
                    plan.cost_frames
                ),
            ];
            commands.extend(
                TOOLS
                    .iter()
                    .map(|&tool| Invocation::new(tool, plan.cost_rate).shown()),
            );
            commands
        },
        table,
        notes: vec![
            format!(
                "Goals (issue 18): ours ≤ {}× bpftrace's cost per sample on the plain fixture \
                 and ≤ {}× with a trace context read, at every depth; where the floor itself \
                 costs more than that share of bpftrace's, no stack sampler can meet it, and \
                 the goal becomes ≤ {}× the floor's. The Targets table says which rule applied \
                 to each row, with the median ratios that decided it.",
                cost_goal::PLAIN_SHARE,
                cost_goal::TRACED_SHARE,
                cost_goal::FLOOR_SLACK
            ),
            unwinding,
            go_note(fixtures, plan.go_rounds, &go_lines),
            format!(
                "{} rounds; in each round the plain and the traced fixture took turns, in \
                 rotated order, and the order in which the four tools started rotated from \
                 round to round. The bpftrace, floor and profile-bee figures of a trace-context \
                 row are their costs beside that fixture (they read no trace context).",
                plan.rounds
            ),
            format!(
                "Control: our program beside a second copy of itself ({control_frames} frames, \
                 same method), the first started over the second: {}. The tool that starts \
                 first tends to pay more (a window's timer phases stay fixed for its life), \
                 which is why the start order rotates above; differences within this spread \
                 are the method's noise, not the programs'.",
                times(control)
            ),
        ],
    };
    Ok(PartResult { section, targets })
}

/// Microseconds, median and spread, of nanosecond measurements.
fn us(values: &[f64]) -> String {
    Summary::of(values).map_or("n/a".into(), |s| s.scaled(1e-3).show(2, "").to_string())
}

/// A ratio's median and spread.
fn times(ratio: Option<Summary>) -> String {
    ratio.map_or("n/a".into(), |s| s.show(2, "×").to_string())
}

/// The note on the Go figures: which toolchain, what the fixture does, how it is measured, and
/// the figures themselves (`lines`, one per depth measured).
fn go_note(fixtures: &crate::fixtures::Fixtures, pairs: usize, lines: &[String]) -> String {
    let figures = if lines.is_empty() {
        "Not measured in this run.".to_owned()
    } else {
        lines.join(" ")
    };
    match &fixtures.work_go {
        Some((_, version)) => format!(
            "Go: `bench/fixtures/work.go toggle` built with {version} (the newest \
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
             starts between windows. {figures}"
        ),
        None => "Go: n/a, no Go toolchain (run `cargo xtask setup`).".into(),
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
        let over_fp = Summary::of(&ratios(&ns[0], &ns[1]));
        let over_bpftrace = Summary::of(&ratios(&ns[0], &ns[2]));
        lines.push(format!(
            "{frames} frames: the build without frame pointers walked by unwind tables {} µs, \
             the frame-pointer build by our frame-pointer path {} µs and by bpftrace {} µs per \
             sample; tables / frame pointers {}, tables / bpftrace {}",
            us(&ns[0]),
            us(&ns[1]),
            us(&ns[2]),
            times(over_fp),
            times(over_bpftrace)
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

/// Nanoseconds per sample of each tool's programs, all sampling over the same window while one
/// fixture per CPU runs with `args` (`frames 0`: spins `frames` deep). The order in which they
/// start is `tools` rotated by `round`: with two, the first starts first in even rounds.
fn side_by_side<const N: usize>(
    bench: &Bench,
    bin: &std::path::Path,
    args: &[String],
    tools: [Tool; N],
    round: usize,
) -> Result<[f64; N]> {
    let plan = &bench.plan;
    let _workers = workload::spin(bin, args, bench.cpus)?;
    let mut running: [Option<Running>; N] = std::array::from_fn(|_| None);
    for i in rotated(&std::array::from_fn::<usize, N, _>(|i| i), round) {
        running[i] = Some(Running::start(
            &invocation(bench, tools[i]),
            &bench.profiler,
            &bench.scratch("cost"),
        )?);
    }
    let running = running.map(|r| r.expect("every tool started"));
    // Past the start-up of the last one started (and so of all).
    running[0].settle();
    let totals = || -> Result<Vec<RunTotals>> { running.iter().map(Running::bpf_totals).collect() };
    let before = totals()?;
    thread::sleep(plan.cost_window);
    let after = totals()?;
    for (tool, running) in tools.iter().zip(running) {
        if *tool == Tool::Bpftrace {
            // bpftrace prints its whole map at exit, symbolizing the user stacks of every
            // process it sampled: with other large programs running on the host, that once
            // took over a minute. Its program's statistics are read already.
            running.kill();
        } else {
            running.stop()?;
        }
    }
    let mut out = [0.0; N];
    for (i, cost) in out.iter_mut().enumerate() {
        *cost = after[i].ns_per_run_since(before[i]).with_context(|| {
            format!(
                "{} took no sample in {:?}",
                tools[i].label(),
                plan.cost_window
            )
        })?;
    }
    Ok(out)
}

/// How the part starts `tool` at its rate: the floor is this harness in its `--floor` mode,
/// profile-bee the binary `cargo xtask bench` installed.
fn invocation(bench: &Bench, tool: Tool) -> Invocation {
    let invocation = Invocation::new(tool, bench.plan.cost_rate);
    match tool {
        Tool::Floor => invocation.program(&bench.harness),
        Tool::ProfileBee => invocation.program(&bench.profile_bee),
        _ => invocation,
    }
}
