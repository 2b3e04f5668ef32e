//! The binary under test: where it is, how to build it, commands that run it.

use std::{
    env,
    ffi::OsString,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Context, Result, ensure};

// ---------------------------------------------------------------------------------------------
// The binary under test

/// The workspace root (parent of this package).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
}

/// The `profiler` binary: `$PROFILER_BIN`, else `<target>/release/profiler`, built once with
/// `cargo build --release -p profiler-user` if missing.
pub fn profiler_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| locate_profiler().unwrap_or_else(|err| panic!("{err:#}")))
}

fn locate_profiler() -> Result<PathBuf> {
    if let Some(bin) = env::var_os("PROFILER_BIN") {
        let bin = PathBuf::from(bin);
        ensure!(
            bin.is_file(),
            "PROFILER_BIN={} is not a file",
            bin.display()
        );
        return Ok(bin);
    }
    let bin = target_dir().join("release/profiler");
    if !bin.is_file() {
        build_profiler()?;
    }
    ensure!(bin.is_file(), "{} missing after the build", bin.display());
    warn_if_stale(&bin);
    Ok(bin)
}

/// An existing binary is used as is: say so when sources changed after it was built, since
/// failures would then be about old code.
fn warn_if_stale(bin: &Path) {
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let crates = ["profiler-user", "profiler-ebpf", "profiler-common"];
    let newer = crates
        .iter()
        .filter_map(|c| newest_mtime(&workspace_root().join(c).join("src")))
        .any(|changed| changed > built);
    if newer {
        eprintln!(
            "warning: {} is older than the profiler's sources; run `cargo build --release -p \
             profiler-user` or set PROFILER_BIN",
            bin.display()
        );
    }
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// The workspace's target directory (`$CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace_root().join(dir))
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `cargo <args>` in the workspace root, with `~/.cargo/bin` first on `PATH` (the BPF build
/// inside profiler-user needs bpf-linker from there).
pub fn cargo_command(args: &[&str]) -> Command {
    let mut path = OsString::new();
    if let Some(home) = env::var_os("HOME") {
        path.push(Path::new(&home).join(".cargo/bin"));
        path.push(":");
    }
    path.push(env::var_os("PATH").unwrap_or_default());
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args)
        .current_dir(workspace_root())
        .env("PATH", path);
    cmd
}

fn build_profiler() -> Result<()> {
    eprintln!("building the profiler: cargo build --release -p profiler-user");
    let status = cargo_command(&["build", "--release", "-p", "profiler-user"])
        .status()
        .context("running cargo build for the profiler")?;
    ensure!(
        status.success(),
        "cargo build --release -p profiler-user: {status}"
    );
    Ok(())
}

/// A command running the profiler, with no `PROFILER_*` variable inherited from the caller's
/// environment (those are flag fallbacks and would change what the test asks for).
pub fn profiler_command() -> Command {
    let mut cmd = Command::new(profiler_bin());
    strip_profiler_env(&mut cmd);
    cmd
}

/// `profiler record --output-dir <out_dir> <args>`.
pub fn record_command(out_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = adaptive_record_command(out_dir, args);
    // Tests of what a fixed rate records: the suite's own load must not start incident
    // captures or move the rate under them (tests/tests/adaptive.rs covers that).
    cmd.arg("--no-adaptive");
    cmd
}

/// `<profiler> record --output-dir <out_dir> <args>` with adaptive sampling on (the default).
pub fn adaptive_record_command(out_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = profiler_command();
    cmd.arg("record")
        .arg("--output-dir")
        .arg(out_dir)
        .args(args);
    cmd
}

/// `<wrapper...> <profiler> record --output-dir <out_dir> <args>`, e.g. under `setpriv`.
pub fn wrapped_record_command(
    wrapper: &[&str],
    bin: &Path,
    out_dir: &Path,
    args: &[&str],
) -> Command {
    let (program, wrapper_args) = wrapper.split_first().expect("a wrapper program");
    let mut cmd = Command::new(program);
    cmd.args(wrapper_args)
        .arg(bin)
        .arg("record")
        .arg("--output-dir")
        .arg(out_dir)
        .args(args);
    strip_profiler_env(&mut cmd);
    cmd
}

fn strip_profiler_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("PROFILER_") {
            cmd.env_remove(key);
        }
    }
    // Tests run profilers side by side: each serves its metrics on a port of its own (a test
    // that scrapes passes --metrics-address, which wins over the variable).
    cmd.env("PROFILER_METRICS_ADDRESS", "127.0.0.1:0");
}

/// A copy of the profiler that any user can execute (the original may sit in a directory only
/// root can enter), in a world-readable temp dir that lives as long as the returned guard.
pub fn world_executable_profiler() -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let bin = dir.path().join("profiler");
    fs::copy(profiler_bin(), &bin).context("copying the profiler")?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    Ok((dir, bin))
}

/// A temp dir every user may write to, for runs under a dropped identity.
pub fn world_writable_tempdir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))?;
    Ok(dir)
}
