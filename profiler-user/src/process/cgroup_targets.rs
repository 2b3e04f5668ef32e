//! `--cgroup PATH` and `--container ID` to cgroup v2 IDs, which the BPF program compares with the
//! sampled task's cgroup and its ancestors. A cgroup v2 ID is the inode number of the cgroup's
//! directory (the kernfs node ID), the value `bpf_get_current_ancestor_cgroup_id` returns.
//! Only the unified (v2) hierarchy has such IDs: on a v1-only host these flags are refused.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::container::segment_container_id;

/// statfs magic of cgroup2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Deep enough for every runtime's layout (Kubernetes with systemd: 4 levels to a container).
const MAX_WALK_DEPTH: usize = 12;
/// Docker shows 12 hex digits; anything shorter is too likely to name several containers.
const MIN_PREFIX: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CgroupTargetError {
    #[error(
        "--cgroup and --container need cgroup v2 (the unified hierarchy), and none is mounted; \
         mount it (or boot with systemd.unified_cgroup_hierarchy=1), or target with --pid"
    )]
    NoCgroupV2,
    #[error(
        "--cgroup {0}: no such cgroup under {1} (give a directory of the cgroup2 mount, or the path /proc/PID/cgroup shows)"
    )]
    NoSuchCgroup(String, String),
    #[error(
        "--container {0}: not a container ID (64 hex digits, a prefix of at least 12, or runtime://ID)"
    )]
    BadContainerId(String),
    #[error("--container {0}: no running container has this ID (looked for its cgroup under {1})")]
    NoSuchContainer(String, String),
    #[error("--container {0}: {1} containers start with this prefix; give more digits")]
    AmbiguousContainer(String, usize),
}

/// A cgroup to sample, as the user named it and as the kernel knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupTarget {
    pub path: PathBuf,
    pub id: u64,
}

impl CgroupTarget {
    /// The cgroup of directory `dir`; `None` when it is gone.
    fn of_dir(dir: PathBuf) -> Option<Self> {
        let id = fs::metadata(&dir).ok()?.ino();
        Some(CgroupTarget { path: dir, id })
    }
}

/// Resolves every `--cgroup` and `--container`. Nothing asked: nothing to do (no cgroup2 needed).
pub fn resolve(
    cgroups: &[PathBuf],
    containers: &[String],
) -> Result<Vec<CgroupTarget>, CgroupTargetError> {
    if cgroups.is_empty() && containers.is_empty() {
        return Ok(Vec::new());
    }
    let mount = cgroup2_mount().ok_or(CgroupTargetError::NoCgroupV2)?;
    let mut targets = Vec::new();
    for path in cgroups {
        targets.push(resolve_cgroup(&mount, path)?);
    }
    for id in containers {
        targets.extend(resolve_container(&mount, id)?);
    }
    Ok(targets)
}

/// Where the unified hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host). A mount of the whole tree is preferred over one of a subtree.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = procfs::process::Process::myself().ok()?.mountinfo().ok()?;
    let mut cgroup2: Vec<_> = mounts
        .into_iter()
        .filter(|m| m.fs_type == "cgroup2")
        .collect();
    cgroup2.sort_by_key(|m| m.root != "/");
    cgroup2.into_iter().next().map(|m| m.mount_point)
}

/// A directory of the cgroup2 mount, given as such or as `/proc/PID/cgroup` shows it.
pub fn resolve_cgroup(mount: &Path, path: &Path) -> Result<CgroupTarget, CgroupTargetError> {
    let candidates = [
        path.to_owned(),
        mount.join(path.strip_prefix("/").unwrap_or(path)),
    ];
    candidates
        .into_iter()
        .find(|dir| is_cgroup2_dir(dir))
        .and_then(CgroupTarget::of_dir)
        .ok_or_else(|| {
            CgroupTargetError::NoSuchCgroup(path.display().to_string(), mount.display().to_string())
        })
}

fn is_cgroup2_dir(dir: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the struct it is given from a NUL-terminated path.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    stat.f_type as i64 == CGROUP2_SUPER_MAGIC && dir.is_dir()
}

/// The cgroups of the container whose ID is `given` (or starts with it).
fn resolve_container(mount: &Path, given: &str) -> Result<Vec<CgroupTarget>, CgroupTargetError> {
    let prefix = normalize_container_id(given)
        .ok_or_else(|| CgroupTargetError::BadContainerId(given.to_owned()))?;
    let mut found = Vec::new();
    walk(mount, 0, &mut |dir, name| {
        if let Some(id) = segment_container_id(name)
            && id.starts_with(&prefix)
        {
            found.push((id, dir.to_owned()));
        }
    });
    let ids: BTreeSet<&String> = found.iter().map(|(id, _)| id).collect();
    match ids.len() {
        0 => Err(CgroupTargetError::NoSuchContainer(
            given.to_owned(),
            mount.display().to_string(),
        )),
        1 => Ok(found
            .into_iter()
            .filter_map(|(_, dir)| CgroupTarget::of_dir(dir))
            .collect()),
        n => Err(CgroupTargetError::AmbiguousContainer(given.to_owned(), n)),
    }
}

/// `containerd://<id>` (as Kubernetes reports it), any case, a full ID or a prefix.
fn normalize_container_id(given: &str) -> Option<String> {
    let id = given.rsplit_once("://").map_or(given, |(_, id)| id);
    let id = id.to_ascii_lowercase();
    ((MIN_PREFIX..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(id)
}

/// Calls `visit(dir, name)` for every cgroup directory below `dir`, down to a fixed depth.
fn walk(dir: &Path, depth: usize, visit: &mut dyn FnMut(&Path, &str)) {
    if depth >= MAX_WALK_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if let Some(name) = entry.file_name().to_str() {
            visit(&path, name);
        }
        walk(&path, depth + 1, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f5e8d1c2b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn container_ids_are_normalized() {
        assert_eq!(normalize_container_id(ID).as_deref(), Some(ID));
        assert_eq!(
            normalize_container_id(&format!("containerd://{}", ID.to_uppercase())).as_deref(),
            Some(ID)
        );
        assert_eq!(
            normalize_container_id(&ID[..12]).as_deref(),
            Some(&ID[..12])
        );
        assert_eq!(normalize_container_id(&ID[..11]), None, "too short");
        assert_eq!(normalize_container_id("not-hex-at-all-xyz"), None);
        assert_eq!(normalize_container_id(&format!("{ID}0")), None, "too long");
    }

    #[test]
    fn a_directory_that_is_not_a_cgroup_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_cgroup(dir.path(), Path::new("/kubepods.slice")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--cgroup /kubepods.slice: no such cgroup under"),
            "{err}"
        );
        // A real directory, but not on cgroup2.
        assert!(resolve_cgroup(Path::new("/"), dir.path()).is_err());
    }

    #[test]
    fn the_walk_finds_container_directories_by_prefix() {
        // A plain directory tree stands in for the cgroup2 mount: the walk only reads names.
        let root = tempfile::tempdir().unwrap();
        let other = "ab".repeat(32);
        for dir in [
            format!("kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope/sub"),
            format!("system.slice/docker-{other}.scope"),
            "user.slice/session-1.scope".to_owned(),
        ] {
            fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let mut seen = Vec::new();
        walk(root.path(), 0, &mut |dir, name| {
            if let Some(id) = segment_container_id(name) {
                seen.push((id, dir.strip_prefix(root.path()).unwrap().to_owned()));
            }
        });
        seen.sort();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].0, ID);
        assert!(seen[0].1.ends_with(format!("cri-containerd-{ID}.scope")));
        assert_eq!(seen[1].0, other);
    }

    #[test]
    fn this_host_resolves_its_own_cgroup() {
        // Every host this project supports mounts cgroup2 (alone, or beside v1 on a hybrid one).
        let mount = cgroup2_mount().expect("a cgroup2 mount");
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 path in /proc/self/cgroup");
        let target = resolve_cgroup(&mount, Path::new(path)).unwrap();
        // The root cgroup's ID is 1 (a process on a hybrid host may sit there in v2).
        assert!(target.id >= 1, "{target:?}");
        assert_eq!(resolve_cgroup(&mount, &target.path).unwrap(), target);
    }
}
