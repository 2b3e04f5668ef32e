//! Where each frame address lives: the kernel, an offset in a mapped file, or other memory.

use std::{collections::HashMap, sync::Arc};

use profiler_common::{MAX_STACK_DEPTH, NO_STACK, SampleKey, UNSTACKED_WAIT};

use super::MappingKey;
use crate::{
    bpf::Drained,
    process::{FileId, MappedFile, MappingObject, ProcessSnapshot},
};

/// A frame address resolved to where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Site {
    Kernel(u64),
    /// File offset inside a mapped file.
    File(FileId, u64),
    /// Offset inside the vDSO, or an absolute address of anonymous or unknown memory.
    Other(MappingKey, u64),
    /// The root of a user stack that filled every frame the kernel gives: its outermost callers
    /// are missing.
    Truncated,
    /// An off-CPU wait recorded without stacks ([`UNSTACKED_WAIT`]).
    Unstacked,
}

/// Kernel frames then user frames, leaf first. Callers' return addresses are moved back by one
/// byte so that they fall inside the call instruction (and its inlining context).
pub(super) fn sites(
    key: &SampleKey,
    drained: &Drained,
    snapshot: &ProcessSnapshot,
    files: &mut HashMap<FileId, Arc<MappedFile>>,
) -> Vec<Site> {
    if key.user_stack == UNSTACKED_WAIT {
        return vec![Site::Unstacked];
    }
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
    let user: Vec<Site> = user.collect();
    // The same test as the BPF program's `user_stack_truncated` counter.
    let truncated = (user.len() >= MAX_STACK_DEPTH).then_some(Site::Truncated);
    kernel.chain(user).chain(truncated).collect()
}

pub(super) fn caller_adjusted(index: usize, ip: u64) -> u64 {
    if index == 0 { ip } else { ip.saturating_sub(1) }
}
