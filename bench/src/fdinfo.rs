//! Run time and run count of the BPF programs a process holds, from `/proc/<pid>/fdinfo`: the
//! kernel prints them there for every program while `kernel.bpf_stats_enabled` is 1. Reading
//! the holder's descriptors tells our programs from bpftrace's without guessing by name.

use std::{collections::BTreeMap, fs, path::PathBuf};

use anyhow::{Context, Result};

/// `BPF_PROG_TYPE_PERF_EVENT`: the sampling programs (ours and bpftrace's `profile` probe).
pub const PROG_TYPE_PERF_EVENT: u32 = 7;
/// `BPF_PROG_TYPE_TRACEPOINT`: bpftrace's `tracepoint:` probes.
pub const PROG_TYPE_TRACEPOINT: u32 = 5;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT`: our process programs, `off_cpu_switch` and the off-CPU
/// record's tail calls.
pub const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

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
    /// The runs between `earlier` and `self` (none if the counters went back).
    pub fn since(self, earlier: RunTotals) -> RunTotals {
        RunTotals {
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(earlier.run_cnt),
        }
    }

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
    Ok(all_programs_of(pid)?
        .into_iter()
        .filter(|s| s.prog_type == prog_type)
        .collect())
}

/// Every program that process `pid` holds a descriptor of, one entry per program.
pub fn all_programs_of(pid: u32) -> Result<Vec<ProgStats>> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let fds = fds_of_kind(pid, "anon_inode:bpf-prog")
        .with_context(|| format!("cannot list {}", dir.display()))?;
    let mut found: BTreeMap<u32, ProgStats> = BTreeMap::new();
    for fd in fds {
        // The descriptor may close between the listing and the read.
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        if let Some(stats) = parse(&text) {
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

/// Run totals over the programs of `programs` whose ID is in `ids`.
pub fn totals_of(programs: &[ProgStats], ids: &[u32]) -> RunTotals {
    programs
        .iter()
        .filter(|p| ids.contains(&p.id))
        .fold(RunTotals::default(), |acc, p| RunTotals {
            run_time_ns: acc.run_time_ns + p.run_time_ns,
            run_cnt: acc.run_cnt + p.run_cnt,
        })
}

/// The names of the loaded programs with these IDs (fdinfo does not show them: the kernel's
/// `bpf_prog_info` does, cut to [`KERNEL_NAME_LEN`] bytes). Needs root.
pub fn program_names(ids: &[u32]) -> Result<BTreeMap<u32, String>> {
    let mut names = BTreeMap::new();
    let mut failed = None;
    for info in aya::programs::loaded_programs() {
        // A program may go between the listing and the read.
        let info = match info {
            Ok(info) => info,
            Err(err) => {
                failed.get_or_insert(err);
                continue;
            }
        };
        if ids.contains(&info.id()) {
            names.insert(info.id(), String::from_utf8_lossy(info.name()).into_owned());
        }
    }
    match failed {
        Some(err) if names.len() < ids.len() => {
            Err(err).context("cannot list the loaded BPF programs")
        }
        _ => Ok(names),
    }
}

/// The longest program name the kernel keeps (`BPF_OBJ_NAME_LEN` less its terminating NUL).
pub const KERNEL_NAME_LEN: usize = 15;

/// Whether `kernel`, a name as the kernel keeps it, is the program named `full` in its object:
/// equal, or `full` cut to [`KERNEL_NAME_LEN`] bytes.
pub fn is_named(kernel: &str, full: &str) -> bool {
    if kernel.len() >= KERNEL_NAME_LEN {
        !kernel.is_empty() && full.starts_with(kernel)
    } else {
        kernel == full
    }
}

/// Number of perf event descriptors `pid` holds.
pub fn perf_event_fds(pid: u32) -> usize {
    fds_of_kind(pid, "anon_inode:[perf_event]").map_or(0, |fds| fds.len())
}

/// Number of BPF link descriptors `pid` holds.
pub fn link_fds(pid: u32) -> usize {
    fds_of_kind(pid, "anon_inode:bpf_link").map_or(0, |fds| fds.len())
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
        assert_eq!(
            b.since(a),
            RunTotals {
                run_time_ns: 4_000,
                run_cnt: 20
            }
        );
        assert_eq!(a.since(b), RunTotals::default());
    }

    #[test]
    fn totals_add_up_the_chosen_programs() {
        let program = |id, run_time_ns, run_cnt| ProgStats {
            id,
            prog_type: PROG_TYPE_RAW_TRACEPOINT,
            run_time_ns,
            run_cnt,
        };
        let held = [program(1, 100, 2), program(2, 50, 1), program(3, 7, 7)];
        assert_eq!(
            totals_of(&held, &[1, 3, 9]),
            RunTotals {
                run_time_ns: 107,
                run_cnt: 9
            }
        );
        assert_eq!(totals_of(&held, &[]), RunTotals::default());
    }

    #[test]
    fn kernel_names_are_cut_to_fifteen_bytes() {
        assert!(is_named("off_cpu_switch", "off_cpu_switch"));
        assert!(is_named("unwind_user_off", "unwind_user_off_cpu"));
        assert!(is_named("go_label_slot_o", "go_label_slot_off_cpu"));
        // A short name is whole: `unwind_user` is the sampling tail call, not the off-CPU one.
        assert!(!is_named("unwind_user", "unwind_user_off_cpu"));
        assert!(!is_named("", "sample"));
        assert!(!is_named("off_cpu_return", "off_cpu_switch"));
    }

    #[test]
    fn own_process_holds_no_programs() {
        let pid = std::process::id();
        assert!(programs_of(pid, PROG_TYPE_PERF_EVENT).unwrap().is_empty());
        assert_eq!(perf_event_fds(pid), 0);
        assert_eq!(link_fds(pid), 0);
    }
}
