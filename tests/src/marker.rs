//! The Rust fixture of the profiler-marker library: its example `traced_worker`, and what its
//! samples must carry.
//!
//! The example publishes a process context (service.name = "marker-example", attribute keys
//! ["http.route", "user.id"]) and runs a thread "traced-worker" that alternates every ~5 ms
//! between two traces (trace and span IDs all 0x11 bytes, then all 0x22), each around its own
//! hot function. It takes its lifetime in seconds as
//! argv[1] and prints "ready <pid>".

use std::{
    env,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Context, Result, anyhow, ensure};

use crate::*;

pub const MARKER_TRACE_CHECKOUT: &str = "11111111111111111111111111111111";
pub const MARKER_TRACE_SEARCH: &str = "22222222222222222222222222222222";
pub const MARKER_SPAN_CHECKOUT: &str = "1111111111111111";
pub const MARKER_SPAN_SEARCH: &str = "2222222222222222";
pub const MARKER_SERVICE: &str = "marker-example";
pub const MARKER_WORKER_THREAD: &str = "traced-worker";

/// The example's traced hot functions. With a process context, attributes are named after the
/// context's attribute keys, never `attr_<index>`.
pub const MARKER_TRACED: [TracedFn<'static>; 2] = [
    TracedFn {
        function: Want::Contains("marker_example_checkout_work"),
        trace_id: MARKER_TRACE_CHECKOUT,
        span_id: Some(MARKER_SPAN_CHECKOUT),
        labels: &[
            (SERVICE_NAME_LABEL, MARKER_SERVICE),
            ("http.route", "/checkout"),
        ],
        absent: &["user.id", "attr_0", "attr_1"],
    },
    TracedFn {
        function: Want::Contains("marker_example_search_work"),
        trace_id: MARKER_TRACE_SEARCH,
        span_id: Some(MARKER_SPAN_SEARCH),
        labels: &[
            (SERVICE_NAME_LABEL, MARKER_SERVICE),
            ("http.route", "/search"),
            ("user.id", "42"),
        ],
        absent: &["attr_0", "attr_1"],
    },
];

/// The `traced_worker` example: `$TRACED_WORKER_BIN`, else built once with
/// `cargo build --release -p profiler-marker --example traced_worker`.
///
/// The build has its own target directory (`<target>/marker-fixture`) because it asks for frame
/// pointers (`RUSTFLAGS`), which must not invalidate the workspace's release build.
pub fn traced_worker_bin() -> Result<&'static Path> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_traced_worker().map_err(|err| format!("{err:#}")))
        .as_deref()
        .map_err(|err| anyhow!("{err}"))
}

fn locate_traced_worker() -> Result<PathBuf> {
    if let Some(bin) = env::var_os("TRACED_WORKER_BIN") {
        let bin = PathBuf::from(bin);
        ensure!(
            bin.is_file(),
            "TRACED_WORKER_BIN={} is not a file",
            bin.display()
        );
        return Ok(bin);
    }
    let target = target_dir().join("marker-fixture");
    let target_arg = target.to_string_lossy().into_owned();
    let args = [
        "build",
        "--release",
        "-p",
        "profiler-marker",
        "--example",
        "traced_worker",
        "--target-dir",
        &target_arg,
    ];
    eprintln!("building the marker fixture: cargo {}", args.join(" "));
    let status = cargo_command(&args)
        .env("RUSTFLAGS", "-C force-frame-pointers=yes")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("running cargo build for the marker example")?;
    ensure!(
        status.success(),
        "cargo {}: {status} (is there a package profiler-marker with examples/traced_worker.rs \
         in {}?)",
        args.join(" "),
        workspace_root().display()
    );
    let bin = target.join("release/examples/traced_worker");
    ensure!(bin.is_file(), "{} missing after the build", bin.display());
    Ok(bin)
}
