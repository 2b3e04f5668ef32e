//! Mapped executables and libraries, opened once per file and kept open while any snapshot
//! refers to them: a deleted binary, or one that exists only in a container's mount namespace,
//! stays readable through our descriptor after the process is gone.

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{Arc, Weak},
};

use crate::elf_file::{ElfFile, build_id};

/// Identity of a file: device and inode, as `/proc/<pid>/maps` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub inode: u64,
}

/// One mapped file, shared by every process that maps it.
#[derive(Debug)]
pub struct MappedFile {
    pub id: FileId,
    /// The path as the process sees it, without a ` (deleted)` suffix.
    pub path: String,
    /// GNU build ID, lowercase hex.
    pub build_id: Option<String>,
    handle: Option<File>,
}

impl MappedFile {
    pub fn new(id: FileId, path: String, handle: Option<File>) -> Self {
        let mut file = Self {
            id,
            path,
            build_id: None,
            handle,
        };
        file.build_id = file.read_build_id().map(|id| hex(&id));
        file
    }

    /// Read with `read`, not through a mapping: a file truncated meanwhile is an error, not
    /// SIGBUS (see [`crate::elf_file`]).
    fn read_build_id(&self) -> Option<Vec<u8>> {
        let handle = File::open(self.symbolization_path()?).ok()?;
        build_id(&ElfFile::new(handle)).ok().flatten()
    }

    /// `buf.len()` bytes at `offset`, through the descriptor held (an error without one).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let handle = self
            .handle
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the file could not be opened"))?;
        std::os::unix::fs::FileExt::read_exact_at(handle, buf, offset)
    }

    /// A path that reaches this very file for as long as it is held: `/proc/self/fd/<n>`.
    pub fn symbolization_path(&self) -> Option<PathBuf> {
        self.handle
            .as_ref()
            .map(|file| PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())))
    }
}

/// Deduplicates [`MappedFile`]s by identity. Holds weak references: a file closes when the last
/// snapshot that maps it is dropped.
#[derive(Debug, Default)]
pub struct FileTable {
    files: HashMap<FileId, Weak<MappedFile>>,
}

impl FileTable {
    /// The shared file for `id`, opening it with `open` when nobody holds it yet.
    pub fn get_or_open(
        &mut self,
        id: FileId,
        path: &str,
        open: impl FnOnce() -> Option<File>,
    ) -> Arc<MappedFile> {
        if let Some(file) = self.files.get(&id).and_then(Weak::upgrade) {
            return file;
        }
        let file = Arc::new(MappedFile::new(id, path.to_owned(), open()));
        self.files.insert(id, Arc::downgrade(&file));
        file
    }

    /// Forgets files nobody holds any more.
    pub fn prune(&mut self) {
        self.files.retain(|_, file| file.strong_count() > 0);
    }

    /// Number of files currently held open by some snapshot.
    pub fn len(&self) -> usize {
        self.files.values().filter(|f| f.strong_count() > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_shared_while_held_and_closed_after() {
        let mut table = FileTable::default();
        let id = FileId { dev: 1, inode: 2 };
        let exe = std::env::current_exe().unwrap();
        let first = table.get_or_open(id, "/bin/x", || File::open(&exe).ok());
        let mut opened_again = false;
        let second = table.get_or_open(id, "/bin/x", || {
            opened_again = true;
            None
        });
        assert!(!opened_again);
        assert!(Arc::ptr_eq(&first, &second));
        assert!(first.symbolization_path().is_some());
        assert_eq!(table.len(), 1);
        drop((first, second));
        table.prune();
        assert!(table.is_empty());
    }

    #[test]
    fn build_id_is_read_from_the_open_file() {
        // Test binaries are linked with a GNU build ID on Debian.
        let exe = std::env::current_exe().unwrap();
        let file = MappedFile::new(
            FileId { dev: 0, inode: 0 },
            "x".into(),
            File::open(exe).ok(),
        );
        let build_id = file.build_id.expect("test binary has a build ID");
        assert!(build_id.len() >= 16 && build_id.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x0a, 0xff, 0x00]), "0aff00");
    }
}
