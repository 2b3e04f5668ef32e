//! The detection on the BTF of the kernels the matrix boots (`target/kernels/<release>/btf`,
//! taken out of their images by `cargo xtask kernels`, which `cargo xtask test` runs first), and
//! on copies patched to lack what older kernels lack.

use std::{
    env, fs,
    io::Write,
    path::{Path, PathBuf},
};

use super::*;
use crate::preflight::kernel_version;

/// `(release, BTF bytes)` of each kernel fetched for the matrix. Outside CI, none is a skip
/// (said past the harness's capture); in CI, where `cargo xtask test` fetched them, a failure.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = env::var_os("PROFILER_KERNEL_BTF_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kernels"),
        PathBuf::from,
    );
    let mut found: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let btf = fs::read(entry.path().join("btf")).ok()?;
            Some((entry.file_name().to_string_lossy().into_owned(), btf))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        assert!(
            env::var("CI").as_deref() != Ok("true"),
            "no kernel BTF fixtures in {} (CI=true: a skipped test in CI is a failure; \
             `cargo xtask kernels` fetches them)",
            dir.display()
        );
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no kernel BTF fixtures in {} (run `cargo xtask kernels`)",
            dir.display()
        );
    }
    found
}

fn version(release: &str) -> (u32, u32) {
    kernel_version(release).unwrap_or_else(|| panic!("fixture {release} has no version"))
}

/// `bytes` with every `from` string of its string section renamed `to` (same length): what a
/// kernel without that helper or member would describe.
fn renamed(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let (from, to) = (format!("\0{from}\0"), format!("\0{to}\0"));
    let mut out = bytes.to_vec();
    let mut count = 0;
    let mut at = 0;
    while let Some(pos) = out[at..]
        .windows(from.len())
        .position(|window| window == from.as_bytes())
    {
        out[at + pos..at + pos + to.len()].copy_from_slice(to.as_bytes());
        at += pos + to.len();
        count += 1;
    }
    assert!(count > 0, "{from:?} is not in the fixture");
    out
}

#[test]
fn each_kernel_gets_the_cgroup_read_it_allows() {
    let fixtures = fixtures();
    for (release, bytes) in &fixtures {
        let features = KernelFeatures::detect(&KernelBtf::from_bytes(bytes).unwrap());
        let version = version(release);
        match features.cgroup_read {
            // Linux 5.10's verifier refuses the helper to perf_event programs: the matrix saw
            // "unknown func bpf_get_current_ancestor_cgroup_id#123".
            Some(CgroupRead::AncestorIds(offsets)) => {
                assert!(version < (6, 0), "{release}: {offsets:?}");
                assert!(
                    offsets.task_cgroups > 1000
                        && offsets.css_set_dfl_cgrp > 0
                        && offsets.cgroup_level > 0
                        && offsets.cgroup_ancestor_ids > offsets.cgroup_level,
                    "{release}: {offsets:?}"
                );
            }
            Some(CgroupRead::Helper) => assert!(version >= (5, 11), "{release}"),
            None => panic!("{release}: no cgroup read"),
        }
        let offset = features.thread_pointer.clone().unwrap();
        assert!(
            offset > 1000 && offset.is_multiple_of(8),
            "{release}: {offset}"
        );
        assert_eq!(features.missing().count(), 0, "{release}");
    }
    if env::var("CI").as_deref() == Ok("true") {
        // Both branches must be exercised: the matrix's oldest kernel and a current one.
        assert!(
            fixtures.iter().any(|(r, _)| version(r) < (5, 11)),
            "no kernel fixture older than 5.11"
        );
        assert!(
            fixtures.iter().any(|(r, _)| version(r) >= (6, 0)),
            "no kernel fixture from 6.0 on"
        );
    }
}

#[test]
fn a_kernel_without_probe_read_user_reads_no_trace_contexts() {
    let Some((release, bytes)) = fixtures().into_iter().next() else {
        return;
    };
    let older = renamed(
        &bytes,
        "BPF_FUNC_probe_read_user",
        "BPF_FUNC_probe_read_usex",
    );
    let features = KernelFeatures::detect(&KernelBtf::from_bytes(&older).unwrap());
    let missing = features.thread_pointer.clone().unwrap_err();
    assert_eq!(missing.since, "5.5", "{release}");
    assert_eq!(
        missing.to_string(),
        "degraded: trace contexts off: this kernel lacks the helper bpf_probe_read_user \
         (Linux 5.5 has it)"
    );
    assert_eq!(features.missing().count(), 1);
}

#[test]
fn a_kernel_with_neither_cgroup_read_has_no_cgroup_filter() {
    let Some((release, bytes)) = fixtures()
        .into_iter()
        .find(|(release, _)| version(release) >= (6, 0))
    else {
        return;
    };
    let without = renamed(
        &bytes,
        "BPF_FUNC_get_current_ancestor_cgroup_id",
        "BPF_FUNC_get_current_ancestor_cgroup_ix",
    );
    let features = KernelFeatures::detect(&KernelBtf::from_bytes(&without).unwrap());
    assert_eq!(features.cgroup_read, None, "{release}");
}

#[test]
fn this_kernel_calls_the_helper() {
    let path = "/sys/kernel/btf/vmlinux";
    let Ok(btf) = KernelBtf::read(path) else {
        assert!(
            env::var("CI").as_deref() != Ok("true"),
            "no kernel BTF at {path} (CI=true: a skipped test in CI is a failure)"
        );
        let _ = writeln!(std::io::stderr(), "skipped: no kernel BTF at {path}");
        return;
    };
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    if kernel_version(release.trim()).is_some_and(|v| v >= (6, 0)) {
        assert_eq!(
            KernelFeatures::detect(&btf).cgroup_read,
            Some(CgroupRead::Helper)
        );
    }
}

/// `bpf_task_pt_regs` came in 5.15: the matrix's 5.10 gets a program without the call (its
/// verifier would refuse the unknown helper), every later kernel one with it.
#[test]
fn kernels_from_5_15_find_the_user_registers_of_a_sample_in_the_kernel() {
    for (release, bytes) in &fixtures() {
        let features = KernelFeatures::detect(&KernelBtf::from_bytes(bytes).unwrap());
        assert_eq!(
            features.task_pt_regs,
            version(release) >= (5, 15),
            "{release}"
        );
    }
}

/// `sched_switch` gained the leaving task's state as an argument in 5.18: the matrix's 5.10
/// reads it from the task, every later kernel from the argument (its verifier would refuse a
/// read past 5.10's three arguments).
#[test]
fn kernels_from_5_18_pass_the_leaving_tasks_state_to_sched_switch() {
    for (release, bytes) in &fixtures() {
        let features = KernelFeatures::detect(&KernelBtf::from_bytes(bytes).unwrap());
        assert_eq!(
            features.switch_prev_state,
            version(release) >= (5, 18),
            "{release}"
        );
    }
}
