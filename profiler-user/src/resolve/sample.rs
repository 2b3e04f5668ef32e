//! What resolution hands on: samples whose stacks are locations in mappings, named, with their
//! labels. Every output (interval, trace and incident profiles) is built from these alone.

use std::sync::Arc;

use crate::{
    process::{ContainerInfo, FileId},
    symbolize::Frames,
    tracectx::TraceLabels,
};

/// A sample with everything needed to write it into any profile.
#[derive(Clone, Debug)]
pub struct ResolvedSample {
    /// Leaf first.
    pub locations: Arc<[ResolvedLocation]>,
    pub labels: Labels,
    pub kind: SampleKind,
    /// Samples ([`SampleKind::Cpu`]) or waits ([`SampleKind::OffCpu`]).
    pub count: u64,
    /// CPU time, or time off the CPU.
    pub nanos: u64,
}

/// What a sample measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleKind {
    /// Time on the CPU, sampled: the stack a tick found.
    Cpu,
    /// Time off the CPU, every wait of at least `--off-cpu-min-us`: the stack the thread
    /// waited in.
    OffCpu,
}

/// One frame address, resolved: its mapping, its address in the profile, its names.
#[derive(Clone, Debug)]
pub struct ResolvedLocation {
    pub mapping: MappingKey,
    pub info: Arc<MappingInfo>,
    /// File offset for file mappings, absolute address otherwise.
    pub address: u64,
    pub frames: Frames,
}

/// What a location's mapping is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MappingKey {
    File(FileId),
    Kernel,
    Vdso,
    Anonymous,
    /// An address outside every known mapping.
    Unknown,
    /// The `[truncated]` root of a user stack cut at the kernel's frame limit.
    Truncated,
}

/// Description of a mapping for the profile.
#[derive(Clone, Debug, Default)]
pub struct MappingInfo {
    pub filename: String,
    pub build_id: Option<String>,
}

/// The labels of one sample.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Labels {
    pub pid: u32,
    pub thread_id: u32,
    /// Process name.
    pub comm: String,
    pub thread_name: String,
    /// The trace the thread was serving, when it published one.
    pub trace: Option<Arc<TraceLabels>>,
    /// The container (and pod) the process runs in.
    pub container: Option<Arc<ContainerInfo>>,
}
