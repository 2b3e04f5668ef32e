//! What `/healthz` and `/readyz` answer.
//!
//! Live: the writer thread makes progress. (The HTTP server runs on the recorder's own
//! single-threaded runtime, so a recorder loop that hangs stops answering too, and the probe's
//! timeout catches it.) Ready: live, the BPF program attached, and the output directory takes
//! files: the last write succeeded and the directory is still writable.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

pub struct Health {
    output_dir: PathBuf,
    /// How long the writer may sit on queued work before it counts as stuck.
    stall_after: Duration,
    start: Instant,
    attached: AtomicBool,
    queued: AtomicU64,
    done: AtomicU64,
    /// Milliseconds after `start` of the writer's last progress (or of new work reaching an
    /// idle writer).
    progress_ms: AtomicU64,
    /// Why the last profile write failed, if it did.
    last_write_error: Mutex<Option<String>>,
}

impl Health {
    /// `interval_secs`: the recording interval; the writer is stuck after three of them (at
    /// least a minute) without finishing queued work.
    pub fn new(output_dir: PathBuf, interval_secs: u64) -> Self {
        Self {
            output_dir,
            stall_after: Duration::from_secs((3 * interval_secs).max(60)),
            start: Instant::now(),
            attached: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
            last_write_error: Mutex::new(None),
        }
    }

    pub fn set_attached(&self) {
        self.attached.store(true, Ordering::Release);
    }

    pub fn job_queued(&self) {
        if self.queued.fetch_add(1, Ordering::AcqRel) == self.done.load(Ordering::Acquire) {
            self.progress_now();
        }
    }

    pub fn job_done(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
        self.progress_now();
    }

    /// Records the outcome of the latest profile write.
    pub fn write_outcome(&self, error: Option<String>) {
        *self
            .last_write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = error;
    }

    pub fn live(&self) -> Result<(), String> {
        self.live_at(self.start.elapsed())
    }

    pub fn ready(&self) -> Result<(), String> {
        self.live()?;
        if !self.attached.load(Ordering::Acquire) {
            return Err("the BPF program is not attached yet".into());
        }
        if let Some(error) = &*self
            .last_write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            return Err(format!("the last profile write failed: {error}"));
        }
        writable(&self.output_dir)
    }

    fn live_at(&self, now: Duration) -> Result<(), String> {
        let pending = self
            .queued
            .load(Ordering::Acquire)
            .saturating_sub(self.done.load(Ordering::Acquire));
        let idle = now.saturating_sub(Duration::from_millis(
            self.progress_ms.load(Ordering::Acquire),
        ));
        if pending > 0 && idle > self.stall_after {
            return Err(format!(
                "the profile writer has made no progress for {} s with {pending} interval(s) queued",
                idle.as_secs()
            ));
        }
        Ok(())
    }

    fn progress_now(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.progress_ms.store(ms, Ordering::Release);
    }
}

/// Whether we may create files in `dir` (a read-only remount or lost permissions show here;
/// a full disk shows in the last write's outcome).
fn writable(dir: &std::path::Path) -> Result<(), String> {
    let shown = dir.display();
    if !dir.is_dir() {
        return Err(format!(
            "the output directory {shown} is missing or not a directory"
        ));
    }
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("the output directory {shown} has a NUL in its name"))?;
    // SAFETY: access(2) reads a NUL-terminated path and nothing else.
    if unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!(
            "the output directory {shown} is not writable: {err}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_attachment_a_good_last_write_and_a_writable_dir() {
        let dir = tempfile::tempdir().unwrap();
        let health = Health::new(dir.path().to_owned(), 10);
        assert!(health.live().is_ok());
        assert!(health.ready().unwrap_err().contains("not attached"));
        health.set_attached();
        assert_eq!(health.ready(), Ok(()));
        health.write_outcome(Some("No space left on device".into()));
        assert!(health.ready().unwrap_err().contains("No space left"));
        health.write_outcome(None);
        assert_eq!(health.ready(), Ok(()));
        drop(dir);
        assert!(health.ready().unwrap_err().contains("is missing"));
        assert!(
            health.live().is_ok(),
            "a missing directory is not a dead process"
        );
    }

    #[test]
    fn a_writer_stuck_on_queued_work_is_not_live() {
        let health = Health::new(PathBuf::from("/"), 10);
        // Stuck after three intervals, but never under a minute.
        assert_eq!(health.stall_after, Duration::from_secs(60));
        health.job_queued();
        assert!(health.live_at(Duration::from_secs(59)).is_ok());
        let err = health.live_at(Duration::from_secs(61)).unwrap_err();
        assert!(
            err.contains("no progress") && err.contains("1 interval"),
            "{err}"
        );
        health.job_done();
        assert!(
            health.live_at(Duration::from_secs(3600)).is_ok(),
            "idle is fine"
        );
        assert_eq!(
            Health::new(PathBuf::from("/"), 60).stall_after,
            Duration::from_secs(180)
        );
    }
}
