//! include/otel_thread_ctx.h compiles (as C and as C++), its helpers publish the record the Rust
//! encoder produces, and a C program built with the documented flags exports the symbol.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use profiler_marker::{TraceContext, record};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `compiler` runs; if not, the test skips (a failure in CI: `support::skip_or_fail`).
fn available(compiler: &str) -> bool {
    let found = Command::new(compiler).arg("--version").output().is_ok();
    if !found {
        support::skip_or_fail(&format!(
            "{compiler} is not installed: run `cargo xtask setup`"
        ));
    }
    found
}

/// The documented flags: TLSDESC on x86_64 (aarch64's default already), warnings as errors.
fn flags() -> Vec<&'static str> {
    let mut flags = vec!["-O2", "-Wall", "-Wextra", "-Werror", "-fPIC"];
    if cfg!(target_arch = "x86_64") {
        flags.push("-mtls-dialect=gnu2");
    }
    flags
}

fn compile(compiler: &str, args: &[&str], source: &Path, output: &Path) {
    let include = crate_dir().join("include");
    let status = Command::new(compiler)
        .args(flags())
        .args(args)
        .arg("-I")
        .arg(&include)
        .arg(source)
        .arg("-o")
        .arg(output)
        .status()
        .unwrap_or_else(|err| panic!("run {compiler}: {err}"));
    assert!(
        status.success(),
        "{compiler} failed on {}",
        source.display()
    );
}

#[test]
fn c_program_publishes_the_record_and_exports_the_symbol() {
    if !available("gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("header_check");
    let source = crate_dir().join("tests/c/header_check.c");
    compile(
        "gcc",
        &[
            "-std=c11",
            "-pthread",
            "-Wl,--export-dynamic-symbol=otel_thread_ctx_v1",
        ],
        &source,
        &program,
    );

    let output = Command::new(&program).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "header_check failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.lines().any(|line| line == "ok"), "{stdout}");

    // The C helpers and the Rust encoder agree byte for byte.
    let hex = stdout
        .lines()
        .find_map(|line| line.strip_prefix("record "))
        .unwrap();
    let ctx = TraceContext::new(
        std::array::from_fn(|i| i as u8 + 1),
        std::array::from_fn(|i| 0xa1 + i as u8),
    )
    .unwrap()
    .with_attribute(0, "/checkout")
    .with_attribute(3, "42");
    let expected: String = record::encode(&ctx)
        .unwrap()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(hex, expected);

    support::assert_exports_tls_symbol(&program);
    support::assert_readelf_shows_export(&program);
}

#[test]
fn shared_library_exports_the_symbol_by_default() {
    if !available("gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("libheader_check.so");
    let source = crate_dir().join("tests/c/header_check.c");
    compile("gcc", &["-std=c11", "-shared"], &source, &library);
    support::assert_exports_tls_symbol(&library);
}

#[test]
fn header_compiles_as_cpp() {
    if !available("g++") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("check.cpp");
    std::fs::write(
        &source,
        "#include \"otel_thread_ctx.h\"\n\
         OTEL_THREAD_CTX_DEFINE;\n\
         int main() {\n\
           alignas(8) static unsigned char storage[OTEL_THREAD_CTX_MAX_SIZE];\n\
           auto *record = reinterpret_cast<otel_thread_ctx_record *>(storage);\n\
           const uint8_t id[16] = {1};\n\
           otel_thread_ctx_record_init(record, id, id, 1);\n\
           if (otel_thread_ctx_record_add_attr(record, sizeof storage, 0, \"a\", 1) != 0) return 1;\n\
           void *previous = otel_thread_ctx_set(record);\n\
           otel_thread_ctx_set(previous);\n\
           return otel_thread_ctx_get() == nullptr ? 0 : 1;\n\
         }\n",
    )
    .unwrap();
    let program = dir.path().join("check");
    compile("g++", &["-std=c++17"], &source, &program);
    let status = Command::new(&program).status().unwrap();
    assert!(status.success());
}
