//! Resolution: one drain becomes resolved samples. Stacks are split into kernel and user frames,
//! user addresses are mapped to (file, offset) through the process snapshot, every distinct
//! address is symbolized once in a batch per file, and trace contexts become labels. Resolved
//! samples carry their frames, so every profile (interval, trace, incident) is built from them
//! later without symbolizing again, and without BPF types.

mod labels;
mod locations;
mod names;
mod processes;
mod sample;
mod sites;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use profiler_common::{GO_CONTEXT_BIT, NO_CONTEXT, SampleKey, SampleValue};

pub use locations::{KERNEL_MAPPING, TRUNCATED, UNSTACKED};
pub use sample::{Labels, MappingInfo, MappingKey, ResolvedLocation, ResolvedSample, SampleKind};

use labels::labels;
use locations::locations;
use names::symbolize;
use processes::{process_key, remap_unknown_addresses, snapshots};
use sites::{Site, sites};

/// A traced sample's labels, as [`TraceLabeler`] makes them: part of a resolved sample.
pub use crate::tracectx::TraceLabels;
use crate::{
    bpf::Drained,
    process::{FileId, MappedFile, ProcessKey, ProcessTable},
    symbolize::Symbolizer,
    tracectx::TraceLabeler,
};

/// Resolves every sample of a drain. Processes come from `table` (captured late if their
/// announcement was missed); names from `symbolizer`; trace labels from `labeler`.
pub fn resolve_interval(
    drained: &Drained,
    table: &Mutex<ProcessTable>,
    symbolizer: &mut Symbolizer,
    labeler: &mut TraceLabeler,
) -> Vec<ResolvedSample> {
    let mut snapshots = snapshots(records(drained).map(|(_, key, _)| key), table);
    remap_unknown_addresses(drained, &mut snapshots, table);
    let mut files: HashMap<FileId, Arc<MappedFile>> = HashMap::new();
    let stacks: Vec<Vec<Site>> = records(drained)
        .map(|(_, key, _)| sites(key, drained, &snapshots[&process_key(key)], &mut files))
        .collect();
    let names = symbolize(&stacks, &files, symbolizer);
    let mut infos: HashMap<MappingKey, Arc<MappingInfo>> = HashMap::new();
    let mut located: HashMap<(SampleKind, u64, u64, ProcessKey), Arc<[ResolvedLocation]>> =
        HashMap::new();

    records(drained)
        .zip(&stacks)
        .map(|((kind, key, value), sites)| {
            let process = process_key(key);
            let locations = located
                .entry((kind, key.user_stack, key.kernel_stack, process))
                .or_insert_with(|| locations(kind, sites, &files, &names, &mut infos))
                .clone();
            let snapshot = &snapshots[&process];
            let trace = match key.context {
                NO_CONTEXT => None,
                go if go & GO_CONTEXT_BIT != 0 => drained
                    .go_labels
                    .get(&go)
                    .and_then(|labels| labeler.go_labels(go, labels, snapshot)),
                context => drained
                    .contexts
                    .get(&context)
                    .map(|context| labeler.labels(process, context)),
            };
            ResolvedSample {
                locations,
                labels: labels(key, snapshot, trace),
                kind,
                count: value.count,
                nanos: value.period_ns,
            }
        })
        .collect()
}

/// A drain's CPU samples, then its off-CPU records.
fn records(
    drained: &Drained,
) -> impl Iterator<Item = (SampleKind, &SampleKey, &SampleValue)> + Clone {
    let cpu = drained.samples.iter().map(|(k, v)| (SampleKind::Cpu, k, v));
    let off_cpu = drained
        .off_cpu
        .iter()
        .map(|(k, v)| (SampleKind::OffCpu, k, v));
    cpu.chain(off_cpu)
}
