//! The kernels of the matrix, pinned to exact Debian packages: the one place to change them.
//!
//! Each is the package with the kernel image in Debian's main archive (not `-security`, whose
//! old versions disappear sooner) at one version; a signed image boots as well as an unsigned
//! one (QEMU does no secure boot). `apt-cache madison` on the private lists says
//! whether the version is still there; when an archive drops it, change it here.

/// One kernel of the matrix.
#[derive(Debug)]
pub struct Kernel {
    /// What `--kernel` selects and the table shows: the upstream series.
    pub series: &'static str,
    /// The Debian suite whose main archive has the package.
    pub suite: &'static str,
    /// The package with `/boot/vmlinuz-<release>`.
    pub package: &'static str,
    /// Its exact Debian version.
    pub version: &'static str,
    /// `uname -r` of the kernel, the name of its cache directory.
    pub release: &'static str,
}

/// The matrix, oldest first. Debian 11 (Amazon Linux 2's and bullseye's 5.10), Debian 12,
/// Debian 13, and the newest kernel Debian builds (trixie-backports, which keeps only its latest
/// upload: expect to move this pin when the download says it is gone).
pub const KERNELS: [Kernel; 4] = [
    Kernel {
        series: "5.10",
        suite: "bullseye",
        package: "linux-image-5.10.0-32-cloud-amd64",
        version: "5.10.223-1",
        release: "5.10.0-32-cloud-amd64",
    },
    Kernel {
        series: "6.1",
        suite: "bookworm",
        package: "linux-image-6.1.0-47-cloud-amd64-unsigned",
        version: "6.1.170-3",
        release: "6.1.0-47-cloud-amd64",
    },
    Kernel {
        series: "6.12",
        suite: "trixie",
        package: "linux-image-6.12.117+deb13-cloud-amd64-unsigned",
        version: "6.12.117-1",
        release: "6.12.117+deb13-cloud-amd64",
    },
    Kernel {
        series: "7.3",
        suite: "trixie-backports",
        // From 7.x Debian ships the image in `linux-binary-*`; `linux-image-*` only depends on it.
        package: "linux-binary-7.3.4+deb13-cloud-amd64",
        version: "7.3.4-1~bpo13+1",
        release: "7.3.4+deb13-cloud-amd64",
    },
];

/// The kernels `cargo xtask test` boots: every pin but the newest, whose suite keeps only its
/// latest upload, so that a change is never held up by an upload to Debian's backports.
pub const GATED: [&str; 3] = ["5.10", "6.1", "6.12"];

/// The archive all pinned packages come from.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// The keyring that signs every suite above (Debian's `debian-archive-keyring`).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The kernels `--kernel` names (series or release), in matrix order; all when none is named.
pub fn select<'a>(names: &[String]) -> anyhow::Result<Vec<&'a Kernel>> {
    if names.is_empty() {
        return Ok(KERNELS.iter().collect());
    }
    for name in names {
        if !KERNELS.iter().any(|k| matches(k, name)) {
            let known: Vec<_> = KERNELS.iter().map(|k| k.series).collect();
            anyhow::bail!(
                "no kernel {name} in the matrix (known: {})",
                known.join(", ")
            );
        }
    }
    Ok(KERNELS
        .iter()
        .filter(|k| names.iter().any(|name| matches(k, name)))
        .collect())
}

fn matches(kernel: &Kernel, name: &str) -> bool {
    name == kernel.series || name == kernel.release
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_in_their_package_names() {
        for kernel in &KERNELS {
            assert!(
                kernel.package.contains(kernel.release),
                "{}",
                kernel.package
            );
            assert!(
                kernel.release.starts_with(kernel.series),
                "{}",
                kernel.release
            );
        }
    }

    #[test]
    fn selects_by_series_or_release_in_matrix_order() {
        let names = ["6.12".to_owned(), "5.10.0-32-cloud-amd64".to_owned()];
        let picked: Vec<_> = select(&names).unwrap().iter().map(|k| k.series).collect();
        assert_eq!(picked, ["5.10", "6.12"]);
        assert_eq!(select(&[]).unwrap().len(), KERNELS.len());
    }

    #[test]
    fn unknown_kernel_names_the_known_ones() {
        let err = select(&["4.19".to_owned()]).unwrap_err().to_string();
        assert_eq!(
            err,
            "no kernel 4.19 in the matrix (known: 5.10, 6.1, 6.12, 7.3)"
        );
    }
}
