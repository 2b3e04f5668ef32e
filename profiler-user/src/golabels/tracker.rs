//! Finds, for each new process, whether its executable is a Go program whose goroutine labels
//! the BPF program can read, and with which [`GoTarget`]. Executables are examined once each
//! (cached by file identity); one that is Go but cannot be handled is logged once and its
//! processes are sampled without labels.

use std::{collections::HashMap, fs::File};

use profiler_common::GoTarget;

use super::{buildinfo::go_version, layout::go_target};
use crate::{
    elf_file::ElfFile,
    process::{FileId, MappedFile, MappingObject, ProcessSnapshot},
};

/// Files remembered before the cache starts afresh (hosts that deploy new binaries for months).
const MAX_FILES: usize = 50_000;

/// Per-executable Go detection with a cache.
#[derive(Default)]
pub struct GoTracker {
    files: HashMap<FileId, Option<GoTarget>>,
}

impl GoTracker {
    /// Where the BPF program finds `snapshot`'s goroutine labels; `None` for a process that is
    /// not Go, or a Go program this profiler cannot read.
    pub fn locate(&mut self, snapshot: &ProcessSnapshot) -> Option<GoTarget> {
        let exe = executable(snapshot)?;
        if self.files.len() >= MAX_FILES && !self.files.contains_key(&exe.id) {
            self.files.clear();
        }
        *self
            .files
            .entry(exe.id)
            .or_insert_with(|| examine(exe, snapshot.pid))
    }

    /// Number of executables examined.
    pub fn files_checked(&self) -> usize {
        self.files.len()
    }
}

/// The process's executable among its mapped files: the one `/proc/<pid>/exe` names, else the
/// lowest mapped file (the kernel maps the executable below the libraries).
fn executable(snapshot: &ProcessSnapshot) -> Option<&MappedFile> {
    let files = snapshot
        .mappings
        .iter()
        .filter_map(|mapping| match &mapping.object {
            MappingObject::File(file) => Some(file.as_ref()),
            _ => None,
        });
    let exe = std::fs::read_link(format!("/proc/{}/exe", snapshot.pid)).ok();
    let exe = exe.as_ref().and_then(|path| path.to_str());
    let exe = exe.map(|path| path.strip_suffix(" (deleted)").unwrap_or(path));
    match exe {
        Some(path) => files.clone().find(|file| file.path == path),
        None => None,
    }
    .or_else(|| files.clone().next())
}

/// The file's target, logging once why a Go executable has none.
fn examine(file: &MappedFile, pid: u32) -> Option<GoTarget> {
    let handle = File::open(file.symbolization_path()?).ok()?;
    let elf = ElfFile::new(handle);
    let version = match go_version(&elf) {
        Ok(Some(version)) => version,
        Ok(None) => return None,
        Err(err) => {
            tracing::warn!(pid, file = %file.path, "Go executable sampled without goroutine labels: {err}");
            return None;
        }
    };
    match go_target(&elf, version) {
        Ok(target) => {
            tracing::debug!(pid, file = %file.path, %version, ?target, "reading goroutine labels");
            Some(target)
        }
        Err(err) => {
            tracing::warn!(pid, file = %file.path, "Go executable sampled without goroutine labels: {err}");
            None
        }
    }
}
