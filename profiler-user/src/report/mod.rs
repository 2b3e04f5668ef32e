//! `profiler report`: reads the pprof files of a directory (interval, incident and trace files),
//! selects profiles and samples, and writes the top functions (as `go tool pprof -top` does), a
//! flame graph SVG, or folded stacks. `profiler serve` draws its pages with the same parts.

mod command;
pub mod files;
pub mod flame;
pub mod folded;
pub mod select;
pub mod stacks;
pub mod top;
mod wire;

use std::time::SystemTime;

use chrono::{DateTime, Utc};

pub use command::{Options, ReportConfig, ReportError, ReportFormat, each, merged, run};

/// `2026-01-01 12:00:00 UTC`.
pub fn utc(time: SystemTime) -> String {
    DateTime::<Utc>::from(time)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}
