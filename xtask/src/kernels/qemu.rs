//! One boot of one kernel under QEMU (qemu-system-x86_64, or qemu-system-aarch64 for the arm64
//! row), its serial console captured to a file.

use std::{
    fs::{self, File, OpenOptions},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::process;

/// The emulated machine of one architecture.
pub struct Machine {
    /// The QEMU program.
    pub qemu: &'static str,
    /// Arguments that choose the board, before the accelerator's.
    pub board: &'static [&'static str],
    /// `-cpu` under TCG.
    pub tcg_cpu: &'static str,
    /// The kernel's name for the serial console.
    pub console: &'static str,
}

/// A PC, QEMU's default board.
pub const X86_64: Machine = Machine {
    qemu: "qemu-system-x86_64",
    board: &[],
    tcg_cpu: "max",
    console: "ttyS0",
};

/// How the guest's CPU runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization; nested KVM fails on the project's VMs (see ARCHITECTURE.md).
    Kvm,
    /// QEMU's own translator: slow but works everywhere.
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn args(self, machine: &Machine) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", machine.tcg_cpu],
        }
    }
}

/// Whether KVM is worth a try: `/dev/kvm` opens for reading and writing.
pub fn kvm_available() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// How a boot ended.
pub struct Boot {
    /// The serial console.
    pub console: String,
    /// False when qemu was killed at the limit.
    pub finished: bool,
    pub elapsed: Duration,
}

/// What `init.sh` prints first: the kernel has booted into the initramfs.
const BOOTED: &str = "BOOTED kernel=";

impl Boot {
    /// Whether the kernel reached `init.sh`: a boot that did not failed before any of ours ran
    /// (a guest kernel that panics while booting under TCG, seen now and then with 6.12).
    pub fn reached_init(&self) -> bool {
        self.console.contains(BOOTED)
    }
}

/// Boots `kernel` with `initrd` on `machine`, at most `limit`, and gives up sooner if `init.sh`
/// has not started within `booted_within`; the console goes to `console_log`.
pub fn boot(
    machine: &Machine,
    kernel: &Path,
    initrd: &Path,
    accel: Accel,
    (booted_within, limit): (Duration, Duration),
    console_log: &Path,
) -> Result<Boot> {
    let log = File::create(console_log)
        .with_context(|| format!("cannot create {}", console_log.display()))?;
    let errors = log.try_clone().context("cannot share the console log")?;
    let mut cmd = Command::new(machine.qemu);
    cmd.args(machine.board)
        .args(accel.args(machine))
        .args([
            "-m",
            "512",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console={} panic=-1 quiet", machine.console))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(errors);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", process::describe(&cmd)))?;
    let status = wait_for_boot(&mut child, console_log, booted_within)?;
    let status = match status {
        Waited::Exited(status) => Some(status),
        Waited::Running => {
            process::wait_bounded(&mut child, limit.saturating_sub(started.elapsed()))?
        }
        Waited::NotBooted => None,
    };
    let elapsed = started.elapsed();
    let bytes =
        fs::read(console_log).with_context(|| format!("cannot read {}", console_log.display()))?;
    Ok(Boot {
        console: String::from_utf8_lossy(&bytes).into_owned(),
        finished: status.is_some(),
        elapsed,
    })
}

enum Waited {
    Exited(ExitStatus),
    /// `init.sh` runs.
    Running,
    /// Killed: no sign of `init.sh` in time.
    NotBooted,
}

/// Waits until qemu exits or the console shows `init.sh`, at most `within`.
fn wait_for_boot(child: &mut Child, console_log: &Path, within: Duration) -> Result<Waited> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().context("could not wait for qemu")? {
            return Ok(Waited::Exited(status));
        }
        let console = fs::read(console_log).unwrap_or_default();
        if console
            .windows(BOOTED.len())
            .any(|w| w == BOOTED.as_bytes())
        {
            return Ok(Waited::Running);
        }
        if Instant::now() >= deadline {
            // Already gone is fine: it ended between the two calls.
            let _ = child.kill();
            child.wait().context("could not reap qemu")?;
            return Ok(Waited::NotBooted);
        }
        thread::sleep(Duration::from_millis(200));
    }
}
