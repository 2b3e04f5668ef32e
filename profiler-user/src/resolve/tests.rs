use std::time::{Duration, SystemTime};

use profiler_common::{
    MAX_ATTR_BYTES, MAX_STACK_DEPTH, NO_STACK, SampleKey, SampleValue, TraceContext,
};

use super::*;
use crate::{
    bpf::Stacks,
    profile::{IntervalMeta, IntervalStats, build_profile},
};

#[inline(never)]
fn interval_test_leaf() -> u64 {
    std::hint::black_box(interval_test_leaf as *const () as u64)
}

fn comm(name: &str) -> [u8; 16] {
    let mut comm = [0u8; 16];
    comm[..name.len()].copy_from_slice(name.as_bytes());
    comm
}

fn meta() -> IntervalMeta {
    IntervalMeta {
        start: SystemTime::now(),
        duration: Duration::from_secs(1),
        period_ns: 10,
    }
}

fn resolve(drained: &Drained) -> Vec<ResolvedSample> {
    let table = Mutex::new(ProcessTable::default());
    resolve_interval(
        drained,
        &table,
        &mut Symbolizer::new(),
        &mut TraceLabeler::default(),
    )
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
        pid_gen: 0,
        user_stack: 42,
        kernel_stack: NO_STACK,
        context: NO_CONTEXT,
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
        ..Drained::default()
    };
    let (profile, stats) = build_profile(resolve(&drained), meta());
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
    assert!(!sample.label.iter().any(|l| s(l.key) == "trace_id"));
}

/// The root function of each sample's stack (its last location's outermost line).
fn root_names(samples: &[ResolvedSample]) -> Vec<String> {
    samples
        .iter()
        .map(|sample| {
            let root = sample.locations.last().expect("a location");
            root.frames
                .last()
                .map_or(String::new(), |f| f.function.to_string())
        })
        .collect()
}

#[test]
fn a_user_stack_at_the_frame_limit_gets_a_truncated_root() {
    let pid = std::process::id();
    let leaf = interval_test_leaf();
    let mut stacks = Stacks::new();
    // Callers' addresses are moved back a byte: one past the leaf's start names it again.
    let stack = |depth: usize| {
        let mut ips = vec![leaf + 1; depth];
        ips[0] = leaf;
        ips
    };
    stacks.insert(1, stack(MAX_STACK_DEPTH).into());
    stacks.insert(2, stack(MAX_STACK_DEPTH - 1).into());
    let key = |user_stack| SampleKey {
        pid,
        tid: pid,
        pid_gen: 0,
        user_stack,
        kernel_stack: NO_STACK,
        context: NO_CONTEXT,
        comm: comm("deep"),
    };
    let value = SampleValue {
        count: 1,
        period_ns: 10,
    };
    let drained = Drained {
        samples: vec![(key(1), value), (key(2), value)],
        stacks,
        ..Drained::default()
    };
    let resolved = resolve(&drained);
    assert_eq!(resolved[0].locations.len(), MAX_STACK_DEPTH + 1);
    assert_eq!(resolved[1].locations.len(), MAX_STACK_DEPTH - 1);
    let roots = root_names(&resolved);
    assert_eq!(roots[0], TRUNCATED);
    assert!(roots[1].ends_with("interval_test_leaf"), "{}", roots[1]);
    assert_eq!(
        resolved[0].locations.last().unwrap().info.filename,
        TRUNCATED
    );
}

#[test]
fn a_sample_without_stacks_keeps_its_time() {
    let key = SampleKey {
        pid: u32::MAX - 1,
        tid: 1,
        pid_gen: 0,
        user_stack: NO_STACK,
        kernel_stack: 99, // missing from the stacks map
        context: NO_CONTEXT,
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
        ..Drained::default()
    };
    let (profile, _) = build_profile(resolve(&drained), meta());
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
fn a_traced_sample_carries_its_trace_labels() {
    let mut attrs = [0u8; MAX_ATTR_BYTES];
    attrs[..5].copy_from_slice(&[0, 3, b'a', b'b', b'c']);
    let context = TraceContext {
        trace_id: [0xab; 16],
        span_id: [0x01; 8],
        valid: 1,
        trace_flags: 1,
        attrs_len: 5,
        _pad: [0; 4],
        attrs,
    };
    let key = SampleKey {
        pid: u32::MAX - 1,
        tid: 1,
        pid_gen: 0,
        user_stack: NO_STACK,
        kernel_stack: NO_STACK,
        context: 5,
        comm: comm("traced"),
    };
    let drained = Drained {
        samples: vec![(
            key,
            SampleValue {
                count: 2,
                period_ns: 20,
            },
        )],
        contexts: [(5, context)].into(),
        ..Drained::default()
    };
    let resolved = resolve(&drained);
    let trace = resolved[0].labels.trace.as_ref().expect("traced");
    assert_eq!(trace.trace_id, "ab".repeat(16));
    assert_eq!(trace.span_id, "01".repeat(8));
    assert_eq!(
        trace.attributes,
        vec![("attr_0".to_owned(), "abc".to_owned())]
    );
}

#[test]
fn off_cpu_records_resolve_as_waits_beside_the_samples() {
    let key = |tid, context| SampleKey {
        pid: u32::MAX - 1,
        tid,
        pid_gen: 0,
        user_stack: NO_STACK,
        kernel_stack: NO_STACK,
        context,
        comm: comm("waiter"),
    };
    let mut attrs = [0u8; MAX_ATTR_BYTES];
    attrs[..3].copy_from_slice(&[0, 1, b'x']);
    let context = TraceContext {
        trace_id: [0xcd; 16],
        span_id: [0x02; 8],
        valid: 1,
        trace_flags: 1,
        attrs_len: 3,
        _pad: [0; 4],
        attrs,
    };
    let drained = Drained {
        samples: vec![(
            key(1, NO_CONTEXT),
            SampleValue {
                count: 2,
                period_ns: 20,
            },
        )],
        off_cpu: vec![(
            key(2, 7),
            SampleValue {
                count: 3,
                period_ns: 135_000_000,
            },
        )],
        contexts: [(7, context)].into(),
        ..Drained::default()
    };
    let resolved = resolve(&drained);
    let summary: Vec<_> = resolved
        .iter()
        .map(|s| (s.kind, s.labels.thread_id, s.count, s.nanos))
        .collect();
    assert_eq!(
        summary,
        [
            (SampleKind::Cpu, 1, 2, 20),
            (SampleKind::OffCpu, 2, 3, 135_000_000)
        ]
    );
    let trace = resolved[1].labels.trace.as_ref().expect("the wait's trace");
    assert_eq!(trace.trace_id, "cd".repeat(16));
    let (cpu, _) = build_profile(&resolved, meta());
    assert_eq!(cpu.sample.len(), 1, "a CPU profile leaves the waits out");
}

#[test]
fn a_wait_recorded_without_stacks_is_one_frame_that_says_so() {
    let key = SampleKey {
        pid: u32::MAX - 1,
        tid: 3,
        pid_gen: 0,
        user_stack: profiler_common::UNSTACKED_WAIT,
        kernel_stack: NO_STACK,
        context: NO_CONTEXT,
        comm: comm("waiter"),
    };
    let drained = Drained {
        off_cpu: vec![(
            key,
            SampleValue {
                count: 1,
                period_ns: 45_000_000,
            },
        )],
        ..Drained::default()
    };
    let resolved = resolve(&drained);
    let names: Vec<&str> = resolved[0]
        .locations
        .iter()
        .flat_map(|location| location.frames.iter().map(|frame| &*frame.function))
        .collect();
    assert_eq!(names, [UNSTACKED]);
    assert_eq!(resolved[0].nanos, 45_000_000);
}

#[test]
fn the_tracing_glue_above_the_scheduler_is_not_a_place_to_wait() {
    for glue in [
        "bpf_prog_c3078a5a80e7bd8f_off_cpu_switch",
        "bpf_trace_run4",
        "__bpf_trace_sched_switch",
        "__traceiter_sched_switch",
    ] {
        assert!(locations::is_tracing_glue(glue), "{glue}");
    }
    for kernel in [
        "__schedule",
        "schedule",
        "do_sys_poll",
        "bpf_map_lookup_elem",
    ] {
        assert!(!locations::is_tracing_glue(kernel), "{kernel}");
    }
}
