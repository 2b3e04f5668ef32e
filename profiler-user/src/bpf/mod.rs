//! Everything that talks to the kernel's BPF and perf subsystems: loading the object, opening
//! the per-CPU perf events, draining the aggregation maps, reading counters and process events.

mod barrier;
mod batch;
pub mod cost;
mod counters;
mod drain;
mod epoch;
mod error;
mod events;
pub mod map_memory;
mod perf_events;
mod sampler;
pub mod sizing;
mod syscall;
pub mod unwind_maps;
pub mod verifier;

pub use cost::ProgramCost;
pub use counters::CounterSnapshot;
pub use drain::{Contexts, Drained, Stacks};
pub use epoch::Epoch;
pub use error::BpfError;
pub use events::{Event, EventReader};
pub use perf_events::{PerfEvents, period_ns};
pub use sampler::{Sampler, SamplerOptions, TraceOptions};
pub use unwind_maps::{UnwindMaps, UnwindSizes};

/// The BPF object built by `build.rs` from the `profiler-ebpf` crate.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler-ebpf"));
