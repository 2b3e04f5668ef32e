//! A file the profiler reads truncated in place while it holds it parsed: the profiler survives,
//! keeps writing intervals, logs a warning and counts `profiler_errors_total{kind="truncated_file"}`,
//! instead of dying of SIGBUS.
//!
//! blazesym checks a library's size and mtime before each read and maps it anew when they
//! changed, but never looks again at the separate debug file it found for it through
//! `.gnu_debuglink` (in `/usr/lib/debug/.build-id/`). A debug file truncated in place (a debug
//! package upgraded by `cp`) is read through the old mapping at the library's next new address:
//! SIGBUS, deterministically, which killed the profiler before its SIGBUS guard.
//!
//! The fixture is built here: a library whose two hot functions are hidden and stripped, so that
//! only its debug file names them, and an executable that runs the first until SIGUSR1, then
//! the second. The profiler runs in its own mount namespace with the test's directory bound on
//! `/usr/lib/debug`, so that the host's debug files are neither read nor touched.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use integration_tests::{
    Fixture, LoggedRun, Pprof, Want, assert_root, free_local_address, http_get, log_lines_with,
    metric_value, profiler_bin, read_checked_profiles, read_profiles, send_signal, serial,
    wrapped_record_command,
};

const FREQUENCY: u32 = 99;
const START_UP: Duration = Duration::from_secs(60);
/// Bound on an interval file (2 s intervals) or a log line showing up.
const SHOWS_UP: Duration = Duration::from_secs(30);

const FIRST: Want<'static> = Want::Exact("truncated_lib_first");
/// The warning of profiler-user/src/symbolize/symbolizer.rs.
const WARNING: &str = "shrank while blazesym read it";

const LIBRARY_C: &str = r#"
#include <signal.h>

static volatile sig_atomic_t second_phase;
/* Keeps the calls: their results are otherwise unused. */
static volatile unsigned long sink;

static void next_phase(int signal) { (void)signal; second_phase = 1; }

__attribute__((noinline, visibility("hidden")))
unsigned long truncated_lib_first(unsigned long x) {
    for (int i = 0; i < 100000; i++) x = x * 31 + (unsigned long)i;
    return x;
}

__attribute__((noinline, visibility("hidden")))
unsigned long truncated_lib_second(unsigned long x) {
    for (int i = 0; i < 100000; i++) x = x * 37 + (unsigned long)i + 7;
    return x;
}

unsigned long truncated_lib_run(void) {
    signal(SIGUSR1, next_phase);
    for (;;) sink = second_phase ? truncated_lib_second(sink) : truncated_lib_first(sink);
    return sink;
}
"#;

const MAIN_C: &str = r#"
#include <stdio.h>
unsigned long truncated_lib_run(void);
int main(void) {
    printf("ready\n");
    fflush(stdout);
    return (int)truncated_lib_run();
}
"#;

/// Bind-mounts the debug directory ($0) on /usr/lib/debug in a new mount namespace, then runs
/// the profiler.
const MOUNT_DEBUG_DIR: &str =
    r#"set -e; mkdir -p /usr/lib/debug; mount --bind "$0" /usr/lib/debug; exec "$@""#;

#[test]
#[ignore = "needs root: mounts in a new mount namespace and loads BPF programs"]
fn a_debug_file_truncated_under_the_profiler_is_counted_and_recording_goes_on() -> Result<()> {
    assert_root();
    let _serial = serial();
    let work = tempfile::tempdir()?;
    let built = build_fixture(work.path())?;
    let mut fixture = Fixture::spawn_ready(
        built.exe.to_str().context("path")?,
        &[],
        Duration::from_secs(10),
    )?;

    let out = work.path().join("out");
    fs::create_dir(&out)?;
    let pid = fixture.pid().to_string();
    let debug_root = built.debug_root.to_str().context("path")?;
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        MOUNT_DEBUG_DIR,
        debug_root,
    ];
    let metrics = free_local_address()?.to_string();
    let args = [
        "--metrics-address",
        &metrics,
        "--pid",
        &pid,
        "--frequency",
        "99",
        "--interval",
        "2",
        "--no-adaptive",
    ];
    let mut profiler = LoggedRun::spawn(wrapped_record_command(
        &wrapper,
        profiler_bin(),
        &out,
        &args,
    ))?;
    profiler.wait_until_recording(START_UP)?;

    // The first hot function named: the debug file is parsed and held.
    let named = wait_for_profile(&mut profiler, &out, |p| p.mentions(FIRST))?;
    truncate_in_place(&built.debug_file)?;
    send_signal(fixture.pid(), libc::SIGUSR1)?;

    let log = profiler.wait_for_log(SHOWS_UP, "the truncation warning", |log| {
        log.contains(WARNING)
    })?;
    let warnings = log_lines_with(&log, WARNING);
    ensure!(
        warnings.len() == 1 && warnings[0].level == "WARN",
        "one warning expected: {warnings:?}"
    );
    let library = built.library.to_str().context("path")?;
    ensure!(
        warnings[0].text.contains(library),
        "the warning names the library: {}",
        warnings[0].text
    );

    // Counted once the interval is done (the warning comes during its symbolization).
    let series = r#"profiler_errors_total{kind="truncated_file"}"#;
    let deadline = Instant::now() + SHOWS_UP;
    loop {
        let exposition = http_get(metrics.parse()?, "/metrics", Duration::from_secs(5))?.body;
        match metric_value(&exposition, series) {
            Some(1.0) => break,
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            counted => bail!("{series}: {counted:?}\n{exposition}"),
        }
    }

    // Recording goes on: a whole interval after the one with the truncation.
    let written = read_profiles(&out)?.len();
    wait_for_files(&mut profiler, &out, written + 2)?;
    ensure!(fixture.is_running()?, "the fixture stopped");

    profiler.signal(libc::SIGTERM)?;
    let output = profiler.wait(Duration::from_secs(30))?;
    output.ensure_success()?;
    let profiles = read_checked_profiles(&out, FREQUENCY)?;
    println!(
        "{} intervals; the first named the hot function ({}); warning: {}",
        profiles.len(),
        named.display(),
        warnings[0].text
    );
    Ok(())
}

/// What [`build_fixture`] made.
struct Built {
    exe: PathBuf,
    library: PathBuf,
    /// Bound on /usr/lib/debug for the profiler.
    debug_root: PathBuf,
    /// The library's debug file, under `debug_root/.build-id/`.
    debug_file: PathBuf,
}

/// Builds the library with its debug info split off into a debug file found by build ID, and
/// the executable that runs it.
fn build_fixture(dir: &Path) -> Result<Built> {
    let library = dir.join("libtruncated.so");
    let exe = dir.join("fixture-truncated-debug");
    let full_debug = dir.join("libtruncated.debug");
    fs::write(dir.join("lib.c"), LIBRARY_C)?;
    fs::write(dir.join("main.c"), MAIN_C)?;
    let flags = ["-O2", "-g", "-fno-omit-frame-pointer", "-fno-ipa-icf"];
    run(Command::new("gcc")
        .args(flags)
        .args(["-fPIC", "-shared", "-Wl,--build-id", "-o"])
        .arg(&library)
        .arg(dir.join("lib.c")))?;
    run(Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(dir.join("main.c"))
        .arg(&library)
        .arg(format!("-Wl,-rpath,{}", dir.display())))?;
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&library)
        .arg(&full_debug))?;
    run(Command::new("strip").arg("--strip-all").arg(&library))?;
    run(Command::new("objcopy")
        .current_dir(dir)
        .arg("--add-gnu-debuglink=libtruncated.debug")
        .arg(&library))?;

    let id = build_id(&library)?;
    let debug_root = dir.join("debug");
    let build_id_dir = debug_root.join(".build-id").join(&id[..2]);
    fs::create_dir_all(&build_id_dir)?;
    let debug_file = build_id_dir.join(format!("{}.debug", &id[2..]));
    fs::copy(&full_debug, &debug_file)?;
    Ok(Built {
        exe,
        library,
        debug_root,
        debug_file,
    })
}

fn run(cmd: &mut Command) -> Result<()> {
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        output.status.success(),
        "{cmd:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The GNU build ID of an ELF file, lowercase hex.
fn build_id(path: &Path) -> Result<String> {
    use object::Object;
    let data = fs::read(path)?;
    let file = object::File::parse(&*data)?;
    let id = file.build_id()?.context("no build ID")?;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// Empties the file without replacing it (same inode), as `cp new old` does first.
fn truncate_in_place(path: &Path) -> Result<()> {
    fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(())
}

/// Waits for an interval file for which `want` holds; fails if the profiler exits first.
fn wait_for_profile(
    profiler: &mut LoggedRun,
    out: &Path,
    want: impl Fn(&Pprof) -> bool,
) -> Result<PathBuf> {
    let deadline = Instant::now() + SHOWS_UP;
    loop {
        // A file being renamed into place can be missed once, never read half-written.
        if let Some(found) = read_profiles(out)
            .unwrap_or_default()
            .into_iter()
            .find(|p| want(p))
        {
            return Ok(found.path);
        }
        if !profiler.is_running()? {
            bail!("the profiler exited; log:\n{}", profiler.log());
        }
        ensure!(
            Instant::now() < deadline,
            "no such profile within {SHOWS_UP:?}; log:\n{}",
            profiler.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `out` holds `count` interval files; fails if the profiler exits first.
fn wait_for_files(profiler: &mut LoggedRun, out: &Path, count: usize) -> Result<()> {
    let deadline = Instant::now() + SHOWS_UP;
    while read_profiles(out).unwrap_or_default().len() < count {
        if !profiler.is_running()? {
            bail!("the profiler exited; log:\n{}", profiler.log());
        }
        ensure!(
            Instant::now() < deadline,
            "not {count} files within {SHOWS_UP:?}; log:\n{}",
            profiler.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
