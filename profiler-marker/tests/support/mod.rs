//! ELF checks shared by the integration tests, and how they skip a check that cannot run here.

// Each test crate includes this module and uses a part of it.
#![allow(dead_code)]

use std::{
    io::{self, Write},
    path::Path,
    process::Command,
};

use object::{
    Endianness, Object, ObjectSymbol, elf,
    read::elf::{ElfFile64, ProgramHeader, Sym},
};

pub const SYMBOL: &str = "otel_thread_ctx_v1";

/// For a check that cannot run here (a tool or file is missing: `why` says which and what to do).
/// In CI (`CI=true`) it panics: a skipped test there would hide a failure. Elsewhere it prints a
/// `skipped:` line straight to the terminal (past the test harness's capture, which would hide
/// it) and returns; the caller goes on without the check.
pub fn skip_or_fail(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why} (CI=true: a skipped test in CI is a failure)");
    }
    let _ = writeln!(io::stderr(), "skipped: {test}: {why}");
}

/// Panics unless `path` exports `otel_thread_ctx_v1` in `.dynsym` as a defined, global,
/// default-visibility, pointer-sized TLS symbol, and has a PT_TLS segment for it.
pub fn assert_exports_tls_symbol(path: &Path) {
    let data = std::fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    let file = ElfFile64::<Endianness>::parse(&*data)
        .unwrap_or_else(|err| panic!("parse {}: {err}", path.display()));
    let endian = file.endian();
    let symbol = file
        .dynamic_symbols()
        .find(|symbol| symbol.name() == Ok(SYMBOL))
        .unwrap_or_else(|| panic!("{} does not export {SYMBOL} in .dynsym", path.display()));
    let raw = symbol.elf_symbol();
    assert!(
        !symbol.is_undefined(),
        "{SYMBOL} is undefined in {}",
        path.display()
    );
    assert_eq!(raw.st_type(), elf::STT_TLS, "{SYMBOL} is not a TLS symbol");
    assert_eq!(raw.st_bind(), elf::STB_GLOBAL, "{SYMBOL} is not global");
    assert_eq!(
        raw.st_visibility(),
        elf::STV_DEFAULT,
        "{SYMBOL} is not default visibility"
    );
    assert_eq!(raw.st_size(endian), 8, "{SYMBOL} is not pointer-sized");
    let has_tls_segment = file
        .elf_program_headers()
        .iter()
        .any(|header| header.p_type(endian) == elf::PT_TLS);
    assert!(has_tls_segment, "{} has no PT_TLS segment", path.display());
}

/// The `readelf --dyn-syms -W` line of the symbol, or `None` if readelf is not installed.
pub fn readelf_line(path: &Path) -> Option<String> {
    let output = Command::new("readelf")
        .args(["--dyn-syms", "-W"])
        .arg(path)
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "readelf failed on {}",
        path.display()
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = stdout
        .lines()
        .find(|line| line.split_whitespace().last() == Some(SYMBOL))
        .unwrap_or_else(|| panic!("readelf: no {SYMBOL} in\n{stdout}"));
    Some(line.to_owned())
}

/// Panics unless readelf (when installed) shows `TLS GLOBAL DEFAULT` for the symbol.
pub fn assert_readelf_shows_export(path: &Path) {
    match readelf_line(path) {
        Some(line) => {
            let words: Vec<_> = line.split_whitespace().collect();
            assert!(
                words.windows(3).any(|w| w == ["TLS", "GLOBAL", "DEFAULT"]),
                "unexpected readelf line: {line}"
            );
        }
        None => skip_or_fail(
            "readelf is not installed (Debian package binutils): checked with the object crate only",
        ),
    }
}
