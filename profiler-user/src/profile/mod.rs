//! From drained samples to pprof files: resolving stacks into locations, building the
//! `Profile` message, and writing it gzip-compressed and atomically.

mod builder;
mod interval;
pub mod proto;
mod writer;

pub use builder::{Labels, MappingInfo, MappingKey, ProfileBuilder};
pub use interval::{IntervalMeta, IntervalStats, build_interval};
pub use writer::{ProfileWriter, WriteError};
