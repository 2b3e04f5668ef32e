//! `otel_thread_ctx_v1` reaches `.dynsym` of binaries linked with
//! `-Wl,--export-dynamic-symbol=otel_thread_ctx_v1`, which build.rs adds to this crate's tests
//! and examples the way an application's build.rs adds it to its binaries; and the exported
//! symbol is the variable the crate writes.

mod support;

use std::{ffi::c_void, path::PathBuf};

use profiler_marker::{TraceContext, attach, record, slot_address};

#[test]
fn this_test_binary_exports_the_symbol() {
    let exe = std::env::current_exe().unwrap();
    support::assert_exports_tls_symbol(&exe);
    support::assert_readelf_shows_export(&exe);
}

#[test]
fn example_binary_exports_the_symbol() {
    // target/<profile>/deps/exported_symbol-<hash> -> target/<profile>/examples/traced_worker
    let exe = std::env::current_exe().unwrap();
    let example: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/traced_worker");
    if !example.exists() {
        // `cargo test` builds examples, unless a filter like `--test exported_symbol` is given.
        support::skip_or_fail(&format!(
            "{} not built; run `cargo test -p profiler-marker` or `cargo build -p profiler-marker --example traced_worker`",
            example.display()
        ));
        return;
    }
    support::assert_exports_tls_symbol(&example);
    support::assert_readelf_shows_export(&example);
}

/// The dynamic linker's address for the symbol on this thread (glibc resolves TLS symbols to
/// the calling thread's instance).
fn dlsym_address() -> *mut *mut c_void {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the executable's exported symbols.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"otel_thread_ctx_v1".as_ptr()) }.cast()
}

#[test]
fn exported_symbol_is_the_variable_the_crate_writes() {
    let address = dlsym_address();
    assert!(!address.is_null(), "dlsym found no otel_thread_ctx_v1");
    assert_eq!(address, slot_address());

    let ctx = TraceContext::from_hex("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
        .unwrap()
        .with_attribute(1, "GET /");
    let expected = record::encode(&ctx).unwrap();
    let guard = attach(&ctx);
    // Read the record the way a reader does: through the symbol.
    // SAFETY: the variable of this thread; the guard keeps the record alive.
    let published = unsafe { *address }.cast::<u8>();
    assert!(!published.is_null());
    assert_eq!(published as usize % 2, 0);
    // SAFETY: as above; the record is `expected.len()` bytes long.
    let bytes = unsafe { std::slice::from_raw_parts(published, expected.len()) };
    assert_eq!(bytes, expected);
    drop(guard);
    // SAFETY: as above.
    assert!(unsafe { *address }.is_null());

    // Another thread has its own instance.
    let other = std::thread::spawn(|| dlsym_address() as usize)
        .join()
        .unwrap();
    assert_ne!(other, address as usize);
}
