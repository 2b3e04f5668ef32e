//! The `report` command: a merged report of a selection (to stdout or `--output`), or one report
//! per profile written beside it (`--each`, each written whole through a new temporary file:
//! a link planted under a report's name is replaced, not followed).

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{
    files::ProfileFile,
    flame::{self, Labels},
    folded::Folded,
    select::{self, Selection},
    stacks::{ProfileMeta, StackSample, ValueKind},
    top::{Order, TopBuilder, format_nanos},
    utc,
};
use crate::safe_file;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no profiles in {0}")]
    NoProfiles(PathBuf),
    #[error("no samples selected in {path} ({detail})")]
    Empty { path: PathBuf, detail: String },
    #[error("no profile in {path} has {value} values ({detail})")]
    NoValue {
        path: PathBuf,
        /// The sample type asked for (`off_cpu`).
        value: &'static str,
        detail: String,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("drawing the flame graph failed")]
    Render(#[source] io::Error),
}

/// What a report is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// The top functions, as `go tool pprof -top` prints them.
    Text,
    /// A flame graph.
    Svg,
    /// Folded stacks (`comm (pid);thread (tid);outer;…;leaf value`), for other tools.
    Folded,
}

impl ReportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::Text => "txt",
            ReportFormat::Svg => "svg",
            ReportFormat::Folded => "folded",
        }
    }

    /// The format a file name asks for by its extension.
    pub fn of_path(path: &Path) -> Option<ReportFormat> {
        match path.extension()?.to_str()? {
            "svg" => Some(ReportFormat::Svg),
            "folded" => Some(ReportFormat::Folded),
            "txt" => Some(ReportFormat::Text),
            _ => None,
        }
    }
}

/// What one `profiler report` run reads and writes.
#[derive(Clone, Debug)]
pub struct ReportConfig {
    /// A directory of profiles, or one profile.
    pub path: PathBuf,
    pub selection: Selection,
    pub options: Options,
    /// `None`: by `output`'s extension, else text (with `each`: text and svg).
    pub format: Option<ReportFormat>,
    /// Where the merged report goes; `None`: stdout.
    pub output: Option<PathBuf>,
    /// One report per profile, written beside it, instead of a merged one.
    pub each: bool,
}

/// Runs `profiler report`.
pub fn run(config: &ReportConfig) -> Result<(), ReportError> {
    let ReportConfig {
        path,
        selection,
        options,
        ..
    } = config;
    if config.each {
        let formats = match config.format {
            Some(format) => vec![format],
            None => vec![ReportFormat::Text, ReportFormat::Svg],
        };
        let written = each(path, selection, options, &formats)?;
        let mut stdout = io::stdout().lock();
        for path in written {
            let _ = writeln!(stdout, "{}", path.display());
        }
        return Ok(());
    }
    let format = config
        .format
        .or_else(|| config.output.as_deref().and_then(ReportFormat::of_path))
        .unwrap_or(ReportFormat::Text);
    let text = merged(path, selection, options, format)?;
    match &config.output {
        Some(path) => fs::write(path, text).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        }),
        None => io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|source| ReportError::Write {
                path: PathBuf::from("stdout"),
                source,
            }),
    }
}

/// How reports are drawn.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Functions in a text report.
    pub top: usize,
    pub order: Order,
    /// `None`: CPU time for a directory; a profile's own default type (`off_cpu` for an
    /// `offcpu-*` file) for one profile and for each of `--each`.
    pub value: Option<ValueKind>,
}

/// What a report covers, for its header and title.
struct Covered<'a> {
    files: Vec<(ProfileFile, ProfileMeta)>,
    selection: &'a Selection,
    value: ValueKind,
    /// Profiles read but left out: their samples lack the value.
    lacking: usize,
}

impl Covered<'_> {
    fn window(&self) -> Option<(SystemTime, SystemTime)> {
        let start = self.files.iter().filter_map(|(_, m)| m.start).min()?;
        let end = self.files.iter().filter_map(|(_, m)| m.end()).max()?;
        Some((start, end))
    }

    fn header(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match self.files.as_slice() {
            [(file, meta)] => {
                lines.push(format!("File: {}", file.name));
                lines.push(format!("Kind: {}", file.kind.as_str()));
                lines.extend(meta.comments.iter().cloned());
            }
            files => lines.push(format!(
                "Files: {} profiles, {} to {}",
                files.len(),
                files.first().map_or("", |(f, _)| f.name.as_str()),
                files.last().map_or("", |(f, _)| f.name.as_str())
            )),
        }
        if self.lacking > 0 {
            lines.push(format!(
                "Left out: {} without {} values",
                profiles(self.lacking),
                self.value.type_name()
            ));
        }
        if let Some((start, end)) = self.window() {
            let length = end.duration_since(start).unwrap_or_default();
            lines.push(format!(
                "Time: {} to {} ({})",
                utc(start),
                utc(end),
                format_nanos(length.as_nanos() as i64)
            ));
        }
        let selection = self.selection.describe();
        if !selection.is_empty() {
            lines.push(format!("Selection: {selection}"));
        }
        lines
    }

    fn title(&self) -> String {
        let what = self.value.title();
        match self.files.as_slice() {
            [(file, _)] => format!("{what}: {}", file.name),
            files => format!("{what}: {} profiles", files.len()),
        }
    }

    fn subtitle(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some((start, end)) = self.window() {
            parts.push(format!("{} to {}", utc(start), utc(end)));
        }
        if let [(_, meta)] = self.files.as_slice()
            && let Some(trigger) = meta.trigger()
        {
            parts.push(trigger.to_owned());
        }
        let selection = self.selection.describe();
        if !selection.is_empty() {
            parts.push(selection);
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The value a report of `meta`'s profile weighs by: the one asked for, else the profile's.
fn value_for(options: &Options, meta: &ProfileMeta) -> ValueKind {
    options
        .value
        .or_else(|| meta.default_value())
        .unwrap_or_default()
}

/// The report of everything `selection` takes from `path`, in `format`.
pub fn merged(
    path: &Path,
    selection: &Selection,
    options: &Options,
    format: ReportFormat,
) -> Result<String, ReportError> {
    // A directory is CPU time unless asked; one profile is weighed by its own default type.
    let asked = options
        .value
        .or_else(|| path.is_dir().then_some(ValueKind::Cpu));
    let files =
        select::merged_files(path, selection, asked.unwrap_or_default()).map_err(|source| {
            ReportError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
    if files.is_empty() {
        return Err(ReportError::NoProfiles(path.to_owned()));
    }
    let mut value = asked;
    let mut top = None;
    let mut folded = Folded::default();
    let mut covered = Covered {
        files: Vec::new(),
        selection,
        value: asked.unwrap_or_default(),
        lacking: 0,
    };
    let mut read = Read::default();
    for file in &files {
        let Some(loaded) = load(selection, file) else {
            continue;
        };
        let meta = &loaded.stacks.meta;
        let value = *value.get_or_insert_with(|| value_for(options, meta));
        covered.value = value;
        if !read.count(meta, value) {
            covered.lacking += 1;
            continue;
        }
        if !carries(&loaded.stacks.samples, value) {
            continue;
        }
        top.get_or_insert_with(|| TopBuilder::new(value))
            .add(&loaded.stacks.samples);
        folded.add(&loaded.stacks.samples, value);
        covered.files.push((loaded.file, loaded.stacks.meta));
    }
    match top {
        Some(top) if !folded.is_empty() => render(format, top, &folded, &covered, options),
        _ => Err(read.nothing(path, selection, covered.value)),
    }
}

/// What the profiles read said, for the error when none is reported on.
#[derive(Default)]
struct Read {
    /// Profiles read.
    profiles: usize,
    /// Of those, the ones with the value.
    with_value: usize,
    /// The sample types of the others, for the message.
    other_types: Vec<String>,
}

impl Read {
    /// Counts a profile read; whether it has `value`.
    fn count(&mut self, meta: &ProfileMeta, value: ValueKind) -> bool {
        self.profiles += 1;
        if meta.has(value) {
            self.with_value += 1;
            return true;
        }
        for t in &meta.sample_types {
            if !self.other_types.contains(t) {
                self.other_types.push(t.clone());
            }
        }
        false
    }

    /// The error when nothing was reported: no profile had the value, or the selection kept
    /// no sample.
    fn nothing(&self, path: &Path, selection: &Selection, value: ValueKind) -> ReportError {
        if self.profiles == 0 || self.with_value > 0 {
            return empty(path, selection, self.profiles);
        }
        let mut detail = format!("{} read", profiles(self.profiles));
        if !self.other_types.is_empty() {
            detail.push_str(", of sample types ");
            detail.push_str(&self.other_types.join(", "));
        }
        if value.is_off_cpu() {
            detail.push_str("; off-CPU profiles come from `profiler record --off-cpu`");
        }
        ReportError::NoValue {
            path: path.to_owned(),
            value: value.type_name(),
            detail,
        }
    }
}

/// Whether any of `samples` is worth something in `value` (a trace file of a recording with
/// off-CPU holds CPU samples worth no off-CPU time, and the other way round): a profile whose
/// samples are all worth nothing is no part of the report.
fn carries(samples: &[StackSample], value: ValueKind) -> bool {
    samples.iter().any(|s| value.of(s) != 0)
}

/// `1 profile`, `2 profiles`.
fn profiles(n: usize) -> String {
    format!("{n} profile{}", if n == 1 { "" } else { "s" })
}

/// One report per profile, in each of `formats`, written beside it. Returns the files written.
pub fn each(
    path: &Path,
    selection: &Selection,
    options: &Options,
    formats: &[ReportFormat],
) -> Result<Vec<PathBuf>, ReportError> {
    let files = select::each_files(path).map_err(|source| ReportError::Read {
        path: path.to_owned(),
        source,
    })?;
    if files.is_empty() {
        return Err(ReportError::NoProfiles(path.to_owned()));
    }
    let mut written = Vec::new();
    let mut read = Read::default();
    let mut last_value = options.value.unwrap_or_default();
    for file in &files {
        let Some(loaded) = load(selection, file) else {
            continue;
        };
        let value = value_for(options, &loaded.stacks.meta);
        last_value = value;
        if !read.count(&loaded.stacks.meta, value) {
            tracing::debug!("{} has no {} values", file.name, value.type_name());
            continue;
        }
        if !carries(&loaded.stacks.samples, value) {
            continue;
        }
        let mut top = TopBuilder::new(value);
        top.add(&loaded.stacks.samples);
        let folded = Folded::new(&loaded.stacks.samples, value);
        let covered = Covered {
            files: vec![(loaded.file, loaded.stacks.meta)],
            selection,
            value,
            lacking: 0,
        };
        for &format in formats {
            let text = render(format, top.clone(), &folded, &covered, options)?;
            let out = beside(&file.path, format);
            // Beside profiles, in a directory others may write to: never through a planted link.
            safe_file::replace(&out, |mut file| file.write_all(text.as_bytes())).map_err(
                |source| ReportError::Write {
                    path: out.clone(),
                    source,
                },
            )?;
            written.push(out);
        }
    }
    if written.is_empty() {
        return Err(read.nothing(path, selection, last_value));
    }
    Ok(written)
}

/// `<dir>/<name>.<ext>` for `<dir>/<name>.pb.gz`.
fn beside(profile: &Path, format: ReportFormat) -> PathBuf {
    let name = profile
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".pb.gz")
        .or_else(|| name.strip_suffix(".pb"))
        .unwrap_or(&name);
    profile.with_file_name(format!("{stem}.{}", format.extension()))
}

/// Reads a profile; an unreadable one is skipped with a warning (a vanished one quietly).
fn load(selection: &Selection, file: &ProfileFile) -> Option<select::Loaded> {
    match selection.load(file) {
        Ok(loaded) => Some(loaded),
        Err(err) if err.is_not_found() => {
            tracing::debug!("{} vanished while reading", file.path.display());
            None
        }
        Err(err) => {
            tracing::warn!("skipping {}", crate::error_chain(&err));
            None
        }
    }
}

fn empty(path: &Path, selection: &Selection, read: usize) -> ReportError {
    let mut detail = format!("{} read", profiles(read));
    let described = selection.describe();
    if !described.is_empty() {
        detail.push_str(", selection: ");
        detail.push_str(&described);
    }
    ReportError::Empty {
        path: path.to_owned(),
        detail,
    }
}

fn render(
    format: ReportFormat,
    top: TopBuilder,
    folded: &Folded,
    covered: &Covered<'_>,
    options: &Options,
) -> Result<String, ReportError> {
    match format {
        ReportFormat::Text => Ok(top
            .finish(options.order)
            .render(options.top, &covered.header())),
        ReportFormat::Folded => Ok(folded.to_text()),
        ReportFormat::Svg => {
            let title = covered.title();
            let subtitle = covered.subtitle();
            flame::flame_graph(
                folded,
                Labels {
                    title: &title,
                    subtitle: subtitle.as_deref(),
                    value: covered.value,
                },
            )
            .map_err(ReportError::Render)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileWriter;
    use crate::report::stacks::tests::{labels, mixed_profile, off_cpu_profile, profile, traced};
    use crate::test_support::Victim;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn options() -> Options {
        Options {
            top: 20,
            order: Order::Flat,
            value: Some(ValueKind::Cpu),
        }
    }

    fn recorded() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let writer = ProfileWriter::new(dir.path());
        writer
            .write_named(
                "cpu-20260101T000000Z.pb.gz",
                &profile(&[
                    ("main;work;hot", labels(1, 1), 6),
                    ("main;cold", traced(2, 3, TRACE), 2),
                ]),
            )
            .unwrap();
        writer
            .write_named(
                "cpu-20260101T000010Z.pb.gz",
                &profile(&[("main;work;hot", labels(1, 1), 2)]),
            )
            .unwrap();
        fs::write(dir.path().join("cpu-20260101T000020Z.pb.gz"), b"corrupt").unwrap();
        dir
    }

    #[test]
    fn merges_the_interval_files_and_skips_a_corrupt_one() {
        let dir = recorded();
        let text = merged(
            dir.path(),
            &Selection::default(),
            &options(),
            ReportFormat::Text,
        )
        .unwrap();
        assert!(
            text.starts_with(
                "Files: 2 profiles, cpu-20260101T000000Z.pb.gz to cpu-20260101T000010Z.pb.gz\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n      80ms 80.00% 80.00%       80ms 80.00%  hot\n"),
            "{text}"
        );
        assert!(
            text.contains("\n      20ms 20.00%   100%       20ms 20.00%  cold\n"),
            "{text}"
        );
        let folded = merged(
            dir.path(),
            &Selection::default(),
            &options(),
            ReportFormat::Folded,
        )
        .unwrap();
        assert_eq!(
            folded,
            "app1 (1);worker1 (1);main;work;hot 80000000\napp2 (2);worker3 (3);main;cold 20000000\n"
        );
        let svg = merged(
            dir.path(),
            &Selection {
                pids: vec![2],
                ..Selection::default()
            },
            &options(),
            ReportFormat::Svg,
        )
        .unwrap();
        assert!(svg.contains("cold") && !svg.contains(">hot<"), "{svg}");
        assert!(svg.contains("CPU time: cpu-20260101T000000Z.pb.gz"));
        assert!(svg.contains("pid 2"));
    }

    #[test]
    fn an_empty_selection_is_one_clear_error() {
        let dir = recorded();
        let err = merged(
            dir.path(),
            &Selection {
                pids: vec![99],
                ..Selection::default()
            },
            &options(),
            ReportFormat::Text,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no samples selected in {} (2 profiles read, selection: pid 99)",
                dir.path().display()
            )
        );
        let missing = dir.path().join("nothing");
        let err = merged(
            &missing,
            &Selection::default(),
            &options(),
            ReportFormat::Text,
        )
        .unwrap_err();
        assert!(crate::error_chain(&err).contains("No such file"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = merged(
            empty.path(),
            &Selection::default(),
            &options(),
            ReportFormat::Text,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("no profiles in"), "{err}");
    }

    #[test]
    fn each_profile_gets_its_report_beside_it() {
        let dir = recorded();
        let written = each(
            dir.path(),
            &Selection {
                trace: Some(TRACE.into()),
                ..Selection::default()
            },
            &options(),
            &[ReportFormat::Text, ReportFormat::Svg],
        )
        .unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["cpu-20260101T000000Z.txt", "cpu-20260101T000000Z.svg"]
        );
        let text = fs::read_to_string(&written[0]).unwrap();
        assert!(text.contains("Selection: trace 4bf9"), "{text}");
        assert!(text.contains("trigger: cpu utilization"), "{text}");
    }

    /// Links planted where `--each` writes its reports: the reports replace the links, and
    /// the files they pointed to stay untouched.
    #[test]
    fn each_never_writes_through_a_planted_link() {
        let dir = recorded();
        let victim = Victim::new(dir.path());
        for name in ["cpu-20260101T000000Z.txt", "cpu-20260101T000000Z.svg"] {
            victim.plant(&dir.path().join(name));
        }
        let written = each(
            dir.path(),
            &Selection::default(),
            &options(),
            &[ReportFormat::Text, ReportFormat::Svg],
        )
        .unwrap();
        victim.assert_untouched();
        for path in &written {
            assert!(fs::symlink_metadata(path).unwrap().is_file(), "{path:?}");
        }
        assert!(fs::read_to_string(&written[0]).unwrap().contains("hot"));
    }

    #[test]
    fn formats_by_extension() {
        assert_eq!(
            ReportFormat::of_path(Path::new("a.svg")),
            Some(ReportFormat::Svg)
        );
        assert_eq!(ReportFormat::of_path(Path::new("a")), None);
        assert_eq!(
            beside(Path::new("/x/cpu-1.pb.gz"), ReportFormat::Folded),
            Path::new("/x/cpu-1.folded")
        );
    }

    /// [`recorded`] with an off-CPU interval beside the first CPU one, and a trace file with
    /// both kinds of samples.
    fn recorded_off_cpu() -> tempfile::TempDir {
        let dir = recorded();
        let writer = ProfileWriter::new(dir.path());
        writer
            .write_named(
                "offcpu-20260101T000000Z.pb.gz",
                &off_cpu_profile(&[
                    ("main;serve;poll;do_poll[k]", traced(2, 3, TRACE), 30),
                    ("main;lock;futex_wait[k]", labels(1, 1), 10),
                ]),
            )
            .unwrap();
        ProfileWriter::new(dir.path().join("traces"))
            .write_named(
                &format!("{TRACE}.pb.gz"),
                &mixed_profile(
                    &[("main;cold", traced(2, 3, TRACE), 2)],
                    &[("main;serve;poll;do_poll[k]", traced(2, 3, TRACE), 30)],
                ),
            )
            .unwrap();
        dir
    }

    fn with_value(value: Option<ValueKind>) -> Options {
        Options { value, ..options() }
    }

    #[test]
    fn off_cpu_reports_read_the_off_cpu_intervals() {
        let dir = recorded_off_cpu();
        let off = with_value(Some(ValueKind::OffCpu));
        let all = Selection::default();
        let text = merged(dir.path(), &all, &off, ReportFormat::Text).unwrap();
        assert!(
            text.starts_with("File: offcpu-20260101T000000Z.pb.gz\nKind: off-cpu\n"),
            "{text}"
        );
        assert!(text.contains("\nType: off_cpu\n"), "{text}");
        assert!(
            text.contains(", 400ms of 400ms total (100%), 40 switches\n"),
            "{text}"
        );
        assert!(
            text.contains("\n     300ms 75.00% 75.00%      300ms 75.00%  do_poll\n"),
            "{text}"
        );
        assert!(
            !text.contains(" hot\n"),
            "CPU intervals are not read: {text}"
        );
        let svg = merged(dir.path(), &all, &off, ReportFormat::Svg).unwrap();
        assert!(
            svg.contains("Off-CPU time: offcpu-20260101T000000Z.pb.gz"),
            "{svg}"
        );
        assert!(
            svg.contains("do_poll (300,000 µs off-CPU, 75.00%)"),
            "{svg}"
        );
        let folded = merged(dir.path(), &all, &off, ReportFormat::Folded).unwrap();
        assert!(
            folded.contains("app2 (2);worker3 (3);main;serve;poll;do_poll 300000000\n"),
            "{folded}"
        );
        let switches = with_value(Some(ValueKind::Switches));
        let text = merged(dir.path(), &all, &switches, ReportFormat::Text).unwrap();
        assert!(
            text.contains("\nType: switches\n") && text.contains("40 of 40 total"),
            "{text}"
        );

        // CPU stays what it was: the CPU intervals only.
        let text = merged(dir.path(), &all, &with_value(None), ReportFormat::Text).unwrap();
        assert!(text.starts_with("Files: 2 profiles, cpu-"), "{text}");
        assert!(
            text.contains("\nType: cpu\n") && !text.contains("do_poll"),
            "{text}"
        );

        // A trace: its file, either value.
        let trace = Selection {
            trace: Some(TRACE.into()),
            ..Selection::default()
        };
        let text = merged(dir.path(), &trace, &off, ReportFormat::Text).unwrap();
        assert!(
            text.contains(&format!("File: traces/{TRACE}.pb.gz")),
            "{text}"
        );
        assert!(
            text.contains("300ms of 300ms total") && !text.contains("cold"),
            "{text}"
        );
        let text = merged(dir.path(), &trace, &options(), ReportFormat::Text).unwrap();
        assert!(
            text.contains("20ms of 20ms total") && !text.contains("do_poll"),
            "{text}"
        );
    }

    #[test]
    fn one_profile_is_weighed_by_its_own_default_type() {
        let dir = recorded_off_cpu();
        let file = dir.path().join("offcpu-20260101T000000Z.pb.gz");
        let text = merged(
            &file,
            &Selection::default(),
            &with_value(None),
            ReportFormat::Text,
        )
        .unwrap();
        assert!(text.contains("\nType: off_cpu\n"), "{text}");
        let cpu = dir.path().join("cpu-20260101T000000Z.pb.gz");
        let text = merged(
            &cpu,
            &Selection::default(),
            &with_value(None),
            ReportFormat::Text,
        )
        .unwrap();
        assert!(text.contains("\nType: cpu\n"), "{text}");
        // Asked for what it lacks: said so, with what it has.
        let err = merged(
            &cpu,
            &Selection::default(),
            &with_value(Some(ValueKind::OffCpu)),
            ReportFormat::Text,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no profile in {} has off_cpu values (1 profile read, of sample types samples, \
                 cpu; off-CPU profiles come from `profiler record --off-cpu`)",
                cpu.display()
            )
        );
        let err = merged(
            &file,
            &Selection::default(),
            &with_value(Some(ValueKind::Cpu)),
            ReportFormat::Text,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("has cpu values (1 profile read, of sample types switches, off_cpu)"),
            "{err}"
        );
    }

    #[test]
    fn profiles_without_the_value_are_left_out_and_said_so() {
        // A directory of trace files only (no interval files): an old trace file without
        // off-CPU types beside one with them.
        let dir = recorded_off_cpu();
        let traces = dir.path().join("traces");
        ProfileWriter::new(&traces)
            .write_named(
                &format!("{}.pb.gz", "ab".repeat(16)),
                &profile(&[("main;old", traced(5, 5, &"ab".repeat(16)), 1)]),
            )
            .unwrap();
        let off = with_value(Some(ValueKind::OffCpu));
        let text = merged(&traces, &Selection::default(), &off, ReportFormat::Text).unwrap();
        assert!(text.contains(&format!("File: {TRACE}.pb.gz\n")), "{text}");
        assert!(
            text.contains("\nLeft out: 1 profile without off_cpu values\n"),
            "{text}"
        );
        assert!(!text.contains("  old\n"), "{text}");
        // With CPU, both have the value: nothing left out.
        let text = merged(
            &traces,
            &Selection::default(),
            &options(),
            ReportFormat::Text,
        )
        .unwrap();
        assert!(
            text.starts_with("Files: 2 profiles") && !text.contains("Left out"),
            "{text}"
        );
        // An off-CPU report of a recording without off-CPU: one clear error.
        let plain = recorded();
        let err = merged(
            plain.path(),
            &Selection::default(),
            &off,
            ReportFormat::Text,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "no profile in {} has off_cpu values (2 profiles read",
                plain.path().display()
            )),
            "{err}"
        );
    }

    #[test]
    fn each_profile_is_reported_by_its_own_value_unless_asked() {
        let dir = recorded_off_cpu();
        let written = each(
            dir.path(),
            &Selection::default(),
            &with_value(None),
            &[ReportFormat::Text],
        )
        .unwrap();
        let off = fs::read_to_string(dir.path().join("offcpu-20260101T000000Z.txt")).unwrap();
        assert!(
            off.contains("\nType: off_cpu\n") && off.contains("do_poll"),
            "{off}"
        );
        let cpu = fs::read_to_string(dir.path().join("cpu-20260101T000000Z.txt")).unwrap();
        assert!(cpu.contains("\nType: cpu\n"), "{cpu}");
        assert_eq!(written.len(), 4, "{written:?}");
        // Asked for off-CPU: only the profiles that have it.
        let written = each(
            dir.path(),
            &Selection::default(),
            &with_value(Some(ValueKind::OffCpu)),
            &[ReportFormat::Folded],
        )
        .unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "offcpu-20260101T000000Z.folded".to_owned(),
                format!("{TRACE}.folded")
            ]
        );
        // A trace file that has the type but never waited is no report (and no failure to
        // draw an empty graph).
        ProfileWriter::new(dir.path().join("traces"))
            .write_named(
                &format!("{TRACE}.pb.gz"),
                &mixed_profile(&[("main;cold", traced(2, 3, TRACE), 2)], &[]),
            )
            .unwrap();
        let written = each(
            dir.path(),
            &Selection::default(),
            &with_value(Some(ValueKind::OffCpu)),
            &[ReportFormat::Svg],
        )
        .unwrap();
        assert_eq!(written.len(), 1, "{written:?}");
    }
}
