//! Adaptive sampling: the controller (a pure state machine holding all policy) and the readers
//! of host load and of the profiler's own cost that feed it once a second.

pub mod controller;
pub mod signals;
