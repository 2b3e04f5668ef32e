//! Requests an endpoint back to back on a thread, noting when each went out and how long its
//! answer took: to see what the profiler answers while it is busy (draining, symbolizing).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use crate::http_get;

/// One request and its answer.
#[derive(Clone, Copy, Debug)]
pub struct Poll {
    pub sent: DateTime<Utc>,
    pub latency: Duration,
    /// Answered 200.
    pub ok: bool,
}

impl Poll {
    pub fn answered(&self) -> DateTime<Utc> {
        self.sent + self.latency
    }
}

pub struct Poller {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Poll>>,
}

impl Poller {
    /// Starts requesting `GET path` from `address`, a few milliseconds apart; requests before
    /// the server listens are noted as not ok.
    pub fn start(address: SocketAddr, path: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut polls = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let sent = Utc::now();
                let started = Instant::now();
                let ok = http_get(address, path, Duration::from_secs(10))
                    .is_ok_and(|response| response.status == 200);
                polls.push(Poll {
                    sent,
                    latency: started.elapsed(),
                    ok,
                });
                std::thread::sleep(Duration::from_millis(if ok { 2 } else { 50 }));
            }
            polls
        });
        Self { stop, thread }
    }

    /// Stops and returns every poll made.
    pub fn stop(self) -> Vec<Poll> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the poller thread panicked")
    }
}
