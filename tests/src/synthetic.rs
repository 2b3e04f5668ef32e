//! Profiles made by hand for the tests of `profiler report` and `profiler serve` (no root, no
//! recording): stacks written as text, files written as the recorder writes them (interval,
//! incident and trace files, and the trace index).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use profiler::{
    process::FileId,
    profile::{IndexEntry, ProfileBuilder, ProfileWriter, add_comments},
    resolve::{Labels, MappingInfo, MappingKey, TraceLabels},
    symbolize::Frame as Symbol,
};

use crate::*;

/// One sample of a synthetic profile.
#[derive(Clone, Debug)]
pub struct Stack {
    /// Locations outer first, `;`-separated. A location is `[mapping:]names`: the mapping `k`
    /// (kernel), `libc` (`/usr/lib/x86_64-linux-gnu/libc.so.6`), `anon` (`[unknown]`) or by
    /// default the executable; `names` are the functions of the location innermost first,
    /// `+`-separated (inlining), or `?` for a location without a name.
    pub frames: &'static str,
    pub pid: u32,
    pub tid: u32,
    pub trace: Option<&'static str>,
    pub count: i64,
    /// CPU time of one sample (the period in force).
    pub period_ns: i64,
}

impl Stack {
    pub const fn new(frames: &'static str, pid: u32, tid: u32, count: i64) -> Stack {
        Stack {
            frames,
            pid,
            tid,
            trace: None,
            count,
            period_ns: 10_000_000,
        }
    }

    pub const fn traced(self, trace: &'static str) -> Stack {
        Stack {
            trace: Some(trace),
            ..self
        }
    }

    pub const fn period(self, period_ns: i64) -> Stack {
        Stack { period_ns, ..self }
    }
}

/// The service name of every traced synthetic sample.
pub const SYNTHETIC_SERVICE: &str = "checkout";

/// A profile of `stacks` covering `[start, start + length)`, with `comments`.
pub fn synthetic_profile(
    stacks: &[Stack],
    start: SystemTime,
    length: Duration,
    comments: &[&str],
) -> Profile {
    let mut b = ProfileBuilder::new(10_000_000, start, length);
    let mut mappings: HashMap<&str, u64> = HashMap::new();
    let mut addresses: HashMap<String, u64> = HashMap::new();
    for stack in stacks {
        let mut ids = Vec::new();
        for location in stack.frames.split(';').rev() {
            let (mapping, names) = match location.split_once(':') {
                Some((m @ ("k" | "libc" | "anon"), names)) => (m, names),
                _ => ("exe", location),
            };
            let next = mappings.len() as u64 + 1;
            let mapping_id = *mappings.entry(mapping).or_insert(next);
            let mapping_id = b.mapping(mapping_key(mapping, mapping_id), || MappingInfo {
                filename: mapping_file(mapping).to_owned(),
                build_id: None,
            });
            let next = addresses.len() as u64 + 0x1000;
            let address = *addresses.entry(location.to_owned()).or_insert(next);
            let frames: Vec<Symbol> = if names == "?" {
                Vec::new()
            } else {
                names.split('+').map(Symbol::named).collect()
            };
            ids.push(b.location(mapping_id, address, &frames));
        }
        let labels = Labels {
            pid: stack.pid,
            thread_id: stack.tid,
            comm: format!("synthetic{}", stack.pid),
            thread_name: format!("worker-{}", stack.tid),
            trace: stack.trace.map(|id| {
                Arc::new(TraceLabels {
                    trace_id: id.to_owned(),
                    span_id: "b7ad6b7169203331".to_owned(),
                    service_name: Some(SYNTHETIC_SERVICE.to_owned()),
                    attributes: vec![],
                })
            }),
            container: None,
        };
        b.add_sample(ids, &labels, stack.count, stack.count * stack.period_ns);
    }
    let mut profile = b.build();
    let comments: Vec<String> = comments.iter().map(|c| c.to_string()).collect();
    add_comments(&mut profile, &comments);
    profile
}

fn mapping_key(mapping: &str, id: u64) -> MappingKey {
    match mapping {
        "k" => MappingKey::Kernel,
        "anon" => MappingKey::Unknown,
        _ => MappingKey::File(FileId { dev: 1, inode: id }),
    }
}

fn mapping_file(mapping: &str) -> &'static str {
    match mapping {
        "k" => KERNEL_MAPPING,
        "libc" => "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "anon" => "[unknown]",
        _ => "/usr/local/bin/synthetic",
    }
}

/// Writes `profile` as `<dir>/<name>` the way the recorder does (gzip, temp file, rename).
pub fn write_synthetic(dir: &Path, name: &str, profile: &Profile) -> Result<PathBuf> {
    let (path, _) = ProfileWriter::new(dir)
        .write_named(name, profile)
        .with_context(|| format!("writing {name}"))?;
    Ok(path)
}

/// 2026-01-01T12:00:00Z plus `seconds`.
pub fn synthetic_time(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_268_800 + seconds)
}

/// Two traces of [`synthetic_recording`].
pub const SYNTHETIC_TRACES: [&str; 2] = [
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "0af7651916cd43dd8448eb211c80319c",
];

/// The hot function of each synthetic trace (the leaf of most of its samples).
pub const SYNTHETIC_TRACE_FUNCTIONS: [&str; 2] = ["checkout_hot_leaf", "payment_hot_leaf"];

/// The incident's trigger comment.
pub const SYNTHETIC_TRIGGER: &str =
    "trigger: cpu utilization 0.93 > threshold 0.70 (cpu pressure avg10 12.0%)";

/// The stacks of one synthetic interval: recursion, inlining, kernel frames, unnamed frames,
/// one function name in two binaries, two processes, two traces.
pub fn synthetic_interval_stacks(scale: i64) -> Vec<Stack> {
    let [a, b] = SYNTHETIC_TRACES;
    vec![
        Stack::new("main;run;fib;fib;fib;fib_leaf", 100, 100, 40 * scale),
        Stack::new("main;run;fib;fib_leaf", 100, 100, 10 * scale),
        Stack::new(
            "main;run;work;inlined_helper+synthetic_hot_leaf",
            100,
            101,
            120 * scale,
        ),
        Stack::new(
            "main;run;work;synthetic_hot_leaf;k:entry_SYSCALL_64;k:do_syscall_64;k:ksys_read",
            100,
            101,
            30 * scale,
        ),
        Stack::new("main;run;libc:memcpy", 100, 101, 15 * scale),
        Stack::new("main;run;memcpy", 100, 100, 15 * scale),
        Stack::new("main;libc:?", 100, 100, 7 * scale),
        Stack::new("main;anon:?", 100, 100, 3 * scale),
        Stack::new("main;rare_function", 100, 100, 1),
        Stack::new("main;serve;handle;checkout_hot_leaf", 200, 201, 50 * scale).traced(a),
        Stack::new(
            "main;serve;handle;checkout_hot_leaf;libc:memcpy",
            200,
            201,
            5 * scale,
        )
        .traced(a),
        Stack::new("main;serve;handle;payment_hot_leaf", 200, 202, 25 * scale).traced(b),
        // Sampled at another rate: the CPU time is not proportional to the count.
        Stack::new("main;serve;idle_loop", 200, 203, 20 * scale).period(1_000_000),
    ]
}

/// The incident file of [`synthetic_recording`]: it starts where the second interval ends.
pub const SYNTHETIC_INCIDENT: &str = "incident-20260101T120020Z.pb.gz";

/// Writes a recording's output directory into `out`: three interval files
/// (`cpu-20260101T1200{00,10,20}Z.pb.gz`), an incident with [`SYNTHETIC_TRIGGER`] starting
/// with the third ([`SYNTHETIC_INCIDENT`]), the two traces' files and `traces/index.jsonl`.
pub fn synthetic_recording(out: &Path) -> Result<()> {
    let ten = Duration::from_secs(10);
    for (i, scale) in [1, 2, 3].into_iter().enumerate() {
        let seconds = 10 * i as u64;
        let name = format!("cpu-20260101T1200{seconds:02}Z.pb.gz");
        let profile = synthetic_profile(
            &synthetic_interval_stacks(scale),
            synthetic_time(seconds),
            ten,
            &["sampling frequency at the end: 99 Hz", "node: synthetic"],
        );
        write_synthetic(out, &name, &profile)?;
    }
    let incident = synthetic_profile(
        &[
            Stack::new(
                "main;run;work;inlined_helper+synthetic_hot_leaf",
                100,
                101,
                900,
            ),
            Stack::new("main;run;fib;fib_leaf", 100, 100, 100),
            Stack::new("main;serve;handle;incident_only_function", 200, 201, 500),
        ],
        synthetic_time(20),
        Duration::from_secs(5),
        &[SYNTHETIC_TRIGGER, "node: synthetic"],
    );
    write_synthetic(out, SYNTHETIC_INCIDENT, &incident)?;

    let traces = out.join("traces");
    let mut index = String::new();
    for (i, (id, function)) in SYNTHETIC_TRACES
        .iter()
        .zip(SYNTHETIC_TRACE_FUNCTIONS)
        .enumerate()
    {
        let stacks: Vec<Stack> = synthetic_interval_stacks(1)
            .into_iter()
            .filter(|s| s.trace == Some(*id))
            .collect();
        let profile = synthetic_profile(&stacks, synthetic_time(0), Duration::from_secs(30), &[]);
        write_synthetic(&traces, &format!("{id}.pb.gz"), &profile)?;
        let entry = IndexEntry {
            trace_id: id.to_string(),
            file: format!("{id}.pb.gz"),
            first_sample_time: format!("2026-01-01T12:00:0{i}.000Z"),
            last_sample_time: format!("2026-01-01T12:00:2{i}.000Z"),
            sample_count: stacks.iter().map(|s| s.count as u64).sum(),
            pids: vec![200],
            service_names: vec![SYNTHETIC_SERVICE.to_owned()],
            top_function: function.to_owned(),
        };
        index.push_str(&serde_json::to_string(&entry)?);
        index.push('\n');
    }
    fs::write(traces.join("index.jsonl"), index)?;
    Ok(())
}
