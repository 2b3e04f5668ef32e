//! Checks done before anything is loaded, each failing with one line that says what to do.

use std::{fs, io, path::Path};

use caps::{CapSet, Capability};

use crate::safe_file::{self, UnsafeDir};

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "missing capabilities {}: run as root (for example `sudo profiler record ...`) or grant them with `setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_checkpoint_restore,cap_dac_read_search,cap_syslog+ep <profiler binary>`",
        .0.join(", ")
    )]
    MissingCapabilities(Vec<&'static str>),
    #[error(
        "kernel BTF not found at {path}: the profiler needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.4 or later)"
    )]
    NoBtf { path: String },
    #[error(
        "this kernel has no perf events (/proc/sys/kernel/perf_event_paranoid is missing): it needs CONFIG_PERF_EVENTS=y"
    )]
    NoPerfEvents,
    #[error(
        "kernel {release} is older than 5.10, the oldest kernel the profiler is tested on (its \
         kernel matrix boots Debian 11's 5.10, as on Amazon Linux 2): run it on Linux 5.10 or newer"
    )]
    OldKernel { release: String },
    #[error(
        "a sampling rate of {requested} Hz (--frequency or --capture-frequency) is above the kernel's limit of {limit} Hz: lower it, or raise the sysctl kernel.perf_event_max_sample_rate"
    )]
    FrequencyTooHigh { requested: u64, limit: u64 },
    #[error("no process with PID {0}: check it with `ps -p {0}`")]
    NoSuchProcess(u32),
    // The cause is part of the message (not a `#[source]`) so that the advice comes last.
    #[error("cannot use output directory {path}: {cause}: choose a writable --output-dir")]
    OutputDir { path: String, cause: io::Error },
    #[error("cannot use output directory {path}: {reason}")]
    UnsafeOutputDir { path: String, reason: UnsafeDir },
}

/// Where the kernel publishes its BTF; `PROFILER_KERNEL_BTF` overrides it (tests, odd hosts).
pub fn kernel_btf_path() -> String {
    std::env::var("PROFILER_KERNEL_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".to_owned())
}

/// BPF and perf events need CAP_BPF and CAP_PERFMON (Linux 5.8+), or CAP_SYS_ADMIN before.
pub fn check_capabilities() -> Result<(), PreflightError> {
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    let admin = has(Capability::CAP_SYS_ADMIN);
    let missing: Vec<&'static str> = [
        (Capability::CAP_BPF, "CAP_BPF"),
        (Capability::CAP_PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    .filter(|(cap, _)| !admin && !has(*cap))
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingCapabilities(missing))
    }
}

/// Whether `/proc/kallsyms` shows real addresses to us. Without CAP_SYSLOG (or with
/// `kernel.kptr_restrict=2`) it shows zeros, and kernel frames could not be named.
pub fn kallsyms_visible() -> bool {
    // The head is enough, and cheap: the whole file costs the kernel ~50 ms to generate.
    let Ok(file) = fs::File::open("/proc/kallsyms") else {
        return false;
    };
    let mut head = String::new();
    let read = io::Read::read_to_string(&mut io::Read::take(file, 64 * 1024), &mut head);
    read.is_ok() && kallsyms_has_addresses(&head)
}

fn kallsyms_has_addresses(text: &str) -> bool {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|address| address.bytes().any(|b| b != b'0'))
}

/// The oldest kernel the profiler runs on: the oldest `cargo xtask kernels` boots.
const MIN_KERNEL: (u32, u32) = (5, 10);

/// Refuses a kernel older than [`MIN_KERNEL`]; a release it cannot read is let through (the
/// checks that follow say what is missing).
pub fn check_kernel_version() -> Result<(), PreflightError> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    check_release(release.trim())
}

fn check_release(release: &str) -> Result<(), PreflightError> {
    match kernel_version(release) {
        Some(version) if version < MIN_KERNEL => Err(PreflightError::OldKernel {
            release: release.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// `(major, minor)` of a release such as `5.10.0-32-cloud-amd64`.
pub(crate) fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}

pub fn check_btf(path: &str) -> Result<(), PreflightError> {
    if Path::new(path).is_file() {
        Ok(())
    } else {
        Err(PreflightError::NoBtf {
            path: path.to_owned(),
        })
    }
}

pub fn check_perf_events(frequency: u64) -> Result<(), PreflightError> {
    if !Path::new("/proc/sys/kernel/perf_event_paranoid").exists() {
        return Err(PreflightError::NoPerfEvents);
    }
    match max_sample_rate() {
        Some(limit) if frequency > limit => Err(PreflightError::FrequencyTooHigh {
            requested: frequency,
            limit,
        }),
        _ => Ok(()),
    }
}

/// The kernel's limit on a perf event's sampling rate (`kernel.perf_event_max_sample_rate`,
/// which the kernel may lower by itself when sampling takes too long).
pub fn max_sample_rate() -> Option<u64> {
    fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
}

pub fn check_targets(pids: &[u32]) -> Result<(), PreflightError> {
    match pids.iter().find(|&&pid| !process_alive(pid)) {
        Some(&pid) => Err(PreflightError::NoSuchProcess(pid)),
        None => Ok(()),
    }
}

/// Whether `pid` names a live process. A zombie has finished running, so it does not count,
/// unless it is a main thread that called `pthread_exit` while other threads run on.
pub fn process_alive(pid: u32) -> bool {
    let Ok(process) = procfs::process::Process::new(pid as i32) else {
        return false;
    };
    // /proc/<tid> exists for threads too; only a thread group leader is a process.
    match process.status() {
        Ok(status) if status.tgid == pid as i32 => {
            !status.state.starts_with('Z') || any_thread_running(&process)
        }
        _ => false,
    }
}

fn any_thread_running(process: &procfs::process::Process) -> bool {
    let Ok(tasks) = process.tasks() else {
        return false;
    };
    tasks
        .flatten()
        .filter_map(|task| task.status().ok())
        .any(|status| !status.state.starts_with('Z') && !status.state.starts_with('X'))
}

/// Creates the output directory and proves it writable by creating a file there. Refuses a
/// directory that others can write to (unless it is sticky and ours): they could plant links
/// under the names the profiler writes ([`safe_file::check_dir`]).
pub fn prepare_output_dir(dir: &Path) -> Result<(), PreflightError> {
    let error = |cause: io::Error| match cause.downcast::<UnsafeDir>() {
        Ok(reason) => PreflightError::UnsafeOutputDir {
            path: dir.display().to_string(),
            reason,
        },
        Err(cause) => PreflightError::OutputDir {
            path: dir.display().to_string(),
            cause,
        },
    };
    safe_file::create_dir(dir).map_err(error)?;
    safe_file::check_writable(dir).map_err(error)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernels_older_than_the_matrix_are_refused() {
        for old in ["5.4.0-150-generic", "4.19.0-27-amd64", "5.9.16"] {
            let err = check_release(old).unwrap_err().to_string();
            assert!(err.contains(old) && err.contains("5.10 or newer"), "{err}");
        }
        for fine in [
            "5.10.0-32-cloud-amd64",
            "6.1.0-47-cloud-amd64",
            "6.18.44-fc-v1272",
            "7.3.4",
        ] {
            assert!(check_release(fine).is_ok(), "{fine}");
        }
        // What cannot be read is not refused.
        assert!(check_release("").is_ok() && check_release("custom").is_ok());
    }

    use super::*;
    use crate::test_support::Victim;

    #[test]
    fn own_process_is_alive_and_a_huge_pid_is_not() {
        assert!(check_targets(&[std::process::id()]).is_ok());
        let err = check_targets(&[std::process::id(), 999_999_999]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no process with PID 999999999: check it with `ps -p 999999999`"
        );
    }

    #[test]
    fn a_thread_id_is_not_a_process() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        assert!(std::path::Path::new(&format!("/proc/{tid}")).exists());
        assert!(!process_alive(tid), "a live thread is not a process");
        done_tx.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn btf_path_must_be_a_file() {
        assert!(
            check_btf("/nonexistent/vmlinux")
                .unwrap_err()
                .to_string()
                .contains("BTF")
        );
    }

    #[test]
    fn output_dir_is_created_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        prepare_output_dir(&nested).unwrap();
        assert!(nested.is_dir());
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = prepare_output_dir(&file.join("sub"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot use output directory "), "{err}");
    }

    /// Anyone who can write to the directory could plant links under the names the agent
    /// writes: refused, unless the sticky bit keeps them from touching the agent's files.
    #[test]
    fn a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o777, 0o775, 0o757] {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
            let err = prepare_output_dir(dir.path()).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "cannot use output directory {}: others can write to it",
                    dir.path().display()
                )) && err.contains("chmod go-w"),
                "{mode:o}: {err}"
            );
        }
        // Sticky and ours, like /tmp: others cannot rename or delete what we create.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        prepare_output_dir(dir.path()).unwrap();
    }

    /// The write test never writes through a planted link.
    #[test]
    fn the_write_test_follows_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = Victim::new(dir.path());
        victim.plant(&dir.path().join(".profiler-write-test"));
        prepare_output_dir(dir.path()).unwrap();
        victim.assert_untouched();
    }

    #[test]
    fn hidden_kallsyms_are_all_zeros() {
        let hidden = "0000000000000000 T _text\n0000000000000000 t do_one_initcall\n";
        assert!(!kallsyms_has_addresses(hidden));
        let shown = "0000000000000000 A fixed_percpu_data\nffffffff81000000 T _text\n";
        assert!(kallsyms_has_addresses(shown));
    }

    #[test]
    fn missing_capabilities_message_says_what_to_do() {
        let err = PreflightError::MissingCapabilities(vec!["CAP_BPF", "CAP_PERFMON"]).to_string();
        assert!(
            err.starts_with("missing capabilities CAP_BPF, CAP_PERFMON: run as root"),
            "{err}"
        );
    }
}
