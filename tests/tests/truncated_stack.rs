//! A user stack deeper than the kernel's 127 frames: cut, marked and counted, never silently.

use anyhow::{Result, ensure};
use integration_tests::{
    DEEP_SPIN_C, Fixture, TEST_FREQUENCY, assert_root, read_checked_profiles, record_fixture_run,
};

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_stack_deeper_than_the_frame_limit_has_a_truncated_root_and_is_counted() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(DEEP_SPIN_C, &[])?;
    let out = tempfile::tempdir()?;
    let output = record_fixture_run(&fixture, out.path(), 3, 1, &[])?;
    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;

    let (mut samples, mut truncated, mut deep) = (0, 0, 0);
    for profile in &profiles {
        for sample in profile.samples_of_pid(fixture.pid()) {
            let names = profile.stack_names(sample);
            let count = profile.count(sample);
            samples += count;
            if names.last().map(String::as_str) == Some("[truncated]") {
                truncated += count;
            }
            if names.iter().filter(|n| *n == "deep_spin_recurse").count() >= 100 {
                deep += count;
            }
        }
    }
    ensure!(samples >= 50, "only {samples} samples of the fixture");
    ensure!(
        truncated * 10 >= samples * 9,
        "{truncated} of {samples} samples end at [truncated]"
    );
    ensure!(
        deep * 10 >= samples * 9,
        "{deep} of {samples} samples show 100+ deep_spin_recurse frames"
    );
    // The counter behind the marks, in the recorder's log.
    ensure!(
        output.stderr.contains("\"user_stack_truncated\""),
        "no user_stack_truncated count in the log:\n{}",
        output.stderr
    );
    Ok(())
}
