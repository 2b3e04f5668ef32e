//! Test cgroups: created in the host's cgroup hierarchy, named like a container runtime's, and
//! removed when dropped.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::wait_until;

/// A cgroup hierarchy to create cgroups in: the cgroup2 mount, else the v1 `name=systemd` one.
pub fn cgroup_root() -> Result<PathBuf> {
    let mounts = procfs::process::Process::myself()?.mountinfo()?;
    let v2 = mounts.0.iter().find(|m| m.fs_type == "cgroup2");
    let v1 = || {
        mounts
            .0
            .iter()
            .find(|m| m.fs_type == "cgroup" && m.super_options.contains_key("name=systemd"))
    };
    v2.or_else(v1)
        .map(|m| m.mount_point.clone())
        .context("no cgroup2 or name=systemd cgroup hierarchy is mounted")
}

/// Nested cgroups, removed innermost first when dropped (once their processes have exited).
pub struct TestCgroup {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl TestCgroup {
    /// Creates `root/path[0]/path[1]/...`; every segment must be new.
    pub fn create(root: &Path, path: &[&str]) -> Result<Self> {
        let mut cgroup = Self {
            root: root.to_path_buf(),
            dirs: Vec::new(),
        };
        let mut dir = root.to_path_buf();
        for segment in path {
            dir.push(segment);
            fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            cgroup.dirs.push(dir.clone());
        }
        Ok(cgroup)
    }

    /// The cgroup of a containerd container in a burstable Kubernetes pod (systemd driver):
    /// `.../kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
    /// cri-containerd-<id>.scope`, under a top level unique to this test process (parallel or
    /// leftover runs do not collide).
    pub fn kubernetes_containerd(container_id: &str, pod_uid: &str) -> Result<Self> {
        let pod_slice = format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_"));
        let scope = format!("cri-containerd-{container_id}.scope");
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let top = format!("profiler-test-{}-{n}.slice", std::process::id());
        Self::create(
            &cgroup_root()?,
            &[
                &top,
                "kubepods.slice",
                "kubepods-burstable.slice",
                &pod_slice,
                &scope,
            ],
        )
    }

    /// The innermost cgroup's `cgroup.procs`: writing a PID there moves the process in.
    pub fn procs_file(&self) -> Result<PathBuf> {
        Ok(self
            .dirs
            .last()
            .context("empty cgroup path")?
            .join("cgroup.procs"))
    }

    /// Moves process `pid` into the innermost cgroup, and returns once `/proc/<pid>/cgroup` says
    /// it is there.
    pub fn add(&self, pid: u32) -> Result<()> {
        let procs = self.procs_file()?;
        fs::write(&procs, pid.to_string())
            .with_context(|| format!("cannot move {pid} into {}", procs.display()))?;
        let dir = self.dirs.last().context("empty cgroup path")?;
        // As `/proc/<pid>/cgroup` names it, at the end of a line: `0::/a/b` (v2) or
        // `1:name=systemd:/a/b` (v1).
        let path = format!(":/{}", dir.strip_prefix(&self.root)?.display());
        let file = format!("/proc/{pid}/cgroup");
        let what = format!("{path} in {file}");
        wait_until(Duration::from_secs(10), &what, || {
            let text = fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
            Ok(text.lines().any(|line| line.ends_with(&path)).then_some(()))
        })
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}
