//! Helpers for the adaptive-sampling tests: serializing them, CPU burners, a recording's
//! interval and incident files with their comments, the rate changes and capture lines of the
//! profiler's log, and a process's own CPU time.

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    sync::{Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};

use crate::*;

/// The profiler's default `--frequency`.
pub const BASELINE_HZ: u64 = 19;
/// The profiler's default `--capture-frequency`.
pub const CAPTURE_HZ: u64 = 99;
/// Prefix of the last comment of every interval file.
pub const END_RATE_COMMENT: &str = "sampling frequency at the end: ";
/// Prefix of the last comment of an incident file that ran its full length.
pub const CAPTURE_END_COMMENT: &str = "capture frequency at the end: ";
/// The last comment of an incident file whose capture the end of recording cut short.
pub const CAPTURE_CUT_SHORT_COMMENT: &str = "capture cut short: recording stopped";
/// The log line of a capture start.
pub const CAPTURE_STARTED_LOG: &str = "incident capture started";
/// The log line of a capture end.
pub const CAPTURE_ENDED_LOG: &str = "incident capture ended";
/// The log line of a written incident file.
pub const INCIDENT_WRITTEN_LOG: &str = "wrote incident capture";

// ---------------------------------------------------------------------------------------------
// Serializing tests that load the host or need it calm

/// Held for a whole test: cargo runs the tests of one file on parallel threads, and one test's
/// CPU burners would start captures in another's recording. A failed test poisons nothing.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Number of online CPUs (what the profiler samples, and what "host capacity" means).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

// ---------------------------------------------------------------------------------------------
// CPU burners

/// One CPU-bound [`HOT_C`] process per CPU, killed and reaped when dropped (also when the test
/// fails).
pub struct Burners {
    fixtures: Vec<Fixture>,
    /// When the last burner had exec'd: the host is fully loaded from here on.
    pub started: SystemTime,
}

impl Burners {
    /// Starts `n` burners that run until dropped.
    pub fn start(n: usize) -> Result<Burners> {
        let mut fixtures = Vec::with_capacity(n);
        for _ in 0..n {
            fixtures.push(Fixture::spawn(HOT_C, &[])?);
        }
        Ok(Burners {
            fixtures,
            started: SystemTime::now(),
        })
    }

    /// Their PIDs.
    pub fn pids(&self) -> Vec<u32> {
        self.fixtures.iter().map(Fixture::pid).collect()
    }

    /// Fails if one of them is gone (the load the test relies on would be missing).
    pub fn ensure_running(&mut self) -> Result<()> {
        for fixture in &mut self.fixtures {
            ensure!(
                fixture.is_running()?,
                "burner {} exited early",
                fixture.pid()
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// What a recording wrote

/// The files of one recording, each decoded and checked well-formed for the rate its comments
/// say was in force at its end.
pub struct AdaptiveOutput {
    /// `cpu-*.pb.gz`, in time order (`time_nanos`, which their names' order matches).
    pub intervals: Vec<Pprof>,
    /// `incident-*.pb.gz`, in time order.
    pub incidents: Vec<Pprof>,
}

impl AdaptiveOutput {
    /// Reads `dir`: fails on any other `.pb.gz` name, a leftover temp file, a file that does
    /// not decode, an interval file whose last comment is not [`END_RATE_COMMENT`], or a file
    /// whose period is not that of its rate at the end.
    pub fn read(dir: &Path) -> Result<AdaptiveOutput> {
        let (mut intervals, mut incidents) = (Vec::new(), Vec::new());
        for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !name.ends_with(".pb.gz") {
                continue;
            }
            if is_profile_file_name(&name) {
                intervals.push(Pprof::read(&path)?);
            } else if incident_file_time(&name).is_some() {
                incidents.push(Pprof::read(&path)?);
            } else {
                bail!("unexpected file name {name:?}");
            }
        }
        let left = leftover_temp_files(dir)?;
        ensure!(left.is_empty(), "temp files left behind: {left:?}");
        for p in &intervals {
            p.check_well_formed(u32::try_from(frequency_at_end(p)?)?)?;
        }
        for p in &incidents {
            // A capture cut short by the end of recording says so instead of naming its rate:
            // its period is then only checked for consistency with itself.
            let hz = if comments(p).last() == Some(&CAPTURE_CUT_SHORT_COMMENT) {
                1_000_000_000 / p.profile.period.max(1) as u64
            } else {
                capture_frequency_at_end(p)?
            };
            p.check_well_formed(u32::try_from(hz)?)?;
        }
        let by_time = |p: &Pprof| (p.profile.time_nanos, p.path.clone());
        intervals.sort_by_key(by_time);
        incidents.sort_by_key(by_time);
        ensure!(
            !intervals.is_empty(),
            "no interval file in {}",
            dir.display()
        );
        Ok(AdaptiveOutput {
            intervals,
            incidents,
        })
    }

    /// Every rate change noted in the interval files, in order.
    pub fn rate_changes(&self) -> Vec<RateChange> {
        self.intervals.iter().flat_map(rate_changes).collect()
    }

    /// Checks that the interval files tell one unbroken story of the rate: the first starts at
    /// `initial_hz`, each starts at the rate the previous one ended with, and within a file each
    /// change starts from the rate the previous change (or the file) left, the last one ending
    /// at the file's rate at the end.
    pub fn check_rate_chain(&self, initial_hz: u64) -> Result<()> {
        let mut hz = initial_hz;
        for p in &self.intervals {
            let name = p.path.display();
            for change in rate_changes(p) {
                ensure!(
                    change.from == hz,
                    "{name}: change {} -> {} Hz while {hz} Hz was in force; comments: {:?}",
                    change.from,
                    change.to,
                    comments(p)
                );
                ensure!(
                    change.from != change.to,
                    "{name}: a change to the same rate"
                );
                hz = change.to;
            }
            let end = frequency_at_end(p)?;
            ensure!(
                end == hz,
                "{name}: says {end} Hz at the end, but its changes left {hz} Hz; comments: {:?}",
                comments(p)
            );
        }
        Ok(())
    }
}

/// The UTC start time of `incident-<%Y%m%dT%H%M%SZ>[_NN].pb.gz`, or `None` for another name.
pub fn incident_file_time(name: &str) -> Option<DateTime<Utc>> {
    let stem = name.strip_prefix("incident-")?.strip_suffix(".pb.gz")?;
    let (stamp, suffix) = match stem.split_once('_') {
        Some((stamp, n)) => (stamp, Some(n)),
        None => (stem, None),
    };
    if suffix.is_some_and(|n| n.len() < 2 || !n.bytes().all(|c| c.is_ascii_digit())) {
        return None;
    }
    let time = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
    (stamp.len() == 16).then(|| time.and_utc())
}

// ---------------------------------------------------------------------------------------------
// Comments

/// One `sampling frequency X Hz -> Y Hz: <reason>` line.
#[derive(Debug, Clone, PartialEq)]
pub struct RateChange {
    pub from: u64,
    pub to: u64,
    pub reason: String,
}

impl RateChange {
    /// Parses a profile comment; `None` for another line.
    pub fn parse(line: &str) -> Option<RateChange> {
        let rest = line.strip_prefix("sampling frequency ")?;
        let (from, rest) = rest.split_once(" Hz -> ")?;
        let (to, reason) = rest.split_once(" Hz: ")?;
        Some(RateChange {
            from: from.parse().ok()?,
            to: to.parse().ok()?,
            reason: reason.to_owned(),
        })
    }
}

/// The profile's comments, in order.
pub fn comments(p: &Pprof) -> Vec<&str> {
    p.profile.comment.iter().map(|&i| p.str(i)).collect()
}

/// The rate changes a file's comments note, in order.
pub fn rate_changes(p: &Pprof) -> Vec<RateChange> {
    comments(p)
        .into_iter()
        .filter_map(RateChange::parse)
        .collect()
}

/// The rate of an interval file's last comment, `sampling frequency at the end: N Hz`.
pub fn frequency_at_end(p: &Pprof) -> Result<u64> {
    last_comment_hz(p, END_RATE_COMMENT)
}

/// The rate of an incident file's last comment, `capture frequency at the end: N Hz`.
pub fn capture_frequency_at_end(p: &Pprof) -> Result<u64> {
    last_comment_hz(p, CAPTURE_END_COMMENT)
}

fn last_comment_hz(p: &Pprof, prefix: &str) -> Result<u64> {
    let all = comments(p);
    let last = all.last().copied().unwrap_or_default();
    last.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(" Hz"))
        .and_then(|hz| hz.parse().ok())
        .with_context(|| {
            format!(
                "{}: last comment is not `{prefix}N Hz`; comments: {all:?}",
                p.path.display()
            )
        })
}

/// The rates in force at some point of an interval file: the one it started with and every
/// one it changed to.
pub fn rates_in_force(p: &Pprof) -> Result<BTreeSet<u64>> {
    let changes = rate_changes(p);
    let mut rates: BTreeSet<u64> = changes.iter().map(|c| c.to).collect();
    rates.insert(match changes.first() {
        Some(first) => first.from,
        None => frequency_at_end(p)?,
    });
    Ok(rates)
}

/// Checks that every sample's `cpu/nanoseconds` is a sum of its `samples/count` periods of
/// rates from `rates`: between count x the shortest and count x the longest period (1 ns of
/// rounding allowed per sample).
pub fn check_sample_weights(p: &Pprof, rates: &BTreeSet<u64>) -> Result<()> {
    let period = |hz: u64| 1_000_000_000 / hz.max(1) as i64;
    let (Some(&fastest), Some(&slowest)) = (rates.last(), rates.first()) else {
        bail!("no rate given");
    };
    let (shortest, longest) = (period(fastest), period(slowest));
    for s in &p.profile.sample {
        let (count, nanos) = (p.count(s), p.value(s, "cpu"));
        ensure!(
            nanos >= count * (shortest - 1) && nanos <= count * (longest + 1),
            "{}: sample of {count} with {nanos} ns, outside {count} x [{shortest}, {longest}] ns \
             (rates {rates:?})",
            p.path.display()
        );
    }
    Ok(())
}

/// Sum of the `samples/count` values of a profile.
pub fn sample_count(p: &Pprof) -> i64 {
    p.profile.sample.iter().map(|s| p.count(s)).sum()
}

/// Sum of the `cpu/nanoseconds` values.
pub fn cpu_nanos(samples: &[(&Pprof, &Sample)]) -> i64 {
    samples.iter().map(|(p, s)| p.value(s, "cpu")).sum()
}

/// A profile's start, from `time_nanos`.
pub fn profile_start(p: &Pprof) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(p.profile.time_nanos)
}

/// A profile's end, `time_nanos + duration_nanos`.
pub fn profile_end(p: &Pprof) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(p.profile.time_nanos + p.profile.duration_nanos)
}

// ---------------------------------------------------------------------------------------------
// The log

/// One line of the profiler's stderr: `<RFC 3339 time> <LEVEL> <target>: <message>`.
#[derive(Debug, Clone)]
pub struct LogLine<'a> {
    pub time: DateTime<Utc>,
    pub level: &'a str,
    /// `<target>: <message> <fields>`.
    pub text: &'a str,
}

impl LogLine<'_> {
    /// The message and its fields, after `<target>: `.
    pub fn message(&self) -> &str {
        self.text.split_once(": ").map_or(self.text, |(_, m)| m)
    }
}

/// The lines of `stderr` that are tracing events (with a timestamp).
pub fn log_lines(stderr: &str) -> Vec<LogLine<'_>> {
    stderr
        .lines()
        .filter_map(|line| {
            let (time, rest) = line.split_once(' ')?;
            let time = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
            let rest = rest.trim_start();
            let (level, text) = rest.split_once(' ')?;
            Some(LogLine {
                time,
                level,
                text: text.trim_start(),
            })
        })
        .collect()
}

/// The log lines containing `needle`.
pub fn log_lines_with<'a>(stderr: &'a str, needle: &str) -> Vec<LogLine<'a>> {
    log_lines(stderr)
        .into_iter()
        .filter(|l| l.text.contains(needle))
        .collect()
}

/// The log lines whose message starts with `prefix`: `incident capture started` is one, the
/// rate change `sampling frequency 19 Hz -> 99 Hz: incident capture started` is not.
pub fn log_messages<'a>(stderr: &'a str, prefix: &str) -> Vec<LogLine<'a>> {
    log_lines(stderr)
        .into_iter()
        .filter(|l| l.message().starts_with(prefix))
        .collect()
}

/// When the recording started sampling (its `recording the ...` line).
pub fn log_recording_started(stderr: &str) -> Result<DateTime<Utc>> {
    log_lines(stderr)
        .into_iter()
        .find(|l| l.text.contains("profiler::recorder: recording the "))
        .map(|l| l.time)
        .with_context(|| format!("no `recording the ...` line; stderr:\n{stderr}"))
}

/// The rate changes the log reports (`sampling frequency X Hz -> Y Hz: ... from=X to=Y`), with
/// their times, in order.
pub fn log_rate_changes(stderr: &str) -> Vec<(DateTime<Utc>, RateChange)> {
    log_lines(stderr)
        .into_iter()
        .filter_map(|l| {
            let change = RateChange::parse(l.message())?;
            // The structured fields repeat the numbers: they must agree.
            let fields = format!(" from={} to={}", change.from, change.to);
            l.text.ends_with(&fields).then_some((l.time, change))
        })
        .collect()
}

/// `a - b` in seconds (negative when `a` is earlier).
pub fn seconds_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (a - b).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// A [`SystemTime`] as a chrono time.
pub fn utc(time: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(time)
}

// ---------------------------------------------------------------------------------------------
// Host CPU utilization, measured by the test itself

/// A reading of the host's CPU time counters (`cpu` line of `/proc/stat`), in ticks.
#[derive(Debug, Clone, Copy)]
pub struct HostCpu {
    busy: u64,
    total: u64,
}

impl HostCpu {
    pub fn read() -> Result<HostCpu> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("no `cpu` line in /proc/stat")?;
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {line:?}"))?;
        ensure!(ticks.len() == 8, "short `cpu` line {line:?}");
        let total: u64 = ticks.iter().sum();
        Ok(HostCpu {
            busy: total - ticks[3] - ticks[4],
            total,
        })
    }

    /// The share of the host's CPU time that was busy between `self` and `later` (0..=1).
    pub fn utilization_until(&self, later: &HostCpu) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        later.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

// ---------------------------------------------------------------------------------------------
// A process's own CPU time

/// `utime + stime` of `pid` from `/proc/<pid>/stat`, in nanoseconds. Works on a zombie too
/// (until it is reaped), so the whole life of an exited child can be read.
pub fn process_cpu_nanos(pid: u32) -> Result<i64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no `)` in stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<i64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {n} of /proc/{pid}/stat: {stat:?}"))
    };
    let ticks = field(14)? + field(15)?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(per_second > 0, "sysconf(_SC_CLK_TCK) = {per_second}");
    Ok(ticks * (1_000_000_000 / per_second as i64))
}

/// Waits until our child `pid` has exited, without reaping it: it stays a zombie whose
/// `/proc/<pid>/stat` still holds its CPU time (the caller reaps it afterwards).
pub fn wait_for_exit_unreaped(pid: u32, timeout: Duration) -> Result<()> {
    let id = libc::id_t::try_from(pid)?;
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: waitid fills the siginfo it is given; WNOWAIT leaves the child waitable.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                id,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("waitid");
        }
        // SAFETY: after a successful waitid, si_pid is 0 or the child's.
        if unsafe { info.si_pid() } != 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "process {pid} still running after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    //! The parsers themselves (no root needed).

    use super::*;

    #[test]
    fn rate_change_lines() {
        let change = RateChange::parse(
            "sampling frequency 99 Hz -> 49 Hz: profiler cost 1.426% of the host, over the \
             budget of 1.000%",
        )
        .expect("a rate change");
        assert_eq!((change.from, change.to), (99, 49));
        assert!(change.reason.starts_with("profiler cost"));
        assert_eq!(
            RateChange::parse("sampling frequency at the end: 19 Hz"),
            None
        );
    }

    #[test]
    fn log_lines_and_rate_changes() {
        let stderr = "\
2026-11-25T12:52:54.191732Z  WARN profiler::recorder: incident capture started: trigger: x
2026-11-25T12:52:54.203073Z  INFO profiler::recorder: sampling frequency 19 Hz -> 99 Hz: \
incident capture started from=19 to=99
not a log line
";
        let lines = log_lines(stderr);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].level, "WARN");
        assert!(lines[0].text.starts_with("profiler::recorder: incident"));
        assert_eq!(log_lines_with(stderr, CAPTURE_STARTED_LOG).len(), 2);
        let starts = log_messages(stderr, CAPTURE_STARTED_LOG);
        assert_eq!(starts.len(), 1);
        assert!(starts[0].message().ends_with("trigger: x"));
        let changes = log_rate_changes(stderr);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].1.from, changes[0].1.to), (19, 99));
        assert!((seconds_between(lines[1].time, lines[0].time) - 0.011341).abs() < 1e-6);
    }

    #[test]
    fn incident_file_names() {
        let time = incident_file_time("incident-20261125T125254Z.pb.gz").expect("a name");
        assert_eq!(time.to_rfc3339(), "2026-11-25T12:52:54+00:00");
        assert!(incident_file_time("incident-20261125T125254Z_02.pb.gz").is_some());
        assert!(incident_file_time("incident-20261125T125254Z_.pb.gz").is_none());
        assert!(incident_file_time("cpu-20261125T125254Z.pb.gz").is_none());
        assert!(incident_file_time("incident-20261125-125254.pb.gz").is_none());
    }

    #[test]
    fn own_cpu_time_is_read() {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(100) {
            std::hint::black_box(start.elapsed());
        }
        let nanos = process_cpu_nanos(std::process::id()).expect("our own stat");
        assert!(nanos > 0, "{nanos}");
    }
}
