//! The C workload, compiled at start into the run's temporary directory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};

const WORK_C: &str = include_str!("../fixtures/work.c");
const OTEL_HEADER: &str = include_str!("../../profiler-marker/include/otel_thread_ctx.h");

/// Paths of the compiled fixture, plain and publishing a trace context.
#[derive(Clone, Debug)]
pub struct Fixtures {
    pub work: PathBuf,
    pub work_traced: PathBuf,
}

impl Fixtures {
    pub fn build(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let source = dir.join("work.c");
        fs::write(&source, WORK_C)?;
        fs::write(dir.join("otel_thread_ctx.h"), OTEL_HEADER)?;
        let work = dir.join("work");
        let work_traced = dir.join("work_traced");
        gcc(&source, &work, &[])?;
        gcc(
            &source,
            &work_traced,
            &[
                "-DTRACED",
                "-mtls-dialect=gnu2",
                "-Wl,--export-dynamic-symbol=otel_thread_ctx_v1",
            ],
        )?;
        Ok(Self { work, work_traced })
    }
}

fn gcc(source: &Path, out: &Path, extra: &[&str]) -> Result<()> {
    let include = source.parent().unwrap_or(Path::new("."));
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-fno-omit-frame-pointer", "-Wall", "-Werror"])
        .arg("-I")
        .arg(include)
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(source)
        .status()
        .context("cannot run gcc: run `cargo xtask setup`")?;
    ensure!(status.success(), "gcc failed to build {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_builds_and_runs_a_fixed_amount_of_work() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Fixtures::build(dir.path()).unwrap();
        for bin in [&fixtures.work, &fixtures.work_traced] {
            let status = Command::new(bin).args(["10", "1000"]).status().unwrap();
            assert!(status.success(), "{}", bin.display());
        }
        let usage = Command::new(&fixtures.work).arg("x").status().unwrap();
        assert_eq!(usage.code(), Some(2));
    }
}
