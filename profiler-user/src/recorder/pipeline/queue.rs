//! The writer thread's queue: first in, first out (a capture's start and end must fall between
//! the right intervals), bounded in drained intervals. A job that may be dropped and finds the
//! queue full is handed back instead of waiting: the recorder's loop also serves `/healthz` and
//! must never block on a writer that fell behind. Other jobs always go in (they are a few bytes
//! and rare), so they need no room of their own.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
    mpsc,
};

/// A job on its way, with the place it holds in the queue's bound.
pub(super) struct Queued<T> {
    pub job: T,
    /// Freed when the writer is done with the job (dropped with it), not when it takes it:
    /// the bound counts the interval being written too, which is what memory holds.
    _slot: Option<Slot>,
}

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What became of a job sent.
#[derive(Debug)]
pub(super) enum Sent<T> {
    Queued,
    /// The queue was full: the job comes back, for the caller to count and drop.
    Full(T),
    /// The writer thread is gone.
    Gone,
}

pub(super) struct QueueSender<T> {
    sender: mpsc::Sender<Queued<T>>,
    held: Arc<AtomicUsize>,
    capacity: usize,
}

/// A queue that holds at most `capacity` droppable jobs at once.
pub(super) fn bounded<T>(capacity: usize) -> (QueueSender<T>, mpsc::Receiver<Queued<T>>) {
    let (sender, receiver) = mpsc::channel();
    let queue = QueueSender {
        sender,
        held: Arc::new(AtomicUsize::new(0)),
        capacity,
    };
    (queue, receiver)
}

impl<T> QueueSender<T> {
    /// Queues `job` if fewer than the capacity of droppable jobs are held, or if `droppable`
    /// is false (it then takes no room).
    pub(super) fn send(&self, job: T, droppable: bool) -> Sent<T> {
        let slot = if droppable {
            // Only the recorder sends, so nobody else fills the room between load and add;
            // the writer only ever frees it.
            if self.held.load(Ordering::Acquire) >= self.capacity {
                return Sent::Full(job);
            }
            self.held.fetch_add(1, Ordering::AcqRel);
            Some(Slot(self.held.clone()))
        } else {
            None
        };
        match self.sender.send(Queued { job, _slot: slot }) {
            Ok(()) => Sent::Queued,
            Err(_) => Sent::Gone,
        }
    }

    /// Droppable jobs sent and not yet done with.
    pub(super) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn droppable_jobs_wait_within_the_bound_and_others_always_go() {
        let (queue, receiver) = bounded(2);
        assert!(matches!(queue.send(1, true), Sent::Queued));
        assert!(matches!(queue.send(2, true), Sent::Queued));
        assert!(matches!(queue.send(3, true), Sent::Full(3)));
        assert!(matches!(queue.send(4, false), Sent::Queued));
        assert_eq!(queue.held(), 2);
        // Taken is not done: the slot frees when the writer drops the job.
        let first = receiver.recv().unwrap();
        assert_eq!(first.job, 1);
        assert!(matches!(queue.send(5, true), Sent::Full(5)));
        drop(first);
        assert!(matches!(queue.send(6, true), Sent::Queued));
        let order: Vec<i32> = receiver.try_iter().map(|q| q.job).collect();
        assert_eq!(order, [2, 4, 6], "first in, first out");
        assert_eq!(queue.held(), 0);
        drop(receiver);
        assert!(matches!(queue.send(7, false), Sent::Gone));
    }
}
