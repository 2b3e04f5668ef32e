//! Whether a PID still runs the process image a generation names, from `/proc/PID/stat`'s start
//! time (field 22), which is the generation's start time in clock ticks.

use procfs::process::Process;
use profiler_common::generation_start_us;

/// What `/proc` says of a process generation now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The PID runs a process started when the generation says (an exec since keeps the start
    /// time: the generation may still have been replaced by a newer image).
    Running,
    /// The PID is free, or runs another process.
    Gone,
}

/// Checks `pid` against the start time that `pid_gen` carries. Generation 0 (the BPF program
/// could not read the task) carries none: any live process with that PID passes.
pub fn liveness(pid: u32, pid_gen: u64) -> Liveness {
    match Process::new(pid as i32).and_then(|p| p.stat()) {
        Ok(stat) if pid_gen == 0 || stat.starttime == start_ticks(pid_gen) => Liveness::Running,
        _ => Liveness::Gone,
    }
}

/// Whether `process` (already opened) is the one `pid_gen` names.
pub(super) fn is_generation(process: &Process, pid_gen: u64) -> bool {
    pid_gen == 0
        || process
            .stat()
            .is_ok_and(|stat| stat.starttime == start_ticks(pid_gen))
}

/// The generation's start time in clock ticks, rounded down as the kernel rounds field 22.
fn start_ticks(pid_gen: u64) -> u64 {
    let ticks_per_second = procfs::ticks_per_second().max(1);
    generation_start_us(pid_gen) / (1_000_000 / ticks_per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generation the BPF program would compute for `pid`, from `/proc` (start time in
    /// ticks, so rounded down to a tick: the comparison is in ticks too).
    fn generation_of(pid: u32) -> u64 {
        let stat = Process::new(pid as i32).unwrap().stat().unwrap();
        let ns = stat.starttime * (1_000_000_000 / procfs::ticks_per_second());
        profiler_common::process_generation(ns, 3)
    }

    #[test]
    fn our_own_generation_is_running_and_a_shifted_one_is_gone() {
        let pid = std::process::id();
        let generation = generation_of(pid);
        assert_eq!(liveness(pid, generation), Liveness::Running);
        // One second later: another process that got our PID.
        let later = generation + 1_000_000;
        assert_eq!(liveness(pid, later), Liveness::Gone);
        assert_eq!(liveness(pid, 0), Liveness::Running);
    }

    #[test]
    fn a_free_pid_is_gone() {
        assert_eq!(liveness(u32::MAX - 1, 0), Liveness::Gone);
    }
}
