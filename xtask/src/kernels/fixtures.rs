//! The test fixtures the VM runs beside the profiler: `traced`, the integration tests' traced
//! scenario with the OpenTelemetry thread-local record in the executable (tests/fixtures/
//! traced.c and traced_scenario.c, built with the flags tests/build.rs uses), and the header
//! that holds its trace IDs, which `check.sh` reads back inside the VM; the Go labels fixture
//! (tests/fixtures/go/labels), whose goroutines carry trace IDs as pprof labels, static.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::{go_toolchains, process};

const GCC_LIMIT: Duration = Duration::from_secs(120);

/// The fixture's files, built for this machine.
pub struct Fixtures {
    pub traced: PathBuf,
    pub trace_ids: PathBuf,
    /// The Go labels fixture built with the oldest and the newest pinned Go (both label-set
    /// layouts), named `golabels-<version>`.
    pub go_labels: Vec<PathBuf>,
    /// Its source, whose constants hold the trace IDs `check.sh` looks for.
    pub go_source: PathBuf,
}

/// Builds `traced` into `dir` with `gcc` (`aarch64-linux-gnu-gcc` for the arm64 row; a second;
/// always, so it follows its sources) and the Go labels fixture for `goarch` (`amd64`,
/// `arm64`; Go's cache makes it quick after the first time).
pub fn build(root: &Path, dir: &Path, gcc: &str, goarch: &str) -> Result<Fixtures> {
    let sources = root.join("tests").join("fixtures");
    let traced = dir.join("traced");
    let mut gcc = Command::new(gcc);
    gcc.args(["-O2", "-g", "-fno-omit-frame-pointer", "-pthread"])
        .arg("-Wl,--export-dynamic-symbol=otel_thread_ctx_v1")
        .arg("-o")
        .arg(&traced)
        .arg(sources.join("traced.c"))
        .arg(sources.join("traced_scenario.c"));
    process::output_bounded(&mut gcc, GCC_LIMIT)
        .context("could not build the traced fixture (is gcc installed?)")?;
    let go_source = sources.join("go").join("labels");
    let mut go_labels = Vec::new();
    for version in go_toolchains::oldest_and_newest()? {
        let output = dir.join(format!("golabels-{version}"));
        go_toolchains::build(root, version, goarch, &go_source, &output)?;
        go_labels.push(output);
    }
    Ok(Fixtures {
        traced,
        trace_ids: sources.join("trace_ids.h"),
        go_labels,
        go_source: go_source.join("main.go"),
    })
}
