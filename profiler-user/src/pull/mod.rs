//! Profiles on demand: `GET /debug/pprof/profile?seconds=N` on the metrics listener answers,
//! after N seconds, a gzipped pprof CPU profile of those seconds, as Go's `net/http/pprof`
//! does, so `go tool pprof`, Pyroscope, Alloy and Parca scrape the agent unchanged.
//!
//! The HTTP handler ([`endpoint`]) talks to the recorder through [`PullMessage`]s. The recorder
//! opens a request's capture with a drain (so that earlier samples stay out) and closes it with
//! another; those drains do not cut interval files, which go on unchanged. The profile writer
//! thread gathers the filtered samples in between and builds the answer.

pub mod endpoint;
pub mod request;
pub mod token;

use tokio::sync::oneshot;

pub use request::{BadRequest, Filter, PullRequest};

/// Requests served at once; more are answered `429`.
pub const MAX_CONCURRENT: usize = 4;

/// What the endpoint asks of the recorder.
#[derive(Debug)]
pub enum PullMessage {
    /// Open request `id`'s capture; the answer comes once it is open.
    Start {
        id: u64,
        request: PullRequest,
        opened: oneshot::Sender<Result<Opened, String>>,
    },
    /// Close request `id`'s capture and answer its profile (gzipped pprof).
    End {
        id: u64,
        profile: oneshot::Sender<Result<Vec<u8>, String>>,
    },
    /// The client went away: forget request `id`.
    Cancel { id: u64 },
}

/// A request's capture, open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The sampling rate in force for the request.
    pub hz: u64,
}
