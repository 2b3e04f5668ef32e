//! Which container, and which Kubernetes pod, a process runs in: read from its cgroup path, the
//! one place every runtime writes it. The runtimes' naming is parsed here by hand: no crate
//! covers the naming of cgroupfs and systemd drivers across Docker, containerd, CRI-O and podman.
//!
//! Shapes recognised (v1 or v2, any depth):
//!   /docker/<id>                                                    Docker, cgroupfs driver
//!   /system.slice/docker-<id>.scope                                 Docker, systemd driver
//!   /kubepods/burstable/pod<uid>/<id>                               Kubernetes, cgroupfs driver
//!   /kubepods.slice/kubepods-burstable.slice/
//!       kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope   systemd driver
//!   .../crio-<id>.scope, .../libpod-<id>.scope, .../containerd-<id>.scope
//! where <id> is 64 hex digits. A runtime's helper cgroups (`crio-conmon-<id>`) are not
//! containers.

use std::sync::Arc;

/// The container of a process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerInfo {
    /// The runtime's container ID: 64 lowercase hex digits.
    pub container_id: String,
    /// The Kubernetes pod UID, with dashes, when the container belongs to a pod.
    pub pod_uid: Option<String>,
}

/// Prefixes runtimes put before the ID in a systemd scope name.
const SCOPE_PREFIXES: [&str; 5] = [
    "cri-containerd-",
    "containerd-",
    "docker-",
    "crio-",
    "libpod-",
];

/// The container named by `/proc/<pid>/cgroup` paths, the first one found.
pub fn from_cgroup_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<ContainerInfo> {
    paths.into_iter().find_map(from_cgroup_path)
}

/// The container named by one cgroup path.
pub fn from_cgroup_path(path: &str) -> Option<ContainerInfo> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // The innermost container segment: a pod's pause container and the app share the pod.
    let container_id = segments
        .iter()
        .rev()
        .find_map(|s| segment_container_id(s))?;
    let pod_uid = segments.iter().rev().find_map(|s| pod_uid(s));
    Some(ContainerInfo {
        container_id,
        pod_uid,
    })
}

/// The container ID a single path segment (a cgroup directory's name) carries.
pub(super) fn segment_container_id(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = SCOPE_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
    is_hex_id(id).then(|| id.to_ascii_lowercase())
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid with _>.slice` (systemd).
fn pod_uid(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".slice").unwrap_or(segment);
    let (_, uid) = name.rsplit_once("pod")?;
    let uid = uid.replace('_', "-");
    is_uuid(&uid).then(|| uid.to_ascii_lowercase())
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Reads the container of process `pid`; `None` on the host or when the process is gone.
pub fn of_process(process: &procfs::process::Process) -> Option<Arc<ContainerInfo>> {
    let groups = process.cgroups().ok()?;
    from_cgroup_paths(groups.0.iter().map(|g| g.pathname.as_str())).map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f5e8d1c2b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    const UID: &str = "5a2b7c1d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";

    fn info(pod: Option<&str>) -> Option<ContainerInfo> {
        Some(ContainerInfo {
            container_id: ID.to_owned(),
            pod_uid: pod.map(str::to_owned),
        })
    }

    #[test]
    fn docker_with_either_driver() {
        assert_eq!(from_cgroup_path(&format!("/docker/{ID}")), info(None));
        assert_eq!(
            from_cgroup_path(&format!("/system.slice/docker-{ID}.scope")),
            info(None)
        );
    }

    #[test]
    fn kubernetes_pods_with_either_driver() {
        let cgroupfs = format!("/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(from_cgroup_path(&cgroupfs), info(Some(UID)));
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(from_cgroup_path(&systemd), info(Some(UID)));
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(from_cgroup_path(&guaranteed), info(Some(UID)));
    }

    #[test]
    fn crio_podman_and_plain_containerd() {
        for scope in [format!("crio-{ID}.scope"), format!("libpod-{ID}.scope")] {
            assert_eq!(
                from_cgroup_path(&format!("/machine.slice/{scope}")),
                info(None)
            );
        }
        let nested = format!("/system.slice/containerd.service/k8s.io/{ID}");
        assert_eq!(from_cgroup_path(&nested), info(None));
    }

    #[test]
    fn host_processes_and_lookalikes_are_not_containers() {
        assert_eq!(from_cgroup_path("/"), None);
        assert_eq!(
            from_cgroup_path("/user.slice/user-1000.slice/session-2.scope"),
            None
        );
        // 32 hex digits: a sandbox's own naming, not a container runtime's.
        assert_eq!(
            from_cgroup_path("/process_api/bce1ae77c20dd4be6207055d87dbadbb"),
            None
        );
        assert_eq!(
            from_cgroup_path(&format!("/machine.slice/crio-conmon-{ID}.scope")),
            None
        );
    }

    #[test]
    fn ids_are_lowercased_and_the_first_path_with_one_wins() {
        let upper = format!("/docker/{}", ID.to_uppercase());
        assert_eq!(from_cgroup_path(&upper), info(None));
        let paths = ["/", "/user.slice", &upper];
        assert_eq!(from_cgroup_paths(paths), info(None));
    }

    #[test]
    fn this_process_is_read_without_error() {
        let me = procfs::process::Process::myself().unwrap();
        // Whatever the answer (tests may run inside a container), reading it does not fail.
        let _ = of_process(&me);
        assert!(me.cgroups().is_ok());
    }
}
