//! Per-trace files: every sample of a trace, from all its threads and processes, gathered across
//! intervals into `<output>/traces/<trace_id>.pb.gz`, rewritten atomically after each interval in
//! which the trace had samples, with one line per file written appended to `index.jsonl` (opened
//! without following links: [`safe_file::open_append`]).
//! Past a size ([`INDEX_MAX_BYTES`], less under a small `--max-disk-mb`) the index is renamed
//! aside (`index-<UTC>.jsonl`) and started afresh under its name; retention deletes rotated
//! indexes with the oldest profiles.

use std::{
    collections::{BTreeSet, HashMap},
    fs,
    io::{self, Write},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{
    IntervalMeta, ProfileValues, ProfileWriter, WriteError, build_profile_of,
    writer::{Durability, taken_suffix},
};
use crate::{
    resolve::{ResolvedSample, SampleKind},
    safe_file,
};

/// Intervals without a sample after which a trace's samples leave memory (its file stays).
const IDLE_INTERVALS: u64 = 6;

/// The trace index, under the name other tools read.
pub const INDEX_FILE: &str = "index.jsonl";

/// Size past which the index is rotated. A reader (the dashboard) reads the live index from
/// its start after a restart or a rotation: 16 MiB is 50-60k lines, parsed in under half a
/// second, and a small part of the default `--max-disk-mb` (1024), which counts indexes too.
const INDEX_MAX_BYTES: u64 = 16 << 20;

/// The least size past which the index is rotated, whatever the disk limit: about 1000 lines.
const INDEX_MIN_BYTES: u64 = 256 << 10;

/// A rotated index: `index-<UTC %Y%m%dT%H%M%SZ>.jsonl`, with `_NN` when the name was taken
/// (`-N` from older versions).
pub fn is_rotated_index(name: &str) -> bool {
    name.strip_prefix("index-")
        .and_then(|rest| rest.strip_suffix(".jsonl"))
        .is_some_and(|stamp| {
            stamp.starts_with(|c: char| c.is_ascii_digit())
                && stamp
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'T' | b'Z' | b'-' | b'_'))
        })
}

#[derive(Debug, thiserror::Error)]
pub enum TraceFileError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot append to {path}")]
    Index {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot rotate {path}")]
    Rotate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl TraceFileError {
    /// The file system (or the user's quota) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            TraceFileError::Write(err) => err.is_disk_full(),
            TraceFileError::Index { source, .. } | TraceFileError::Rotate { source, .. } => {
                super::writer::is_disk_full(source)
            }
        }
    }
}

/// One line of `index.jsonl`.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct IndexEntry {
    pub trace_id: String,
    pub file: String,
    pub first_sample_time: String,
    pub last_sample_time: String,
    pub sample_count: u64,
    pub pids: Vec<u32>,
    pub service_names: Vec<String>,
    pub top_function: String,
    /// The trace's CPU time in its file (absent from lines written before off-CPU recording).
    #[serde(default)]
    pub cpu_nanoseconds: u64,
    /// The trace's off-CPU time in its file; 0 without `--off-cpu`.
    #[serde(default)]
    pub off_cpu_nanoseconds: u64,
}

struct TraceEntry {
    samples: Vec<ResolvedSample>,
    first: SystemTime,
    last: SystemTime,
    last_interval: u64,
}

/// Gathers samples by trace and writes their files.
pub struct TraceStore {
    writer: ProfileWriter,
    traces: HashMap<String, TraceEntry>,
    /// Traces whose latest write failed (a full disk): written again with the next interval,
    /// new samples or not, while their samples are still in memory.
    unwritten: BTreeSet<String>,
    /// Traces that left memory before a write succeeded.
    lost: u64,
    interval: u64,
    index_max_bytes: u64,
    /// Times the index was rotated, since start.
    rotations: u64,
    /// CPU types only, or the off-CPU ones too (`--off-cpu`).
    values: ProfileValues,
}

impl TraceStore {
    /// Files go to `dir` (created on first use). Trace files are not fsynced
    /// ([`Durability::Renamed`]): the next interval rewrites an active trace's file anyway.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            writer: ProfileWriter::with_durability(dir, Durability::Renamed),
            traces: HashMap::new(),
            unwritten: BTreeSet::new(),
            lost: 0,
            interval: 0,
            index_max_bytes: INDEX_MAX_BYTES,
            rotations: 0,
            values: ProfileValues::Cpu,
        }
    }

    /// Trace files carry `switches/count` and `off_cpu/nanoseconds` beside the CPU types, and
    /// the trace's off-CPU samples.
    pub fn with_off_cpu(self) -> Self {
        Self {
            values: ProfileValues::Both,
            ..self
        }
    }

    /// Rotates the index at 1/64 of the disk limit (`None`: no limit), between
    /// [`INDEX_MIN_BYTES`] and [`INDEX_MAX_BYTES`]: retention counts the live index but never
    /// deletes it, so under a small `--max-disk-mb` a 16 MiB index would leave no room for
    /// profiles.
    pub fn with_disk_limit(self, max_disk: Option<u64>) -> Self {
        let bytes = max_disk.map_or(INDEX_MAX_BYTES, |max| {
            (max / 64).clamp(INDEX_MIN_BYTES, INDEX_MAX_BYTES)
        });
        Self {
            index_max_bytes: bytes,
            ..self
        }
    }

    #[cfg(test)]
    fn with_index_limit(self, bytes: u64) -> Self {
        Self {
            index_max_bytes: bytes,
            ..self
        }
    }

    /// Adds an interval's traced samples and rewrites the file of every trace they touch (and
    /// of every trace whose last write failed). Returns the files written; `on_write` hears of
    /// each (its size in bytes). The first error is returned after trying them all.
    pub fn add_interval(
        &mut self,
        samples: &[ResolvedSample],
        meta: IntervalMeta,
        mut on_write: impl FnMut(u64),
    ) -> Result<usize, TraceFileError> {
        let end = meta.start + meta.duration;
        let mut touched = BTreeSet::new();
        for sample in samples {
            let Some(trace) = &sample.labels.trace else {
                continue;
            };
            let entry = self
                .traces
                .entry(trace.trace_id.clone())
                .or_insert_with(|| TraceEntry {
                    samples: Vec::new(),
                    first: meta.start,
                    last: end,
                    last_interval: self.interval,
                });
            entry.samples.push(sample.clone());
            entry.last = end;
            entry.last_interval = self.interval;
            touched.insert(trace.trace_id.clone());
        }
        touched.extend(std::mem::take(&mut self.unwritten));
        let mut result = Ok(0);
        if !touched.is_empty()
            && let Err(source) = safe_file::create_dir(self.writer.dir())
        {
            result = Err(TraceFileError::Index {
                path: self.writer.dir().to_owned(),
                source,
            });
            self.unwritten = touched;
        } else {
            if let Err(err) = self.rotate_index(end) {
                // The lines go on into the big index meanwhile.
                result = Err(err);
            }
            for trace_id in touched {
                match self.write_trace(&trace_id, meta.period_ns) {
                    Ok(bytes) => {
                        on_write(bytes);
                        if let Ok(written) = &mut result {
                            *written += 1;
                        }
                    }
                    Err(err) => {
                        self.unwritten.insert(trace_id);
                        if result.is_ok() {
                            result = Err(err);
                        }
                    }
                }
            }
        }
        let interval = self.interval;
        let (unwritten, lost) = (&mut self.unwritten, &mut self.lost);
        self.traces.retain(|trace_id, entry| {
            let keep = entry.last_interval + IDLE_INTERVALS > interval;
            if !keep && unwritten.remove(trace_id) {
                *lost += 1;
            }
            keep
        });
        self.interval += 1;
        result
    }

    /// Traces whose samples left memory before their file could be written, since start.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Traces currently held in memory.
    pub fn active(&self) -> usize {
        self.traces.len()
    }

    /// Times `index.jsonl` was renamed aside, since start.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Renames the index aside once it reached the limit (checked once an interval, so it may
    /// pass the limit by an interval's lines); the next line starts a new file under the name.
    fn rotate_index(&mut self, now: SystemTime) -> Result<(), TraceFileError> {
        let path = self.writer.dir().join(INDEX_FILE);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() >= self.index_max_bytes => {}
            _ => return Ok(()),
        }
        let stamp = DateTime::<Utc>::from(now).format("%Y%m%dT%H%M%SZ");
        let free = |name: String| {
            let path = self.writer.dir().join(name);
            fs::symlink_metadata(&path).is_err().then_some(path)
        };
        let rotated = free(format!("index-{stamp}.jsonl"))
            .or_else(|| (1..).find_map(|n| free(format!("index-{stamp}{}.jsonl", taken_suffix(n)))))
            .expect("some name is free");
        fs::rename(&path, &rotated).map_err(|source| TraceFileError::Rotate {
            path: path.clone(),
            source,
        })?;
        self.rotations += 1;
        tracing::info!(rotated = %rotated.display(), "trace index rotated");
        Ok(())
    }

    /// Returns the size of the file written.
    fn write_trace(&self, trace_id: &str, period_ns: u64) -> Result<u64, TraceFileError> {
        let entry = &self.traces[trace_id];
        let meta = IntervalMeta {
            start: entry.first,
            duration: entry
                .last
                .duration_since(entry.first)
                .unwrap_or(Duration::ZERO),
            period_ns,
        };
        let (profile, _) = build_profile_of(self.values, &entry.samples, meta);
        let total = |kind: SampleKind, value: fn(&ResolvedSample) -> u64| {
            entry
                .samples
                .iter()
                .filter(|s| s.kind == kind && self.values.column(kind).is_some())
                .map(value)
                .sum::<u64>()
        };
        let file = format!("{trace_id}.pb.gz");
        let (_, bytes) = self.writer.write_named(&file, &profile)?;
        let index = IndexEntry {
            trace_id: trace_id.to_owned(),
            file,
            first_sample_time: rfc3339(entry.first),
            last_sample_time: rfc3339(entry.last),
            sample_count: total(SampleKind::Cpu, |s| s.count),
            pids: entry
                .samples
                .iter()
                .map(|s| s.labels.pid)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            service_names: entry
                .samples
                .iter()
                .filter_map(|s| s.labels.trace.as_ref()?.service_name.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            top_function: top_function(&entry.samples),
            cpu_nanoseconds: total(SampleKind::Cpu, |s| s.nanos),
            off_cpu_nanoseconds: total(SampleKind::OffCpu, |s| s.nanos),
        };
        self.append_index(&index)?;
        Ok(bytes)
    }

    fn append_index(&self, entry: &IndexEntry) -> Result<(), TraceFileError> {
        let path = self.writer.dir().join(INDEX_FILE);
        let mut line = serde_json::to_string(entry).unwrap_or_default();
        line.push('\n');
        safe_file::open_append(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(|source| TraceFileError::Index { path, source })
    }
}

/// The function with the most self CPU samples (the innermost frame of the leaf location).
fn top_function(samples: &[ResolvedSample]) -> String {
    let mut selves: HashMap<&str, u64> = HashMap::new();
    for sample in samples.iter().filter(|s| s.kind == SampleKind::Cpu) {
        let name = sample
            .locations
            .first()
            .and_then(|location| location.frames.first())
            .map_or("[unknown]", |frame| &frame.function);
        *selves.entry(name).or_default() += sample.count;
    }
    selves
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_default()
}

fn rfc3339(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use std::{io::Read, sync::Arc};

    use flate2::read::GzDecoder;
    use prost::Message;

    use super::*;
    use crate::test_support::Victim;
    use crate::{
        profile::proto::Profile,
        resolve::{Labels, MappingInfo, MappingKey, ResolvedLocation, TraceLabels},
        symbolize::Frame,
    };

    fn sample(trace: Option<&str>, function: &str, pid: u32, count: u64) -> ResolvedSample {
        let location = ResolvedLocation {
            mapping: MappingKey::Unknown,
            info: Arc::new(MappingInfo::default()),
            address: function.len() as u64,
            frames: Arc::from([Frame::named(function)]),
        };
        ResolvedSample {
            locations: Arc::from([location]),
            labels: Labels {
                pid,
                thread_id: pid,
                comm: "app".into(),
                thread_name: "app".into(),
                container: None,
                trace: trace.map(|id| {
                    Arc::new(TraceLabels {
                        trace_id: id.into(),
                        span_id: "00".repeat(8),
                        service_name: Some("svc".into()),
                        attributes: vec![],
                    })
                }),
            },
            count,
            kind: SampleKind::Cpu,
            nanos: count * 10,
        }
    }

    fn meta(second: u64) -> IntervalMeta {
        IntervalMeta {
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000 + second),
            duration: Duration::from_secs(10),
            period_ns: 10,
        }
    }

    fn read(path: &std::path::Path) -> Profile {
        let mut bytes = Vec::new();
        GzDecoder::new(fs::File::open(path).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        Profile::decode(bytes.as_slice()).unwrap()
    }

    #[test]
    fn gathers_a_trace_across_intervals_and_indexes_each_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TraceStore::new(dir.path().join("traces"));
        let a = "aa".repeat(16);
        let first = [sample(Some(&a), "hot", 1, 3), sample(None, "idle", 1, 5)];
        assert_eq!(store.add_interval(&first, meta(0), |_| {}).unwrap(), 1);
        let second = [
            sample(Some(&a), "hot", 2, 2),
            sample(Some(&a), "cold", 2, 1),
        ];
        assert_eq!(store.add_interval(&second, meta(10), |_| {}).unwrap(), 1);

        let profile = read(&dir.path().join(format!("traces/{a}.pb.gz")));
        let total: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total, 6, "both intervals, traced samples only");

        let index = fs::read_to_string(dir.path().join("traces/index.jsonl")).unwrap();
        let lines: Vec<IndexEntry> = index
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "one line per file written");
        let last = &lines[1];
        assert_eq!(last.trace_id, a);
        assert_eq!(last.file, format!("{a}.pb.gz"));
        assert_eq!(last.sample_count, 6);
        assert_eq!(last.pids, vec![1, 2]);
        assert_eq!(last.service_names, vec!["svc".to_owned()]);
        assert_eq!(last.top_function, "hot");
        assert!(last.first_sample_time < last.last_sample_time);
    }

    #[test]
    fn with_off_cpu_a_trace_file_holds_its_waits_and_the_index_both_totals() {
        let dir = tempfile::tempdir().unwrap();
        let a = "ab".repeat(16);
        let wait = |function: &str, waits: u64| ResolvedSample {
            kind: SampleKind::OffCpu,
            nanos: waits * 45_000_000,
            ..sample(Some(&a), function, 1, waits)
        };
        let samples = [
            sample(Some(&a), "hot", 1, 4),
            wait("poll", 3),
            wait("futex_wait", 1),
            sample(None, "idle", 1, 5),
        ];
        let mut cpu_only = TraceStore::new(dir.path().join("cpu-only"));
        cpu_only.add_interval(&samples, meta(0), |_| {}).unwrap();
        let mut store = TraceStore::new(dir.path().join("traces")).with_off_cpu();
        store.add_interval(&samples, meta(0), |_| {}).unwrap();

        let profile = read(&dir.path().join(format!("traces/{a}.pb.gz")));
        assert_eq!(profile.sample_type.len(), 4);
        let values: Vec<&[i64]> = profile.sample.iter().map(|s| &s.value[..]).collect();
        assert_eq!(
            values,
            [
                &[4, 40, 0, 0][..],
                &[0, 0, 3, 135_000_000],
                &[0, 0, 1, 45_000_000]
            ]
        );
        let line = |dir: &std::path::Path| -> IndexEntry {
            let index = fs::read_to_string(dir.join(INDEX_FILE)).unwrap();
            serde_json::from_str(index.lines().last().unwrap()).unwrap()
        };
        let with = line(&dir.path().join("traces"));
        assert_eq!(
            (
                with.sample_count,
                with.cpu_nanoseconds,
                with.off_cpu_nanoseconds
            ),
            (4, 40, 180_000_000)
        );
        assert_eq!(with.top_function, "hot", "a wait's leaf is no CPU hot spot");
        // Without --off-cpu the trace's file and line are CPU only, as before.
        let cpu_only_dir = dir.path().join("cpu-only");
        let without = line(&cpu_only_dir);
        assert_eq!(
            (without.cpu_nanoseconds, without.off_cpu_nanoseconds),
            (40, 0)
        );
        let cpu_profile = read(&cpu_only_dir.join(format!("{a}.pb.gz")));
        assert_eq!(cpu_profile.sample_type.len(), 2);
        assert_eq!(cpu_profile.sample.len(), 1);
    }

    #[test]
    fn idle_traces_leave_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TraceStore::new(dir.path());
        store
            .add_interval(
                &[sample(Some(&"bb".repeat(16)), "f", 1, 1)],
                meta(0),
                |_| {},
            )
            .unwrap();
        for i in 1..=IDLE_INTERVALS {
            store.add_interval(&[], meta(i * 10), |_| {}).unwrap();
        }
        assert_eq!(store.active(), 0);
    }

    #[test]
    fn a_failed_write_is_retried_with_the_next_interval() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("traces");
        let mut store = TraceStore::new(&dir);
        let a = "cc".repeat(16);
        // A file where the directory should be: every write fails.
        fs::write(&dir, b"").unwrap();
        assert!(
            store
                .add_interval(&[sample(Some(&a), "hot", 1, 4)], meta(0), |_| {})
                .is_err()
        );
        fs::remove_file(&dir).unwrap();
        // No new sample of the trace, yet its file is written, with what it had.
        let mut sizes = Vec::new();
        let written = store
            .add_interval(&[], meta(10), |bytes| sizes.push(bytes))
            .unwrap();
        assert_eq!((written, sizes.len()), (1, 1));
        let profile = read(&dir.join(format!("{a}.pb.gz")));
        assert_eq!(profile.sample.iter().map(|s| s.value[0]).sum::<i64>(), 4);
        assert_eq!(store.add_interval(&[], meta(20), |_| {}).unwrap(), 0);
        assert_eq!(store.lost(), 0);
    }

    #[test]
    fn a_trace_that_never_got_written_is_counted_lost() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("traces");
        fs::write(&dir, b"").unwrap();
        let mut store = TraceStore::new(&dir);
        let _ = store.add_interval(
            &[sample(Some(&"dd".repeat(16)), "f", 1, 1)],
            meta(0),
            |_| {},
        );
        for i in 1..=IDLE_INTERVALS {
            let _ = store.add_interval(&[], meta(i * 10), |_| {});
        }
        assert_eq!((store.active(), store.lost()), (0, 1));
    }

    #[test]
    fn trace_files_are_not_fsynced_but_profiles_are() {
        let store = TraceStore::new("traces");
        assert_eq!(store.writer.durability(), Durability::Renamed);
        assert_eq!(ProfileWriter::new(".").durability(), Durability::Synced);
    }

    #[test]
    fn the_index_limit_is_a_small_part_of_the_disk_limit() {
        let limit = |max_disk: Option<u64>| {
            TraceStore::new("traces")
                .with_disk_limit(max_disk)
                .index_max_bytes
        };
        assert_eq!(limit(None), 16 << 20);
        assert_eq!(
            limit(Some(1024 << 20)),
            16 << 20,
            "the default --max-disk-mb"
        );
        assert_eq!(limit(Some(10 << 30)), 16 << 20);
        assert_eq!(limit(Some(64 << 20)), 1 << 20);
        assert_eq!(limit(Some(1 << 20)), 256 << 10);
    }

    #[test]
    fn the_index_is_renamed_aside_past_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let traces = dir.path().join("traces");
        let mut store = TraceStore::new(&traces).with_index_limit(400);
        let (a, b) = ("aa".repeat(16), "bb".repeat(16));
        // One line (about 300 bytes) stays under the limit; the second line passes it.
        for (second, id) in [(0, &a), (10, &b)] {
            store
                .add_interval(&[sample(Some(id), "hot", 1, 1)], meta(second), |_| {})
                .unwrap();
        }
        assert_eq!(store.rotations(), 0);
        assert_eq!(fs::read_dir(&traces).unwrap().count(), 3);
        // Checked before this interval's lines: the full index goes aside, named by the time.
        store
            .add_interval(&[sample(Some(&a), "hot", 1, 1)], meta(20), |_| {})
            .unwrap();
        assert_eq!(store.rotations(), 1);
        let rotated_name = "index-20251124T160030Z.jsonl";
        assert!(is_rotated_index(rotated_name) && !is_rotated_index(INDEX_FILE));
        let ids = |name: &str| -> Vec<String> {
            fs::read_to_string(traces.join(name))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<IndexEntry>(l).unwrap().trace_id)
                .collect()
        };
        assert_eq!(ids(rotated_name), [a.as_str(), b.as_str()]);
        assert_eq!(ids(INDEX_FILE), [a.as_str()]);
        // Another rotation in the same second takes the next free name.
        store = store.with_index_limit(1);
        store
            .add_interval(&[sample(Some(&b), "hot", 1, 1)], meta(20), |_| {})
            .unwrap();
        assert_eq!(store.rotations(), 2);
        assert_eq!(ids("index-20251124T160030Z_01.jsonl"), [a.as_str()]);
        assert_eq!(ids(INDEX_FILE), [b.as_str()]);
        assert!(is_rotated_index("index-20251124T160030Z_01.jsonl"));
        // Written by older versions: still the profiler's.
        assert!(is_rotated_index("index-20251124T160030Z-1.jsonl"));
        assert!(!is_rotated_index("index-old.jsonl") && !is_rotated_index("index-.jsonl"));
    }

    /// A link planted where the index goes: the agent appends to no file but its own.
    #[test]
    fn a_planted_index_link_is_refused_not_followed() {
        let scratch = tempfile::tempdir().unwrap();
        let victim = Victim::new(scratch.path());
        let traces = scratch.path().join("traces");
        fs::create_dir(&traces).unwrap();
        victim.plant(&traces.join(INDEX_FILE));
        let mut store = TraceStore::new(&traces);
        let err = store
            .add_interval(
                &[sample(Some(&"ab".repeat(16)), "f", 1, 1)],
                meta(0),
                |_| {},
            )
            .unwrap_err();
        assert!(err.to_string().contains(INDEX_FILE), "{err}");
        victim.assert_untouched();
    }

    #[test]
    fn untraced_intervals_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TraceStore::new(dir.path().join("traces"));
        assert_eq!(
            store
                .add_interval(&[sample(None, "f", 1, 1)], meta(0), |_| {})
                .unwrap(),
            0
        );
        assert!(!dir.path().join("traces").exists());
    }
}
