//! The adaptive sampling controller: from one host-load reading a second and the profiler's own
//! measured cost, it decides when to capture an incident at a higher rate and how far to lower
//! the rate to stay within the overhead budget. A pure state machine (no clock, no I/O): the
//! caller feeds it readings and applies its decisions, in order.
//!
//! Two parts set the effective frequency together:
//! - the capture, which sets the target: `capture_hz` while capturing, else `baseline_hz`;
//! - the overhead governor, which may hold the rate below the target (a cap). The budget
//!   outranks the capture: a capture that starts while the rate is capped stays capped.

use std::{fmt, time::Duration};

/// Weight of the newest load reading in its average (a half-life of one second). The average
/// takes out noise; a spike is rejected by asking the reading itself to be above the threshold
/// too (see [`TRIGGER_AFTER`]), so the average can be short and a sustained load from a calm
/// host starts a capture in 4-6 s.
const LOAD_ALPHA: f64 = 0.5;

/// Weight of the newest cost reading in its average (a time constant of about 3 s). The cost
/// of a process is read in scheduler ticks, which makes single readings noisy. The average
/// restarts whenever the rate changes, so that it only describes the rate in force.
const COST_ALPHA: f64 = 0.3;

/// Consecutive readings for which both the average and the reading must exceed a threshold
/// before a capture starts. The reading condition rejects a single spike on any base (the
/// average alone would stay above the threshold for seconds after a spike on a base just
/// under it), and a signal oscillating around the threshold never gets a run.
const TRIGGER_AFTER: u32 = 3;

/// Least time between a change of the rate and a step down: three readings at the new rate,
/// so that the effect of the last change is seen before the next.
const STEP_INTERVAL: Duration = Duration::from_secs(3);

/// The cost must fall below this fraction of the budget before the rate goes back up. Doubling
/// the rate at most doubles the cost (part of it does not depend on the rate), so a step up
/// from below half the budget stays within it: no oscillation between two rates.
const RESTORE_RATIO: f64 = 0.5;

/// How long the averaged cost must stay below `budget * RESTORE_RATIO` before one step up:
/// going up is never urgent, going down is.
const RESTORE_AFTER: Duration = Duration::from_secs(10);

/// A longer silence between readings starts the averages and runs afresh: readings this far
/// apart are no longer consecutive.
const MAX_GAP: Duration = Duration::from_secs(5);

/// What the controller may do. [`Controller::new`] clamps out-of-range values.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// `false` (`--no-adaptive`): sample at `baseline_hz`, never capture, never throttle.
    pub adaptive: bool,
    /// The rate outside captures, in Hz (at least 1).
    pub baseline_hz: u64,
    /// The rate during a capture, in Hz (at least `baseline_hz`).
    pub capture_hz: u64,
    /// The lowest rate the governor steps down to, in Hz (1..=`baseline_hz`).
    pub min_hz: u64,
    /// Host CPU utilization (0..=1) above which a capture starts; 1 disables this signal.
    pub cpu_threshold: f64,
    /// Fraction of memory in use (0..=1) above which a capture starts; 1 disables this signal.
    pub mem_threshold: f64,
    /// How long a capture lasts, whatever the load does meanwhile.
    pub capture_duration: Duration,
    /// Least time from the start of one capture to the start of the next.
    pub capture_min_interval: Duration,
    /// Largest share of the host's CPU capacity the profiler may use (0..=1).
    pub overhead_budget: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            adaptive: true,
            baseline_hz: 19,
            capture_hz: 99,
            min_hz: 1,
            cpu_threshold: 0.70,
            mem_threshold: 0.80,
            capture_duration: Duration::from_secs(30),
            capture_min_interval: Duration::from_secs(600),
            overhead_budget: 0.01,
        }
    }
}

impl ControllerConfig {
    /// The same settings brought into range; a threshold or budget that is not a positive
    /// number falls back to its default.
    fn sanitized(self) -> Self {
        let defaults = Self::default();
        let baseline_hz = self.baseline_hz.max(1);
        Self {
            baseline_hz,
            capture_hz: self.capture_hz.max(baseline_hz),
            min_hz: self.min_hz.clamp(1, baseline_hz),
            cpu_threshold: positive_fraction(self.cpu_threshold, defaults.cpu_threshold),
            mem_threshold: positive_fraction(self.mem_threshold, defaults.mem_threshold),
            overhead_budget: positive_fraction(self.overhead_budget, defaults.overhead_budget),
            ..self
        }
    }
}

/// One reading of the host's load, taken every second.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadSample {
    /// Host CPU utilization over the last period, 0..=1.
    pub cpu: f64,
    /// Fraction of memory in use, 0..=1.
    pub memory: f64,
    /// CPU pressure (PSI `some avg10`, percent), when the kernel has PSI.
    pub cpu_pressure: Option<f64>,
    /// Memory pressure (PSI `some avg10`, percent), when the kernel has PSI.
    pub memory_pressure: Option<f64>,
}

/// The load signal that started a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Host CPU utilization.
    Cpu,
    /// Memory in use.
    Memory,
}

/// Why a capture started, for the record.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The signal that fired (the one furthest above its threshold when both did).
    pub signal: Signal,
    /// The averaged value of `signal` when the capture started.
    pub value: f64,
    /// The threshold it exceeded.
    pub threshold: f64,
    /// The latest CPU pressure reading (PSI `some avg10`, percent).
    pub cpu_pressure: Option<f64>,
    /// The latest memory pressure reading (PSI `some avg10`, percent).
    pub memory_pressure: Option<f64>,
}

impl Trigger {
    /// One line for a pprof comment, e.g. `trigger: cpu utilization 0.93 > threshold 0.70
    /// (cpu pressure avg10 12.5%, memory pressure avg10 0.0%)`; pressures that were not read
    /// are left out.
    pub fn describe(&self) -> String {
        let what = match self.signal {
            Signal::Cpu => "cpu utilization",
            Signal::Memory => "memory in use",
        };
        let mut line = format!(
            "trigger: {what} {:.2} > threshold {:.2}",
            self.value, self.threshold
        );
        let pressures: Vec<String> = [("cpu", self.cpu_pressure), ("memory", self.memory_pressure)]
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name} pressure avg10 {v:.1}%")))
            .collect();
        if !pressures.is_empty() {
            line.push_str(&format!(" ({})", pressures.join(", ")));
        }
        line
    }
}

/// Why the effective frequency changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// A capture started: up to `capture_hz`, unless the governor holds the rate lower.
    CaptureStarted,
    /// The capture ended: back to `baseline_hz`, or lower if the governor holds the rate lower.
    CaptureEnded,
    /// The averaged cost (a share of host capacity) exceeded the budget.
    OverBudget { cost: f64, budget: f64 },
    /// The averaged cost stayed well under the budget for a while.
    BackUnderBudget { cost: f64, budget: f64 },
    /// Profile requests over HTTP asked for this rate (`hz=`), or the last of them ended.
    Pulled { hz: Option<u64> },
}

/// For logs and profile comments, e.g. `profiler cost 1.52% of the host, over the budget of
/// 1.00%`.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CaptureStarted => f.write_str("incident capture started"),
            Self::CaptureEnded => f.write_str("incident capture ended"),
            Self::OverBudget { cost, budget } => write!(
                f,
                "profiler cost {:.3}% of the host, over the budget of {:.3}%",
                cost * 100.0,
                budget * 100.0
            ),
            Self::BackUnderBudget { cost, budget } => write!(
                f,
                "profiler cost {:.3}% of the host, well under the budget of {:.3}%",
                cost * 100.0,
                budget * 100.0
            ),
            Self::Pulled { hz: Some(hz) } => write!(f, "a profile request asked for {hz} Hz"),
            Self::Pulled { hz: None } => {
                f.write_str("the profile requests that raised the rate ended")
            }
        }
    }
}

/// What the caller must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Begin an incident capture (its own profile, with the trigger in a comment).
    StartCapture(Trigger),
    /// End the incident capture.
    EndCapture,
    /// Retune the perf events to `hz`.
    SetFrequency { hz: u64, reason: Reason },
}

/// The adaptive controller's state; see the module documentation.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    /// The effective frequency.
    hz: u64,
    /// The governor's limit, kept only while it is below the target.
    cap: Option<u64>,
    cpu: Watch,
    memory: Watch,
    cost: Average,
    last_reading: Option<Duration>,
    /// Start of the capture under way.
    capture: Option<Duration>,
    last_capture_start: Option<Duration>,
    /// Since when the cost readings describe the rate in force (or the averages restarted).
    settled_since: Duration,
    /// Since when the averaged cost has stayed below the restore band.
    under_since: Option<Duration>,
    /// The rate profile requests over HTTP ask for, if higher than the target.
    requested: Option<u64>,
}

impl Controller {
    /// A controller at `config.baseline_hz`, with `config` brought into range.
    pub fn new(config: ControllerConfig) -> Self {
        let config = config.sanitized();
        Self {
            hz: config.baseline_hz,
            config,
            cap: None,
            cpu: Watch::default(),
            memory: Watch::default(),
            cost: Average::default(),
            last_reading: None,
            capture: None,
            last_capture_start: None,
            settled_since: Duration::ZERO,
            under_since: None,
            requested: None,
        }
    }

    /// Profile requests over HTTP ask for `hz` (the highest of theirs; `None` once they all
    /// ended). It raises the target while asked, never above the governor's cap: the budget
    /// outranks requests as it does captures. Returns the change of rate, if any.
    pub fn request(&mut self, now: Duration, hz: Option<u64>) -> Vec<Decision> {
        let mut decisions = Vec::new();
        if self.requested != hz {
            self.requested = hz;
            self.retarget(now, Reason::Pulled { hz }, &mut decisions);
        }
        decisions
    }

    /// Feeds one reading and returns what to do, in order: `StartCapture` comes before its
    /// `SetFrequency`, `SetFrequency` with `CaptureEnded` right after `EndCapture`.
    ///
    /// `now` is monotonic time since the recorder started; a reading that is not later than
    /// the previous one is ignored. `cost` is the profiler's cost over the last period (BPF
    /// run time plus its own CPU time, over cpus * wall time), `None` when unknown: the
    /// governor then holds the rate. Readings that are not numbers are ignored, out-of-range
    /// ones clamped.
    pub fn step(&mut self, now: Duration, load: LoadSample, cost: Option<f64>) -> Vec<Decision> {
        let mut decisions = Vec::new();
        if !self.config.adaptive {
            return decisions;
        }
        match self.last_reading {
            Some(last) if now <= last => return decisions,
            Some(last) if now.saturating_sub(last) <= MAX_GAP => {}
            // The first reading, or the first after a silence: what it covers is unknown.
            _ => self.restart_averages(now),
        }
        self.last_reading = Some(now);

        self.cpu
            .observe(fraction(load.cpu), self.config.cpu_threshold);
        self.memory
            .observe(fraction(load.memory), self.config.mem_threshold);
        let cost_read = cost
            .and_then(fraction)
            .map(|c| self.cost.update(c, COST_ALPHA));

        self.update_capture(now, &load, &mut decisions);
        // A change of rate in this step restarted the average: nothing to judge yet.
        if cost_read.is_some()
            && let Some(cost) = self.cost.value
        {
            self.govern(now, cost, &mut decisions);
        }
        decisions
    }

    /// The effective sampling frequency, in Hz.
    pub fn frequency(&self) -> u64 {
        self.hz
    }

    /// Whether an incident capture is under way.
    pub fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// The settings in force, after clamping.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    fn update_capture(&mut self, now: Duration, load: &LoadSample, out: &mut Vec<Decision>) {
        if let Some(start) = self.capture {
            if now.saturating_sub(start) >= self.config.capture_duration {
                self.capture = None;
                if self.cap.is_some_and(|cap| cap >= self.config.baseline_hz) {
                    self.cap = None;
                }
                out.push(Decision::EndCapture);
                self.retarget(now, Reason::CaptureEnded, out);
            }
            // Not during a capture, nor in the step that ends one (two retunes at once).
            return;
        }
        let due = self
            .last_capture_start
            .is_none_or(|last| now.saturating_sub(last) >= self.config.capture_min_interval);
        if !due {
            return;
        }
        if let Some(trigger) = self.trigger(load) {
            self.capture = Some(now);
            self.last_capture_start = Some(now);
            out.push(Decision::StartCapture(trigger));
            self.retarget(now, Reason::CaptureStarted, out);
        }
    }

    /// The firing signal furthest above its threshold (relatively), if any; CPU on a tie.
    fn trigger(&self, load: &LoadSample) -> Option<Trigger> {
        let memory = self
            .memory
            .firing()
            .map(|v| (Signal::Memory, v, self.config.mem_threshold));
        let cpu = self
            .cpu
            .firing()
            .map(|v| (Signal::Cpu, v, self.config.cpu_threshold));
        let (signal, value, threshold) = [memory, cpu]
            .into_iter()
            .flatten()
            .max_by(|a, b| (a.1 / a.2).total_cmp(&(b.1 / b.2)))?;
        Some(Trigger {
            signal,
            value,
            threshold,
            cpu_pressure: load.cpu_pressure.and_then(pressure),
            memory_pressure: load.memory_pressure.and_then(pressure),
        })
    }

    /// One step down when over budget, one step up after a while well under it.
    fn govern(&mut self, now: Duration, cost: f64, out: &mut Vec<Decision>) {
        let budget = self.config.overhead_budget;
        if cost > budget {
            self.under_since = None;
            let lower = (self.hz / 2).max(self.config.min_hz);
            if lower < self.hz && now.saturating_sub(self.settled_since) >= STEP_INTERVAL {
                self.cap = Some(lower);
                self.retarget(now, Reason::OverBudget { cost, budget }, out);
            }
        } else if cost < budget * RESTORE_RATIO {
            let since = *self.under_since.get_or_insert(now);
            if let Some(cap) = self.cap
                && now.saturating_sub(since) >= RESTORE_AFTER
            {
                let higher = cap.saturating_mul(2);
                self.cap = (higher < self.target()).then_some(higher);
                self.retarget(now, Reason::BackUnderBudget { cost, budget }, out);
            }
        } else {
            // Inside the hysteresis band: hold.
            self.under_since = None;
        }
    }

    fn target(&self) -> u64 {
        let own = if self.capturing() {
            self.config.capture_hz
        } else {
            self.config.baseline_hz
        };
        own.max(self.requested.unwrap_or(0))
    }

    /// Applies the target and the cap; a change is one decision and restarts the cost average.
    fn retarget(&mut self, now: Duration, reason: Reason, out: &mut Vec<Decision>) {
        let hz = self
            .cap
            .map_or(self.target(), |cap| cap.min(self.target()))
            .max(self.config.min_hz);
        if hz != self.hz {
            self.hz = hz;
            out.push(Decision::SetFrequency { hz, reason });
            self.cost.reset();
            self.settled_since = now;
            self.under_since = None;
        }
    }

    /// Before the first reading, or after a silence: earlier readings say nothing about now.
    fn restart_averages(&mut self, now: Duration) {
        self.cpu = Watch::default();
        self.memory = Watch::default();
        self.cost.reset();
        self.settled_since = now;
        self.under_since = None;
    }
}

/// One load signal: its average and how many consecutive readings were above the threshold.
#[derive(Debug, Clone, Default)]
struct Watch {
    average: Average,
    run: u32,
}

impl Watch {
    /// A missing reading breaks the run: it is no evidence of sustained load.
    fn observe(&mut self, reading: Option<f64>, threshold: f64) {
        self.run = match reading {
            Some(reading) => {
                let average = self.average.update(reading, LOAD_ALPHA);
                if reading > threshold && average > threshold {
                    self.run.saturating_add(1)
                } else {
                    0
                }
            }
            None => 0,
        };
    }

    /// The average, once the signal has been above its threshold long enough.
    fn firing(&self) -> Option<f64> {
        self.average.value.filter(|_| self.run >= TRIGGER_AFTER)
    }
}

/// An exponential moving average that starts as a plain mean, so that its first reading does
/// not outweigh the next ones.
#[derive(Debug, Clone, Copy, Default)]
struct Average {
    value: Option<f64>,
    readings: u32,
}

impl Average {
    fn update(&mut self, reading: f64, alpha: f64) -> f64 {
        self.readings = self.readings.saturating_add(1);
        let weight = alpha.max(1.0 / f64::from(self.readings));
        let value = self
            .value
            .map_or(reading, |value| value + weight * (reading - value));
        self.value = Some(value);
        value
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// A reading of a share, clamped to 0..=1; `None` when it is not a number.
fn fraction(value: f64) -> Option<f64> {
    (!value.is_nan()).then(|| value.clamp(0.0, 1.0))
}

/// A PSI average, a percentage; `None` when it is not a number or negative.
fn pressure(value: f64) -> Option<f64> {
    (value >= 0.0).then(|| value.min(100.0))
}

/// `value` if it is a share in (0, 1] (clamped above), else `default`.
fn positive_fraction(value: f64, default: f64) -> f64 {
    if value > 0.0 { value.min(1.0) } else { default }
}

#[cfg(test)]
mod tests;
