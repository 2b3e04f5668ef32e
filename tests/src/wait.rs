//! Waiting for a condition with a deadline, instead of sleeping for a time and hoping it holds.

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

use crate::{Pprof, is_profile_file_name};

/// How often [`wait_until`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// Calls `check` until it gives `Some(value)`, and returns the value. Fails with `no {what}
/// within {timeout}` after `timeout`, and at once with the error of `check` if it fails.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        ensure!(Instant::now() < deadline, "no {what} within {timeout:?}");
        thread::sleep(POLL);
    }
}

/// Waits until an interval file in `dir` (`cpu-*.pb.gz`, renamed into place whole) satisfies
/// `wanted`, and returns it. Each file is read once, when it appears.
pub fn wait_for_profile(
    dir: &Path,
    timeout: Duration,
    what: &str,
    mut wanted: impl FnMut(&Pprof) -> bool,
) -> Result<Pprof> {
    let mut seen = BTreeSet::new();
    wait_until(timeout, what, || {
        let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if !is_profile_file_name(&name) || !seen.insert(path.clone()) {
                continue;
            }
            let profile = Pprof::read(&path)?;
            if wanted(&profile) {
                return Ok(Some(profile));
            }
        }
        Ok(None)
    })
}
