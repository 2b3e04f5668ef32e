//! Process events from the ring buffer: a process image seen for the first time, or ended.

use std::os::fd::{AsRawFd, RawFd};

use aya::maps::{MapData, RingBuf};
use profiler_common::{EVENT_EXIT, EVENT_NEW_PROCESS, ProcessEvent};

/// A decoded [`ProcessEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    NewProcess { pid: u32, pid_gen: u64 },
    Ended { pid: u32, pid_gen: u64 },
}

/// Reads process events; poll its file descriptor for readiness.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    pub(crate) fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring }
    }

    /// Everything available now, without blocking.
    pub fn read_available(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(event) = decode(&item) {
                events.push(event);
            }
        }
        events
    }
}

impl AsRawFd for EventReader {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<ProcessEvent>() {
        return None;
    }
    // SAFETY: length checked; ProcessEvent is plain data, read unaligned.
    let raw: ProcessEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    match raw.kind {
        EVENT_NEW_PROCESS => Some(Event::NewProcess {
            pid: raw.pid,
            pid_gen: raw.pid_gen,
        }),
        EVENT_EXIT => Some(Event::Ended {
            pid: raw.pid,
            pid_gen: raw.pid_gen,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(event: ProcessEvent) -> Vec<u8> {
        // SAFETY: plain #[repr(C)] data without padding.
        unsafe {
            std::slice::from_raw_parts(
                (&event as *const ProcessEvent).cast::<u8>(),
                size_of::<ProcessEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_known_kinds_and_rejects_the_rest() {
        let new = ProcessEvent {
            kind: EVENT_NEW_PROCESS,
            pid: 7,
            pid_gen: 99,
        };
        assert_eq!(
            decode(&bytes(new)),
            Some(Event::NewProcess {
                pid: 7,
                pid_gen: 99
            })
        );
        let ended = ProcessEvent {
            kind: EVENT_EXIT,
            pid: 7,
            pid_gen: 99,
        };
        assert_eq!(
            decode(&bytes(ended)),
            Some(Event::Ended {
                pid: 7,
                pid_gen: 99
            })
        );
        let unknown = ProcessEvent {
            kind: 42,
            pid: 7,
            pid_gen: 99,
        };
        assert_eq!(decode(&bytes(unknown)), None);
        assert_eq!(decode(&[1, 2, 3]), None);
    }
}
