//! `cargo xtask run`: build the profiler and run it as root, forwarding its exit code.

use std::{
    ffi::OsString,
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Command, ExitCode, ExitStatus},
};

use anyhow::{Context, Result};

use crate::{cargo_cmd, privilege, process, setup};

pub fn run(root: &Path, args: Vec<OsString>) -> Result<ExitCode> {
    setup::setup(root)?;
    let bin = cargo_cmd::build_profiler(root)?;
    // -E keeps the user's environment (RUST_LOG and the like) under sudo.
    let mut cmd = privilege::as_root(bin, &["-E"], "the profiler")?;
    cmd.args(profiler_args(args));
    let status = wait_through_ctrl_c(&mut cmd)?;
    Ok(ExitCode::from(exit_code(status)))
}

/// With no arguments, record the whole host.
fn profiler_args(args: Vec<OsString>) -> Vec<OsString> {
    if args.is_empty() {
        vec!["record".into()]
    } else {
        args
    }
}

/// Runs `cmd` to the end. Ctrl-C reaches the child too (same process group); xtask ignores it so
/// that it waits while the child flushes its profile and exits on its own.
fn wait_through_ctrl_c(cmd: &mut Command) -> Result<ExitStatus> {
    // Spawn first: an ignored signal would stay ignored in the child across exec.
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", process::describe(cmd)))?;
    ignore_termination_signals();
    child.wait().context("waiting for the profiler failed")
}

fn ignore_termination_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: SIG_IGN installs no handler code; xtask exits soon after, so it is not restored.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
}

/// The child's exit code, or 128 + signal number when a signal ended it (as shells report).
fn exit_code(status: ExitStatus) -> u8 {
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    u8::try_from(code).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_means_record() {
        assert_eq!(profiler_args(Vec::new()), ["record"]);
    }

    #[test]
    fn arguments_are_kept() {
        let args: Vec<OsString> = vec!["report".into(), "x.pb.gz".into()];
        assert_eq!(profiler_args(args.clone()), args);
    }

    #[test]
    fn exit_code_is_forwarded() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
    }

    #[test]
    fn death_by_signal_maps_to_128_plus_signal() {
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGINT)), 130);
    }
}
