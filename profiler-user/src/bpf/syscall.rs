//! The raw `bpf(2)` calls aya 0.14 does not offer: map-of-maps created from userspace (for the
//! program barrier) and batch operations (for the drain). Written by hand for that reason; each
//! attribute struct is the prefix of `union bpf_attr` the command reads (the kernel checks that
//! the rest is zero, and takes the size we pass).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::BpfError;

pub(super) const BPF_MAP_CREATE: libc::c_long = 0;
pub(super) const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
pub(super) const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
pub(super) const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
pub(super) const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

#[cfg(test)]
pub(super) const BPF_MAP_TYPE_HASH: u32 = 1;
pub(super) const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub(super) const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The `bpf_attr` of `BPF_MAP_CREATE`, as far as used.
#[repr(C)]
#[derive(Default)]
pub(super) struct MapCreate {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
}

/// The `bpf_attr` of `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
pub(super) struct MapUpdate {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

/// The `bpf_attr` of the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
pub(super) struct MapBatch {
    /// Where the previous call stopped (an opaque token); 0 (null) starts at the beginning.
    pub in_batch: u64,
    /// Where this call stopped, for the next one.
    pub out_batch: u64,
    pub keys: u64,
    pub values: u64,
    /// In: room in `keys` and `values`, in elements. Out: elements processed.
    pub count: u32,
    pub map_fd: u32,
    pub elem_flags: u64,
    pub flags: u64,
}

/// A map of `key_size`/`value_size`-byte entries that nothing else uses.
pub(super) fn create_map(mut attr: MapCreate, call: &'static str) -> Result<OwnedFd, BpfError> {
    let fd = bpf(BPF_MAP_CREATE, &mut attr).map_err(|source| BpfError::Syscall { call, source })?;
    // SAFETY: a new descriptor that the kernel just returned and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sets element `key` of a map with 4-byte keys and values.
pub(super) fn update_u32(map: BorrowedFd<'_>, key: u32, value: u32) -> std::io::Result<()> {
    let mut attr = MapUpdate {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `bpf(cmd, attr)`; `attr` must be a `bpf_attr` prefix valid for `cmd`, whose pointers stay
/// valid for the call.
pub(super) fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialized `bpf_attr` prefix of the size passed; the kernel
    // writes only output fields of it, and through its pointers only into buffers the caller
    // sized for the count it passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
