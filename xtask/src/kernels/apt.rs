//! The pinned kernel packages, fetched with apt's ordinary options pointed at a private sources
//! list, state and cache under `target/kernels/apt`: the machine's own sources and package
//! state are never read or changed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::pins::{KERNELS, KEYRING, Kernel, MIRROR};
use crate::process;

const UPDATE_LIMIT: Duration = Duration::from_secs(300);
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(600);
const QUERY_LIMIT: Duration = Duration::from_secs(60);
const UNPACK_LIMIT: Duration = Duration::from_secs(120);

/// apt with its own sources, state and cache under one directory.
pub struct PrivateApt {
    dir: PathBuf,
    updated: bool,
}

impl PrivateApt {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            updated: false,
        }
    }

    /// The package's `.deb`, downloaded (once) into `debs/`.
    pub fn download(&mut self, kernel: &Kernel) -> Result<PathBuf> {
        let debs = self.dir.join("debs");
        let deb = debs.join(deb_file_name(kernel));
        if deb.is_file() {
            return Ok(deb);
        }
        self.update()?;
        let mut madison = self.command("apt-cache");
        madison.args(["madison", kernel.package]);
        let madison = process::output_bounded(&mut madison, QUERY_LIMIT)?;
        let madison = String::from_utf8_lossy(&madison.stdout);
        let available = available_versions(&madison);
        if !available.contains(&kernel.version) {
            bail!(
                "{} {} is not in Debian's archive any more (available: {}): change the pin in \
                 xtask/src/kernels/pins.rs",
                kernel.package,
                kernel.version,
                if available.is_empty() {
                    "none".to_owned()
                } else {
                    available.join(", ")
                }
            );
        }
        fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;
        println!("kernels: downloading {} {}", kernel.package, kernel.version);
        let mut download = self.command("apt-get");
        download
            .arg("download")
            .arg(format!("{}={}", kernel.package, kernel.version))
            .current_dir(&debs);
        process::output_bounded(&mut download, DOWNLOAD_LIMIT)
            .with_context(|| format!("could not download {}", kernel.package))?;
        if !deb.is_file() {
            bail!("apt-get download did not write {}", deb.display());
        }
        Ok(deb)
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
        fs::write(&sources, sources_list())
            .with_context(|| format!("cannot write {}", sources.display()))?;
        // An empty dpkg status: nothing of the host's installed packages is consulted.
        let status = self.dir.join("state/status");
        fs::write(&status, "").with_context(|| format!("cannot write {}", status.display()))?;
        println!(
            "kernels: apt-get update (private lists under {})",
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
        ] {
            cmd.arg("-o").arg(option);
        }
        cmd
    }
}

/// One `deb` line per suite the pins use (main only).
fn sources_list() -> String {
    let mut suites: Vec<_> = KERNELS.iter().map(|kernel| kernel.suite).collect();
    suites.dedup();
    suites
        .iter()
        .map(|suite| format!("deb [signed-by={KEYRING}] {MIRROR} {suite} main\n"))
        .collect()
}

/// How `apt-get download` names the file (an epoch's colon is written `%3a`).
fn deb_file_name(kernel: &Kernel) -> String {
    let version = kernel.version.replace(':', "%3a");
    format!("{}_{version}_amd64.deb", kernel.package)
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
    if scratch.exists() {
        fs::remove_dir_all(&scratch)
            .with_context(|| format!("cannot remove {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    process::output_bounded(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(&scratch),
        UNPACK_LIMIT,
    )?;
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
        let list = sources_list();
        assert_eq!(list.lines().count(), 4, "{list}");
        assert!(list.contains(" bullseye main\n"));
    }

    #[test]
    fn deb_names_as_apt_writes_them() {
        assert_eq!(
            deb_file_name(&KERNELS[0]),
            "linux-image-5.10.0-32-cloud-amd64_5.10.223-1_amd64.deb"
        );
    }
}
