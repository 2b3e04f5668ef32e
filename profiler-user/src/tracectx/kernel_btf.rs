//! Where the kernel keeps a task's user thread pointer, its process's identity and its thread
//! group's live count, from the kernel's BTF: aya emits no CO-RE relocations, so the BPF program
//! gets these offsets as configuration.

use btf_rs::{Btf, Type};
use profiler_common::{CgroupOffsets, TaskOffsets};

#[derive(Debug, thiserror::Error)]
pub enum KernelBtfError {
    #[error("cannot read kernel BTF at {path}")]
    Read {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no member {0} in task_struct")]
    NoMember(String),
    #[error("kernel BTF has no member {0}: this kernel is older than the profiler supports (5.10)")]
    NoIdentity(String),
    #[error("trace context reading is not supported on this architecture")]
    UnsupportedArch,
}

/// Member path of the user thread pointer inside `task_struct` on this architecture.
fn thread_pointer_path() -> Result<&'static [&'static str], KernelBtfError> {
    if cfg!(target_arch = "x86_64") {
        Ok(&["thread", "fsbase"])
    } else if cfg!(target_arch = "aarch64") {
        Ok(&["thread", "uw", "tp_value"])
    } else {
        Err(KernelBtfError::UnsupportedArch)
    }
}

/// Offset of glibc's DTV pointer from the thread pointer: x86_64 `tcbhead_t { tcb, dtv, ... }`,
/// aarch64 `tcbhead_t { dtv, ... }` at the thread pointer.
pub fn tcb_dtv_offset() -> u32 {
    if cfg!(target_arch = "x86_64") { 8 } else { 0 }
}

/// The kernel's type information, read once at start-up (parsing it takes a while).
pub struct KernelBtf(Btf);

impl KernelBtf {
    pub fn read(btf_path: &str) -> Result<Self, KernelBtfError> {
        Btf::from_file(btf_path)
            .map(Self)
            .map_err(|source| KernelBtfError::Read {
                path: btf_path.to_owned(),
                source,
            })
    }

    /// BTF in memory: the unit tests' patched fixtures.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KernelBtfError> {
        Btf::from_bytes(bytes)
            .map(Self)
            .map_err(|source| KernelBtfError::Read {
                path: "(bytes)".to_owned(),
                source,
            })
    }

    /// Whether the enum `name` has the value `value` (such as `BPF_FUNC_probe_read_user` in
    /// `bpf_func_id`: the helpers this kernel knows).
    pub fn has_enum_value(&self, name: &str, value: &str) -> bool {
        let Ok(types) = self.0.resolve_types_by_name(name) else {
            return false;
        };
        types.iter().any(|ty| match ty {
            Type::Enum(e) => e
                .members
                .iter()
                .any(|m| self.0.resolve_name(m).ok().as_deref() == Some(value)),
            _ => false,
        })
    }

    /// Where a task's cgroup v2 ancestors' IDs are, in kernels that keep them in
    /// `cgroup.ancestor_ids[]` (u64 IDs: Linux 5.5 to 5.19); `None` in others.
    pub fn cgroup_ancestor_ids(&self) -> Option<CgroupOffsets> {
        let (ancestor_ids, ty) = member(&self.0, "cgroup", &["ancestor_ids"])?;
        let Type::Array(array) = skip_typedefs(&self.0, ty)? else {
            return None;
        };
        let element = skip_typedefs(&self.0, self.0.resolve_chained_type(&array).ok()?)?;
        if !matches!(element, Type::Int(int) if int.size() == 8) {
            return None;
        }
        Some(CgroupOffsets {
            task_cgroups: member_offset(&self.0, "task_struct", &["cgroups"])?,
            css_set_dfl_cgrp: member_offset(&self.0, "css_set", &["dfl_cgrp"])?,
            cgroup_level: member_offset(&self.0, "cgroup", &["level"])?,
            cgroup_ancestor_ids: ancestor_ids,
        })
    }

    /// Byte offset of the user thread pointer in `task_struct`.
    pub fn thread_pointer_offset(&self) -> Result<u32, KernelBtfError> {
        let path = thread_pointer_path()?;
        member_offset(&self.0, "task_struct", path)
            .ok_or_else(|| KernelBtfError::NoMember(path.join(".")))
    }

    /// Offsets of the fields that give a process image its generation and tell when its thread
    /// group is gone.
    pub fn task_offsets(&self) -> Result<TaskOffsets, KernelBtfError> {
        let find = |structure: &str, path: &[&str]| {
            member_offset(&self.0, structure, path).ok_or_else(|| {
                KernelBtfError::NoIdentity(format!("{structure}.{}", path.join(".")))
            })
        };
        Ok(TaskOffsets {
            group_leader: find("task_struct", &["group_leader"])?,
            start_boottime: find("task_struct", &["start_boottime"])?,
            self_exec_id: find("task_struct", &["self_exec_id"])?,
            signal: find("task_struct", &["signal"])?,
            signal_live: find("signal_struct", &["live", "counter"])?,
            pid: find("task_struct", &["pid"])?,
            flags: find("task_struct", &["flags"])?,
            state: find("task_struct", &["__state"])
                .or_else(|_| find("task_struct", &["state"]))?,
        })
    }
}

impl KernelBtf {
    /// Whether the `sched_switch` tracepoint passes the leaving task's state as its fourth
    /// argument (Linux 5.18 and later): its BTF typedef `btf_trace_sched_switch` points to a
    /// prototype of the context and four arguments.
    pub fn switch_has_prev_state(&self) -> bool {
        let Ok(types) = self.0.resolve_types_by_name("btf_trace_sched_switch") else {
            return false;
        };
        types.into_iter().any(|ty| {
            let Type::Typedef(typedef) = ty else {
                return false;
            };
            let Ok(Type::Ptr(ptr)) = self.0.resolve_chained_type(&typedef) else {
                return false;
            };
            matches!(self.0.resolve_chained_type(&ptr), Ok(Type::FuncProto(f)) if f.parameters.len() == 5)
        })
    }
}

/// Offset in bytes of a nested member, following named members (and typedefs) of structs.
fn member_offset(btf: &Btf, structure: &str, path: &[&str]) -> Option<u32> {
    member(btf, structure, path).map(|(offset, _)| offset)
}

/// Offset in bytes and type of a nested member.
fn member(btf: &Btf, structure: &str, path: &[&str]) -> Option<(u32, Type)> {
    let mut current = btf
        .resolve_types_by_name(structure)
        .ok()?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))?;
    let mut offset_bits = 0u32;
    for name in path {
        let Type::Struct(s) = skip_typedefs(btf, current)? else {
            return None;
        };
        let member = s
            .members
            .iter()
            .find(|m| btf.resolve_name(*m).ok().as_deref() == Some(name))?;
        offset_bits += member.bit_offset();
        current = btf.resolve_chained_type(member).ok()?;
    }
    Some((offset_bits / 8, current))
}

fn skip_typedefs(btf: &Btf, mut ty: Type) -> Option<Type> {
    for _ in 0..16 {
        match &ty {
            Type::Typedef(t) => ty = btf.resolve_chained_type(t).ok()?,
            Type::Const(t) => ty = btf.resolve_chained_type(t).ok()?,
            Type::Volatile(t) => ty = btf.resolve_chained_type(t).ok()?,
            _ => return Some(ty),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// This kernel's BTF; `None` (a skip, said past the harness's capture) without it, which
    /// CI's kernel has (README: Requirements).
    fn this_kernel() -> Option<KernelBtf> {
        let path = "/sys/kernel/btf/vmlinux";
        if !std::path::Path::new(path).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no kernel BTF at {path} (CI=true: a skipped test in CI is a failure)"
            );
            let _ = writeln!(std::io::stderr(), "skipped: no kernel BTF at {path}");
            return None;
        }
        Some(KernelBtf::read(path).unwrap())
    }

    #[test]
    fn finds_the_thread_pointer_in_this_kernel() {
        let Some(btf) = this_kernel() else { return };
        let offset = btf.thread_pointer_offset().unwrap();
        // task_struct is several KiB; the thread struct sits at its end.
        assert!(offset > 1000 && offset.is_multiple_of(8), "offset {offset}");
    }

    #[test]
    fn finds_the_process_identity_in_this_kernel() {
        let Some(btf) = this_kernel() else { return };
        let offsets = btf.task_offsets().unwrap();
        for offset in [
            offsets.group_leader,
            offsets.start_boottime,
            offsets.self_exec_id,
            offsets.signal,
        ] {
            assert!(offset > 0 && offset.is_multiple_of(8), "{offsets:?}");
        }
        // `live` follows the refcount at the start of signal_struct.
        assert!(
            offsets.signal_live >= 4 && offsets.signal_live < 64,
            "{offsets:?}"
        );
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let Err(err) = KernelBtf::read("/nonexistent/vmlinux") else {
            panic!("read a missing file");
        };
        assert!(err.to_string().contains("/nonexistent/vmlinux"));
    }
}
