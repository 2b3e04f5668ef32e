//! Trace IDs of Go programs, from goroutine pprof labels (`pprof.Do(ctx, pprof.Labels("trace_id",
//! ...), f)`): which executables are Go and of which release (`buildinfo.rs`), where the BPF
//! program finds the running goroutine and its labels in that release or that binary's DWARF
//! (`layout.rs`), per-process targets for the BPF side (`tracker.rs`), and a read label set's
//! sample labels (`labeler.rs`). The labels then take the trace-context path: `trace_id` and
//! `span_id` labels, per-trace files and the index. Label strings the kernel could not read
//! (literals on pages the process never touched) are read from the executable (`literals.rs`).

pub mod buildinfo;
mod labeler;
pub mod layout;
mod literals;
mod tracker;

pub use labeler::go_trace_labels;
pub use literals::Literals;
pub use tracker::GoTracker;
