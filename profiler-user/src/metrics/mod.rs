//! What an operator sees of a running recorder: Prometheus metrics, `/healthz` and `/readyz`.

mod health;
mod own_process;
mod registry;
mod server;

pub use health::Health;
pub use registry::{DropReason, ErrorKind, FileKind, Metrics, OtlpOutcome};
pub use server::{MetricsError, MetricsServer};
