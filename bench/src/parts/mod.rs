//! The measurements, each a function from the run's context to a report section and the
//! targets it checks: the five of the first benchmark issue, and the off-CPU one of issue 16.

pub mod cost_goal;
mod external;
pub mod footprint;
pub mod kernel_cost;
pub mod off_cpu;
pub mod output;
pub mod slowdown;
pub mod symbolization;
mod unwind_memory;

use std::{
    cell::OnceCell,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use anyhow::Result;
use clap::ValueEnum;

use crate::{
    fixtures::Fixtures,
    plan::Plan,
    report::{Section, Target},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Part {
    KernelCost,
    Slowdown,
    Footprint,
    Symbolization,
    Output,
    /// Off-CPU recording: a context-switch-heavy workload's slowdown, the cost per switch.
    OffCpu,
}

impl Part {
    /// In report order (the last came last, so that the earlier sections keep their numbers).
    pub const ALL: [Part; 6] = [
        Part::KernelCost,
        Part::Slowdown,
        Part::Footprint,
        Part::Symbolization,
        Part::Output,
        Part::OffCpu,
    ];

    /// Loading BPF, perf events of every CPU and the BPF statistics sysctl need root.
    pub fn needs_root(self) -> bool {
        matches!(
            self,
            Part::KernelCost | Part::Slowdown | Part::Footprint | Part::OffCpu
        )
    }

    /// Whether the part runs profile-bee, the second eBPF peer (issue 18).
    pub fn runs_profile_bee(self) -> bool {
        matches!(self, Part::KernelCost | Part::Footprint)
    }

    /// Programs the part runs besides ours.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Part::KernelCost => &["bpftrace", "gcc"],
            Part::Slowdown => &["perf", "bpftrace", "gcc"],
            Part::Footprint => &["perf", "gcc"],
            Part::Symbolization => &["addr2line", "llvm-symbolizer-22"],
            Part::Output => &[],
            // unshare and mount give bpftrace a tracefs of its own where the host has none.
            Part::OffCpu => &["bpftrace", "gcc", "unshare", "mount"],
        }
    }

    pub fn run(self, bench: &Bench) -> Result<PartResult> {
        match self {
            Part::KernelCost => kernel_cost::run(bench),
            Part::Slowdown => slowdown::run(bench),
            Part::Footprint => footprint::run(bench),
            Part::Symbolization => symbolization::run(bench),
            Part::Output => output::run(bench),
            Part::OffCpu => off_cpu::run(bench),
        }
    }
}

pub struct PartResult {
    pub section: Section,
    pub targets: Vec<Target>,
}

/// What every part may use.
pub struct Bench {
    pub plan: Plan,
    pub profiler: PathBuf,
    /// profile-bee's `probee` binary.
    pub profile_bee: PathBuf,
    /// This harness's own binary, which the kernel-cost part starts as its floor tool.
    pub harness: PathBuf,
    pub symbols_binary: PathBuf,
    pub cpus: usize,
    /// Scratch space, removed at the end.
    pub dir: PathBuf,
    fixtures: OnceCell<Fixtures>,
    scratch_count: AtomicUsize,
    started: Instant,
}

impl Bench {
    pub fn new(
        plan: Plan,
        profiler: PathBuf,
        profile_bee: PathBuf,
        harness: PathBuf,
        symbols_binary: PathBuf,
        dir: &Path,
    ) -> Self {
        Self {
            plan,
            profiler,
            profile_bee,
            harness,
            symbols_binary,
            cpus: crate::online_cpus(),
            dir: dir.to_owned(),
            fixtures: OnceCell::new(),
            scratch_count: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    /// The C fixtures, compiled on first use.
    pub fn fixtures(&self) -> Result<&Fixtures> {
        if let Some(fixtures) = self.fixtures.get() {
            return Ok(fixtures);
        }
        let built = Fixtures::build(&self.dir.join("fixtures"))?;
        Ok(self.fixtures.get_or_init(|| built))
    }

    /// A fresh directory name under the scratch space (not created).
    pub fn scratch(&self, what: &str) -> PathBuf {
        let n = self.scratch_count.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{what}-{n}"))
    }

    pub fn progress(&self, what: &str) {
        println!("[{:>5.0} s] {what}", self.started.elapsed().as_secs_f64());
    }
}

/// `items` rotated left by `round`: each variant takes each position in turn across rounds, so
/// that drift on the machine does not favour whichever runs first.
pub fn rotated<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut out = items.to_vec();
    if !out.is_empty() {
        let len = out.len();
        out.rotate_left(round % len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_moves_every_variant_through_every_position() {
        assert_eq!(rotated(&[1, 2, 3], 0), [1, 2, 3]);
        assert_eq!(rotated(&[1, 2, 3], 1), [2, 3, 1]);
        assert_eq!(rotated(&[1, 2, 3], 4), [2, 3, 1]);
        assert!(rotated::<u8>(&[], 3).is_empty());
    }

    #[test]
    fn only_the_sampling_parts_need_root() {
        let root: Vec<Part> = Part::ALL.into_iter().filter(|p| p.needs_root()).collect();
        assert_eq!(
            root,
            [
                Part::KernelCost,
                Part::Slowdown,
                Part::Footprint,
                Part::OffCpu
            ]
        );
    }
}
