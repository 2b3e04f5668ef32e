//! A profile of resolved samples: the time it covers, the period in force, and what it held.

use std::time::{Duration, SystemTime};

use super::{ProfileBuilder, proto::Profile};
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
