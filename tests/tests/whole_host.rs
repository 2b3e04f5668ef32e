//! Recording the whole host (no `--pid`): other processes show up next to the fixtures.

use std::time::Duration;

use anyhow::{Result, ensure};
use integration_tests::{
    C_CHAIN, Fixture, HOT_C, SYSCALLS_C, TEST_FREQUENCY, assert_root, check_go_pprof,
    check_hot_chain, check_labels, read_checked_profiles, record_command, run, run_timeout,
    sampled_pids, samples_of_pid,
};

#[test]
#[ignore = "needs root: loads BPF programs"]
fn whole_host_sees_every_process_and_the_hot_fixture() -> Result<()> {
    assert_root();
    // Two fixtures make "at least two pids" independent of what else the host runs. Other
    // tests may record in parallel: only this test's fixtures are looked at by pid.
    let hot = Fixture::spawn(HOT_C, &[])?;
    let busy = Fixture::spawn(SYSCALLS_C, &[])?;
    let out = tempfile::tempdir()?;
    let frequency = TEST_FREQUENCY.to_string();
    let args = [
        "--frequency",
        &frequency,
        "--duration",
        "3",
        "--interval",
        "10",
    ];
    run(
        record_command(out.path(), &args),
        run_timeout(Duration::from_secs(3)),
    )?
    .ensure_success()?;
    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;

    let pids = sampled_pids(&profiles);
    ensure!(pids.len() >= 2, "samples from pids {pids:?} only");
    for fixture in [&hot, &busy] {
        ensure!(
            pids.contains(&i64::from(fixture.pid())),
            "no sample of {} (pid {}) among pids {pids:?}",
            fixture.path().display(),
            fixture.pid()
        );
    }

    let samples = samples_of_pid(&profiles, hot.pid());
    check_hot_chain(&samples, &C_CHAIN)?;
    check_labels(&samples, &hot, |_, _| Ok(()))?;
    check_go_pprof(&profiles, C_CHAIN.leaf)
}
