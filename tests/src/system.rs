//! Host-wide things the reliability tests touch, each undone when dropped (also when a test
//! fails): a small tmpfs, a chosen PID (`ns_last_pid`), a process in its own mount namespace;
//! and what they measure: a process's memory, the profiler's log as it is written.

use std::{
    fs::{self, File},
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{RunOutput, log_recording_started, send_signal};
use anyhow::{Context, Result, bail, ensure};

// ---------------------------------------------------------------------------------------------
// A small tmpfs

/// A tmpfs mounted on a fresh temp dir, unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. "1m").
    pub fn mount(size: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()?;
        ensure!(status.success(), "mount -t tmpfs failed: {status}");
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `name` until the file system is full to the last byte; returns its size.
    pub fn fill(&self, name: &str) -> Result<u64> {
        let path = self.path().join(name);
        let mut file = File::create(&path)?;
        // Large writes first, then single bytes for whatever a large one could not take.
        for chunk in [64 * 1024, 4096, 1] {
            let buf = vec![0xa5u8; chunk];
            while file.write_all(&buf).is_ok() {}
        }
        let _ = file.flush();
        let probe = self.path().join(".probe");
        let room = fs::write(&probe, b"x");
        let _ = fs::remove_file(&probe);
        ensure!(room.is_err(), "{} is not full", self.path().display());
        Ok(file.metadata()?.len())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

// ---------------------------------------------------------------------------------------------
// A chosen PID

const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

/// Spawns with `spawn` until the new process gets PID `pid`: before each try the last PID the
/// kernel handed out is set to `pid - 1` (`/proc/sys/kernel/ns_last_pid`, under the `flock`
/// that CRIU and others take on it). Other processes of the host may take the PID first: a
/// child with another PID is dropped (its guard must kill and reap it) and the next try starts.
/// Returns the child and the number of tries.
pub fn spawn_with_pid<T>(
    pid: u32,
    tries: usize,
    mut spawn: impl FnMut() -> Result<T>,
    pid_of: impl Fn(&T) -> u32,
) -> Result<(T, usize)> {
    ensure!(pid > 1, "cannot aim at PID {pid}");
    let lock = File::open(NS_LAST_PID).with_context(|| format!("opening {NS_LAST_PID}"))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).context("flock ns_last_pid");
    }
    let mut got = Vec::new();
    for attempt in 1..=tries {
        fs::write(NS_LAST_PID, (pid - 1).to_string())
            .with_context(|| format!("writing {NS_LAST_PID}"))?;
        let child = spawn()?;
        let child_pid = pid_of(&child);
        if child_pid == pid {
            return Ok((child, attempt));
        }
        got.push(child_pid);
        drop(child);
    }
    bail!("no child got PID {pid} in {tries} tries (got {got:?})")
}

// ---------------------------------------------------------------------------------------------
// Memory of a process

/// A `kB` field of `/proc/<pid>/status` (e.g. `VmRSS`, `VmHWM`), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kib = line
        .trim()
        .strip_suffix("kB")
        .context("not in kB")?
        .trim()
        .parse()?;
    Ok(kib)
}

/// Reads a process's `VmRSS` at a fixed period on a background thread.
pub struct MemoryWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<u64>>>,
}

impl MemoryWatch {
    pub fn start(pid: u32, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut readings = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match proc_status_kib(pid, "VmRSS") {
                    Ok(kib) => readings.push(kib),
                    Err(_) => break,
                }
                let next = Instant::now() + period;
                while Instant::now() < next && !flag.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            readings
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the watch; returns the readings in KiB, oldest first.
    pub fn stop(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// A run whose log can be read while it runs (see adaptive.rs for reading log lines)

/// A child whose stderr goes to a file, so that a test can wait for log lines while it runs.
/// Killed when dropped unless waited for.
pub struct LoggedRun {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    waited: bool,
}

impl LoggedRun {
    pub fn spawn(mut cmd: Command) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("stderr.log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?);
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self {
            child,
            log,
            _dir: dir,
            waited: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `done` holds for the log; fails on timeout or if the process exits first.
    pub fn wait_for_log(
        &mut self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if done(&log) {
                return Ok(log);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("exited ({status}) before {what}; log:\n{log}");
            }
            ensure!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the profiler's start line (`recording the ...`): the perf events are attached.
    pub fn wait_until_recording(&mut self, timeout: Duration) -> Result<()> {
        self.wait_for_log(timeout, "start of recording", |log| {
            log_recording_started(log).is_ok()
        })
        .map(drop)
    }

    pub fn signal(&self, signal: i32) -> Result<()> {
        send_signal(self.pid(), signal)
    }

    pub fn is_running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// Waits for the exit; on timeout kills the process and fails with its log.
    pub fn wait(mut self, timeout: Duration) -> Result<RunOutput> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.waited = true;
                bail!(
                    "still running after {timeout:?}, killed; log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        self.waited = true;
        Ok(RunOutput {
            status,
            stdout: String::new(),
            stderr: self.log(),
        })
    }
}

impl Drop for LoggedRun {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `key=value` in a log line.
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

// ---------------------------------------------------------------------------------------------
// A process in its own mount namespace

/// The script `unshare -m` runs: mount a tmpfs on $1, copy $2 there as $4, move itself into the
/// cgroup whose `cgroup.procs` is $3 (if not empty), and exec the copy with the remaining args.
const MOUNT_NS_SCRIPT: &str = r#"set -e
mount -t tmpfs -o size=64m profiler-test "$1"
cp "$2" "$1/$4"
if [ -n "$3" ]; then echo $$ > "$3"; fi
dir=$1 name=$4
shift 4
exec "$dir/$name" "$@""#;

/// An executable run from a tmpfs mounted in its own mount namespace (`unshare -m`, private
/// propagation): its path exists only there. On the host the mount point is an empty directory
/// and the copy it was made from is deleted once the process runs. Killed and reaped when
/// dropped; the namespace and its tmpfs go with the process.
pub struct MountNsProcess {
    child: Child,
    exe: PathBuf,
    _dir: tempfile::TempDir,
}

impl MountNsProcess {
    /// Runs a copy of `source` with `args`, first moved into the cgroup whose `cgroup.procs` is
    /// `cgroup_procs`, if given. Returns once the process has exec'd the copy.
    pub fn spawn(source: &Path, cgroup_procs: Option<&Path>, args: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mount_point = dir.path().join("ns-only");
        fs::create_dir(&mount_point)?;
        let host_copy = dir.path().join("host-copy");
        fs::copy(source, &host_copy).context("copying the executable")?;
        let name = source.file_name().context("executable without a name")?;
        let exe = mount_point.join(name);
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .args([MOUNT_NS_SCRIPT, "sh"])
            .arg(&mount_point)
            .arg(&host_copy)
            .arg(cgroup_procs.unwrap_or(Path::new("")))
            .arg(name)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .context("spawning unshare (util-linux)")?;
        let mut process = Self {
            child,
            exe,
            _dir: dir,
        };
        process.wait_for_exec()?;
        fs::remove_file(&host_copy)?;
        Ok(process)
    }

    fn wait_for_exec(&mut self) -> Result<()> {
        let link = format!("/proc/{}/exe", self.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if fs::read_link(&link).is_ok_and(|target| target == self.exe) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("unshare ended with {status} before running the copy");
            }
            thread::sleep(Duration::from_millis(10));
        }
        bail!("{} did not run within 10 s", self.exe.display())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The executable's path as the process sees it (in its mount namespace).
    pub fn exe(&self) -> &Path {
        &self.exe
    }
}

impl Drop for MountNsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
