//! The kernels of the matrix, pinned to exact Debian packages: the one place to change them.
//!
//! Each is the package with the kernel image in Debian's main archive (not `-security`, whose
//! old versions disappear sooner) at one version; a signed image boots as well as an unsigned
//! one (QEMU does no secure boot). `apt-cache madison` on the private lists says
//! whether the version is still there; when an archive drops it, change it here.

/// A machine architecture, by Debian's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    /// Emulated under TCG from a cross-built profiler (`cross.rs`).
    Arm64,
}

impl Arch {
    /// The name in Debian's package files and lists.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// One kernel of the matrix.
#[derive(Debug)]
pub struct Kernel {
    /// The upstream series; with the architecture, what `--kernel` selects ([`Kernel::name`]).
    pub series: &'static str,
    pub arch: Arch,
    /// The Debian suite whose main archive has the package.
    pub suite: &'static str,
    /// The package with `/boot/vmlinuz-<release>`.
    pub package: &'static str,
    /// Its exact Debian version.
    pub version: &'static str,
    /// `uname -r` of the kernel, the name of its cache directory.
    pub release: &'static str,
}

impl Kernel {
    /// What `--kernel` selects and the table shows: the series, followed by `-arm64` for an
    /// arm64 kernel, so that `6.1` still means the amd64 one alone.
    pub fn name(&self) -> String {
        match self.arch {
            Arch::Amd64 => self.series.to_owned(),
            Arch::Arm64 => format!("{}-arm64", self.series),
        }
    }
}

/// The matrix, oldest first. Debian 11 (Amazon Linux 2's and bullseye's 5.10), Debian 12,
/// Debian 13, and the newest kernel Debian builds (trixie-backports, which keeps only its latest
/// upload: expect to move this pin when the download says it is gone); then Debian 12 on arm64
/// (Graviton and Ampere nodes), the same kernel build as the amd64 6.1.
pub const KERNELS: [Kernel; 5] = [
    Kernel {
        series: "5.10",
        arch: Arch::Amd64,
        suite: "bullseye",
        package: "linux-image-5.10.0-32-cloud-amd64",
        version: "5.10.223-1",
        release: "5.10.0-32-cloud-amd64",
    },
    Kernel {
        series: "6.1",
        arch: Arch::Amd64,
        suite: "bookworm",
        package: "linux-image-6.1.0-47-cloud-amd64-unsigned",
        version: "6.1.170-3",
        release: "6.1.0-47-cloud-amd64",
    },
    Kernel {
        series: "6.12",
        arch: Arch::Amd64,
        suite: "trixie",
        package: "linux-image-6.12.117+deb13-cloud-amd64-unsigned",
        version: "6.12.117-1",
        release: "6.12.117+deb13-cloud-amd64",
    },
    Kernel {
        series: "7.3",
        arch: Arch::Amd64,
        suite: "trixie-backports",
        // From 7.x Debian ships the image in `linux-binary-*`; `linux-image-*` only depends on it.
        package: "linux-binary-7.3.4+deb13-cloud-amd64",
        version: "7.3.4-1~bpo13+1",
        release: "7.3.4+deb13-cloud-amd64",
    },
    Kernel {
        series: "6.1",
        arch: Arch::Arm64,
        suite: "bookworm",
        package: "linux-image-6.1.0-47-cloud-arm64-unsigned",
        version: "6.1.170-3",
        release: "6.1.0-47-cloud-arm64",
    },
];

/// The kernels `cargo xtask test` boots: every pin but the newest, whose suite keeps only its
/// latest upload, so that a change is never held up by an upload to Debian's backports. The
/// arm64 row adds about 15 s of TCG, and its cross-build 12-14 min to a cold CI run.
pub const GATED: [&str; 4] = ["5.10", "6.1", "6.12", "6.1-arm64"];

/// Debian's static busybox for arm64, the shell of the arm64 initramfs (the host's is amd64).
pub const ARM64_BUSYBOX: (&str, &str) = ("busybox-static", "1:1.35.0-4+deb12u1+b1");

/// The standard library for `aarch64-unknown-linux-gnu` that Debian builds with `rustc-web`. It
/// is not pinned here: it must be the very version of the host's `rustc-web` (a compiler refuses
/// a standard library of another build), which `cross.rs` reads from dpkg.
pub const ARM64_STD: &str = "libstd-rust-web-dev";

/// The compiler [`ARM64_STD`] must match.
pub const RUSTC: &str = "rustc-web";

/// Where `rustc-web` comes from on bookworm: its newer versions reach bookworm through the
/// security archive only, so the arm64 lists need it besides the kernels' suites.
pub const ARM64_EXTRA_SUITES: [&str; 1] = ["bookworm-security"];

/// The archive all pinned packages come from.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// The archive of the `-security` suites.
pub const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// The keyring that signs every suite above (Debian's `debian-archive-keyring`).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The suites whose lists a private apt for `arch` reads: those of its kernels, and what else
/// that architecture needs, once each.
pub fn suites(arch: Arch) -> Vec<&'static str> {
    let extra: &[&str] = match arch {
        Arch::Amd64 => &[],
        Arch::Arm64 => &ARM64_EXTRA_SUITES,
    };
    let mut suites: Vec<&str> = Vec::new();
    let kernels = KERNELS.iter().filter(|k| k.arch == arch).map(|k| k.suite);
    for suite in kernels.chain(extra.iter().copied()) {
        if !suites.contains(&suite) {
            suites.push(suite);
        }
    }
    suites
}

/// The kernels `--kernel` names (name or release), in matrix order; all when none is named.
pub fn select<'a>(names: &[String]) -> anyhow::Result<Vec<&'a Kernel>> {
    if names.is_empty() {
        return Ok(KERNELS.iter().collect());
    }
    for name in names {
        if !KERNELS.iter().any(|k| matches(k, name)) {
            let known: Vec<_> = KERNELS.iter().map(Kernel::name).collect();
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
    *name == kernel.name() || name == kernel.release
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
            assert!(
                kernel.release.ends_with(kernel.arch.debian()),
                "{}",
                kernel.release
            );
        }
    }

    #[test]
    fn names_are_unique_and_gated_ones_exist() {
        let names: Vec<_> = KERNELS.iter().map(Kernel::name).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(name), "{name} twice");
        }
        for gated in GATED {
            assert!(names.iter().any(|name| name == gated), "{gated}");
        }
    }

    #[test]
    fn a_series_alone_is_the_amd64_kernel() {
        let picked = select(&["6.1".to_owned()]).unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].arch, Arch::Amd64);
        let arm = select(&["6.1-arm64".to_owned()]).unwrap();
        assert_eq!(arm[0].release, "6.1.0-47-cloud-arm64");
    }

    #[test]
    fn arm64_lists_add_the_security_suite() {
        assert_eq!(suites(Arch::Arm64), ["bookworm", "bookworm-security"]);
        assert_eq!(
            suites(Arch::Amd64),
            ["bullseye", "bookworm", "trixie", "trixie-backports"]
        );
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
            "no kernel 4.19 in the matrix (known: 5.10, 6.1, 6.12, 7.3, 6.1-arm64)"
        );
    }
}
