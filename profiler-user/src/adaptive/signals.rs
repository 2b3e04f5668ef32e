//! Host load and the profiler's own cost, read once a second through `procfs`.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use procfs::{Current, CurrentSI, KernelStats, Meminfo};

use super::controller::LoadSample;

/// Busy and total CPU ticks of the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CpuTicks {
    busy: u64,
    total: u64,
}

/// Reads host CPU utilization from `/proc/stat` deltas, memory in use from `/proc/meminfo`
/// (`MemAvailable`), and pressure from `/proc/pressure/{cpu,memory}` when the kernel has PSI.
pub struct LoadReader {
    last: Option<CpuTicks>,
}

impl Default for LoadReader {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadReader {
    pub fn new() -> Self {
        Self { last: cpu_ticks() }
    }

    /// The load since the previous call; `None` when `/proc` cannot be read.
    pub fn sample(&mut self) -> Option<LoadSample> {
        let now = cpu_ticks()?;
        let cpu = self
            .last
            .replace(now)
            .map_or(0.0, |last| utilization(last, now));
        let memory = memory_in_use()?;
        Some(LoadSample {
            cpu,
            memory,
            cpu_pressure: procfs::CpuPressure::current()
                .ok()
                .map(|p| f64::from(p.some.avg10)),
            memory_pressure: procfs::MemoryPressure::current()
                .ok()
                .map(|p| f64::from(p.some.avg10)),
        })
    }
}

fn cpu_ticks() -> Option<CpuTicks> {
    let total = KernelStats::current().ok()?.total;
    let idle = total.idle + total.iowait.unwrap_or(0);
    let all = total.user
        + total.nice
        + total.system
        + idle
        + total.irq.unwrap_or(0)
        + total.softirq.unwrap_or(0)
        + total.steal.unwrap_or(0);
    Some(CpuTicks {
        busy: all - idle,
        total: all,
    })
}

fn utilization(last: CpuTicks, now: CpuTicks) -> f64 {
    let total = now.total.saturating_sub(last.total);
    if total == 0 {
        return 0.0;
    }
    (now.busy.saturating_sub(last.busy) as f64 / total as f64).clamp(0.0, 1.0)
}

fn memory_in_use() -> Option<f64> {
    let info = Meminfo::current().ok()?;
    let available = info.mem_available.unwrap_or(info.mem_free + info.cached);
    (info.mem_total > 0).then(|| 1.0 - available.min(info.mem_total) as f64 / info.mem_total as f64)
}

/// The sampling program's kernel run time so far (cumulative), as the kernel counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BpfRunTime {
    pub ns: u64,
}

/// The profiler's own cost: its process CPU time plus the BPF program's kernel run time, as a
/// fraction of the host's CPU capacity, over a sliding window. The window spans an interval's
/// worth of readings because the work is bursty by design (symbolization after each drain): a
/// budget is an average, and a per-second reading would punish every drain.
pub struct CostReader {
    cpus: f64,
    window: Duration,
    /// (time, process CPU seconds, BPF run time ns), oldest first.
    readings: VecDeque<(Instant, f64, u64)>,
}

impl CostReader {
    pub fn new(cpus: usize, window: Duration) -> Self {
        Self {
            cpus: cpus.max(1) as f64,
            window,
            readings: VecDeque::new(),
        }
    }

    /// The cost over the window (or since the first reading); `None` until two readings exist.
    pub fn sample(&mut self, bpf: Option<BpfRunTime>) -> Option<f64> {
        let bpf_ns = bpf.unwrap_or_default().ns;
        self.record(Instant::now(), process_cpu_seconds()?, bpf_ns)
    }

    /// Adds a reading of cumulative process CPU seconds and BPF nanoseconds taken at `now`.
    fn record(&mut self, now: Instant, cpu_seconds: f64, bpf_ns: u64) -> Option<f64> {
        self.readings.push_back((now, cpu_seconds, bpf_ns));
        while self
            .readings
            .get(1)
            .is_some_and(|(then, ..)| now.duration_since(*then) >= self.window)
        {
            self.readings.pop_front();
        }
        let (first, last) = (self.readings.front()?, self.readings.back()?);
        let wall = last.0.duration_since(first.0).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let bpf_seconds = last.2.saturating_sub(first.2) as f64 / 1e9;
        let used = (last.1 - first.1).max(0.0) + bpf_seconds;
        Some(used / (self.cpus * wall))
    }
}

/// CPU time of all our threads. `getrusage` rather than `/proc/self/stat`: the latter counts in
/// clock ticks, too coarse for a 1% budget read every second.
pub(crate) fn process_cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilization_is_busy_over_total() {
        let last = CpuTicks {
            busy: 100,
            total: 400,
        };
        let now = CpuTicks {
            busy: 175,
            total: 500,
        };
        assert!((utilization(last, now) - 0.75).abs() < 1e-9);
        assert_eq!(utilization(now, now), 0.0, "no time passed");
    }

    #[test]
    fn reads_this_host() {
        let mut reader = LoadReader::new();
        let load = reader.sample().expect("/proc is readable");
        assert!((0.0..=1.0).contains(&load.cpu));
        assert!(load.memory > 0.0 && load.memory < 1.0, "{}", load.memory);
    }

    #[test]
    fn own_cost_sees_our_spinning() {
        let mut cost = CostReader::new(1, Duration::from_secs(10));
        assert_eq!(cost.sample(None), None, "needs two readings");
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 300 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let fraction = cost.sample(None).expect("second reading");
        // One busy thread on a one-CPU budget: most of the capacity.
        assert!(fraction > 0.5, "{fraction}");
    }

    #[test]
    fn the_window_forgets_old_readings() {
        let mut cost = CostReader::new(2, Duration::from_secs(10));
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(cost.record(at(0), 0.0, 0), None);
        // One busy second (one CPU of two, plus 0.1 s in BPF), then idle seconds.
        assert!((cost.record(at(1), 1.0, 100_000_000).unwrap() - 0.55).abs() < 1e-9);
        for s in 2..=10 {
            cost.record(at(s), 1.0, 100_000_000);
        }
        // Over the 10 s window the busy second is a tenth of the time.
        assert!((cost.record(at(10), 1.0, 100_000_000).unwrap() - 0.055).abs() < 1e-9);
        // Once it leaves the window, nothing is left.
        assert_eq!(cost.record(at(12), 1.0, 100_000_000), Some(0.0));
    }
}
