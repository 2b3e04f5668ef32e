//! How much of everything a run does: the full run behind BENCHMARKS.md, or the quick one.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Repeats of every variant (interleaved round by round).
    pub rounds: usize,
    /// Per kernel-cost measurement.
    pub cost_window: Duration,
    pub cost_rate: u64,
    /// Stack depths of the kernel-cost fixture, in frames.
    pub cost_frames: Vec<u32>,
    /// Depths (of `cost_frames`) at which the Go fixture is measured too, plain and labelled:
    /// reading labels does not depend on the depth, and the quick run has no time for them.
    pub go_cost_frames: Vec<u32>,
    /// Pairs of adjacent Go windows (plain, labelled) under one profiler.
    pub go_rounds: usize,
    /// Depths of the unwinding comparison: the fixture without frame pointers walked by
    /// tables, beside the frame-pointer build walked by frame pointers.
    pub unwind_cost_frames: Vec<u32>,
    /// Length of the timed workload without a profiler.
    pub slowdown_work: Duration,
    pub slowdown_rates: Vec<u64>,
    pub footprint_window: Duration,
    pub footprint_rounds: usize,
    pub footprint_rates: Vec<u64>,
    /// How long ours runs with every ELF file under /usr/bin and /usr/lib mapped, to measure
    /// what unwinding holds once its tables are built (none in the quick run).
    pub unwind_memory_window: Option<Duration>,
    /// Long-lived processes of the footprint's background.
    pub background_processes: usize,
    /// Addresses per batch of the symbolization benchmark (two batches).
    pub symbol_addresses: usize,
    pub output_stacks: Vec<usize>,
    /// Length of each timed ping-pong of the off-CPU benchmark (its kernel cost is measured
    /// over windows of `cost_window`).
    pub off_cpu_work: Duration,
}

/// Seconds a profiler needs to start and stop, for estimates (bpftrace compiles its program).
const START_STOP_S: f64 = 2.5;

impl Plan {
    pub fn full() -> Self {
        Self {
            rounds: 5,
            cost_window: Duration::from_secs(5),
            cost_rate: 99,
            cost_frames: vec![10, 60, 120],
            go_cost_frames: vec![10],
            go_rounds: 60,
            unwind_cost_frames: vec![60],
            slowdown_work: Duration::from_secs(5),
            slowdown_rates: vec![19, 99, 999],
            footprint_window: Duration::from_secs(60),
            footprint_rounds: 2,
            footprint_rates: vec![19, 99],
            unwind_memory_window: Some(Duration::from_secs(90)),
            background_processes: 32,
            symbol_addresses: 20_000,
            output_stacks: vec![1_000, 10_000, 100_000],
            off_cpu_work: Duration::from_secs(5),
        }
    }

    /// Everyday use: the same measurements, fewer rounds and shorter windows.
    pub fn quick() -> Self {
        Self {
            rounds: 2,
            cost_window: Duration::from_millis(1500),
            slowdown_work: Duration::from_secs(1),
            footprint_window: Duration::from_secs(10),
            footprint_rounds: 1,
            symbol_addresses: 4_000,
            go_cost_frames: Vec::new(),
            unwind_cost_frames: Vec::new(),
            unwind_memory_window: None,
            off_cpu_work: Duration::from_millis(1800),
            ..Self::full()
        }
    }

    /// Rough seconds each part takes (excluding builds), for the progress messages and the
    /// check that the quick run stays under seven and a half minutes.
    pub fn estimate_s(&self) -> [(&'static str, f64); 6] {
        let rounds = self.rounds as f64;
        // Windows: the plain and the traced C fixture with four tools side by side (ours,
        // bpftrace, the floor, profile-bee), two windows of a pair per unwinding depth, one
        // control window (ours beside ours) per round, and the plain and labelled Go fixture.
        let window = |tools: f64| self.cost_window.as_secs_f64() + tools * START_STOP_S + 2.3;
        let cost = (self.cost_frames.len() as f64 * 2.0 * window(4.0)
            + (self.unwind_cost_frames.len() as f64 * 2.0 + 1.0) * window(2.0))
            * rounds
            + self.go_cost_frames.len() as f64 * (2.0 * self.go_rounds as f64 + 12.0);
        // Variants: no profiler, then three tools at each rate.
        let variants = 1.0 + 3.0 * self.slowdown_rates.len() as f64;
        // Profilers get 2 s past their start-up before the workload starts.
        let slowdown = self.slowdown_work.as_secs_f64() * 1.5
            + variants * rounds * (self.slowdown_work.as_secs_f64() + START_STOP_S + 2.0);
        // Ours, perf and profile-bee start one after the other (perf at once) and stop together.
        let footprint = 3.0
            + self.footprint_rounds as f64
                * self.footprint_rates.len() as f64
                * (self.footprint_window.as_secs_f64() + 2.0 * START_STOP_S)
            + self
                .unwind_memory_window
                .map_or(0.0, |w| w.as_secs_f64() + 2.0 * START_STOP_S + 10.0);
        // Measured: addr2line reads a large binary's DWARF at about 1.5k addresses a second.
        let symbolization = rounds * 4.0 * self.symbol_addresses as f64 / 1_500.0;
        let output = rounds * self.output_stacks.iter().sum::<usize>() as f64 * 20e-6;
        // Per round: the ping-pong alone, under ours without and with --off-cpu, under
        // bpftrace and under ours recording another process (each past its start-up), then one
        // window with ours and bpftrace side by side.
        let off_cpu = rounds
            * (self.off_cpu_work.as_secs_f64() * 5.0
                + 4.0 * (START_STOP_S + 2.0)
                + self.cost_window.as_secs_f64()
                + 2.0 * START_STOP_S
                + 2.0);
        [
            ("kernel cost", cost),
            ("slowdown", slowdown),
            ("footprint", footprint),
            ("symbolization", symbolization),
            ("output", output),
            ("off-CPU", off_cpu),
        ]
    }

    #[cfg(test)]
    pub fn total_estimate_s(&self) -> f64 {
        self.estimate_s().iter().map(|(_, s)| s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_run_fits_in_seven_and_a_half_minutes() {
        // Six minutes until issue 18: five for the first five parts, then the off-CPU part
        // (issue 16), which starts four tools a round; issue 18's floor and profile-bee start
        // in every kernel-cost window, two more tools each, about a minute more in all.
        let total = Plan::quick().total_estimate_s();
        assert!(total < 450.0, "quick plan estimated at {total:.0} s");
    }

    #[test]
    fn quick_keeps_every_measurement_of_the_full_run() {
        let (quick, full) = (Plan::quick(), Plan::full());
        assert_eq!(quick.cost_frames, full.cost_frames);
        assert_eq!(quick.slowdown_rates, full.slowdown_rates);
        assert_eq!(quick.footprint_rates, full.footprint_rates);
        assert_eq!(quick.output_stacks, full.output_stacks);
        assert!(quick.rounds >= 2, "a spread needs two rounds");
    }

    #[test]
    fn full_run_measures_what_the_issue_asks() {
        let full = Plan::full();
        assert_eq!(full.cost_frames, [10, 60, 120]);
        assert_eq!(full.slowdown_rates, [19, 99, 999]);
        assert_eq!(full.footprint_rates, [19, 99]);
        assert_eq!(full.footprint_window, Duration::from_secs(60));
        // Unwinding's memory with every binary of /usr/bin and /usr/lib mapped (issue 15).
        assert!(full.unwind_memory_window.is_some());
        assert_eq!(full.output_stacks, [1_000, 10_000, 100_000]);
        // The ping-pong of issue 16 runs long enough for a few hundred thousand switches a
        // second to add up to millions.
        assert!(full.off_cpu_work >= Duration::from_secs(5));
    }
}
