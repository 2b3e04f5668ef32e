//! Turns trace contexts into sample labels: IDs in hex, and attribute key indexes into the names
//! the process published in its OTEP 4719 process context (or `attr_<index>`).

use std::{collections::HashMap, sync::Arc};

use profiler_common::{GoLabels, TraceContext};

use super::{
    process_context::{ProcessContext, read_process_context},
    record::{attribute_bytes, attributes, hex},
};
use crate::{
    golabels::{Literals, go_trace_labels},
    process::{ProcessKey, ProcessSnapshot},
};

/// Labels of a sample taken under a trace context.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceLabels {
    /// Lowercase hex, 32 characters.
    pub trace_id: String,
    /// Lowercase hex, 16 characters.
    pub span_id: String,
    pub service_name: Option<String>,
    /// Attribute name (or `attr_<index>`) and value.
    pub attributes: Vec<(String, String)>,
}

/// Intervals a process's context stays cached without being used.
const IDLE_INTERVALS: u64 = 6;

struct CachedContext {
    context: Option<ProcessContext>,
    used_in: u64,
    /// Interval of the last read, so an unknown key index re-reads at most once an interval.
    read_in: u64,
}

/// Builds [`TraceLabels`], reading each process's context once (and again when a record uses
/// a key index the cached map does not have: the map is append-only).
#[derive(Default)]
pub struct TraceLabeler {
    processes: HashMap<ProcessKey, CachedContext>,
    labels: HashMap<(ProcessKey, TraceContextKey), Arc<TraceLabels>>,
    /// Go label sets of this interval by their hash (`None`: no trace in them).
    go: HashMap<u64, Option<Arc<TraceLabels>>>,
    /// Label strings the kernel kept by address, read from the executables.
    literals: Literals,
    interval: u64,
}

/// The parts of a context that make its labels.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TraceContextKey {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    attrs: Vec<u8>,
}

impl TraceLabeler {
    /// Labels for a sample of `process` taken under `context`.
    pub fn labels(&mut self, process: ProcessKey, context: &TraceContext) -> Arc<TraceLabels> {
        let key = TraceContextKey {
            trace_id: context.trace_id,
            span_id: context.span_id,
            attrs: attribute_bytes(context).to_vec(),
        };
        if let Some(labels) = self.labels.get(&(process, key.clone())) {
            return labels.clone();
        }
        let attrs = attributes(&key.attrs);
        let needs_refresh = |ctx: &Option<ProcessContext>| {
            let known = ctx.as_ref().map_or(0, |c| c.attribute_keys.len());
            attrs.iter().any(|(index, _)| usize::from(*index) >= known)
        };
        let interval = self.interval;
        let cached = self
            .processes
            .entry(process)
            .or_insert_with(|| CachedContext {
                context: read_process_context(process.pid).ok().flatten(),
                used_in: interval,
                read_in: interval,
            });
        if cached.read_in != interval && needs_refresh(&cached.context) {
            if let Ok(Some(fresh)) = read_process_context(process.pid) {
                cached.context = Some(fresh);
            }
            cached.read_in = interval;
        }
        cached.used_in = interval;
        let labels = Arc::new(make_labels(&key, &attrs, cached.context.as_ref()));
        self.labels.insert((process, key), labels.clone());
        labels
    }

    /// Labels for a sample of the process `snapshot` taken under the Go label set `labels`
    /// (stored under `hash` this interval); `None` when it names no trace. A set with strings
    /// kept by address has a hash of its own per process (the kernel mixes the process in).
    pub fn go_labels(
        &mut self,
        hash: u64,
        labels: &GoLabels,
        snapshot: &ProcessSnapshot,
    ) -> Option<Arc<TraceLabels>> {
        let literals = &mut self.literals;
        self.go
            .entry(hash)
            .or_insert_with(|| {
                go_trace_labels(labels, |address, len| literals.read(snapshot, address, len))
                    .map(Arc::new)
            })
            .clone()
    }

    /// Called after each interval: forgets label sets and contexts of processes gone quiet.
    pub fn end_interval(&mut self) {
        self.labels.clear();
        self.go.clear();
        let interval = self.interval;
        self.processes
            .retain(|_, cached| cached.used_in + IDLE_INTERVALS > interval);
        self.interval += 1;
    }
}

fn make_labels(
    key: &TraceContextKey,
    attrs: &[(u8, String)],
    context: Option<&ProcessContext>,
) -> TraceLabels {
    let keys = context.map_or(&[][..], |c| &c.attribute_keys[..]);
    TraceLabels {
        trace_id: hex(&key.trace_id),
        span_id: hex(&key.span_id),
        service_name: context.and_then(|c| c.service_name.clone()),
        attributes: attrs
            .iter()
            .map(|(index, value)| {
                let name = keys
                    .get(usize::from(*index))
                    .cloned()
                    .unwrap_or_else(|| format!("attr_{index}"));
                (name, value.clone())
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_attributes_from_the_key_map_or_by_index() {
        let key = TraceContextKey {
            trace_id: [0x0a; 16],
            span_id: [0x0b; 8],
            attrs: vec![],
        };
        let context = ProcessContext {
            service_name: Some("cart".into()),
            attribute_keys: vec!["http.route".into()],
            schema_version: None,
        };
        let attrs = vec![(0, "/pay".to_owned()), (3, "x".to_owned())];
        let labels = make_labels(&key, &attrs, Some(&context));
        assert_eq!(labels.trace_id, "0a".repeat(16));
        assert_eq!(labels.span_id, "0b".repeat(8));
        assert_eq!(labels.service_name.as_deref(), Some("cart"));
        assert_eq!(
            labels.attributes,
            vec![
                ("http.route".to_owned(), "/pay".to_owned()),
                ("attr_3".to_owned(), "x".to_owned())
            ]
        );
        let bare = make_labels(&key, &attrs, None);
        assert_eq!(bare.service_name, None);
        assert_eq!(bare.attributes[0].0, "attr_0");
    }

    #[test]
    fn label_sets_are_shared_within_an_interval() {
        let mut labeler = TraceLabeler::default();
        let process = ProcessKey {
            pid: u32::MAX - 1,
            pid_gen: 1,
        };
        let context = TraceContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            valid: 1,
            trace_flags: 0,
            attrs_len: 0,
            _pad: [0; 4],
            attrs: [0; profiler_common::MAX_ATTR_BYTES],
        };
        let first = labeler.labels(process, &context);
        assert!(Arc::ptr_eq(&first, &labeler.labels(process, &context)));
        labeler.end_interval();
        assert!(!Arc::ptr_eq(&first, &labeler.labels(process, &context)));
    }
}
