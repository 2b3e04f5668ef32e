//! The one way the profiler creates files. It runs as root in directories that others may be
//! able to write to, under names they can predict (a time stamp, a trace ID), so it never opens
//! a name that someone else could have planted:
//!
//! - whole files ([`replace`]) are written to a new temporary file, created exclusively
//!   (`O_EXCL`: a planted link makes the creation fail, never followed) under an unpredictable
//!   name, `.<name>.<6 random characters>.tmp`, then renamed over `<name>` in the same
//!   directory: the rename replaces a link planted under the final name, it does not follow it;
//! - appended files ([`open_append`]) are opened with `O_NOFOLLOW`, and only if what is there
//!   is a regular file of ours with no other name;
//! - directories ([`create_dir`], [`check_dir`]) are used only if others cannot write to them
//!   (or they are sticky and ours), and a link to one only if we or root made it.

use std::{
    fs::{self, DirBuilder, File, OpenOptions, Permissions},
    io,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Mode of the files the profiler creates (before the umask): never writable by others.
const FILE_MODE: u32 = 0o644;
/// Mode of the directories it creates (before the umask).
const DIR_MODE: u32 = 0o755;
/// Suffix of the temporary files: retention and readers know them by it.
pub const TEMPORARY_SUFFIX: &str = ".tmp";

/// Why a directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeDir {
    #[error(
        "others can write to it (owner uid {owner}, mode {mode:04o}) and could plant links where the profiler writes: {}",
        if owner == us { "run `chmod go-w` on it, or make it sticky (`chmod +t`)".to_owned() } else { format!("run `chown {us}` and `chmod go-w` on it") }
    )]
    WritableByOthers { owner: u32, mode: u32, us: u32 },
    #[error(
        "it is a symbolic link made by uid {owner}, not by uid {us} or root: use the directory it points to, or remove the link"
    )]
    ForeignLink { owner: u32, us: u32 },
    #[error("it is not a directory: remove it or choose another directory")]
    NotADirectory,
}

impl From<UnsafeDir> for io::Error {
    fn from(err: UnsafeDir) -> Self {
        io::Error::new(io::ErrorKind::PermissionDenied, err)
    }
}

/// The effective user ID: the owner of what the profiler creates.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `dir` (and its parents) if missing, then [`check_dir`]s it.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let created = DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir);
    // A file in the way reads as "File exists": say what is wrong instead.
    check_dir(dir)?;
    created
}

/// Whether the profiler may create files in `dir`: a directory others cannot write to (or a
/// sticky one of ours, like `/tmp`), or a link to one that we or root made.
pub fn check_dir(dir: &Path) -> io::Result<()> {
    let us = euid();
    let link = fs::symlink_metadata(dir)?;
    if link.file_type().is_symlink() && link.uid() != us && link.uid() != 0 {
        return Err(UnsafeDir::ForeignLink {
            owner: link.uid(),
            us,
        }
        .into());
    }
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(UnsafeDir::NotADirectory.into());
    }
    let mode = meta.mode() & 0o7777;
    let ours = meta.uid() == us;
    let others_write = mode & 0o022 != 0 || (!ours && mode & 0o200 != 0);
    let sticky = mode & 0o1000 != 0;
    if others_write && !(sticky && ours) {
        return Err(UnsafeDir::WritableByOthers {
            owner: meta.uid(),
            mode,
            us,
        }
        .into());
    }
    Ok(())
}

/// Writes `path` whole: `write` fills a new temporary file beside it, which is then renamed
/// over `path` (whatever `path` was, a link included, is replaced, never followed). The
/// temporary file is removed if anything fails.
pub fn replace<T>(path: &Path, write: impl FnOnce(&File) -> io::Result<T>) -> io::Result<T> {
    let (dir, name) = split(path)?;
    let temp = temporary(dir, &name.to_string_lossy())?;
    let value = write(temp.as_file())?;
    temp.persist(path).map_err(|err| err.error)?;
    Ok(value)
}

/// Creates `path` whole, only if nothing is there: as [`replace`], but the final rename fails
/// (`AlreadyExists`) rather than replace what is under the name, a link included.
pub fn create_new<T>(path: &Path, write: impl FnOnce(&File) -> io::Result<T>) -> io::Result<T> {
    let (dir, name) = split(path)?;
    let temp = temporary(dir, &name.to_string_lossy())?;
    let value = write(temp.as_file())?;
    temp.persist_noclobber(path).map_err(|err| err.error)?;
    Ok(value)
}

/// The name [`check_writable`]'s temporary files are made of.
pub const WRITE_TEST: &str = "profiler-write-test";

/// Proves that files can be created in `dir` by creating one (a temporary file, removed).
pub fn check_writable(dir: &Path) -> io::Result<()> {
    temporary(dir, WRITE_TEST)?.close()
}

/// A new file `.<name>.<random>.tmp` in `dir`, created exclusively (`O_EXCL`), removed on drop.
fn temporary(dir: &Path, name: &str) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(TEMPORARY_SUFFIX)
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
}

/// Opens `path` for appending, creating it if missing. Refuses a link (`O_NOFOLLOW`), and
/// anything but a regular file of ours with one name: a FIFO (opened without blocking), a
/// device, a hard link to another file, someone else's file.
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != euid() || meta.nlink() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not a regular file of the profiler's own with a single name: remove it",
        ));
    }
    Ok(file)
}

/// The directory and file name of `path`.
fn split(path: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            Ok((dir, name))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        )),
    }
}

/// Whether `name` is a temporary file of [`replace`] for a file named as `is_final` accepts:
/// `.<final>.<random>.tmp`, or `.<final>.tmp` as earlier versions named them.
pub fn is_temporary_of(name: &str, is_final: impl Fn(&str) -> bool) -> bool {
    let Some(inner) = name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_suffix(TEMPORARY_SUFFIX))
    else {
        return false;
    };
    if is_final(inner) {
        return true;
    }
    inner.rsplit_once('.').is_some_and(|(stem, random)| {
        !random.is_empty() && random.bytes().all(|b| b.is_ascii_alphanumeric()) && is_final(stem)
    })
}

#[cfg(test)]
mod tests {
    use std::{io::Write, os::unix::fs::symlink};

    use super::*;
    use crate::test_support::Victim;

    #[test]
    fn replace_creates_a_new_file_beside_and_renames_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = Victim::new(dir.path());
        let path = dir.path().join("a.pb.gz");
        victim.plant(&path);
        let len = replace(&path, |mut file| {
            file.write_all(b"data")?;
            Ok(4)
        })
        .unwrap();
        assert_eq!(len, 4);
        victim.assert_untouched();
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(fs::read(&path).unwrap(), b"data");
        // A failed write leaves nothing behind.
        let failed = replace(&dir.path().join("b"), |_| -> io::Result<()> {
            Err(io::Error::other("full"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn append_refuses_links_fifos_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = Victim::new(dir.path());
        let link = dir.path().join("link");
        victim.plant(&link);
        assert!(open_append(&link).is_err());
        let hard = dir.path().join("hard");
        fs::hard_link(victim.path(), &hard).unwrap();
        assert!(open_append(&hard).is_err());
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        assert!(open_append(&fifo).is_err(), "refused, and without blocking");
        victim.assert_untouched();
        let mut own = open_append(&dir.path().join("index")).unwrap();
        own.write_all(b"line\n").unwrap();
        open_append(&dir.path().join("index"))
            .unwrap()
            .write_all(b"more\n")
            .unwrap();
        assert_eq!(fs::read(dir.path().join("index")).unwrap(), b"line\nmore\n");
    }

    #[test]
    fn a_link_to_a_directory_counts_only_if_we_made_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        check_dir(&link).unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = create_dir(&file).unwrap_err().to_string();
        assert!(err.starts_with("it is not a directory"), "{err}");
    }

    /// A link planted by another user (here: given to nobody) is not followed.
    #[test]
    #[ignore = "needs root: gives a link to another user"]
    fn a_link_someone_else_made_is_refused() {
        assert_eq!(euid(), 0, "run as root");
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("traces");
        symlink("/etc", &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let err = create_dir(&link).unwrap_err().to_string();
        assert!(
            err.starts_with("it is a symbolic link made by uid 65534"),
            "{err}"
        );
    }

    #[test]
    fn temporary_names() {
        let is_cpu = |name: &str| name == "cpu-1.pb.gz";
        assert!(is_temporary_of(".cpu-1.pb.gz.a1B2c3.tmp", is_cpu));
        assert!(is_temporary_of(".cpu-1.pb.gz.tmp", is_cpu));
        assert!(!is_temporary_of("cpu-1.pb.gz.a1B2c3.tmp", is_cpu));
        assert!(!is_temporary_of(".cpu-2.pb.gz.a1B2c3.tmp", is_cpu));
        assert!(!is_temporary_of(".cpu-1.pb.gz.a-b.tmp", is_cpu));
        assert!(!is_temporary_of(".notes.tmp", is_cpu));
    }
}
