//! What the server knows of its directory, read again on every request so that it follows a
//! recorder writing there: the profiles listed (a directory read), the trace index (read
//! incrementally: `index.jsonl` only grows until the recorder renames it aside, and a rotated
//! index is read once), and caches of decoded profiles keyed by name, modification time, size
//! and inode, so a rewritten file is read again and an unchanged one is not.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::SystemTime,
};

use chrono::{DateTime, Utc};

use super::paths::{self, Refusal};
use crate::{
    profile::{INDEX_FILE, IndexEntry, is_rotated_index},
    report::{
        files::{self, ProfileFile, ProfileKind, ReadError, TRACES_DIR},
        flame::{self, Labels},
        folded::Folded,
        stacks::{ProfileMeta, StackSample, Stacks, Thread, ValueKind},
        top::{Order, Top},
    },
};

/// Decoded profiles kept for their pages (each with its flame graph once drawn), at most this
/// many and, beyond the most recent, this many bytes (a recorder's pod has little memory).
const ANALYSES_KEPT: usize = 24;
const ANALYSES_BYTES: usize = 64 << 20;

/// A version of a file: a rewrite or a replacement changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: SystemTime,
    size: u64,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> io::Result<Stamp> {
        let meta = fs::metadata(path)?;
        Ok(Stamp {
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            size: meta.len(),
            inode: meta.ino(),
        })
    }
}

/// What the timeline shows of a profile.
#[derive(Clone, Debug)]
pub struct Summary {
    pub meta: ProfileMeta,
    pub samples: i64,
    pub cpu_ns: i64,
    pub top_function: Option<String>,
}

/// CPU of one thread, or one process, in a profile.
#[derive(Clone, Debug)]
pub struct Usage {
    pub thread: Arc<Thread>,
    /// Threads of a process's row.
    pub threads: usize,
    pub samples: i64,
    pub cpu_ns: i64,
    pub services: BTreeSet<Arc<str>>,
}

/// A profile decoded for its page.
#[derive(Debug)]
pub struct Analysis {
    pub file: ProfileFile,
    pub meta: ProfileMeta,
    pub top: Top,
    pub folded: Folded,
    /// By CPU, most first.
    pub threads: Vec<Usage>,
    pub processes: Vec<Usage>,
    svg: OnceLock<Result<String, String>>,
}

impl Analysis {
    fn new(file: ProfileFile, stacks: Stacks) -> Analysis {
        let top = Top::new(&stacks.samples, ValueKind::Cpu, Order::Flat);
        let folded = Folded::new(&stacks.samples, ValueKind::Cpu);
        let (threads, processes) = usage(&stacks.samples);
        Analysis {
            file,
            meta: stacks.meta,
            top,
            folded,
            threads,
            processes,
            svg: OnceLock::new(),
        }
    }

    /// The flame graph, drawn on first use, for inline use in a page; `None` for a profile
    /// without samples.
    pub fn flame_graph(&self) -> Option<Result<&str, &str>> {
        if self.folded.is_empty() {
            return None;
        }
        let drawn = self.svg.get_or_init(|| {
            let title = match files::trace_id_of_file(self.file.name.trim_start_matches("traces/"))
            {
                Some(id) if self.file.kind == ProfileKind::Trace => format!("Trace {id}"),
                _ => format!("CPU time: {}", self.file.name),
            };
            let subtitle = self.subtitle();
            flame::flame_graph(
                &self.folded,
                Labels {
                    title: &title,
                    subtitle: subtitle.as_deref(),
                    value: ValueKind::Cpu,
                },
            )
            .map(|svg| flame::without_onload(flame::for_html(&svg)))
            .map_err(|err| err.to_string())
        });
        Some(drawn.as_deref().map_err(String::as_str))
    }

    /// About how much memory it holds: its stacks and its drawing dominate.
    fn weight(&self) -> usize {
        self.folded.text_len()
            + self
                .svg
                .get()
                .map_or(0, |svg| svg.as_ref().map_or(0, String::len))
    }

    fn subtitle(&self) -> Option<String> {
        let start = self.meta.start?;
        let end = self.meta.end()?;
        let mut line = format!(
            "{} to {}",
            crate::report::utc(start),
            crate::report::utc(end)
        );
        if let Some(trigger) = self.meta.trigger() {
            line.push_str("; ");
            line.push_str(trigger);
        }
        Some(line)
    }
}

fn usage(samples: &[StackSample]) -> (Vec<Usage>, Vec<Usage>) {
    let mut threads: HashMap<Arc<Thread>, Usage> = HashMap::new();
    for sample in samples {
        let usage = threads
            .entry(sample.thread.clone())
            .or_insert_with(|| Usage {
                thread: sample.thread.clone(),
                threads: 1,
                samples: 0,
                cpu_ns: 0,
                services: BTreeSet::new(),
            });
        // Saturating: a file's values are whatever it says (i64::MAX included).
        usage.samples = usage.samples.saturating_add(sample.count);
        usage.cpu_ns = usage.cpu_ns.saturating_add(sample.cpu_ns);
        if let Some(service) = &sample.service {
            usage.services.insert(service.clone());
        }
    }
    let mut processes: HashMap<(Option<i64>, Arc<str>), Usage> = HashMap::new();
    for thread in threads.values() {
        let key = (thread.thread.pid, thread.thread.comm.clone());
        let process = processes.entry(key).or_insert_with(|| Usage {
            thread: Arc::new(Thread {
                pid: thread.thread.pid,
                comm: thread.thread.comm.clone(),
                ..Thread::default()
            }),
            threads: 0,
            samples: 0,
            cpu_ns: 0,
            services: BTreeSet::new(),
        });
        process.threads += 1;
        process.samples = process.samples.saturating_add(thread.samples);
        process.cpu_ns = process.cpu_ns.saturating_add(thread.cpu_ns);
        process.services.extend(thread.services.iter().cloned());
    }
    let by_cpu = |mut rows: Vec<Usage>| {
        rows.sort_by(|a, b| {
            b.cpu_ns
                .cmp(&a.cpu_ns)
                .then_with(|| a.thread.cmp(&b.thread))
        });
        rows
    };
    (
        by_cpu(threads.into_values().collect()),
        by_cpu(processes.into_values().collect()),
    )
}

/// A trace with a file, described by its latest index line when there is one.
#[derive(Clone, Debug)]
pub struct TraceRow {
    pub trace_id: String,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
    pub sample_count: Option<u64>,
    pub services: Vec<String>,
    pub top_function: Option<String>,
}

impl TraceRow {
    fn new(trace_id: &str, entry: Option<&IndexEntry>, modified: SystemTime) -> TraceRow {
        let time = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        TraceRow {
            trace_id: trace_id.to_owned(),
            first: entry.and_then(|e| time(&e.first_sample_time)),
            last: entry
                .and_then(|e| time(&e.last_sample_time))
                .or_else(|| Some(DateTime::<Utc>::from(modified))),
            sample_count: entry.map(|e| e.sample_count),
            services: entry.map(|e| e.service_names.clone()).unwrap_or_default(),
            top_function: entry
                .map(|e| e.top_function.clone())
                .filter(|f| !f.is_empty()),
        }
    }
}

/// A file's identity: (device, inode). A rename keeps it.
type Identity = (u64, u64);

/// A rotated index (`index-<UTC>.jsonl`) beside the live one.
struct Rotated {
    path: PathBuf,
    identity: Identity,
    modified: SystemTime,
}

/// `traces/index.jsonl`, read from where the last read stopped, and the rotated indexes
/// beside it, each read at most once. A trace's latest line wins (by `last_sample_time`,
/// which grows with every rewrite of its file), wherever it was read from, so the order in
/// which files are read does not matter.
#[derive(Default)]
struct TraceIndex {
    /// The live file read: another file under the name is read from its start.
    file: Option<Identity>,
    offset: u64,
    /// The live file's modification time when last read to its end: lines written before it
    /// have been read, except those of rotated files left unread on purpose.
    read_until: Option<SystemTime>,
    /// Rotated files read.
    rotated: HashSet<Identity>,
    entries: HashMap<String, IndexEntry>,
}

impl TraceIndex {
    /// Reads what is new. `rotated`: the rotated indexes present; `present`: the traces that
    /// have a file (older rotated files are read only for those still without a line).
    fn refresh(&mut self, path: &Path, mut rotated: Vec<Rotated>, present: &HashSet<&str>) {
        self.rotated
            .retain(|identity| rotated.iter().any(|r| r.identity == *identity));
        // The file followed until now was renamed aside: its last lines are still to read.
        if let Some(followed) = rotated
            .iter()
            .find(|r| Some(r.identity) == self.file && !self.rotated.contains(&r.identity))
        {
            self.read(&followed.path, self.offset, None, true);
            self.rotated.insert(followed.identity);
        }
        let previous_read = self.read_until;
        match fs::metadata(path) {
            Ok(meta) => {
                let identity = (meta.dev(), meta.ino());
                if self.file != Some(identity) || meta.len() < self.offset {
                    // Another file, or one cut short: from its start, keeping what is known.
                    self.file = Some(identity);
                    self.offset = 0;
                }
                if meta.len() > self.offset
                    && let Some(complete) = self.read(path, self.offset, None, true)
                {
                    self.offset += complete;
                }
                self.read_until = meta.modified().ok();
            }
            Err(_) => {
                self.file = None;
                self.offset = 0;
            }
        }
        // Newest first: files the recorder rotated since the last read hold newer lines and
        // are read; older ones only while a trace with a file has no line yet.
        rotated.sort_by(|a, b| b.modified.cmp(&a.modified).then(b.path.cmp(&a.path)));
        let lacking = |index: &Self| present.iter().any(|id| !index.entries.contains_key(*id));
        let mut wanted = None;
        for file in rotated {
            if self.rotated.contains(&file.identity) {
                continue;
            }
            let missed = previous_read.is_some_and(|read| file.modified >= read);
            if !missed && !*wanted.get_or_insert_with(|| lacking(self)) {
                continue;
            }
            self.read(&file.path, 0, Some(present), false);
            self.rotated.insert(file.identity);
            wanted = None;
        }
    }

    /// Reads the complete lines of `path` from `from` into the entries (only those of `only`,
    /// when given); a line as new as the known one replaces it when `ties_replace`. Returns the
    /// bytes read up to the last complete line.
    fn read(
        &mut self,
        path: &Path,
        from: u64,
        only: Option<&HashSet<&str>>,
        ties_replace: bool,
    ) -> Option<u64> {
        let mut added = Vec::new();
        let read = fs::File::open(path).and_then(|mut file| {
            file.seek(SeekFrom::Start(from))?;
            file.read_to_end(&mut added)
        });
        if let Err(err) = read {
            tracing::debug!("cannot read {}: {err}", path.display());
            return None;
        }
        // A line still being appended waits for the next request.
        let complete = added.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in added[..complete].split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let entry = match serde_json::from_slice::<IndexEntry>(line) {
                Ok(entry) => entry,
                Err(err) => {
                    tracing::debug!("skipping a line of {}: {err}", path.display());
                    continue;
                }
            };
            if only.is_some_and(|only| !only.contains(entry.trace_id.as_str())) {
                continue;
            }
            let newer = self.entries.get(&entry.trace_id).is_none_or(|known| {
                if ties_replace {
                    entry.last_sample_time >= known.last_sample_time
                } else {
                    entry.last_sample_time > known.last_sample_time
                }
            });
            if newer {
                self.entries.insert(entry.trace_id.clone(), entry);
            }
        }
        Some(complete as u64)
    }
}

/// The served directory.
pub struct Catalog {
    root: PathBuf,
    index: Mutex<TraceIndex>,
    summaries: Mutex<HashMap<String, (Stamp, Arc<Summary>)>>,
    /// Most recently used last.
    analyses: Mutex<Vec<(String, Stamp, Arc<Analysis>)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Catalog {
    /// Serves `dir`, which must exist.
    pub fn new(dir: &Path) -> io::Result<Catalog> {
        let root = fs::canonicalize(dir)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        Ok(Catalog {
            root,
            index: Mutex::default(),
            summaries: Mutex::default(),
            analyses: Mutex::default(),
        })
    }

    /// Traces that have a file, in no particular order.
    pub fn traces(&self) -> io::Result<Vec<TraceRow>> {
        let dir = self.root.join(TRACES_DIR);
        let mut present: Vec<(String, SystemTime)> = Vec::new();
        let mut rotated = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    let id = files::trace_id_of_file(name);
                    if id.is_none() && !is_rotated_index(name) {
                        continue;
                    }
                    // Linked out of the directory, or gone since the listing: left out.
                    if !self.inside(&format!("{TRACES_DIR}/{name}")) {
                        continue;
                    }
                    let Ok(meta) = entry.metadata() else { continue };
                    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    match id {
                        Some(id) => present.push((id.to_owned(), modified)),
                        None => rotated.push(Rotated {
                            path: entry.path(),
                            identity: (meta.dev(), meta.ino()),
                            modified,
                        }),
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        }
        let ids: HashSet<&str> = present.iter().map(|(id, _)| id.as_str()).collect();
        let mut index = lock(&self.index);
        // An index linked out of the directory is not read.
        let live = dir.join(INDEX_FILE);
        if !live.exists() || self.inside(&format!("{TRACES_DIR}/{INDEX_FILE}")) {
            index.refresh(&live, rotated, &ids);
        }
        // Lines of traces whose files retention deleted are of no more use.
        index.entries.retain(|id, _| ids.contains(id.as_str()));
        Ok(present
            .iter()
            .map(|(id, modified)| TraceRow::new(id, index.entries.get(id), *modified))
            .collect())
    }

    /// Whether `relative` resolves inside the directory (a symlink may not lead out of it), as
    /// every route requires ([`paths::resolve`]).
    fn inside(&self, relative: &str) -> bool {
        match paths::resolve(&self.root, relative) {
            Ok(_) => true,
            Err(Refusal::NotFound) => false,
            Err(Refusal::Outside(why)) => {
                tracing::debug!("left out {relative:?}: {why}");
                false
            }
        }
    }

    /// The interval, incident and other profiles of the directory itself (not trace files);
    /// links out of the directory are left out, as the routes refuse them.
    pub fn profiles(&self) -> io::Result<Vec<ProfileFile>> {
        let listed: Vec<ProfileFile> = files::list(&self.root)?
            .into_iter()
            .filter(|f| f.kind != ProfileKind::Trace && self.inside(&f.name))
            .collect();
        let mut summaries = lock(&self.summaries);
        summaries.retain(|name, _| listed.iter().any(|f| &f.name == name));
        Ok(listed)
    }

    /// The profile `relative` names (a checked, decoded request path).
    pub fn file(&self, relative: &str) -> Result<ProfileFile, Refusal> {
        let path = paths::resolve(&self.root, relative)?;
        let meta = fs::metadata(&path).map_err(|_| Refusal::NotFound)?;
        let name = relative.to_owned();
        if !meta.is_file() || !name.ends_with(".pb.gz") {
            return Err(Refusal::NotFound);
        }
        let (parent, base) = name.rsplit_once('/').unwrap_or(("", &name));
        Ok(ProfileFile {
            kind: ProfileKind::of(base, parent == TRACES_DIR),
            name,
            path,
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// The timeline's view of `file`, decoded once per version.
    pub fn summary(&self, file: &ProfileFile) -> Result<Arc<Summary>, ReadError> {
        let stamp = Stamp::of(&file.path).map_err(|source| ReadError::Io {
            path: file.path.clone(),
            source,
        })?;
        if let Some((cached, summary)) = lock(&self.summaries).get(&file.name)
            && *cached == stamp
        {
            return Ok(summary.clone());
        }
        // The timeline reads many profiles once: their summaries are kept, not their stacks.
        let cached = self.cached_analysis(file, stamp);
        let summary = Arc::new(match cached {
            Some(analysis) => Summary {
                meta: analysis.meta.clone(),
                samples: analysis.top.samples,
                cpu_ns: analysis.top.total,
                top_function: analysis.top.top_function().map(str::to_owned),
            },
            None => {
                let stacks = Stacks::from_profile(&files::read(&file.path)?);
                let top = Top::new(&stacks.samples, ValueKind::Cpu, Order::Flat);
                Summary {
                    meta: stacks.meta,
                    samples: top.samples,
                    cpu_ns: top.total,
                    top_function: top.top_function().map(str::to_owned),
                }
            }
        });
        lock(&self.summaries).insert(file.name.clone(), (stamp, summary.clone()));
        Ok(summary)
    }

    /// `file` decoded for its page, once per version (the most recent few are kept).
    pub fn analysis(&self, file: &ProfileFile) -> Result<Arc<Analysis>, ReadError> {
        let stamp = Stamp::of(&file.path).map_err(|source| ReadError::Io {
            path: file.path.clone(),
            source,
        })?;
        if let Some(analysis) = self.cached_analysis(file, stamp) {
            return Ok(analysis);
        }
        let stacks = Stacks::from_profile(&files::read(&file.path)?);
        let analysis = Arc::new(Analysis::new(file.clone(), stacks));
        let mut analyses = lock(&self.analyses);
        analyses.retain(|(name, _, _)| name != &file.name);
        analyses.push((file.name.clone(), stamp, analysis.clone()));
        // Oldest first out, down to the limits; the newest always stays.
        let mut bytes: usize = analyses.iter().map(|(_, _, a)| a.weight()).sum();
        while analyses.len() > 1 && (analyses.len() > ANALYSES_KEPT || bytes > ANALYSES_BYTES) {
            bytes -= analyses.remove(0).2.weight();
        }
        Ok(analysis)
    }

    /// The analysis of this version of `file`, if kept (it becomes the most recent).
    fn cached_analysis(&self, file: &ProfileFile, stamp: Stamp) -> Option<Arc<Analysis>> {
        let mut analyses = lock(&self.analyses);
        let at = analyses
            .iter()
            .position(|(name, s, _)| name == &file.name && *s == stamp)?;
        let entry = analyses.remove(at);
        let analysis = entry.2.clone();
        analyses.push(entry);
        Some(analysis)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::profile::ProfileWriter;
    use crate::report::stacks::tests::{labels, profile, traced};

    const A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const B: &str = "0af7651916cd43dd8448eb211c80319c";

    fn line(id: &str, count: u64) -> String {
        line_at(id, count, 10)
    }

    /// A line whose last sample is `second` seconds into 2026.
    fn line_at(id: &str, count: u64, second: u32) -> String {
        let entry = IndexEntry {
            trace_id: id.into(),
            file: format!("{id}.pb.gz"),
            first_sample_time: "2026-01-01T00:00:00.000Z".into(),
            last_sample_time: format!("2026-01-01T00:{:02}:{:02}.000Z", second / 60, second % 60),
            sample_count: count,
            pids: vec![1],
            service_names: vec!["checkout".into()],
            top_function: "hot".into(),
        };
        serde_json::to_string(&entry).unwrap() + "\n"
    }

    #[test]
    fn traces_follow_the_index_as_it_grows_and_files_as_they_go() {
        let dir = tempfile::tempdir().unwrap();
        let traces = ProfileWriter::new(dir.path().join("traces"));
        let p = profile(&[("main;hot", traced(1, 1, A), 1)]);
        traces.write_named(&format!("{A}.pb.gz"), &p).unwrap();
        let index = dir.path().join("traces/index.jsonl");
        fs::write(&index, line(A, 1)).unwrap();
        let catalog = Catalog::new(dir.path()).unwrap();
        let rows = catalog.traces().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].sample_count, Some(1));
        assert_eq!(rows[0].services, ["checkout"]);

        // A later line supersedes; a half-written line waits.
        traces.write_named(&format!("{B}.pb.gz"), &p).unwrap();
        let mut file = fs::OpenOptions::new().append(true).open(&index).unwrap();
        file.write_all(line(A, 5).as_bytes()).unwrap();
        let partial = line(B, 2);
        file.write_all(&partial.as_bytes()[..10]).unwrap();
        let rows = catalog.traces().unwrap();
        let a = rows.iter().find(|r| r.trace_id == A).unwrap();
        let b = rows.iter().find(|r| r.trace_id == B).unwrap();
        assert_eq!(a.sample_count, Some(5));
        assert_eq!(b.sample_count, None, "no complete line yet");
        file.write_all(&partial.as_bytes()[10..]).unwrap();
        let rows = catalog.traces().unwrap();
        let b = rows.iter().find(|r| r.trace_id == B).unwrap();
        assert_eq!(b.sample_count, Some(2));

        fs::remove_file(dir.path().join(format!("traces/{A}.pb.gz"))).unwrap();
        let rows = catalog.traces().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].trace_id, B);

        // A new index under the name is read from its start.
        fs::remove_file(&index).unwrap();
        fs::write(&index, line(B, 9)).unwrap();
        let rows = catalog.traces().unwrap();
        assert_eq!(rows[0].sample_count, Some(9));
    }

    #[test]
    fn a_rotated_index_keeps_its_traces_described_once() {
        const C: &str = "1af7651916cd43dd8448eb211c80319c";
        let dir = tempfile::tempdir().unwrap();
        let traces = ProfileWriter::new(dir.path().join("traces"));
        let p = profile(&[("main;hot", traced(1, 1, A), 1)]);
        for id in [A, B, C] {
            traces.write_named(&format!("{id}.pb.gz"), &p).unwrap();
        }
        let index = dir.path().join("traces/index.jsonl");
        fs::write(&index, line_at(A, 1, 10) + &line_at(B, 2, 10)).unwrap();
        let catalog = Catalog::new(dir.path()).unwrap();
        // Trace ID -> sample count, one row per trace file.
        let counts = |catalog: &Catalog| {
            let rows = catalog.traces().unwrap();
            let counts: HashMap<String, Option<u64>> = rows
                .iter()
                .map(|r| (r.trace_id.clone(), r.sample_count))
                .collect();
            assert_eq!(counts.len(), rows.len(), "a trace listed twice");
            counts
        };
        let known = |pairs: [(&str, Option<u64>); 3]| {
            pairs
                .into_iter()
                .map(|(id, count)| (id.to_owned(), count))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(
            counts(&catalog),
            known([(A, Some(1)), (B, Some(2)), (C, None)])
        );

        // The recorder appends B's next line, renames the index aside and starts a new one.
        let mut file = fs::OpenOptions::new().append(true).open(&index).unwrap();
        file.write_all(line_at(B, 3, 20).as_bytes()).unwrap();
        drop(file);
        let rotated = dir.path().join("traces/index-20260101T000020Z.jsonl");
        fs::rename(&index, &rotated).unwrap();
        fs::write(&index, line_at(C, 4, 30)).unwrap();
        let expected = known([(A, Some(1)), (B, Some(3)), (C, Some(4))]);
        assert_eq!(counts(&catalog), expected, "nothing lost");
        assert_eq!(counts(&catalog), expected);

        // A server started later reads the rotated index for what the live one lacks; a newer
        // line in the live index wins over an older one in a rotated index.
        fs::OpenOptions::new()
            .append(true)
            .open(&index)
            .unwrap()
            .write_all(line_at(A, 5, 40).as_bytes())
            .unwrap();
        let later = Catalog::new(dir.path()).unwrap();
        assert_eq!(
            counts(&later),
            known([(A, Some(5)), (B, Some(3)), (C, Some(4))])
        );
        // Retention deleted a trace file: its lines go, the others stay.
        fs::remove_file(dir.path().join(format!("traces/{B}.pb.gz"))).unwrap();
        fs::remove_file(&rotated).unwrap();
        assert_eq!(counts(&later).get(A), Some(&Some(5)));
        assert_eq!(counts(&later).len(), 2);
    }

    /// A directory holding one interval profile (`main;hot`), its writer and the file's name.
    fn one_interval() -> (tempfile::TempDir, ProfileWriter, &'static str) {
        let dir = tempfile::tempdir().unwrap();
        let writer = ProfileWriter::new(dir.path());
        let name = "cpu-20260101T000000Z.pb.gz";
        writer
            .write_named(name, &profile(&[("main;hot", labels(1, 2), 1)]))
            .unwrap();
        (dir, writer, name)
    }

    #[test]
    fn the_listing_leaves_out_symlinks_that_leave_the_directory() {
        let outside = tempfile::tempdir().unwrap();
        ProfileWriter::new(outside.path())
            .write_named(
                "secret.pb.gz",
                &profile(&[("main;outside_secret", labels(1, 2), 1)]),
            )
            .unwrap();
        let (dir, _, name) = one_interval();
        let secret = outside.path().join("secret.pb.gz");
        std::os::unix::fs::symlink(&secret, dir.path().join("cpu-20260101T000100Z.pb.gz")).unwrap();
        std::os::unix::fs::symlink(dir.path().join(name), dir.path().join("alias.pb.gz")).unwrap();
        fs::create_dir(dir.path().join("traces")).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join(format!("traces/{A}.pb.gz"))).unwrap();

        let catalog = Catalog::new(dir.path()).unwrap();
        let names: Vec<String> = catalog
            .profiles()
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(
            names,
            ["alias.pb.gz", name],
            "a link inside stays, one out goes"
        );
        assert!(
            catalog.traces().unwrap().is_empty(),
            "a trace file linked out is no trace"
        );
    }

    #[test]
    fn analyses_are_read_again_when_the_file_changes() {
        let (dir, writer, name) = one_interval();
        let catalog = Catalog::new(dir.path()).unwrap();
        let file = catalog.file(name).unwrap();
        let first = catalog.analysis(&file).unwrap();
        assert!(Arc::ptr_eq(&first, &catalog.analysis(&file).unwrap()));
        assert_eq!(first.top.samples, 1);
        assert_eq!(first.processes.len(), 1);
        assert_eq!(first.threads[0].thread.tid, Some(2));
        let svg = first.flame_graph().unwrap().unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("hot"));

        writer
            .write_named(
                name,
                &profile(&[
                    ("main;hot", labels(1, 2), 1),
                    ("main;cold", labels(1, 3), 2),
                ]),
            )
            .unwrap();
        let second = catalog.analysis(&catalog.file(name).unwrap()).unwrap();
        assert_eq!(second.top.samples, 3);
        assert_eq!(catalog.summary(&file).unwrap().samples, 3);
        assert_eq!(catalog.profiles().unwrap().len(), 1);
        fs::remove_file(dir.path().join(name)).unwrap();
        assert!(catalog.analysis(&file).unwrap_err().is_not_found());
        assert_eq!(catalog.file(name).unwrap_err(), Refusal::NotFound);
    }
}
