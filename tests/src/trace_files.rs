//! The per-trace output: `<out>/traces/<trace_id>.pb.gz` and `<out>/traces/index.jsonl`.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context, Result, anyhow, ensure};
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::Value;

use crate::*;

/// Name of the index in the traces directory.
pub const TRACE_INDEX: &str = "index.jsonl";

/// `<out>/traces`.
pub fn traces_dir(out: &Path) -> PathBuf {
    out.join("traces")
}

/// `<out>/traces/<trace_id>.pb.gz`.
pub fn trace_file_path(out: &Path, trace_id: &str) -> PathBuf {
    traces_dir(out).join(format!("{trace_id}.pb.gz"))
}

/// The trace IDs of the trace files in `<out>/traces` (none without the directory). Fails on
/// anything else there but the index: a badly named file, or a temp file left behind.
pub fn trace_file_ids(out: &Path) -> Result<BTreeSet<String>> {
    let dir = traces_dir(out);
    let mut ids = BTreeSet::new();
    if !dir.exists() {
        return Ok(ids);
    }
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name == TRACE_INDEX {
            continue;
        }
        let id = name
            .strip_suffix(".pb.gz")
            .filter(|id| is_hex_id(id, 32))
            .ok_or_else(|| anyhow!("unexpected file {name:?} in {}", dir.display()))?;
        ids.insert(id.to_owned());
    }
    Ok(ids)
}

/// The trace file of `trace_id`, decoded.
pub fn read_trace_file(out: &Path, trace_id: &str) -> Result<Pprof> {
    let path = trace_file_path(out, trace_id);
    ensure!(path.is_file(), "no trace file {}", path.display());
    Pprof::read(&path)
}

/// Checks the trace file of `expect.trace_id`: well formed; every sample of `pid` and of the
/// trace, with its span and labels; `expect.function` the leaf of at least half (by count) and no
/// sample in another traced function of `all`; and exactly the samples the interval files
/// labelled with the trace (`interval_samples`: every interval sample of the recording).
pub fn check_trace_file(
    out: &Path,
    expect: &TracedFn,
    all: &[TracedFn],
    pid: u32,
    interval_samples: &[(&Pprof, &Sample)],
) -> Result<Pprof> {
    let file = read_trace_file(out, expect.trace_id)?;
    file.check_well_formed(TEST_FREQUENCY)?;
    let name = file.path.display();
    for s in &file.profile.sample {
        let trace = trace_id_of(&file, s);
        ensure!(
            trace == Some(expect.trace_id),
            "{name}: sample with trace_id {trace:?}"
        );
        let got = file.label_num(s, "pid");
        ensure!(got == Some(i64::from(pid)), "{name}: sample of pid {got:?}");
        check_trace_sample(&file, s, expect)?;
    }
    let samples: Vec<(&Pprof, &Sample)> = file.profile.sample.iter().map(|s| (&file, s)).collect();
    let total = total_count(&samples);
    let hot = total_count(&leaf_samples(&samples, expect.function));
    ensure!(
        total > 0 && hot * 2 >= total,
        "{name}: {} is the leaf in {hot} of {total} samples; top stacks:\n{}",
        expect.function.text(),
        describe_top_stacks(&samples, 5)
    );
    for other in all.iter().filter(|o| o.trace_id != expect.trace_id) {
        let n = total_count(&leaf_samples(&samples, other.function));
        ensure!(
            n == 0,
            "{name}: {n} samples in {} (trace {})",
            other.function.text(),
            other.trace_id
        );
    }
    let in_intervals = count_where(interval_samples, |p, s| {
        trace_id_of(p, s) == Some(expect.trace_id)
    });
    ensure!(
        total == in_intervals,
        "{name} holds {total} samples, the interval files {in_intervals} of trace {}",
        expect.trace_id
    );
    Ok(file)
}

// ---------------------------------------------------------------------------------------------
// index.jsonl

/// One line of `index.jsonl`.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// Line number (from 1), for messages.
    pub line: usize,
    pub trace_id: String,
    pub file: String,
    pub first_sample_time: DateTime<FixedOffset>,
    pub last_sample_time: DateTime<FixedOffset>,
    pub sample_count: i64,
    pub pids: Vec<i64>,
    pub service_names: Vec<String>,
    pub top_function: String,
    /// The trace's CPU and off-CPU nanoseconds (lines of older versions lack them).
    pub cpu_nanoseconds: Option<i64>,
    pub off_cpu_nanoseconds: Option<i64>,
}

impl IndexEntry {
    /// Parses one line, requiring every field with its type; times RFC 3339 in UTC.
    pub fn parse(line: usize, text: &str) -> Result<IndexEntry> {
        let value: Value = serde_json::from_str(text)
            .with_context(|| format!("{TRACE_INDEX} line {line} is not JSON: {text}"))?;
        let field = |key: &str| {
            value
                .get(key)
                .ok_or_else(|| anyhow!("{TRACE_INDEX} line {line} lacks {key:?}: {text}"))
        };
        let string = |key: &str| -> Result<String> {
            field(key)?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("{TRACE_INDEX} line {line}: {key} is not a string"))
        };
        let time = |key: &str| -> Result<DateTime<FixedOffset>> {
            let text = string(key)?;
            let time = DateTime::parse_from_rfc3339(&text)
                .with_context(|| format!("{TRACE_INDEX} line {line}: {key} {text:?}"))?;
            ensure!(
                time.offset().local_minus_utc() == 0,
                "{TRACE_INDEX} line {line}: {key} {text:?} is not UTC"
            );
            Ok(time)
        };
        let array = |key: &str| -> Result<&Vec<Value>> {
            field(key)?
                .as_array()
                .ok_or_else(|| anyhow!("{TRACE_INDEX} line {line}: {key} is not an array"))
        };
        let pids = array("pids")?
            .iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| anyhow!("pid {v} is not an integer"))
            })
            .collect::<Result<_>>()?;
        let service_names = array("service_names")?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("service name {v} is not a string"))
            })
            .collect::<Result<_>>()?;
        let sample_count = field("sample_count")?
            .as_i64()
            .ok_or_else(|| anyhow!("{TRACE_INDEX} line {line}: sample_count not an integer"))?;
        Ok(IndexEntry {
            line,
            trace_id: string("trace_id")?,
            file: string("file")?,
            first_sample_time: time("first_sample_time")?,
            last_sample_time: time("last_sample_time")?,
            sample_count,
            pids,
            service_names,
            top_function: string("top_function")?,
            cpu_nanoseconds: value.get("cpu_nanoseconds").and_then(Value::as_i64),
            off_cpu_nanoseconds: value.get("off_cpu_nanoseconds").and_then(Value::as_i64),
        })
    }
}

/// Every line of `<out>/traces/index.jsonl` (none without the file), each parsed and well formed:
/// a 32-hex trace ID, `file` = `<trace_id>.pb.gz`, first sample time <= last.
pub fn read_index(out: &Path) -> Result<Vec<IndexEntry>> {
    let path = traces_dir(out).join(TRACE_INDEX);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a partial line",
        path.display()
    );
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = IndexEntry::parse(i + 1, line)?;
        let l = entry.line;
        ensure!(
            is_hex_id(&entry.trace_id, 32),
            "{TRACE_INDEX} line {l}: trace_id {:?}",
            entry.trace_id
        );
        ensure!(
            entry.file == format!("{}.pb.gz", entry.trace_id),
            "{TRACE_INDEX} line {l}: file {:?} for trace {}",
            entry.file,
            entry.trace_id
        );
        ensure!(
            entry.first_sample_time <= entry.last_sample_time,
            "{TRACE_INDEX} line {l}: first sample at {} after the last at {}",
            entry.first_sample_time,
            entry.last_sample_time
        );
        entries.push(entry);
    }
    Ok(entries)
}

/// What the index must say about one trace.
pub struct IndexExpectation<'a> {
    pub trace: &'a TracedFn<'a>,
    pub pid: u32,
    /// The `service_names` the trace must list; empty: it must list none.
    pub service_names: &'a [&'a str],
    /// Wall-clock bounds of the recording: sample times must fall in them (with slack).
    pub recorded: (SystemTime, SystemTime),
}

/// Checks the lines of one trace: at least one; sample counts positive and never falling; sample
/// times inside the recording; and the last line, written with the final trace file, agrees with
/// it: same sample count, `pid` among the pids, the expected service names, and the hot function
/// as `top_function`.
pub fn check_index(
    entries: &[IndexEntry],
    want: &IndexExpectation,
    trace_file: &Pprof,
) -> Result<()> {
    let trace = want.trace.trace_id;
    let lines: Vec<&IndexEntry> = entries.iter().filter(|e| e.trace_id == trace).collect();
    let last = lines
        .last()
        .ok_or_else(|| anyhow!("{TRACE_INDEX} has no line for trace {trace}"))?;
    let slack = chrono::Duration::minutes(5);
    let start = DateTime::<Utc>::from(want.recorded.0) - slack;
    let end = DateTime::<Utc>::from(want.recorded.1) + slack;
    let mut previous = 0;
    for e in &lines {
        ensure!(
            e.sample_count > 0 && e.sample_count >= previous,
            "{TRACE_INDEX} line {}: sample_count {} after {previous} for trace {trace}",
            e.line,
            e.sample_count
        );
        previous = e.sample_count;
        for t in [e.first_sample_time, e.last_sample_time] {
            ensure!(
                start <= t && t <= end,
                "{TRACE_INDEX} line {}: sample time {t} outside the recording ({start} .. {end})",
                e.line
            );
        }
    }
    let l = last.line;
    let in_file = trace_file
        .profile
        .sample
        .iter()
        .map(|s| trace_file.count(s))
        .sum::<i64>();
    ensure!(
        last.sample_count == in_file,
        "{TRACE_INDEX} line {l}: sample_count {} but {} holds {in_file}",
        last.sample_count,
        trace_file.path.display()
    );
    ensure!(
        last.pids.contains(&i64::from(want.pid)),
        "{TRACE_INDEX} line {l}: pids {:?} lack {}",
        last.pids,
        want.pid
    );
    let names: BTreeSet<&str> = last.service_names.iter().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = want.service_names.iter().copied().collect();
    ensure!(
        names == wanted,
        "{TRACE_INDEX} line {l}: service_names {names:?}, want {wanted:?}"
    );
    ensure!(
        names_hot_function(trace_file, &last.top_function, want.trace.function),
        "{TRACE_INDEX} line {l}: top_function {:?}, want {}",
        last.top_function,
        want.trace.function.text()
    );
    Ok(())
}

/// Whether `top` names `hot`, or a function inlined into it (e.g. Rust's `black_box`): in a
/// leaf location of `file`, both appear.
fn names_hot_function(file: &Pprof, top: &str, hot: Want) -> bool {
    hot.matches(top)
        || file.profile.sample.iter().any(|s| {
            let Some(&leaf) = s.location_id.first() else {
                return false;
            };
            let frames = file.location_frames(leaf);
            frames.iter().any(|f| f.function == top)
                && frames.iter().any(|f| hot.matches(&f.function))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "file": "4bf92f3577b34da6a3ce929d0e0e4736.pb.gz", "first_sample_time": "2025-01-01T12:00:00.5Z", "last_sample_time": "2025-01-01T12:00:02Z", "sample_count": 12, "pids": [42], "service_names": [], "top_function": "traced_fn_a"}"#;

    #[test]
    fn parses_an_index_line() {
        let e = IndexEntry::parse(1, LINE).expect("parse");
        assert_eq!(e.trace_id, TRACE_A);
        assert_eq!(e.sample_count, 12);
        assert_eq!(e.pids, [42]);
        assert!(e.service_names.is_empty());
        assert!(e.first_sample_time < e.last_sample_time);
        assert_eq!(e.top_function, "traced_fn_a");
    }

    #[test]
    fn rejects_missing_fields_and_local_times() {
        let missing = LINE.replace(r#""sample_count": 12, "#, "");
        assert!(IndexEntry::parse(1, &missing).is_err());
        let local = LINE.replace("12:00:02Z", "12:00:02+01:00");
        assert!(IndexEntry::parse(1, &local).is_err());
        let text_pid = LINE.replace("[42]", r#"["42"]"#);
        assert!(IndexEntry::parse(1, &text_pid).is_err());
    }
}
