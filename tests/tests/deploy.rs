//! `deploy/`: the Dockerfile passes hadolint, every Kubernetes manifest validates in strict mode
//! (unknown fields fail) against a current Kubernetes, the systemd unit passes
//! `systemd-analyze verify`, and the three agree with each other and with the profiler
//! (capabilities, metrics port, output directory).
//!
//! No root needed. The linters come from `cargo xtask setup` (a venv under the target directory;
//! `cargo xtask test` passes its `bin` in `PROFILER_DEPLOY_TOOLS`). A missing tool skips a test
//! with the reason on a developer's machine, and fails it in CI (`CI=true`): see
//! `integration_tests::skip_or_fail`.

use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use integration_tests::skip_or_fail;
use serde_json::Value;

/// The newest version the pinned kubernetes-validate (xtask/src/deploy_tools.rs) knows.
const KUBERNETES_VERSION: &str = "1.37.0";

/// The DaemonSet's added capabilities, each explained in README.md ("Deploy").
const CAPABILITIES: [&str; 7] = [
    "BPF",
    "PERFMON",
    "SYS_PTRACE",
    "SYS_RESOURCE",
    "DAC_READ_SEARCH",
    "CHECKPOINT_RESTORE",
    "SYSLOG",
];
/// Not in the systemd unit, whose `LimitMEMLOCK=infinity` does its one job.
const NOT_IN_SYSTEMD: &str = "SYS_RESOURCE";

const OUTPUT_DIR: &str = "/var/lib/profiler";
const METRICS_PORT: u64 = 9464;

// ---------------------------------------------------------------------------------------------
// Linters

#[test]
fn dockerfile_passes_hadolint() {
    let Some(hadolint) = venv_tool("hadolint") else {
        return;
    };
    // Every finding fails, whatever its level: fix it, or justify it inline with
    // `# hadolint ignore=DLxxxx` and a reason.
    let (ok, output) = run(Command::new(hadolint)
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(deploy("Dockerfile")));
    assert!(ok && output.trim().is_empty(), "hadolint:\n{output}");
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let Some(validate) = venv_tool("kubernetes-validate") else {
        return;
    };
    let manifests = manifests();
    let (ok, output) = run(Command::new(validate)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(&manifests));
    assert!(ok, "kubernetes-validate:\n{output}");
    // Warnings (a deprecated API, say) fail too: every line must be a pass.
    for line in output.lines() {
        assert!(
            line.starts_with("INFO ") && line.contains(" passed "),
            "kubernetes-validate:\n{output}"
        );
    }
    for manifest in &manifests {
        assert!(
            output.contains(&format!("{} passed", manifest.display())),
            "{} was not validated:\n{output}",
            manifest.display()
        );
    }
}

#[test]
fn systemd_unit_verifies() {
    let Some(analyze) = system_tool("systemd-analyze") else {
        return;
    };
    // `verify` insists that ExecStart's program exists; the unit names where the README installs
    // the profiler, so check a copy that runs an executable that exists (this test).
    let unit = fs::read_to_string(deploy("systemd/profiler.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/profiler "),
        "{unit}"
    );
    let this = env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("profiler.service");
    fs::write(
        &copy,
        unit.replace("/usr/local/bin/profiler", this.to_str().unwrap()),
    )
    .unwrap();
    // `verify` prints unknown keys and bad values but still exits 0: any output fails.
    let (ok, output) = run(Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy));
    assert!(
        ok && output.trim().is_empty(),
        "systemd-analyze verify:\n{output}"
    );
}

// ---------------------------------------------------------------------------------------------
// What the files say

#[test]
fn kustomization_lists_every_manifest_and_hides_from_apply_f() {
    let Some([kustomization]) = yaml(&deploy("kubernetes/Kustomization")).map(exactly) else {
        return;
    };
    let resources: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect();
    let files: Vec<String> = manifests()
        .iter()
        .map(|path| path.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(resources, files);
    // `kubectl apply -f deploy/kubernetes/` reads every .yaml/.yml/.json: a kustomization.yaml
    // there would be sent as a resource and rejected.
    for name in ["kustomization.yaml", "kustomization.yml"] {
        assert!(!deploy("kubernetes").join(name).exists(), "{name}");
    }
}

#[test]
fn daemonset_is_not_privileged_and_adds_exactly_the_documented_capabilities() {
    let Some(resources) = resources() else {
        return;
    };
    let pod = &daemonset(&resources)["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "every process of the node");
    assert_ne!(pod["hostNetwork"], true, "the pod keeps its own network");
    assert_ne!(pod["securityContext"]["privileged"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let security = &containers[0]["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        strings(&security["capabilities"]["add"]),
        CAPABILITIES.map(str::to_owned).into(),
    );
}

#[test]
fn daemonset_probes_and_scrape_annotations_use_the_metrics_address() {
    let Some(resources) = resources() else {
        return;
    };
    let template = &daemonset(&resources)["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    assert_eq!(
        env_value(container, "PROFILER_METRICS_ADDRESS"),
        format!("0.0.0.0:{METRICS_PORT}"),
        "the pod IP, where the kubelet and Prometheus connect"
    );
    let ports = container["ports"].as_array().unwrap();
    let metrics = ports.iter().find(|port| port["name"] == "metrics").unwrap();
    assert_eq!(metrics["containerPort"], METRICS_PORT);
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(
            get["port"] == "metrics" || get["port"] == METRICS_PORT,
            "{probe}: {get}"
        );
    }
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], METRICS_PORT.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
}

#[test]
fn daemonset_writes_only_to_the_node_output_directory() {
    let Some(resources) = resources() else {
        return;
    };
    let pod = &daemonset(&resources)["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(env_value(container, "PROFILER_OUTPUT_DIR"), OUTPUT_DIR);
    assert_eq!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|var| var["name"] == "PROFILER_NODE_NAME")
            .unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let volumes = pod["volumes"].as_array().unwrap();
    let host_path = |name: &Value| {
        let volume = volumes.iter().find(|volume| volume["name"] == *name);
        volume.unwrap()["hostPath"].clone()
    };
    let mut host_paths = BTreeSet::new();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let source = host_path(&mount["name"]);
        let path = source["path"].as_str().unwrap().to_owned();
        if mount["mountPath"] == OUTPUT_DIR {
            assert_eq!(path, OUTPUT_DIR);
            assert_eq!(source["type"], "DirectoryOrCreate");
            assert_ne!(mount["readOnly"], true);
        } else {
            assert_eq!(mount["readOnly"], true, "{mount}");
        }
        host_paths.insert(path);
    }
    let expected = [OUTPUT_DIR, "/sys/fs/cgroup", "/sys/kernel/btf"];
    assert_eq!(host_paths, expected.map(str::to_owned).into());
}

#[test]
fn manifests_share_one_namespace_and_service_account() {
    let Some(resources) = resources() else {
        return;
    };
    let of_kind = |kind: &str| {
        let mut found = resources.iter().filter(|resource| resource["kind"] == kind);
        let resource = found.next().unwrap_or_else(|| panic!("no {kind}"));
        assert!(found.next().is_none(), "one {kind}");
        resource
    };
    let namespace = &of_kind("Namespace")["metadata"]["name"];
    assert_eq!(
        of_kind("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged",
        "host PID, host paths and capabilities need the privileged Pod Security level"
    );
    let account = of_kind("ServiceAccount");
    let daemonset = of_kind("DaemonSet");
    assert_eq!(&account["metadata"]["namespace"], namespace);
    assert_eq!(&daemonset["metadata"]["namespace"], namespace);
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );
}

#[test]
fn systemd_unit_has_the_daemonset_capabilities_and_keeps_proc_and_kallsyms() {
    let unit = fs::read_to_string(deploy("systemd/profiler.service")).unwrap();
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .collect();
    let value = |key: &str| {
        let mut values = settings.iter().filter(|(k, _)| *k == key);
        let (_, value) = values.next().unwrap_or_else(|| panic!("no {key}="));
        assert!(values.next().is_none(), "one {key}=");
        *value
    };
    let expected: BTreeSet<String> = CAPABILITIES
        .iter()
        .filter(|cap| **cap != NOT_IN_SYSTEMD)
        .map(|cap| format!("CAP_{cap}"))
        .collect();
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let caps: BTreeSet<String> = value(key).split_whitespace().map(str::to_owned).collect();
        assert_eq!(caps, expected, "{key}");
    }
    assert_eq!(value("LimitMEMLOCK"), "infinity");
    assert_eq!(value("StateDirectory"), "profiler");
    assert!(
        value("ExecStart").contains(&format!(" record --output-dir {OUTPUT_DIR}")),
        "{}",
        value("ExecStart")
    );
    // /home binaries must stay readable; kallsyms needs CAP_SYSLOG and must stay visible;
    // every process's /proc/PID must stay visible.
    assert_eq!(value("ProtectHome"), "read-only");
    for hides in [
        "ProtectKernelTunables",
        "ProtectKernelLogs",
        "ProtectProc",
        "ProcSubset",
        "PrivateUsers",
    ] {
        assert!(
            settings.iter().all(|(key, _)| *key != hides),
            "{hides}= hides what the profiler reads"
        );
    }
}

#[test]
fn image_default_command_writes_where_the_deployments_mount() {
    let dockerfile = fs::read_to_string(deploy("Dockerfile")).unwrap();
    let last = |instruction: &str| {
        dockerfile
            .lines()
            .rfind(|line| line.starts_with(instruction))
    };
    assert_eq!(
        last("ENTRYPOINT "),
        Some(r#"ENTRYPOINT ["/usr/local/bin/profiler"]"#)
    );
    assert_eq!(
        last("CMD "),
        Some(format!(r#"CMD ["record", "--output-dir", "{OUTPUT_DIR}"]"#).as_str())
    );
    let ignore = fs::read_to_string(workspace().join(".dockerignore")).unwrap();
    for excluded in ["/target/", "/.git/"] {
        assert!(ignore.lines().any(|line| line == excluded), "{excluded}");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn deploy(path: &str) -> PathBuf {
    workspace().join("deploy").join(path)
}

/// `deploy/kubernetes/*.yaml`, in name order (the order `kubectl apply -f` applies them).
fn manifests() -> Vec<PathBuf> {
    let mut manifests: Vec<PathBuf> = fs::read_dir(deploy("kubernetes"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    manifests.sort();
    assert!(!manifests.is_empty());
    manifests
}

/// Where `cargo xtask setup` put the linters: `PROFILER_DEPLOY_TOOLS`, or the venv's default
/// place in the target directory (so that a plain `cargo test` finds them too).
fn tools_dir() -> PathBuf {
    if let Some(dir) = env::var_os("PROFILER_DEPLOY_TOOLS") {
        return dir.into();
    }
    let target = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), |dir| workspace().join(dir));
    target.join("deploy-tools").join("bin")
}

fn venv_tool(name: &str) -> Option<PathBuf> {
    present(tools_dir().join(name))
}

/// A program of the system (Debian package), from PATH or /usr/bin.
fn system_tool(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    let found = env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    present(found.unwrap_or_else(|| Path::new("/usr/bin").join(name)))
}

/// `path` if it exists. If not: in CI a failure, elsewhere a skip, both saying what to do.
fn present(path: PathBuf) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path);
    }
    skip_or_fail(&format!(
        "{} is missing: run `cargo xtask setup`",
        path.display()
    ));
    None
}

/// Runs `cmd`; whether it succeeded, and its stdout and stderr together.
fn run(cmd: &mut Command) -> (bool, String) {
    let output = cmd
        .output()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The documents of a YAML file, read by the venv's PyYAML (the workspace has no YAML crate).
fn yaml(path: &Path) -> Option<Vec<Value>> {
    const TO_JSON: &str = "import json, sys, yaml\n\
                           print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let python = venv_tool("python")?;
    let (ok, output) = run(Command::new(python).args(["-c", TO_JSON]).arg(path));
    assert!(ok, "{}: {output}", path.display());
    Some(serde_json::from_str(&output).unwrap())
}

/// Every resource of `deploy/kubernetes/*.yaml`.
fn resources() -> Option<Vec<Value>> {
    let mut resources = Vec::new();
    for manifest in manifests() {
        resources.extend(yaml(&manifest)?);
    }
    Some(resources)
}

fn exactly<const N: usize>(documents: Vec<Value>) -> [Value; N] {
    documents
        .try_into()
        .unwrap_or_else(|documents: Vec<Value>| {
            panic!("expected {N} documents, found {}", documents.len())
        })
}

fn daemonset(resources: &[Value]) -> &Value {
    resources
        .iter()
        .find(|resource| resource["kind"] == "DaemonSet")
        .expect("a DaemonSet")
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a str {
    let vars = container["env"].as_array().unwrap();
    let var = vars.iter().find(|var| var["name"] == name);
    var.unwrap_or_else(|| panic!("no {name}"))["value"]
        .as_str()
        .unwrap()
}

fn strings(list: &Value) -> BTreeSet<String> {
    let items = list.as_array().unwrap().iter();
    items
        .map(|item| item.as_str().unwrap().to_owned())
        .collect()
}
