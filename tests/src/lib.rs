//! Helpers for the profiler's root integration tests: find (or build) the `profiler` binary, run
//! it with a timeout, spawn the fixtures of `tests/fixtures/`, decode the pprof files it writes
//! and read stacks and labels out of them, and cross-check files with `go tool pprof`.
//!
//! Tests that need root (most load BPF programs) are marked `#[ignore = "needs root: ..."]`, so a
//! plain `cargo test` as a user lists them as ignored instead of passing them; `cargo xtask test`
//! run as root adds `--include-ignored`, and refuses to run in CI (`CI=true`) without root. Each
//! calls [`assert_root`] first, so one run by a user with `--include-ignored` fails and says why.
//! A test that cannot run for want of a tool calls [`skip_or_fail`]: a failure in CI, a skip
//! printed on the terminal elsewhere.

pub use profiler::profile::proto::{Function, Label, Line, Location, Mapping, Profile, Sample};

/// C fixture: main -> fixture_outer -> fixture_middle -> fixture_hot_leaf, CPU-bound.
pub const HOT_C: &str = env!("FIXTURE_HOT_C");
/// C fixture with frame pointers spinning 200 calls deep (deep_spin_recurse), deeper than the
/// kernel's 127 user frames.
pub const DEEP_SPIN_C: &str = env!("FIXTURE_DEEP_SPIN");
/// C fixture spending its time in `read(2)` of /dev/zero, called from fixture_syscall_loop.
pub const SYSCALLS_C: &str = env!("FIXTURE_SYSCALLS_C");
/// Threads that wait in known places and log their waits (fixtures/off_cpu.c).
pub const OFF_CPU_C: &str = env!("FIXTURE_OFF_CPU");
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

/// Panics unless the test runs as root. Tests that need root are ignored unless asked for
/// (`--include-ignored`, as `cargo xtask test` does as root): asked for by a user, they fail here
/// with the reason instead of failing later, or passing, for the wrong one.
pub fn assert_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "{} needs root (see its #[ignore] reason): run `cargo xtask test` as root",
            current_test()
        );
    }
}

/// For a test that cannot run here (a tool is missing: `why` says which and what to do). In CI
/// (`CI=true`) it panics: a skipped test there would hide a failure. Elsewhere it prints a
/// `skipped:` line straight to the terminal (past the test harness's capture, which would hide
/// it) and returns; the test then returns too.
pub fn skip_or_fail(why: &str) {
    let test = current_test();
    if env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why} (CI=true: a skipped test in CI is a failure)");
    }
    let _ = writeln!(io::stderr(), "skipped: {test}: {why}");
}

/// The name of the running test (the harness names each test's thread after it).
fn current_test() -> String {
    thread::current().name().unwrap_or("this test").to_owned()
}

use std::{
    env,
    io::{self, Write},
    thread,
};

mod adaptive;
mod binary;
mod browser;
mod cgroup;
mod checks;
mod churn;
mod fixture;
mod go;
mod go_fixtures;
mod http;
mod marker;
mod page_out;
mod poller;
mod pprof;
mod recording;
mod running;
mod synthetic;
mod system;
mod trace_files;
mod traces;
mod wait;

pub use adaptive::*;
pub use binary::*;
pub use browser::*;
pub use cgroup::*;
pub use checks::*;
pub use churn::*;
pub use fixture::*;
pub use go::*;
pub use go_fixtures::*;
pub use http::*;
pub use marker::*;
pub use page_out::*;
pub use poller::*;
pub use pprof::*;
pub use recording::*;
pub use running::*;
pub use synthetic::*;
pub use system::*;
pub use trace_files::*;
pub use traces::*;
pub use wait::*;
