//! Per-CPU `cpu-clock` perf events carrying the sampling program.
//!
//! Opened here rather than through aya's `PerfEvent::attach` because we keep the file
//! descriptors: the adaptive controller retunes the period of each event in place.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
};

use perf_event_open_sys::{bindings, ioctls};

use super::BpfError;

/// One open perf event per online CPU, each running the sampling program.
#[derive(Debug)]
pub struct PerfEvents {
    events: Vec<(u32, OwnedFd)>,
}

impl PerfEvents {
    /// Opens a software `cpu-clock` event at `frequency` Hz on each CPU and attaches `program`.
    ///
    /// For `cpu-clock` the kernel turns the frequency into a fixed period of `1e9 / frequency`
    /// nanoseconds, which the program reads from its context to weight each sample.
    pub fn open(program: impl AsFd, cpus: &[u32], frequency: u64) -> Result<Self, BpfError> {
        let program = program.as_fd().as_raw_fd();
        let mut events = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            let fd = open_cpu_clock(cpu, frequency)
                .map_err(|source| BpfError::PerfEventOpen { cpu, source })?;
            ioctl(&fd, cpu, "PERF_EVENT_IOC_SET_BPF", |raw| unsafe {
                ioctls::SET_BPF(raw, program as u32)
            })?;
            events.push((cpu, fd));
        }
        for (cpu, fd) in &events {
            ioctl(fd, *cpu, "PERF_EVENT_IOC_ENABLE", |raw| unsafe {
                ioctls::ENABLE(raw, 0)
            })?;
        }
        Ok(Self { events })
    }

    /// Number of CPUs being sampled.
    pub fn cpus(&self) -> usize {
        self.events.len()
    }
}

fn open_cpu_clock(cpu: u32, frequency: u64) -> io::Result<OwnedFd> {
    // SAFETY: perf_event_attr is plain data; all-zero is its documented default.
    let mut attr: bindings::perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = bindings::PERF_TYPE_SOFTWARE;
    attr.size = std::mem::size_of::<bindings::perf_event_attr>() as u32;
    attr.config = bindings::PERF_COUNT_SW_CPU_CLOCK as u64;
    attr.__bindgen_anon_1.sample_freq = frequency;
    attr.set_freq(1);
    attr.set_disabled(1);
    // SAFETY: `attr` is initialized; pid -1 with a cpu means every task on that CPU.
    let fd = unsafe {
        perf_event_open_sys::perf_event_open(
            &mut attr,
            -1,
            cpu as i32,
            -1,
            bindings::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(
    fd: &OwnedFd,
    cpu: u32,
    request: &'static str,
    call: impl FnOnce(i32) -> i32,
) -> Result<(), BpfError> {
    if call(fd.as_raw_fd()) < 0 {
        return Err(BpfError::PerfIoctl {
            request,
            cpu,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}
