//! An interval's samples as one OTLP `ExportProfilesServiceRequest`: a resource per process
//! (semantic-convention attributes), a CPU profile and an off-CPU profile under it, and one
//! dictionary for the whole request. A sample's trace is a `Link`, the protocol's own way.
//!
//! Addresses are file offsets, as in the pprof files (`profile/builder.rs`): a mapping spans
//! the whole address space at offset 0, so one mapping per file serves every process.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use super::proto::{
    collector::ExportProfilesServiceRequest,
    common::{AnyValue, InstrumentationScope, KeyValue, any_value},
    profiles::{
        KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ProfilesDictionary,
        ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
    },
    resource::Resource,
};
use crate::{
    profile::IntervalMeta,
    resolve::{ResolvedLocation, ResolvedSample, SampleKind},
};

/// Where the samples come from, beside what each sample says.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// `host.name`.
    pub host_name: String,
    /// `k8s.node.name`, in a Kubernetes DaemonSet.
    pub node_name: Option<String>,
}

/// The instrumentation scope and `telemetry.sdk.name`.
pub const SDK_NAME: &str = "profiler";

/// One request for an interval's samples; `None` when there are none.
pub fn encode(
    samples: &[ResolvedSample],
    meta: &IntervalMeta,
    origin: &Origin,
) -> Option<ExportProfilesServiceRequest> {
    if samples.is_empty() {
        return None;
    }
    let mut dictionary = Dictionary::new();
    // Resources in the order their processes first appear.
    let mut resources: Vec<(ProcessKey, ProcessProfiles)> = Vec::new();
    let mut index: HashMap<ProcessKey, usize> = HashMap::new();
    for sample in samples {
        let key = ProcessKey::of(sample);
        let at = *index.entry(key.clone()).or_insert_with(|| {
            resources.push((key, ProcessProfiles::default()));
            resources.len() - 1
        });
        let encoded = dictionary.sample(sample);
        let profiles = &mut resources[at].1;
        match sample.kind {
            SampleKind::Cpu => profiles.cpu.push(encoded),
            SampleKind::OffCpu => profiles.off_cpu.push(encoded),
        }
        if profiles.service.is_none() {
            profiles.service = sample
                .labels
                .trace
                .as_ref()
                .and_then(|trace| trace.service_name.clone());
        }
    }
    let resource_profiles = resources
        .into_iter()
        .map(|(key, profiles)| {
            let resource = key.resource(origin, profiles.service.as_deref());
            let mut list = Vec::new();
            for (kind, samples) in [
                (SampleKind::Cpu, profiles.cpu),
                (SampleKind::OffCpu, profiles.off_cpu),
            ] {
                if !samples.is_empty() {
                    list.push(dictionary.profile(kind, samples, meta, key.pid));
                }
            }
            ResourceProfiles {
                resource: Some(resource),
                scope_profiles: vec![ScopeProfiles {
                    scope: Some(InstrumentationScope {
                        name: SDK_NAME.into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    profiles: list,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }
        })
        .collect();
    Some(ExportProfilesServiceRequest {
        resource_profiles,
        dictionary: Some(dictionary.finish()),
    })
}

/// What tells one process's resource from another's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProcessKey {
    pid: u32,
    comm: String,
    container_id: Option<String>,
    pod_uid: Option<String>,
}

impl ProcessKey {
    fn of(sample: &ResolvedSample) -> Self {
        let labels = &sample.labels;
        Self {
            pid: labels.pid,
            comm: labels.comm.clone(),
            container_id: labels.container.as_ref().map(|c| c.container_id.clone()),
            pod_uid: labels.container.as_ref().and_then(|c| c.pod_uid.clone()),
        }
    }

    fn resource(&self, origin: &Origin, service: Option<&str>) -> Resource {
        let mut attributes = vec![
            string("host.name", &origin.host_name),
            int("process.pid", i64::from(self.pid)),
            string("process.executable.name", &self.comm),
        ];
        let optional = [
            ("k8s.node.name", origin.node_name.as_deref()),
            ("container.id", self.container_id.as_deref()),
            ("k8s.pod.uid", self.pod_uid.as_deref()),
            ("service.name", service),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.push(string(key, value));
            }
        }
        attributes.extend([
            string("telemetry.sdk.name", SDK_NAME),
            string("telemetry.sdk.language", "rust"),
            string("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ]);
        Resource {
            attributes,
            ..Resource::default()
        }
    }
}

#[derive(Default)]
struct ProcessProfiles {
    cpu: Vec<Sample>,
    off_cpu: Vec<Sample>,
    /// The service its traces name, when one does.
    service: Option<String>,
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// A sample attribute's value, as the dictionary tells them apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum AttributeValue {
    Str(String),
    Int(i64),
}

/// The request's tables, each item once, each index 0 the zero value the protocol asks for.
struct Dictionary {
    table: ProfilesDictionary,
    strings: HashMap<String, i32>,
    functions: HashMap<(i32, i32), i32>,
    mappings: HashMap<(i32, Option<String>), i32>,
    locations: HashMap<(i32, u64), i32>,
    stacks: HashMap<Vec<i32>, i32>,
    /// Stacks by the address of the locations they were made from: samples share them.
    stacks_of: HashMap<usize, (Arc<[ResolvedLocation]>, i32)>,
    links: HashMap<(Vec<u8>, Vec<u8>), i32>,
    attributes: HashMap<(i32, AttributeValue), i32>,
}

impl Dictionary {
    fn new() -> Self {
        let table = ProfilesDictionary {
            mapping_table: vec![Mapping::default()],
            location_table: vec![Location::default()],
            function_table: vec![super::proto::profiles::Function::default()],
            link_table: vec![Link {
                trace_id: vec![0; 16],
                span_id: vec![0; 8],
            }],
            string_table: vec![String::new()],
            attribute_table: vec![KeyValueAndUnit::default()],
            stack_table: vec![Stack::default()],
        };
        Self {
            table,
            strings: HashMap::from([(String::new(), 0)]),
            functions: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashMap::new(),
            stacks: HashMap::from([(Vec::new(), 0)]),
            stacks_of: HashMap::new(),
            links: HashMap::new(),
            attributes: HashMap::new(),
        }
    }

    fn finish(self) -> ProfilesDictionary {
        self.table
    }

    fn string(&mut self, text: &str) -> i32 {
        if let Some(&index) = self.strings.get(text) {
            return index;
        }
        let index = self.table.string_table.len() as i32;
        self.table.string_table.push(text.to_owned());
        self.strings.insert(text.to_owned(), index);
        index
    }

    fn sample(&mut self, sample: &ResolvedSample) -> Sample {
        let stack_index = self.stack(&sample.locations);
        let labels = &sample.labels;
        let mut attribute_indices = vec![self.attribute(
            "thread.id",
            AttributeValue::Int(i64::from(labels.thread_id)),
        )];
        if !labels.thread_name.is_empty() {
            let name = AttributeValue::Str(labels.thread_name.clone());
            attribute_indices.push(self.attribute("thread.name", name));
        }
        let link_index = labels
            .trace
            .as_ref()
            .and_then(|trace| Some((hex(&trace.trace_id)?, hex(&trace.span_id)?)))
            .map_or(0, |(trace_id, span_id)| self.link(trace_id, span_id));
        Sample {
            stack_index,
            attribute_indices,
            link_index,
            values: vec![i64::try_from(sample.nanos).unwrap_or(i64::MAX)],
            timestamps_unix_nano: Vec::new(),
        }
    }

    fn profile(
        &mut self,
        kind: SampleKind,
        samples: Vec<Sample>,
        meta: &IntervalMeta,
        pid: u32,
    ) -> Profile {
        let (value, period) = match kind {
            SampleKind::Cpu => ("cpu", meta.period_ns),
            SampleKind::OffCpu => ("off_cpu", 1),
        };
        let value_type = ValueType {
            type_strindex: self.string(value),
            unit_strindex: self.string("nanoseconds"),
        };
        let start = meta
            .start
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Profile {
            sample_type: Some(value_type),
            samples,
            time_unix_nano: start,
            duration_nano: meta.duration.as_nanos() as u64,
            period_type: Some(value_type),
            period: i64::try_from(period).unwrap_or(i64::MAX),
            profile_id: profile_id(meta.start, pid, kind),
            ..Profile::default()
        }
    }

    fn stack(&mut self, locations: &Arc<[ResolvedLocation]>) -> i32 {
        let address = Arc::as_ptr(locations).cast::<u8>() as usize;
        if let Some((_, index)) = self.stacks_of.get(&address) {
            return *index;
        }
        let indices: Vec<i32> = locations.iter().map(|l| self.location(l)).collect();
        let index = match self.stacks.get(&indices) {
            Some(&index) => index,
            None => {
                let index = self.table.stack_table.len() as i32;
                self.table.stack_table.push(Stack {
                    location_indices: indices.clone(),
                });
                self.stacks.insert(indices, index);
                index
            }
        };
        // The Arc is held so that its address is not reused by another stack meanwhile.
        self.stacks_of.insert(address, (locations.clone(), index));
        index
    }

    fn location(&mut self, location: &ResolvedLocation) -> i32 {
        let mapping_index = self.mapping(location);
        if let Some(&index) = self.locations.get(&(mapping_index, location.address)) {
            return index;
        }
        let lines = location
            .frames
            .iter()
            .map(|frame| {
                let name = self.string(&frame.function);
                let file = frame.file.as_deref().map_or(0, |file| self.string(file));
                let function_index = self.function(name, file);
                Line {
                    function_index,
                    line: frame.line.map_or(0, i64::from),
                    column: 0,
                }
            })
            .collect();
        let index = self.table.location_table.len() as i32;
        self.table.location_table.push(Location {
            mapping_index,
            address: location.address,
            lines,
            attribute_indices: Vec::new(),
        });
        self.locations
            .insert((mapping_index, location.address), index);
        index
    }

    fn function(&mut self, name: i32, file: i32) -> i32 {
        if let Some(&index) = self.functions.get(&(name, file)) {
            return index;
        }
        let index = self.table.function_table.len() as i32;
        self.table
            .function_table
            .push(super::proto::profiles::Function {
                name_strindex: name,
                system_name_strindex: name,
                filename_strindex: file,
                start_line: 0,
            });
        self.functions.insert((name, file), index);
        index
    }

    fn mapping(&mut self, location: &ResolvedLocation) -> i32 {
        let info = &location.info;
        let filename = self.string(&info.filename);
        let key = (filename, info.build_id.clone());
        if let Some(&index) = self.mappings.get(&key) {
            return index;
        }
        let attribute_indices = match &info.build_id {
            Some(id) => vec![self.attribute(
                "process.executable.build_id.gnu",
                AttributeValue::Str(id.clone()),
            )],
            None => Vec::new(),
        };
        let index = self.table.mapping_table.len() as i32;
        self.table.mapping_table.push(Mapping {
            memory_start: 0,
            memory_limit: u64::MAX,
            file_offset: 0,
            filename_strindex: filename,
            attribute_indices,
        });
        self.mappings.insert(key, index);
        index
    }

    fn link(&mut self, trace_id: Vec<u8>, span_id: Vec<u8>) -> i32 {
        let key = (trace_id, span_id);
        if let Some(&index) = self.links.get(&key) {
            return index;
        }
        let index = self.table.link_table.len() as i32;
        self.table.link_table.push(Link {
            trace_id: key.0.clone(),
            span_id: key.1.clone(),
        });
        self.links.insert(key, index);
        index
    }

    fn attribute(&mut self, key: &str, value: AttributeValue) -> i32 {
        let key_strindex = self.string(key);
        if let Some(&index) = self.attributes.get(&(key_strindex, value.clone())) {
            return index;
        }
        let any = match &value {
            AttributeValue::Str(text) => any_value::Value::StringValue(text.clone()),
            AttributeValue::Int(number) => any_value::Value::IntValue(*number),
        };
        let index = self.table.attribute_table.len() as i32;
        self.table.attribute_table.push(KeyValueAndUnit {
            key_strindex,
            value: Some(AnyValue { value: Some(any) }),
            unit_strindex: 0,
        });
        self.attributes.insert((key_strindex, value), index);
        index
    }
}

/// Bytes of a lowercase hex ID; `None` when it is not hex.
fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// 16 bytes that name one profile: its start, process and kind, hashed twice (never all zero,
/// which the protocol calls invalid).
fn profile_id(start: SystemTime, pid: u32, kind: SampleKind) -> Vec<u8> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let nanos = start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let hash = |seed: u8| {
        BuildHasherDefault::<DefaultHasher>::default().hash_one((seed, nanos, pid, kind))
    };
    let mut id = [hash(1).to_le_bytes(), hash(2).to_le_bytes()].concat();
    if id.iter().all(|&b| b == 0) {
        id[0] = 1;
    }
    id
}

#[cfg(test)]
mod tests;
