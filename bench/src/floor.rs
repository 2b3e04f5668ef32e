//! `profiler-bench --floor HZ`: loads the floor program (`floor-ebpf/`: both stacks by
//! `bpf_get_stackid`, one counter), attaches it to a `cpu-clock` event per online CPU at `HZ`,
//! and runs until killed. The kernel-cost part starts it as one more tool beside ours and
//! bpftrace and reads its program's statistics from this process's descriptors, as theirs.

use anyhow::{Context, Result, anyhow};
use aya::{Ebpf, programs::PerfEvent};
use profiler::bpf::PerfEvents;

/// The object `build.rs` built from `floor-ebpf/`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));

/// The program's name in the object.
pub const PROGRAM: &str = "floor";

/// Samples the whole host with the floor program until the process is killed (the harness
/// stops it with SIGINT, whose default action ends it).
pub fn run(rate: u64) -> Result<()> {
    // SIGINT's default action, whatever was inherited: a shell's background job starts with
    // it ignored, and the harness stops every tool with SIGINT.
    // SAFETY: no handler is installed, only the default disposition restored.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    let mut ebpf = Ebpf::load(OBJECT).context("cannot load the floor BPF object")?;
    let program: &mut PerfEvent = ebpf
        .program_mut(PROGRAM)
        .context("the floor object has no `floor` program")?
        .try_into()
        .context("the floor program is not a perf_event program")?;
    program
        .load()
        .context("the kernel refused the floor program")?;
    let cpus =
        aya::util::online_cpus().map_err(|(file, err)| anyhow!("cannot read {file}: {err}"))?;
    // The very perf events ours opens (cpu-clock, frequency mode, one per CPU): only the
    // programs differ between the two.
    let _events = PerfEvents::open(program.fd()?, &cpus, rate)
        .context("cannot attach the floor program to the CPUs' cpu-clock events")?;
    loop {
        std::thread::park();
    }
}
