use std::time::Duration;

use prost::Message as _;

use super::*;
use crate::{
    process::ContainerInfo,
    resolve::{Labels, MappingInfo, MappingKey},
    symbolize::Frame,
    tracectx::TraceLabels,
};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const SPAN: &str = "b7ad6b7169203331";

fn location(file: &str, address: u64, function: &str) -> ResolvedLocation {
    ResolvedLocation {
        mapping: MappingKey::Unknown,
        info: Arc::new(MappingInfo {
            filename: file.into(),
            build_id: Some("abcd".into()),
        }),
        address,
        frames: Arc::from([Frame::named(function)]),
    }
}

fn sample(
    pid: u32,
    kind: SampleKind,
    stack: &Arc<[ResolvedLocation]>,
    traced: bool,
    nanos: u64,
) -> ResolvedSample {
    ResolvedSample {
        locations: stack.clone(),
        labels: Labels {
            pid,
            thread_id: pid + 1,
            comm: format!("app-{pid}"),
            thread_name: "worker".into(),
            trace: traced.then(|| {
                Arc::new(TraceLabels {
                    trace_id: TRACE.into(),
                    span_id: SPAN.into(),
                    service_name: Some("checkout".into()),
                    attributes: Vec::new(),
                })
            }),
            container: (pid == 7).then(|| {
                Arc::new(ContainerInfo {
                    container_id: "c".repeat(64),
                    pod_uid: Some("pod-1".into()),
                })
            }),
        },
        kind,
        count: 1,
        nanos,
    }
}

fn meta() -> IntervalMeta {
    IntervalMeta {
        start: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        duration: Duration::from_secs(10),
        period_ns: 10_101_010,
    }
}

/// The names of a sample's stack, leaf first, through the dictionary.
fn names(dictionary: &ProfilesDictionary, sample: &Sample) -> Vec<String> {
    let stack = &dictionary.stack_table[sample.stack_index as usize];
    stack
        .location_indices
        .iter()
        .flat_map(|&l| &dictionary.location_table[l as usize].lines)
        .map(|line| {
            let function = &dictionary.function_table[line.function_index as usize];
            dictionary.string_table[function.name_strindex as usize].clone()
        })
        .collect()
}

fn resource_attribute(resource: &ResourceProfiles, key: &str) -> Option<String> {
    let attributes = &resource.resource.as_ref()?.attributes;
    let value = attributes.iter().find(|a| a.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        any_value::Value::IntValue(number) => Some(number.to_string()),
        _ => None,
    }
}

#[test]
fn an_interval_is_one_request_with_one_dictionary_and_a_resource_per_process() {
    let hot: Arc<[ResolvedLocation]> = Arc::from([
        location("/usr/bin/app", 0x1010, "hot_leaf"),
        location("/usr/bin/app", 0x2020, "main"),
    ]);
    let wait: Arc<[ResolvedLocation]> = Arc::from([
        location("[kernel.kallsyms]", 0xffff_0010, "__schedule"),
        location("/usr/bin/app", 0x3030, "wait_backend"),
        location("/usr/bin/app", 0x2020, "main"),
    ]);
    let samples = [
        sample(7, SampleKind::Cpu, &hot, true, 30_000_000),
        sample(7, SampleKind::Cpu, &hot, false, 10_000_000),
        sample(7, SampleKind::OffCpu, &wait, true, 45_000_000),
        sample(9, SampleKind::Cpu, &hot, false, 20_000_000),
    ];
    let origin = Origin {
        host_name: "node-a".into(),
        node_name: Some("node-a".into()),
    };
    let request = encode(&samples, &meta(), &origin).expect("a request");
    // What goes on the wire decodes to the same.
    let request =
        ExportProfilesServiceRequest::decode(request.encode_to_vec().as_slice()).expect("decoding");
    let dictionary = request.dictionary.as_ref().expect("a dictionary");
    assert_eq!(dictionary.string_table[0], "");
    assert_eq!(dictionary.stack_table[0], Stack::default());
    assert_eq!(dictionary.location_table[0], Location::default());
    assert_eq!(dictionary.link_table[0].trace_id, vec![0; 16]);
    // `main` at 0x2020 is one location, shared by both stacks.
    assert_eq!(dictionary.location_table.len(), 1 + 4);
    assert_eq!(dictionary.stack_table.len(), 1 + 2);

    assert_eq!(request.resource_profiles.len(), 2, "a resource per process");
    let first = &request.resource_profiles[0];
    assert_eq!(
        resource_attribute(first, "process.pid").as_deref(),
        Some("7")
    );
    assert_eq!(
        resource_attribute(first, "process.executable.name").as_deref(),
        Some("app-7")
    );
    assert_eq!(
        resource_attribute(first, "host.name").as_deref(),
        Some("node-a")
    );
    assert_eq!(
        resource_attribute(first, "k8s.node.name").as_deref(),
        Some("node-a")
    );
    assert_eq!(
        resource_attribute(first, "k8s.pod.uid").as_deref(),
        Some("pod-1")
    );
    assert_eq!(
        resource_attribute(first, "container.id"),
        Some("c".repeat(64))
    );
    assert_eq!(
        resource_attribute(first, "service.name").as_deref(),
        Some("checkout")
    );
    assert_eq!(
        resource_attribute(first, "telemetry.sdk.name").as_deref(),
        Some(SDK_NAME)
    );
    let second = &request.resource_profiles[1];
    assert_eq!(resource_attribute(second, "container.id"), None);
    assert_eq!(resource_attribute(second, "service.name"), None);

    let profiles = &first.scope_profiles[0].profiles;
    let kinds: Vec<&str> = profiles
        .iter()
        .map(|p| {
            let value = p.sample_type.expect("a sample type");
            dictionary.string_table[value.type_strindex as usize].as_str()
        })
        .collect();
    assert_eq!(kinds, ["cpu", "off_cpu"]);
    let cpu = &profiles[0];
    assert_eq!(cpu.time_unix_nano, 1_800_000_000 * 1_000_000_000);
    assert_eq!(cpu.duration_nano, 10_000_000_000);
    assert_eq!(cpu.period, 10_101_010);
    assert_eq!(cpu.profile_id.len(), 16);
    assert_ne!(cpu.profile_id, profiles[1].profile_id);
    assert_eq!(cpu.samples.len(), 2);
    assert_eq!(names(dictionary, &cpu.samples[0]), ["hot_leaf", "main"]);
    assert_eq!(cpu.samples[0].values, [30_000_000]);
    // The traced sample links to its trace; the other to nothing (index 0).
    let link = &dictionary.link_table[cpu.samples[0].link_index as usize];
    assert_eq!(hex_of(&link.trace_id), TRACE);
    assert_eq!(hex_of(&link.span_id), SPAN);
    assert_eq!(cpu.samples[1].link_index, 0);
    let thread_ids: Vec<_> = cpu.samples[0]
        .attribute_indices
        .iter()
        .map(|&a| &dictionary.attribute_table[a as usize])
        .filter(|a| dictionary.string_table[a.key_strindex as usize] == "thread.id")
        .collect();
    assert_eq!(thread_ids.len(), 1);
    let off = &profiles[1];
    assert_eq!(
        names(dictionary, &off.samples[0]),
        ["__schedule", "wait_backend", "main"]
    );
    assert_eq!(off.samples[0].values, [45_000_000]);
    assert_eq!(off.samples[0].link_index, cpu.samples[0].link_index);
}

#[test]
fn nothing_to_send_is_no_request() {
    assert!(encode(&[], &meta(), &Origin::default()).is_none());
}

#[test]
fn ids_that_are_not_hex_give_no_link() {
    assert_eq!(hex("0aff"), Some(vec![0x0a, 0xff]));
    assert_eq!(hex("0af"), None);
    assert_eq!(hex("zz"), None);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
