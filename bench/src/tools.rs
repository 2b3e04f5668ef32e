//! The profilers under comparison: how each is started, when it is sampling, and what it cost.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::fdinfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Ours,
    /// Ours walking user stacks by frame pointers only (`--no-dwarf-unwinding`).
    OursFramePointers,
    Perf,
    Bpftrace,
}

impl Tool {
    pub fn label(self) -> &'static str {
        match self {
            Tool::Ours => "profiler",
            Tool::OursFramePointers => "profiler --no-dwarf-unwinding",
            Tool::Perf => "perf record -g -a",
            Tool::Bpftrace => "bpftrace",
        }
    }

    /// Whether the tool samples through a BPF program (whose statistics we can read).
    fn uses_bpf(self) -> bool {
        matches!(self, Tool::Ours | Tool::OursFramePointers | Tool::Bpftrace)
    }
}

/// How to invoke each tool.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub tool: Tool,
    pub rate: u64,
    /// Our profiler's drain interval, in seconds.
    pub interval: u64,
    /// Our profiler samples only this process (`--pid`) instead of the whole host.
    pub pid: Option<u32>,
}

impl Invocation {
    pub fn new(tool: Tool, rate: u64) -> Self {
        Self {
            tool,
            rate,
            interval: 10,
            pid: None,
        }
    }

    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    pub fn interval(mut self, seconds: u64) -> Self {
        self.interval = seconds;
        self
    }

    /// The argument vector, with `out` as the output directory (or file prefix).
    pub fn argv(&self, profiler: &Path, out: &Path) -> Vec<String> {
        let rate = self.rate.to_string();
        match self.tool {
            // A fixed rate: the adaptive controller would change it under the benchmark's load.
            Tool::Ours | Tool::OursFramePointers => {
                let mut argv = vec![
                    profiler.display().to_string(),
                    "record".into(),
                    "--no-adaptive".into(),
                    "--frequency".into(),
                    rate,
                    "--interval".into(),
                    self.interval.to_string(),
                    "--output-dir".into(),
                    out.display().to_string(),
                    // Two of ours may run side by side (the A/A control): a free port each.
                    "--metrics-address".into(),
                    "127.0.0.1:0".into(),
                ];
                if let Some(pid) = self.pid {
                    argv.extend(["--pid".into(), pid.to_string()]);
                }
                if self.tool == Tool::OursFramePointers {
                    argv.push("--no-dwarf-unwinding".into());
                }
                argv
            }
            Tool::Perf => vec![
                "perf".into(),
                "record".into(),
                "-g".into(),
                "-a".into(),
                "-F".into(),
                rate,
                "-q".into(),
                "-o".into(),
                out.join("perf.data").display().to_string(),
            ],
            Tool::Bpftrace => vec!["bpftrace".into(), "-e".into(), bpftrace_program(self.rate)],
        }
    }

    /// The command as the report shows it, with placeholders for temporary paths.
    pub fn shown(&self) -> String {
        let argv = self.argv(Path::new("target/release/profiler"), Path::new("$OUT"));
        argv.iter()
            .map(|arg| {
                if arg.contains(' ') {
                    format!("'{arg}'")
                } else {
                    arg.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The reference bpftrace program of the issue.
pub fn bpftrace_program(rate: u64) -> String {
    format!("profile:hz:{rate} {{ @[kstack, ustack, pid] = count(); }}")
}

/// CPU time and peak memory of a finished process, from `wait4`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu_s: f64,
    pub max_rss_mib: f64,
}

/// A profiler that is sampling; stopped (SIGINT, as Ctrl-C) by [`Running::stop`], killed if
/// dropped.
pub struct Running {
    tool: Tool,
    child: Child,
    log: PathBuf,
    reaped: bool,
}

/// How long a profiler may take to start sampling (bpftrace compiles its program with LLVM).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Time after which a started profiler is past its start-up (our first scan and symbolization
/// of every process, bpftrace's compilation) and runs as it would for days.
pub const SETTLE: Duration = Duration::from_secs(2);

/// How long a profiler may take to flush and exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

impl Running {
    /// Starts `invocation` writing into `dir` (created), and returns once it samples.
    pub fn start(invocation: &Invocation, profiler: &Path, dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let argv = invocation.argv(profiler, dir);
        let log = dir.join("log.txt");
        let stdout = File::create(dir.join("stdout.txt"))?;
        let stderr = File::create(&log)?;
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start `{}`", argv.join(" ")))?;
        let mut running = Self {
            tool: invocation.tool,
            child,
            log,
            reaped: false,
        };
        running.wait_until_sampling(invocation.tool)?;
        Ok(running)
    }

    /// Waits until the profiler is past its start-up (see [`SETTLE`]).
    pub fn settle(&self) {
        thread::sleep(SETTLE);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its standard error goes (our profiler's log).
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// Sampling means: a perf event per online CPU, and for BPF tools a sampling program.
    fn wait_until_sampling(&mut self, tool: Tool) -> Result<()> {
        let pid = self.pid();
        let cpus = crate::online_cpus();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                bail!(
                    "{} exited early ({status}): {}",
                    tool.label(),
                    self.log_tail()
                );
            }
            let events = fdinfo::perf_event_fds(pid) >= cpus;
            let program = !tool.uses_bpf()
                || !fdinfo::programs_of(pid, fdinfo::PROG_TYPE_PERF_EVENT)?.is_empty();
            if events && program {
                // The program attaches to the events just after both exist.
                thread::sleep(Duration::from_millis(300));
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start sampling within {START_TIMEOUT:?}: {}",
                    tool.label(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU seconds (user + system, all threads) the profiler has used so far.
    pub fn cpu_s(&self) -> Result<f64> {
        let stat = procfs::process::Process::new(self.pid() as i32)?.stat()?;
        Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
    }

    /// Run totals of this process's sampling programs.
    pub fn bpf_totals(&self) -> Result<fdinfo::RunTotals> {
        fdinfo::sampling_totals(self.pid())
    }

    /// Interrupts the profiler as Ctrl-C would, waits for it, and returns what it used.
    pub fn stop(mut self) -> Result<Usage> {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: plain syscalls on our own child, which is not reaped yet.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some((status, usage)) = wait4(pid, libc::WNOHANG)? {
                self.reaped = true;
                if !exited_cleanly(status) {
                    bail!(
                        "profiler exited with status {status:#x}: {}",
                        self.log_tail()
                    );
                }
                return Ok(usage);
            }
            if Instant::now() > deadline {
                let threads = thread_states(self.pid());
                bail!(
                    "{} (pid {pid}) did not stop within {STOP_TIMEOUT:?} of SIGINT; threads \
                     (name state wchan): {threads}; {}",
                    self.tool.label(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("last lines of {}: {}", self.log.display(), tail.join(" / "))
    }
}

/// Name, state and wait channel of each thread of `pid`, for a report on a hung process.
fn thread_states(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "unreadable".into();
    };
    let states: Vec<String> = tasks
        .flatten()
        .map(|task| {
            let path = task.path();
            let read = |file: &str| {
                std::fs::read_to_string(path.join(file))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            let state = read("status")
                .lines()
                .find_map(|l| l.strip_prefix("State:").map(|s| s.trim().to_owned()))
                .unwrap_or_default();
            format!("{} {state} {}", read("comm"), read("wchan"))
        })
        .collect();
    states.join(", ")
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Exit 0, or death by the SIGINT we sent (bpftrace and perf may re-raise it).
fn exited_cleanly(status: i32) -> bool {
    let exited = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let interrupted = libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGINT;
    exited || interrupted
}

/// `wait4` for one child: its status and its resource usage once it has ended.
pub fn wait4(pid: libc::pid_t, flags: i32) -> Result<Option<(i32, Usage)>> {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it when it returns the pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals.
    let ret = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    match ret {
        0 => Ok(None),
        r if r == pid => Ok(Some((status, usage_of(&usage)))),
        _ => Err(std::io::Error::last_os_error()).context("wait4 failed"),
    }
}

fn usage_of(usage: &libc::rusage) -> Usage {
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        // ru_maxrss is in KiB on Linux.
        max_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_invocation_holds_the_rate_fixed() {
        let argv = Invocation::new(Tool::Ours, 99)
            .interval(2)
            .argv(Path::new("/p"), Path::new("/out"));
        assert_eq!(
            argv.join(" "),
            "/p record --no-adaptive --frequency 99 --interval 2 --output-dir /out \
             --metrics-address 127.0.0.1:0"
        );
    }

    #[test]
    fn references_are_invoked_as_the_issue_says() {
        let perf = Invocation::new(Tool::Perf, 999).shown();
        assert_eq!(perf, "perf record -g -a -F 999 -q -o $OUT/perf.data");
        let bpftrace = Invocation::new(Tool::Bpftrace, 19).shown();
        assert_eq!(
            bpftrace,
            "bpftrace -e 'profile:hz:19 { @[kstack, ustack, pid] = count(); }'"
        );
    }

    #[test]
    fn stop_reports_cpu_time_of_the_child() {
        let mut child = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let (status, usage) = wait4(child.id() as libc::pid_t, 0).unwrap().unwrap();
        // Reaped already: this only tells std so.
        let _ = child.try_wait();
        assert!(exited_cleanly(status));
        assert!(usage.cpu_s > 0.0, "{usage:?}");
        assert!(usage.max_rss_mib > 0.0, "{usage:?}");
    }
}
