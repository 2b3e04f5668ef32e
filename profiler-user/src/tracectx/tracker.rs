//! Finds, for each process, where its threads keep `otel_thread_ctx_v1`, and hands the answer
//! to the BPF program. Files are checked once each (cached by identity); the thread-pointer
//! offset comes from the ELF's TLS segment for the main executable, and from what `ld.so` wrote
//! into the process's memory (TLSDESC descriptors, GOT entries) for shared libraries.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::FileExt,
    sync::Arc,
    time::{Duration, Instant},
};

use profiler_common::{TLS_DTV, TLS_STATIC, TlsLocation};

use super::elf_tls::{TlsAccess, TlsSymbol, find_tls_symbol, load_bias, resolve_access};
use crate::{
    elf_file::ElfFile,
    process::{FileId, MappedFile, MappingObject, ProcessKey, ProcessSnapshot},
};

/// The thread-local variable of the OpenTelemetry thread-context record (OTEP 4947).
pub const SYMBOL: &str = "otel_thread_ctx_v1";

/// How long before a process without a location is looked at again (a library opened later with
/// dlopen, or a TLSDESC descriptor that `ld.so` resolves lazily, appears in the meantime).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Files remembered before the cache starts afresh (hosts that deploy new binaries for months).
const MAX_FILES: usize = 50_000;

/// Per-process TLS resolution with a per-file cache.
#[derive(Default)]
pub struct TlsTracker {
    files: HashMap<FileId, Option<Arc<TlsSymbol>>>,
    unresolved: HashMap<ProcessKey, Instant>,
}

impl TlsTracker {
    /// Where `snapshot`'s threads keep the variable; `None` when the process does not define it
    /// (or not yet: it is then retried by [`Self::due_for_retry`]).
    pub fn locate(&mut self, key: ProcessKey, snapshot: &ProcessSnapshot) -> Option<TlsLocation> {
        let found = snapshot.mappings.iter().find_map(|mapping| {
            let MappingObject::File(file) = &mapping.object else {
                return None;
            };
            let symbol = self.symbol(file)?;
            let bias = with_elf(file, |elf| load_bias(elf, mapping.start, mapping.offset))?
                .ok()??;
            match resolve_access(&symbol, bias, memory_reader(key.pid)) {
                Ok(access) => Some(access),
                Err(err) => {
                    tracing::debug!(pid = key.pid, file = %file.path, "no trace-context location yet: {err}");
                    None
                }
            }
        });
        match found {
            Some(_) => self.unresolved.remove(&key),
            None => self.unresolved.insert(key, Instant::now()),
        };
        found.map(to_bpf)
    }

    /// Whether an unresolved process should be looked at again now.
    pub fn due_for_retry(&self, key: &ProcessKey) -> bool {
        self.unresolved
            .get(key)
            .is_some_and(|since| since.elapsed() >= RETRY_AFTER)
    }

    /// Forgets a process image that ended, and files nobody maps any more.
    pub fn forget(&mut self, key: &ProcessKey) {
        self.unresolved.remove(key);
    }

    /// Keeps only the unresolved processes `keep` accepts (the recorder's sweep of processes
    /// whose end was not reported).
    pub fn retain(&mut self, keep: impl Fn(&ProcessKey) -> bool) {
        self.unresolved.retain(|key, _| keep(key));
    }

    /// Number of files known not to define the symbol, or to define it.
    pub fn files_checked(&self) -> usize {
        self.files.len()
    }

    fn symbol(&mut self, file: &Arc<MappedFile>) -> Option<Arc<TlsSymbol>> {
        if self.files.len() >= MAX_FILES && !self.files.contains_key(&file.id) {
            self.files.clear();
        }
        self.files
            .entry(file.id)
            .or_insert_with(|| {
                with_elf(file, |elf| find_tls_symbol(elf, SYMBOL).ok().flatten())
                    .flatten()
                    .map(Arc::new)
            })
            .clone()
    }
}

/// Runs `read` over the file, read with `read` rather than mapped: a file truncated meanwhile
/// makes the parse fail instead of raising SIGBUS (see [`crate::elf_file`]).
fn with_elf<T>(file: &MappedFile, read: impl FnOnce(&ElfFile) -> T) -> Option<T> {
    let handle = File::open(file.symbolization_path()?).ok()?;
    Some(read(&ElfFile::new(handle)))
}

/// Reads 8-byte words of `pid`'s memory, for the GOT and descriptor words `ld.so` filled.
fn memory_reader(pid: u32) -> impl FnMut(u64) -> Option<u64> {
    let memory = File::open(format!("/proc/{pid}/mem")).ok();
    move |address| {
        let mut bytes = [0u8; 8];
        memory.as_ref()?.read_exact_at(&mut bytes, address).ok()?;
        Some(u64::from_ne_bytes(bytes))
    }
}

fn to_bpf(access: TlsAccess) -> TlsLocation {
    match access {
        TlsAccess::Static { tp_offset } => TlsLocation {
            kind: TLS_STATIC,
            _pad: 0,
            module: 0,
            offset: tp_offset,
        },
        TlsAccess::Dtv { module, offset } => TlsLocation {
            kind: TLS_DTV,
            _pad: 0,
            module,
            offset: offset as i64,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        process::FileTable,
        test_support::{in_child, libc_copy, truncate_in_place},
    };

    #[test]
    fn a_file_truncated_while_parsed_is_an_error_not_a_crash() {
        in_child(
            "tracectx::tracker::tests::a_file_truncated_while_parsed_is_an_error_not_a_crash",
            || {
                let dir = tempfile::tempdir().unwrap();
                let (copy, _) = libc_copy(dir.path(), &[libc::getpid as *const () as u64]);
                let id = FileId { dev: 0, inode: 1 };
                let file = MappedFile::new(id, copy.display().to_string(), File::open(&copy).ok());
                let found = with_elf(&file, |elf| {
                    // Truncated after it was opened, before its section headers (at the end)
                    // are read.
                    truncate_in_place(&copy, 100);
                    find_tls_symbol(elf, SYMBOL)
                })
                .expect("the file opens");
                assert!(found.is_err(), "{found:?}");
            },
        );
    }

    #[test]
    fn a_process_without_the_symbol_has_no_location_and_is_retried_later() {
        let mut files = FileTable::default();
        let snapshot = ProcessSnapshot::capture(std::process::id(), 0, &mut files);
        let key = ProcessKey {
            pid: std::process::id(),
            pid_gen: 1,
        };
        let mut tracker = TlsTracker::default();
        assert_eq!(tracker.locate(key, &snapshot), None);
        assert!(tracker.files_checked() > 0);
        assert!(!tracker.due_for_retry(&key), "not before the retry delay");
        tracker.forget(&key);
        assert!(!tracker.due_for_retry(&key));
    }
}
