//! From resolved samples to pprof files: building the `Profile` message, writing it
//! gzip-compressed and atomically, per-trace files and their index, and retention.

mod builder;
mod interval;
pub mod proto;
mod retention;
mod traces;
mod writer;

pub use builder::{ProfileBuilder, ProfileValues, add_comments};
pub use interval::{IntervalMeta, IntervalStats, build_profile, build_profile_of};
pub use retention::{Pruned, Retention};
pub use traces::{INDEX_FILE, IndexEntry, TraceFileError, TraceStore, is_rotated_index};
pub(crate) use writer::is_disk_full;
pub use writer::{Durability, ProfileWriter, WriteError, gzipped};
