//! Tests of `controller`: synthetic series of one reading a second, read like specifications.

use super::*;

const CALM: LoadSample = LoadSample {
    cpu: 0.1,
    memory: 0.3,
    cpu_pressure: Some(0.0),
    memory_pressure: Some(0.0),
};

const MINUTE: u64 = 60;
const CAPTURE: u64 = 30;
const MIN_INTERVAL: u64 = 600;

fn load(cpu: f64, memory: f64) -> LoadSample {
    LoadSample {
        cpu,
        memory,
        ..CALM
    }
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// A cost well under the budget, whatever the rate.
fn cheap(_hz: u64) -> Option<f64> {
    Some(0.001)
}

/// A cost that grows with the rate: `share` of the host per hertz.
fn per_hz(share: f64) -> impl Fn(u64) -> Option<f64> {
    move |hz| Some(share * hz as f64)
}

/// Drives a controller and keeps every decision with the second it was taken.
struct Sim {
    ctl: Controller,
    now: u64,
    log: Vec<(u64, Decision)>,
}

impl Sim {
    fn new(config: ControllerConfig) -> Self {
        Self {
            ctl: Controller::new(config),
            now: 0,
            log: Vec::new(),
        }
    }

    fn with_defaults() -> Self {
        Self::new(ControllerConfig::default())
    }

    /// `seconds` readings of `load`, one a second; `cost` is given the rate in force during
    /// the period the reading covers.
    fn feed(
        &mut self,
        seconds: u64,
        load: LoadSample,
        cost: impl Fn(u64) -> Option<f64>,
    ) -> &mut Self {
        self.feed_with(seconds, |_, hz| (load, cost(hz)))
    }

    /// `seconds` readings, one a second, from `reading(now, hz in force)`.
    fn feed_with(
        &mut self,
        seconds: u64,
        mut reading: impl FnMut(u64, u64) -> (LoadSample, Option<f64>),
    ) -> &mut Self {
        for _ in 0..seconds {
            let now = self.now + 1;
            let (load, cost) = reading(now, self.ctl.frequency());
            self.at(now, load, cost);
        }
        self
    }

    /// One reading at `now` seconds, after a gap if it is not the next second.
    fn at(&mut self, now: u64, load: LoadSample, cost: Option<f64>) -> Vec<Decision> {
        self.now = self.now.max(now);
        let decisions = self.ctl.step(secs(now), load, cost);
        self.log.extend(decisions.iter().map(|d| (now, d.clone())));
        decisions
    }

    fn decisions_at(&self, now: u64) -> Vec<Decision> {
        self.log
            .iter()
            .filter(|(t, _)| *t == now)
            .map(|(_, d)| d.clone())
            .collect()
    }

    fn starts(&self) -> Vec<(u64, Trigger)> {
        self.log
            .iter()
            .filter_map(|(t, d)| match d {
                Decision::StartCapture(trigger) => Some((*t, trigger.clone())),
                _ => None,
            })
            .collect()
    }

    fn ends(&self) -> Vec<u64> {
        self.log
            .iter()
            .filter(|(_, d)| *d == Decision::EndCapture)
            .map(|(t, _)| *t)
            .collect()
    }

    /// Every change of rate: (second, new hz, reason).
    fn changes(&self) -> Vec<(u64, u64, Reason)> {
        self.log
            .iter()
            .filter_map(|(t, d)| match d {
                Decision::SetFrequency { hz, reason } => Some((*t, *hz, *reason)),
                _ => None,
            })
            .collect()
    }

    fn rates(&self) -> Vec<u64> {
        self.changes().iter().map(|(_, hz, _)| *hz).collect()
    }

    /// At most one capture per min interval, and at most two rate changes per capture.
    fn assert_no_flapping(&self) {
        let starts = self.starts();
        for pair in starts.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= MIN_INTERVAL, "{starts:?}");
        }
        for (start, _) in &starts {
            let during = self
                .changes()
                .iter()
                .filter(|(t, _, _)| (*start..=start + CAPTURE).contains(t))
                .count();
            assert!(during <= 2, "{:?}", self.changes());
        }
    }
}

// 1. A calm host.

#[test]
fn a_calm_host_gets_no_decision_and_keeps_the_baseline_for_ten_minutes() {
    let mut sim = Sim::with_defaults();
    sim.feed(10 * MINUTE, CALM, cheap);
    assert_eq!(sim.log, []);
    assert_eq!(sim.ctl.frequency(), 19);
    assert!(!sim.ctl.capturing());
}

// 2. Spikes.

#[test]
fn a_single_second_spike_starts_no_capture_whatever_the_load_under_it() {
    let mut sim = Sim::with_defaults();
    // From a calm host, and from loads just under each threshold, where the average alone
    // would stay above the threshold for a few seconds after the spike.
    for base in [CALM, load(0.69, 0.3), load(0.6, 0.79)] {
        sim.feed(MINUTE, base, cheap);
        sim.feed(1, load(1.0, base.memory), cheap);
        sim.feed(MINUTE, base, cheap);
        sim.feed(1, load(base.cpu, 1.0), cheap);
        sim.feed(MINUTE, base, cheap);
    }
    assert_eq!(sim.log, []);
}

#[test]
fn a_two_second_burst_starts_no_capture() {
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, cheap);
    sim.feed(2, load(1.0, 0.3), cheap);
    sim.feed(MINUTE, CALM, cheap);
    assert_eq!(sim.log, []);
}

// 3. Sustained load.

#[test]
fn sustained_cpu_load_captures_at_capture_hz_for_the_capture_duration() {
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, cheap);
    sim.feed(CAPTURE + 10, load(0.95, 0.3), cheap);

    let starts = sim.starts();
    assert_eq!(starts.len(), 1);
    let (start, trigger) = &starts[0];
    assert!(
        (MINUTE + 1..=MINUTE + 5).contains(start),
        "started at {start}"
    );
    assert_eq!(trigger.signal, Signal::Cpu);
    assert!(trigger.value > 0.70 && trigger.value <= 0.95);
    assert_eq!(trigger.threshold, 0.70);
    assert_eq!(
        sim.decisions_at(*start),
        [
            Decision::StartCapture(trigger.clone()),
            Decision::SetFrequency {
                hz: 99,
                reason: Reason::CaptureStarted
            },
        ]
    );
    // Nothing in between, then the end exactly after the capture duration.
    assert!((start + 1..start + CAPTURE).all(|t| sim.decisions_at(t).is_empty()));
    assert_eq!(
        sim.decisions_at(start + CAPTURE),
        [
            Decision::EndCapture,
            Decision::SetFrequency {
                hz: 19,
                reason: Reason::CaptureEnded
            },
        ]
    );
    assert_eq!(sim.ctl.frequency(), 19);
    assert!(!sim.ctl.capturing());
}

#[test]
fn sustained_cpu_load_captures_again_only_after_the_min_interval_from_the_first_start() {
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, cheap);
    sim.feed(2 * MIN_INTERVAL + MINUTE, load(0.95, 0.3), cheap);

    let starts: Vec<u64> = sim.starts().iter().map(|(t, _)| *t).collect();
    let first = starts[0];
    assert_eq!(
        starts,
        [first, first + MIN_INTERVAL, first + 2 * MIN_INTERVAL]
    );
    let ends: Vec<u64> = starts.iter().map(|t| t + CAPTURE).collect();
    assert_eq!(sim.ends(), ends);
    assert_eq!(sim.rates(), [99, 19, 99, 19, 99, 19]);
}

#[test]
fn a_capture_lasts_its_full_duration_when_the_load_drops() {
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, cheap);
    sim.feed(5, load(0.95, 0.3), cheap);
    let start = sim.starts()[0].0;
    sim.feed(MINUTE, CALM, cheap);
    assert!(sim.ctl.frequency() == 19);
    assert_eq!(sim.ends(), [start + CAPTURE]);
}

#[test]
fn load_at_recorder_start_captures_after_trigger_after_readings() {
    let mut sim = Sim::with_defaults();
    sim.feed(TRIGGER_AFTER.into(), load(0.95, 0.3), cheap);
    assert_eq!(sim.starts().len(), 1);
    assert!(sim.ctl.capturing());
    assert_eq!(sim.ctl.frequency(), 99);
}

// 4. No flapping.

#[test]
fn readings_alternating_around_a_threshold_start_no_capture() {
    for (low, high) in [(0.69, 0.71), (0.65, 0.75), (0.5, 0.9)] {
        let mut sim = Sim::with_defaults();
        sim.feed_with(30 * MINUTE, |t, _| {
            let cpu = if t % 2 == 0 { high } else { low };
            (load(cpu, 0.3), cheap(0))
        });
        sim.assert_no_flapping();
        assert_eq!(sim.starts(), [], "{low}/{high}");

        let mut sim = Sim::with_defaults();
        sim.feed_with(30 * MINUTE, |t, _| {
            let memory = if t % 2 == 0 { high + 0.1 } else { low + 0.1 };
            (load(0.1, memory), cheap(0))
        });
        sim.assert_no_flapping();
        assert_eq!(sim.starts(), [], "memory {low}/{high}");
    }
}

#[test]
fn recurring_bursts_capture_at_most_once_per_min_interval() {
    let mut sim = Sim::with_defaults();
    // Four seconds loaded, four seconds calm, for half an hour.
    sim.feed_with(30 * MINUTE, |t, _| {
        let cpu = if t % 8 < 4 { 0.95 } else { 0.5 };
        (load(cpu, 0.3), cheap(0))
    });
    sim.assert_no_flapping();
    assert_eq!(sim.starts().len(), 3);
    assert_eq!(sim.rates(), [99, 19, 99, 19, 99, 19]);
}

// 5. Memory, and which signal is reported.

#[test]
fn sustained_memory_use_captures_with_a_memory_trigger() {
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, cheap);
    let memory_high = LoadSample {
        cpu_pressure: Some(1.5),
        memory_pressure: Some(22.25),
        ..load(0.1, 0.9)
    };
    sim.feed(10, memory_high, cheap);

    let starts = sim.starts();
    assert_eq!(starts.len(), 1);
    let (start, trigger) = &starts[0];
    assert!(*start <= MINUTE + 5);
    assert_eq!(trigger.signal, Signal::Memory);
    assert!(trigger.value > 0.80 && trigger.value <= 0.90);
    assert_eq!(trigger.threshold, 0.80);
    assert_eq!(trigger.cpu_pressure, Some(1.5));
    assert_eq!(trigger.memory_pressure, Some(22.25));
    assert!(trigger.describe().contains("memory in use 0.8"));
    assert!(
        trigger
            .describe()
            .ends_with("> threshold 0.80 (cpu pressure avg10 1.5%, memory pressure avg10 22.2%)")
    );
}

#[test]
fn when_both_signals_exceed_the_one_furthest_above_its_threshold_is_reported() {
    // cpu 0.95 is 36% above 0.70; memory 0.85 is 6% above 0.80.
    let mut sim = Sim::with_defaults();
    sim.feed(10, load(0.95, 0.85), cheap);
    assert_eq!(sim.starts()[0].1.signal, Signal::Cpu);

    // cpu 0.75 is 7% above 0.70; memory 0.99 is 24% above 0.80.
    let mut sim = Sim::with_defaults();
    sim.feed(10, load(0.75, 0.99), cheap);
    assert_eq!(sim.starts()[0].1.signal, Signal::Memory);
}

#[test]
fn describe_is_one_line_and_leaves_out_unread_pressures() {
    let trigger = Trigger {
        signal: Signal::Cpu,
        value: 0.934,
        threshold: 0.7,
        cpu_pressure: Some(12.5),
        memory_pressure: Some(0.0),
    };
    assert_eq!(
        trigger.describe(),
        "trigger: cpu utilization 0.93 > threshold 0.70 \
         (cpu pressure avg10 12.5%, memory pressure avg10 0.0%)"
    );
    let without_psi = Trigger {
        cpu_pressure: None,
        memory_pressure: None,
        ..trigger.clone()
    };
    assert_eq!(
        without_psi.describe(),
        "trigger: cpu utilization 0.93 > threshold 0.70"
    );
    let memory_only = Trigger {
        signal: Signal::Memory,
        cpu_pressure: None,
        ..trigger
    };
    assert_eq!(
        memory_only.describe(),
        "trigger: memory in use 0.93 > threshold 0.70 (memory pressure avg10 0.0%)"
    );
}

#[test]
fn reasons_read_as_a_sentence_for_logs() {
    assert_eq!(
        Reason::OverBudget {
            cost: 0.0152,
            budget: 0.01
        }
        .to_string(),
        "profiler cost 1.520% of the host, over the budget of 1.000%"
    );
    assert_eq!(
        Reason::BackUnderBudget {
            cost: 0.0021,
            budget: 0.01
        }
        .to_string(),
        "profiler cost 0.210% of the host, well under the budget of 1.000%"
    );
    assert_eq!(
        Reason::CaptureStarted.to_string(),
        "incident capture started"
    );
    assert_eq!(Reason::CaptureEnded.to_string(), "incident capture ended");
}

// 6. The overhead governor at baseline.

#[test]
fn over_budget_halves_the_rate_down_to_min_hz_one_step_per_step_interval() {
    let mut sim = Sim::with_defaults();
    sim.feed(2 * MINUTE, CALM, |_| Some(0.05));

    assert_eq!(sim.rates(), [9, 4, 2, 1]);
    let changes = sim.changes();
    // The first step waits for STEP_INTERVAL of readings too.
    assert!(changes[0].0 >= STEP_INTERVAL.as_secs());
    for pair in changes.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= STEP_INTERVAL.as_secs(),
            "{changes:?}"
        );
    }
    for (_, _, reason) in &changes {
        let Reason::OverBudget { cost, budget } = reason else {
            panic!("{reason:?}");
        };
        assert!(approx(*cost, 0.05) && *budget == 0.01, "{reason:?}");
    }
    // Stays at min_hz while over budget.
    assert_eq!(sim.ctl.frequency(), 1);
    assert!(changes.last().is_some_and(|(t, _, _)| *t < 20));
}

#[test]
fn well_under_budget_the_rate_climbs_back_to_the_baseline_one_step_per_restore_delay() {
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, |_| Some(0.05));
    assert_eq!(sim.ctl.frequency(), 1);
    let cheap_from = sim.now + 1;
    sim.feed(3 * MINUTE, CALM, cheap);

    let climb: Vec<_> = sim
        .changes()
        .into_iter()
        .filter(|(t, _, _)| *t >= cheap_from)
        .collect();
    let rates: Vec<u64> = climb.iter().map(|(_, hz, _)| *hz).collect();
    assert_eq!(rates, [2, 4, 8, 16, 19]);
    assert!(climb[0].0 >= cheap_from + RESTORE_AFTER.as_secs());
    for pair in climb.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= RESTORE_AFTER.as_secs(),
            "{climb:?}"
        );
    }
    for (_, _, reason) in &climb {
        let Reason::BackUnderBudget { cost, budget } = reason else {
            panic!("{reason:?}");
        };
        assert!(*cost < 0.005 && *budget == 0.01, "{reason:?}");
    }
    assert_eq!(sim.ctl.frequency(), 19);
}

#[test]
fn restoring_needs_the_cost_under_the_band_without_a_break() {
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, |_| Some(0.05));
    let before = sim.changes().len();
    // Cheap, but every 8 s one reading lifts the average back into the band for a moment.
    sim.feed_with(10 * MINUTE, |t, _| {
        (CALM, Some(if t % 8 == 0 { 0.02 } else { 0.001 }))
    });
    assert_eq!(sim.changes().len(), before);
    assert_eq!(sim.ctl.frequency(), 1);
}

#[test]
fn a_cost_inside_the_hysteresis_band_neither_raises_nor_lowers_the_rate() {
    for in_band in [0.009, 0.0051] {
        let mut sim = Sim::with_defaults();
        sim.feed(MINUTE, CALM, |_| Some(0.05));
        let before = sim.changes().len();
        sim.feed(10 * MINUTE, CALM, |_| Some(in_band));
        assert_eq!(sim.changes().len(), before, "{in_band}");
        assert_eq!(sim.ctl.frequency(), 1);
    }
}

#[test]
fn a_cost_that_follows_the_rate_settles_at_the_first_rate_within_budget() {
    // 19 Hz costs 0.038, 9 Hz 0.018, 4 Hz 0.008 (within the budget, above the restore band).
    let mut sim = Sim::with_defaults();
    sim.feed(10 * MINUTE, CALM, per_hz(0.002));
    assert_eq!(sim.rates(), [9, 4]);
    assert_eq!(sim.ctl.frequency(), 4);
}

#[test]
fn an_unknown_cost_holds_the_rate() {
    let mut sim = Sim::with_defaults();
    sim.feed(10 * MINUTE, CALM, |_| None);
    assert_eq!(sim.log, []);

    let mut sim = Sim::with_defaults();
    sim.feed(STEP_INTERVAL.as_secs() + 1, CALM, |_| Some(0.05));
    assert_eq!(sim.rates(), [9]);
    sim.feed(10 * MINUTE, CALM, |_| None);
    assert_eq!(sim.rates(), [9]);
}

#[test]
fn a_single_expensive_reading_does_not_lower_the_rate() {
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, cheap);
    sim.feed(1, CALM, |_| Some(0.02));
    sim.feed(MINUTE, CALM, cheap);
    assert_eq!(sim.log, []);
}

// 7. The governor during a capture.

#[test]
fn a_breach_during_a_capture_lowers_the_capture_rate_and_the_end_returns_to_the_baseline() {
    // 99 Hz costs 0.0198, 49 Hz 0.0098 (within the budget).
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, per_hz(0.0002));
    sim.feed(MINUTE, load(0.95, 0.3), per_hz(0.0002));

    let start = sim.starts()[0].0;
    let changes = sim.changes();
    assert_eq!(sim.rates(), [99, 49, 19]);
    assert_eq!(changes[1].0, start + STEP_INTERVAL.as_secs());
    assert!(matches!(changes[1].2, Reason::OverBudget { .. }));
    // min(baseline, governor cap 49) = 19.
    assert_eq!(changes[2], (start + CAPTURE, 19, Reason::CaptureEnded));
    assert_eq!(
        sim.decisions_at(start + CAPTURE)[0],
        Decision::EndCapture,
        "EndCapture comes first"
    );
}

#[test]
fn a_deep_breach_during_a_capture_keeps_its_cap_below_the_baseline_after_the_end() {
    // 99 Hz costs 0.0495, 49 Hz 0.0245, 24 Hz 0.012, 12 Hz 0.006 (in the hysteresis band).
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, |_| Some(0.001));
    sim.feed(MINUTE, load(0.95, 0.3), per_hz(0.0005));

    let start = sim.starts()[0].0;
    assert_eq!(sim.rates(), [99, 49, 24, 12]);
    // min(baseline 19, governor cap 12) = 12: the rate does not change at the end.
    assert_eq!(sim.decisions_at(start + CAPTURE), [Decision::EndCapture]);
    assert_eq!(sim.ctl.frequency(), 12);
}

#[test]
fn a_capture_that_starts_under_a_governor_cap_keeps_the_cap() {
    // The governor holds 4 Hz (0.008); the budget outranks the capture.
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, per_hz(0.002));
    assert_eq!(sim.ctl.frequency(), 4);
    sim.feed(MINUTE, load(0.95, 0.3), per_hz(0.002));

    let start = sim.starts()[0].0;
    assert!(matches!(
        sim.decisions_at(start)[..],
        [Decision::StartCapture(_)]
    ));
    assert_eq!(sim.decisions_at(start + CAPTURE), [Decision::EndCapture]);
    assert_eq!(sim.rates(), [9, 4]);
}

#[test]
fn under_budget_during_a_capture_the_rate_climbs_up_to_capture_hz() {
    let config = ControllerConfig {
        capture_duration: secs(5 * MINUTE),
        ..ControllerConfig::default()
    };
    let mut sim = Sim::new(config);
    sim.feed(MINUTE, CALM, |_| Some(0.05));
    assert_eq!(sim.ctl.frequency(), 1);
    sim.feed(6 * MINUTE, load(0.95, 0.3), |_| Some(0.0001));

    assert!(sim.starts().len() == 1);
    assert_eq!(sim.rates()[4..], [2, 4, 8, 16, 32, 64, 99, 19]);
    assert_eq!(sim.changes().last().unwrap().2, Reason::CaptureEnded);
}

// 8. Adaptation off.

#[test]
fn without_adaptation_nothing_is_ever_decided() {
    let config = ControllerConfig {
        adaptive: false,
        ..ControllerConfig::default()
    };
    let mut sim = Sim::new(config);
    sim.feed(30 * MINUTE, load(1.0, 1.0), |_| Some(1.0));
    assert_eq!(sim.log, []);
    assert_eq!(sim.ctl.frequency(), 19);
    assert!(!sim.ctl.capturing());
}

// 9. Gaps and bad readings.

#[test]
fn a_gap_in_readings_breaks_a_run_and_readings_after_it_start_a_new_one() {
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, CALM, cheap);
    // Two readings of the run, then 20 s of silence.
    sim.feed(2, load(0.95, 0.3), cheap);
    let resumed = sim.now + 20;
    sim.at(resumed, load(0.95, 0.3), cheap(19));
    assert_eq!(sim.starts(), []);
    sim.feed(TRIGGER_AFTER.into(), load(0.95, 0.3), cheap);
    assert_eq!(sim.starts()[0].0, resumed + u64::from(TRIGGER_AFTER) - 1);
}

#[test]
fn a_gap_during_a_capture_ends_it_at_the_first_reading_after_its_duration() {
    let mut sim = Sim::with_defaults();
    sim.feed(10, load(0.95, 0.3), cheap);
    assert!(sim.ctl.capturing());
    let late = sim.now + 2 * CAPTURE;
    let decisions = sim.at(late, load(0.95, 0.3), cheap(99));
    assert_eq!(
        decisions,
        [
            Decision::EndCapture,
            Decision::SetFrequency {
                hz: 19,
                reason: Reason::CaptureEnded
            }
        ]
    );
}

#[test]
fn a_gap_does_not_let_old_cost_readings_lower_the_rate() {
    let mut sim = Sim::with_defaults();
    sim.feed(2, CALM, |_| Some(0.05));
    // One expensive reading after the silence is not STEP_INTERVAL of readings.
    let resumed = sim.now + 20;
    sim.at(resumed, CALM, Some(0.05));
    assert_eq!(sim.log, []);
    sim.feed(STEP_INTERVAL.as_secs(), CALM, |_| Some(0.05));
    assert_eq!(sim.rates(), [9]);
}

#[test]
fn readings_that_do_not_move_time_forward_are_ignored() {
    let mut ctl = Controller::new(ControllerConfig::default());
    let busy = load(0.95, 0.3);
    assert_eq!(ctl.step(secs(10), busy, Some(0.05)), []);
    for _ in 0..10 {
        assert_eq!(ctl.step(secs(10), busy, Some(0.05)), []);
        assert_eq!(ctl.step(secs(3), busy, Some(0.05)), []);
    }
    assert!(!ctl.capturing());
    assert_eq!(ctl.frequency(), 19);
}

#[test]
fn readings_that_are_not_numbers_are_ignored_and_a_load_one_breaks_a_run() {
    let mut sim = Sim::with_defaults();
    sim.feed_with(10 * MINUTE, |t, _| {
        let cpu = if t % 3 == 0 { f64::NAN } else { 0.95 };
        (load(cpu, f64::NAN), Some(f64::NAN))
    });
    assert_eq!(sim.log, []);
    assert_eq!(sim.ctl.frequency(), 19);
}

#[test]
fn out_of_range_readings_are_clamped() {
    // Utilization 7.0 counts as 1.0, and a trigger never reports more than 1.
    let mut sim = Sim::with_defaults();
    let wild = LoadSample {
        cpu: 7.0,
        memory: -3.0,
        cpu_pressure: Some(f64::INFINITY),
        memory_pressure: Some(-1.0),
    };
    sim.feed(TRIGGER_AFTER.into(), wild, |_| Some(-0.5));
    let trigger = &sim.starts()[0].1;
    assert_eq!(trigger.signal, Signal::Cpu);
    assert_eq!(trigger.value, 1.0);
    assert_eq!(trigger.cpu_pressure, Some(100.0));
    assert_eq!(trigger.memory_pressure, None);

    // An infinite cost is a cost of the whole host: over budget.
    let mut sim = Sim::with_defaults();
    sim.feed(MINUTE, load(f64::NEG_INFINITY, f64::NEG_INFINITY), |_| {
        Some(f64::INFINITY)
    });
    assert_eq!(sim.rates(), [9, 4, 2, 1]);
}

#[test]
fn extreme_times_do_not_panic() {
    let mut ctl = Controller::new(ControllerConfig::default());
    let busy = load(1.0, 1.0);
    for now in [0, 1, 2, 3, u64::MAX - 1, u64::MAX] {
        ctl.step(secs(now), busy, Some(1.0));
    }
    ctl.step(Duration::MAX, busy, Some(1.0));
    assert!(ctl.frequency() >= 1);
}

// Configuration.

#[test]
fn the_configuration_is_brought_into_range() {
    let ctl = Controller::new(ControllerConfig {
        baseline_hz: 0,
        capture_hz: 0,
        min_hz: 0,
        cpu_threshold: f64::NAN,
        mem_threshold: 1.5,
        overhead_budget: -1.0,
        ..ControllerConfig::default()
    });
    let config = ctl.config();
    assert_eq!(
        (config.baseline_hz, config.capture_hz, config.min_hz),
        (1, 1, 1)
    );
    assert_eq!(config.cpu_threshold, 0.70);
    assert_eq!(config.mem_threshold, 1.0);
    assert_eq!(config.overhead_budget, 0.01);
    assert_eq!(ctl.frequency(), 1);

    let ctl = Controller::new(ControllerConfig {
        baseline_hz: 50,
        capture_hz: 20,
        min_hz: 60,
        cpu_threshold: 0.0,
        ..ControllerConfig::default()
    });
    let config = ctl.config();
    assert_eq!(
        (config.baseline_hz, config.capture_hz, config.min_hz),
        (50, 50, 50)
    );
    assert_eq!(config.cpu_threshold, 0.70);
}

#[test]
fn a_threshold_of_one_disables_its_signal() {
    let mut sim = Sim::new(ControllerConfig {
        cpu_threshold: 1.0,
        ..ControllerConfig::default()
    });
    sim.feed(10 * MINUTE, load(1.0, 0.3), cheap);
    assert_eq!(sim.log, []);
}

#[test]
fn min_hz_bounds_the_governor() {
    let mut sim = Sim::new(ControllerConfig {
        min_hz: 5,
        ..ControllerConfig::default()
    });
    sim.feed(10 * MINUTE, CALM, |_| Some(0.5));
    assert_eq!(sim.rates(), [9, 5]);
}

#[test]
fn a_zero_capture_duration_and_interval_end_each_capture_at_the_next_reading() {
    let mut sim = Sim::new(ControllerConfig {
        capture_duration: Duration::ZERO,
        capture_min_interval: Duration::ZERO,
        ..ControllerConfig::default()
    });
    sim.feed(20, load(0.95, 0.3), cheap);
    // Start, end, start, end, ...: never both in one step.
    for (t, decision) in &sim.log {
        let same_step = sim.decisions_at(*t);
        assert!(same_step.len() <= 2, "{t}: {decision:?} in {same_step:?}");
    }
    let starts = sim.starts();
    let ends = sim.ends();
    assert!(starts.len() >= 5);
    for ((start, _), end) in starts.iter().zip(&ends) {
        assert_eq!(*end, start + 1);
    }
}

// 8. Profile requests over HTTP (`hz=`).

#[test]
fn a_request_raises_the_rate_while_it_lasts_and_its_end_restores_the_baseline() {
    let mut sim = Sim::with_defaults();
    sim.feed(5, CALM, cheap);
    let raised = sim.ctl.request(secs(5), Some(49));
    assert_eq!(
        raised,
        [Decision::SetFrequency {
            hz: 49,
            reason: Reason::Pulled { hz: Some(49) }
        }]
    );
    assert!(sim.ctl.request(secs(6), Some(49)).is_empty(), "no change");
    sim.feed(20, CALM, cheap);
    assert_eq!(
        sim.ctl.frequency(),
        49,
        "the governor leaves a cheap rate alone"
    );
    let ended = sim.ctl.request(secs(26), None);
    assert_eq!(
        ended,
        [Decision::SetFrequency {
            hz: 19,
            reason: Reason::Pulled { hz: None }
        }]
    );
    assert_eq!(
        Reason::Pulled { hz: Some(49) }.to_string(),
        "a profile request asked for 49 Hz"
    );
}

#[test]
fn a_request_below_the_rate_in_force_changes_nothing() {
    let mut sim = Sim::with_defaults();
    sim.feed(5, CALM, cheap);
    assert!(sim.ctl.request(secs(5), Some(10)).is_empty());
    assert!(sim.ctl.request(secs(6), None).is_empty());
    assert_eq!(sim.ctl.frequency(), 19);
}

#[test]
fn the_budget_outranks_a_request() {
    let mut sim = Sim::with_defaults();
    sim.feed(5, CALM, cheap);
    sim.ctl.request(secs(5), Some(99));
    assert_eq!(sim.ctl.frequency(), 99);
    // Over budget at 99 Hz: the governor halves the rate as it would a capture's.
    sim.feed(MINUTE, CALM, |hz| Some(0.0003 * hz as f64));
    assert!(sim.ctl.frequency() < 99, "{:?}", sim.rates());
    assert!(
        sim.ctl.frequency() as f64 * 0.0003 <= 0.01,
        "{:?}",
        sim.rates()
    );
    // A new request does not lift the cap.
    assert!(sim.ctl.request(secs(sim.now), Some(98)).is_empty());
}
