//! SIGINT and SIGTERM are a request to stop from the process's first instant. `main` holds them
//! back (blocks them) before anything else runs; a command that handles them installs its
//! handlers and then lets them through, so a signal sent during start-up (preflight, the BPF
//! load) waits and then stops the command cleanly, instead of killing it by default (exit 143)
//! with nothing written. Written by hand: two calls to `pthread_sigmask`, which no crate wraps
//! for this.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Blocks SIGINT and SIGTERM in the calling thread, and in the threads it starts later. Call it
/// first thing in `main`, before any thread exists.
pub fn hold() {
    set_blocked(libc::SIG_BLOCK);
}

/// Undoes [`hold`] for the calling thread: signals held since are delivered now.
pub fn release() {
    set_blocked(libc::SIG_UNBLOCK);
}

fn set_blocked(how: libc::c_int) {
    // SAFETY: plain calls on a local, initialised signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Handlers of SIGINT and SIGTERM on the current tokio runtime.
pub struct StopSignals {
    sigint: Signal,
    sigterm: Signal,
}

impl StopSignals {
    /// Installs the handlers, then lets held signals through: one that came during start-up is
    /// waiting in [`StopSignals::recv`].
    pub fn install() -> io::Result<Self> {
        let signals = Self {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
        };
        release();
        Ok(signals)
    }

    /// Waits for either signal; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.sigint.recv() => "SIGINT",
            _ = self.sigterm.recv() => "SIGTERM",
        }
    }
}
