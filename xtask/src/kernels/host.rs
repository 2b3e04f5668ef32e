//! The host's own kernel in the matrix: `check.sh` run on the host itself. Its image cannot be
//! booted (a machine of this kind runs a Firecracker kernel that is no Debian package, and
//! `/boot` is empty), but its checks are the same ones the VMs run, on the kernel CI runs on.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{fixtures::Fixtures, initramfs::CHECK, outcome::Row};
use crate::{paths, privilege::is_root, process};

/// What `--kernel` calls this row.
pub const HOST: &str = "host";

/// The check records 5 s and reads four reports; a minute is far more than it needs.
const LIMIT: Duration = Duration::from_secs(120);

pub fn run(profiler: &Path, fixtures: &Fixtures, dir: &Path) -> Result<Row> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("cannot read /proc/sys/kernel/osrelease")?
        .trim()
        .to_owned();
    let row = |note: &str| Row::without_result(HOST, &release, HOST, note.to_owned());
    if !is_root() {
        return Ok(row("needs root (the profiler loads BPF on the host)"));
    }
    let Some(cgroup_root) = cgroup2_mount()? else {
        return Ok(row("no cgroup2 hierarchy is mounted"));
    };
    let work = dir.join(HOST);
    // Only this directory's own earlier run is removed: it is ours, under target/kernels.
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("cannot clear {}", work.display()))?;
    }
    let out = work.join("out");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let script = work.join("check.sh");
    fs::write(&script, CHECK).with_context(|| format!("cannot write {}", script.display()))?;

    let dir_of = |path: &Path| path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let path = paths::prepend_path(&dir_of(profiler), env::var_os("PATH").as_deref())?;
    let path = paths::prepend_path(&dir_of(&fixtures.traced), Some(&path))?;
    println!("kernels: checking the host's kernel {release}");
    let started = Instant::now();
    let mut sh = Command::new(super::initramfs::BUSYBOX);
    sh.arg("sh")
        .arg(&script)
        .env("PATH", path)
        .env("OUT", &out)
        .env("TRACE_IDS", &fixtures.trace_ids)
        .env("GO_SOURCE", &fixtures.go_source)
        .env("CGROUP_ROOT", cgroup_root);
    let output = process::output_bounded(&mut sh, LIMIT)?;
    let elapsed = started.elapsed();
    let console = String::from_utf8_lossy(&output.stdout).into_owned();
    let console_log = work.join("console.log");
    fs::write(&console_log, &console)
        .with_context(|| format!("cannot write {}", console_log.display()))?;
    Ok(Row::of_console(
        HOST.to_owned(),
        release,
        HOST,
        &console,
        elapsed,
        || format!("no result; see {}", console_log.display()),
    ))
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host).
fn cgroup2_mount() -> Result<Option<PathBuf>> {
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    Ok(mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(point))
    }))
}
