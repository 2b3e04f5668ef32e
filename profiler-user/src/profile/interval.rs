//! One drain becomes resolved samples, then a profile: stacks are split into kernel and user
//! frames, user addresses are mapped to (file, offset) through the process snapshot, every
//! distinct address is symbolized once in a batch per file, and trace contexts become labels.
//! Resolved samples carry their frames, so per-trace files are built from them later without
//! symbolizing again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use profiler_common::{NO_CONTEXT, NO_STACK, SampleKey, SampleValue};

use super::{
    ProfileBuilder,
    builder::{Labels, MappingInfo, MappingKey},
    proto::Profile,
};
use crate::{
    bpf::Drained,
    process::{FileId, MappedFile, MappingObject, ProcessKey, ProcessSnapshot, ProcessTable},
    symbolize::{Frame, Frames, Symbolizer},
    tracectx::{TraceLabeler, TraceLabels},
};

/// Name of the mapping that holds kernel frames, as perf and pprof tools expect it.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// The time an interval covers and the period in force.
#[derive(Clone, Copy, Debug)]
pub struct IntervalMeta {
    pub start: SystemTime,
    pub duration: Duration,
    pub period_ns: u64,
}

/// What one interval held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntervalStats {
    /// Samples counted (the sum of counts).
    pub samples: u64,
    /// Distinct pprof samples written.
    pub stacks: usize,
    /// Distinct processes sampled.
    pub processes: usize,
}

/// One frame address, resolved: its mapping, its address in the profile, its names.
#[derive(Clone, Debug)]
pub struct ResolvedLocation {
    pub mapping: MappingKey,
    pub info: Arc<MappingInfo>,
    /// File offset for file mappings, absolute address otherwise.
    pub address: u64,
    pub frames: Frames,
}

/// A sample with everything needed to write it into any profile.
#[derive(Clone, Debug)]
pub struct ResolvedSample {
    /// Leaf first.
    pub locations: Arc<[ResolvedLocation]>,
    pub labels: Labels,
    pub count: u64,
    pub cpu_ns: u64,
}

/// A frame address resolved to where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Site {
    Kernel(u64),
    /// File offset inside a mapped file.
    File(FileId, u64),
    /// Offset inside the vDSO, or an absolute address of anonymous or unknown memory.
    Other(MappingKey, u64),
}

/// Resolves every sample of a drain. Processes come from `table` (captured late if their
/// announcement was missed); names from `symbolizer`; trace labels from `labeler`.
pub fn resolve_interval(
    drained: &Drained,
    table: &Mutex<ProcessTable>,
    symbolizer: &mut Symbolizer,
    labeler: &mut TraceLabeler,
) -> Vec<ResolvedSample> {
    let mut snapshots = snapshots(&drained.samples, table);
    remap_unknown_addresses(drained, &mut snapshots, table);
    let mut files: HashMap<FileId, Arc<MappedFile>> = HashMap::new();
    let stacks: Vec<Vec<Site>> = drained
        .samples
        .iter()
        .map(|(key, _)| sites(key, drained, &snapshots[&process_key(key)], &mut files))
        .collect();
    let names = symbolize(&stacks, &files, symbolizer);
    let mut infos: HashMap<MappingKey, Arc<MappingInfo>> = HashMap::new();
    let mut located: HashMap<(u64, u64, ProcessKey), Arc<[ResolvedLocation]>> = HashMap::new();

    drained
        .samples
        .iter()
        .zip(&stacks)
        .map(|((key, value), sites)| {
            let process = process_key(key);
            let locations = located
                .entry((key.user_stack, key.kernel_stack, process))
                .or_insert_with(|| locations(sites, &files, &names, &mut infos))
                .clone();
            let snapshot = &snapshots[&process];
            let trace = (key.context != NO_CONTEXT)
                .then(|| drained.contexts.get(&key.context))
                .flatten()
                .map(|context| labeler.labels(process, context));
            ResolvedSample {
                locations,
                labels: labels(key, snapshot, trace),
                count: value.count,
                cpu_ns: value.period_ns,
            }
        })
        .collect()
}

/// Builds one profile from resolved samples, borrowed or handed over (an incident capture
/// gives its samples up one by one rather than copy them).
pub fn build_profile(
    samples: impl IntoIterator<Item = impl std::borrow::Borrow<ResolvedSample>>,
    meta: IntervalMeta,
) -> (Profile, IntervalStats) {
    let mut builder = ProfileBuilder::new(meta.period_ns as i64, meta.start, meta.duration);
    let mut stats = IntervalStats::default();
    let mut processes = std::collections::HashSet::new();
    for sample in samples {
        let sample = sample.borrow();
        let ids = sample
            .locations
            .iter()
            .map(|location| {
                let mapping = builder.mapping(location.mapping, || (*location.info).clone());
                builder.location(mapping, location.address, &location.frames)
            })
            .collect();
        builder.add_sample(
            ids,
            &sample.labels,
            sample.count as i64,
            sample.cpu_ns as i64,
        );
        stats.samples += sample.count;
        processes.insert(sample.labels.pid);
    }
    stats.stacks = builder.sample_count();
    stats.processes = processes.len();
    (builder.build(), stats)
}

fn process_key(key: &SampleKey) -> ProcessKey {
    ProcessKey {
        pid: key.pid,
        pid_gen: key.pid_gen,
    }
}

fn snapshots(
    samples: &[(SampleKey, SampleValue)],
    table: &Mutex<ProcessTable>,
) -> HashMap<ProcessKey, Arc<ProcessSnapshot>> {
    let mut table = table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut snapshots = HashMap::new();
    for (key, _) in samples {
        let key = process_key(key);
        snapshots
            .entry(key)
            .or_insert_with(|| table.get_or_capture(key));
    }
    snapshots
}

/// Mapping reads for unknown addresses per drain, at most: bounds the `/proc` work of one drain
/// on a host where many processes show addresses no mapping explains.
const MAX_REMAPS_PER_DRAIN: usize = 64;

/// Reads again the mappings of processes with a user address outside every known mapping (code
/// mapped after their snapshot: `dlopen`, plugins, JIT), as far as the table says each is due.
fn remap_unknown_addresses(
    drained: &Drained,
    snapshots: &mut HashMap<ProcessKey, Arc<ProcessSnapshot>>,
    table: &Mutex<ProcessTable>,
) {
    let mut stale: Vec<ProcessKey> = Vec::new();
    for (key, _) in &drained.samples {
        let process = process_key(key);
        if stale.contains(&process) || key.user_stack == NO_STACK {
            continue;
        }
        let Some(stack) = drained.stacks.get(&key.user_stack) else {
            continue;
        };
        let snapshot = &snapshots[&process];
        let unknown = stack
            .iter()
            .enumerate()
            .any(|(i, &ip)| snapshot.find(caller_adjusted(i, ip)).is_none());
        if unknown {
            stale.push(process);
        }
    }
    if stale.is_empty() {
        return;
    }
    let now = std::time::Instant::now();
    let mut table = table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut remapped = 0;
    for process in stale {
        if remapped == MAX_REMAPS_PER_DRAIN {
            break;
        }
        if let Some(fresh) = table.remap(process, now) {
            remapped += 1;
            snapshots.insert(process, fresh);
        }
    }
}

/// Kernel frames then user frames, leaf first. Callers' return addresses are moved back by one
/// byte so that they fall inside the call instruction (and its inlining context).
fn sites(
    key: &SampleKey,
    drained: &Drained,
    snapshot: &ProcessSnapshot,
    files: &mut HashMap<FileId, Arc<MappedFile>>,
) -> Vec<Site> {
    let frames = |hash: u64| {
        (hash != NO_STACK)
            .then(|| drained.stacks.get(&hash))
            .flatten()
            .map_or(&[][..], |s| &s[..])
    };
    let kernel = frames(key.kernel_stack)
        .iter()
        .enumerate()
        .map(|(i, &ip)| Site::Kernel(caller_adjusted(i, ip)));
    let user = frames(key.user_stack).iter().enumerate().map(|(i, &ip)| {
        let address = caller_adjusted(i, ip);
        match snapshot.find(address) {
            Some(mapping) => match &mapping.object {
                MappingObject::File(file) => {
                    files.entry(file.id).or_insert_with(|| file.clone());
                    Site::File(file.id, mapping.file_offset(address))
                }
                MappingObject::Vdso => Site::Other(MappingKey::Vdso, mapping.file_offset(address)),
                MappingObject::Anonymous => Site::Other(MappingKey::Anonymous, address),
            },
            None => Site::Other(MappingKey::Unknown, address),
        }
    });
    kernel.chain(user.collect::<Vec<_>>()).collect()
}

fn caller_adjusted(index: usize, ip: u64) -> u64 {
    if index == 0 { ip } else { ip.saturating_sub(1) }
}

/// Names every distinct site: one symbolizer call per file and one for the kernel.
fn symbolize(
    stacks: &[Vec<Site>],
    files: &HashMap<FileId, Arc<MappedFile>>,
    symbolizer: &mut Symbolizer,
) -> HashMap<Site, Frames> {
    let mut by_file: HashMap<FileId, Vec<u64>> = HashMap::new();
    let mut kernel = Vec::new();
    for site in stacks.iter().flatten() {
        match *site {
            Site::Kernel(address) => kernel.push(address),
            Site::File(id, offset) => by_file.entry(id).or_default().push(offset),
            Site::Other(..) => {}
        }
    }
    let mut names = HashMap::new();
    for (id, mut offsets) in by_file {
        offsets.sort_unstable();
        offsets.dedup();
        let frames = symbolizer.user(&files[&id], &offsets);
        names.extend(offsets.into_iter().map(|o| Site::File(id, o)).zip(frames));
    }
    kernel.sort_unstable();
    kernel.dedup();
    let frames = symbolizer.kernel(&kernel);
    names.extend(kernel.into_iter().map(Site::Kernel).zip(frames));
    names
}

fn locations(
    sites: &[Site],
    files: &HashMap<FileId, Arc<MappedFile>>,
    names: &HashMap<Site, Frames>,
    infos: &mut HashMap<MappingKey, Arc<MappingInfo>>,
) -> Arc<[ResolvedLocation]> {
    let mut info = |key: MappingKey| {
        infos
            .entry(key)
            .or_insert_with(|| Arc::new(describe(key, files)))
            .clone()
    };
    let mut resolved: Vec<ResolvedLocation> = sites
        .iter()
        .map(|site| {
            let (mapping, address) = match *site {
                Site::Kernel(address) => (MappingKey::Kernel, address),
                Site::File(id, offset) => (MappingKey::File(id), offset),
                Site::Other(mapping, address) => (mapping, address),
            };
            ResolvedLocation {
                mapping,
                info: info(mapping),
                address,
                frames: names.get(site).cloned().unwrap_or_else(|| Frames::from([])),
            }
        })
        .collect();
    if resolved.is_empty() {
        // Keep the CPU time of a sample whose stacks could not be read.
        resolved.push(ResolvedLocation {
            mapping: MappingKey::Unknown,
            info: info(MappingKey::Unknown),
            address: 0,
            frames: Frames::from([Frame::named("[no stack]")]),
        });
    }
    resolved.into()
}

fn labels(key: &SampleKey, snapshot: &ProcessSnapshot, trace: Option<Arc<TraceLabels>>) -> Labels {
    let thread_name = comm_string(&key.comm);
    let comm = if snapshot.name.is_empty() {
        thread_name.clone()
    } else {
        snapshot.name.clone()
    };
    Labels {
        pid: key.pid,
        thread_id: key.tid,
        comm,
        thread_name,
        trace,
        container: snapshot.container.clone(),
    }
}

fn describe(key: MappingKey, files: &HashMap<FileId, Arc<MappedFile>>) -> MappingInfo {
    let named = |name: &str| MappingInfo {
        filename: name.to_owned(),
        build_id: None,
    };
    match key {
        MappingKey::File(id) => files.get(&id).map_or_else(
            || named("[unknown]"),
            |file| MappingInfo {
                filename: file.path.clone(),
                build_id: file.build_id.clone(),
            },
        ),
        MappingKey::Kernel => named(KERNEL_MAPPING),
        MappingKey::Vdso => named("[vdso]"),
        MappingKey::Anonymous => named("[anon]"),
        MappingKey::Unknown => named("[unknown]"),
    }
}

/// A task's `comm`: bytes up to the first NUL, lossily decoded.
fn comm_string(comm: &[u8]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use profiler_common::{MAX_ATTR_BYTES, TraceContext};

    use super::*;
    use crate::bpf::Stacks;

    #[inline(never)]
    fn interval_test_leaf() -> u64 {
        std::hint::black_box(interval_test_leaf as *const () as u64)
    }

    fn comm(name: &str) -> [u8; 16] {
        let mut comm = [0u8; 16];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        comm
    }

    fn meta() -> IntervalMeta {
        IntervalMeta {
            start: SystemTime::now(),
            duration: Duration::from_secs(1),
            period_ns: 10,
        }
    }

    fn resolve(drained: &Drained) -> Vec<ResolvedSample> {
        let table = Mutex::new(ProcessTable::default());
        resolve_interval(
            drained,
            &table,
            &mut Symbolizer::new(),
            &mut TraceLabeler::default(),
        )
    }

    #[test]
    fn builds_named_samples_from_a_drain() {
        let pid = std::process::id();
        let leaf = interval_test_leaf();
        let mut stacks = Stacks::new();
        // The leaf's own address, then a "return address" one byte past it.
        stacks.insert(42, vec![leaf, leaf + 1].into());
        let key = SampleKey {
            pid,
            tid: pid + 1,
            pid_gen: 0,
            user_stack: 42,
            kernel_stack: NO_STACK,
            context: NO_CONTEXT,
            comm: comm("worker-1"),
        };
        let drained = Drained {
            samples: vec![(
                key,
                SampleValue {
                    count: 3,
                    period_ns: 30,
                },
            )],
            stacks,
            ..Drained::default()
        };
        let (profile, stats) = build_profile(resolve(&drained), meta());
        assert_eq!(
            stats,
            IntervalStats {
                samples: 3,
                stacks: 1,
                processes: 1
            }
        );
        let sample = &profile.sample[0];
        assert_eq!(sample.value, vec![3, 30]);
        assert_eq!(sample.location_id.len(), 2);
        let s = |i: i64| profile.string_table[i as usize].as_str();
        for id in &sample.location_id {
            let location = &profile.location[*id as usize - 1];
            let outer = location.line.last().expect("named");
            let name = s(profile.function[outer.function_id as usize - 1].name);
            assert!(name.ends_with("interval_test_leaf"), "{name}");
            let mapping = &profile.mapping[location.mapping_id as usize - 1];
            assert_eq!(
                std::path::Path::new(s(mapping.filename)),
                std::env::current_exe().unwrap()
            );
        }
        let thread_name = sample
            .label
            .iter()
            .find(|l| s(l.key) == "thread_name")
            .unwrap();
        assert_eq!(s(thread_name.str), "worker-1");
        assert!(!sample.label.iter().any(|l| s(l.key) == "trace_id"));
    }

    #[test]
    fn a_sample_without_stacks_keeps_its_time() {
        let key = SampleKey {
            pid: u32::MAX - 1,
            tid: 1,
            pid_gen: 0,
            user_stack: NO_STACK,
            kernel_stack: 99, // missing from the stacks map
            context: NO_CONTEXT,
            comm: comm("gone"),
        };
        let drained = Drained {
            samples: vec![(
                key,
                SampleValue {
                    count: 1,
                    period_ns: 10,
                },
            )],
            ..Drained::default()
        };
        let (profile, _) = build_profile(resolve(&drained), meta());
        assert_eq!(profile.sample.len(), 1);
        assert_eq!(profile.sample[0].value, vec![1, 10]);
        let s = |i: i64| profile.string_table[i as usize].as_str();
        let comm = profile.sample[0]
            .label
            .iter()
            .find(|l| s(l.key) == "comm")
            .unwrap();
        assert_eq!(s(comm.str), "gone", "falls back to the thread name");
    }

    #[test]
    fn a_traced_sample_carries_its_trace_labels() {
        let mut attrs = [0u8; MAX_ATTR_BYTES];
        attrs[..5].copy_from_slice(&[0, 3, b'a', b'b', b'c']);
        let context = TraceContext {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            valid: 1,
            trace_flags: 1,
            attrs_len: 5,
            _pad: [0; 4],
            attrs,
        };
        let key = SampleKey {
            pid: u32::MAX - 1,
            tid: 1,
            pid_gen: 0,
            user_stack: NO_STACK,
            kernel_stack: NO_STACK,
            context: 5,
            comm: comm("traced"),
        };
        let drained = Drained {
            samples: vec![(
                key,
                SampleValue {
                    count: 2,
                    period_ns: 20,
                },
            )],
            contexts: [(5, context)].into(),
            ..Drained::default()
        };
        let resolved = resolve(&drained);
        let trace = resolved[0].labels.trace.as_ref().expect("traced");
        assert_eq!(trace.trace_id, "ab".repeat(16));
        assert_eq!(trace.span_id, "01".repeat(8));
        assert_eq!(
            trace.attributes,
            vec![("attr_0".to_owned(), "abc".to_owned())]
        );
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_string(b"bash\0\0junk"), "bash");
        assert_eq!(comm_string(b"0123456789abcdef"), "0123456789abcdef");
    }
}
