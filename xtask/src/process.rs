//! Running child processes with errors that say which command failed and how.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, ensure};

/// The command line as a user would type it (program by file name, environment left out).
pub fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let name = program.file_name().unwrap_or(program.as_os_str());
    std::iter::once(name)
        .chain(cmd.get_args())
        .map(|word| word.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with inherited stdio; fails unless it exits with status 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    ensure!(status.success(), "`{}` failed ({status})", describe(cmd));
    Ok(())
}

/// The standard output of `cmd` if it starts and succeeds: for cheap "is it installed" probes.
pub fn output_if_ok(cmd: &mut Command) -> Option<String> {
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_shows_file_name_and_args() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.args(["build", "--release"]).env("X", "1");
        assert_eq!(describe(&cmd), "cargo build --release");
    }

    #[test]
    fn run_reports_failing_command() {
        let err = run(&mut Command::new("false")).unwrap_err();
        assert!(err.to_string().starts_with("`false` failed"), "{err}");
    }

    #[test]
    fn output_if_ok_is_none_for_missing_program() {
        assert!(output_if_ok(&mut Command::new("/nonexistent/program")).is_none());
    }
}
