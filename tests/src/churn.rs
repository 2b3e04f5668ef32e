//! The fixtures of the reliability tests, and a launcher that starts many short-lived processes.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// C fixture, built -O1: main -> churn_hot_fn, which spins for argv[1] ms (default 20) of wall
/// time (of CPU time with `cpu` as argv[2]), then the process exits.
pub const CHURN_C: &str = env!("FIXTURE_CHURN");
/// The hot function of [`CHURN_C`].
pub const CHURN_HOT_FN: &str = "churn_hot_fn";
/// C fixture whose samples almost all have distinct deep stacks: main -> stacks_walk -> 64 to
/// 118 calls through stacks_a .. stacks_d -> stacks_leaf. Runs until killed, or argv[1] seconds.
pub const STACKS_C: &str = env!("FIXTURE_STACKS");
/// The leaf of [`STACKS_C`].
pub const STACKS_LEAF: &str = "stacks_leaf";

/// The kernel's `comm` of a process running the executable at `path`: its name cut to 15 bytes.
pub fn comm_of(path: &str) -> String {
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.chars().take(15).collect()
}

/// What [`churn`] did.
#[derive(Debug)]
pub struct Churn {
    /// Processes that ran and exited 0.
    pub succeeded: usize,
    /// Processes that could not start or did not exit 0.
    pub failed: usize,
    /// From the first start to the last exit.
    pub elapsed: Duration,
    /// The latest any start came after its planned time.
    pub max_lateness: Duration,
}

/// Runs `count` processes of `path args`, one after another on each of `launchers` threads,
/// their starts spread evenly over `over`: a launcher waits for the next planned start, starts
/// the process and waits for it to exit; one that falls behind starts the next at once.
pub fn churn(
    path: &str,
    args: &[&str],
    count: usize,
    over: Duration,
    launchers: usize,
) -> Result<Churn> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results = thread::scope(|scope| {
        let handles: Vec<_> = (0..launchers)
            .map(|n| {
                let next = &next;
                thread::Builder::new()
                    .name(format!("churn-launcher-{n}"))
                    .spawn_scoped(scope, move || {
                        let (mut succeeded, mut failed) = (0, 0);
                        let mut max_lateness = Duration::ZERO;
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= count {
                                break;
                            }
                            let due = started + over.mul_f64(i as f64 / count as f64);
                            let now = Instant::now();
                            if now < due {
                                thread::sleep(due - now);
                            } else {
                                max_lateness = max_lateness.max(now - due);
                            }
                            let status = Command::new(path)
                                .args(args)
                                .stdin(Stdio::null())
                                .stdout(Stdio::null())
                                .stderr(Stdio::null())
                                .status();
                            match status {
                                Ok(s) if s.success() => succeeded += 1,
                                _ => failed += 1,
                            }
                        }
                        (succeeded, failed, max_lateness)
                    })
            })
            .collect::<std::io::Result<_>>()
            .context("spawning launcher threads")?;
        let mut total = (0, 0, Duration::ZERO);
        for handle in handles {
            let (succeeded, failed, lateness) = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a launcher panicked"))?;
            total = (total.0 + succeeded, total.1 + failed, total.2.max(lateness));
        }
        anyhow::Ok(total)
    })?;
    Ok(Churn {
        succeeded: results.0,
        failed: results.1,
        elapsed: started.elapsed(),
        max_lateness: results.2,
    })
}
