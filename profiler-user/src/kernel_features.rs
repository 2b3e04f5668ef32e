//! What the running kernel offers the profiler's optional parts, decided from its BTF before the
//! BPF program is loaded, so that a kernel without a feature gets a program that does not use
//! it (the verifier never sees a branch that the read-only config turns off) and one line that
//! says what is off and which kernel has it, never a verifier log.
//!
//! The kernel matrix (`cargo xtask kernels`) boots every kernel this decides for; the unit
//! tests below run the detection on those kernels' BTF.

use std::fmt;

use profiler_common::CgroupOffsets;

use crate::tracectx::kernel_btf::{self, KernelBtf};

/// How the BPF program finds the cgroups a task is in, for `--cgroup` and `--container`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupRead {
    /// `bpf_get_current_ancestor_cgroup_id`, which perf_event programs may call from Linux 5.11.
    Helper,
    /// Linux 5.10 refuses that helper to perf_event programs ("unknown func"), but keeps the
    /// same IDs in `cgroup.ancestor_ids[]` (5.5 to 5.19), read through the task's `css_set`.
    AncestorIds(CgroupOffsets),
}

/// A part of the profiler this kernel cannot run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// What is off, as the user knows it.
    pub feature: &'static str,
    /// What the kernel lacks.
    pub lacks: String,
    /// The first kernel that has it.
    pub since: &'static str,
}

impl fmt::Display for Missing {
    /// The one line the recorder logs; `cargo xtask kernels` counts lines with `degraded:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "degraded: {} off: this kernel lacks {} (Linux {} has it)",
            self.feature, self.lacks, self.since
        )
    }
}

/// The decisions for one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFeatures {
    /// `None`: no way to filter by cgroup (`--cgroup` and `--container` are refused).
    pub cgroup_read: Option<CgroupRead>,
    /// Offset of the user thread pointer in `task_struct`, or why trace contexts are off.
    pub thread_pointer: Result<u32, Missing>,
    /// `bpf_task_pt_regs` and `bpf_get_current_task_btf` (Linux 5.15): a Go sample taken in the
    /// kernel finds the user stack pointer its labels are checked against; without them such a
    /// sample has no labels (its goroutine cannot be told from the one the scheduler switches
    /// to).
    pub task_pt_regs: bool,
    /// `sched_switch` passes the leaving task's state (Linux 5.18): the off-CPU switch program
    /// reads it there instead of from the task.
    pub switch_prev_state: bool,
}

impl KernelFeatures {
    pub fn detect(btf: &KernelBtf) -> Self {
        Self {
            cgroup_read: cgroup_read(btf),
            thread_pointer: thread_pointer(btf),
            task_pt_regs: btf.has_enum_value("bpf_func_id", "BPF_FUNC_task_pt_regs")
                && btf.has_enum_value("bpf_func_id", "BPF_FUNC_get_current_task_btf"),
            switch_prev_state: btf.switch_has_prev_state(),
        }
    }

    /// What is off on this kernel, one line each.
    pub fn missing(&self) -> impl Iterator<Item = &Missing> {
        self.thread_pointer.as_ref().err().into_iter()
    }
}

/// Every kernel that lacks `ancestor_ids` (all from 6.0, where it became `ancestors[]`) is past
/// 5.11 and may call the helper; every kernel that has it may be read through it, whether or not
/// it also allows the helper (5.11 to 5.19): the choice needs no guess at the version.
fn cgroup_read(btf: &KernelBtf) -> Option<CgroupRead> {
    if let Some(offsets) = btf.cgroup_ancestor_ids() {
        return Some(CgroupRead::AncestorIds(offsets));
    }
    btf.has_enum_value("bpf_func_id", "BPF_FUNC_get_current_ancestor_cgroup_id")
        .then_some(CgroupRead::Helper)
}

fn thread_pointer(btf: &KernelBtf) -> Result<u32, Missing> {
    // Trace contexts live in user memory, read from a perf_event program.
    if !btf.has_enum_value("bpf_func_id", "BPF_FUNC_probe_read_user") {
        return Err(Missing {
            feature: "trace contexts",
            lacks: "the helper bpf_probe_read_user".to_owned(),
            since: "5.5",
        });
    }
    btf.thread_pointer_offset().map_err(|err| match err {
        kernel_btf::KernelBtfError::UnsupportedArch => Missing {
            feature: "trace contexts",
            lacks: "a thread pointer the profiler knows on this architecture".to_owned(),
            since: "5.10 on x86_64 or aarch64",
        },
        other => Missing {
            feature: "trace contexts",
            lacks: format!("the task's thread pointer in its BTF ({other})"),
            since: "5.10",
        },
    })
}

#[cfg(test)]
mod tests;
