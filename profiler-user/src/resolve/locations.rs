//! Sites become locations: the mapping each lies in (described once per mapping), its address
//! in the profile, and its names.

use std::{collections::HashMap, sync::Arc};

use super::{MappingInfo, MappingKey, ResolvedLocation, sites::Site};
use crate::{
    process::{FileId, MappedFile},
    symbolize::{Frame, Frames},
};

/// Name of the mapping that holds kernel frames, as perf and pprof tools expect it.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// The root frame of a user stack cut at the kernel's frame limit.
pub const TRUNCATED: &str = "[truncated]";

pub(super) fn locations(
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
            };
            let frames = match site {
                Site::Truncated => Frames::from([Frame::named(TRUNCATED)]),
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
