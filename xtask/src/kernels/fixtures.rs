//! The test fixture the VM runs beside the profiler: `traced`, the integration tests' traced
//! scenario with the OpenTelemetry thread-local record in the executable (tests/fixtures/
//! traced.c and traced_scenario.c, built with the flags tests/build.rs uses), and the header
//! that holds its trace IDs, which `init.sh` reads back inside the VM.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::process;

const GCC_LIMIT: Duration = Duration::from_secs(120);

/// The fixture's files, built for this machine.
pub struct Fixtures {
    pub traced: PathBuf,
    pub trace_ids: PathBuf,
}

/// Builds `traced` into `dir` with `gcc` (`aarch64-linux-gnu-gcc` for the arm64 row; a second;
/// always, so it follows its sources).
pub fn build(root: &Path, dir: &Path, gcc: &str) -> Result<Fixtures> {
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
    Ok(Fixtures {
        traced,
        trace_ids: sources.join("trace_ids.h"),
    })
}
