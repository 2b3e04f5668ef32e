//! 3. The profiler's own CPU time and peak memory over a window, whole host, with a background of
//!    many processes, next to `perf record -g -a` and profile-bee running over the same window.

use std::thread;

use anyhow::Result;

use super::{Bench, PartResult};
use crate::{
    report::{Section, Table, Target},
    stats::{Summary, ratios},
    tools::{Invocation, Running, Tool, Usage},
    workload::Background,
};

/// Memory goal of the issue, MiB.
const RSS_GOAL_MIB: f64 = 64.0;
/// CPU goal at 19 Hz, percent of one core.
const CPU_GOAL_PERCENT: f64 = 0.5;

/// The tools measured side by side in each window: ours first, then the references.
const TOOLS: [Tool; 3] = [Tool::Ours, Tool::Perf, Tool::ProfileBee];

/// One tool's figures over the rounds at one rate.
#[derive(Default)]
struct Figures {
    usage: Vec<Usage>,
    /// % of one core over the window's second half.
    steady: Vec<f64>,
    /// MiB of BPF maps held at mid-window.
    maps_mib: Vec<f64>,
}

pub fn run(bench: &Bench) -> Result<PartResult> {
    let plan = &bench.plan;
    let fixtures = bench.fixtures()?;
    bench.progress("footprint: starting the background processes");
    let background = Background::start(&fixtures.work, plan.background_processes)?;
    thread::sleep(std::time::Duration::from_secs(2));
    let window = plan.footprint_window;

    let mut table = Table::new(&[
        "Rate",
        "Tool",
        "CPU, % of one core",
        "second half only",
        "peak RSS, MiB",
        "BPF maps, MiB",
        "profiler CPU / its CPU",
    ]);
    let mut targets = Vec::new();
    let mut worst_rss: f64 = 0.0;
    let mut worst_maps: f64 = 0.0;
    for &rate in &plan.footprint_rates {
        let mut figures: [Figures; TOOLS.len()] = Default::default();
        for round in 0..plan.footprint_rounds {
            bench.progress(&format!(
                "footprint: {rate} Hz for {window:?}, round {}",
                round + 1
            ));
            // All over the same window and the same load: the ratios are measured side by side.
            let mut running = Vec::new();
            for tool in TOOLS {
                let mut invocation = Invocation::new(tool, rate);
                if tool == Tool::ProfileBee {
                    invocation = invocation.program(&bench.profile_bee);
                }
                running.push(Running::start(
                    &invocation,
                    &bench.profiler,
                    &bench.scratch("footprint"),
                )?);
            }
            // The second half of the window: past start-up and the first interval's cold
            // symbolization, as the profiler runs for days.
            thread::sleep(window / 2);
            let half: Vec<f64> = running.iter().map(Running::cpu_s).collect::<Result<_>>()?;
            for (tool, figures) in running.iter().zip(&mut figures) {
                // Kernel memory, charged to the tool's memory cgroup but not to its RSS.
                let maps = profiler::bpf::map_memory::held_bytes_by(&tool.pid().to_string());
                figures.maps_mib.push(maps as f64 / (1 << 20) as f64);
            }
            thread::sleep(window - window / 2);
            let end: Vec<f64> = running.iter().map(Running::cpu_s).collect::<Result<_>>()?;
            let second_half = (window - window / 2).as_secs_f64();
            for (i, tool) in running.into_iter().enumerate() {
                figures[i]
                    .steady
                    .push((end[i] - half[i]) / second_half * 100.0);
                figures[i].usage.push(tool.stop()?);
            }
        }
        let percent = |u: &[Usage]| -> Vec<f64> {
            u.iter()
                .map(|u| u.cpu_s / window.as_secs_f64() * 100.0)
                .collect()
        };
        let rss = |u: &[Usage]| -> Vec<f64> { u.iter().map(|u| u.max_rss_mib).collect() };
        let show = |v: &[f64], d: usize| {
            Summary::of(v).map_or("n/a".into(), |s| s.show(d, "").to_string())
        };
        let ours_cpu = percent(&figures[0].usage);
        for (tool, f) in TOOLS.iter().zip(&figures) {
            let cpu = percent(&f.usage);
            let over = if *tool == Tool::Ours {
                "—".to_owned()
            } else {
                Summary::of(&ratios(&ours_cpu, &cpu))
                    .map_or("n/a".into(), |s| s.show(2, "×").to_string())
            };
            let maps = if *tool == Tool::Perf {
                "—".to_owned()
            } else {
                show(&f.maps_mib, 1)
            };
            table.row(vec![
                format!("{rate} Hz"),
                tool.label().to_owned(),
                show(&cpu, 2),
                show(&f.steady, 2),
                show(&rss(&f.usage), 1),
                maps,
                over,
            ]);
        }
        if rate == 19
            && let Some(cpu) = Summary::of(&ours_cpu)
        {
            targets.push(Target {
                goal: format!("Profiler under {CPU_GOAL_PERCENT}% of one core at 19 Hz"),
                measured: format!("{:.2}%", cpu.median),
                met: cpu.median < CPU_GOAL_PERCENT,
            });
        }
        worst_rss = rss(&figures[0].usage).into_iter().fold(worst_rss, f64::max);
        worst_maps = figures[0]
            .maps_mib
            .iter()
            .copied()
            .fold(worst_maps, f64::max);
    }
    drop(background);
    targets.push(Target {
        goal: format!("Profiler under {RSS_GOAL_MIB:.0} MiB RSS, whole host"),
        measured: format!("{worst_rss:.1} MiB peak (and {worst_maps:.1} MiB of BPF maps)"),
        met: worst_rss < RSS_GOAL_MIB,
    });
    let mut notes = vec![format!(
        "{} round(s) per rate; the background starts {} processes per second.",
        plan.footprint_rounds,
        Background::churn_rate()
    )];
    if let Some(window) = plan.unwind_memory_window {
        let (note, target) = super::unwind_memory::measure(bench, &fixtures.map_code, window)?;
        notes.push(note);
        targets.push(target);
    }

    let section = Section {
        title: "The profiler's own CPU and memory".into(),
        method: format!(
            "Our profiler, `perf record -g -a` and profile-bee (the second eBPF peer, frame \
             pointers, continuous mode) sample the whole host at the same rate over the same {} \
             s window, side by side, while the background runs: {}. CPU is user + system time \
             of the process (all threads) from `wait4`, over the window, and from \
             /proc/PID/stat over its second half alone (steady state: past start-up and the \
             first interval's cold symbolization); peak RSS is `ru_maxrss`; BPF maps is the \
             kernel memory of the tool's maps (`memlock` of each map in /proc/PID/fdinfo, read \
             at mid-window), charged to its memory cgroup and not part of RSS. Start-up (BPF \
             load, the first scan of every process) is inside the window. The kernel-side \
             sampling cost is not charged to any process: parts 1 and 2 measure it. perf only \
             copies raw samples to perf.data; our profiler also symbolizes them and writes \
             pprof every 10 s, and so does profile-bee (`--flush-interval 10000`, a pprof \
             file).",
            window.as_secs(),
            Background::describe(plan.background_processes)
        ),
        commands: TOOLS
            .iter()
            .map(|&tool| Invocation::new(tool, 19).shown() + "   # and at 99 Hz")
            .collect(),
        table,
        notes,
    };
    Ok(PartResult { section, targets })
}
