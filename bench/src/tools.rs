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
    /// Ours recording off-CPU time too (`--off-cpu`, default threshold); needs a `--pid`.
    OursOffCpu,
    /// The same, started on the PID of another, idle process: what `--off-cpu` costs the
    /// processes it does not record.
    OursOffCpuElsewhere,
    /// bpftrace running the off-CPU script of [`bpftrace_off_cpu_program`]; needs a PID.
    BpftraceOffCpu,
    /// The kernel-cost floor: this harness run with `--floor` (see `crate::floor`); needs the
    /// harness's path as its program.
    Floor,
    /// profile-bee, the second eBPF peer: whole host, frame pointers (its default), pprof
    /// every 10 s to a file, as ours writes; needs its binary's path as its program.
    ProfileBee,
}

impl Tool {
    pub fn label(self) -> &'static str {
        match self {
            Tool::Ours => "profiler",
            Tool::OursFramePointers => "profiler --no-dwarf-unwinding",
            Tool::Perf => "perf record -g -a",
            Tool::Bpftrace => "bpftrace",
            Tool::OursOffCpu => "profiler --off-cpu",
            Tool::OursOffCpuElsewhere => "profiler --off-cpu, another process",
            Tool::BpftraceOffCpu => "bpftrace, off-CPU script",
            Tool::Floor => "floor (bpf_get_stackid ×2)",
            Tool::ProfileBee => "profile-bee",
        }
    }

    /// What the tool holds once it runs: its attachments to every CPU, and a BPF program of
    /// each of these types (see [`fdinfo`]).
    fn ready_when(self) -> (PerCpu, &'static [u32]) {
        match self {
            Tool::Ours | Tool::OursFramePointers | Tool::Bpftrace | Tool::Floor => {
                (PerCpu::PerfEvents, &[fdinfo::PROG_TYPE_PERF_EVENT])
            }
            // aya 0.13 (profile-bee's fork) attaches through BPF links and closes the events.
            Tool::ProfileBee => (PerCpu::Links, &[fdinfo::PROG_TYPE_PERF_EVENT]),
            Tool::Perf => (PerCpu::PerfEvents, &[]),
            // The sched_switch program is a raw tracepoint, attached before the perf events
            // are opened.
            Tool::OursOffCpu | Tool::OursOffCpuElsewhere => (
                PerCpu::PerfEvents,
                &[
                    fdinfo::PROG_TYPE_PERF_EVENT,
                    fdinfo::PROG_TYPE_RAW_TRACEPOINT,
                ],
            ),
            // One tracepoint, attached through a single perf event.
            Tool::BpftraceOffCpu => (PerCpu::Nothing, &[fdinfo::PROG_TYPE_TRACEPOINT]),
        }
    }
}

/// What a sampling tool holds for each online CPU once it samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PerCpu {
    Nothing,
    /// A perf event descriptor.
    PerfEvents,
    /// A BPF link descriptor (the perf event behind it may be closed).
    Links,
}

impl PerCpu {
    fn held(self, pid: u32, cpus: usize) -> bool {
        match self {
            PerCpu::Nothing => true,
            PerCpu::PerfEvents => fdinfo::perf_event_fds(pid) >= cpus,
            PerCpu::Links => fdinfo::link_fds(pid) >= cpus,
        }
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
    /// The binary of [`Tool::Floor`] and [`Tool::ProfileBee`] (the others are ours, given to
    /// [`Invocation::argv`], or found on PATH).
    pub program: Option<PathBuf>,
}

impl Invocation {
    pub fn new(tool: Tool, rate: u64) -> Self {
        Self {
            tool,
            rate,
            interval: 10,
            pid: None,
            program: None,
        }
    }

    pub fn program(mut self, path: &Path) -> Self {
        self.program = Some(path.to_owned());
        self
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
        let program = |shown: &str| {
            self.program
                .as_deref()
                .map_or(shown.to_owned(), |p| p.display().to_string())
        };
        match self.tool {
            // A fixed rate: the adaptive controller would change it under the benchmark's load.
            Tool::Ours | Tool::OursFramePointers | Tool::OursOffCpu | Tool::OursOffCpuElsewhere => {
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
                if matches!(self.tool, Tool::OursOffCpu | Tool::OursOffCpuElsewhere) {
                    argv.push("--off-cpu".into());
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
            Tool::BpftraceOffCpu => {
                let pid = self.pid.map_or("$PID".into(), |pid| pid.to_string());
                bpftrace_with_tracefs(
                    bpftrace_off_cpu_program(&pid, OFF_CPU_MIN_US),
                    !tracefs_mounted(),
                )
            }
            Tool::Floor => vec![program("profiler-bench"), "--floor".into(), rate],
            // Continuous mode (`--flush-interval`), the one meant to run for days: a pprof
            // file every 10 s, as ours. Frame pointers are its default (`--dwarf` is off).
            Tool::ProfileBee => vec![
                program(PROFILE_BEE_SHOWN),
                "--frequency".into(),
                rate,
                "--flush-interval".into(),
                (self.interval * 1000).to_string(),
                "--output".into(),
                out.join("profile.pb.gz").display().to_string(),
            ],
        }
    }

    /// The command as the report shows it, with placeholders for temporary paths.
    pub fn shown(&self) -> String {
        let placeholders = Self {
            program: None,
            ..self.clone()
        };
        let argv = placeholders.argv(Path::new("target/release/profiler"), Path::new("$OUT"));
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

/// Where `cargo xtask bench` installs profile-bee, as the report shows it.
pub const PROFILE_BEE_SHOWN: &str = "target/bench-tools/profile-bee/bin/probee";

/// The reference bpftrace program of the issue.
pub fn bpftrace_program(rate: u64) -> String {
    format!("profile:hz:{rate} {{ @[kstack, ustack, pid] = count(); }}")
}

/// The default `--off-cpu-min-us` of ours, which the bpftrace off-CPU script applies too.
pub const OFF_CPU_MIN_US: u64 = 1000;

/// bpftrace doing what `--off-cpu --pid` does, the way bcc's `offcputime` does it, on the one
/// scheduler tracepoint (kprobes are not built into every kernel, this one's included): the
/// time a thread of `pid` leaves the CPU, and when a thread with a time noted comes back, the
/// time it was off, summed by stacks and thread when at least `min_us`. Stacks are read only
/// for those, as ours and `offcputime` do; in this tracepoint they are the stacks of the thread
/// leaving, as bpftrace 0.17 cannot read another thread's stack: a cost reference, not a
/// replacement.
pub fn bpftrace_off_cpu_program(pid: &str, min_us: u64) -> String {
    format!(
        "tracepoint:sched:sched_switch {{ if (pid == {pid}) {{ @start[tid] = nsecs; }} \
         $t = args->next_pid; $s = @start[$t]; if ($s != 0) {{ delete(@start[$t]); \
         $d = nsecs - $s; if ($d >= {}) {{ @[kstack, ustack, $t] = sum($d); }} }} }}",
        min_us * 1000
    )
}

/// Where bpftrace reads tracepoints' formats.
const TRACEFS: &str = "/sys/kernel/tracing";

fn tracefs_mounted() -> bool {
    Path::new(TRACEFS).join("events").is_dir()
}

/// bpftrace running `program`; with `mount`, in a mount namespace of its own where tracefs is
/// mounted (bpftrace needs it for tracepoints; the host's mounts stay as they are). The
/// namespace's shell execs bpftrace, which keeps the PID that was started.
fn bpftrace_with_tracefs(program: String, mount: bool) -> Vec<String> {
    let bpftrace = ["bpftrace".to_owned(), "-e".into(), program];
    if !mount {
        return bpftrace.into();
    }
    let mut argv: Vec<String> = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        &format!("mount -t tracefs nodev {TRACEFS} && exec \"$@\""),
        "sh",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.extend(bpftrace);
    argv
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

    /// Sampling means: a perf event (or a BPF link) per online CPU, and for BPF tools a sampling
    /// program (for the off-CPU tools, their tracepoint programs; see [`Tool::ready_when`]).
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
            let (per_cpu, program_types) = tool.ready_when();
            let events = per_cpu.held(pid, cpus);
            let held = fdinfo::all_programs_of(pid)?;
            let programs = program_types
                .iter()
                .all(|&kind| held.iter().any(|p| p.prog_type == kind));
            if events && programs {
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

    /// Statistics of every BPF program this process holds.
    pub fn bpf_programs(&self) -> Result<Vec<fdinfo::ProgStats>> {
        fdinfo::all_programs_of(self.pid())
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

    /// Ends the tool at once (SIGKILL), for a part that has read all it needs: its programs
    /// and events go with its descriptors.
    pub fn kill(self) {
        // Drop kills and reaps an unreaped child.
        drop(self);
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
    fn peers_run_their_own_binaries() {
        let floor = Invocation::new(Tool::Floor, 99).program(Path::new("/h/profiler-bench"));
        assert_eq!(
            floor.argv(Path::new("/p"), Path::new("/out")),
            ["/h/profiler-bench", "--floor", "99"]
        );
        assert_eq!(floor.shown(), "profiler-bench --floor 99");
        let bee = Invocation::new(Tool::ProfileBee, 99).program(Path::new("/t/probee"));
        assert_eq!(
            bee.argv(Path::new("/p"), Path::new("/out")).join(" "),
            "/t/probee --frequency 99 --flush-interval 10000 --output /out/profile.pb.gz"
        );
        assert_eq!(
            bee.shown(),
            "target/bench-tools/profile-bee/bin/probee --frequency 99 --flush-interval 10000 \
             --output $OUT/profile.pb.gz"
        );
    }

    #[test]
    fn off_cpu_invocations() {
        let ours = Invocation::new(Tool::OursOffCpu, 19)
            .pid(42)
            .argv(Path::new("/p"), Path::new("/out"));
        assert!(ours.join(" ").ends_with("--pid 42 --off-cpu"), "{ours:?}");
        let program = bpftrace_off_cpu_program("42", OFF_CPU_MIN_US);
        assert!(program.starts_with("tracepoint:sched:sched_switch { if (pid == 42) "));
        assert!(program.contains("if ($d >= 1000000) { @[kstack, ustack, $t] = sum($d); }"));
        let plain = bpftrace_with_tracefs(program.clone(), false);
        assert_eq!(plain, ["bpftrace", "-e", program.as_str()]);
        let wrapped = bpftrace_with_tracefs(program.clone(), true);
        assert_eq!(
            wrapped[..6],
            [
                "unshare",
                "--mount",
                "sh",
                "-c",
                "mount -t tracefs nodev /sys/kernel/tracing && exec \"$@\"",
                "sh"
            ]
        );
        assert_eq!(wrapped[6..], plain[..]);
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
