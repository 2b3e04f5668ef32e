//! The unwinder's userspace work on a busy node, simulated with real processes: starts
//! PROCESSES processes (a fifth of them Python interpreters that import modules with C
//! extensions, some 30 files mapped each; the rest `sleep`), hands them to the loader as the
//! recorder does at their first sample, and times each kind of work it does: a first sample
//! (mappings read, files keyed, tables asked for), the tables' builds, a new image of a known
//! process (churn), the 5-second check of a sampled process's mappings, and the 250 ms poll.
//! It then prints the userspace CPU those costs take on a 64-CPU node at 99 Hz under stated
//! assumptions (the figures behind ARCHITECTURE.md's 64-CPU argument for issue 15).
//!
//! `cargo run --release -p profiler-user --example unwind_fleet [PROCESSES]` (default 300).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use profiler::{
    bpf::UnwindSizes,
    unwind::{
        kernel_maps::{Capacity, KernelTables, VecArrays},
        loader::{Loader, VecRanges},
        store::TableStore,
    },
};

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const PYTHON: &str = "import ssl, sqlite3, ctypes, decimal, json, hashlib, zlib, bz2, lzma, \
                      socket, select, array, math, struct, csv, uuid, time; time.sleep(600)";

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let mut children = Children(Vec::new());
    for i in 0..count {
        let mut command = if i % 5 == 0 {
            let mut python = Command::new("python3");
            python.args(["-c", PYTHON]);
            python
        } else {
            let mut sleep = Command::new("sleep");
            sleep.arg("600");
            sleep
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a process");
        children.0.push(child);
    }
    // The interpreters import their modules.
    std::thread::sleep(Duration::from_secs(3));
    let pids: Vec<u32> = children.0.iter().map(Child::id).collect();

    // `--unwind-memory-mb 64`, as the recorder shares it.
    let kernel_bytes = (64u64 << 20) * 3 / 8;
    let capacity = Capacity::of_bytes(kernel_bytes, 8192);
    let sizes = UnwindSizes {
        rows: capacity.rows,
        pages: capacity.pages,
        tables: capacity.tables,
        processes: 16_384,
        ranges: ((64u64 << 20) / 16 / 32) as u32,
    };
    let store = TableStore::with_cpu_share(capacity, 1.0).expect("the builder");
    let kernel = KernelTables::new(VecArrays::new(capacity), capacity);
    let mut loader = Loader::new(store, kernel, VecRanges::new(sizes.ranges), sizes);

    let started = Instant::now();
    for &pid in &pids {
        loader.add_process(pid, 1);
    }
    let first_samples = started.elapsed();
    let started = Instant::now();
    loader.wait_idle();
    let builds = started.elapsed();
    let stats = loader.stats();

    let started = Instant::now();
    for &pid in &pids {
        loader.add_process(pid, 2);
    }
    let new_images = started.elapsed();

    let started = Instant::now();
    for &pid in &pids {
        loader.refresh(pid, Duration::ZERO);
    }
    let checks = started.elapsed();

    const POLLS: u32 = 1000;
    let started = Instant::now();
    for _ in 0..POLLS {
        loader.poll();
    }
    let poll = started.elapsed() / POLLS;

    let per = |total: Duration| total.as_secs_f64() * 1e6 / pids.len() as f64;
    println!(
        "{} processes ({} Python, {} sleep): {} tables, {:.1} MiB in the kernel's arrays",
        pids.len(),
        pids.len().div_ceil(5),
        pids.len() - pids.len().div_ceil(5),
        stats.tables,
        stats.table_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "first sample of a process: {:.0} µs each; the tables' builds: {:.2} s once (each file once)",
        per(first_samples),
        builds.as_secs_f64()
    );
    println!(
        "a new image of a known process: {:.0} µs; the 5 s check of a sampled process: {:.0} µs; \
         a poll with nothing new: {:.1} µs",
        per(new_images),
        per(checks),
        poll.as_secs_f64() * 1e6
    );
    // A busy 64-CPU node at 99 Hz: 6,336 samples a second. Assumed: 2,000 processes sampled,
    // of which a tenth run JIT code (their walks meet code outside their ranges, so their
    // mappings are reread every 5 s; the others' only when a library is opened), 20 new
    // process images a second (job churn), 4 polls a second; tables are built once per
    // distinct file, throttled to a quarter of a core, and do not recur.
    let (stale, churn, polls) = (200.0, 20.0, 4.0);
    let per_second_us =
        stale / 5.0 * per(checks) + churn * per(new_images) + polls * poll.as_secs_f64() * 1e6;
    println!(
        "64 CPUs x 99 Hz, {stale} processes with JIT code, {churn} new images/s: \
         {:.2}% of one core in steady state",
        per_second_us / 1e4
    );
}
