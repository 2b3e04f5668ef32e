//! Processes the benchmarks profile: spinning workers, a fixed amount of work to time, and a
//! background of many small processes that come and go.

use std::{
    io::{BufRead, BufReader, Lines, Write as _},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

/// Children killed when dropped.
#[derive(Default)]
pub struct Workers(Vec<Child>);

impl Workers {
    /// Takes `child` in, to be killed with the rest.
    pub fn push(&mut self, child: Child) {
        self.0.push(child);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(bin: &Path, args: &[String]) -> Result<Child> {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// `count` workers started with `args` (`frames 0`: spinning `frames` deep), until dropped.
pub fn spin(bin: &Path, args: &[String], count: usize) -> Result<Workers> {
    let children = (0..count)
        .map(|_| spawn(bin, args))
        .collect::<Result<_>>()?;
    Ok(Workers(children))
}

/// A fixture that announces each phase of its work on a line of its own once told to begin;
/// killed when dropped.
pub struct Phases {
    lines: Lines<BufReader<ChildStdout>>,
    stdin: Option<ChildStdin>,
    pub pid: u32,
    _child: Workers,
}

/// Starts `bin` with `args`, reading its phases.
pub fn phases(bin: &Path, args: &[String]) -> Result<Phases> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stdin = child.stdin.take();
    Ok(Phases {
        lines: BufReader::new(stdout).lines(),
        stdin,
        pid: child.id(),
        _child: Workers(vec![child]),
    })
}

impl Phases {
    /// Tells the fixture to begin its phases (it works in its first one until then).
    pub fn begin(&mut self) -> Result<()> {
        let mut stdin = self.stdin.take().context("begun already")?;
        stdin
            .write_all(b"begin\n")
            .context("cannot tell the fixture to begin")
    }

    /// The next phase's name, once it begins.
    pub fn next(&mut self) -> Result<String> {
        self.lines
            .next()
            .context("the fixture ended")?
            .context("cannot read the fixture's output")
    }
}

/// Runs `count` workers of `rounds` each, in parallel; the wall time until the last one ends.
pub fn timed(bin: &Path, frames: u32, rounds: u64, count: usize) -> Result<Duration> {
    let args = [frames.to_string(), rounds.to_string()];
    let start = Instant::now();
    let mut workers = Workers(
        (0..count)
            .map(|_| spawn(bin, &args))
            .collect::<Result<_>>()?,
    );
    for child in &mut workers.0 {
        let status = child.wait()?;
        ensure!(status.success(), "workload failed: {status}");
    }
    let elapsed = start.elapsed();
    workers.0.clear();
    Ok(elapsed)
}

/// Rounds per worker for which `count` parallel workers take about `target`.
pub fn calibrate(bin: &Path, frames: u32, count: usize, target: Duration) -> Result<u64> {
    const PROBE: u64 = 200_000_000;
    let took = timed(bin, frames, PROBE, count)?;
    let scale = target.as_secs_f64() / took.as_secs_f64().max(1e-3);
    Ok(((PROBE as f64) * scale).max(1.0) as u64)
}

/// Long-lived duty-cycle processes at many stack depths, plus short-lived ones started ten
/// times a second: the process churn of a busy node. The churn runs in a shell of its own, so
/// that this harness sleeps while the profilers watch.
pub struct Background {
    _steady: Workers,
    _churn: Workers,
}

/// Busy milliseconds out of each period of a steady process.
const DUTY_BUSY_MS: u32 = 1;
const DUTY_PERIOD_MS: u32 = 40;
/// Short-lived processes per second (at most: each runs before the next starts), and the work
/// of each (about 20 ms of CPU).
const CHURN_PER_SECOND: u32 = 10;
const CHURN_ROUNDS: u64 = 10_000_000;

impl Background {
    pub fn start(bin: &Path, steady: usize) -> Result<Self> {
        let children = (0..steady)
            .map(|i| {
                let frames = 8 + (i as u32 % 24) * 4;
                let args = [
                    frames.to_string(),
                    "duty".into(),
                    DUTY_BUSY_MS.to_string(),
                    DUTY_PERIOD_MS.to_string(),
                ];
                spawn(bin, &args)
            })
            .collect::<Result<_>>()?;
        let steady = Workers(children);
        let script = format!(
            "while :; do \"$0\" 12 {CHURN_ROUNDS}; sleep {}; done",
            1.0 / f64::from(CHURN_PER_SECOND)
        );
        let churn = Command::new("sh")
            .args(["-c", &script])
            .arg(bin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start the churn loop")?;
        Ok(Self {
            _steady: steady,
            _churn: Workers(vec![churn]),
        })
    }

    /// Processes per second the background starts, at most.
    pub fn churn_rate() -> u32 {
        CHURN_PER_SECOND
    }

    pub fn describe(steady: usize) -> String {
        format!(
            "{steady} long-lived processes at stack depths 8 to 100, each busy {DUTY_BUSY_MS} ms \
             of every {DUTY_PERIOD_MS} ms, and a shell loop starting up to {CHURN_PER_SECOND} \
             short-lived processes a second (about 20 ms of CPU each)"
        )
    }
}
