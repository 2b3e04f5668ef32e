//! The fixture processes of `tests/fixtures/`.

use std::{
    ffi::OsStr,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A running fixture process, killed and reaped when dropped.
pub struct Fixture {
    child: Child,
    path: PathBuf,
}

impl Fixture {
    /// Starts the fixture at `path` and waits until it has exec'd, so that the profiler sees its
    /// final executable and comm, not the test binary's.
    pub fn spawn(path: &str, args: &[&str]) -> Result<Fixture> {
        Fixture::spawn_with_stdout(path, args, &[], Stdio::null())
    }

    /// Starts the fixture at `path` and waits (up to `timeout`) until it prints a line starting
    /// with `ready`: the fixture has set up what the test looks at (threads, published
    /// contexts). Its further output is read and dropped.
    pub fn spawn_ready(path: &str, args: &[&str], timeout: Duration) -> Result<Fixture> {
        Fixture::spawn_ready_with_env(path, args, &[], timeout)
    }

    /// [`Fixture::spawn_ready`] with `env` added to the fixture's environment (e.g. a glibc
    /// tunable).
    pub fn spawn_ready_with_env(
        path: &str,
        args: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Fixture> {
        let mut fixture = Fixture::spawn_with_stdout(path, args, env, Stdio::piped())?;
        let stdout = fixture.child.stdout.take().context("fixture stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ready") {
                    let _ = tx.send(line);
                }
            }
        });
        match rx.recv_timeout(timeout) {
            Ok(_) => Ok(fixture),
            Err(_) => {
                let status = fixture.child.try_wait()?;
                bail!(
                    "{} did not print `ready` within {timeout:?} (exit status: {status:?})",
                    fixture.path.display()
                )
            }
        }
    }

    fn spawn_with_stdout(
        path: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdout: Stdio,
    ) -> Result<Fixture> {
        let path = fs::canonicalize(path).with_context(|| format!("fixture {path} missing"))?;
        let child = Command::new(&path)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .spawn()
            .with_context(|| format!("spawning {}", path.display()))?;
        let fixture = Fixture { child, path };
        fixture.wait_for_exec()?;
        Ok(fixture)
    }

    fn wait_for_exec(&self) -> Result<()> {
        let exe = format!("/proc/{}/exe", self.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if fs::read_link(&exe).is_ok_and(|target| target == self.path) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        bail!("{} did not exec within 10 s", self.path.display())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The PID as a command-line argument.
    pub fn pid_arg(&self) -> String {
        self.pid().to_string()
    }

    /// The canonical path of the executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel's `comm` of the process: the executable's name cut to 15 bytes.
    pub fn expected_comm(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(OsStr::to_string_lossy)
            .unwrap_or_default();
        name.chars().take(15).collect()
    }

    /// The GNU build ID of the executable, lowercase hex.
    pub fn build_id(&self) -> Result<String> {
        elf_build_id(&self.path)
    }

    /// Whether the fixture still runs (without blocking).
    pub fn is_running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// Waits for the fixture to exit (reaping it, so it does not linger as a zombie).
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "fixture still running after {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PID of a process that existed and has been reaped: no process has it (PIDs are not
/// reused this quickly).
pub fn reaped_pid() -> Result<u32> {
    let mut child = Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}

fn elf_build_id(path: &Path) -> Result<String> {
    use object::Object;
    let data = fs::read(path)?;
    let file = object::File::parse(&*data)?;
    let id = file
        .build_id()?
        .ok_or_else(|| anyhow!("{} has no build ID", path.display()))?;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}
