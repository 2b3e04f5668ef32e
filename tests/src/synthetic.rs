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
    profile::{IndexEntry, ProfileBuilder, ProfileWriter, add_comments, proto::ValueType},
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
            cpu_nanoseconds: stacks.iter().map(|s| (s.count * s.period_ns) as u64).sum(),
            off_cpu_nanoseconds: 0,
        };
        index.push_str(&serde_json::to_string(&entry)?);
        index.push('\n');
    }
    fs::write(traces.join("index.jsonl"), index)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Off-CPU (`record --off-cpu`)

/// A string's index in `profile`'s table, added when missing.
fn string_index(profile: &mut Profile, text: &str) -> i64 {
    match profile.string_table.iter().position(|s| s == text) {
        Some(i) => i as i64,
        None => {
            profile.string_table.push(text.to_owned());
            profile.string_table.len() as i64 - 1
        }
    }
}

fn value_type(profile: &mut Profile, kind: &str, unit: &str) -> ValueType {
    ValueType {
        r#type: string_index(profile, kind),
        unit: string_index(profile, unit),
    }
}

/// An off-CPU profile as the recorder writes `offcpu-<UTC>.pb.gz`: sample types
/// `[switches/count, off_cpu/nanoseconds]`, default `off_cpu`, period type
/// `off_cpu/nanoseconds` and period 1, the labels of CPU samples. A [`Stack`]'s `count` is its
/// switches and `period_ns` the time off the CPU of each.
pub fn synthetic_off_cpu_profile(
    stacks: &[Stack],
    start: SystemTime,
    length: Duration,
    comments: &[&str],
) -> Profile {
    let mut profile = synthetic_profile(stacks, start, length, comments);
    profile.sample_type = vec![
        value_type(&mut profile, "switches", "count"),
        value_type(&mut profile, "off_cpu", "nanoseconds"),
    ];
    profile.period_type = Some(value_type(&mut profile, "off_cpu", "nanoseconds"));
    profile.period = 1;
    profile.default_sample_type = string_index(&mut profile, "off_cpu");
    profile
}

/// A trace file of a recording with off-CPU: sample types `[samples/count, cpu/nanoseconds,
/// switches/count, off_cpu/nanoseconds]`, default `cpu`; the `on` stacks' samples carry
/// `[n, ns, 0, 0]` and the `off` stacks' `[0, 0, switches, ns]`. Panics if an `off` stack has
/// the frames and thread of an `on` one (the builder would merge them).
pub fn synthetic_trace_profile(
    on: &[Stack],
    off: &[Stack],
    start: SystemTime,
    length: Duration,
) -> Profile {
    let all: Vec<Stack> = on.iter().chain(off).cloned().collect();
    let mut profile = synthetic_profile(&all, start, length, &[]);
    assert_eq!(
        profile.sample.len(),
        all.len(),
        "synthetic_trace_profile: an off-CPU stack repeats a CPU one"
    );
    let switches = value_type(&mut profile, "switches", "count");
    let off_cpu = value_type(&mut profile, "off_cpu", "nanoseconds");
    profile.sample_type.extend([switches, off_cpu]);
    for (i, sample) in profile.sample.iter_mut().enumerate() {
        let (n, ns) = (sample.value[0], sample.value[1]);
        sample.value = if i < on.len() {
            vec![n, ns, 0, 0]
        } else {
            vec![0, 0, n, ns]
        };
    }
    profile
}

/// The trace of [`synthetic_off_cpu_recording`] that only waited (no CPU sample): its last
/// sample is before the other two traces' (newest first, it comes last).
pub const SYNTHETIC_WAITING_TRACE: &str = "5b8aa5a2d2c872e8321cf37308d69df2";

/// Where the first synthetic trace ([`SYNTHETIC_TRACES`]`[0]`) waits: the function between its
/// handler and `poll(2)`.
pub const SYNTHETIC_BLOCKED_FUNCTION: &str = "call_pricing";

/// Where [`SYNTHETIC_WAITING_TRACE`] waits; a frame name that is markup, to check escaping.
pub const SYNTHETIC_WAITING_FUNCTION: &str = "flush_<script>alert(1)</script>";

/// The off-CPU stacks of one synthetic interval (counts are switches, periods the time off
/// the CPU of each): a traced thread blocked in `poll(2)` two calls below its handler, an
/// untraced one in `pthread_cond_timedwait`, a disk read, short lock waits, and the waiting
/// trace's `fsync`.
pub fn synthetic_off_cpu_stacks(scale: i64) -> Vec<Stack> {
    let [a, _] = SYNTHETIC_TRACES;
    vec![
        Stack::new(
            "main;serve;handle;call_pricing;pricing_request;libc:poll;k:entry_SYSCALL_64;\
             k:do_syscall_64;k:do_sys_poll;k:schedule_hrtimeout_range;k:schedule",
            200,
            201,
            20 * scale,
        )
        .period(45_000_000)
        .traced(a),
        Stack::new(
            "main;worker_loop;wait_for_work;libc:pthread_cond_timedwait;k:entry_SYSCALL_64;\
             k:do_syscall_64;k:futex_wait;k:schedule",
            100,
            102,
            10 * scale,
        )
        .period(100_000_000),
        Stack::new(
            "main;run;load_config;libc:read;k:entry_SYSCALL_64;k:do_syscall_64;k:ksys_read;\
             k:io_schedule",
            100,
            100,
            3 * scale,
        )
        .period(5_000_000),
        Stack::new(
            "main;run;work;lock_contended;k:futex_wait;k:schedule",
            100,
            101,
            50 * scale,
        )
        .period(1_200_000),
        Stack::new("main;rare_wait;k:schedule", 100, 100, 1).period(2_000_000),
        Stack::new(
            "main;serve;handle_batch;flush_<script>alert(1)</script>;libc:fsync;k:io_schedule",
            200,
            204,
            4,
        )
        .period(250_000_000)
        .traced(SYNTHETIC_WAITING_TRACE),
    ]
}

/// [`synthetic_recording`] as a recording with `--off-cpu` writes it: besides the CPU files,
/// three off-CPU intervals (`offcpu-20260101T1200{00,10,20}Z.pb.gz`, scaled 1, 2, 3); the
/// trace files with the four sample types (the first trace also waited in
/// [`SYNTHETIC_BLOCKED_FUNCTION`], the second never waited, [`SYNTHETIC_WAITING_TRACE`] only
/// waited); and index lines with `cpu_nanoseconds` and `off_cpu_nanoseconds`.
pub fn synthetic_off_cpu_recording(out: &Path) -> Result<()> {
    synthetic_recording(out)?;
    let ten = Duration::from_secs(10);
    for (i, scale) in [1, 2, 3].into_iter().enumerate() {
        let seconds = 10 * i as u64;
        let name = format!("offcpu-20260101T1200{seconds:02}Z.pb.gz");
        let profile = synthetic_off_cpu_profile(
            &synthetic_off_cpu_stacks(scale),
            synthetic_time(seconds),
            ten,
            &["node: synthetic"],
        );
        write_synthetic(out, &name, &profile)?;
    }

    let traces = out.join("traces");
    let mut index = String::new();
    let [a, b] = SYNTHETIC_TRACES;
    let [function_a, function_b] = SYNTHETIC_TRACE_FUNCTIONS;
    let traced = [
        (a, "2026-01-01T12:00:20.000Z", function_a),
        (b, "2026-01-01T12:00:21.000Z", function_b),
        (
            SYNTHETIC_WAITING_TRACE,
            "2026-01-01T12:00:15.000Z",
            "io_schedule",
        ),
    ];
    for (id, last, top_function) in traced {
        let of = |stacks: Vec<Stack>| -> Vec<Stack> {
            stacks.into_iter().filter(|s| s.trace == Some(id)).collect()
        };
        let on = of(synthetic_interval_stacks(1));
        let off = of(synthetic_off_cpu_stacks(1));
        let profile =
            synthetic_trace_profile(&on, &off, synthetic_time(0), Duration::from_secs(30));
        write_synthetic(&traces, &format!("{id}.pb.gz"), &profile)?;
        let total = |stacks: &[Stack]| -> u64 {
            stacks.iter().map(|s| (s.count * s.period_ns) as u64).sum()
        };
        let entry = IndexEntry {
            trace_id: id.to_string(),
            file: format!("{id}.pb.gz"),
            first_sample_time: "2026-01-01T12:00:00.000Z".to_owned(),
            last_sample_time: last.to_owned(),
            sample_count: on.iter().map(|s| s.count as u64).sum(),
            pids: vec![200],
            service_names: vec![SYNTHETIC_SERVICE.to_owned()],
            top_function: top_function.to_owned(),
            cpu_nanoseconds: total(&on),
            off_cpu_nanoseconds: total(&off),
        };
        index.push_str(&serde_json::to_string(&entry)?);
        index.push('\n');
    }
    fs::write(traces.join("index.jsonl"), index)?;
    Ok(())
}
