//! The labels of a sample: process and thread, container, and the trace it ran under.

use std::sync::Arc;

use profiler_common::SampleKey;

use super::Labels;
use crate::{process::ProcessSnapshot, tracectx::TraceLabels};

pub(super) fn labels(
    key: &SampleKey,
    snapshot: &ProcessSnapshot,
    trace: Option<Arc<TraceLabels>>,
) -> Labels {
    let thread_name = comm_string(&key.comm);
    let comm = if snapshot.name.is_empty() {
        thread_name.clone()
    } else {
        snapshot.name.clone()
    };
    Labels {
        pid: key.pid,
        thread_id: key.tid,
        comm,
        thread_name,
        trace,
        container: snapshot.container.clone(),
    }
}

/// A task's `comm`: bytes up to the first NUL, lossily decoded.
fn comm_string(comm: &[u8]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_string(b"bash\0\0junk"), "bash");
        assert_eq!(comm_string(b"0123456789abcdef"), "0123456789abcdef");
    }
}
