//! `cargo xtask test`: the checks CI runs (.ci/run), stopping at the first failing step.

use std::{ffi::OsString, path::Path};

use anyhow::{Context, Result};

use crate::{
    cargo_cmd::{build_profiler, cargo},
    deploy_tools,
    process::run,
    setup,
};

/// Every package that builds for the host. The BPF crate is `no_std`/`no_main` for the BPF target
/// and is built only through profiler-user's build.rs.
const HOST_PACKAGES: [&str; 3] = ["--workspace", "--exclude", "profiler-ebpf"];

pub fn test(root: &Path, cargo_test_args: Vec<OsString>) -> Result<()> {
    step("setup", || setup::setup(root))?;
    step("fmt", || {
        run(&mut cargo(root, &["fmt", "--all", "--", "--check"])?)
    })?;
    step("clippy", || {
        let mut cmd = cargo(root, &["clippy", "--all-targets"])?;
        run(cmd.args(HOST_PACKAGES).args(["--", "-D", "warnings"]))
    })?;
    let bin = step("build", || build_profiler(root))?;
    step("test", || {
        let mut cmd = cargo(root, &["test"])?;
        cmd.args(HOST_PACKAGES).args(&cargo_test_args);
        // The integration tests run the release binary built above, and the deploy tests the
        // linters that setup installed.
        cmd.env("PROFILER_BIN", &bin)
            .env(deploy_tools::BIN_DIR_VAR, deploy_tools::bin_dir(root));
        run(&mut cmd)
    })
}

/// Prints a header, runs the step, and names the step if it fails.
fn step<T>(name: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {name}");
    body().with_context(|| format!("step `{name}` failed"))
}
