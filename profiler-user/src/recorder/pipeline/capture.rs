//! An incident capture in progress. Its samples span several intervals and are held until the
//! capture ends, so they are aggregated as they come (one entry per stack and labels, counts
//! and CPU time summed) and the distinct entries are capped: memory stays bounded however long
//! or busy the capture.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    profile::{IntervalMeta, IntervalStats, add_comments, build_profile, proto::Profile},
    resolve::{Labels, ResolvedLocation, ResolvedSample, SampleKind},
};

/// Distinct (stack, labels) entries a capture holds. A default capture (30 s at 99 Hz) of a
/// 64-CPU host takes at most 64 × 99 × 30 ≈ 190k samples, so this never cuts one short even
/// if no two samples matched; longer captures, higher rates or more CPUs stay bounded at about
/// this many entries of a few hundred bytes each (stacks are shared, not copied).
pub(super) const MAX_ENTRIES: usize = 200_000;

pub(super) struct Capture {
    pub start: SystemTime,
    pub comments: Vec<String>,
    samples: HashMap<Key, Totals>,
    max_entries: usize,
    /// Samples (counts) left out because the entries were at the cap.
    left_out: u64,
}

/// A stack and labels. Stacks are compared by content (mapping and address of each location,
/// which decide its frames), not by pointer: each interval resolves its own copies.
struct Key {
    locations: Arc<[ResolvedLocation]>,
    labels: Labels,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.locations.len().hash(state);
        for location in self.locations.iter() {
            location.mapping.hash(state);
            location.address.hash(state);
        }
        self.labels.hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        let same_stack = Arc::ptr_eq(&self.locations, &other.locations)
            || (self.locations.len() == other.locations.len()
                && self
                    .locations
                    .iter()
                    .zip(other.locations.iter())
                    .all(|(a, b)| a.mapping == b.mapping && a.address == b.address));
        same_stack && self.labels == other.labels
    }
}

impl Eq for Key {}

#[derive(Clone, Copy, Default)]
struct Totals {
    count: u64,
    cpu_ns: u64,
}

impl Capture {
    pub(super) fn new(start: SystemTime, comments: Vec<String>) -> Self {
        Self::with_max_entries(start, comments, MAX_ENTRIES)
    }

    fn with_max_entries(start: SystemTime, comments: Vec<String>, max_entries: usize) -> Self {
        Self {
            start,
            comments,
            samples: HashMap::new(),
            max_entries,
            left_out: 0,
        }
    }

    /// Adds an interval's CPU samples (an incident file is a CPU profile); returns the samples
    /// (counts) left out for want of room.
    pub(super) fn add(&mut self, samples: Vec<ResolvedSample>) -> u64 {
        let mut left_out = 0;
        for sample in samples.into_iter().filter(|s| s.kind == SampleKind::Cpu) {
            let key = Key {
                locations: sample.locations,
                labels: sample.labels,
            };
            let full = self.samples.len() >= self.max_entries;
            let totals = match self.samples.get_mut(&key) {
                Some(totals) => totals,
                None if full => {
                    left_out += sample.count;
                    continue;
                }
                None => self.samples.entry(key).or_default(),
            };
            totals.count += sample.count;
            totals.cpu_ns += sample.nanos;
        }
        self.left_out += left_out;
        left_out
    }

    /// Distinct stacks and labels held.
    pub(super) fn entries(&self) -> usize {
        self.samples.len()
    }

    /// Samples left out since the capture started.
    pub(super) fn left_out(&self) -> u64 {
        self.left_out
    }

    /// What the incident file says of the samples left out, if any.
    pub(super) fn left_out_note(&self) -> Option<String> {
        (self.left_out > 0).then(|| {
            format!(
                "{} samples left out: the capture holds at most {} distinct stacks and labels",
                self.left_out, self.max_entries
            )
        })
    }

    /// The capture's CPU profile, from its start to `end` at `frequency`: its comments, what
    /// was left out, then `more`.
    pub(super) fn into_profile(
        self,
        end: SystemTime,
        frequency: u64,
        more: Vec<String>,
    ) -> (Profile, IntervalStats) {
        let meta = IntervalMeta {
            start: self.start,
            duration: end.duration_since(self.start).unwrap_or(Duration::ZERO),
            period_ns: crate::bpf::period_ns(frequency),
        };
        let mut notes = self.comments.clone();
        notes.extend(self.left_out_note());
        notes.extend(more);
        let (mut profile, stats) = build_profile(self.into_samples(), meta);
        add_comments(&mut profile, &notes);
        (profile, stats)
    }

    /// The aggregated samples, handed over one by one (nothing is copied).
    pub(super) fn into_samples(self) -> impl Iterator<Item = ResolvedSample> {
        self.samples
            .into_iter()
            .map(|(key, totals)| ResolvedSample {
                locations: key.locations,
                labels: key.labels,
                kind: SampleKind::Cpu,
                count: totals.count,
                nanos: totals.cpu_ns,
            })
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        resolve::{MappingInfo, MappingKey},
        symbolize::Frame,
    };

    use super::*;

    fn stack(addresses: &[u64]) -> Arc<[ResolvedLocation]> {
        addresses
            .iter()
            .map(|&address| ResolvedLocation {
                mapping: MappingKey::Anonymous,
                info: Arc::new(MappingInfo::default()),
                address,
                frames: Arc::from([Frame::named(&format!("f{address}"))]),
            })
            .collect()
    }

    fn sample(addresses: &[u64], tid: u32) -> ResolvedSample {
        ResolvedSample {
            locations: stack(addresses),
            labels: Labels {
                pid: 7,
                thread_id: tid,
                comm: "app".into(),
                thread_name: "worker".into(),
                trace: None,
                container: None,
            },
            count: 2,
            kind: SampleKind::Cpu,
            nanos: 20,
        }
    }

    #[test]
    fn identical_samples_of_many_intervals_hold_one_entry() {
        let mut capture = Capture::new(SystemTime::UNIX_EPOCH, Vec::new());
        // Each interval resolves its own copy of the stack: equal content, another pointer.
        for _ in 0..1000 {
            assert_eq!(capture.add(vec![sample(&[1, 2, 3], 10)]), 0);
        }
        capture.add(vec![sample(&[1, 2, 3], 11), sample(&[1, 2], 10)]);
        assert_eq!(capture.entries(), 3, "another thread, another stack");
        let mut samples: Vec<ResolvedSample> = capture.into_samples().collect();
        samples.sort_by_key(|s| (s.labels.thread_id, s.locations.len()));
        let totals: Vec<(u32, usize, u64, u64)> = samples
            .iter()
            .map(|s| (s.labels.thread_id, s.locations.len(), s.count, s.nanos))
            .collect();
        assert_eq!(
            totals,
            [(10, 2, 2, 20), (10, 3, 2000, 20_000), (11, 3, 2, 20)]
        );
    }

    #[test]
    fn past_the_cap_new_entries_are_counted_and_known_ones_still_add_up() {
        let mut capture = Capture::with_max_entries(SystemTime::UNIX_EPOCH, Vec::new(), 2);
        assert_eq!(
            capture.add(vec![sample(&[1], 1), sample(&[2], 1), sample(&[3], 1)]),
            2
        );
        assert_eq!(capture.add(vec![sample(&[1], 1), sample(&[4], 1)]), 2);
        assert_eq!((capture.entries(), capture.left_out()), (2, 4));
        let note = capture.left_out_note().unwrap();
        assert!(note.starts_with("4 samples left out"), "{note}");
        let total: u64 = capture.into_samples().map(|s| s.count).sum();
        assert_eq!(total, 6, "the first stack twice, the second once");
    }
}
