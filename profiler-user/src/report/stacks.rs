//! A decoded pprof profile reduced to what reports need: each sample's stack as function names,
//! leaf first with inlined functions expanded, its thread and trace labels, and its values.
//!
//! Names follow `go tool pprof` at its default granularity (functions), so that reports agree
//! with it: a function is its name, whatever file or binary it comes from; a location without a
//! name is `[<file name of its mapping>]`, or `<unknown>` without one.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::profile::proto::{Location, Profile, Sample};

/// Filename of the mapping that kernel frames belong to.
const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// One frame of a stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub name: Arc<str>,
    /// In the kernel's mapping.
    pub kernel: bool,
    /// Inlined into the next frame (not the outermost function of its location).
    pub inlined: bool,
}

/// The thread a sample was taken on, and the process it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Thread {
    pub pid: Option<i64>,
    pub comm: Arc<str>,
    pub tid: Option<i64>,
    pub thread_name: Arc<str>,
}

/// One sample, its stack named.
#[derive(Clone, Debug)]
pub struct StackSample {
    /// Leaf first; a location's inlined functions innermost first, as pprof lists them.
    pub frames: Arc<[Frame]>,
    pub thread: Arc<Thread>,
    pub trace_id: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    /// `samples/count`.
    pub count: i64,
    /// `cpu/nanoseconds`.
    pub cpu_ns: i64,
    /// `switches/count`: times the thread left the CPU with this stack (off-CPU profiles).
    pub switches: i64,
    /// `off_cpu/nanoseconds`: time off the CPU after leaving it with this stack.
    pub off_cpu_ns: i64,
}

/// Which sample value a report weighs functions by. Values are found by their sample type's
/// name, never by position: a trace file of a recording with off-CPU has all four.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ValueKind {
    /// `cpu/nanoseconds`: right while the sampling rate changes.
    #[default]
    Cpu,
    /// `samples/count`.
    Samples,
    /// `off_cpu/nanoseconds`: time threads spent off the CPU (blocked, sleeping, waiting),
    /// by the stack they left it with (`offcpu-*` files, trace files of `record --off-cpu`).
    OffCpu,
    /// `switches/count`: how often threads left the CPU with each stack.
    Switches,
}

impl ValueKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [ValueKind; 4] = [
        ValueKind::Cpu,
        ValueKind::Samples,
        ValueKind::OffCpu,
        ValueKind::Switches,
    ];

    pub fn of(self, sample: &StackSample) -> i64 {
        match self {
            ValueKind::Cpu => sample.cpu_ns,
            ValueKind::Samples => sample.count,
            ValueKind::OffCpu => sample.off_cpu_ns,
            ValueKind::Switches => sample.switches,
        }
    }

    /// The count that goes with this value: samples for CPU, switches for off-CPU.
    pub fn count_of(self, sample: &StackSample) -> i64 {
        self.count_kind().of(sample)
    }

    /// The count kind of this value's family (itself for a count).
    pub fn count_kind(self) -> ValueKind {
        match self {
            ValueKind::Cpu | ValueKind::Samples => ValueKind::Samples,
            ValueKind::OffCpu | ValueKind::Switches => ValueKind::Switches,
        }
    }

    /// The time kind of this value's family (itself for a time).
    pub fn time_kind(self) -> ValueKind {
        match self {
            ValueKind::Cpu | ValueKind::Samples => ValueKind::Cpu,
            ValueKind::OffCpu | ValueKind::Switches => ValueKind::OffCpu,
        }
    }

    /// Whether the value is off-CPU (off_cpu or switches).
    pub fn is_off_cpu(self) -> bool {
        self.time_kind() == ValueKind::OffCpu
    }

    /// Whether the value is a time in nanoseconds (else a count).
    pub fn is_time(self) -> bool {
        self.time_kind() == self
    }

    /// The sample type's name, as in `Type: cpu` (and `-sample_index=` of `go tool pprof`).
    pub fn type_name(self) -> &'static str {
        match self {
            ValueKind::Cpu => "cpu",
            ValueKind::Samples => "samples",
            ValueKind::OffCpu => "off_cpu",
            ValueKind::Switches => "switches",
        }
    }

    /// The kind whose sample type is named `name`.
    pub fn of_type_name(name: &str) -> Option<ValueKind> {
        ValueKind::ALL.into_iter().find(|k| k.type_name() == name)
    }

    /// What the value measures, for titles: `CPU time`, `Off-CPU time`.
    pub fn title(self) -> &'static str {
        match self {
            ValueKind::Cpu => "CPU time",
            ValueKind::Samples => "Samples",
            ValueKind::OffCpu => "Off-CPU time",
            ValueKind::Switches => "Switches",
        }
    }

    /// What the value is called in running text: `CPU`, `off-CPU`, `samples`, `switches`.
    pub fn noun(self) -> &'static str {
        match self {
            ValueKind::Cpu => "CPU",
            ValueKind::Samples => "samples",
            ValueKind::OffCpu => "off-CPU",
            ValueKind::Switches => "switches",
        }
    }

    /// The name `--value` takes (`off-cpu`), for links and messages.
    pub fn flag(self) -> &'static str {
        match self {
            ValueKind::Cpu => "cpu",
            ValueKind::Samples => "samples",
            ValueKind::OffCpu => "off-cpu",
            ValueKind::Switches => "switches",
        }
    }

    /// The kind `--value` (or a page's query) names.
    pub fn of_flag(flag: &str) -> Option<ValueKind> {
        ValueKind::ALL.into_iter().find(|k| k.flag() == flag)
    }
}

/// What a profile says about itself, besides its samples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileMeta {
    /// `time_nanos`, when set.
    pub start: Option<SystemTime>,
    pub duration: Duration,
    pub comments: Vec<String>,
    /// The names of its sample types, in order (`samples`, `cpu`, `switches`, `off_cpu`).
    pub sample_types: Vec<String>,
    /// `default_sample_type`'s name; pprof's rule without one: the last sample type.
    pub default_type: Option<String>,
}

impl ProfileMeta {
    /// Whether the profile's samples carry `value` (a sample type of that name).
    pub fn has(&self, value: ValueKind) -> bool {
        self.sample_types.iter().any(|t| t == value.type_name())
    }

    /// The value the profile says to show by default, when it is one we know.
    pub fn default_value(&self) -> Option<ValueKind> {
        self.default_type
            .as_deref()
            .and_then(ValueKind::of_type_name)
    }

    /// The end of the profile's window (its start when it has no duration).
    pub fn end(&self) -> Option<SystemTime> {
        self.start.map(|start| start + self.duration)
    }

    /// The comment naming what started an incident capture (`trigger: …`).
    pub fn trigger(&self) -> Option<&str> {
        self.comments
            .iter()
            .find(|c| c.starts_with("trigger:"))
            .map(String::as_str)
    }
}

/// A profile's samples and description.
#[derive(Clone, Debug, Default)]
pub struct Stacks {
    pub meta: ProfileMeta,
    pub samples: Vec<StackSample>,
}

impl Stacks {
    pub fn from_profile(profile: &Profile) -> Stacks {
        Decoder::new(profile).decode()
    }
}

struct Decoder<'a> {
    profile: &'a Profile,
    functions: HashMap<u64, usize>,
    mappings: HashMap<u64, usize>,
    locations: HashMap<u64, &'a Location>,
    /// Each location's frames, innermost first, built once.
    located: HashMap<u64, Arc<[Frame]>>,
    names: HashMap<String, Arc<str>>,
    threads: HashMap<Thread, Arc<Thread>>,
    count_index: Option<usize>,
    cpu_index: Option<usize>,
    switches_index: Option<usize>,
    off_cpu_index: Option<usize>,
}

impl<'a> Decoder<'a> {
    fn new(profile: &'a Profile) -> Self {
        let index = |ids: &mut dyn Iterator<Item = u64>| -> HashMap<u64, usize> {
            ids.enumerate().map(|(i, id)| (id, i)).collect()
        };
        let value_index = |kind: &str| {
            profile
                .sample_type
                .iter()
                .position(|t| str_at(profile, t.r#type) == kind)
        };
        Decoder {
            profile,
            functions: index(&mut profile.function.iter().map(|f| f.id)),
            mappings: index(&mut profile.mapping.iter().map(|m| m.id)),
            locations: profile.location.iter().map(|l| (l.id, l)).collect(),
            located: HashMap::new(),
            names: HashMap::new(),
            threads: HashMap::new(),
            count_index: value_index(ValueKind::Samples.type_name()),
            cpu_index: value_index(ValueKind::Cpu.type_name()),
            switches_index: value_index(ValueKind::Switches.type_name()),
            off_cpu_index: value_index(ValueKind::OffCpu.type_name()),
        }
    }

    fn decode(mut self) -> Stacks {
        let profile = self.profile;
        let meta = ProfileMeta {
            start: (profile.time_nanos > 0)
                .then(|| UNIX_EPOCH + Duration::from_nanos(profile.time_nanos as u64)),
            duration: Duration::from_nanos(profile.duration_nanos.max(0) as u64),
            comments: profile
                .comment
                .iter()
                .map(|&i| str_at(profile, i).to_owned())
                .collect(),
            sample_types: profile
                .sample_type
                .iter()
                .map(|t| str_at(profile, t.r#type).to_owned())
                .collect(),
            default_type: match str_at(profile, profile.default_sample_type) {
                "" => profile
                    .sample_type
                    .last()
                    .map(|t| str_at(profile, t.r#type).to_owned()),
                name => Some(name.to_owned()),
            },
        };
        let mut stacks: HashMap<Vec<u64>, Arc<[Frame]>> = HashMap::new();
        let samples = profile
            .sample
            .iter()
            .map(|sample| {
                let frames = match stacks.get(&sample.location_id) {
                    Some(frames) => frames.clone(),
                    None => {
                        let frames = self.stack(&sample.location_id);
                        stacks.insert(sample.location_id.clone(), frames.clone());
                        frames
                    }
                };
                self.sample(sample, frames)
            })
            .collect();
        Stacks { meta, samples }
    }

    fn sample(&mut self, sample: &Sample, frames: Arc<[Frame]>) -> StackSample {
        let value = |index: Option<usize>| {
            index
                .and_then(|i| sample.value.get(i).copied())
                .unwrap_or(0)
        };
        let mut thread = Thread::default();
        let mut trace_id = None;
        let mut service = None;
        for label in &sample.label {
            let text = || str_at(self.profile, label.str);
            match str_at(self.profile, label.key) {
                "pid" => thread.pid = Some(label.num),
                "thread_id" => thread.tid = Some(label.num),
                "comm" => thread.comm = self.name(text()),
                "thread_name" => thread.thread_name = self.name(text()),
                "trace_id" => trace_id = Some(self.name(text())),
                "service_name" => service = Some(self.name(text())),
                _ => {}
            }
        }
        let thread = match self.threads.get(&thread) {
            Some(thread) => thread.clone(),
            None => {
                let shared = Arc::new(thread.clone());
                self.threads.insert(thread, shared.clone());
                shared
            }
        };
        StackSample {
            frames,
            thread,
            trace_id,
            service,
            count: value(self.count_index),
            cpu_ns: value(self.cpu_index),
            switches: value(self.switches_index),
            off_cpu_ns: value(self.off_cpu_index),
        }
    }

    fn stack(&mut self, location_ids: &[u64]) -> Arc<[Frame]> {
        let mut frames = Vec::new();
        for &id in location_ids {
            frames.extend(self.location(id).iter().cloned());
        }
        frames.into()
    }

    fn location(&mut self, id: u64) -> Arc<[Frame]> {
        if let Some(frames) = self.located.get(&id) {
            return frames.clone();
        }
        let profile = self.profile;
        let location = self.locations.get(&id).copied();
        let mapping = location
            .and_then(|l| self.mappings.get(&l.mapping_id))
            .map(|&i| &profile.mapping[i]);
        let file = mapping.map_or("", |m| str_at(profile, m.filename));
        let kernel = file == KERNEL_MAPPING;
        let unnamed = || {
            if file.is_empty() {
                "<unknown>".to_owned()
            } else {
                format!("[{}]", file.rsplit('/').next().unwrap_or(file))
            }
        };
        let lines = location.map_or(&[][..], |l| l.line.as_slice());
        let outermost = lines.len().saturating_sub(1);
        let mut frames: Vec<Frame> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let name = self
                    .functions
                    .get(&line.function_id)
                    .map_or("", |&i| str_at(profile, profile.function[i].name));
                let name = if name.is_empty() {
                    self.name(&unnamed())
                } else {
                    self.name(name)
                };
                Frame {
                    name,
                    kernel,
                    inlined: i < outermost,
                }
            })
            .collect();
        if frames.is_empty() {
            frames.push(Frame {
                name: self.name(&unnamed()),
                kernel,
                inlined: false,
            });
        }
        let frames: Arc<[Frame]> = frames.into();
        self.located.insert(id, frames.clone());
        frames
    }

    fn name(&mut self, text: &str) -> Arc<str> {
        if let Some(name) = self.names.get(text) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(text);
        self.names.insert(text.to_owned(), name.clone());
        name
    }
}

/// A string-table entry; "" when out of range.
fn str_at(profile: &Profile, index: i64) -> &str {
    usize::try_from(index)
        .ok()
        .and_then(|i| profile.string_table.get(i))
        .map_or("", String::as_str)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{
        process::FileId,
        profile::{ProfileBuilder, proto::ValueType},
        resolve::{Labels, MappingInfo, MappingKey, TraceLabels},
        symbolize::Frame as Symbol,
    };

    pub(crate) fn labels(pid: u32, tid: u32) -> Labels {
        Labels {
            pid,
            thread_id: tid,
            comm: format!("app{pid}"),
            thread_name: format!("worker{tid}"),
            trace: None,
            container: None,
        }
    }

    pub(crate) fn traced(pid: u32, tid: u32, trace_id: &str) -> Labels {
        Labels {
            trace: Some(Arc::new(TraceLabels {
                trace_id: trace_id.into(),
                span_id: "b7ad6b7169203331".into(),
                service_name: Some("checkout".into()),
                attributes: vec![],
            })),
            ..labels(pid, tid)
        }
    }

    /// A profile from stacks written outer first (`"main;work;leaf"`), each name one location,
    /// or several functions of one location when joined by `+` (innermost first: `inl+leaf`).
    /// `[k]` marks a kernel frame, `?` a location without a name.
    pub(crate) fn profile(samples: &[(&str, Labels, i64)]) -> Profile {
        let start = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let mut b = ProfileBuilder::new(10_000_000, start, Duration::from_secs(10));
        let exe = b.mapping(MappingKey::File(FileId { dev: 1, inode: 2 }), || {
            MappingInfo {
                filename: "/usr/bin/app".into(),
                build_id: None,
            }
        });
        let kernel = b.mapping(MappingKey::Kernel, || MappingInfo {
            filename: KERNEL_MAPPING.into(),
            build_id: None,
        });
        let mut addresses: HashMap<String, u64> = HashMap::new();
        for (stack, labels, count) in samples {
            let mut ids: Vec<u64> = Vec::new();
            for location in stack.split(';').rev() {
                let next = addresses.len() as u64 + 1;
                let address = *addresses.entry(location.to_owned()).or_insert(next);
                let (mapping, names) = match location.strip_suffix("[k]") {
                    Some(name) => (kernel, name),
                    None => (exe, location),
                };
                let frames: Vec<Symbol> = if names == "?" {
                    Vec::new()
                } else {
                    names.split('+').map(Symbol::named).collect()
                };
                ids.push(b.location(mapping, address, &frames));
            }
            b.add_sample(ids, labels, *count, count * 10_000_000);
        }
        b.comment("trigger: cpu utilization 0.93 > threshold 0.70");
        b.build()
    }

    /// A string's index in `profile`'s table, added when missing.
    fn string(profile: &mut Profile, text: &str) -> i64 {
        match profile.string_table.iter().position(|s| s == text) {
            Some(i) => i as i64,
            None => {
                profile.string_table.push(text.to_owned());
                profile.string_table.len() as i64 - 1
            }
        }
    }

    fn value_type(profile: &mut Profile, kind: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: string(profile, kind),
            unit: string(profile, unit),
        }
    }

    /// An off-CPU profile as the recorder writes `offcpu-*` files (`switches/count`,
    /// `off_cpu/nanoseconds`, default `off_cpu`): [`profile`]'s stacks, each count a number of
    /// switches worth 10 ms off the CPU each.
    pub(crate) fn off_cpu_profile(samples: &[(&str, Labels, i64)]) -> Profile {
        let mut p = profile(samples);
        p.sample_type = vec![
            value_type(&mut p, "switches", "count"),
            value_type(&mut p, "off_cpu", "nanoseconds"),
        ];
        p.period_type = Some(value_type(&mut p, "off_cpu", "nanoseconds"));
        p.period = 1;
        p.default_sample_type = string(&mut p, "off_cpu");
        p
    }

    /// A trace file of a recording with off-CPU: `[samples, cpu, switches, off_cpu]`, default
    /// `cpu`; `on` samples carry `[n, n × 10 ms, 0, 0]`, `off` ones `[0, 0, n, n × 10 ms]`
    /// (their stacks and labels must differ from the `on` ones').
    pub(crate) fn mixed_profile(
        on: &[(&str, Labels, i64)],
        off: &[(&str, Labels, i64)],
    ) -> Profile {
        let all: Vec<(&str, Labels, i64)> = on.iter().chain(off).cloned().collect();
        let mut p = profile(&all);
        assert_eq!(p.sample.len(), all.len(), "distinct stacks and labels");
        let switches = value_type(&mut p, "switches", "count");
        let off_cpu = value_type(&mut p, "off_cpu", "nanoseconds");
        p.sample_type.extend([switches, off_cpu]);
        for (i, sample) in p.sample.iter_mut().enumerate() {
            let (n, ns) = (sample.value[0], sample.value[1]);
            sample.value = if i < on.len() {
                vec![n, ns, 0, 0]
            } else {
                vec![0, 0, n, ns]
            };
        }
        p
    }

    fn names(sample: &StackSample) -> Vec<&str> {
        sample.frames.iter().map(|f| &*f.name).collect()
    }

    #[test]
    fn stacks_are_leaf_first_with_inlined_functions_expanded() {
        let p = profile(&[
            ("main;outer;inl+leaf;read[k]", labels(7, 8), 3),
            ("main;?", traced(7, 9, "ab"), 1),
        ]);
        let stacks = Stacks::from_profile(&p);
        assert_eq!(stacks.samples.len(), 2);
        let first = &stacks.samples[0];
        assert_eq!(names(first), ["read", "inl", "leaf", "outer", "main"]);
        assert!(first.frames[0].kernel && !first.frames[1].kernel);
        let inlined: Vec<bool> = first.frames.iter().map(|f| f.inlined).collect();
        assert_eq!(inlined, [false, true, false, false, false]);
        assert_eq!((first.count, first.cpu_ns), (3, 30_000_000));
        assert_eq!(first.thread.pid, Some(7));
        assert_eq!(&*first.thread.comm, "app7");
        assert_eq!(first.thread.tid, Some(8));
        assert_eq!(&*first.thread.thread_name, "worker8");
        assert_eq!(first.trace_id, None);
        let second = &stacks.samples[1];
        assert_eq!(names(second), ["[app]", "main"]);
        assert_eq!(second.trace_id.as_deref(), Some("ab"));
        assert_eq!(second.service.as_deref(), Some("checkout"));
        assert_eq!(
            stacks.meta.trigger(),
            Some("trigger: cpu utilization 0.93 > threshold 0.70")
        );
        assert_eq!(stacks.meta.duration, Duration::from_secs(10));
        assert!(stacks.meta.start.is_some());
    }

    #[test]
    fn values_are_found_by_name_wherever_they_are() {
        let off = Stacks::from_profile(&off_cpu_profile(&[("main;poll;wait[k]", labels(1, 2), 3)]));
        let sample = &off.samples[0];
        assert_eq!((sample.count, sample.cpu_ns), (0, 0));
        assert_eq!((sample.switches, sample.off_cpu_ns), (3, 30_000_000));
        assert!(off.meta.has(ValueKind::OffCpu) && off.meta.has(ValueKind::Switches));
        assert!(!off.meta.has(ValueKind::Cpu));
        assert_eq!(off.meta.default_value(), Some(ValueKind::OffCpu));

        let mixed = Stacks::from_profile(&mixed_profile(
            &[("main;work", labels(1, 2), 2)],
            &[("main;poll", labels(1, 2), 5)],
        ));
        let values: Vec<_> = mixed
            .samples
            .iter()
            .map(|s| (s.count, s.cpu_ns, s.switches, s.off_cpu_ns))
            .collect();
        assert_eq!(values, [(2, 20_000_000, 0, 0), (0, 0, 5, 50_000_000)]);
        assert!(ValueKind::ALL.iter().all(|&k| mixed.meta.has(k)));
        assert_eq!(mixed.meta.default_value(), Some(ValueKind::Cpu));

        // Types in another order (as another writer may put them) still read by name.
        let mut swapped = off_cpu_profile(&[("main;poll", labels(1, 2), 3)]);
        swapped.sample_type.reverse();
        swapped.sample[0].value.reverse();
        swapped.default_sample_type = 0;
        let swapped = Stacks::from_profile(&swapped);
        assert_eq!(swapped.samples[0].switches, 3);
        assert_eq!(swapped.samples[0].off_cpu_ns, 30_000_000);
        // Without default_sample_type, pprof's default is the last type.
        assert_eq!(swapped.meta.default_value(), Some(ValueKind::Switches));
    }

    #[test]
    fn value_kinds_name_themselves_as_pprof_and_the_flag_do() {
        for kind in ValueKind::ALL {
            assert_eq!(ValueKind::of_type_name(kind.type_name()), Some(kind));
            assert_eq!(ValueKind::of_flag(kind.flag()), Some(kind));
            use clap::ValueEnum as _;
            assert_eq!(
                kind.to_possible_value().unwrap().get_name(),
                kind.flag(),
                "clap's name is the flag's"
            );
        }
        assert!(ValueKind::OffCpu.is_off_cpu() && ValueKind::OffCpu.is_time());
        assert!(ValueKind::Switches.is_off_cpu() && !ValueKind::Switches.is_time());
        assert_eq!(ValueKind::OffCpu.count_kind(), ValueKind::Switches);
        assert_eq!(ValueKind::Samples.time_kind(), ValueKind::Cpu);
    }
}
