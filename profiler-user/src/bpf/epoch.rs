//! `EPOCH`, which the BPF program's per-CPU process memo is valid under: moved on after every
//! change to the per-process maps the memo stands for (trace-context locations, Go targets,
//! unwind ranges), so that the next sample of that process looks them up again.

use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{Map, MapData};
use profiler_common::{EPOCH_USERSPACE, EPOCH_WRITER_BITS, maps};

use super::{BpfError, unwind_maps::write_array};

/// The `EPOCH` map, shared by every owner of a per-process map.
#[derive(Debug)]
pub struct Epoch {
    /// Kept, not a duplicate of its descriptor: the programs loaded after it is taken name
    /// this descriptor.
    map: MapData,
    writes: AtomicU64,
}

impl Epoch {
    pub(super) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, BpfError> {
        let name = maps::EPOCH;
        let Some(Map::Array(data)) = ebpf.take_map(name) else {
            return Err(BpfError::Missing {
                kind: "array map",
                name,
            });
        };
        Ok(Self {
            map: data,
            writes: AtomicU64::new(1),
        })
    }

    /// Moves the epoch on: call after the change, never before (a sample between the two
    /// would remember the old state under the new epoch).
    pub fn advance(&self) -> std::io::Result<()> {
        let write = self.writes.fetch_add(1, Ordering::Relaxed);
        // Userspace's writer bits: never a value the kernel writes (see `EPOCH_WRITER_BITS`).
        write_array(
            self.map.fd(),
            0,
            &[write << EPOCH_WRITER_BITS | EPOCH_USERSPACE],
        )
    }
}
