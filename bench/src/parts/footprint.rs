//! 3. The profiler's own CPU time and peak memory over a window, whole host, with a background of
//!    many processes, next to `perf record -g -a` running over the same window.

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

pub fn run(bench: &Bench) -> Result<PartResult> {
    let plan = &bench.plan;
    let fixtures = bench.fixtures()?;
    bench.progress("footprint: starting the background processes");
    let background = Background::start(&fixtures.work, plan.background_processes)?;
    thread::sleep(std::time::Duration::from_secs(2));
    let window = plan.footprint_window;

    let mut table = Table::new(&[
        "Rate",
        "profiler CPU, % of one core",
        "second half only",
        "profiler peak RSS, MiB",
        "profiler BPF maps, MiB",
        "perf CPU, % of one core",
        "second half only ",
        "perf peak RSS, MiB",
        "profiler CPU / perf CPU",
    ]);
    let mut targets = Vec::new();
    let mut worst_rss: f64 = 0.0;
    let mut worst_maps: f64 = 0.0;
    for &rate in &plan.footprint_rates {
        let mut ours: Vec<Usage> = Vec::new();
        let mut perf: Vec<Usage> = Vec::new();
        let (mut steady_ours, mut steady_perf) = (Vec::new(), Vec::new());
        let mut maps_mib = Vec::new();
        for round in 0..plan.footprint_rounds {
            bench.progress(&format!(
                "footprint: {rate} Hz for {window:?}, round {}",
                round + 1
            ));
            // Both over the same window and the same load: the ratio is measured side by side.
            let a = Running::start(
                &Invocation::new(Tool::Ours, rate),
                &bench.profiler,
                &bench.scratch("footprint"),
            )?;
            let b = Running::start(
                &Invocation::new(Tool::Perf, rate),
                &bench.profiler,
                &bench.scratch("footprint-perf"),
            )?;
            // The second half of the window: past start-up and the first interval's cold
            // symbolization, as the profiler runs for days.
            thread::sleep(window / 2);
            let half = [a.cpu_s()?, b.cpu_s()?];
            // Kernel memory, charged to the profiler's memory cgroup but not to its RSS.
            let maps = profiler::bpf::map_memory::held_bytes_by(&a.pid().to_string());
            maps_mib.push(maps as f64 / (1 << 20) as f64);
            thread::sleep(window - window / 2);
            let end = [a.cpu_s()?, b.cpu_s()?];
            let steady =
                |i: usize| (end[i] - half[i]) / (window - window / 2).as_secs_f64() * 100.0;
            steady_ours.push(steady(0));
            steady_perf.push(steady(1));
            ours.push(a.stop()?);
            perf.push(b.stop()?);
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
        let (ours_cpu, perf_cpu) = (percent(&ours), percent(&perf));
        table.row(vec![
            format!("{rate} Hz"),
            show(&ours_cpu, 2),
            show(&steady_ours, 2),
            show(&rss(&ours), 1),
            show(&maps_mib, 1),
            show(&perf_cpu, 2),
            show(&steady_perf, 2),
            show(&rss(&perf), 1),
            Summary::of(&ratios(&ours_cpu, &perf_cpu))
                .map_or("n/a".into(), |s| s.show(2, "×").to_string()),
        ]);
        if rate == 19
            && let Some(cpu) = Summary::of(&ours_cpu)
        {
            targets.push(Target {
                goal: format!("Profiler under {CPU_GOAL_PERCENT}% of one core at 19 Hz"),
                measured: format!("{:.2}%", cpu.median),
                met: cpu.median < CPU_GOAL_PERCENT,
            });
        }
        worst_rss = rss(&ours).into_iter().fold(worst_rss, f64::max);
        worst_maps = maps_mib.iter().copied().fold(worst_maps, f64::max);
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
            "Our profiler and `perf record -g -a` sample the whole host at the same rate over the \
             same {} s window, side by side, while the background runs: {}. CPU is user + system \
             time of the process (all threads) from `wait4`, over the window, and from \
             /proc/PID/stat over its second half alone (steady state: past start-up and the \
             first interval's cold symbolization); peak RSS is `ru_maxrss`; BPF maps is the kernel \
             memory of the profiler's maps (`memlock` of each map in /proc/PID/fdinfo, read at \
             mid-window), charged to its memory cgroup and not part of RSS. Start-up (BPF load, the first scan of every process) is inside the \
             window. The kernel-side sampling cost is not charged to either process: parts 1 and \
             2 measure it. perf only copies raw samples to perf.data; our profiler also \
             symbolizes them and writes pprof every 10 s.",
            window.as_secs(),
            Background::describe(plan.background_processes)
        ),
        commands: vec![
            Invocation::new(Tool::Ours, 19).shown() + "   # and at 99 Hz",
            Invocation::new(Tool::Perf, 19).shown() + "   # and at 99 Hz",
        ],
        table,
        notes,
    };
    Ok(PartResult { section, targets })
}
