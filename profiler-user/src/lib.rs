//! A whole-host eBPF CPU profiler: per-CPU perf events sample kernel and user stacks in a BPF
//! program that aggregates them in the kernel; userspace drains them every interval,
//! symbolizes them on the host, and writes pprof files. See ARCHITECTURE.md for the map.

pub mod adaptive;
mod allocator;
pub mod bpf;
pub mod cli;
pub mod elf_file;
mod fast_hash;
pub mod golabels;
pub mod kernel_features;
mod listener;
pub mod metrics;
pub mod otlp;
pub mod preflight;
pub mod process;
pub mod profile;
pub mod pull;
pub mod recorder;
pub mod report;
pub mod resolve;
pub mod safe_file;
pub mod serve;
pub mod stop_signals;
pub mod symbolize;
#[cfg(test)]
mod test_support;
pub mod tracectx;
pub mod unwind;

/// An error and its sources on one line: `outer: inner: root cause`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some wrappers repeat their source's message; say it once.
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
