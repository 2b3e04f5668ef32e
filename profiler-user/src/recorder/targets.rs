//! Watches the `--pid` targets so that recording ends when the last one exits.

use crate::preflight::process_alive;

pub(super) struct Targets {
    alive: Vec<u32>,
}

impl Targets {
    pub(super) fn new(pids: &[u32]) -> Self {
        Self {
            alive: pids.to_vec(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.alive.is_empty()
    }

    /// Logs each target that exited since the last call; true once none is left.
    pub(super) fn all_exited(&mut self) -> bool {
        self.alive.retain(|&pid| {
            let alive = process_alive(pid);
            if !alive {
                tracing::info!(pid, "target exited; its samples are kept");
            }
            alive
        });
        self.alive.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_when_the_last_target_is_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut targets = Targets::new(&[std::process::id(), child.id()]);
        assert!(!targets.all_exited());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!targets.all_exited(), "we are still alive");
        assert_eq!(targets.alive, vec![std::process::id()]);
    }
}
