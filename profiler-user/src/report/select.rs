//! Which profiles and samples a report covers. A merged report of a directory reads its interval
//! files of the value asked for (`cpu-*` for CPU time and samples, `offcpu-*` for off-CPU time
//! and switches), which cover the recording once (incident and trace files repeat samples that
//! interval files hold); a directory without such interval files has all its profiles read
//! (and those without the value are left out by the report). `--trace` reads
//! the trace's own file when there is one (it outlives the trace's first interval files), else
//! the samples labelled with it. `--since` keeps profiles whose window ends in the last
//! DURATION, `--pid` the samples of those processes.

use std::{io, path::Path, time::SystemTime};

use super::{
    files::{self, ProfileFile, ProfileKind, ReadError, TRACES_DIR},
    stacks::{StackSample, Stacks, ValueKind},
};

/// What a report keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only profiles whose window ends at or after this time.
    pub since: Option<SystemTime>,
    /// Only the samples of this trace.
    pub trace: Option<String>,
    /// Only the samples of these processes (empty: all).
    pub pids: Vec<u32>,
}

/// One profile read, with the samples the selection keeps.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub file: ProfileFile,
    pub stacks: Stacks,
}

impl Selection {
    pub fn keeps_sample(&self, sample: &StackSample) -> bool {
        let pid_ok = self.pids.is_empty()
            || sample
                .thread
                .pid
                .is_some_and(|pid| self.pids.iter().any(|&p| i64::from(p) == pid));
        let trace_ok = self
            .trace
            .as_deref()
            .is_none_or(|trace| sample.trace_id.as_deref() == Some(trace));
        pid_ok && trace_ok
    }

    /// Whether a profile whose window ends at `end` is in.
    pub fn keeps_window(&self, end: SystemTime) -> bool {
        self.since.is_none_or(|since| end >= since)
    }

    /// `trace 4bf9…, pid 12, 13, since 2026-01-01 12:00:00 UTC`; empty when it keeps all.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(trace) = &self.trace {
            parts.push(format!("trace {trace}"));
        }
        if !self.pids.is_empty() {
            let pids: Vec<String> = self.pids.iter().map(u32::to_string).collect();
            parts.push(format!("pid {}", pids.join(", ")));
        }
        if let Some(since) = self.since {
            parts.push(format!("since {}", super::utc(since)));
        }
        parts.join(", ")
    }

    /// Reads `file` and keeps what the selection takes (nothing when its window is out).
    pub fn load(&self, file: &ProfileFile) -> Result<Loaded, ReadError> {
        let profile = files::read(&file.path)?;
        let mut stacks = Stacks::from_profile(&profile);
        let end = stacks.meta.end().unwrap_or(file.modified);
        if self.keeps_window(end) {
            stacks.samples.retain(|s| self.keeps_sample(s));
        } else {
            stacks.samples.clear();
        }
        Ok(Loaded {
            file: file.clone(),
            stacks,
        })
    }
}

/// The kind of interval file that holds `value`: `cpu-*` or `offcpu-*`.
pub fn interval_kind(value: ValueKind) -> ProfileKind {
    if value.is_off_cpu() {
        ProfileKind::OffCpu
    } else {
        ProfileKind::Interval
    }
}

/// The profiles a merged report of `value` over `path` (a directory, or one profile) reads.
pub fn merged_files(
    path: &Path,
    selection: &Selection,
    value: ValueKind,
) -> io::Result<Vec<ProfileFile>> {
    if !path.is_dir() {
        return Ok(vec![single(path)?]);
    }
    let all = files::list(path)?;
    if let Some(trace) = &selection.trace {
        let name = format!("{TRACES_DIR}/{trace}.pb.gz");
        if let Some(file) = all.iter().find(|f| f.name == name) {
            return Ok(vec![file.clone()]);
        }
    }
    let kind = interval_kind(value);
    let intervals: Vec<ProfileFile> = all.iter().filter(|f| f.kind == kind).cloned().collect();
    Ok(if intervals.is_empty() { all } else { intervals })
}

/// The profiles `--each` reports on: every one of the directory, or the one named.
pub fn each_files(path: &Path) -> io::Result<Vec<ProfileFile>> {
    if path.is_dir() {
        files::list(path)
    } else {
        Ok(vec![single(path)?])
    }
}

/// A profile named on the command line.
fn single(path: &Path) -> io::Result<ProfileFile> {
    let meta = std::fs::metadata(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let in_traces = path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|dir| dir == TRACES_DIR);
    Ok(ProfileFile {
        kind: ProfileKind::of(&name, in_traces),
        name,
        path: path.to_owned(),
        size: meta.len(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::profile::ProfileWriter;
    use crate::report::stacks::tests::{labels, off_cpu_profile, profile, traced};

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn directory(with_trace_file: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let writer = ProfileWriter::new(dir.path());
        let p = profile(&[
            ("main;a", labels(1, 1), 1),
            ("main;b", traced(2, 2, TRACE), 2),
        ]);
        writer
            .write_named("cpu-20260101T000000Z.pb.gz", &p)
            .unwrap();
        writer
            .write_named("cpu-20260101T000010Z.pb.gz", &p)
            .unwrap();
        writer
            .write_named("incident-20260101T000005Z.pb.gz", &p)
            .unwrap();
        writer
            .write_named(
                "offcpu-20260101T000000Z.pb.gz",
                &off_cpu_profile(&[("main;poll", traced(2, 2, TRACE), 4)]),
            )
            .unwrap();
        if with_trace_file {
            ProfileWriter::new(dir.path().join("traces"))
                .write_named(&format!("{TRACE}.pb.gz"), &p)
                .unwrap();
        }
        dir
    }

    fn names(files: &[ProfileFile]) -> Vec<&str> {
        files.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn a_merged_report_reads_interval_files_or_the_trace_file() {
        let dir = directory(true);
        let all = Selection::default();
        assert_eq!(
            names(&merged_files(dir.path(), &all, ValueKind::Cpu).unwrap()),
            ["cpu-20260101T000000Z.pb.gz", "cpu-20260101T000010Z.pb.gz"]
        );
        let trace = Selection {
            trace: Some(TRACE.into()),
            ..Selection::default()
        };
        assert_eq!(
            names(&merged_files(dir.path(), &trace, ValueKind::Cpu).unwrap()),
            [format!("traces/{TRACE}.pb.gz")]
        );
        let other = Selection {
            trace: Some("ab".repeat(16)),
            ..Selection::default()
        };
        assert_eq!(
            merged_files(dir.path(), &other, ValueKind::Cpu)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(each_files(dir.path()).unwrap().len(), 5);
        let off = Selection::default();
        assert_eq!(
            names(&merged_files(dir.path(), &off, ValueKind::OffCpu).unwrap()),
            ["offcpu-20260101T000000Z.pb.gz"]
        );
        assert_eq!(
            names(&merged_files(dir.path(), &off, ValueKind::Switches).unwrap()),
            ["offcpu-20260101T000000Z.pb.gz"]
        );
        // A trace's file carries off-CPU time too when the recording had it.
        assert_eq!(
            names(&merged_files(dir.path(), &trace, ValueKind::OffCpu).unwrap()),
            [format!("traces/{TRACE}.pb.gz")]
        );
        let one = dir.path().join("traces").join(format!("{TRACE}.pb.gz"));
        let single = merged_files(&one, &all, ValueKind::OffCpu).unwrap();
        assert_eq!(single[0].kind, ProfileKind::Trace);
    }

    #[test]
    fn filters_samples_by_trace_pid_and_window() {
        let dir = directory(false);
        let files = merged_files(dir.path(), &Selection::default(), ValueKind::Cpu).unwrap();
        let count = |selection: &Selection| -> usize {
            files
                .iter()
                .map(|f| selection.load(f).unwrap().stacks.samples.len())
                .sum()
        };
        assert_eq!(count(&Selection::default()), 4);
        let trace = Selection {
            trace: Some(TRACE.into()),
            ..Selection::default()
        };
        assert_eq!(count(&trace), 2);
        let pid = Selection {
            pids: vec![1],
            ..Selection::default()
        };
        assert_eq!(count(&pid), 2);
        // The test profile covers 10 s from 2026-01-01T00:00:00Z.
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let late = Selection {
            since: Some(start + Duration::from_secs(11)),
            ..Selection::default()
        };
        assert_eq!(count(&late), 0);
        let early = Selection {
            since: Some(start + Duration::from_secs(9)),
            ..Selection::default()
        };
        assert_eq!(count(&early), 4);
        assert_eq!(
            Selection {
                trace: Some("ab".into()),
                pids: vec![1, 2],
                since: Some(start),
            }
            .describe(),
            "trace ab, pid 1, 2, since 2026-01-01 00:00:00 UTC"
        );
    }
}
