//! A wait for every BPF program run in progress to finish, with the kernel's guarantee.
//!
//! An update of a map-of-maps from userspace returns only after `synchronize_rcu()`
//! (`maybe_wait_bpf_programs` in kernel/bpf/syscall.c, so that userspace knows every program that
//! could still use the old inner map is done; Linux 4.12 onwards). Non-sleepable BPF programs,
//! the perf-event sampler among them, run inside an RCU read-side critical section
//! (`bpf_overflow_handler`), so after the update returns, every run that began before it has
//! ended, and every later run sees what userspace stored before it (RCU's ordering guarantee).
//! The map-of-maps here serves only this purpose: no program uses it.
//!
//! Written by hand: aya 0.14 creates map-of-maps only from an object's definitions, and
//! aya-ebpf 0.2 cannot declare one.

#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::BpfError;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The `bpf_attr` of `BPF_MAP_CREATE`, as far as used (the kernel zero-extends the rest).
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

/// The `bpf_attr` of `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct MapUpdate {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

pub(crate) struct ProgramBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl ProgramBarrier {
    pub(crate) fn new() -> Result<Self, BpfError> {
        let inner = create_map(
            MapCreate {
                map_type: BPF_MAP_TYPE_ARRAY,
                key_size: 4,
                value_size: 4,
                max_entries: 1,
                ..MapCreate::default()
            },
            "bpf(BPF_MAP_CREATE, BPF_MAP_TYPE_ARRAY)",
        )?;
        let outer = create_map(
            MapCreate {
                map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
                key_size: 4,
                value_size: 4,
                max_entries: 1,
                inner_map_fd: inner.as_raw_fd() as u32,
                ..MapCreate::default()
            },
            "bpf(BPF_MAP_CREATE, BPF_MAP_TYPE_ARRAY_OF_MAPS)",
        )?;
        Ok(Self { outer, inner })
    }

    /// Returns once every BPF program run that began before the call has finished.
    pub(crate) fn wait_for_running_programs(&self) -> Result<(), BpfError> {
        update(&self.outer, 0, self.inner.as_raw_fd() as u32).map_err(|source| BpfError::Syscall {
            call: "bpf(BPF_MAP_UPDATE_ELEM) on the program barrier",
            source,
        })
    }
}

/// Sets element `key` of a map with 4-byte keys and values.
fn update(map: &OwnedFd, key: u32, value: u32) -> std::io::Result<()> {
    let attr = MapUpdate {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &attr).map(drop)
}

fn create_map(attr: MapCreate, call: &'static str) -> Result<OwnedFd, BpfError> {
    let fd = bpf(BPF_MAP_CREATE, &attr).map_err(|source| BpfError::Syscall { call, source })?;
    // SAFETY: a new descriptor that the kernel just returned and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialized `bpf_attr` prefix of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
