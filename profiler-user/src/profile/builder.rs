//! Builds one pprof `Profile`, interning strings, functions, mappings and locations.
//!
//! Addresses of user locations are file offsets, and each file has one mapping starting at 0
//! (`memory_start = file_offset = 0`): one mapping per file then serves every process that maps
//! it, whatever its load address, and the same function in two processes is one location.

use std::{
    hash::BuildHasher,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hashbrown::hash_table::{Entry, HashTable};

use super::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use crate::{
    fast_hash::{FastHasher, HashMap},
    resolve::{Labels, MappingInfo, MappingKey, SampleKind},
    symbolize::Frame,
};

/// The sample types a profile carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileValues {
    /// `samples/count`, `cpu/nanoseconds` (interval and incident files).
    Cpu,
    /// `switches/count`, `off_cpu/nanoseconds` (`offcpu-` interval files).
    OffCpu,
    /// The CPU types, then the off-CPU ones (trace files, with off-CPU recording on).
    Both,
}

impl ProfileValues {
    /// Where a sample of `kind` puts its two values, if this profile holds them.
    pub fn column(self, kind: SampleKind) -> Option<usize> {
        match (self, kind) {
            (ProfileValues::Cpu, SampleKind::Cpu)
            | (ProfileValues::OffCpu, SampleKind::OffCpu)
            | (ProfileValues::Both, SampleKind::Cpu) => Some(0),
            (ProfileValues::Both, SampleKind::OffCpu) => Some(2),
            (ProfileValues::Cpu, SampleKind::OffCpu) | (ProfileValues::OffCpu, SampleKind::Cpu) => {
                None
            }
        }
    }

    fn width(self) -> usize {
        match self {
            ProfileValues::Both => 4,
            ProfileValues::Cpu | ProfileValues::OffCpu => 2,
        }
    }
}

pub struct ProfileBuilder {
    values: ProfileValues,
    profile: Profile,
    hasher: FastHasher,
    /// Indices into the profile's string table: each string is held once, by the profile.
    strings: HashTable<i64>,
    functions: HashMap<(i64, i64), u64>,
    mappings: HashMap<MappingKey, u64>,
    locations: HashMap<(u64, u64), u64>,
    /// Indices into the profile's samples, by their locations and labels: a sample's key is the
    /// sample itself, neither copied nor dropped apart from it (copies of 100k stacks' location
    /// lists and label sets, and freeing them, were a third of building a large interval).
    samples: HashTable<usize>,
}

impl ProfileBuilder {
    /// A CPU profile sampled every `period_ns` nanoseconds, covering `[start, start + duration)`.
    pub fn new(period_ns: i64, start: SystemTime, duration: Duration) -> Self {
        Self::with_values(ProfileValues::Cpu, period_ns, start, duration)
    }

    /// A profile of `values`; `period_ns` is the CPU sampling period (an off-CPU profile, of
    /// every wait, has a period of 1).
    pub fn with_values(
        values: ProfileValues,
        period_ns: i64,
        start: SystemTime,
        duration: Duration,
    ) -> Self {
        let mut builder = Self {
            values,
            profile: Profile::default(),
            hasher: FastHasher::default(),
            strings: HashTable::new(),
            functions: HashMap::default(),
            mappings: HashMap::default(),
            locations: HashMap::default(),
            samples: HashTable::new(),
        };
        builder.string("");
        let cpu_types = |b: &mut Self| {
            [
                b.value_type("samples", "count"),
                b.value_type("cpu", "nanoseconds"),
            ]
        };
        let off_cpu_types = |b: &mut Self| {
            [
                b.value_type("switches", "count"),
                b.value_type("off_cpu", "nanoseconds"),
            ]
        };
        let (types, period_type, period, default) = match values {
            ProfileValues::Cpu => {
                let types = cpu_types(&mut builder);
                (types.to_vec(), types[1], period_ns, "cpu")
            }
            ProfileValues::OffCpu => {
                let types = off_cpu_types(&mut builder);
                (types.to_vec(), types[1], 1, "off_cpu")
            }
            ProfileValues::Both => {
                let cpu = cpu_types(&mut builder);
                let off = off_cpu_types(&mut builder);
                ([cpu, off].concat(), cpu[1], period_ns, "cpu")
            }
        };
        builder.profile.sample_type = types;
        builder.profile.period_type = Some(period_type);
        builder.profile.period = period;
        builder.profile.default_sample_type = builder.string(default);
        builder.profile.time_nanos = start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        builder.profile.duration_nanos = duration.as_nanos() as i64;
        builder
    }

    /// Adds a free-form comment to the profile.
    pub fn comment(&mut self, text: &str) {
        let index = self.string(text);
        self.profile.comment.push(index);
    }

    /// The id of the mapping for `key`, described by `describe` the first time.
    pub fn mapping(&mut self, key: MappingKey, describe: impl FnOnce() -> MappingInfo) -> u64 {
        if let Some(&id) = self.mappings.get(&key) {
            return id;
        }
        let info = describe();
        let id = self.profile.mapping.len() as u64 + 1;
        let mapping = Mapping {
            id,
            memory_start: 0,
            memory_limit: u64::MAX,
            file_offset: 0,
            filename: self.string(&info.filename),
            build_id: info.build_id.as_deref().map_or(0, |b| self.string(b)),
            ..Mapping::default()
        };
        self.profile.mapping.push(mapping);
        self.mappings.insert(key, id);
        id
    }

    /// The id of the location at `address` of `mapping`, with `frames` innermost first.
    pub fn location(&mut self, mapping: u64, address: u64, frames: &[Frame]) -> u64 {
        if let Some(&id) = self.locations.get(&(mapping, address)) {
            return id;
        }
        let line = frames
            .iter()
            .map(|frame| Line {
                function_id: self.function(frame),
                line: frame.line.map_or(0, i64::from),
            })
            .collect::<Vec<_>>();
        let id = self.profile.location.len() as u64 + 1;
        self.mark_symbolized(mapping, frames);
        self.profile.location.push(Location {
            id,
            mapping_id: mapping,
            address,
            line,
            is_folded: false,
        });
        self.locations.insert((mapping, address), id);
        id
    }

    /// Adds `count` CPU samples worth `cpu_ns` nanoseconds at `locations` (leaf first).
    pub fn add_sample(&mut self, locations: Vec<u64>, labels: &Labels, count: i64, cpu_ns: i64) {
        self.add_values(locations, labels, SampleKind::Cpu, count, cpu_ns);
    }

    /// Adds `count` samples (or waits) of `kind` worth `nanos` at `locations` (leaf first); a
    /// kind this profile does not carry is left out. Returns whether it was added.
    pub fn add_values(
        &mut self,
        locations: Vec<u64>,
        labels: &Labels,
        kind: SampleKind,
        count: i64,
        nanos: i64,
    ) -> bool {
        let Some(column) = self.values.column(kind) else {
            return false;
        };
        let label = self.labels(labels);
        let hash = sample_hash(&self.hasher, &locations, &label);
        let samples = &mut self.profile.sample;
        let entry = self.samples.entry(
            hash,
            |&index| samples[index].location_id == locations && samples[index].label == label,
            |&index| {
                sample_hash(
                    &self.hasher,
                    &samples[index].location_id,
                    &samples[index].label,
                )
            },
        );
        let index = match entry {
            Entry::Occupied(occupied) => *occupied.get(),
            Entry::Vacant(vacant) => {
                vacant.insert(samples.len());
                samples.push(Sample {
                    location_id: locations,
                    value: vec![0; self.values.width()],
                    label,
                    breakdown: Vec::new(),
                });
                samples.len() - 1
            }
        };
        let values = &mut samples[index].value;
        values[column] += count;
        values[column + 1] += nanos;
        true
    }

    /// A sample's labels, their strings interned.
    fn labels(&mut self, labels: &Labels) -> Vec<Label> {
        let mut label = Vec::with_capacity(4);
        label.extend([
            self.num_label("pid", i64::from(labels.pid)),
            self.num_label("thread_id", i64::from(labels.thread_id)),
            self.str_label("comm", &labels.comm),
            self.str_label("thread_name", &labels.thread_name),
        ]);
        if let Some(container) = &labels.container {
            label.push(self.str_label("container_id", &container.container_id));
            if let Some(pod) = &container.pod_uid {
                label.push(self.str_label("pod_uid", pod));
            }
        }
        if let Some(trace) = &labels.trace {
            label.push(self.str_label("trace_id", &trace.trace_id));
            label.push(self.str_label("span_id", &trace.span_id));
            if let Some(service) = &trace.service_name {
                label.push(self.str_label("service_name", service));
            }
            for (key, value) in &trace.attributes {
                label.push(self.str_label(key, value));
            }
        }
        label
    }

    /// Number of samples (distinct stacks and labels) so far.
    pub fn sample_count(&self) -> usize {
        self.profile.sample.len()
    }

    pub fn build(self) -> Profile {
        self.profile
    }

    fn string(&mut self, s: &str) -> i64 {
        let hasher = &self.hasher;
        let table = &mut self.profile.string_table;
        let entry = self.strings.entry(
            hasher.hash_one(s),
            |&index| table[index as usize] == s,
            |&index| hasher.hash_one(table[index as usize].as_str()),
        );
        match entry {
            Entry::Occupied(occupied) => *occupied.get(),
            Entry::Vacant(vacant) => {
                let index = table.len() as i64;
                table.push(s.to_owned());
                vacant.insert(index);
                index
            }
        }
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.string(kind),
            unit: self.string(unit),
        }
    }

    fn function(&mut self, frame: &Frame) -> u64 {
        let name = self.string(&frame.function);
        let file = frame.file.as_deref().map_or(0, |f| self.string(f));
        if let Some(&id) = self.functions.get(&(name, file)) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(Function {
            id,
            name,
            system_name: name,
            filename: file,
            start_line: 0,
        });
        self.functions.insert((name, file), id);
        id
    }

    fn mark_symbolized(&mut self, mapping: u64, frames: &[Frame]) {
        let Some(mapping) = self.profile.mapping.get_mut(mapping as usize - 1) else {
            return;
        };
        if let Some(innermost) = frames.first() {
            mapping.has_functions = true;
            mapping.has_filenames |= innermost.file.is_some();
            mapping.has_line_numbers |= innermost.line.is_some();
            mapping.has_inline_frames |= frames.len() > 1;
        }
    }

    fn num_label(&mut self, key: &str, num: i64) -> Label {
        Label {
            key: self.string(key),
            num,
            ..Label::default()
        }
    }

    fn str_label(&mut self, key: &str, value: &str) -> Label {
        Label {
            key: self.string(key),
            str: self.string(value),
            ..Label::default()
        }
    }
}

/// The hash of a sample's key: its locations and its labels' interned fields.
fn sample_hash(hasher: &FastHasher, locations: &[u64], labels: &[Label]) -> u64 {
    use std::hash::Hasher;
    let mut state = hasher.build_hasher();
    state.write_usize(locations.len());
    for &location in locations {
        state.write_u64(location);
    }
    for label in labels {
        state.write_i64(label.key);
        state.write_i64(label.str);
        state.write_i64(label.num);
    }
    state.finish()
}

/// Appends free-form comments to a built profile.
pub fn add_comments(profile: &mut Profile, comments: &[String]) {
    for comment in comments {
        let index = match profile.string_table.iter().position(|s| s == comment) {
            Some(index) => index,
            None => {
                profile.string_table.push(comment.clone());
                profile.string_table.len() - 1
            }
        };
        profile.comment.push(index as i64);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::*;
    use crate::{process::FileId, resolve::TraceLabels};

    fn frame(name: &str, line: Option<u32>) -> Frame {
        Frame {
            function: name.into(),
            file: line.map(|_| "src/x.c".into()),
            line,
        }
    }

    fn labels(tid: u32) -> Labels {
        Labels {
            pid: 10,
            thread_id: tid,
            comm: "app".into(),
            thread_name: "worker".into(),
            trace: None,
            container: None,
        }
    }

    fn sample_profile() -> Profile {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut b = ProfileBuilder::new(52_631_578, start, Duration::from_secs(10));
        let exe = b.mapping(MappingKey::File(FileId { dev: 1, inode: 2 }), || {
            MappingInfo {
                filename: "/usr/bin/app".into(),
                build_id: Some("abcd".into()),
            }
        });
        let kernel = b.mapping(MappingKey::Kernel, || MappingInfo {
            filename: "[kernel.kallsyms]".into(),
            build_id: None,
        });
        let leaf = b.location(
            exe,
            0x1010,
            &[frame("inlined", Some(3)), frame("leaf", Some(7))],
        );
        let caller = b.location(exe, 0x2020, &[frame("main", Some(1))]);
        let ksym = b.location(
            kernel,
            0xffff_ffff_8100_0000,
            &[frame("do_syscall_64", None)],
        );
        b.add_sample(vec![ksym, leaf, caller], &labels(11), 2, 100);
        b.add_sample(vec![ksym, leaf, caller], &labels(11), 1, 50);
        b.add_sample(vec![leaf, caller], &labels(12), 1, 50);
        let traced = Labels {
            trace: Some(Arc::new(TraceLabels {
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_id: "b7ad6b7169203331".into(),
                service_name: Some("checkout".into()),
                attributes: vec![("http.route".into(), "/pay".into())],
            })),
            ..labels(12)
        };
        b.add_sample(vec![leaf, caller], &traced, 1, 50);
        b.comment("hello");
        b.build()
    }

    #[test]
    fn comments_are_added_to_a_built_profile() {
        let mut p = sample_profile();
        add_comments(&mut p, &["hello".to_owned(), "world".to_owned()]);
        let texts: Vec<_> = p
            .comment
            .iter()
            .map(|&i| p.string_table[i as usize].as_str())
            .collect();
        assert_eq!(texts, ["hello", "hello", "world"]);
    }

    /// Names of a profile's sample types and its default.
    fn types(p: &Profile) -> (Vec<(&str, &str)>, &str) {
        let s = |i: i64| p.string_table[i as usize].as_str();
        let types = p
            .sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect();
        (types, s(p.default_sample_type))
    }

    #[test]
    fn off_cpu_and_trace_profiles_put_each_kind_in_its_columns() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ten = Duration::from_secs(10);
        let mut off = ProfileBuilder::with_values(ProfileValues::OffCpu, 10, start, ten);
        let mapping = off.mapping(MappingKey::Kernel, MappingInfo::default);
        let wait = off.location(mapping, 0xffff_0000, &[frame("futex_wait", None)]);
        assert!(off.add_values(vec![wait], &labels(1), SampleKind::OffCpu, 3, 45_000_000));
        assert!(
            !off.add_values(vec![wait], &labels(1), SampleKind::Cpu, 1, 10),
            "CPU samples have no column in an off-CPU profile"
        );
        let off = off.build();
        assert_eq!(
            types(&off),
            (
                vec![("switches", "count"), ("off_cpu", "nanoseconds")],
                "off_cpu"
            )
        );
        assert_eq!((off.period, off.sample.len()), (1, 1));
        assert_eq!(off.sample[0].value, [3, 45_000_000]);

        let mut both = ProfileBuilder::with_values(ProfileValues::Both, 10, start, ten);
        let mapping = both.mapping(MappingKey::Kernel, MappingInfo::default);
        let hot = both.location(mapping, 0xffff_0010, &[frame("hot", None)]);
        both.add_values(vec![hot], &labels(1), SampleKind::Cpu, 2, 20);
        both.add_values(vec![hot], &labels(1), SampleKind::OffCpu, 1, 5_000);
        both.add_values(vec![hot], &labels(2), SampleKind::OffCpu, 4, 7_000);
        let both = both.build();
        assert_eq!(
            types(&both),
            (
                vec![
                    ("samples", "count"),
                    ("cpu", "nanoseconds"),
                    ("switches", "count"),
                    ("off_cpu", "nanoseconds")
                ],
                "cpu"
            )
        );
        assert_eq!(both.period, 10);
        let values: Vec<&[i64]> = both.sample.iter().map(|s| &s.value[..]).collect();
        assert_eq!(
            values,
            [&[2, 20, 1, 5_000][..], &[0, 0, 4, 7_000]],
            "one sample per stack and labels, each kind in its own columns"
        );
    }

    #[test]
    fn interns_and_merges() {
        let p = sample_profile();
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.sample.len(), 3, "same stack and labels merge");
        assert_eq!(p.sample[0].value, vec![3, 150]);
        assert_eq!(p.mapping.len(), 2);
        assert_eq!(p.location.len(), 3);
        assert_eq!(p.function.len(), 4);
        let exe = &p.mapping[0];
        assert!(exe.has_functions && exe.has_line_numbers && exe.has_inline_frames);
        assert_eq!(p.string_table[exe.build_id as usize], "abcd");
        assert!(!p.mapping[1].has_line_numbers);
    }

    #[test]
    fn encodes_and_decodes_with_expected_types_and_labels() {
        let p = sample_profile();
        let decoded = Profile::decode(p.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, p);
        let s = |i: i64| decoded.string_table[i as usize].as_str();
        let types: Vec<_> = decoded
            .sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let period = decoded.period_type.unwrap();
        assert_eq!((s(period.r#type), s(period.unit)), ("cpu", "nanoseconds"));
        assert_eq!(decoded.period, 52_631_578);
        assert_eq!(decoded.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(decoded.duration_nanos, 10_000_000_000);
        let sample = &decoded.sample[1];
        let labels: Vec<_> = sample
            .label
            .iter()
            .map(|l| {
                (
                    s(l.key),
                    if l.str != 0 {
                        s(l.str).to_owned()
                    } else {
                        l.num.to_string()
                    },
                )
            })
            .collect();
        assert_eq!(
            labels,
            [
                ("pid", "10".to_owned()),
                ("thread_id", "12".to_owned()),
                ("comm", "app".to_owned()),
                ("thread_name", "worker".to_owned())
            ]
        );
        assert_eq!(s(decoded.comment[0]), "hello");
        let traced: Vec<_> = decoded.sample[2]
            .label
            .iter()
            .skip(4)
            .map(|l| (s(l.key), s(l.str)))
            .collect();
        assert_eq!(
            traced,
            [
                ("trace_id", "0af7651916cd43dd8448eb211c80319c"),
                ("span_id", "b7ad6b7169203331"),
                ("service_name", "checkout"),
                ("http.route", "/pay")
            ]
        );
        // Inlined frames: innermost first, the containing function last.
        let leaf = &decoded.location[0];
        let names: Vec<_> = leaf
            .line
            .iter()
            .map(|l| s(decoded.function[l.function_id as usize - 1].name))
            .collect();
        assert_eq!(names, ["inlined", "leaf"]);
        assert_eq!(leaf.line[1].line, 7);
    }
}
