//! Compiles the C definition of `otel_thread_ctx_v1` (stable Rust cannot name an ELF TLS
//! symbol) and exports it from this crate's own examples and tests.
//!
//! A build script can add link arguments only to its own package's targets, so an application
//! that uses the crate adds the same `--export-dynamic-symbol` line to its own build.rs.

use std::env;

const EXPORT: &str = "-Wl,--export-dynamic-symbol=otel_thread_ctx_v1";

fn main() {
    // Without the `tls` feature the crate is only the formats: nothing to compile or export.
    if env::var_os("CARGO_FEATURE_TLS").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=src/otel_thread_ctx.c");
    println!("cargo:rerun-if-changed=include/otel_thread_ctx.h");

    let mut build = cc::Build::new();
    build
        .file("src/otel_thread_ctx.c")
        .include("include")
        .pic(true)
        .warnings(true)
        .extra_warnings(true);
    // TLSDESC, the dialect OTEP 4947 recommends. It is gcc's default on aarch64 (`desc`); on
    // x86_64 it must be asked for. Older clang (< 19) lacks the flag, hence `_if_supported`.
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        build.flag_if_supported("-mtls-dialect=gnu2");
    }
    build.compile("profiler_marker_tls");

    for kind in ["examples", "tests"] {
        println!("cargo:rustc-link-arg-{kind}={EXPORT}");
    }
}
