//! Helpers for the profiler's root integration tests: find (or build) the `profiler` binary, run
//! it with a timeout, spawn the fixtures of `tests/fixtures/`, decode the pprof files it writes
//! and read stacks and labels out of them, and cross-check files with `go tool pprof`.
//!
//! Tests that load BPF call [`require_root`] first: it skips them on a developer's machine and
//! fails them in CI (`CI=true`), where they must run.

pub use profiler::profile::proto::{Function, Label, Line, Location, Mapping, Profile, Sample};

/// C fixture: main -> fixture_outer -> fixture_middle -> fixture_hot_leaf, CPU-bound.
pub const HOT_C: &str = env!("FIXTURE_HOT_C");
/// C fixture spending its time in `read(2)` of /dev/zero, called from fixture_syscall_loop.
pub const SYSCALLS_C: &str = env!("FIXTURE_SYSCALLS_C");
/// Rust fixture: rust_fixture_outer -> rust_fixture_middle -> rust_fixture_hot_leaf on a thread
/// named [`RUST_WORKER_THREAD`].
pub const HOT_RUST: &str = env!("FIXTURE_HOT_RUST");
/// Name of the thread of [`HOT_RUST`] that burns CPU.
pub const RUST_WORKER_THREAD: &str = "rust-hot-worker";

/// C fixture publishing known trace contexts on named threads (see
/// `fixtures/traced_scenario.c` and [`C_TRACED`]), with `otel_thread_ctx_v1` defined in the
/// executable (static TLS).
pub const TRACED_EXE: &str = env!("FIXTURE_TRACED_EXE");
/// The same scenario with `otel_thread_ctx_v1` in [`LIBOTELCTX_GNU2`] (TLSDESC).
pub const TRACED_TLSDESC: &str = env!("FIXTURE_TRACED_TLSDESC");
/// The same scenario with `otel_thread_ctx_v1` in [`LIBOTELCTX_GNU`] (general dynamic).
pub const TRACED_GD: &str = env!("FIXTURE_TRACED_GD");
/// C fixture without `otel_thread_ctx_v1` at start: burns CPU in `before_dlopen_fn` until it gets
/// SIGUSR1, then dlopens [`LIBOTELCTX_GNU2`] (next to itself), publishes [`TRACE_DLOPEN`] through
/// it and burns CPU in `after_dlopen_fn` (see `fixtures/traced_dlopen.c`).
pub const TRACED_DLOPEN: &str = env!("FIXTURE_TRACED_DLOPEN");
/// C fixture for process lifetimes (see `fixtures/lifetimes.c`): `leader-exits` (a main
/// thread that calls pthread_exit on SIGUSR1 while its worker burns CPU in `worker_hot_fn`),
/// `fork-child [PID]` (a child forked without exec, aimed at PID, burning CPU in
/// `forked_child_hot_fn`), `dlopen LIBRARY` (burns in `before_plugin_fn` until SIGUSR1, then in [`PLUGIN`]).
pub const LIFETIMES: &str = env!("FIXTURE_LIFETIMES");
/// Library with `plugin_outer -> plugin_hot_fn`, opened by [`LIFETIMES`] `dlopen`.
pub const PLUGIN: &str = env!("FIXTURE_PLUGIN");
/// Shared library defining `otel_thread_ctx_v1`, built with `-mtls-dialect=gnu2`.
pub const LIBOTELCTX_GNU2: &str = env!("FIXTURE_LIBOTELCTX_GNU2");
/// Shared library defining `otel_thread_ctx_v1`, built with `-mtls-dialect=gnu`.
pub const LIBOTELCTX_GNU: &str = env!("FIXTURE_LIBOTELCTX_GNU");

/// Filename of the mapping that kernel frames belong to.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
/// The rate the recording tests ask for: not the default, so the period check means something.
pub const TEST_FREQUENCY: u32 = 99;

// ---------------------------------------------------------------------------------------------
// Privileges

/// Whether a test that needs root may run. Not root: prints a "skipped" line and returns false,
/// except in CI (`CI=true`), where a skipped test would hide a failure, so it panics.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let test = thread::current().name().unwrap_or("this test").to_owned();
    if env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root, and CI=true: a skipped test in CI is a failure");
    }
    eprintln!(
        "skipped: needs root ({test} loads BPF programs; run `cargo xtask test` or the tests as root)"
    );
    false
}

use std::{env, thread};

mod adaptive;
mod binary;
mod browser;
mod cgroup;
mod checks;
mod churn;
mod fixture;
mod go;
mod http;
mod marker;
mod pprof;
mod recording;
mod running;
mod synthetic;
mod system;
mod trace_files;
mod traces;

pub use adaptive::*;
pub use binary::*;
pub use browser::*;
pub use cgroup::*;
pub use checks::*;
pub use churn::*;
pub use fixture::*;
pub use go::*;
pub use http::*;
pub use marker::*;
pub use pprof::*;
pub use recording::*;
pub use running::*;
pub use synthetic::*;
pub use system::*;
pub use trace_files::*;
pub use traces::*;
