//! The process snapshot that explains each sample's addresses, read again for addresses that
//! no mapping of it holds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use profiler_common::{NO_STACK, SampleKey};

use super::sites::caller_adjusted;
use crate::{
    bpf::Drained,
    process::{ProcessKey, ProcessSnapshot, ProcessTable},
};

pub(super) fn process_key(key: &SampleKey) -> ProcessKey {
    ProcessKey {
        pid: key.pid,
        pid_gen: key.pid_gen,
    }
}

pub(super) fn snapshots<'a>(
    keys: impl Iterator<Item = &'a SampleKey>,
    table: &Mutex<ProcessTable>,
) -> HashMap<ProcessKey, Arc<ProcessSnapshot>> {
    let mut table = table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut snapshots = HashMap::new();
    for key in keys {
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
pub(super) fn remap_unknown_addresses(
    drained: &Drained,
    snapshots: &mut HashMap<ProcessKey, Arc<ProcessSnapshot>>,
    table: &Mutex<ProcessTable>,
) {
    let mut stale: Vec<ProcessKey> = Vec::new();
    for (_, key, _) in super::records(drained) {
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
