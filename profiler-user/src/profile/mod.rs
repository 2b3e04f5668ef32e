//! From drained samples to pprof files: resolving stacks into locations, building the
//! `Profile` message, and writing it gzip-compressed and atomically.

mod builder;
mod interval;
pub mod proto;
mod retention;
mod traces;
mod writer;

pub use builder::{Labels, MappingInfo, MappingKey, ProfileBuilder, add_comments};
pub use interval::{
    IntervalMeta, IntervalStats, KERNEL_MAPPING, ResolvedLocation, ResolvedSample, build_profile,
    resolve_interval,
};
pub use retention::{Pruned, Retention};
pub use traces::{INDEX_FILE, IndexEntry, TraceFileError, TraceStore, is_rotated_index};
pub use writer::{Durability, ProfileWriter, WriteError};
