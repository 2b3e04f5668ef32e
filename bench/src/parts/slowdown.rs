//! 2. Workload slowdown: a fixed CPU-bound workload on every core, timed without a profiler and
//!    under each profiler at each rate.

use anyhow::Result;

use super::{Bench, PartResult, rotated};
use crate::{
    report::{Section, Table, Target},
    stats::{Summary, ratios},
    tools::{Invocation, Running, SETTLE, Tool},
    workload,
};

/// Depth of the workload's stack: enough for the unwinders to have work.
const FRAMES: u32 = 20;
/// Our drain interval here: ten times more drains than the default, so that the userspace side
/// works during the timed workload too.
const INTERVAL_S: u64 = 1;
const TOOLS: [Tool; 3] = [Tool::Ours, Tool::Perf, Tool::Bpftrace];

pub fn run(bench: &Bench) -> Result<PartResult> {
    let plan = &bench.plan;
    let fixtures = bench.fixtures()?;
    bench.progress("slowdown: calibrating the workload");
    let rounds_per_worker =
        workload::calibrate(&fixtures.work, FRAMES, bench.cpus, plan.slowdown_work)?;

    // None = no profiler.
    let mut variants: Vec<Option<Invocation>> = vec![None];
    for &rate in &plan.slowdown_rates {
        for tool in TOOLS {
            variants.push(Some(Invocation::new(tool, rate).interval(INTERVAL_S)));
        }
    }
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let order: Vec<usize> = (0..variants.len()).collect();
    for round in 0..plan.rounds {
        for index in rotated(&order, round) {
            let variant = &variants[index];
            let name = variant.as_ref().map_or("no profiler".into(), |v| {
                format!("{} at {} Hz", v.tool.label(), v.rate)
            });
            bench.progress(&format!("slowdown: {name}, round {}", round + 1));
            let running = match variant {
                Some(invocation) => Some(Running::start(
                    invocation,
                    &bench.profiler,
                    &bench.scratch("slowdown"),
                )?),
                None => None,
            };
            if let Some(running) = &running {
                running.settle();
            }
            let took = workload::timed(&fixtures.work, FRAMES, rounds_per_worker, bench.cpus)?;
            if let Some(running) = running {
                running.stop()?;
            }
            seconds[index].push(took.as_secs_f64());
        }
    }

    let baseline = &seconds[0];
    let mut table = Table::new(&["Rate", "profiler", "perf record -g -a", "bpftrace"]);
    let mut targets = Vec::new();
    for &rate in &plan.slowdown_rates {
        let mut row = vec![format!("{rate} Hz")];
        for tool in TOOLS {
            let index = variants
                .iter()
                .position(|v| v.as_ref().is_some_and(|v| v.tool == tool && v.rate == rate))
                .unwrap_or(0);
            let slowdown = Summary::of(&ratios(&seconds[index], baseline)).map(|s| Summary {
                median: (s.median - 1.0) * 100.0,
                min: (s.min - 1.0) * 100.0,
                max: (s.max - 1.0) * 100.0,
                n: s.n,
            });
            row.push(slowdown.map_or("n/a".into(), |s| {
                format!("{:+.2}% ({:+.2}…{:+.2})", s.median, s.min, s.max)
            }));
            if tool == Tool::Ours
                && rate == 99
                && let Some(s) = slowdown
            {
                targets.push(Target {
                    goal: "Workload slowdown under 1% at 99 Hz".into(),
                    measured: format!("{:+.2}%", s.median),
                    met: s.median < 1.0,
                });
            }
        }
        table.row(row);
    }
    let base = Summary::of(baseline);
    let section = Section {
        title: "Workload slowdown".into(),
        method: format!(
            "One worker per CPU ({} in all) runs a fixed amount of work ({rounds_per_worker} \
             rounds of a multiply-xorshift chain at the bottom of a {FRAMES}-frame stack), timed \
             from the first start to the last exit. Each profiler samples the whole host; ours \
             drains every {INTERVAL_S} s (the default is 10 s) so that its userspace work falls \
             inside the timed run. The workload starts {} s after each profiler samples, past \
             its start-up. Each cell is the time under the profiler over the time \
             without one in the same round, minus one. Without a profiler the workload took {}.",
            bench.cpus,
            SETTLE.as_secs(),
            base.map_or("n/a".into(), |s| s.show(2, "s").to_string())
        ),
        commands: {
            let mut commands = vec![format!(
                "work {FRAMES} {rounds_per_worker} &   # one per CPU, timed to the last exit"
            )];
            commands.extend(
                variants
                    .iter()
                    .flatten()
                    .filter(|v| v.rate == plan.slowdown_rates[0])
                    .map(|v| {
                        format!(
                            "{}   # also at {:?} Hz",
                            v.shown(),
                            &plan.slowdown_rates[1..]
                        )
                    }),
            );
            commands
        },
        table,
        notes: vec![format!(
            "{} rounds of all {} variants, in rotated order; a negative figure is noise (the run \
             under the profiler happened to be faster).",
            plan.rounds,
            variants.len()
        )],
    };
    Ok(PartResult { section, targets })
}
