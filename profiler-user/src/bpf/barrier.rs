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
//! aya 0.14 creates map-of-maps only from an object's definitions, and aya-ebpf 0.2 cannot
//! declare one: the maps are made with raw calls ([`super::syscall`]).

#[cfg(test)]
mod tests;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::{
    BpfError,
    syscall::{BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_ARRAY_OF_MAPS, MapCreate, create_map, update_u32},
};

pub(crate) struct ProgramBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl ProgramBarrier {
    pub(crate) fn new() -> Result<Self, BpfError> {
        let inner = one_slot_array()?;
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
        update_u32(self.outer.as_fd(), 0, self.inner.as_raw_fd() as u32).map_err(|source| {
            BpfError::Syscall {
                call: "bpf(BPF_MAP_UPDATE_ELEM) on the program barrier",
                source,
            }
        })
    }
}

/// An array map of one `u32`.
fn one_slot_array() -> Result<OwnedFd, BpfError> {
    create_map(
        MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..MapCreate::default()
        },
        "bpf(BPF_MAP_CREATE, BPF_MAP_TYPE_ARRAY)",
    )
}
