//! Reading the pprof files the profiler writes: decoded, indexed, stacks and labels.

use std::{
    collections::HashMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, ensure};
use prost::Message;

use crate::*;

// ---------------------------------------------------------------------------------------------
// Reading profiles

/// One decoded pprof file, with its tables indexed by ID.
pub struct Pprof {
    pub path: PathBuf,
    pub profile: Profile,
    locations: HashMap<u64, usize>,
    functions: HashMap<u64, usize>,
    mappings: HashMap<u64, usize>,
}

/// One frame of a sample's stack, after inline expansion.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Function name ("" when the profiler could not name it).
    pub function: String,
    /// Filename of the location's mapping ("" when the location has none).
    pub mapping: String,
}

impl Frame {
    pub fn is_kernel(&self) -> bool {
        self.mapping == KERNEL_MAPPING
    }
}

/// Every CPU profile (`cpu-*.pb.gz`) in `dir`, decoded, in time order (by `time_nanos`). Fails on
/// a `.pb.gz` whose name is neither `cpu-<%Y%m%dT%H%M%SZ>[_NN].pb.gz` nor `offcpu-` and the same.
pub fn read_profiles(dir: &Path) -> Result<Vec<Pprof>> {
    read_profiles_of(dir, CPU_PREFIX)
}

/// Every off-CPU profile (`offcpu-*.pb.gz`, `--off-cpu`) in `dir`, as [`read_profiles`].
pub fn read_off_cpu_profiles(dir: &Path) -> Result<Vec<Pprof>> {
    read_profiles_of(dir, OFF_CPU_PREFIX)
}

const CPU_PREFIX: &str = "cpu-";
const OFF_CPU_PREFIX: &str = "offcpu-";

fn read_profiles_of(dir: &Path, prefix: &str) -> Result<Vec<Pprof>> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".pb.gz") {
            ensure!(
                is_interval_file_name(&name, CPU_PREFIX)
                    || is_interval_file_name(&name, OFF_CPU_PREFIX),
                "unexpected file name {name:?}"
            );
            if name.starts_with(prefix) {
                paths.push(path);
            }
        }
    }
    let mut profiles = paths
        .into_iter()
        .map(|p| Pprof::read(&p))
        .collect::<Result<Vec<_>>>()?;
    profiles.sort_by_key(|p| (p.profile.time_nanos, p.path.clone()));
    // Names sort in time order (a `_NN` suffix sorts after the name without it).
    let by_time: Vec<&Path> = profiles.iter().map(|p| p.path.as_path()).collect();
    let mut by_name = by_time.clone();
    by_name.sort();
    ensure!(
        by_name == by_time,
        "file names do not sort in time order: {by_name:?}, by start time {by_time:?}"
    );
    Ok(profiles)
}

/// Files left in `dir` that are not finished profiles' names yet look like temp files.
pub fn leftover_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut left = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(".tmp") {
            left.push(path);
        }
    }
    Ok(left)
}

/// `cpu-YYYYmmddTHHMMSSZ.pb.gz` or `cpu-YYYYmmddTHHMMSSZ_NN.pb.gz`.
pub fn is_profile_file_name(name: &str) -> bool {
    is_interval_file_name(name, CPU_PREFIX)
}

/// `<prefix>YYYYmmddTHHMMSSZ.pb.gz` or `<prefix>YYYYmmddTHHMMSSZ_NN.pb.gz`.
fn is_interval_file_name(name: &str, prefix: &str) -> bool {
    let Some(stem) = name
        .strip_prefix(prefix)
        .and_then(|n| n.strip_suffix(".pb.gz"))
    else {
        return false;
    };
    let (stamp, suffix) = match stem.split_once('_') {
        Some((stamp, n)) => (stamp, Some(n)),
        None => (stem, None),
    };
    let b = stamp.as_bytes();
    let stamp_ok = b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z';
    let suffix_ok = suffix.is_none_or(|n| n.len() >= 2 && n.bytes().all(|c| c.is_ascii_digit()));
    stamp_ok && suffix_ok
}

impl Pprof {
    /// Decodes a gzip-compressed pprof file.
    pub fn read(path: &Path) -> Result<Pprof> {
        let compressed = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_gzip(path, &compressed)
    }

    /// Decodes gzip-compressed pprof bytes (a download), named `path` in messages.
    pub fn from_gzip(path: &Path, compressed: &[u8]) -> Result<Pprof> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(compressed)
            .read_to_end(&mut raw)
            .with_context(|| format!("gunzip {}", path.display()))?;
        let profile =
            Profile::decode(&raw[..]).with_context(|| format!("decoding {}", path.display()))?;
        Ok(Pprof::new(path.to_owned(), profile))
    }

    pub fn new(path: PathBuf, profile: Profile) -> Pprof {
        let index = |ids: Vec<u64>| ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        Pprof {
            locations: index(profile.location.iter().map(|l| l.id).collect()),
            functions: index(profile.function.iter().map(|f| f.id).collect()),
            mappings: index(profile.mapping.iter().map(|m| m.id).collect()),
            path,
            profile,
        }
    }

    /// A string-table entry ("" when out of range; [`Pprof::check_well_formed`] catches that).
    pub fn str(&self, index: i64) -> &str {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.profile.string_table.get(i))
            .map_or("", String::as_str)
    }

    pub fn location(&self, id: u64) -> Option<&Location> {
        self.locations.get(&id).map(|&i| &self.profile.location[i])
    }

    pub fn function(&self, id: u64) -> Option<&Function> {
        self.functions.get(&id).map(|&i| &self.profile.function[i])
    }

    pub fn mapping(&self, id: u64) -> Option<&Mapping> {
        self.mappings.get(&id).map(|&i| &self.profile.mapping[i])
    }

    /// Samples whose `pid` label is `pid`.
    pub fn samples_of_pid(&self, pid: u32) -> impl Iterator<Item = &Sample> {
        self.profile
            .sample
            .iter()
            .filter(move |s| self.label_num(s, "pid") == Some(i64::from(pid)))
    }

    pub fn label_num(&self, sample: &Sample, key: &str) -> Option<i64> {
        self.label(sample, key).map(|l| l.num)
    }

    /// A string label's value; None if absent or numeric.
    pub fn label_str(&self, sample: &Sample, key: &str) -> Option<&str> {
        self.label(sample, key)
            .filter(|l| l.str != 0)
            .map(|l| self.str(l.str))
    }

    fn label<'a>(&self, sample: &'a Sample, key: &str) -> Option<&'a Label> {
        sample.label.iter().find(|l| self.str(l.key) == key)
    }

    /// Index of the sample value of type `kind` (e.g. "samples", "cpu").
    pub fn value_index(&self, kind: &str) -> Option<usize> {
        self.profile
            .sample_type
            .iter()
            .position(|t| self.str(t.r#type) == kind)
    }

    /// The sample's `samples/count` value.
    pub fn count(&self, sample: &Sample) -> i64 {
        self.value(sample, "samples")
    }

    /// The sample's value of type `kind` (0 if the profile has no such type).
    pub fn value(&self, sample: &Sample, kind: &str) -> i64 {
        self.value_index(kind)
            .and_then(|i| sample.value.get(i).copied())
            .unwrap_or(0)
    }

    /// The stack, leaf first, with inlined functions expanded (innermost first).
    pub fn frames(&self, sample: &Sample) -> Vec<Frame> {
        sample
            .location_id
            .iter()
            .flat_map(|&id| self.location_frames(id))
            .collect()
    }

    /// The frames of one location, innermost inlined function first; one unnamed frame for a
    /// location without lines (or a missing one).
    pub fn location_frames(&self, id: u64) -> Vec<Frame> {
        let Some(loc) = self.location(id) else {
            return vec![Frame {
                function: String::new(),
                mapping: String::new(),
            }];
        };
        let mapping = self
            .mapping(loc.mapping_id)
            .map(|m| self.str(m.filename).to_owned())
            .unwrap_or_default();
        if loc.line.is_empty() {
            return vec![Frame {
                function: String::new(),
                mapping,
            }];
        }
        loc.line
            .iter()
            .map(|line| Frame {
                function: self
                    .function(line.function_id)
                    .map(|f| self.str(f.name).to_owned())
                    .unwrap_or_default(),
                mapping: mapping.clone(),
            })
            .collect()
    }

    /// Whether `location_id[0]` is in a function matching `want`, itself or one inlined into it
    /// (code inlined into the hot function, like `black_box`, is still the hot function's).
    pub fn has_leaf(&self, sample: &Sample, want: Want) -> bool {
        sample.location_id.first().is_some_and(|&id| {
            self.location_frames(id)
                .iter()
                .any(|f| want.matches(&f.function))
        })
    }

    /// Function names above the leaf location (its callers), innermost first.
    pub fn caller_names(&self, sample: &Sample) -> Vec<String> {
        sample
            .location_id
            .iter()
            .skip(1)
            .flat_map(|&id| self.location_frames(id))
            .map(|f| f.function)
            .collect()
    }

    /// Function names of the stack, leaf first.
    pub fn stack_names(&self, sample: &Sample) -> Vec<String> {
        self.frames(sample)
            .into_iter()
            .map(|f| f.function)
            .collect()
    }

    /// Whether any sample's stack names a function matching `want`.
    pub fn mentions(&self, want: Want) -> bool {
        self.profile
            .sample
            .iter()
            .any(|s| self.stack_names(s).iter().any(|n| want.matches(n)))
    }

    /// Structure every profile must have: sample types [samples/count, cpu/nanoseconds], period
    /// cpu/nanoseconds of 1e9/frequency (±1), times set, every reference resolvable, the four
    /// thread labels on every sample.
    pub fn check_well_formed(&self, frequency: u32) -> Result<()> {
        let name = self.path.display();
        let p = &self.profile;
        ensure!(
            p.string_table.first().is_some_and(String::is_empty),
            "{name}: string_table[0] must be \"\""
        );
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (self.str(t.r#type), self.str(t.unit)))
            .collect();
        ensure!(
            types == [("samples", "count"), ("cpu", "nanoseconds")],
            "{name}: sample types {types:?}"
        );
        let period_type = p
            .period_type
            .as_ref()
            .map(|t| (self.str(t.r#type), self.str(t.unit)));
        ensure!(
            period_type == Some(("cpu", "nanoseconds")),
            "{name}: period type {period_type:?}"
        );
        let want_period = 1_000_000_000 / i64::from(frequency);
        ensure!(
            (p.period - want_period).abs() <= 1,
            "{name}: period {} for {frequency} Hz, want {want_period}",
            p.period
        );
        ensure!(p.time_nanos > 0, "{name}: time_nanos {}", p.time_nanos);
        ensure!(
            p.duration_nanos > 0,
            "{name}: duration_nanos {}",
            p.duration_nanos
        );
        self.check_references()?;
        for sample in &p.sample {
            self.check_sample(sample)?;
        }
        Ok(())
    }

    fn check_references(&self) -> Result<()> {
        let name = self.path.display();
        let strings = self.profile.string_table.len() as i64;
        let in_table = |i: i64| (0..strings).contains(&i);
        for m in &self.profile.mapping {
            ensure!(m.id != 0, "{name}: mapping with id 0");
            ensure!(
                in_table(m.filename) && in_table(m.build_id),
                "{name}: mapping {} strings",
                m.id
            );
        }
        for f in &self.profile.function {
            ensure!(
                in_table(f.name) && in_table(f.system_name),
                "{name}: function {}",
                f.id
            );
        }
        for loc in &self.profile.location {
            ensure!(
                self.mapping(loc.mapping_id).is_some(),
                "{name}: location {} has mapping {} that does not exist",
                loc.id,
                loc.mapping_id
            );
            for line in &loc.line {
                ensure!(
                    self.function(line.function_id).is_some(),
                    "{name}: location {} names missing function {}",
                    loc.id,
                    line.function_id
                );
            }
        }
        Ok(())
    }

    fn check_sample(&self, s: &Sample) -> Result<()> {
        let name = self.path.display();
        ensure!(
            s.value.len() == 2,
            "{name}: sample with {} values",
            s.value.len()
        );
        ensure!(
            s.value[0] > 0 && s.value[1] > 0,
            "{name}: sample values {:?}",
            s.value
        );
        ensure!(
            !s.location_id.is_empty(),
            "{name}: sample without locations"
        );
        for id in &s.location_id {
            ensure!(
                self.location(*id).is_some(),
                "{name}: sample names missing location {id}"
            );
        }
        for key in ["pid", "thread_id"] {
            ensure!(
                self.label_num(s, key).is_some(),
                "{name}: sample lacks num label {key}"
            );
        }
        for key in ["comm", "thread_name"] {
            ensure!(
                self.label_str(s, key).is_some(),
                "{name}: sample lacks str label {key}"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The helpers themselves, on a hand-made profile (no root needed).

    use super::*;
    use profiler::profile::proto::ValueType;

    const STRINGS: &[&str] = &[
        "",
        "samples",
        "count",
        "cpu",
        "nanoseconds",
        "pid",
        "thread_id",
        "comm",
        "thread_name",
        "leaf",
        "inlined",
        "caller",
        "/bin/fixture",
        "abc123",
        KERNEL_MAPPING,
        "do_syscall_64",
        "fixture",
    ];

    fn s(text: &str) -> i64 {
        STRINGS.iter().position(|t| *t == text).expect("in STRINGS") as i64
    }

    fn line(function_id: u64) -> Line {
        Line {
            function_id,
            ..Default::default()
        }
    }

    fn function(id: u64, name: &str) -> Function {
        Function {
            id,
            name: s(name),
            ..Default::default()
        }
    }

    fn num_label(key: &str, num: i64) -> Label {
        Label {
            key: s(key),
            num,
            ..Default::default()
        }
    }

    fn str_label(key: &str, value: &str) -> Label {
        Label {
            key: s(key),
            str: s(value),
            ..Default::default()
        }
    }

    fn value_type(kind: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: s(kind),
            unit: s(unit),
        }
    }

    /// One sample: do_syscall_64 (kernel) <- inlined <- leaf (one location) <- caller.
    fn sample_profile() -> Pprof {
        let profile = Profile {
            sample_type: vec![
                value_type("samples", "count"),
                value_type("cpu", "nanoseconds"),
            ],
            period_type: Some(value_type("cpu", "nanoseconds")),
            period: 1_000_000_000 / 99,
            time_nanos: 1,
            duration_nanos: 2,
            string_table: STRINGS.iter().map(|t| t.to_string()).collect(),
            function: vec![
                function(1, "leaf"),
                function(2, "inlined"),
                function(3, "caller"),
                function(4, "do_syscall_64"),
            ],
            mapping: vec![
                Mapping {
                    id: 1,
                    filename: s("/bin/fixture"),
                    build_id: s("abc123"),
                    ..Default::default()
                },
                Mapping {
                    id: 2,
                    filename: s(KERNEL_MAPPING),
                    ..Default::default()
                },
            ],
            location: vec![
                Location {
                    id: 10,
                    mapping_id: 2,
                    line: vec![line(4)],
                    ..Default::default()
                },
                Location {
                    id: 11,
                    mapping_id: 1,
                    line: vec![line(2), line(1)],
                    ..Default::default()
                },
                Location {
                    id: 12,
                    mapping_id: 1,
                    line: vec![line(3)],
                    ..Default::default()
                },
            ],
            sample: vec![Sample {
                location_id: vec![10, 11, 12],
                value: vec![3, 3 * (1_000_000_000 / 99)],
                label: vec![
                    num_label("pid", 42),
                    num_label("thread_id", 43),
                    str_label("comm", "fixture"),
                    str_label("thread_name", "leaf"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        Pprof::new(PathBuf::from("synthetic.pb.gz"), profile)
    }

    #[test]
    fn file_names() {
        assert!(is_profile_file_name("cpu-20250101T120000Z.pb.gz"));
        assert!(is_profile_file_name("cpu-20250101T120000Z_02.pb.gz"));
        assert!(!is_profile_file_name("cpu-20250101T120000Z_.pb.gz"));
        assert!(!is_profile_file_name("cpu-20250101T120000Z-2.pb.gz"));
        assert!(!is_profile_file_name("cpu-20250101-120000.pb.gz"));
        assert!(!is_profile_file_name("cpu-20250101T120000Z.pb.gz.tmp"));
    }

    #[test]
    fn stacks_are_leaf_first_with_inlined_frames_expanded() {
        let p = sample_profile();
        let sample = &p.profile.sample[0];
        assert_eq!(
            p.stack_names(sample),
            ["do_syscall_64", "inlined", "leaf", "caller"]
        );
        assert!(p.has_leaf(sample, Want::Exact("do_syscall_64")));
        assert_eq!(p.caller_names(sample), ["inlined", "leaf", "caller"]);
        let kernel: Vec<bool> = p.frames(sample).iter().map(Frame::is_kernel).collect();
        assert_eq!(kernel, [true, false, false, false]);
    }

    #[test]
    fn labels_and_values() {
        let p = sample_profile();
        let sample = &p.profile.sample[0];
        assert_eq!(p.label_num(sample, "pid"), Some(42));
        assert_eq!(p.label_str(sample, "comm"), Some("fixture"));
        assert_eq!(p.label_str(sample, "pid"), None);
        assert_eq!(p.count(sample), 3);
        assert_eq!(p.value(sample, "cpu"), 3 * (1_000_000_000 / 99));
        assert_eq!(p.samples_of_pid(42).count(), 1);
        assert_eq!(p.samples_of_pid(7).count(), 0);
    }

    #[test]
    fn well_formed_checks_catch_mistakes() {
        let good = sample_profile();
        good.check_well_formed(99).expect("well formed");
        assert!(
            good.check_well_formed(19).is_err(),
            "period of another rate"
        );

        let mut dangling = sample_profile();
        dangling.profile.location[0].mapping_id = 99;
        let dangling = Pprof::new(dangling.path, dangling.profile);
        assert!(
            dangling.check_well_formed(99).is_err(),
            "location with a missing mapping"
        );

        let mut unlabelled = sample_profile();
        unlabelled.profile.sample[0].label.pop();
        assert!(
            unlabelled.check_well_formed(99).is_err(),
            "sample without thread_name"
        );
    }

    #[test]
    fn name_matching() {
        assert!(Want::Exact("main").matches("main"));
        assert!(!Want::Exact("main").matches("__libc_start_main"));
        assert!(Want::Contains("rust_fixture_hot_leaf").matches("hot::rust_fixture_hot_leaf"));
    }
}
