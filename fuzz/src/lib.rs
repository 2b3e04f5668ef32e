//! The fuzz targets, as plain functions: each takes any bytes and must neither panic nor run
//! away with memory. `fuzz_targets/` wraps each in libFuzzer's `fuzz_target!` (`cargo fuzz run
//! <name> --sanitizer none`, on stable Rust); `cargo xtask test` runs each for a bounded time
//! from its corpus in `corpus/<name>`.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use axum::{body::Body, http::Request};
use clap::Parser as _;
use profiler::{
    cli::{Cli, Command},
    profile::{ProfileWriter, proto},
    report::{
        ReportConfig,
        files::{self, ReadLimits},
        flame::{self, Labels},
        folded::Folded,
        stacks::{Stacks, ValueKind},
        top::{Order, Top},
    },
    serve::fuzzing,
    tracectx::record,
};
use profiler_common::TraceContext;
use tower::ServiceExt as _;

/// The pprof reader within a small limit, then what `report` and `serve` draw from a profile:
/// the top table, folded stacks and the flame graph.
pub fn pprof(data: &[u8]) {
    let limits = ReadLimits::mb(8);
    let Ok(profile) = files::decode(Path::new("fuzz.pb.gz"), data.to_vec(), limits) else {
        return;
    };
    let stacks = Stacks::from_profile(&profile);
    let _ = stacks.meta.end().map(profiler::report::utc);
    for value in ValueKind::ALL {
        let top = Top::new(&stacks.samples, value, Order::Flat);
        let _ = top.render(20, &[]);
        let folded = Folded::new(&stacks.samples, value);
        let _ = folded.lines().count();
        let labels = Labels {
            title: "fuzz",
            subtitle: None,
            value,
        };
        let _ = flame::flame_graph(&folded, labels);
    }
}

/// `--since` through clap into a report's selection and its description, and the web pages'
/// times (RFC 3339, `datetime-local`, a duration ago).
pub fn times(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = fuzzing::parse_time(text, chrono::Utc::now());
    let _ = profiler::cli::duration(text);
    let args = ["profiler", "report", "--since", text, "/nonexistent"];
    if let Ok(Cli {
        command: Command::Report(args),
        ..
    }) = Cli::try_parse_from(args)
    {
        let config = ReportConfig::from(args);
        let _ = config.selection.describe();
    }
    let _ = profiler::report::utc(SystemTime::UNIX_EPOCH + Duration::from_nanos(data.len() as u64));
}

/// A GET of `data` as a path and query string through the web application's router, over a
/// directory with an interval file and a trace file. A 500 is a failure: a panic in a handler
/// shows as one. Its query string also goes through the parser of `/debug/pprof/profile`'s.
pub fn web(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((_, query)) = text.split_once('?') {
        let _ = profiler::pull::PullRequest::parse(query);
    }
    let _ = fuzzing::decode_path(text);
    let _ = fuzzing::check_relative(text);
    let uri = if text.starts_with('/') {
        text.to_owned()
    } else {
        format!("/{text}")
    };
    // A name the pages answer to: past the `Host` check, into the handlers.
    let Ok(request) = Request::get(uri.as_str())
        .header("host", "localhost")
        .body(Body::empty())
    else {
        return;
    };
    let (runtime, router) = web_state();
    let response = runtime
        .block_on(router.clone().oneshot(request))
        .expect("the router is infallible");
    assert_ne!(response.status().as_u16(), 500, "GET {uri}");
}

/// A trace-context record as the BPF program copies it out: its IDs in hex and its attributes.
pub fn trace_record(data: &[u8]) {
    let mut context = TraceContext {
        trace_id: [0; 16],
        span_id: [0; 8],
        valid: 0,
        trace_flags: 0,
        attrs_len: 0,
        _pad: [0; 4],
        attrs: [0; profiler_common::MAX_ATTR_BYTES],
    };
    let take = |data: &mut &[u8], out: &mut [u8]| {
        let n = out.len().min(data.len());
        out[..n].copy_from_slice(&data[..n]);
        *data = &data[n..];
    };
    let mut rest = data;
    take(&mut rest, &mut context.trace_id);
    take(&mut rest, &mut context.span_id);
    let mut head = [0u8; 4];
    take(&mut rest, &mut head);
    context.valid = head[0];
    context.trace_flags = head[1];
    context.attrs_len = u16::from_le_bytes([head[2], head[3]]);
    take(&mut rest, &mut context.attrs);
    let _ = record::hex(&context.trace_id);
    let _ = record::hex(&context.span_id);
    let _ = record::attributes(record::attribute_bytes(&context));
    let _ = record::attributes(data);
}

type WebState = (tokio::runtime::Runtime, axum::Router, PathBuf);

fn web_state() -> (&'static tokio::runtime::Runtime, &'static axum::Router) {
    static STATE: OnceLock<WebState> = OnceLock::new();
    let (runtime, router, _) = STATE.get_or_init(|| {
        // Kept for the process's life: the fuzzer exits without dropping statics.
        let dir = tempfile::tempdir().expect("a temporary directory").keep();
        write_profiles(&dir);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let router = fuzzing::router(&dir).expect("the router");
        (runtime, router, dir)
    });
    (runtime, router)
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// An interval file, an incident file and a trace file of one small stack.
fn write_profiles(dir: &Path) {
    let string = |s: &str| s.to_owned();
    let profile = proto::Profile {
        sample_type: vec![
            proto::ValueType { r#type: 1, unit: 2 },
            proto::ValueType { r#type: 3, unit: 4 },
        ],
        sample: vec![proto::Sample {
            location_id: vec![1],
            value: vec![1, 10_000_000],
            label: vec![
                proto::Label {
                    key: 6,
                    num: 7,
                    ..proto::Label::default()
                },
                proto::Label {
                    key: 7,
                    str: 8,
                    ..proto::Label::default()
                },
            ],
            ..proto::Sample::default()
        }],
        location: vec![proto::Location {
            id: 1,
            line: vec![proto::Line {
                function_id: 1,
                ..proto::Line::default()
            }],
            ..proto::Location::default()
        }],
        function: vec![proto::Function {
            id: 1,
            name: 5,
            ..proto::Function::default()
        }],
        string_table: ["", "samples", "count", "cpu", "nanoseconds", "work", "pid"]
            .into_iter()
            .map(string)
            .chain([string("trace_id"), string(TRACE)])
            .collect(),
        time_nanos: 1_767_268_800_000_000_000,
        duration_nanos: 10_000_000_000,
        ..proto::Profile::default()
    };
    let writer = ProfileWriter::new(dir);
    for name in [
        "cpu-20260101T120000Z.pb.gz",
        "incident-20260101T120005Z.pb.gz",
    ] {
        writer.write_named(name, &profile).expect("a profile");
    }
    ProfileWriter::new(dir.join("traces"))
        .write_named(&format!("{TRACE}.pb.gz"), &profile)
        .expect("a trace file");
}
