//! `--container ID` and `--cgroup PATH`: only the tasks of that cgroup (and of the cgroups below
//! it) are sampled, filtered in the kernel.

use std::{collections::BTreeSet, path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    C_CHAIN, Fixture, HOT_C, Pprof, TEST_FREQUENCY, TestCgroup, assert_root, cgroup_root,
    check_hot_chain, read_checked_profiles, record_command, run, sampled_pids, samples_of_pid,
};

const CONTAINER_ID: &str = "5e0c1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";
const POD_UID: &str = "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8";
const TIMEOUT: Duration = Duration::from_secs(90);

/// Records for a few seconds with `target` flags; returns the profiles.
fn record_target(target: &[&str]) -> Result<(tempfile::TempDir, Vec<Pprof>)> {
    let out = tempfile::tempdir()?;
    let frequency = TEST_FREQUENCY.to_string();
    let mut args = vec!["--frequency", &frequency, "--duration", "4"];
    args.extend_from_slice(target);
    run(record_command(out.path(), &args), TIMEOUT)?.ensure_success()?;
    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    Ok((out, profiles))
}

#[test]
#[ignore = "needs root: creates cgroups and loads BPF programs"]
fn container_and_cgroup_targets_sample_only_their_processes() -> Result<()> {
    assert_root();
    // Declared first, dropped last: the cgroups go once the fixtures have exited.
    let cgroup = TestCgroup::kubernetes_containerd(CONTAINER_ID, POD_UID)?;
    let inside = Fixture::spawn(HOT_C, &[])?;
    let outside = Fixture::spawn(HOT_C, &[])?;
    cgroup.add(inside.pid())?;

    // The container, named by a 12-digit prefix as `docker ps` shows it.
    let (_out, profiles) = record_target(&["--container", &CONTAINER_ID[..12]])?;
    let pids = sampled_pids(&profiles);
    ensure!(
        pids == BTreeSet::from([i64::from(inside.pid())]),
        "sampled PIDs {pids:?}; only the container's {} was asked for",
        inside.pid()
    );
    let samples = samples_of_pid(&profiles, inside.pid());
    check_hot_chain(&samples, &C_CHAIN)?;
    let (p, s) = samples.first().context("no sample of the container")?;
    ensure!(p.label_str(s, "container_id") == Some(CONTAINER_ID));

    // The test's top-level slice, four levels above the container: descendants are included.
    let scope = cgroup.procs_file()?;
    let top = scope
        .ancestors()
        .nth(5)
        .context("the test's top-level cgroup")?;
    let relative = Path::new("/").join(top.strip_prefix(cgroup_root()?)?);
    let (_out, profiles) = record_target(&["--cgroup", &relative.to_string_lossy()])?;
    let pids = sampled_pids(&profiles);
    ensure!(
        pids == BTreeSet::from([i64::from(inside.pid())]),
        "sampled PIDs {pids:?} under --cgroup {}; expected only {}",
        relative.display(),
        inside.pid()
    );

    // The full path form, with a PID target beside it: a sample passes either filter.
    let top = top.to_string_lossy().into_owned();
    let outside_pid = outside.pid().to_string();
    let (_out, profiles) = record_target(&["--cgroup", &top, "--pid", &outside_pid])?;
    let pids = sampled_pids(&profiles);
    ensure!(
        pids == BTreeSet::from([i64::from(inside.pid()), i64::from(outside.pid())]),
        "sampled PIDs {pids:?} for --cgroup {top} --pid {outside_pid}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: the profiler refuses a user before this check"]
fn unknown_containers_and_cgroups_are_one_line_errors() -> Result<()> {
    assert_root();
    let out = tempfile::tempdir()?;
    let unknown = "ffffffffffff0000";
    run(
        record_command(out.path(), &["--container", unknown]),
        TIMEOUT,
    )?
    .ensure_error(&["--container", unknown, "no running container"])?;
    run(record_command(out.path(), &["--container", "xyz"]), TIMEOUT)?
        .ensure_error(&["--container xyz", "not a container ID"])?;
    run(
        record_command(out.path(), &["--cgroup", "/no/such/cgroup.slice"]),
        TIMEOUT,
    )?
    .ensure_error(&["--cgroup /no/such/cgroup.slice", "no such cgroup"])
}
