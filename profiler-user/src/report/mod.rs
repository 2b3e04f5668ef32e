//! `profiler report`: reads the pprof files of a directory (interval, off-CPU interval, incident
//! and trace files), selects profiles and samples, and writes the top functions (as `go tool
//! pprof -top` does), a flame graph SVG, or folded stacks, of CPU time, samples, off-CPU time or
//! switches (values found by their sample type's name). `profiler serve` draws its pages with
//! the same parts.

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

/// `2026-01-01 12:00:00 UTC`; a time chrono cannot hold (a profile may claim any) is said so,
/// not a panic.
pub fn utc(time: SystemTime) -> String {
    let seconds = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => i64::try_from(before.duration().as_secs()).ok().map(|s| -s),
    };
    match seconds.and_then(|s| DateTime::<Utc>::from_timestamp(s, 0)) {
        Some(time) => time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => "a time out of range".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_out_of_chrono_range_are_no_panic() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(utc(epoch), "1970-01-01 00:00:00 UTC");
        let far = Duration::from_secs(1 << 62);
        for time in [epoch.checked_add(far), epoch.checked_sub(far)] {
            assert_eq!(utc(time.unwrap()), "a time out of range");
        }
    }
}
