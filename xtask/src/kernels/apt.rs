//! The pinned kernel packages (and the arm64 row's other packages), fetched with apt's ordinary
//! options pointed at a private sources list, state and cache under `target/kernels/apt` (and
//! `apt-arm64`): the machine's own sources, architectures and package state are never read or
//! changed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::pins::{self, Arch, KEYRING, Kernel, MIRROR, SECURITY_MIRROR};
use crate::process;

const UPDATE_LIMIT: Duration = Duration::from_secs(300);
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(600);
const QUERY_LIMIT: Duration = Duration::from_secs(60);
const UNPACK_LIMIT: Duration = Duration::from_secs(120);

/// apt with its own sources, state and cache under one directory, for one architecture.
pub struct PrivateApt {
    dir: PathBuf,
    arch: Arch,
    updated: bool,
}

impl PrivateApt {
    pub fn new(dir: PathBuf, arch: Arch) -> Self {
        Self {
            dir,
            arch,
            updated: false,
        }
    }

    /// The kernel package's `.deb`, downloaded (once) into `debs/`.
    pub fn download_kernel(&mut self, kernel: &Kernel) -> Result<PathBuf> {
        self.download(kernel.package, kernel.version)
    }

    /// The `.deb` of `package` at exactly `version`, downloaded (once) into `debs/`.
    pub fn download(&mut self, package: &str, version: &str) -> Result<PathBuf> {
        let debs = self.dir.join("debs");
        let deb = debs.join(deb_file_name(package, version, self.arch));
        if deb.is_file() {
            return Ok(deb);
        }
        let available = self.available(package)?;
        if !available.iter().any(|have| have == version) {
            bail!(
                "{package} {version} ({}) is not in Debian's archive any more (available: {}): \
                 change the pin in xtask/src/kernels/pins.rs",
                self.arch.debian(),
                if available.is_empty() {
                    "none".to_owned()
                } else {
                    available.join(", ")
                }
            );
        }
        fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;
        println!(
            "kernels: downloading {package} {version} ({})",
            self.arch.debian()
        );
        let mut download = self.command("apt-get");
        download
            .arg("download")
            .arg(format!("{package}={version}"))
            .current_dir(&debs);
        process::output_bounded(&mut download, DOWNLOAD_LIMIT)
            .with_context(|| format!("could not download {package}"))?;
        if !deb.is_file() {
            bail!("apt-get download did not write {}", deb.display());
        }
        Ok(deb)
    }

    /// The versions of `package` in the private lists, newest first.
    pub fn available(&mut self, package: &str) -> Result<Vec<String>> {
        self.update()?;
        let mut madison = self.command("apt-cache");
        madison.args(["madison", package]);
        let madison = process::output_bounded(&mut madison, QUERY_LIMIT)?;
        let madison = String::from_utf8_lossy(&madison.stdout);
        Ok(available_versions(&madison)
            .into_iter()
            .map(str::to_owned)
            .collect())
    }

    fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        for sub in ["etc", "state/lists/partial", "cache/archives/partial"] {
            let dir = self.dir.join(sub);
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let sources = self.dir.join("etc/sources.list");
        fs::write(&sources, sources_list(self.arch))
            .with_context(|| format!("cannot write {}", sources.display()))?;
        // An empty dpkg status: nothing of the host's installed packages is consulted.
        let status = self.dir.join("state/status");
        fs::write(&status, "").with_context(|| format!("cannot write {}", status.display()))?;
        println!(
            "kernels: apt-get update ({} lists under {})",
            self.arch.debian(),
            self.dir.display()
        );
        let mut update = self.command("apt-get");
        update.arg("update");
        process::output_bounded(&mut update, UPDATE_LIMIT)
            .context("could not read the package lists of the kernels' suites")?;
        self.updated = true;
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let dir = self.dir.display();
        let mut cmd = Command::new(program);
        for option in [
            format!("Dir::Etc::sourcelist={dir}/etc/sources.list"),
            "Dir::Etc::sourceparts=-".to_owned(),
            format!("Dir::State={dir}/state"),
            format!("Dir::State::status={dir}/state/status"),
            format!("Dir::Cache={dir}/cache"),
            // Only the Packages lists: no translations, no AppStream metadata.
            "Acquire::Languages=none".to_owned(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_owned(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".to_owned(),
            // The target directory may be one the `_apt` user cannot write.
            "APT::Sandbox::User=root".to_owned(),
            // This apt's own architecture, whatever dpkg's is (no `dpkg --add-architecture`).
            format!("APT::Architecture={}", self.arch.debian()),
            format!("APT::Architectures={}", self.arch.debian()),
        ] {
            cmd.arg("-o").arg(option);
        }
        cmd
    }
}

/// One `deb` line per suite the pins of `arch` use (main only).
fn sources_list(arch: Arch) -> String {
    pins::suites(arch)
        .iter()
        .map(|suite| {
            let mirror = if suite.ends_with("-security") {
                SECURITY_MIRROR
            } else {
                MIRROR
            };
            format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n")
        })
        .collect()
}

/// How `apt-get download` names the file (an epoch's colon is written `%3a`).
fn deb_file_name(package: &str, version: &str, arch: Arch) -> String {
    let version = version.replace(':', "%3a");
    format!("{package}_{version}_{}.deb", arch.debian())
}

/// Unpacks `deb` into a fresh `into` (removed first if it is there).
pub fn unpack(deb: &Path, into: &Path) -> Result<()> {
    if into.exists() {
        fs::remove_dir_all(into).with_context(|| format!("cannot remove {}", into.display()))?;
    }
    fs::create_dir_all(into).with_context(|| format!("cannot create {}", into.display()))?;
    process::output_bounded(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(into),
        UNPACK_LIMIT,
    )?;
    Ok(())
}

/// The versions in `apt-cache madison` output (`package | version | source`), in its order.
fn available_versions(madison: &str) -> Vec<&str> {
    let mut versions: Vec<&str> = madison
        .lines()
        .filter_map(|line| line.split('|').nth(1))
        .map(str::trim)
        .filter(|version| !version.is_empty())
        .collect();
    versions.dedup();
    versions
}

/// Unpacks the kernel image, and the config (what the kernel has) when the package carries it,
/// into `into`.
pub fn unpack_kernel(deb: &Path, kernel: &Kernel, into: &Path) -> Result<()> {
    let scratch = into.join("unpacked");
    unpack(deb, &scratch)?;
    // Where Debian puts each file: /boot until 6.x, the module directory from 7.x.
    let places = |name: &str| {
        [
            scratch.join(format!("boot/{name}-{}", kernel.release)),
            scratch.join(format!("usr/lib/modules/{}/{name}", kernel.release)),
        ]
    };
    let vmlinuz = places("vmlinuz").into_iter().find(|path| path.is_file());
    let Some(vmlinuz) = vmlinuz else {
        bail!(
            "{} has neither /boot/vmlinuz-{release} nor /usr/lib/modules/{release}/vmlinuz",
            kernel.package,
            release = kernel.release
        );
    };
    fs::copy(&vmlinuz, into.join("vmlinuz"))
        .with_context(|| format!("cannot copy {}", vmlinuz.display()))?;
    // Not every package carries the config: keep it when it is here.
    if let Some(config) = places("config").into_iter().find(|path| path.is_file()) {
        fs::copy(&config, into.join("config"))
            .with_context(|| format!("cannot copy {}", config.display()))?;
    }
    fs::remove_dir_all(&scratch).with_context(|| format!("cannot remove {}", scratch.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions_from_madison() {
        let out = "linux-image-6.12-cloud-amd64 | 6.12.118-1~deb12u1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n\
                   linux-image-6.12-cloud-amd64 | 6.12.117-1 | http://deb.debian.org/debian trixie/main amd64 Packages\n";
        assert_eq!(
            available_versions(out),
            ["6.12.118-1~deb12u1", "6.12.117-1"]
        );
        assert!(available_versions("").is_empty());
        assert!(available_versions("N: Unable to locate package x\n").is_empty());
    }

    #[test]
    fn sources_name_each_suite_once() {
        let list = sources_list(Arch::Amd64);
        assert_eq!(list.lines().count(), 4, "{list}");
        assert!(list.contains(" bullseye main\n"));
    }

    #[test]
    fn security_suites_come_from_the_security_archive() {
        let list = sources_list(Arch::Arm64);
        assert_eq!(
            list,
            format!(
                "deb [signed-by={KEYRING}] {MIRROR} bookworm main\n\
                 deb [signed-by={KEYRING}] {SECURITY_MIRROR} bookworm-security main\n"
            )
        );
    }

    #[test]
    fn deb_names_as_apt_writes_them() {
        let kernel = &pins::KERNELS[0];
        assert_eq!(
            deb_file_name(kernel.package, kernel.version, kernel.arch),
            "linux-image-5.10.0-32-cloud-amd64_5.10.223-1_amd64.deb"
        );
        assert_eq!(
            deb_file_name("busybox-static", "1:1.35.0-4+deb12u1+b1", Arch::Arm64),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb"
        );
    }
}
