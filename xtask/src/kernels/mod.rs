//! `cargo xtask kernels`: boots each kernel of the matrix (pinned in `pins.rs`) under QEMU with
//! a minimal initramfs holding the release profiler, runs a scripted check inside (`init.sh`,
//! `check.sh`), runs the same check on the host's own kernel (`host.rs`), and prints one table.
//! Kernels, the initramfs and each boot's console are kept under `target/kernels/`.

mod apt;
mod btf;
mod cross;
mod fixtures;
mod host;
pub use host::HOST;
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

/// The directory of the kernels' files; with `BTF_FIXTURES_VAR`, where the profiler's unit
/// tests find each kernel's `btf`.
pub fn kernels_dir(root: &Path) -> PathBuf {
    paths::target_dir(root).join("kernels")
}

/// What the profiler's unit tests read to find `kernels_dir` (kernel_features.rs).
pub const BTF_FIXTURES_VAR: &str = "PROFILER_KERNEL_BTF_DIR";

/// Downloads (once) the amd64 kernels named and takes out their BTF, for the unit tests that
/// read it before any kernel boots.
pub fn fetch(root: &Path, names: &[String]) -> Result<()> {
    let dir = kernels_dir(root);
    let mut apt = apt::PrivateApt::new(dir.join("apt"), Arch::Amd64);
    for kernel in pins::select(names)? {
        if kernel.arch == Arch::Amd64 {
            cached_kernel(&mut apt, kernel, &dir.join(kernel.release))?;
        }
    }
    Ok(())
}

/// [`kernels`]: prints the table, and says whether every kernel passed.
pub fn run_matrix(root: &Path, names: &[String]) -> Result<bool> {
    // `host` is the host's own kernel, checked in place; the others are booted.
    let with_host = names.is_empty() || names.iter().any(|name| name == HOST);
    let booted: Vec<String> = names.iter().filter(|name| *name != HOST).cloned().collect();
    let selected = if booted.is_empty() && !names.is_empty() {
        Vec::new()
    } else {
        pins::select(&booted)?
    };
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
    let dir = kernels_dir(root);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut amd64 = Guest::new(dir.join("apt"), Arch::Amd64, &qemu::X86_64);
    let profiler = paths::profiler_bin(root);
    let host_fixtures = if has(Arch::Amd64) || with_host {
        if !profiler.is_file() {
            bail!(
                "{} is missing: build it first with `cargo xtask build`",
                profiler.display()
            );
        }
        Some(fixtures::build(root, &dir, "gcc", "amd64")?)
    } else {
        None
    };
    if let (true, Some(fixtures)) = (has(Arch::Amd64), &host_fixtures) {
        let initrd = dir.join("initramfs.cpio");
        let mut libraries = initramfs::host_libraries(&profiler)?;
        libraries.extend(initramfs::host_libraries(&fixtures.traced)?);
        initramfs::build(
            Path::new(initramfs::BUSYBOX),
            &profiler,
            fixtures,
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
            Err(err) => {
                Row::without_result(&kernel.name(), kernel.release, "-", format!("{err:#}"))
            }
        };
        println!("kernels: {} {}", row.series, row.status());
        rows.push(row);
    }
    if let (true, Some(fixtures)) = (with_host, &host_fixtures) {
        let row = host::run(&profiler, fixtures, &dir)
            .unwrap_or_else(|err| Row::without_result(HOST, "-", HOST, format!("{err:#}")));
        println!("kernels: {HOST} {}", row.status());
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
    let mut boot_note = None;
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
        boot_note = Some(format!("KVM failed, see {}", kvm_log.display()));
        *try_kvm = false;
    }
    let tcg = || {
        println!("kernels: booting {} under tcg", kernel.release);
        qemu::boot(
            machine,
            &vmlinuz,
            initrd,
            Accel::Tcg,
            TCG_LIMIT,
            &console_log,
        )
    };
    let mut boot = tcg()?;
    if !boot.reached_init() {
        // The kernel failed before init.sh ran: nothing of ours was tested. Once more, with the
        // first console kept and named in the row.
        let first_log = kernel_dir.join("console-first-boot.log");
        fs::rename(&console_log, &first_log)
            .with_context(|| format!("cannot keep {}", first_log.display()))?;
        let note = format!(
            "the first boot failed before init.sh, see {}",
            first_log.display()
        );
        boot_note = Some(match boot_note {
            Some(kvm) => format!("{kvm}; {note}"),
            None => note,
        });
        boot = tcg()?;
    }
    finish(kernel, Accel::Tcg, TCG_LIMIT, &boot, &kernel_dir, boot_note)
}

/// The row of a boot; the profiler's log is kept as `profiler.log` beside the console.
fn finish(
    kernel: &Kernel,
    accel: Accel,
    (booted_within, limit): (Duration, Duration),
    boot: &qemu::Boot,
    kernel_dir: &Path,
    boot_note: Option<String>,
) -> Result<Row> {
    let console_log = kernel_dir.join("console.log");
    if let Some(log) = outcome::profiler_log(&boot.console) {
        let path = kernel_dir.join("profiler.log");
        fs::write(&path, log).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut row = Row::of_console(
        kernel.name(),
        kernel.release.to_owned(),
        accel.name(),
        &boot.console,
        boot.elapsed,
        || {
            if boot.finished {
                format!(
                    "the VM stopped without a result; console: {}",
                    console_log.display()
                )
            } else {
                format!(
                    "killed: init.sh must start within {booted_within:?} and finish within \
                     {limit:?}; console: {}",
                    console_log.display()
                )
            }
        },
    );
    row.note = match (row.note.take(), boot_note) {
        (Some(failure), Some(boot)) => Some(format!("{failure} ({boot})")),
        (failure, boot) => failure.or(boot),
    };
    Ok(row)
}

/// `target/kernels/<release>/vmlinuz`, downloaded and unpacked unless it is there for this
/// exact package version (the `package` file records which), and for an amd64 kernel its BTF
/// beside it (`btf`; an arm64 `Image` is no ELF file to take it from).
fn cached_kernel(apt: &mut apt::PrivateApt, kernel: &Kernel, dir: &Path) -> Result<PathBuf> {
    let vmlinuz = dir.join("vmlinuz");
    let btf = dir.join("btf");
    let wants_btf = kernel.arch == Arch::Amd64;
    let stamp = dir.join("package");
    let wanted = format!("{}={}\n", kernel.package, kernel.version);
    if vmlinuz.is_file() && fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        if wants_btf && !btf.is_file() {
            btf::extract(&vmlinuz, &btf)?;
        }
        return Ok(vmlinuz);
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let deb = apt.download_kernel(kernel)?;
    apt::unpack_kernel(&deb, kernel, dir)?;
    // The kernel is all we keep of the package.
    fs::remove_file(&deb).with_context(|| format!("cannot remove {}", deb.display()))?;
    if wants_btf {
        btf::extract(&vmlinuz, &btf)?;
    }
    fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(vmlinuz)
}
