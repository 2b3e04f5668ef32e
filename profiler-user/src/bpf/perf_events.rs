//! Per-CPU `cpu-clock` perf events carrying the sampling program.
//!
//! Opened here rather than through aya's `PerfEvent::attach` because we keep the file
//! descriptors and the program's: the adaptive controller changes the rate.
//!
//! The rate is changed by opening new events before closing the old ones, not with
//! `PERF_EVENT_IOC_PERIOD`: that ioctl changes a `cpu-clock` event's period, but the kernel goes
//! on reporting the old period to the BPF program (`hw.last_period` of an hrtimer event is set
//! only at open), which would weight every later sample wrongly. Measured on Linux 6.18: after
//! retuning 19 Hz -> 99 Hz with the ioctl, samples still carried 52.6 ms periods. The new events
//! start before the old ones stop, so no interval goes unsampled; at worst one CPU takes one
//! extra sample in the microseconds both exist.

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
    program: OwnedFd,
    frequency: u64,
}

impl PerfEvents {
    /// Opens a software `cpu-clock` event at `frequency` Hz on each CPU and attaches `program`.
    ///
    /// For `cpu-clock` the kernel turns the frequency into a fixed period of `1e9 / frequency`
    /// nanoseconds, which the program reads from its context to weight each sample.
    pub fn open(program: impl AsFd, cpus: &[u32], frequency: u64) -> Result<Self, BpfError> {
        // Our own descriptor of the program: new events are attached to it when the rate changes.
        let program =
            program
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| BpfError::PerfEventOpen {
                    cpu: cpus.first().copied().unwrap_or(0),
                    source,
                })?;
        let events = open_all(&program, cpus, frequency)?;
        Ok(Self {
            events,
            program,
            frequency,
        })
    }

    /// Number of CPUs being sampled.
    pub fn cpus(&self) -> usize {
        self.events.len()
    }

    /// The rate in force.
    pub fn frequency(&self) -> u64 {
        self.frequency
    }

    /// Changes the sampling rate on every CPU: new events first, then the old ones close. On
    /// failure the old events keep sampling at the old rate.
    pub fn set_frequency(&mut self, frequency: u64) -> Result<(), BpfError> {
        if frequency == self.frequency {
            return Ok(());
        }
        let cpus: Vec<u32> = self.events.iter().map(|(cpu, _)| *cpu).collect();
        self.events = open_all(&self.program, &cpus, frequency)?;
        self.frequency = frequency;
        Ok(())
    }
}

/// The `cpu-clock` period of a frequency, as the kernel computes it.
pub fn period_ns(frequency: u64) -> u64 {
    1_000_000_000 / frequency.max(1)
}

/// Opens, attaches and enables one event per CPU.
fn open_all(
    program: &OwnedFd,
    cpus: &[u32],
    frequency: u64,
) -> Result<Vec<(u32, OwnedFd)>, BpfError> {
    let program = program.as_raw_fd();
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
    Ok(events)
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
