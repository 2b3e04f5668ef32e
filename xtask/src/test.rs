//! `cargo xtask test`: the checks CI runs (.ci/run), stopping at the first failing step.
//!
//! The tests that need root are `#[ignore = "needs root: ..."]`: run as root, this adds
//! `--include-ignored` for the test binaries; run as a user they show as ignored, and in CI
//! (`CI=true`), where they must run, a user is refused before anything starts.

use std::{env, ffi::OsString, path::Path};

use anyhow::{Context, Result, bail};

use crate::{
    cargo_cmd::{build_profiler, cargo},
    deploy_tools, fuzz, kernels,
    privilege::is_root,
    process::run,
    setup,
};

/// Every package that builds for the host. The BPF crates are `no_std`/`no_main` for the BPF
/// target and are built only through build scripts: ours by profiler-user's, the benchmark's
/// floor program by the harness's.
const HOST_PACKAGES: [&str; 5] = [
    "--workspace",
    "--exclude",
    "profiler-ebpf",
    "--exclude",
    "profiler-bench-floor",
];

pub fn test(root: &Path, cargo_test_args: Vec<OsString>) -> Result<()> {
    let ci = env::var("CI").as_deref() == Ok("true");
    let root_tests = runs_root_tests(is_root(), ci)?;
    if !root_tests {
        println!(
            "xtask: not root: the tests that need root will show as ignored (run as root to \
             include them)"
        );
    }
    let cargo_test_args = if root_tests {
        with_include_ignored(cargo_test_args)
    } else {
        cargo_test_args
    };
    step("setup", || setup::setup(root))?;
    step("fmt", || {
        run(&mut cargo(root, &["fmt", "--all", "--", "--check"])?)
    })?;
    step("clippy", || {
        let mut cmd = cargo(root, &["clippy", "--all-targets"])?;
        run(cmd.args(HOST_PACKAGES).args(["--", "-D", "warnings"]))
    })?;
    let bin = step("build", || build_profiler(root))?;
    let gated: Vec<String> = kernels::pins::GATED.map(String::from).to_vec();
    // The feature-detection tests read the BTF of the matrix's kernels.
    step("kernel fixtures", || kernels::fetch(root, &gated))?;
    step("test", || {
        let mut cmd = cargo(root, &["test"])?;
        cmd.args(HOST_PACKAGES).args(&cargo_test_args);
        // The integration tests run the release binary built above, and the deploy tests the
        // linters that setup installed.
        cmd.env("PROFILER_BIN", &bin)
            .env(deploy_tools::BIN_DIR_VAR, deploy_tools::bin_dir(root))
            .env(kernels::BTF_FIXTURES_VAR, kernels::kernels_dir(root));
        run(&mut cmd)
    })?;
    step("fuzz", || fuzz::run_all(root))?;
    step("kernels", || {
        // The gated kernels under QEMU, and the host's own in place.
        let mut matrix = gated.clone();
        matrix.push(kernels::HOST.to_owned());
        if kernels::run_matrix(root, &matrix)? {
            Ok(())
        } else {
            bail!("the profiler failed on a kernel of the matrix (table above)")
        }
    })
}

/// Whether the tests that need root run: as root, yes; as a user, no, and in CI that is an error
/// (there they must run, and an ignored test would hide a failure).
fn runs_root_tests(is_root: bool, ci: bool) -> Result<bool> {
    if !is_root && ci {
        bail!(
            "the tests need root (they load BPF programs), and CI=true: run `cargo xtask test` as root"
        );
    }
    Ok(is_root)
}

/// `cargo test` arguments (`[cargo args] [-- test binary args]`) with `--include-ignored` added
/// to the test binaries' arguments, unless they already say which ignored tests to run
/// (`--ignored` or `--include-ignored`; libtest refuses both together).
fn with_include_ignored(mut args: Vec<OsString>) -> Vec<OsString> {
    match args.iter().position(|arg| arg == "--") {
        Some(separator) => {
            let chosen = args[separator + 1..]
                .iter()
                .any(|arg| arg == "--ignored" || arg == "--include-ignored");
            if !chosen {
                args.push("--include-ignored".into());
            }
        }
        None => args.extend(["--".into(), "--include-ignored".into()]),
    }
    args
}

/// Prints a header, runs the step, and names the step if it fails.
fn step<T>(name: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {name}");
    body().with_context(|| format!("step `{name}` failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn root_runs_the_root_tests_in_ci_and_out() {
        assert!(runs_root_tests(true, true).unwrap());
        assert!(runs_root_tests(true, false).unwrap());
    }

    #[test]
    fn a_user_sees_them_ignored_outside_ci() {
        assert!(!runs_root_tests(false, false).unwrap());
    }

    #[test]
    fn a_user_in_ci_is_refused_in_one_line() {
        let err = runs_root_tests(false, true).unwrap_err().to_string();
        assert!(
            err.contains("need root") && err.contains("CI=true"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn include_ignored_goes_after_a_new_double_dash() {
        assert_eq!(
            with_include_ignored(Vec::new()),
            args(&["--", "--include-ignored"])
        );
        assert_eq!(
            with_include_ignored(args(&["-p", "xtask", "name"])),
            args(&["-p", "xtask", "name", "--", "--include-ignored"])
        );
    }

    #[test]
    fn include_ignored_joins_the_test_binary_arguments() {
        assert_eq!(
            with_include_ignored(args(&["name", "--", "--nocapture"])),
            args(&["name", "--", "--nocapture", "--include-ignored"])
        );
        assert_eq!(
            with_include_ignored(args(&["--"])),
            args(&["--", "--include-ignored"])
        );
    }

    #[test]
    fn a_choice_of_ignored_tests_is_left_alone() {
        for chosen in [
            args(&["--", "--ignored"]),
            args(&["name", "--", "--include-ignored", "--nocapture"]),
        ] {
            assert_eq!(with_include_ignored(chosen.clone()), chosen);
        }
    }
}
