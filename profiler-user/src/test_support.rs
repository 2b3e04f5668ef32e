//! Helpers for unit tests that read files changed under them.

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Command,
};

use crate::process::{FileTable, MappingObject, ProcessSnapshot};

/// Set in the child: the test it runs.
const CHILD: &str = "PROFILER_TEST_CHILD";

/// Runs `body` in a child process: this test binary again, running only `test` (its path as
/// `cargo test` lists it). A test that could die of a signal (SIGBUS) then fails as one test
/// with the signal named, instead of killing the whole test binary.
pub(crate) fn in_child(test: &str, body: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some_and(|running| running == test) {
        body();
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let ended = match output.status.signal() {
        Some(signal) => format!("killed by signal {signal} ({})", signal_name(signal)),
        None => output.status.to_string(),
    };
    assert!(
        output.status.success(),
        "child running {test} {ended}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test named {test}:\n{stdout}"
    );
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGBUS => "SIGBUS",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        _ => "other",
    }
}

/// A copy of the C library this test binary runs with, in `dir`, and the file offsets in it of
/// the code at each of `addresses` (addresses in the running library).
pub(crate) fn libc_copy(dir: &Path, addresses: &[u64]) -> (PathBuf, Vec<u64>) {
    let mut files = FileTable::default();
    let snapshot = ProcessSnapshot::capture(std::process::id(), 0, &mut files);
    let mut original = None;
    let offsets = addresses
        .iter()
        .map(|&address| {
            let mapping = snapshot.find(address).expect("libc code is mapped");
            let MappingObject::File(file) = &mapping.object else {
                panic!("libc is file-backed")
            };
            original = Some(file.path.clone());
            mapping.file_offset(address)
        })
        .collect();
    let original = original.expect("at least one address");
    let copy = dir.join("libc-copy.so");
    std::fs::copy(&original, &copy).unwrap();
    (copy, offsets)
}

/// Truncates `path` in place (same inode) to `len` bytes, as `cp new.so old.so` does first.
pub(crate) fn truncate_in_place(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A file that must come through untouched, and links to it planted where the profiler writes.
pub(crate) struct Victim(PathBuf);

impl Victim {
    /// `<dir>/victim`, holding `precious`.
    pub(crate) fn new(dir: &Path) -> Self {
        let path = dir.join("victim");
        std::fs::write(&path, b"precious").unwrap();
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// A symbolic link to the victim at `link`.
    pub(crate) fn plant(&self, link: &Path) {
        std::os::unix::fs::symlink(&self.0, link).unwrap();
    }

    pub(crate) fn assert_untouched(&self) {
        assert!(
            std::fs::read(&self.0).unwrap() == b"precious",
            "the victim was written through a planted link"
        );
    }
}
