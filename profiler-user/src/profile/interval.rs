//! A profile of resolved samples: the time it covers, the period in force, and what it held.

use std::time::{Duration, SystemTime};

use super::{ProfileBuilder, ProfileValues, proto::Profile};
use crate::resolve::ResolvedSample;

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

/// Builds one CPU profile from resolved samples, borrowed or handed over (an incident capture
/// gives its samples up one by one rather than copy them); off-CPU samples are left out.
pub fn build_profile(
    samples: impl IntoIterator<Item = impl std::borrow::Borrow<ResolvedSample>>,
    meta: IntervalMeta,
) -> (Profile, IntervalStats) {
    build_profile_of(ProfileValues::Cpu, samples, meta)
}

/// Builds a profile of `values` from the samples of the kinds it carries; the stats count
/// those.
pub fn build_profile_of(
    values: ProfileValues,
    samples: impl IntoIterator<Item = impl std::borrow::Borrow<ResolvedSample>>,
    meta: IntervalMeta,
) -> (Profile, IntervalStats) {
    let mut builder =
        ProfileBuilder::with_values(values, meta.period_ns as i64, meta.start, meta.duration);
    let mut stats = IntervalStats::default();
    let mut processes = std::collections::HashSet::new();
    for sample in samples {
        let sample = sample.borrow();
        if values.column(sample.kind).is_none() {
            continue;
        }
        let ids = sample
            .locations
            .iter()
            .map(|location| {
                let mapping = builder.mapping(location.mapping, || (*location.info).clone());
                builder.location(mapping, location.address, &location.frames)
            })
            .collect();
        builder.add_values(
            ids,
            &sample.labels,
            sample.kind,
            sample.count as i64,
            sample.nanos as i64,
        );
        stats.samples += sample.count;
        processes.insert(sample.labels.pid);
    }
    stats.stacks = builder.sample_count();
    stats.processes = processes.len();
    (builder.build(), stats)
}
