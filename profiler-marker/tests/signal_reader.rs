//! A reader that interrupts the publishing thread at arbitrary instructions, as the BPF program
//! does: a signal handler on the worker thread reads the record `otel_thread_ctx_v1` points to
//! while the thread attaches and detaches contexts in a tight loop. Every read must see no
//! context or one of the complete records, never a torn pointer or a half-written record.

use std::{
    ffi::c_int,
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use profiler_marker::{TraceContext, attach, clear, record, slot_address};

static EXPECTED: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
static READS: AtomicU64 = AtomicU64::new(0);
static WITH_CONTEXT: AtomicU64 = AtomicU64::new(0);
static BAD: AtomicU64 = AtomicU64::new(0);

fn contexts() -> Vec<TraceContext> {
    vec![
        TraceContext::new([0x11; 16], [0x11; 8])
            .unwrap()
            .with_attribute(0, "/checkout"),
        TraceContext::new([0x22; 16], [0x22; 8])
            .unwrap()
            .with_attribute(0, "/search")
            .with_attribute(1, "42"),
        TraceContext::new([0x33; 16], [0x33; 8])
            .unwrap()
            .with_attribute(2, "x".repeat(255)),
    ]
}

/// Async-signal-safe: atomics, a TLS address, plain memory reads.
extern "C" fn read_record(_signal: c_int) {
    READS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: this thread's variable; the interrupted code keeps the record it points to alive.
    let published = unsafe { *slot_address() }.cast::<u8>().cast_const();
    if published.is_null() {
        return;
    }
    WITH_CONTEXT.fetch_add(1, Ordering::Relaxed);
    let Some(expected) = EXPECTED.get() else {
        return;
    };
    // SAFETY: as above; a record has at least its header.
    let header = unsafe { std::slice::from_raw_parts(published, record::HEADER_SIZE) };
    let size = record::HEADER_SIZE
        + usize::from(u16::from_ne_bytes([
            header[record::ATTRS_DATA_SIZE_OFFSET],
            header[record::ATTRS_DATA_SIZE_OFFSET + 1],
        ]));
    let matches = size <= record::MAX_SIZE
        && expected.iter().any(|bytes| {
            bytes.len() == size
                // SAFETY: as above, `size` bytes as the header says.
                && unsafe { std::slice::from_raw_parts(published, size) } == bytes.as_slice()
        });
    if !matches {
        BAD.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn interrupted_publisher_never_shows_a_partial_record() {
    EXPECTED.get_or_init(|| {
        contexts()
            .iter()
            .map(|ctx| record::encode(ctx).unwrap())
            .collect()
    });
    // SAFETY: installs a handler that only does async-signal-safe work.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = read_record as extern "C" fn(c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }

    static DONE: AtomicBool = AtomicBool::new(false);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
        let contexts = contexts();
        let mut rounds = 0u64;
        while !DONE.load(Ordering::Relaxed) {
            let outer = attach(&contexts[0]);
            {
                let _inner = attach(&contexts[1]);
                let _innermost = attach(&contexts[2]);
            }
            let middle = attach(&contexts[2]);
            // Out of order: the published one (middle) stays, outer's record is freed.
            drop(outer);
            clear();
            drop(middle);
            rounds += 1;
        }
        rounds
    });
    let thread = tid_rx.recv().unwrap();
    // One signal at a time (pending signals coalesce), until enough reads or the time is up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while READS.load(Ordering::Relaxed) < 2_000 && Instant::now() < deadline {
        let before = READS.load(Ordering::Relaxed);
        // SAFETY: the worker runs until DONE is set, after this loop.
        assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGUSR1) }, 0);
        let sent = Instant::now();
        while READS.load(Ordering::Relaxed) == before && sent.elapsed() < Duration::from_millis(100)
        {
            std::hint::spin_loop();
        }
    }
    DONE.store(true, Ordering::Relaxed);
    let rounds = worker.join().unwrap();

    let reads = READS.load(Ordering::Relaxed);
    let with_context = WITH_CONTEXT.load(Ordering::Relaxed);
    eprintln!("{rounds} rounds, {reads} reads, {with_context} with a context");
    assert!(reads >= 1_000, "too few reads: {reads}");
    assert!(with_context > 0, "the reader never saw a context");
    assert_eq!(
        BAD.load(Ordering::Relaxed),
        0,
        "reads of partial or unknown records"
    );
}
