//! Sites become locations: the mapping each lies in (described once per mapping), its address
//! in the profile, and its names.

use std::{collections::HashMap, sync::Arc};

use super::{MappingInfo, MappingKey, ResolvedLocation, SampleKind, sites::Site};
use crate::{
    process::{FileId, MappedFile},
    symbolize::{Frame, Frames},
};

/// Name of the mapping that holds kernel frames, as perf and pprof tools expect it.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// The root frame of a user stack cut at the kernel's frame limit.
pub const TRUNCATED: &str = "[truncated]";

/// The one frame of an off-CPU wait recorded without stacks: it began at a place whose last
/// wait was short, where the kernel does not read them.
pub const UNSTACKED: &str = "[wait: stack not read]";

pub(super) fn locations(
    kind: SampleKind,
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
                Site::Truncated => (MappingKey::Truncated, 0),
                Site::Unstacked => (MappingKey::Unknown, 0),
            };
            let frames = match site {
                Site::Truncated => Frames::from([Frame::named(TRUNCATED)]),
                Site::Unstacked => Frames::from([Frame::named(UNSTACKED)]),
                _ => names.get(site).cloned().unwrap_or_else(|| Frames::from([])),
            };
            ResolvedLocation {
                mapping,
                info: info(mapping),
                address,
                frames,
            }
        })
        .collect();
    if kind == SampleKind::OffCpu {
        // Read in the switch program, the kernel stack starts in it and the tracepoint's
        // glue, above the scheduler: not where the thread waits.
        let glue = resolved
            .iter()
            .take_while(|location| {
                location.mapping == MappingKey::Kernel
                    && location
                        .frames
                        .first()
                        .is_some_and(|frame| is_tracing_glue(&frame.function))
            })
            .count();
        resolved.drain(..glue);
    }
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

/// A kernel function that runs a BPF program from a tracepoint (names from Linux 5.10 to 6.18),
/// or the program itself.
pub(super) fn is_tracing_glue(function: &str) -> bool {
    [
        "bpf_prog_",
        "bpf_trace_run",
        "__bpf_trace_",
        "__traceiter_",
        "bpf_dispatcher",
    ]
    .iter()
    .any(|prefix| function.starts_with(prefix))
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
        MappingKey::Truncated => named(TRUNCATED),
    }
}
