//! Where the kernel keeps a task's user thread pointer, its process's identity and its thread
//! group's live count, from the kernel's BTF: aya emits no CO-RE relocations, so the BPF program
//! gets these offsets as configuration.

use std::{
    cell::RefCell,
    collections::HashMap,
    fs::File,
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd},
};

use btf_rs::{Backend, Btf, Type};
use profiler_common::{CgroupOffsets, TaskOffsets};

#[derive(Debug, thiserror::Error)]
pub enum KernelBtfError {
    #[error("cannot read kernel BTF at {path}")]
    Read {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("cannot read kernel BTF at {path}")]
    Copy {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel BTF at {path} is over {max_bytes} bytes: is it a BTF file?")]
    TooLarge { path: String, max_bytes: u64 },
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

/// The most kernel BTF read: vmlinux's is 5-6 MiB, with every option built in.
const MAX_BTF_BYTES: u64 = 64 << 20;

/// The kernel's type information, read once at start-up: mapped, and read only where a lookup
/// goes (btf_rs's `Backend::Mmap`). btf_rs's default parses every type of vmlinux first, 0.2 s
/// of CPU at each start for a dozen lookups; mapped, the file is indexed in about 1 ms and each
/// lookup by name scans the types (about 1 ms), hence `types`.
pub struct KernelBtf {
    btf: Btf,
    /// Types by name, as looked up so far: `task_struct` alone is asked for nine times.
    types: RefCell<HashMap<String, Vec<Type>>>,
}

impl KernelBtf {
    pub fn read(btf_path: &str) -> Result<Self, KernelBtfError> {
        // sysfs maps vmlinux's BTF from Linux 6.16; before, a copy in memory is mapped.
        let btf = match Btf::from_file_with_backend(btf_path, Backend::Mmap) {
            Ok(btf) => btf,
            Err(_) => mapped_copy(btf_path, MAX_BTF_BYTES)?,
        };
        Ok(Self::new(btf))
    }

    /// BTF in memory: the unit tests' patched fixtures.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KernelBtfError> {
        Btf::from_bytes(bytes)
            .map(Self::new)
            .map_err(|source| KernelBtfError::Read {
                path: "(bytes)".to_owned(),
                source,
            })
    }

    fn new(btf: Btf) -> Self {
        Self {
            btf,
            types: RefCell::default(),
        }
    }

    /// The types named `name`.
    fn types_named(&self, name: &str) -> Vec<Type> {
        if let Some(types) = self.types.borrow().get(name) {
            return types.clone();
        }
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        self.types
            .borrow_mut()
            .insert(name.to_owned(), types.clone());
        types
    }

    /// Whether the enum `name` has the value `value` (such as `BPF_FUNC_probe_read_user` in
    /// `bpf_func_id`: the helpers this kernel knows).
    pub fn has_enum_value(&self, name: &str, value: &str) -> bool {
        self.types_named(name).iter().any(|ty| match ty {
            Type::Enum(e) => e
                .members
                .iter()
                .any(|m| self.btf.resolve_name(m).ok().as_deref() == Some(value)),
            _ => false,
        })
    }

    /// Where a task's cgroup v2 ancestors' IDs are, in kernels that keep them in
    /// `cgroup.ancestor_ids[]` (u64 IDs: Linux 5.5 to 5.19); `None` in others.
    pub fn cgroup_ancestor_ids(&self) -> Option<CgroupOffsets> {
        let (ancestor_ids, ty) = member(self, "cgroup", &["ancestor_ids"])?;
        let Type::Array(array) = skip_typedefs(&self.btf, ty)? else {
            return None;
        };
        let element = skip_typedefs(&self.btf, self.btf.resolve_chained_type(&array).ok()?)?;
        if !matches!(element, Type::Int(int) if int.size() == 8) {
            return None;
        }
        Some(CgroupOffsets {
            task_cgroups: member_offset(self, "task_struct", &["cgroups"])?,
            css_set_dfl_cgrp: member_offset(self, "css_set", &["dfl_cgrp"])?,
            cgroup_level: member_offset(self, "cgroup", &["level"])?,
            cgroup_ancestor_ids: ancestor_ids,
        })
    }

    /// Byte offset of the user thread pointer in `task_struct`.
    pub fn thread_pointer_offset(&self) -> Result<u32, KernelBtfError> {
        let path = thread_pointer_path()?;
        member_offset(self, "task_struct", path)
            .ok_or_else(|| KernelBtfError::NoMember(path.join(".")))
    }

    /// Offsets of the fields that give a process image its generation and tell when its thread
    /// group is gone.
    pub fn task_offsets(&self) -> Result<TaskOffsets, KernelBtfError> {
        let find = |structure: &str, path: &[&str]| {
            member_offset(self, structure, path).ok_or_else(|| {
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
        let types = self.types_named("btf_trace_sched_switch");
        types.into_iter().any(|ty| {
            let Type::Typedef(typedef) = ty else {
                return false;
            };
            let Ok(Type::Ptr(ptr)) = self.btf.resolve_chained_type(&typedef) else {
                return false;
            };
            matches!(self.btf.resolve_chained_type(&ptr), Ok(Type::FuncProto(f)) if f.parameters.len() == 5)
        })
    }
}

/// Offset in bytes of a nested member, following named members (and typedefs) of structs.
fn member_offset(kernel: &KernelBtf, structure: &str, path: &[&str]) -> Option<u32> {
    member(kernel, structure, path).map(|(offset, _)| offset)
}

/// Offset in bytes and type of a nested member.
fn member(kernel: &KernelBtf, structure: &str, path: &[&str]) -> Option<(u32, Type)> {
    let btf = &kernel.btf;
    let mut current = kernel
        .types_named(structure)
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

/// `path` copied into an anonymous memory file and mapped from there: for kernels whose sysfs
/// cannot map it. At most `max_bytes` are read.
fn mapped_copy(path: &str, max_bytes: u64) -> Result<Btf, KernelBtfError> {
    let copy_error = |source| KernelBtfError::Copy {
        path: path.to_owned(),
        source,
    };
    let mut copy = memory_file().map_err(copy_error)?;
    let source = File::open(path).map_err(copy_error)?;
    let copied = std::io::copy(&mut source.take(max_bytes + 1), &mut copy)
        .and_then(|copied| copy.flush().map(|()| copied))
        .map_err(copy_error)?;
    if copied > max_bytes {
        return Err(KernelBtfError::TooLarge {
            path: path.to_owned(),
            max_bytes,
        });
    }
    let mapped = format!("/proc/self/fd/{}", copy.as_raw_fd());
    // The mapping keeps the memory file: `copy` is closed on return.
    Btf::from_file_with_backend(&mapped, Backend::Mmap).map_err(|source| KernelBtfError::Read {
        path: path.to_owned(),
        source,
    })
}

/// An anonymous file in memory, closed on exec (Linux 3.17+).
fn memory_file() -> std::io::Result<File> {
    // SAFETY: a plain syscall with a NUL-terminated name; the descriptor is checked and then
    // owned by the `File` alone.
    let fd = unsafe { libc::memfd_create(c"kernel-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created and owned by no one else.
    Ok(unsafe { File::from_raw_fd(fd) })
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

    /// The three ways to read it agree: mapped from sysfs (Linux 6.16+), mapped from a copy
    /// (older kernels), parsed whole (btf_rs's default, the oracle).
    #[test]
    fn mapped_and_copied_btf_read_as_the_whole_parse_does() {
        let Some(mapped) = this_kernel() else { return };
        let path = "/sys/kernel/btf/vmlinux";
        let copied = KernelBtf::new(mapped_copy(path, MAX_BTF_BYTES).unwrap());
        let parsed = KernelBtf::new(Btf::from_file(path).unwrap());
        for btf in [&mapped, &copied] {
            assert_eq!(btf.task_offsets().unwrap(), parsed.task_offsets().unwrap());
            assert_eq!(
                btf.thread_pointer_offset().unwrap(),
                parsed.thread_pointer_offset().unwrap()
            );
            assert_eq!(btf.switch_has_prev_state(), parsed.switch_has_prev_state());
            assert_eq!(btf.cgroup_ancestor_ids(), parsed.cgroup_ancestor_ids());
            for helper in ["BPF_FUNC_probe_read_user", "BPF_FUNC_no_such_helper"] {
                assert_eq!(
                    btf.has_enum_value("bpf_func_id", helper),
                    parsed.has_enum_value("bpf_func_id", helper)
                );
            }
        }
        assert!(copied.has_enum_value("bpf_func_id", "BPF_FUNC_probe_read_user"));
    }

    #[test]
    fn a_btf_file_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, [0u8; 100]).unwrap();
        let Err(err) = mapped_copy(path.to_str().unwrap(), 10) else {
            panic!("read past the limit");
        };
        assert!(err.to_string().contains("over 10 bytes"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let Err(err) = KernelBtf::read("/nonexistent/vmlinux") else {
            panic!("read a missing file");
        };
        assert!(err.to_string().contains("/nonexistent/vmlinux"));
    }
}
