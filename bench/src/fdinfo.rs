//! Run time and run count of the BPF programs a process holds, from `/proc/<pid>/fdinfo`: the
//! kernel prints them there for every program while `kernel.bpf_stats_enabled` is 1. Reading
//! the holder's descriptors tells our programs from bpftrace's without guessing by name.

use std::{collections::BTreeMap, fs, path::PathBuf};

use anyhow::{Context, Result};

/// `BPF_PROG_TYPE_PERF_EVENT`: the sampling programs (ours and bpftrace's `profile` probe).
pub const PROG_TYPE_PERF_EVENT: u32 = 7;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub id: u32,
    pub prog_type: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Totals over several programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl RunTotals {
    /// Nanoseconds per run between `earlier` and `self`; `None` without runs.
    pub fn ns_per_run_since(self, earlier: RunTotals) -> Option<f64> {
        let runs = self.run_cnt.checked_sub(earlier.run_cnt)?;
        let time = self.run_time_ns.checked_sub(earlier.run_time_ns)?;
        (runs > 0).then(|| time as f64 / runs as f64)
    }
}

/// Parses one program's fdinfo; `None` when the text is not a BPF program's.
pub fn parse(text: &str) -> Option<ProgStats> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(':') {
            fields.insert(key.trim(), value.trim());
        }
    }
    let number = |key: &str| fields.get(key).and_then(|v| v.parse::<u64>().ok());
    Some(ProgStats {
        id: u32::try_from(number("prog_id")?).ok()?,
        prog_type: u32::try_from(number("prog_type")?).ok()?,
        // Absent on kernels before 5.1 or while statistics are off: zero runs.
        run_time_ns: number("run_time_ns").unwrap_or(0),
        run_cnt: number("run_cnt").unwrap_or(0),
    })
}

/// The programs of `prog_type` that process `pid` holds a descriptor of, one entry per program.
pub fn programs_of(pid: u32, prog_type: u32) -> Result<Vec<ProgStats>> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let fds = fds_of_kind(pid, "anon_inode:bpf-prog")
        .with_context(|| format!("cannot list {}", dir.display()))?;
    let mut found: BTreeMap<u32, ProgStats> = BTreeMap::new();
    for fd in fds {
        // The descriptor may close between the listing and the read.
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        if let Some(stats) = parse(&text).filter(|s| s.prog_type == prog_type) {
            found.insert(stats.id, stats);
        }
    }
    Ok(found.into_values().collect())
}

/// The descriptor numbers of `pid` whose link reads `kind` (an anonymous inode's name).
fn fds_of_kind(pid: u32, kind: &str) -> std::io::Result<Vec<String>> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?
        .flatten()
        .filter(|entry| fs::read_link(entry.path()).is_ok_and(|target| target.as_os_str() == kind))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect())
}

/// Run totals over the sampling programs of `pid`.
pub fn sampling_totals(pid: u32) -> Result<RunTotals> {
    let programs = programs_of(pid, PROG_TYPE_PERF_EVENT)?;
    Ok(programs
        .iter()
        .fold(RunTotals::default(), |acc, p| RunTotals {
            run_time_ns: acc.run_time_ns + p.run_time_ns,
            run_cnt: acc.run_cnt + p.run_cnt,
        }))
}

/// Number of perf event descriptors `pid` holds.
pub fn perf_event_fds(pid: u32) -> usize {
    fds_of_kind(pid, "anon_inode:[perf_event]").map_or(0, |fds| fds.len())
}

/// Turns on `kernel.bpf_stats_enabled` and restores the previous value when dropped.
pub struct StatsEnabled {
    previous: String,
}

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl StatsEnabled {
    pub fn new() -> Result<Self> {
        let previous = fs::read_to_string(STATS_SYSCTL).with_context(|| {
            format!("cannot read {STATS_SYSCTL}: this kernel lacks BPF statistics")
        })?;
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("cannot write {STATS_SYSCTL}"))?;
        Ok(Self {
            previous: previous.trim().to_owned(),
        })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = fs::write(STATS_SYSCTL, &self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FDINFO: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2071\nprog_type:\t7\n\
        prog_jited:\t1\nprog_tag:\t4d8e5e6c3b2a1f00\nmemlock:\t4096\nprog_id:\t104\n\
        run_time_ns:\t123456\nrun_cnt:\t40\nrecursion_misses:\t0\nverified_insns:\t512\n";

    #[test]
    fn parses_program_fdinfo() {
        assert_eq!(
            parse(FDINFO),
            Some(ProgStats {
                id: 104,
                prog_type: 7,
                run_time_ns: 123_456,
                run_cnt: 40,
            })
        );
    }

    #[test]
    fn statistics_default_to_zero_when_off() {
        let text = "prog_type:\t7\nprog_id:\t9\n";
        assert_eq!(
            parse(text).map(|p| (p.run_time_ns, p.run_cnt)),
            Some((0, 0))
        );
    }

    #[test]
    fn other_descriptors_are_not_programs() {
        assert_eq!(
            parse("pos:\t0\nflags:\t02\nmap_type:\t1\nmap_id:\t3\n"),
            None
        );
        assert_eq!(parse(""), None);
    }

    #[test]
    fn ns_per_run_between_two_readings() {
        let a = RunTotals {
            run_time_ns: 1_000,
            run_cnt: 10,
        };
        let b = RunTotals {
            run_time_ns: 5_000,
            run_cnt: 30,
        };
        assert_eq!(b.ns_per_run_since(a), Some(200.0));
        assert_eq!(a.ns_per_run_since(a), None);
        assert_eq!(a.ns_per_run_since(b), None);
    }

    #[test]
    fn own_process_holds_no_programs() {
        let pid = std::process::id();
        assert!(programs_of(pid, PROG_TYPE_PERF_EVENT).unwrap().is_empty());
        assert_eq!(perf_event_fds(pid), 0);
    }
}
