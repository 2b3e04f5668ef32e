//! The fuzz targets of `fuzz/` (the pprof reader, durations and times, web paths and queries,
//! trace-context records), each run for a bounded time by `cargo xtask test`. cargo-fuzz
//! (libFuzzer, coverage-guided) works on stable Rust with `--sanitizer none`: the coverage
//! instrumentation is stable `-C` flags; only the sanitizers need nightly. A crash fails the
//! step and leaves its input under `target/fuzz/artifacts/<target>/`.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result};

use crate::{cargo_cmd::cargo, paths, process};

/// Every target, by its `[[bin]]` name in fuzz/Cargo.toml.
pub const TARGETS: [&str; 4] = ["pprof", "times", "web", "trace_record"];

/// Seconds each target runs in `cargo xtask test`.
pub const SECONDS: u32 = 30;

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Whether cargo-fuzz (the pinned version) is installed: one `--version` call.
pub fn installed() -> Result<bool> {
    let program = paths::cargo_bin_dir()?.join("cargo-fuzz");
    let output = process::output_if_ok(Command::new(program).args(["fuzz", "--version"]));
    Ok(output.is_some_and(|out| out.contains(CARGO_FUZZ_VERSION)))
}

pub fn install(root: &Path) -> Result<()> {
    println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let mut cmd = cargo(root, &["install", "cargo-fuzz", "--locked", "--version"])?;
    process::run(cmd.arg(CARGO_FUZZ_VERSION)).context("could not install cargo-fuzz")
}

/// Runs every target for [`SECONDS`]. New inputs go to `target/fuzz/corpus/<target>` (kept
/// between runs); the corpus in the repository, `fuzz/corpus/<target>`, seeds it and is never
/// written.
pub fn run_all(root: &Path) -> Result<()> {
    for target in TARGETS {
        run_one(root, target, SECONDS).with_context(|| format!("fuzz target `{target}`"))?;
    }
    Ok(())
}

fn run_one(root: &Path, target: &str, seconds: u32) -> Result<()> {
    let scratch = paths::target_dir(root).join("fuzz");
    let corpus = scratch.join("corpus").join(target);
    let artifacts = scratch.join("artifacts").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    fs::create_dir_all(&artifacts).with_context(|| format!("creating {}", artifacts.display()))?;
    let seeds = root.join("fuzz").join("corpus").join(target);
    let mut cmd = cargo(
        root,
        &["fuzz", "run", "--fuzz-dir", "fuzz", "--sanitizer", "none"],
    )?;
    cmd.arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .args(libfuzzer_args(
            seconds,
            &format!("{}/", artifacts.display()),
        ));
    process::run(&mut cmd)
}

/// libFuzzer's flags: a time bound, inputs up to 1 MiB (the pprof target's bombs need room),
/// crash inputs into `artifacts`.
fn libfuzzer_args(seconds: u32, artifacts: &str) -> Vec<String> {
    vec![
        format!("-max_total_time={seconds}"),
        "-max_len=1048576".into(),
        "-rss_limit_mb=2048".into(),
        format!("-artifact_prefix={artifacts}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_seed_corpus_and_a_bin() {
        let root = paths::workspace_root();
        let manifest = fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        for target in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target}"
            );
            let seeds = fs::read_dir(root.join("fuzz/corpus").join(target)).unwrap();
            assert!(seeds.count() > 0, "{target} has no seeds");
        }
    }

    #[test]
    fn runs_are_bounded() {
        let args = libfuzzer_args(30, "a/");
        assert!(args.contains(&"-max_total_time=30".to_owned()));
        assert!(args.iter().any(|a| a.starts_with("-rss_limit_mb=")));
    }
}
