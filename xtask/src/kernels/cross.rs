//! The arm64 row: the profiler cross-built for `aarch64-unknown-linux-gnu` and booted under
//! qemu-system-aarch64 (TCG only: the host is x86_64).
//!
//! Every piece is Debian's, and none changes the machine's dpkg architectures:
//! - the compiler is Debian's `rustc-web` at /usr, the one that builds the BPF object, with its
//!   arm64 standard library (`libstd-rust-web-dev`) fetched by the private arm64 apt and
//!   unpacked into a sysroot of our own under `target/kernels/arm64` (rustup's stable has only
//!   the x86_64 standard library and cannot add one here);
//! - the linker and arm64 glibc are `gcc-aarch64-linux-gnu` and `libc6-dev-arm64-cross`
//!   (installed by `setup_kernels`); the profiler links glibc dynamically, as on a real node, and
//!   the initramfs carries the libraries from /usr/aarch64-linux-gnu/lib;
//! - the shell is Debian's arm64 `busybox-static`, the kernel the one pinned in `pins.rs`.
//!
//! The BPF object inside is built for the same `bpfel` target as on amd64: aya-build sets
//! `bpf_target_arch` from the target, so the thread pointer is read from `thread.uw.tp_value`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    apt::{self, PrivateApt},
    fixtures,
    initramfs::{self, Library},
    pins::{ARM64_BUSYBOX, ARM64_STD, RUSTC},
    qemu::Machine,
};
use crate::{cargo_cmd, paths, process};

/// QEMU's generic arm64 board. `pauth-impdef` swaps the architected pointer-authentication
/// hash (QARMA, costly to emulate) for QEMU's own: the guest sees the same features and boots
/// faster under TCG.
pub const MACHINE: Machine = Machine {
    qemu: "qemu-system-aarch64",
    board: &["-M", "virt"],
    tcg_cpu: "max,pauth-impdef=on",
    console: "ttyAMA0",
};

const TARGET: &str = "aarch64-unknown-linux-gnu";
/// Debian's compiler: rustup's stable has no aarch64 standard library.
const COMPILER: &str = "/usr/bin/rustc";
const LINKER: &str = "aarch64-linux-gnu-gcc";
/// From binutils-aarch64-linux-gnu, which the cross gcc brings.
const READELF: &str = "aarch64-linux-gnu-readelf";
/// Where `libc6-arm64-cross` keeps the arm64 glibc.
const CROSS_LIBS: &str = "/usr/aarch64-linux-gnu/lib";
/// Where the initramfs puts the libraries: the arm64 loader's default search path on Debian.
const INSIDE_LIBS: &str = "lib/aarch64-linux-gnu";

/// A cold cross-build took 12-14 min on 2 CPUs shared with other builds (the BPF object alone
/// 2 min); a warm one under a second.
const BUILD_LIMIT: Duration = Duration::from_secs(40 * 60);
const QUERY_LIMIT: Duration = Duration::from_secs(20);

/// Builds (or brings up to date) everything the arm64 row boots with, and returns its
/// initramfs, `dir/initramfs-arm64.cpio`.
pub fn initramfs(root: &Path, dir: &Path, apt: &mut PrivateApt) -> Result<PathBuf> {
    let arm = dir.join("arm64");
    let sysroot = sysroot(apt, &arm)?;
    let busybox = busybox(apt, &arm)?;
    let profiler = build_profiler(root, &sysroot)?;
    let fixtures = fixtures::build(root, &arm, LINKER, "arm64")?;
    let mut libraries = libraries(&profiler)?;
    libraries.extend(self::libraries(&fixtures.traced)?);
    let initrd = dir.join("initramfs-arm64.cpio");
    initramfs::build(&busybox, &profiler, &fixtures, &libraries, &initrd)
        .context("could not build the arm64 initramfs")?;
    Ok(initrd)
}

/// The sysroot with the aarch64 standard library of the host's `rustc-web`:
/// `arm/sysroot/lib/rustlib/aarch64-unknown-linux-gnu`, beside links to the targets of the
/// compiler's own sysroot, so that ours lacks nothing the compiler may look up there.
fn sysroot(apt: &mut PrivateApt, arm: &Path) -> Result<PathBuf> {
    let version = installed_version(RUSTC)?;
    let sysroot = arm.join("sysroot");
    let wanted = format!("{ARM64_STD}={version}\n");
    let stamp = arm.join("sysroot.package");
    let installed = sysroot.join("lib/rustlib").join(TARGET);
    if installed.is_dir() && fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(sysroot);
    }
    // Debian keeps only the newest build in the security archive: an older compiler here has
    // no arm64 library there any more.
    let available = apt.available(ARM64_STD)?;
    if !available.contains(&version) {
        bail!(
            "{ARM64_STD} {version} (arm64), the aarch64 standard library of the host's {RUSTC} \
             {version}, is not in Debian's archive (available: {}): upgrade {RUSTC} with \
             `apt-get install {RUSTC}`",
            if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            }
        );
    }
    let deb = apt.download(ARM64_STD, &version)?;
    let unpacked = arm.join("std-unpacked");
    apt::unpack(&deb, &unpacked)?;
    if sysroot.exists() {
        fs::remove_dir_all(&sysroot)
            .with_context(|| format!("cannot remove {}", sysroot.display()))?;
    }
    let rustlib = sysroot.join("lib/rustlib");
    fs::create_dir_all(&rustlib).with_context(|| format!("cannot create {}", rustlib.display()))?;
    let from = unpacked.join("usr/lib/rustlib").join(TARGET);
    fs::rename(&from, rustlib.join(TARGET))
        .with_context(|| format!("{ARM64_STD} has no {}", from.display()))?;
    let system = Path::new("/usr/lib/rustlib");
    let entries =
        fs::read_dir(system).with_context(|| format!("cannot read {}", system.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", system.display()))?;
        let link = rustlib.join(entry.file_name());
        if !link.exists() {
            std::os::unix::fs::symlink(entry.path(), &link)
                .with_context(|| format!("cannot create {}", link.display()))?;
        }
    }
    fs::remove_dir_all(&unpacked)
        .with_context(|| format!("cannot remove {}", unpacked.display()))?;
    // The sysroot is all we keep of the package.
    fs::remove_file(&deb).with_context(|| format!("cannot remove {}", deb.display()))?;
    fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(sysroot)
}

/// `arm/busybox`, Debian's static arm64 busybox at the pinned version.
fn busybox(apt: &mut PrivateApt, arm: &Path) -> Result<PathBuf> {
    let (package, version) = ARM64_BUSYBOX;
    let busybox = arm.join("busybox");
    let wanted = format!("{package}={version}\n");
    let stamp = arm.join("busybox.package");
    if busybox.is_file() && fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(busybox);
    }
    let deb = apt.download(package, version)?;
    let unpacked = arm.join("busybox-unpacked");
    apt::unpack(&deb, &unpacked)?;
    let from = unpacked.join("bin/busybox");
    fs::copy(&from, &busybox).with_context(|| format!("{package} has no /bin/busybox"))?;
    fs::remove_dir_all(&unpacked)
        .with_context(|| format!("cannot remove {}", unpacked.display()))?;
    fs::remove_file(&deb).with_context(|| format!("cannot remove {}", deb.display()))?;
    fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(busybox)
}

/// The installed version of a Debian package, from dpkg's database (read only).
fn installed_version(package: &str) -> Result<String> {
    let mut query = Command::new("dpkg-query");
    query.args(["--show", "--showformat=${Version}", package]);
    let output = process::output_bounded(&mut query, QUERY_LIMIT)
        .with_context(|| format!("{package} is not installed: run `cargo xtask setup`"))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if version.is_empty() {
        bail!("{package} is not installed: run `cargo xtask setup`");
    }
    Ok(version)
}

/// The release profiler for aarch64, in its own target directory (`target/aarch64`) so that
/// it never invalidates the host build.
fn build_profiler(root: &Path, sysroot: &Path) -> Result<PathBuf> {
    let target_dir = paths::target_dir(root).join("aarch64");
    let mut cmd = cargo_cmd::cargo(
        root,
        &[
            "build",
            "--release",
            "-p",
            "profiler-user",
            "--target",
            TARGET,
        ],
    )?;
    let mut sysroot_flag = std::ffi::OsString::from("--sysroot=");
    sysroot_flag.push(sysroot);
    cmd.arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", COMPILER)
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", LINKER)
        // With `--target`, these reach the aarch64 crates only, not build scripts or proc
        // macros (host code, built against the compiler's own sysroot). aya-build sets its own
        // for the BPF object.
        .env("CARGO_ENCODED_RUSTFLAGS", sysroot_flag)
        .env_remove("RUSTFLAGS");
    println!("kernels: cross-building the profiler for {TARGET} (a cold build takes minutes)");
    let started = Instant::now();
    // cargo's progress on our output, as for the host build; killed at the limit.
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("could not start `{}`", process::describe(&cmd)))?;
    match process::wait_bounded(&mut child, BUILD_LIMIT)? {
        Some(status) if status.success() => {}
        Some(status) => bail!("could not cross-build the profiler for aarch64 ({status})"),
        None => bail!("the cross-build of the profiler did not finish within {BUILD_LIMIT:?}"),
    }
    println!(
        "kernels: cross-build done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let bin = target_dir.join(TARGET).join("release/profiler");
    if !bin.is_file() {
        bail!("the cross-build finished but {} is missing", bin.display());
    }
    Ok(bin)
}

/// The shared libraries an arm64 binary needs, from the cross glibc: its interpreter at the
/// path the binary names, and each `NEEDED` library (and theirs) under [`INSIDE_LIBS`].
fn libraries(binary: &Path) -> Result<Vec<Library>> {
    let headers = readelf(binary, "--program-headers")?;
    let Some(interpreter) = parse_interpreter(&headers) else {
        // A static binary needs nothing.
        return Ok(Vec::new());
    };
    let loader = file_name(interpreter)?;
    let mut libraries = vec![Library {
        host: Path::new(CROSS_LIBS).join(loader),
        inside: interpreter.trim_start_matches('/').to_owned(),
    }];
    let mut seen = vec![loader.to_owned()];
    let mut pending = parse_needed(&readelf(binary, "--dynamic")?);
    while let Some(name) = pending.pop() {
        if seen.contains(&name) {
            continue;
        }
        let host = Path::new(CROSS_LIBS).join(&name);
        if !host.is_file() {
            bail!(
                "{name}, which the aarch64 profiler links, is not in {CROSS_LIBS}: install \
                 libc6-dev-arm64-cross (`cargo xtask kernels --kernel 6.1-arm64` does)"
            );
        }
        pending.extend(parse_needed(&readelf(&host, "--dynamic")?));
        libraries.push(Library {
            host,
            inside: format!("{INSIDE_LIBS}/{name}"),
        });
        seen.push(name);
    }
    Ok(libraries)
}

fn readelf(file: &Path, what: &str) -> Result<String> {
    let mut cmd = Command::new(READELF);
    cmd.args(["--wide", what]).arg(file);
    let output = process::output_bounded(&mut cmd, QUERY_LIMIT)
        .with_context(|| format!("could not read the ELF headers of {}", file.display()))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn file_name(path: &str) -> Result<&str> {
    match path.rsplit_once('/') {
        Some((_, name)) if !name.is_empty() => Ok(name),
        _ => bail!("the aarch64 profiler's interpreter {path:?} is not an absolute file path"),
    }
}

/// The `[Requesting program interpreter: PATH]` of `readelf --program-headers`.
fn parse_interpreter(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once("[Requesting program interpreter: ")?;
    let (path, _) = rest.split_once(']')?;
    Some(path.trim())
}

/// The `(NEEDED) Shared library: [NAME]` entries of `readelf --dynamic`.
fn parse_needed(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| {
            let (_, rest) = line.split_once('[')?;
            let (name, _) = rest.split_once(']')?;
            Some(name.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_interpreter() {
        let text = "  INTERP         0x000238 0x0000000000000238 0x0000000000000238 0x00001b 0x00001b R   0x1\n\
                    \x20     [Requesting program interpreter: /lib/ld-linux-aarch64.so.1]\n";
        assert_eq!(parse_interpreter(text), Some("/lib/ld-linux-aarch64.so.1"));
        assert_eq!(parse_interpreter("There are no program headers\n"), None);
        assert_eq!(
            file_name("/lib/ld-linux-aarch64.so.1").unwrap(),
            "ld-linux-aarch64.so.1"
        );
        assert!(file_name("ld.so").is_err());
    }

    #[test]
    fn reads_needed_libraries() {
        let text = "Dynamic section at offset 0x8a0d28 contains 33 entries:\n\
            \x20 Tag        Type                         Name/Value\n\
            \x200x0000000000000001 (NEEDED)             Shared library: [libgcc_s.so.1]\n\
            \x200x0000000000000001 (NEEDED)             Shared library: [libc.so.6]\n\
            \x200x000000000000000e (SONAME)             Library soname: [libc.so.6]\n";
        assert_eq!(parse_needed(text), ["libgcc_s.so.1", "libc.so.6"]);
        assert!(parse_needed("There is no dynamic section in this file.\n").is_empty());
    }
}
