//! Publishes the current OpenTelemetry trace context of each thread where the profiler's BPF
//! program reads it on every CPU sample, so that samples carry the trace ID of the request that
//! was running.
//!
//! - [`attach`] puts a [`TraceContext`] in this thread's record (OTEP 4947: the ELF TLS
//!   pointer `otel_thread_ctx_v1` to a packed [`record`]) until the returned [`ContextGuard`]
//!   is dropped. [`current`] reads it back, [`clear`] removes it.
//! - [`process_context::publish`] says who the process is (`service.name`) and what the key
//!   indexes of record attributes mean (OTEP 4719).
//! - With the `tracing` feature, `MarkerLayer` (a `tracing_subscriber::Layer`) does the
//!   attaching for spans that record `trace_id` and `span_id` fields.
//!
//! The executable must export `otel_thread_ctx_v1` in its dynamic symbol table, or the profiler
//! cannot find it. Add to the application's `build.rs`:
//!
//! ```text
//! println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=otel_thread_ctx_v1");
//! ```
//!
//! ```
//! use profiler_marker::{attach, current, TraceContext};
//!
//! let ctx = TraceContext::from_hex("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")?
//!     .with_attribute(0, "/checkout");
//! {
//!     let _guard = attach(&ctx);
//!     // CPU samples of this thread now carry the trace ID.
//!     assert_eq!(current().as_ref(), Some(&ctx));
//! }
//! assert_eq!(current(), None);
//! # Ok::<(), profiler_marker::Error>(())
//! ```

mod context;
#[cfg(feature = "tracing")]
mod layer;
pub mod process_context;
pub mod record;
#[cfg(feature = "tls")]
mod thread;

pub use context::{Error, TraceContext};
#[cfg(feature = "tracing")]
pub use layer::MarkerLayer;
#[cfg(feature = "tls")]
pub use thread::{ContextGuard, attach, clear, current, try_attach};

/// Name of the thread-local symbol readers look up (OTEP 4947).
pub const SYMBOL: &str = "otel_thread_ctx_v1";

#[cfg(feature = "tls")]
#[doc(hidden)]
pub use thread::slot_address;
