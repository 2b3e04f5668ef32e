use std::io;

/// Errors of the BPF and perf-event layer.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("loading the BPF object failed")]
    Load(#[source] aya::EbpfError),
    #[error("the BPF object has no {kind} named `{name}`")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error(
        "loading BPF program `{name}` failed (the kernel verifier refused it, or BPF is not permitted)"
    )]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("BPF map `{name}` could not be used")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("reading the kernel's BTF (/sys/kernel/btf/vmlinux) failed")]
    Btf {
        #[source]
        source: aya::BtfError,
    },
    #[error("listing online CPUs failed: {what}")]
    OnlineCpus {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("perf_event_open(cpu-clock, cpu {cpu}) failed")]
    PerfEventOpen {
        cpu: u32,
        #[source]
        source: io::Error,
    },
    #[error("{call} failed")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("ioctl({request}) on the perf event of cpu {cpu} failed")]
    PerfIoctl {
        request: &'static str,
        cpu: u32,
        #[source]
        source: io::Error,
    },
}
