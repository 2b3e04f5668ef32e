//! The sampling program's kernel-side cost, measured in short windows.
//!
//! The kernel counts a BPF program's run time only while run-time statistics are on
//! (`BPF_ENABLE_STATS`, Linux 5.8+), and that switch is global: while on, every BPF program of the
//! host (CNI datapaths, other tracers) pays two clock reads per run. So statistics are on for
//! [`WINDOW`] every [`EVERY`] only; the mean run time measured in the last window, times the runs
//! the program's own counters report, estimates the cost in between.

use std::{
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use profiler_common::Counter;

use super::CounterSnapshot;

/// How long statistics stay on per measurement.
pub const WINDOW: Duration = Duration::from_secs(1);
/// How often a measurement starts.
pub const EVERY: Duration = Duration::from_secs(60);

/// Cumulative kernel-side cost of the sampling program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramCost {
    pub run_time_ns: u64,
    pub run_count: u64,
}

impl ProgramCost {
    /// Mean run time per sample since `earlier`, in nanoseconds.
    pub fn per_run_since(&self, earlier: &ProgramCost) -> Option<u64> {
        let runs = self.run_count.checked_sub(earlier.run_count)?;
        let time = self.run_time_ns.checked_sub(earlier.run_time_ns)?;
        (runs > 0).then(|| time / runs)
    }
}

/// Runs of the sampling program, from its counters: each run ends in exactly one of these.
pub fn runs(counters: &CounterSnapshot) -> u64 {
    [
        Counter::Samples,
        Counter::Filtered,
        Counter::Idle,
        Counter::CountsMapFull,
    ]
    .iter()
    .map(|c| counters.get(*c))
    .sum()
}

/// An open measurement: the statistics switch held, and the kernel's totals at its start.
struct Window {
    _stats: OwnedFd,
    opened: Instant,
    start: Option<ProgramCost>,
}

/// Opens and closes measurement windows and keeps the estimate.
#[derive(Default)]
pub struct CostMeter {
    window: Option<Window>,
    closed: Option<Instant>,
    ns_per_run: Option<u64>,
    estimate: ProgramCost,
}

impl CostMeter {
    /// Called about once a second: closes a window that has lasted [`WINDOW`] (reading the
    /// kernel's totals with `totals`) and opens one when [`EVERY`] has passed since the last.
    /// `enable` turns statistics on for as long as the returned descriptor is held.
    pub fn tick(
        &mut self,
        now: Instant,
        totals: impl Fn() -> Option<ProgramCost>,
        enable: impl FnOnce() -> Option<OwnedFd>,
    ) {
        match &self.window {
            Some(window) if now.duration_since(window.opened) >= WINDOW => {
                if let (Some(start), Some(end)) = (window.start, totals())
                    && let Some(mean) = end.per_run_since(&start)
                {
                    self.ns_per_run = Some(mean);
                }
                // Dropping the descriptor turns statistics off (unless someone else holds them).
                self.window = None;
                self.closed = Some(now);
            }
            None if self
                .closed
                .is_none_or(|closed| now.duration_since(closed) >= EVERY) =>
            {
                if let Some(stats) = enable() {
                    self.window = Some(Window {
                        _stats: stats,
                        opened: now,
                        start: totals(),
                    });
                } else {
                    // Not available (before Linux 5.8): do not ask again every second.
                    self.closed = Some(now);
                }
            }
            _ => {}
        }
    }

    /// The cost estimate up to `runs` program runs in all, once a window has measured the mean;
    /// runs before the first measurement are priced at it.
    pub fn estimate(&mut self, runs: u64) -> Option<ProgramCost> {
        let mean = self.ns_per_run?;
        let new_runs = runs.saturating_sub(self.estimate.run_count);
        self.estimate.run_time_ns += new_runs * mean;
        self.estimate.run_count = runs.max(self.estimate.run_count);
        Some(self.estimate)
    }

    /// Whether statistics are on for a measurement now.
    pub fn measuring(&self) -> bool {
        self.window.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn fd() -> Option<OwnedFd> {
        std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
    }

    #[test]
    fn statistics_are_on_only_in_windows_and_price_the_runs_between() {
        let mut meter = CostMeter::default();
        let totals = Cell::new(ProgramCost {
            run_time_ns: 1_000,
            run_count: 10,
        });
        let t0 = Instant::now();
        assert_eq!(meter.estimate(5), None, "nothing measured yet");
        meter.tick(t0, || Some(totals.get()), fd);
        assert!(meter.measuring());
        // The window sees 100 runs of 4 µs.
        totals.set(ProgramCost {
            run_time_ns: 401_000,
            run_count: 110,
        });
        meter.tick(t0 + WINDOW / 2, || Some(totals.get()), fd);
        assert!(meter.measuring(), "the window lasts {WINDOW:?}");
        meter.tick(t0 + WINDOW, || Some(totals.get()), fd);
        assert!(!meter.measuring());
        assert_eq!(
            meter.estimate(1_000),
            Some(ProgramCost {
                run_time_ns: 4_000_000,
                run_count: 1_000
            })
        );
        // No window until EVERY has passed since the last closed.
        meter.tick(t0 + WINDOW + EVERY / 2, || None, || panic!("too early"));
        assert!(!meter.measuring());
        meter.tick(t0 + WINDOW + EVERY, || Some(totals.get()), fd);
        assert!(meter.measuring());
        let cost = meter.estimate(1_500).unwrap();
        assert_eq!(cost.per_run_since(&ProgramCost::default()), Some(4_000));
    }

    #[test]
    fn without_statistics_it_does_not_ask_every_second() {
        let mut meter = CostMeter::default();
        let t0 = Instant::now();
        let asked = Cell::new(0);
        let refuse = || {
            asked.set(asked.get() + 1);
            None
        };
        meter.tick(t0, || None, refuse);
        meter.tick(t0 + Duration::from_secs(1), || None, refuse);
        assert_eq!(asked.get(), 1);
        assert_eq!(meter.estimate(10), None);
    }

    #[test]
    fn runs_count_each_way_a_run_ends() {
        let mut counters = CounterSnapshot::default();
        counters.values[Counter::Samples as usize] = 5;
        counters.values[Counter::Filtered as usize] = 3;
        counters.values[Counter::Idle as usize] = 2;
        counters.values[Counter::Traced as usize] = 4;
        counters.values[Counter::StacksMapFull as usize] = 1;
        assert_eq!(runs(&counters), 10);
    }
}
