//! A traced process with known trace contexts and hot functions, for the profiler's integration
//! tests.
//!
//! Publishes the process context (`service.name` = "marker-example", attribute keys
//! `http.route`, `user.id`), then a thread named `traced-worker` alternates every ~5 ms between
//!
//! - trace 0x1111…11, span 0x1111…11, `http.route` = "/checkout": `marker_example_checkout_work`
//! - trace 0x2222…22, span 0x2222…22, `http.route` = "/search", `user.id` = "42":
//!   `marker_example_search_work`
//!
//! for `argv[1]` seconds (default: forever). Prints `ready <pid>` once the worker runs.
//!
//! ```text
//! cargo run -p profiler-marker --example traced_worker -- 10
//! ```

use std::{
    hint::black_box,
    io::Write as _,
    process::ExitCode,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use profiler_marker::{
    TraceContext, attach,
    process_context::{self, ProcessContextInfo},
};

/// How long each context stays published before the worker switches.
const SLICE: Duration = Duration::from_millis(5);

fn main() -> ExitCode {
    let seconds = match std::env::args().nth(1).map(|arg| arg.parse::<f64>()) {
        None => None,
        Some(Ok(seconds)) if seconds.is_finite() && seconds >= 0.0 => Some(seconds),
        Some(_) => {
            eprintln!("usage: traced_worker [seconds]");
            return ExitCode::FAILURE;
        }
    };
    let deadline = seconds.map(|seconds| Instant::now() + Duration::from_secs_f64(seconds));

    let info =
        ProcessContextInfo::new("marker-example").with_attribute_keys(["http.route", "user.id"]);
    let process_context = match process_context::publish(&info) {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("traced_worker: cannot publish the process context: {err}");
            return ExitCode::FAILURE;
        }
    };

    let (started, ready) = mpsc::channel();
    let worker = thread::Builder::new()
        .name("traced-worker".into())
        .spawn(move || work(deadline, started));
    let worker = match worker {
        Ok(worker) => worker,
        Err(err) => {
            eprintln!("traced_worker: cannot start the worker thread: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The worker has published its first context when this returns.
    let _ = ready.recv();
    println!("ready {}", std::process::id());
    let _ = std::io::stdout().flush();

    let result = worker.join();
    drop(process_context);
    if result.is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn work(deadline: Option<Instant>, started: mpsc::Sender<()>) {
    let checkout = TraceContext::new([0x11; 16], [0x11; 8])
        .expect("non-zero trace id")
        .with_attribute(0, "/checkout");
    let search = TraceContext::new([0x22; 16], [0x22; 8])
        .expect("non-zero trace id")
        .with_attribute(0, "/search")
        .with_attribute(1, "42");
    let mut started = Some(started);
    let mut sink = 0u64;
    while deadline.is_none_or(|deadline| Instant::now() < deadline) {
        {
            let _guard = attach(&checkout);
            if let Some(started) = started.take() {
                let _ = started.send(());
            }
            sink = sink.wrapping_add(marker_example_checkout_work(Instant::now() + SLICE));
        }
        {
            let _guard = attach(&search);
            sink = sink.wrapping_add(marker_example_search_work(Instant::now() + SLICE));
        }
    }
    black_box(sink);
}

/// Burns CPU under the checkout context until `until`.
#[inline(never)]
fn marker_example_checkout_work(until: Instant) -> u64 {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    while Instant::now() < until {
        for _ in 0..1000 {
            state = black_box(state.rotate_left(5) ^ 0x1111);
        }
    }
    state
}

/// Burns CPU under the search context until `until`.
#[inline(never)]
fn marker_example_search_work(until: Instant) -> u64 {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    while Instant::now() < until {
        for _ in 0..1000 {
            state = black_box(
                state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(0x2222),
            );
        }
    }
    state
}
