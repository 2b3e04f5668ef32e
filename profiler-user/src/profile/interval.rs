//! One drain becomes one profile: stacks are split into kernel and user frames, user addresses
//! are mapped to (file, offset) through the process snapshot, every distinct address is
//! symbolized once in a batch per file, then the samples are added.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use profiler_common::{NO_STACK, SampleKey, SampleValue};

use super::{
    ProfileBuilder,
    builder::{Labels, MappingInfo, MappingKey},
    proto::Profile,
};
use crate::{
    bpf::Drained,
    process::{FileId, MappedFile, MappingObject, ProcessKey, ProcessSnapshot, ProcessTable},
    symbolize::{Frame, Frames, Symbolizer},
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

/// A frame address resolved to where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Site {
    Kernel(u64),
    /// File offset inside a mapped file.
    File(FileId, u64),
    /// Offset inside the vDSO, or an absolute address of anonymous or unknown memory.
    Other(MappingKey, u64),
}

/// Builds the interval's profile. Processes come from `table` (captured late if their
/// announcement was missed); names come from `symbolizer` and its caches.
pub fn build_interval(
    drained: &Drained,
    table: &Mutex<ProcessTable>,
    symbolizer: &mut Symbolizer,
    meta: IntervalMeta,
) -> (Profile, IntervalStats) {
    let snapshots = snapshots(&drained.samples, table);
    let mut files: HashMap<FileId, Arc<MappedFile>> = HashMap::new();
    let stacks: Vec<Vec<Site>> = drained
        .samples
        .iter()
        .map(|(key, _)| sites(key, drained, &snapshots[&process_key(key)], &mut files))
        .collect();
    let names = symbolize(&stacks, &files, symbolizer);

    let mut builder = ProfileBuilder::new(meta.period_ns as i64, meta.start, meta.duration);
    let mut stats = IntervalStats {
        processes: snapshots.len(),
        ..IntervalStats::default()
    };
    for ((key, value), sites) in drained.samples.iter().zip(&stacks) {
        let snapshot = &snapshots[&process_key(key)];
        add_sample(&mut builder, key, value, sites, snapshot, &files, &names);
        stats.samples += value.count;
    }
    stats.stacks = builder.sample_count();
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

fn add_sample(
    builder: &mut ProfileBuilder,
    key: &SampleKey,
    value: &SampleValue,
    sites: &[Site],
    snapshot: &ProcessSnapshot,
    files: &HashMap<FileId, Arc<MappedFile>>,
    names: &HashMap<Site, Frames>,
) {
    let thread_name = comm_string(&key.comm);
    let mut locations: Vec<u64> = sites
        .iter()
        .map(|site| {
            let (mapping_key, address) = match *site {
                Site::Kernel(address) => (MappingKey::Kernel, address),
                Site::File(id, offset) => (MappingKey::File(id), offset),
                Site::Other(mapping, address) => (mapping, address),
            };
            let mapping = builder.mapping(mapping_key, || describe(mapping_key, files));
            let frames = names.get(site).map_or(&[][..], |f| &f[..]);
            builder.location(mapping, address, frames)
        })
        .collect();
    if locations.is_empty() {
        // Keep the CPU time of a sample whose stacks could not be read.
        let mapping = builder.mapping(MappingKey::Unknown, || describe(MappingKey::Unknown, files));
        locations.push(builder.location(mapping, 0, &[Frame::named("[no stack]")]));
    }
    let comm = if snapshot.name.is_empty() {
        thread_name.clone()
    } else {
        snapshot.name.clone()
    };
    let labels = Labels {
        pid: key.pid,
        thread_id: key.tid,
        comm,
        thread_name,
    };
    builder.add_sample(
        locations,
        &labels,
        value.count as i64,
        value.period_ns as i64,
    );
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
            pid_gen: 7,
            user_stack: 42,
            kernel_stack: NO_STACK,
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
        };
        let table = Mutex::new(ProcessTable::default());
        let mut symbolizer = Symbolizer::new();
        let meta = IntervalMeta {
            start: SystemTime::now(),
            duration: Duration::from_secs(1),
            period_ns: 10,
        };
        let (profile, stats) = build_interval(&drained, &table, &mut symbolizer, meta);
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
    }

    #[test]
    fn a_sample_without_stacks_keeps_its_time() {
        let key = SampleKey {
            pid: u32::MAX - 1,
            tid: 1,
            pid_gen: 1,
            user_stack: NO_STACK,
            kernel_stack: 99, // missing from the stacks map
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
            stacks: Stacks::new(),
        };
        let table = Mutex::new(ProcessTable::default());
        let meta = IntervalMeta {
            start: SystemTime::now(),
            duration: Duration::from_secs(1),
            period_ns: 10,
        };
        let (profile, _) = build_interval(&drained, &table, &mut Symbolizer::new(), meta);
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
    fn comm_stops_at_nul() {
        assert_eq!(comm_string(b"bash\0\0junk"), "bash");
        assert_eq!(comm_string(b"0123456789abcdef"), "0123456789abcdef");
    }
}
