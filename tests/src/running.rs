//! Running a process with a timeout, and signalling it.

use std::{
    fs,
    io::Read,
    os::unix::process::ExitStatusExt,
    process::{Child, Command, ExitStatus, Stdio},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, ensure};

// ---------------------------------------------------------------------------------------------
// Running a process with a timeout

/// What a finished run printed, and how it ended.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    /// Exit code 0 and no panic.
    pub fn ensure_success(&self) -> Result<()> {
        self.ensure_no_panic()?;
        ensure!(
            self.status.code() == Some(0),
            "profiler ended with {}; stderr:\n{}",
            self.status,
            self.stderr
        );
        Ok(())
    }

    /// A clean failure: non-zero exit code (not a signal), no panic, and the last non-empty line
    /// of stderr is `error: ...` containing every word of `words` (earlier lines may be logs).
    pub fn ensure_error(&self, words: &[&str]) -> Result<()> {
        self.ensure_no_panic()?;
        let code = self.status.code().ok_or_else(|| {
            anyhow!(
                "profiler killed by {:?} instead of exiting with an error",
                self.status.signal()
            )
        })?;
        ensure!(
            code != 0,
            "profiler exited 0; expected an error. stderr:\n{}",
            self.stderr
        );
        let line = self.last_stderr_line().unwrap_or("");
        ensure!(
            line.starts_with("error: ") && line.len() > "error: ".len(),
            "last line of stderr is not `error: ...`: {line:?}; stderr:\n{}",
            self.stderr
        );
        for word in words {
            ensure!(line.contains(word), "error line lacks {word:?}: {line:?}");
        }
        let error_lines = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .count();
        ensure!(
            error_lines == 1,
            "{error_lines} `error: ` lines; stderr:\n{}",
            self.stderr
        );
        Ok(())
    }

    /// The last non-empty line of stderr, trimmed.
    pub fn last_stderr_line(&self) -> Option<&str> {
        self.stderr.lines().map(str::trim).rfind(|l| !l.is_empty())
    }

    fn ensure_no_panic(&self) -> Result<()> {
        for marker in ["panicked", "stack backtrace"] {
            ensure!(
                !self.stderr.contains(marker),
                "profiler stderr shows a panic ({marker:?}):\n{}",
                self.stderr
            );
        }
        Ok(())
    }
}

/// A running child whose output is collected on background threads (so it never blocks on a
/// full pipe). Killed when dropped unless waited for.
pub struct Running {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    waited: bool,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Result<Running> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let stdout = child.stdout.take().map(collect);
        let stderr = child.stderr.take().map(collect);
        Ok(Running {
            child,
            stdout,
            stderr,
            waited: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) -> Result<()> {
        send_signal(self.pid(), signal)
    }

    /// Waits until the process has blocked `signal` or catches it (`SigBlk`, `SigCgt` in
    /// /proc/PID/status): blocking the stop signals is the profiler's first act in `main`, and
    /// it lets them through once its handlers are in place. Before that no program can handle
    /// a signal (the time to load and start the binary, longer on a busy or cold machine).
    /// False on timeout or exit.
    pub fn wait_until_holding(&self, signal: i32, timeout: Duration) -> bool {
        let bit = 1u64 << (signal - 1);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid())) else {
                return false;
            };
            let mask = |field: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(field))
                    .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                    .unwrap_or(0)
            };
            if (mask("SigBlk:") | mask("SigCgt:")) & bit != 0 {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Waits until the process holds at least one perf event per CPU, i.e. it samples. Returns
    /// false on timeout or exit: callers go on and let their assertions decide.
    pub fn wait_until_sampling(&self, timeout: Duration) -> bool {
        let want = thread::available_parallelism().map_or(1, |n| n.get());
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match count_perf_event_fds(self.pid()) {
                Some(n) if n >= want => return true,
                Some(_) => thread::sleep(Duration::from_millis(50)),
                None => return false,
            }
        }
        false
    }

    /// Whether the process is still running (without blocking).
    pub fn is_running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// Waits for the exit; on timeout kills the process and fails with what it printed.
    pub fn wait(mut self, timeout: Duration) -> Result<RunOutput> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let timed_out = status.is_none();
        let status = match status {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                self.child.wait()?
            }
        };
        self.waited = true;
        let output = RunOutput {
            status,
            stdout: join_output(self.stdout.take()),
            stderr: join_output(self.stderr.take()),
        };
        ensure!(
            !timed_out,
            "still running after {timeout:?}, killed; stderr:\n{}",
            output.stderr
        );
        Ok(output)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join_output(handle: Option<JoinHandle<String>>) -> String {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

fn count_perf_event_fds(pid: u32) -> Option<usize> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let count = fds
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("perf_event"))
        .count();
    Some(count)
}

/// Runs `cmd` to completion within `timeout`.
pub fn run(cmd: Command, timeout: Duration) -> Result<RunOutput> {
    Running::spawn(cmd)?.wait(timeout)
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill");
    }
    Ok(())
}
