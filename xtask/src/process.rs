//! Running child processes with errors that say which command failed and how.

use std::{
    io::Read,
    path::Path,
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

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

/// Waits for `child` at most `limit`; past it, kills it and returns `None`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child
            .try_wait()
            .context("could not wait for a child process")?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // Already gone is fine: it ended between the two calls.
            let _ = child.kill();
            child
                .wait()
                .context("could not reap a killed child process")?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` with its output captured, killed after `limit`; fails unless it exits with status
/// 0 in time, with the end of its standard error in the message.
pub fn output_bounded(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    // Read both pipes while waiting: a child that fills one would otherwise never end.
    let readers = [
        child.stdout.take().map(|pipe| read_all(Box::new(pipe))),
        child.stderr.take().map(|pipe| read_all(Box::new(pipe))),
    ];
    let status = wait_bounded(&mut child, limit)?;
    let [stdout, stderr] = readers.map(|reader| {
        reader
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    });
    let Some(status) = status else {
        bail!("`{}` did not finish within {limit:?}", describe(cmd));
    };
    if !status.success() {
        let text = String::from_utf8_lossy(&stderr);
        let last = text.lines().rev().find(|line| !line.trim().is_empty());
        bail!(
            "`{}` failed ({status}){}",
            describe(cmd),
            last.map(|line| format!(": {}", line.trim()))
                .unwrap_or_default()
        );
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn read_all(mut pipe: Box<dyn Read + Send>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error ends the output early; the exit status still tells what happened.
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
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

    #[test]
    fn output_bounded_captures_stdout() {
        let out = output_bounded(Command::new("echo").arg("hi"), Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, b"hi\n");
    }

    #[test]
    fn output_bounded_kills_what_runs_too_long() {
        let err = output_bounded(Command::new("sleep").arg("10"), Duration::from_millis(200))
            .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
    }
}
