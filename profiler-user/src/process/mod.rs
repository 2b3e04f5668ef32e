//! What userspace knows about each sampled process: its name and executable mappings,
//! snapshotted when the BPF program first reports it, so that a process that exits before the
//! drain is still symbolized.

pub mod cgroup_targets;
mod container;
mod files;
mod identity;
mod snapshot;
mod table;

pub use container::ContainerInfo;
pub use files::{FileId, FileTable, MappedFile};
pub use identity::{Liveness, liveness};
pub use snapshot::{Mapping, MappingObject, ProcessSnapshot};
pub use table::{ProcessKey, ProcessTable};
