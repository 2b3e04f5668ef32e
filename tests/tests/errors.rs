//! Refusals: each ends with one `error: ...` line naming the problem and a non-zero exit code,
//! never a panic, and writes no profile.

use std::{fs, path::Path, time::Duration};

use anyhow::{Result, ensure};
use integration_tests::{
    Fixture, HOT_C, RunOutput, adaptive_record_command, assert_root, read_profiles, reaped_pid,
    record_command, run, world_executable_profiler, world_writable_tempdir, wrapped_record_command,
};

/// Refusals come before any recording, but the machine may be busy.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments, a variable to set, and what the error line must name.
type UsageCase = (
    &'static [&'static str],
    Option<(&'static str, &'static str)>,
    &'static str,
);

/// Flags that contradict each other, and a switch's variable set to something else than a
/// switch value, are usage errors (exit 2, one line naming the flag or the variable) before
/// anything starts. Needs no root: they come before every check.
#[test]
fn contradictory_flags_and_bad_switches_are_usage_errors() -> Result<()> {
    let out = tempfile::tempdir()?;
    let cases: [UsageCase; 3] = [
        (
            &["--min-frequency", "100", "--frequency", "19"],
            None,
            "--min-frequency",
        ),
        (&["--node-name", ""], None, "--node-name"),
        (
            &[],
            Some(("PROFILER_NO_ADAPTIVE", "maybe")),
            "PROFILER_NO_ADAPTIVE",
        ),
    ];
    for (args, variable, named) in cases {
        let mut cmd = adaptive_record_command(out.path(), args);
        if let Some((name, value)) = variable {
            cmd.env(name, value);
        }
        let output = run(cmd, TIMEOUT)?;
        output.ensure_error(&[named])?;
        ensure!(
            output.status.code() == Some(2),
            "{args:?}: exit {:?}, not a usage error",
            output.status.code()
        );
    }
    check_no_profiles(out.path())
}

#[test]
#[ignore = "needs root: runs the profiler as another user"]
fn unprivileged_user_is_refused() -> Result<()> {
    assert_root();
    let (_bin_dir, bin) = world_executable_profiler()?;
    let out = world_writable_tempdir()?;
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let cmd = wrapped_record_command(&nobody, &bin, out.path(), &["--duration", "1"]);
    let output = run(cmd, TIMEOUT)?;
    output.ensure_error(&["CAP_BPF", "root"])?;
    check_no_profiles(out.path())
}

#[test]
#[ignore = "needs root: runs the profiler as root without capabilities"]
fn root_without_capabilities_is_refused() -> Result<()> {
    assert_root();
    let (_bin_dir, bin) = world_executable_profiler()?;
    let out = world_writable_tempdir()?;
    // uid 0 still, but an empty bounding set leaves the exec'd profiler no capability at all.
    let no_caps = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"];
    let cmd = wrapped_record_command(&no_caps, &bin, out.path(), &["--duration", "1"]);
    let output = run(cmd, TIMEOUT)?;
    output.ensure_error(&["CAP_BPF", "root"])?;
    check_no_profiles(out.path())
}

#[test]
#[ignore = "needs root: the profiler refuses a user before this check"]
fn kernel_without_btf_is_reported() -> Result<()> {
    assert_root();
    let out = tempfile::tempdir()?;
    let mut cmd = record_command(out.path(), &["--duration", "1"]);
    cmd.env("PROFILER_KERNEL_BTF", "/nonexistent/vmlinux");
    run(cmd, TIMEOUT)?.ensure_error(&["BTF"])?;
    check_no_profiles(out.path())
}

#[test]
#[ignore = "needs root: the profiler refuses a user before this check"]
fn pid_that_never_existed_is_reported() -> Result<()> {
    assert_root();
    // Above any pid_max (at most 2^22), so no process can have it.
    check_unknown_pid(999_999_999)
}

#[test]
#[ignore = "needs root: the profiler refuses a user before this check"]
fn pid_of_a_reaped_process_is_reported() -> Result<()> {
    assert_root();
    check_unknown_pid(reaped_pid()?)
}

fn check_unknown_pid(pid: u32) -> Result<()> {
    let out = tempfile::tempdir()?;
    let pid = pid.to_string();
    let cmd = record_command(out.path(), &["--pid", &pid, "--duration", "1"]);
    run(cmd, TIMEOUT)?.ensure_error(&["no process", &pid])?;
    check_no_profiles(out.path())
}

#[test]
#[ignore = "needs root: the profiler refuses a user before this check"]
fn output_dir_under_a_regular_file_is_reported() -> Result<()> {
    assert_root();
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("file");
    fs::write(&file, "not a directory")?;
    check_bad_output_dir(&file.join("sub"))
}

#[test]
#[ignore = "needs root: the profiler refuses a user before this check"]
fn output_dir_that_is_a_regular_file_is_reported() -> Result<()> {
    assert_root();
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("file");
    fs::write(&file, "not a directory")?;
    check_bad_output_dir(&file)?;
    let content = fs::read_to_string(&file)?;
    ensure!(content == "not a directory", "the file was overwritten");
    Ok(())
}

/// Recording a live fixture into `out` fails with an `output directory` error.
fn check_bad_output_dir(out: &Path) -> Result<()> {
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let pid = fixture.pid_arg();
    let cmd = record_command(out, &["--pid", &pid, "--duration", "2"]);
    let output: RunOutput = run(cmd, TIMEOUT)?;
    output.ensure_error(&["output directory"])
}

fn check_no_profiles(dir: &Path) -> Result<()> {
    let written = read_profiles(dir)?;
    ensure!(
        written.is_empty(),
        "{} profile(s) written despite the error",
        written.len()
    );
    Ok(())
}
