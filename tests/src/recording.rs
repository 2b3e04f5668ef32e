//! Recording a fixture and reading back checked profiles.

use std::{path::Path, time::Duration};

use anyhow::{Result, ensure};

use crate::*;

// ---------------------------------------------------------------------------------------------
// Timing

/// Generous bound on any profiler run: load, record, symbolize, write, on 2 noisy cores.
pub fn run_timeout(recording: Duration) -> Duration {
    recording + Duration::from_secs(90)
}

// ---------------------------------------------------------------------------------------------
// Recording

/// Every profile in `dir`, each checked by [`Pprof::check_well_formed`]; at least one.
pub fn read_checked_profiles(dir: &Path, frequency: u32) -> Result<Vec<Pprof>> {
    let profiles = read_profiles(dir)?;
    ensure!(
        !profiles.is_empty(),
        "no profile written in {}",
        dir.display()
    );
    for p in &profiles {
        p.check_well_formed(frequency)?;
    }
    Ok(profiles)
}

/// Records `fixture` by `--pid` at [`TEST_FREQUENCY`] for `seconds` in 2-second intervals plus
/// `extra` flags, expects a clean exit, and returns the files written, checked well-formed.
pub fn record_fixture(
    fixture: &Fixture,
    out_dir: &Path,
    seconds: u64,
    extra: &[&str],
) -> Result<Vec<Pprof>> {
    record_fixture_run(fixture, out_dir, seconds, 2, extra)?;
    read_checked_profiles(out_dir, TEST_FREQUENCY)
}

/// Records `fixture` by `--pid` at [`TEST_FREQUENCY`] for `seconds` in `interval`-second
/// intervals plus `extra` flags, expects a clean exit, and returns what the profiler printed.
pub fn record_fixture_run(
    fixture: &Fixture,
    out_dir: &Path,
    seconds: u64,
    interval: u64,
    extra: &[&str],
) -> Result<RunOutput> {
    let (pid, frequency) = (fixture.pid_arg(), TEST_FREQUENCY.to_string());
    let (duration, interval) = (seconds.to_string(), interval.to_string());
    let mut args = vec!["--pid", &pid, "--frequency", &frequency];
    args.extend(["--duration", &duration, "--interval", &interval]);
    args.extend(extra);
    let output = run(
        record_command(out_dir, &args),
        run_timeout(Duration::from_secs(seconds)),
    )?;
    output.ensure_success()?;
    Ok(output)
}
