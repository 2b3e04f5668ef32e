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
    /// What the profile measures first: CPU time (interval, incident and trace files) or
    /// off-CPU time (`offcpu-*` files).
    pub value: ValueKind,
    /// Samples for CPU, switches for off-CPU.
    pub count: i64,
    /// Nanoseconds of `value`.
    pub total: i64,
    pub top_function: Option<String>,
}

/// CPU and off-CPU time of one thread, or one process, in a profile.
#[derive(Clone, Debug)]
pub struct Usage {
    pub thread: Arc<Thread>,
    /// Threads of a process's row.
    pub threads: usize,
    pub samples: i64,
    pub cpu_ns: i64,
    pub switches: i64,
    pub off_cpu_ns: i64,
    pub services: BTreeSet<Arc<str>>,
}

impl Usage {
    fn new(thread: Arc<Thread>, threads: usize) -> Usage {
        Usage {
            thread,
            threads,
            samples: 0,
            cpu_ns: 0,
            switches: 0,
            off_cpu_ns: 0,
            services: BTreeSet::new(),
        }
    }

    /// Adds values, saturating: a file's values are whatever it says (i64::MAX included).
    fn add(&mut self, other: &Usage) {
        self.samples = self.samples.saturating_add(other.samples);
        self.cpu_ns = self.cpu_ns.saturating_add(other.cpu_ns);
        self.switches = self.switches.saturating_add(other.switches);
        self.off_cpu_ns = self.off_cpu_ns.saturating_add(other.off_cpu_ns);
    }

    /// Its `value` (one of the four a sample has).
    pub fn value(&self, value: ValueKind) -> i64 {
        match value {
            ValueKind::Cpu => self.cpu_ns,
            ValueKind::Samples => self.samples,
            ValueKind::OffCpu => self.off_cpu_ns,
            ValueKind::Switches => self.switches,
        }
    }
}

/// One value of a profile drawn for its page: CPU time, or off-CPU time.
#[derive(Debug)]
pub struct View {
    /// [`ValueKind::Cpu`] or [`ValueKind::OffCpu`].
    pub value: ValueKind,
    pub top: Top,
    pub folded: Folded,
    /// The flame graph with its script, and the one without (for a page that shows another
    /// graph first), each drawn on first use.
    live: OnceLock<Result<String, String>>,
    still: OnceLock<Result<String, String>>,
}

impl View {
    fn new(samples: &[StackSample], value: ValueKind) -> View {
        View {
            value,
            top: Top::new(samples, value, Order::Flat),
            folded: Folded::new(samples, value),
            live: OnceLock::new(),
            still: OnceLock::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.folded.is_empty()
    }

    fn weight(&self) -> usize {
        let drawn = |svg: &OnceLock<Result<String, String>>| {
            svg.get()
                .map_or(0, |svg| svg.as_ref().map_or(0, String::len))
        };
        self.folded.text_len() + drawn(&self.live) + drawn(&self.still)
    }
}

/// The time values a page draws, in the order it lists them.
const VIEWED: [ValueKind; 2] = [ValueKind::Cpu, ValueKind::OffCpu];

/// The value a profile is shown by first: its default type's when that has samples, else the
/// first that has, else its default type's (or CPU).
fn main_value(meta: &ProfileMeta, samples: &[StackSample]) -> ValueKind {
    let present: Vec<ValueKind> = VIEWED.into_iter().filter(|v| meta.has(*v)).collect();
    let default = meta
        .default_value()
        .map(ValueKind::time_kind)
        .filter(|v| present.contains(v))
        .or_else(|| present.first().copied())
        .unwrap_or(ValueKind::Cpu);
    let has_samples = |value: ValueKind| samples.iter().any(|s| value.of(s) > 0);
    if has_samples(default) {
        return default;
    }
    present
        .into_iter()
        .find(|&v| has_samples(v))
        .unwrap_or(default)
}

/// A profile decoded for its page.
#[derive(Debug)]
pub struct Analysis {
    pub file: ProfileFile,
    pub meta: ProfileMeta,
    /// The values the profile has (CPU, off-CPU, or both in a trace file of a recording with
    /// off-CPU); CPU for a profile with neither. The one shown first is [`Analysis::main`].
    pub views: Vec<View>,
    /// By CPU and off-CPU time together, most first.
    pub threads: Vec<Usage>,
    pub processes: Vec<Usage>,
    main: ValueKind,
}

impl Analysis {
    fn new(file: ProfileFile, stacks: Stacks) -> Analysis {
        let main = main_value(&stacks.meta, &stacks.samples);
        let mut views: Vec<View> = VIEWED
            .into_iter()
            .filter(|&v| v == main || stacks.meta.has(v))
            .map(|v| View::new(&stacks.samples, v))
            .collect();
        // The main one first.
        views.sort_by_key(|v| v.value != main);
        let (threads, processes) = usage(&stacks.samples);
        Analysis {
            file,
            meta: stacks.meta,
            views,
            threads,
            processes,
            main,
        }
    }

    /// The view a page shows first: the profile's default value, unless it has no samples and
    /// another has.
    pub fn main(&self) -> &View {
        self.view(self.main).unwrap_or(&self.views[0])
    }

    /// The view of `value` (a time or its count), when the profile has that value.
    pub fn view(&self, value: ValueKind) -> Option<&View> {
        self.views.iter().find(|v| v.value == value.time_kind())
    }

    /// The views with samples, the main one first (a trace without off-CPU samples has no
    /// off-CPU graph to show).
    pub fn drawn(&self) -> impl Iterator<Item = &View> {
        self.views.iter().filter(|v| !v.is_empty())
    }

    /// The flame graph of `view`, drawn on first use, for inline use in a page: with its
    /// script (`still == false`: the page's first graph), or without and with IDs of its own
    /// (a second graph on the page); `None` for a view without samples.
    pub fn flame_graph<'a>(
        &'a self,
        view: &'a View,
        still: bool,
    ) -> Option<Result<&'a str, &'a str>> {
        if view.is_empty() {
            return None;
        }
        let cell = if still { &view.still } else { &view.live };
        let drawn = cell.get_or_init(|| {
            let title = match files::trace_id_of_file(self.file.name.trim_start_matches("traces/"))
            {
                Some(id) if self.file.kind == ProfileKind::Trace => {
                    format!("Trace {id}: {}", view.value.title())
                }
                _ => format!("{}: {}", view.value.title(), self.file.name),
            };
            let subtitle = self.subtitle();
            let labels = Labels {
                title: &title,
                subtitle: subtitle.as_deref(),
                value: view.value,
            };
            let svg = if still {
                let prefix = format!("still-{}-", view.value.flag());
                flame::still_flame_graph(&view.folded, labels, &prefix)
            } else {
                flame::flame_graph(&view.folded, labels).map(|svg| flame::without_onload(&svg))
            };
            svg.map(|svg| flame::for_html(&svg).to_owned())
                .map_err(|err| err.to_string())
        });
        Some(drawn.as_deref().map_err(String::as_str))
    }

    /// About how much memory it holds: its stacks and its drawings dominate.
    fn weight(&self) -> usize {
        self.views.iter().map(View::weight).sum()
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
            .or_insert_with(|| Usage::new(sample.thread.clone(), 1));
        usage.add(&Usage {
            samples: sample.count,
            cpu_ns: sample.cpu_ns,
            switches: sample.switches,
            off_cpu_ns: sample.off_cpu_ns,
            ..Usage::new(sample.thread.clone(), 1)
        });
        if let Some(service) = &sample.service {
            usage.services.insert(service.clone());
        }
    }
    let mut processes: HashMap<(Option<i64>, Arc<str>), Usage> = HashMap::new();
    for thread in threads.values() {
        let key = (thread.thread.pid, thread.thread.comm.clone());
        let process = processes.entry(key).or_insert_with(|| {
            let process = Thread {
                pid: thread.thread.pid,
                comm: thread.thread.comm.clone(),
                ..Thread::default()
            };
            Usage::new(Arc::new(process), 0)
        });
        process.threads += 1;
        process.add(thread);
        process.services.extend(thread.services.iter().cloned());
    }
    let by_time = |mut rows: Vec<Usage>| {
        rows.sort_by(|a, b| {
            let time = |u: &Usage| u.cpu_ns.saturating_add(u.off_cpu_ns);
            time(b).cmp(&time(a)).then_with(|| a.thread.cmp(&b.thread))
        });
        rows
    };
    (
        by_time(threads.into_values().collect()),
        by_time(processes.into_values().collect()),
    )
}

/// A trace with a file, described by its latest index line when there is one.
#[derive(Clone, Debug)]
pub struct TraceRow {
    pub trace_id: String,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
    pub sample_count: Option<u64>,
    /// The trace's CPU and off-CPU time in its file; `None` when its line does not say (lines
    /// written before these fields, which read as 0 both).
    pub cpu_ns: Option<u64>,
    pub off_cpu_ns: Option<u64>,
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
        let times = entry
            .map(|e| (e.cpu_nanoseconds, e.off_cpu_nanoseconds))
            .filter(|&times| times != (0, 0));
        TraceRow {
            trace_id: trace_id.to_owned(),
            first: entry.and_then(|e| time(&e.first_sample_time)),
            last: entry
                .and_then(|e| time(&e.last_sample_time))
                .or_else(|| Some(DateTime::<Utc>::from(modified))),
            sample_count: entry.map(|e| e.sample_count),
            cpu_ns: times.map(|(cpu, _)| cpu),
            off_cpu_ns: times.map(|(_, off)| off),
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
            Some(analysis) => {
                let top = &analysis.main().top;
                Summary {
                    meta: analysis.meta.clone(),
                    value: analysis.main().value,
                    count: top.count,
                    total: top.total,
                    top_function: top.top_function().map(str::to_owned),
                }
            }
            None => {
                let stacks = Stacks::from_profile(&files::read(&file.path)?);
                let value = main_value(&stacks.meta, &stacks.samples);
                let top = Top::new(&stacks.samples, value, Order::Flat);
                Summary {
                    meta: stacks.meta,
                    value,
                    count: top.count,
                    total: top.total,
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
    use crate::report::stacks::tests::{labels, mixed_profile, off_cpu_profile, profile, traced};

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
            cpu_nanoseconds: count * 10_000_000,
            off_cpu_nanoseconds: 0,
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
        assert_eq!(first.main().top.count, 1);
        assert_eq!(first.processes.len(), 1);
        assert_eq!(first.threads[0].thread.tid, Some(2));
        assert_eq!(first.views.len(), 1);
        let svg = first.flame_graph(first.main(), false).unwrap().unwrap();
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
        assert_eq!(second.main().top.count, 3);
        assert_eq!(catalog.summary(&file).unwrap().count, 3);
        assert_eq!(catalog.profiles().unwrap().len(), 1);
        fs::remove_file(dir.path().join(name)).unwrap();
        assert!(catalog.analysis(&file).unwrap_err().is_not_found());
        assert_eq!(catalog.file(name).unwrap_err(), Refusal::NotFound);
    }

    #[test]
    fn off_cpu_intervals_are_analysed_by_their_time_off_the_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let name = "offcpu-20260101T000000Z.pb.gz";
        ProfileWriter::new(dir.path())
            .write_named(
                name,
                &off_cpu_profile(&[
                    ("main;poll;do_poll[k]", labels(1, 2), 30),
                    ("main;lock;futex[k]", labels(1, 3), 10),
                ]),
            )
            .unwrap();
        let catalog = Catalog::new(dir.path()).unwrap();
        let file = catalog.file(name).unwrap();
        assert_eq!(file.kind, ProfileKind::OffCpu);
        let summary = catalog.summary(&file).unwrap();
        assert_eq!(summary.value, ValueKind::OffCpu);
        assert_eq!((summary.count, summary.total), (40, 400_000_000));
        assert_eq!(summary.top_function.as_deref(), Some("do_poll"));
        let analysis = catalog.analysis(&file).unwrap();
        let values: Vec<ValueKind> = analysis.views.iter().map(|v| v.value).collect();
        assert_eq!(values, [ValueKind::OffCpu]);
        assert!(analysis.view(ValueKind::Cpu).is_none());
        assert!(analysis.view(ValueKind::Switches).is_some());
        let svg = analysis
            .flame_graph(analysis.main(), false)
            .unwrap()
            .unwrap();
        assert!(
            svg.contains("Off-CPU time: offcpu-20260101T000000Z.pb.gz"),
            "{svg}"
        );
        assert!(svg.contains("µs off-CPU"));
        assert_eq!(analysis.threads[0].thread.tid, Some(2));
        assert_eq!(analysis.threads[0].off_cpu_ns, 300_000_000);
        assert_eq!(analysis.processes[0].switches, 40);
        // The summary of the cached analysis says the same.
        let again = Catalog::new(dir.path()).unwrap();
        again.analysis(&file).unwrap();
        assert_eq!(again.summary(&file).unwrap().total, 400_000_000);
    }

    #[test]
    fn a_trace_file_shows_cpu_and_off_cpu_when_it_has_both() {
        let dir = tempfile::tempdir().unwrap();
        let traces = ProfileWriter::new(dir.path().join("traces"));
        traces
            .write_named(
                &format!("{A}.pb.gz"),
                &mixed_profile(
                    &[("main;compute", traced(1, 1, A), 2)],
                    &[("main;call;recv[k]", traced(1, 1, A), 6)],
                ),
            )
            .unwrap();
        // A recording with off-CPU, a trace that never blocked long enough.
        traces
            .write_named(
                &format!("{B}.pb.gz"),
                &mixed_profile(&[("main;compute", traced(1, 1, B), 2)], &[]),
            )
            .unwrap();
        let catalog = Catalog::new(dir.path()).unwrap();
        let both = catalog
            .analysis(&catalog.file(&format!("traces/{A}.pb.gz")).unwrap())
            .unwrap();
        let drawn: Vec<ValueKind> = both.drawn().map(|v| v.value).collect();
        assert_eq!(drawn, [ValueKind::Cpu, ValueKind::OffCpu]);
        assert_eq!(both.main().value, ValueKind::Cpu);
        let off = both.view(ValueKind::OffCpu).unwrap();
        assert_eq!(off.top.total, 60_000_000);
        assert_eq!(off.top.top_function(), Some("recv"));
        let still = both.flame_graph(off, true).unwrap().unwrap();
        assert!(
            still.starts_with("<svg") && !still.contains("<script"),
            "{still}"
        );
        assert!(
            still.contains(&format!("Trace {A}: Off-CPU time")),
            "{still}"
        );
        assert!(still.contains(r#"id="still-off-cpu-frames""#), "{still}");
        let live = both.flame_graph(both.main(), false).unwrap().unwrap();
        assert!(live.contains("<script") && live.contains(&format!("Trace {A}: CPU time")));
        assert_eq!(both.threads[0].cpu_ns, 20_000_000);
        assert_eq!(both.threads[0].off_cpu_ns, 60_000_000);

        let cpu_only = catalog
            .analysis(&catalog.file(&format!("traces/{B}.pb.gz")).unwrap())
            .unwrap();
        assert_eq!(cpu_only.views.len(), 2, "it has the type");
        let drawn: Vec<ValueKind> = cpu_only.drawn().map(|v| v.value).collect();
        assert_eq!(drawn, [ValueKind::Cpu], "but nothing to draw off the CPU");
        assert!(
            cpu_only
                .flame_graph(cpu_only.view(ValueKind::OffCpu).unwrap(), true)
                .is_none()
        );
    }

    #[test]
    fn a_trace_that_only_waited_is_shown_by_its_off_cpu_time() {
        let dir = tempfile::tempdir().unwrap();
        ProfileWriter::new(dir.path().join("traces"))
            .write_named(
                &format!("{A}.pb.gz"),
                &mixed_profile(&[], &[("main;call;recv[k]", traced(1, 1, A), 6)]),
            )
            .unwrap();
        let catalog = Catalog::new(dir.path()).unwrap();
        let file = catalog.file(&format!("traces/{A}.pb.gz")).unwrap();
        assert_eq!(
            catalog.analysis(&file).unwrap().main().value,
            ValueKind::OffCpu
        );
        assert_eq!(catalog.summary(&file).unwrap().value, ValueKind::OffCpu);
    }

    #[test]
    fn trace_rows_carry_the_index_times_and_old_lines_say_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let traces = ProfileWriter::new(dir.path().join("traces"));
        let p = profile(&[("main;hot", traced(1, 1, A), 1)]);
        traces.write_named(&format!("{A}.pb.gz"), &p).unwrap();
        traces.write_named(&format!("{B}.pb.gz"), &p).unwrap();
        let mut entry: serde_json::Value = serde_json::from_str(&line(A, 2)).unwrap();
        entry["off_cpu_nanoseconds"] = 45_000_000.into();
        // B's line as written before the fields existed.
        let mut old: serde_json::Value = serde_json::from_str(&line(B, 3)).unwrap();
        let old_fields = old.as_object_mut().unwrap();
        old_fields.remove("cpu_nanoseconds");
        old_fields.remove("off_cpu_nanoseconds");
        fs::write(
            dir.path().join("traces/index.jsonl"),
            format!("{entry}\n{old}\n"),
        )
        .unwrap();
        let rows = Catalog::new(dir.path()).unwrap().traces().unwrap();
        let a = rows.iter().find(|r| r.trace_id == A).unwrap();
        assert_eq!(
            (a.cpu_ns, a.off_cpu_ns),
            (Some(20_000_000), Some(45_000_000))
        );
        let b = rows.iter().find(|r| r.trace_id == B).unwrap();
        assert_eq!(b.sample_count, Some(3), "an old line still reads");
        assert_eq!((b.cpu_ns, b.off_cpu_ns), (None, None));
    }
}
