//! Container and pod labels: a fixture moved into a cgroup named the way the kubelet and
//! containerd name them (systemd driver) is labelled with its container ID and pod UID.

use anyhow::{Result, ensure};
use integration_tests::{Fixture, HOT_C, TestCgroup, assert_root, record_fixture, samples_of_pid};

const CONTAINER_ID: &str = "9e3c6a1b5d7f4e2a8c0b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c";
const POD_UID: &str = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";

#[test]
#[ignore = "needs root: creates cgroups and loads BPF programs"]
fn a_process_in_a_pod_container_carries_its_ids() -> Result<()> {
    assert_root();
    let cgroup = TestCgroup::kubernetes_containerd(CONTAINER_ID, POD_UID)?;
    let fixture = Fixture::spawn(HOT_C, &[])?;
    cgroup.add(fixture.pid())?;
    // A process on the host, recorded alongside, carries no container labels.
    let host = Fixture::spawn(HOT_C, &[])?;

    let out = tempfile::tempdir()?;
    let host_pid = host.pid().to_string();
    let profiles = record_fixture(&fixture, out.path(), 3, &["--pid", &host_pid])?;
    let contained_pid = fixture.pid();
    drop(fixture);
    drop(host);

    let contained = samples_of_pid(&profiles, contained_pid);
    ensure!(!contained.is_empty(), "no samples of the contained fixture");
    for (p, s) in &contained {
        ensure!(
            p.label_str(s, "container_id") == Some(CONTAINER_ID),
            "container_id {:?}",
            p.label_str(s, "container_id")
        );
        ensure!(
            p.label_str(s, "pod_uid") == Some(POD_UID),
            "pod_uid {:?}",
            p.label_str(s, "pod_uid")
        );
    }
    let on_host = samples_of_pid(&profiles, host_pid.parse()?);
    ensure!(!on_host.is_empty(), "no samples of the host fixture");
    for (p, s) in &on_host {
        ensure!(
            p.label_str(s, "container_id").is_none() && p.label_str(s, "pod_uid").is_none(),
            "a host process has container labels"
        );
    }
    Ok(())
}
