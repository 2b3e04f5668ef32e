//! `cargo xtask kernels`: boots each kernel of the matrix (pinned in `pins.rs`) under QEMU with
//! a minimal initramfs holding the release profiler, runs a scripted check inside (`init.sh`),
//! and prints one table. Kernels, the initramfs and each boot's console are kept under
//! `target/kernels/`.

mod apt;
mod cross;
mod initramfs;
mod outcome;
pub mod pins;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{paths, setup};
use outcome::Row;
use pins::{Arch, Kernel};
use qemu::{Accel, Machine};

/// A run under TCG takes 10-15 s here (`init.sh` starts after about 3 s); a VM that has not
/// reached `init.sh` by the first limit or finished by the second is killed.
const TCG_LIMIT: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(180));
/// A working KVM boot reaches `init.sh` in a second or two; nested KVM that fails hangs after
/// "Booting from ROM".
const KVM_LIMIT: (Duration, Duration) = (Duration::from_secs(8), Duration::from_secs(60));

/// Runs the matrix on the kernels named (series such as `6.1`, or releases), all if none.
pub fn kernels(root: &Path, names: &[String]) -> Result<ExitCode> {
    Ok(if run_matrix(root, names)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// [`kernels`]: prints the table, and says whether every kernel passed.
pub fn run_matrix(root: &Path, names: &[String]) -> Result<bool> {
    let selected = pins::select(names)?;
    let has = |arch: Arch| selected.iter().any(|kernel| kernel.arch == arch);
    setup::setup_kernels(has(Arch::Arm64))?;
    let mut tools = vec!["apt-get", "apt-cache", "dpkg-deb"];
    if has(Arch::Amd64) {
        tools.extend(["ldd", qemu::X86_64.qemu]);
    }
    if has(Arch::Arm64) {
        tools.push(cross::MACHINE.qemu);
    }
    for tool in tools {
        if paths::find_in_path(tool).is_none() {
            bail!(
                "`{tool}` is not installed (cargo xtask kernels needs Debian's apt and \
                 qemu-system-x86, and qemu-system-arm for arm64)"
            );
        }
    }
    let dir = paths::target_dir(root).join("kernels");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut amd64 = Guest::new(dir.join("apt"), Arch::Amd64, &qemu::X86_64);
    if has(Arch::Amd64) {
        let profiler = paths::profiler_bin(root);
        if !profiler.is_file() {
            bail!(
                "{} is missing: build it first with `cargo xtask build`",
                profiler.display()
            );
        }
        let initrd = dir.join("initramfs.cpio");
        let libraries = initramfs::host_libraries(&profiler)?;
        initramfs::build(
            Path::new(initramfs::BUSYBOX),
            &profiler,
            &libraries,
            &initrd,
        )
        .context("could not build the initramfs")?;
        amd64.initrd = Some(Ok(initrd));
    }
    let mut arm64 = Guest::new(dir.join("apt-arm64"), Arch::Arm64, &cross::MACHINE);

    let mut try_kvm = qemu::kvm_available();
    let mut rows = Vec::new();
    for kernel in selected {
        let guest = match kernel.arch {
            Arch::Amd64 => &mut amd64,
            Arch::Arm64 => &mut arm64,
        };
        let row = guest
            .initrd(root, &dir)
            .and_then(|initrd| run_one(guest, kernel, &dir, &initrd, &mut try_kvm));
        let row = match row {
            Ok(row) => row,
            Err(err) => Row {
                series: kernel.name(),
                release: kernel.release.to_owned(),
                accel: "-".to_owned(),
                check: None,
                elapsed: Duration::ZERO,
                note: Some(format!("{err:#}")),
            },
        };
        println!(
            "kernels: {} {}",
            row.series,
            if row.passed() { "passed" } else { "FAILED" }
        );
        rows.push(row);
    }
    print!("\n{}", outcome::table(&rows));
    Ok(rows.iter().all(Row::passed))
}

/// What boots the kernels of one architecture.
struct Guest {
    apt: apt::PrivateApt,
    machine: &'static Machine,
    /// The initramfs: the amd64 one built before the first boot, the arm64 one (a cross-build)
    /// when its first kernel comes; a failure is kept, as text, for each of its rows.
    initrd: Option<Result<PathBuf, String>>,
}

impl Guest {
    fn new(apt_dir: PathBuf, arch: Arch, machine: &'static Machine) -> Self {
        Self {
            apt: apt::PrivateApt::new(apt_dir, arch),
            machine,
            initrd: None,
        }
    }

    fn initrd(&mut self, root: &Path, dir: &Path) -> Result<PathBuf> {
        let initrd = match self.initrd.take() {
            Some(initrd) => initrd,
            None => cross::initramfs(root, dir, &mut self.apt).map_err(|err| format!("{err:#}")),
        };
        self.initrd = Some(initrd.clone());
        initrd.map_err(anyhow::Error::msg)
    }
}

/// Fetches (once) and boots one kernel; KVM first while it has not failed, then TCG. An arm64
/// kernel only under TCG: the host is x86_64.
fn run_one(
    guest: &mut Guest,
    kernel: &Kernel,
    dir: &Path,
    initrd: &Path,
    try_kvm: &mut bool,
) -> Result<Row> {
    let kernel_dir = dir.join(kernel.release);
    let vmlinuz = cached_kernel(&mut guest.apt, kernel, &kernel_dir)?;
    let console_log = kernel_dir.join("console.log");
    let machine = guest.machine;
    let mut kvm_note = None;
    if *try_kvm && kernel.arch == Arch::Amd64 {
        println!("kernels: booting {} under kvm", kernel.release);
        let boot = qemu::boot(
            machine,
            &vmlinuz,
            initrd,
            Accel::Kvm,
            KVM_LIMIT,
            &console_log,
        )?;
        if outcome::parse_result(&boot.console).is_some() {
            return finish(kernel, Accel::Kvm, KVM_LIMIT, &boot, &kernel_dir, None);
        }
        // Keep what KVM said, and do not try it for the next kernels.
        let kvm_log = kernel_dir.join("console-kvm.log");
        fs::rename(&console_log, &kvm_log)
            .with_context(|| format!("cannot keep {}", kvm_log.display()))?;
        kvm_note = Some(format!("KVM failed, see {}", kvm_log.display()));
        *try_kvm = false;
    }
    println!("kernels: booting {} under tcg", kernel.release);
    let boot = qemu::boot(
        machine,
        &vmlinuz,
        initrd,
        Accel::Tcg,
        TCG_LIMIT,
        &console_log,
    )?;
    finish(kernel, Accel::Tcg, TCG_LIMIT, &boot, &kernel_dir, kvm_note)
}

/// The row of a boot; the profiler's log is kept as `profiler.log` beside the console.
fn finish(
    kernel: &Kernel,
    accel: Accel,
    (booted_within, limit): (Duration, Duration),
    boot: &qemu::Boot,
    kernel_dir: &Path,
    kvm_note: Option<String>,
) -> Result<Row> {
    let console_log = kernel_dir.join("console.log");
    let check = outcome::parse_result(&boot.console);
    let log = outcome::profiler_log(&boot.console);
    if let Some(log) = &log {
        let path = kernel_dir.join("profiler.log");
        fs::write(&path, log).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failure = match &check {
        Some(check) if check.passed() => None,
        Some(_) => Some(
            log.as_deref()
                .and_then(outcome::error_line)
                .unwrap_or("the profiler failed without a message")
                .to_owned(),
        ),
        None if !boot.finished => Some(format!(
            "killed: init.sh must start within {booted_within:?} and finish within {limit:?}; \
             console: {}",
            console_log.display()
        )),
        None => Some(format!(
            "the VM stopped without a result; console: {}",
            console_log.display()
        )),
    };
    let note = match (failure, kvm_note) {
        (Some(failure), Some(kvm)) => Some(format!("{failure} ({kvm})")),
        (failure, kvm) => failure.or(kvm),
    };
    Ok(Row {
        series: kernel.name(),
        release: kernel.release.to_owned(),
        accel: accel.name().to_owned(),
        check,
        elapsed: boot.elapsed,
        note,
    })
}

/// `target/kernels/<release>/vmlinuz`, downloaded and unpacked unless it is there for this
/// exact package version (the `package` file records which).
fn cached_kernel(apt: &mut apt::PrivateApt, kernel: &Kernel, dir: &Path) -> Result<PathBuf> {
    let vmlinuz = dir.join("vmlinuz");
    let stamp = dir.join("package");
    let wanted = format!("{}={}\n", kernel.package, kernel.version);
    if vmlinuz.is_file() && fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(vmlinuz);
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let deb = apt.download_kernel(kernel)?;
    apt::unpack_kernel(&deb, kernel, dir)?;
    // The kernel is all we keep of the package.
    fs::remove_file(&deb).with_context(|| format!("cannot remove {}", deb.display()))?;
    fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(vmlinuz)
}
