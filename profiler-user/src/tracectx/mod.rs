//! Trace-ID correlation: where each process keeps its OpenTelemetry thread-context record
//! (OTEP 4947), what its process context (OTEP 4719) says about attribute names and the service,
//! and how a context read by the BPF program becomes sample labels.

pub mod elf_tls;
pub mod kernel_btf;
mod labeler;
pub mod process_context;
pub mod record;
mod tracker;

pub use labeler::{TraceLabeler, TraceLabels};
pub use tracker::{SYMBOL, TlsTracker};
