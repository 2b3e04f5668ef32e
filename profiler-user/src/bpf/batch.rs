//! Reads (and deletes) every entry of a BPF hash map in a few batch calls
//! (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_LOOKUP_AND_DELETE_BATCH`, Linux 5.6 onwards) instead of
//! two or three syscalls per entry.
//! aya 0.14 has no batch operations; the call is made by hand ([`super::syscall`]).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use super::syscall::{BPF_MAP_LOOKUP_AND_DELETE_BATCH, BPF_MAP_LOOKUP_BATCH, MapBatch, bpf};

/// Entries asked for per call: a 60k-entry map drains in about 60 calls, and the buffers stay
/// small (a stacks map's values are 1 KiB each).
const BATCH: usize = 1024;

/// Room never grows beyond this: a hash bucket holds a handful of entries, so asking for more
/// and still hearing "no room" means something else is wrong.
const MAX_BATCH: usize = 1 << 16;

/// Why a batch drain did not happen.
#[derive(Debug)]
pub(super) enum BatchError {
    /// The kernel has no batch operations for this map (before 5.6): nothing was taken.
    Unsupported(io::Error),
    Failed(io::Error),
}

/// Takes every entry out of `map`, a hash map of `K` to `V` that no program writes meanwhile.
pub(super) fn take_all<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
) -> Result<Vec<(K, V)>, BatchError> {
    take_all_by(map, BATCH)
}

/// Reads every entry of `map`, a hash map of `K` to `V`, leaving it as it is. Programs may
/// write it meanwhile: an entry added or removed during the read may be missed, none is read
/// twice.
pub(super) fn read_all<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
) -> Result<Vec<(K, V)>, BatchError> {
    batch_by(map, BATCH, BPF_MAP_LOOKUP_BATCH)
}

/// [`take_all`], asking for `room` entries per call at first.
fn take_all_by<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    room: usize,
) -> Result<Vec<(K, V)>, BatchError> {
    batch_by(map, room, BPF_MAP_LOOKUP_AND_DELETE_BATCH)
}

/// Every entry of `map` by batch command `command`, asking for `room` entries per call at
/// first.
fn batch_by<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    mut room: usize,
    command: libc::c_long,
) -> Result<Vec<(K, V)>, BatchError> {
    let mut entries = Vec::new();
    let mut keys: Vec<K> = Vec::with_capacity(room);
    let mut values: Vec<V> = Vec::with_capacity(room);
    // Opaque positions; a hash map's is a bucket index (u32). Room for any map's token.
    let mut position = [0u64; 8];
    let mut next = [0u64; 8];
    let mut started = false;
    loop {
        keys.reserve(room);
        values.reserve(room);
        let mut attr = MapBatch {
            in_batch: if started { position.as_ptr() as u64 } else { 0 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.spare_capacity_mut().as_mut_ptr() as u64,
            values: values.spare_capacity_mut().as_mut_ptr() as u64,
            count: room as u32,
            map_fd: map.as_raw_fd() as u32,
            ..MapBatch::default()
        };
        let result = bpf(command, &mut attr);
        let taken = (attr.count as usize).min(room);
        // SAFETY: the kernel wrote `taken` keys and values into the spare capacity (it reports
        // how many in `count`, never more than asked); any bit pattern is a valid `Pod`.
        unsafe {
            keys.set_len(taken);
            values.set_len(taken);
        }
        entries.extend(keys.drain(..).zip(values.drain(..)));
        match result {
            Ok(_) => {
                position = next;
                started = true;
            }
            // The end of the map; the last call may still have returned entries.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(entries),
            // One bucket holds more entries than there was room for: ask again with more.
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) && taken == 0 => {
                if room >= MAX_BATCH {
                    return Err(BatchError::Failed(err));
                }
                room *= 2;
            }
            Err(err) if !started && entries.is_empty() && unsupported(&err) => {
                return Err(BatchError::Unsupported(err));
            }
            Err(err) => return Err(BatchError::Failed(err)),
        }
    }
}

/// EINVAL for an unknown command (before 5.6), ENOTSUPP (524) or EOPNOTSUPP for a map type
/// without batch operations.
fn unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(524)
    )
}

#[cfg(test)]
mod tests;
