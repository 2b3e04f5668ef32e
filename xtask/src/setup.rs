//! `cargo xtask setup`: installs what building and testing need, only when missing. The probes
//! are file checks and `--version` calls, so a machine that has everything is done in
//! milliseconds. Why each piece is needed: see shared/TOOLCHAIN.md.

use std::{path::Path, process::Command};

use anyhow::{Context, Result};

use crate::{cargo_cmd, deploy_tools, fuzz, go_toolchains, paths, privilege, process};

/// How to tell that a Debian package is installed without asking dpkg.
enum Probe {
    /// A file the package ships.
    File(&'static str),
    /// A program of the package that answers `--version`.
    Runs(&'static str),
}

/// What building the profiler needs (`cargo xtask build`, and so deploy/Dockerfile), with
/// bpf-linker.
const BUILD_PACKAGES: [(&str, Probe); 4] = [
    // Debian's rustc/cargo 1.96 with a prebuilt `core` for the BPF target.
    ("rustc-web", Probe::File("/usr/bin/rustc")),
    ("cargo-web", Probe::File("/usr/bin/cargo")),
    (
        "libstd-rust-web-dev-bpf",
        Probe::File("/usr/lib/rustlib/bpfel-unknown-none/lib"),
    ),
    // The LLVM that bpf-linker links against.
    (
        "llvm-22-dev",
        Probe::File("/usr/lib/llvm-22/lib/libLLVM.so"),
    ),
];

/// What the tests need on top of the build.
const TEST_PACKAGES: [(&str, Probe); 6] = [
    // `go tool pprof`: the external reader tests check profiles with.
    ("golang-go", Probe::File("/usr/bin/go")),
    // Builds the C test fixtures.
    ("gcc", Probe::Runs("gcc")),
    // Compiles profiler-marker's C header as C++ (profiler-marker/tests/c_header.rs).
    ("g++", Probe::Runs("g++")),
    // The venv of the deploy linters (deploy_tools.rs). Every package ships its copyright file,
    // even in images that leave out the rest of /usr/share/doc.
    (
        "python3-venv",
        Probe::File("/usr/share/doc/python3-venv/copyright"),
    ),
    // `systemd-analyze verify` checks deploy/systemd/profiler.service.
    ("systemd", Probe::File("/usr/bin/systemd-analyze")),
    // The real browser the dashboard test (tests/tests/dashboard.rs) drives headless.
    ("chromium", Probe::File("/usr/bin/chromium")),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// What `cargo xtask bench` compares the profiler with, on top of the above.
const BENCH_PACKAGES: [(&str, Probe); 4] = [
    ("linux-perf", Probe::File("/usr/bin/perf")),
    ("bpftrace", Probe::File("/usr/bin/bpftrace")),
    // addr2line
    ("binutils", Probe::Runs("addr2line")),
    ("llvm-22", Probe::File("/usr/bin/llvm-symbolizer-22")),
];

/// What `cargo xtask kernels` boots its VMs with.
const KERNEL_PACKAGES: [(&str, Probe); 2] = [
    // The one binary of the VMs' initramfs besides the profiler: it must be static.
    (
        "busybox-static",
        Probe::File("/usr/share/doc/busybox-static/copyright"),
    ),
    (
        "qemu-system-x86",
        Probe::File("/usr/bin/qemu-system-x86_64"),
    ),
];

/// What the matrix's arm64 row needs besides: its emulator, and the cross linker and arm64
/// glibc of the cross-built profiler (the rest, arm64 packages, comes by a private apt:
/// kernels/cross.rs).
const ARM64_PACKAGES: [(&str, Probe); 3] = [
    (
        "qemu-system-arm",
        Probe::File("/usr/bin/qemu-system-aarch64"),
    ),
    (
        "gcc-aarch64-linux-gnu",
        Probe::File("/usr/bin/aarch64-linux-gnu-gcc"),
    ),
    (
        "libc6-dev-arm64-cross",
        Probe::File("/usr/aarch64-linux-gnu/lib/crt1.o"),
    ),
];

/// busybox-static and QEMU, for the kernel matrix; with `arm64`, what its arm64 row needs too.
pub fn setup_kernels(arm64: bool) -> Result<()> {
    let mut missing = missing_packages(&KERNEL_PACKAGES);
    if arm64 {
        missing.extend(missing_packages(&ARM64_PACKAGES));
    }
    let (qemu, others): (Vec<_>, Vec<_>) = missing
        .into_iter()
        .partition(|name| name.starts_with("qemu-"));
    if !others.is_empty() {
        install_apt_packages(&others)?;
    }
    if qemu.is_empty() {
        return Ok(());
    }
    match backports_suite_of("qemu-utils") {
        Some(suite) => install_from_backports(&qemu, &suite),
        None => install_apt_packages(&qemu),
    }
}

/// The backports suite (`bookworm-backports`) that the installed `package` came from, if it
/// did: these machines ship QEMU's tools from backports, whose `qemu-utils` breaks the
/// release's own `qemu-system-common`, so the emulators must come from there too.
fn backports_suite_of(package: &str) -> Option<String> {
    let version = process::output_if_ok(Command::new("dpkg-query").args([
        "--show",
        "--showformat=${Version}",
        package,
    ]))?;
    if !version.contains("~bpo") {
        return None;
    }
    let release = std::fs::read_to_string("/etc/os-release").ok()?;
    let codename = release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))?
        .trim_matches('"');
    Some(format!("{codename}-backports"))
}

/// Installs `packages` from Debian's `suite` (a backports suite), named for these two apt
/// commands only: the machine's own sources stay as they are.
fn install_from_backports(packages: &[&str], suite: &str) -> Result<()> {
    println!(
        "setup: installing Debian packages from {suite}: {}",
        packages.join(" ")
    );
    let what = "installing Debian packages";
    // Apt reads this one file in place of /etc/apt/sources.list (absent on these machines;
    // copied in when present) and the parts in sources.list.d as ever.
    let list = std::env::temp_dir().join(format!("xtask-{suite}-{}.list", std::process::id()));
    let mut text = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    text.push_str(&format!(
        "\ndeb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
         http://deb.debian.org/debian {suite} main\n"
    ));
    let _ = std::fs::remove_file(&list);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&list)
        .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
        .with_context(|| format!("cannot write {}", list.display()))?;
    let source = format!("Dir::Etc::SourceList={}", list.display());
    let installed =
        process::run(privilege::as_root("apt-get", &[], what)?.args(["-o", &source, "update"]))
            .and_then(|()| {
                let mut install = privilege::as_root("env", &[], what)?;
                install.args([
                    "DEBIAN_FRONTEND=noninteractive",
                    "apt-get",
                    "-o",
                    &source,
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "-t",
                    suite,
                ]);
                process::run(install.args(packages))
            });
    let _ = std::fs::remove_file(&list);
    installed.with_context(|| format!("apt-get could not install the packages from {suite}"))
}

/// The reference tools of the benchmarks; `setup` must have run.
pub fn setup_bench() -> Result<()> {
    let missing = missing_packages(&BENCH_PACKAGES);
    if missing.is_empty() {
        println!("setup: the benchmark's reference tools are installed");
        return Ok(());
    }
    install_apt_packages(&missing)
}

/// Everything: the build, the tests (fixtures, `go tool pprof`, the deploy linters).
pub fn setup(root: &Path) -> Result<()> {
    ensure(root, &[&BUILD_PACKAGES, &TEST_PACKAGES], true)
}

/// Only what `cargo xtask build` needs: the compilers, LLVM and bpf-linker.
pub fn setup_build(root: &Path) -> Result<()> {
    ensure(root, &[&BUILD_PACKAGES], false)
}

fn ensure(root: &Path, groups: &[&[(&'static str, Probe)]], deploy_tools: bool) -> Result<()> {
    let missing: Vec<_> = groups
        .iter()
        .flat_map(|group| missing_packages(group))
        .collect();
    let linker_ok = bpf_linker_installed()?;
    let tools_ok = !deploy_tools || deploy_tools::installed(root);
    // The fuzz runner comes with the test tools.
    let fuzz_ok = !deploy_tools || fuzz::installed()?;
    // The Go toolchains of the Go fixtures too, with the deploy tools' pip.
    let go_missing = if deploy_tools {
        go_toolchains::missing(root)?
    } else {
        Vec::new()
    };
    if missing.is_empty() && linker_ok && tools_ok && fuzz_ok && go_missing.is_empty() {
        println!("setup: everything is installed");
        return Ok(());
    }
    if !missing.is_empty() {
        install_apt_packages(&missing)?;
    }
    if !linker_ok {
        install_bpf_linker(root)?;
    }
    if !tools_ok {
        deploy_tools::install(root)?;
    }
    if !fuzz_ok {
        fuzz::install(root)?;
    }
    go_toolchains::install(root, &go_missing)?;
    Ok(())
}

fn missing_packages(packages: &[(&'static str, Probe)]) -> Vec<&'static str> {
    packages
        .iter()
        .filter(|(_, probe)| !is_present(probe))
        .map(|(name, _)| *name)
        .collect()
}

fn is_present(probe: &Probe) -> bool {
    match probe {
        Probe::File(path) => Path::new(path).exists(),
        Probe::Runs(program) => {
            process::output_if_ok(Command::new(program).arg("--version")).is_some()
        }
    }
}

fn install_apt_packages(missing: &[&str]) -> Result<()> {
    println!("setup: installing Debian packages: {}", missing.join(" "));
    let what = "installing Debian packages";
    process::run(privilege::as_root("apt-get", &[], what)?.arg("update"))?;
    // `env` rather than Command::env: sudo would drop the variable.
    let mut install = privilege::as_root("env", &[], what)?;
    install.args(["DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y"]);
    process::run(install.args(missing)).context("apt-get could not install the packages")
}

fn bpf_linker_installed() -> Result<bool> {
    let linker = paths::cargo_bin_dir()?.join("bpf-linker");
    let output = process::output_if_ok(Command::new(linker).arg("--version"));
    Ok(output.is_some_and(|out| is_wanted_linker_version(&out)))
}

/// Whether `bpf-linker --version` printed exactly the version we pin.
fn is_wanted_linker_version(output: &str) -> bool {
    output.lines().next().map(str::trim) == Some(&format!("bpf-linker {BPF_LINKER_VERSION}"))
}

fn install_bpf_linker(root: &Path) -> Result<()> {
    println!("setup: installing bpf-linker {BPF_LINKER_VERSION}");
    let mut cmd = cargo_cmd::cargo(root, &["install", "bpf-linker", "--version"])?;
    cmd.args([
        BPF_LINKER_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    // Without it the build finds LLVM 14 first and fails with `unable to find library -lLLVM`.
    cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22");
    process::run(&mut cmd).context("could not install bpf-linker")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_pinned_linker_version() {
        assert!(is_wanted_linker_version("bpf-linker 0.13.0\n"));
        assert!(is_wanted_linker_version("bpf-linker 0.13.0"));
    }

    #[test]
    fn rejects_other_linker_versions() {
        assert!(!is_wanted_linker_version("bpf-linker 0.13.1\n"));
        assert!(!is_wanted_linker_version("bpf-linker 0.13.0-rc1\n"));
        assert!(!is_wanted_linker_version("bpf-linker 0.9.13\n"));
        assert!(!is_wanted_linker_version(""));
    }

    #[test]
    fn package_names_are_unique() {
        let all = || {
            BUILD_PACKAGES
                .iter()
                .chain(&TEST_PACKAGES)
                .chain(&BENCH_PACKAGES)
                .chain(&KERNEL_PACKAGES)
                .chain(&ARM64_PACKAGES)
        };
        let mut names: Vec<_> = all().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all().count());
    }
}
