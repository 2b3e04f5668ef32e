//! Requests the collector did not take, kept on disk until it does: `<output>/otlp-spool/`, one
//! file per request holding its body as sent (`.pb.gz` gzip, `.pb` uncompressed), named
//! `otlp-<UTC %Y%m%dT%H%M%SZ>-<sequence>.pb[.gz]` so that names sort oldest first.
//!
//! The recorder runs as root in a directory others may reach, so files are created exclusively
//! ([`safe_file::create_new`]: never through a planted link, never over an existing name), read
//! back through `O_NOFOLLOW` and only when regular and at most [`MAX_FILE_BYTES`], and only the
//! spool's own names are ever deleted. The spool keeps under its budget by deleting its oldest
//! files; retention (`profile/retention.rs`) counts its bytes against `--max-disk-mb` and leaves
//! them to it.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use chrono::{DateTime, Utc};

use crate::{profile::is_disk_full, safe_file};

/// The spool's directory, under the output directory.
pub const SPOOL_DIR: &str = "otlp-spool";

/// The largest file read back; a bigger one is no request of ours and stays where it is.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// The spool's budget without `--max-disk-mb`.
pub const UNLIMITED_BUDGET: u64 = 256 << 20;

/// The spool's share of `--max-disk-mb`: the rest stays for the profiles, the source of truth.
pub fn budget(max_disk_bytes: Option<u64>) -> u64 {
    max_disk_bytes.map_or(UNLIMITED_BUDGET, |max| max / 4)
}

/// Whether `name` is a spool file: `otlp-<stamp>-<digits>.pb` or `.pb.gz`.
pub fn is_spool_file(name: &str) -> bool {
    let Some(stem) = name.strip_prefix("otlp-").and_then(|rest| {
        rest.strip_suffix(".pb.gz")
            .or_else(|| rest.strip_suffix(".pb"))
    }) else {
        return false;
    };
    let Some((stamp, seq)) = stem.split_once('-') else {
        return false;
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let stamp = stamp.as_bytes();
    stamp.len() == 16
        && digits(&stamp[..8])
        && stamp[8] == b'T'
        && digits(&stamp[9..15])
        && stamp[15] == b'Z'
        && digits(seq.as_bytes())
}

/// One spooled request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
    /// Whether the body is gzip-compressed (`.pb.gz`).
    pub gzip: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot use the OTLP spool {}", dir.display())]
    Open {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a request of {bytes} bytes is larger than the OTLP spool's budget of {budget} bytes")]
    TooLarge { bytes: u64, budget: u64 },
    #[error("the disk is full: a request could not be spooled")]
    DiskFull(#[source] io::Error),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What [`Spool::put`] did besides writing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Put {
    /// Older requests deleted unsent to make room.
    pub evicted: usize,
}

pub struct Spool {
    dir: PathBuf,
    budget: u64,
    /// Oldest first.
    entries: Vec<Entry>,
    /// The next file's sequence number: above every name found at start, so that a file of
    /// this run sorts after an earlier run's of the same second.
    next: u64,
}

impl Spool {
    /// Opens (creating it if missing) the spool under `output_dir`, with the files an earlier
    /// run left (to replay) and without its temporary files (removed).
    pub fn open(output_dir: &Path, budget: u64) -> Result<Self, SpoolError> {
        let dir = output_dir.join(SPOOL_DIR);
        let open_err = |source| SpoolError::Open {
            dir: dir.clone(),
            source,
        };
        safe_file::create_dir(&dir).map_err(open_err)?;
        let mut entries = Vec::new();
        let mut next = 0;
        for entry in fs::read_dir(&dir).map_err(open_err)? {
            let entry = entry.map_err(open_err)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // lstat: a link is neither read nor deleted.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.file_type().is_file() {
                continue;
            }
            if safe_file::is_temporary_of(&name, is_spool_file) {
                // A killed recorder's half-written file.
                let _ = fs::remove_file(entry.path());
            } else if is_spool_file(&name) {
                if let Some(seq) = sequence(&name) {
                    next = next.max(seq.saturating_add(1));
                }
                entries.push(Entry {
                    path: entry.path(),
                    bytes: meta.len(),
                    gzip: name.ends_with(".gz"),
                });
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self {
            dir,
            budget,
            entries,
            next,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the spooled requests.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// The oldest spooled request.
    pub fn oldest(&self) -> Option<&Entry> {
        self.entries.first()
    }

    /// Spools `body`, deleting the oldest requests if it would not fit in the budget otherwise.
    pub fn put(&mut self, body: &[u8], gzip: bool, now: SystemTime) -> Result<Put, SpoolError> {
        let bytes = body.len() as u64;
        if bytes > self.budget.min(MAX_FILE_BYTES) {
            return Err(SpoolError::TooLarge {
                bytes,
                budget: self.budget.min(MAX_FILE_BYTES),
            });
        }
        let mut put = Put::default();
        while self.bytes() + bytes > self.budget {
            let Some(oldest) = self.entries.first().cloned() else {
                break;
            };
            self.remove(&oldest);
            put.evicted += 1;
        }
        let stamp = DateTime::<Utc>::from(now).format("%Y%m%dT%H%M%SZ");
        let suffix = if gzip { ".pb.gz" } else { ".pb" };
        let path = self
            .dir
            .join(format!("otlp-{stamp}-{:08}{suffix}", self.next));
        self.next += 1;
        let write = || safe_file::create_new(&path, |mut file: &File| file.write_all(body));
        let written = match write() {
            // The output directory was deleted (a cleanup job): made again, as the writer does.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                safe_file::create_dir(&self.dir).and_then(|()| write())
            }
            other => other,
        };
        match written {
            Ok(()) => {}
            Err(source) if is_disk_full(&source) => return Err(SpoolError::DiskFull(source)),
            Err(source) => return Err(SpoolError::Write { path, source }),
        }
        self.entries.push(Entry { path, bytes, gzip });
        Ok(put)
    }

    /// The body of `entry`, read back within [`MAX_FILE_BYTES`]. An error means it cannot be
    /// replayed: the caller drops it ([`Self::remove`]).
    pub fn read(&self, entry: &Entry) -> io::Result<Vec<u8>> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&entry.path)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file of at most 64 MiB",
            ));
        }
        let mut body = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut body)?;
        if body.len() as u64 > MAX_FILE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "grew past 64 MiB",
            ));
        }
        Ok(body)
    }

    /// Forgets `entry` and deletes its file if it still is a regular file (never a link).
    pub fn remove(&mut self, entry: &Entry) {
        self.entries.retain(|e| e.path != entry.path);
        if fs::symlink_metadata(&entry.path).is_ok_and(|meta| meta.file_type().is_file())
            && let Err(err) = fs::remove_file(&entry.path)
        {
            tracing::warn!("cannot delete {}: {err}", entry.path.display());
        }
    }
}

/// The sequence number in a spool file's name.
fn sequence(name: &str) -> Option<u64> {
    let stem = name.strip_prefix("otlp-")?.split('.').next()?;
    stem.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn names_are_recognised_exactly() {
        assert!(is_spool_file("otlp-20270115T080000Z-00000001.pb.gz"));
        assert!(is_spool_file("otlp-20270115T080000Z-7.pb"));
        for other in [
            "otlp-20270115T080000Z.pb.gz",
            "otlp-2027011T080000Z-1.pb.gz",
            "otlp-20270115T080000Z-x.pb.gz",
            "cpu-20270115T080000Z.pb.gz",
            "otlp-20270115T080000Z-1.pb.gz.bak",
            ".otlp-20270115T080000Z-1.pb.gz.a1b2c3.tmp",
        ] {
            assert!(!is_spool_file(other), "{other}");
        }
    }

    #[test]
    fn put_read_remove_oldest_first_and_across_runs() {
        let out = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(out.path(), 1 << 20).unwrap();
        spool.put(b"first", true, at(10)).unwrap();
        spool.put(b"second", false, at(10)).unwrap();
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.bytes(), 11);
        // A later run finds them, oldest first, and names its own after them.
        let mut spool = Spool::open(out.path(), 1 << 20).unwrap();
        assert_eq!(spool.len(), 2);
        spool.put(b"third", true, at(10)).unwrap();
        let mut bodies = Vec::new();
        while let Some(entry) = spool.oldest().cloned() {
            bodies.push((spool.read(&entry).unwrap(), entry.gzip));
            spool.remove(&entry);
        }
        assert_eq!(
            bodies,
            [
                (b"first".to_vec(), true),
                (b"second".to_vec(), false),
                (b"third".to_vec(), true)
            ]
        );
        assert!(names(&out.path().join(SPOOL_DIR)).is_empty());
    }

    #[test]
    fn the_budget_evicts_the_oldest_and_refuses_what_cannot_fit() {
        let out = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(out.path(), 120).unwrap();
        for i in 0..4 {
            assert_eq!(
                spool.put(&[i; 30], true, at(u64::from(i))).unwrap().evicted,
                0
            );
        }
        let put = spool.put(&[9; 50], true, at(5)).unwrap();
        assert_eq!(put.evicted, 2);
        assert_eq!(spool.bytes(), 30 + 30 + 50);
        assert!(spool.bytes() <= 120);
        assert_eq!(spool.read(spool.oldest().unwrap()).unwrap(), [2; 30]);
        assert!(matches!(
            spool.put(&[0; 121], true, at(6)),
            Err(SpoolError::TooLarge { .. })
        ));
        assert_eq!(spool.len(), 3, "a refused request evicts nothing");
    }

    #[test]
    fn links_and_foreign_files_are_neither_read_nor_deleted() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("secret");
        fs::write(&victim, b"secret").unwrap();
        let dir = out.path().join(SPOOL_DIR);
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("otlp-20270101T000000Z-1.pb.gz")).unwrap();
        fs::write(dir.join("notes.txt"), b"mine").unwrap();
        fs::write(
            dir.join(".otlp-20270101T000000Z-2.pb.gz.Ab12Cd.tmp"),
            b"half",
        )
        .unwrap();
        let mut spool = Spool::open(out.path(), 1 << 20).unwrap();
        assert!(spool.is_empty(), "a link is no request");
        assert_eq!(
            names(&dir),
            ["notes.txt", "otlp-20270101T000000Z-1.pb.gz"],
            "the temporary file went, the rest stayed"
        );
        // A link planted where the next file goes is not written through.
        let planted = Entry {
            path: dir.join("otlp-20270101T000000Z-1.pb.gz"),
            bytes: 6,
            gzip: true,
        };
        assert!(spool.read(&planted).is_err());
        spool.remove(&planted);
        assert!(
            fs::symlink_metadata(&planted.path).is_ok(),
            "a link is not deleted"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"secret");
    }

    #[test]
    fn a_taken_name_is_not_overwritten() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        fs::write(&victim, b"victim").unwrap();
        let mut spool = Spool::open(out.path(), 1 << 20).unwrap();
        // Planted after start, under the name the next put takes.
        let next = spool.dir().join(format!(
            "otlp-{}-00000000.pb.gz",
            DateTime::<Utc>::from(at(0)).format("%Y%m%dT%H%M%SZ")
        ));
        std::os::unix::fs::symlink(&victim, &next).unwrap();
        assert!(matches!(
            spool.put(b"body", true, at(0)),
            Err(SpoolError::Write { .. })
        ));
        assert_eq!(fs::read(&victim).unwrap(), b"victim");
        assert!(spool.is_empty());
        // The next name is free.
        spool.put(b"body", true, at(0)).unwrap();
        assert_eq!(spool.len(), 1);
    }

    #[test]
    fn a_deleted_directory_is_made_again() {
        let out = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(out.path(), 1 << 20).unwrap();
        fs::remove_dir(spool.dir()).unwrap();
        spool.put(b"body", true, at(0)).unwrap();
        assert_eq!(spool.read(spool.oldest().unwrap()).unwrap(), b"body");
    }

    #[test]
    fn a_big_file_is_not_read_back() {
        let out = tempfile::tempdir().unwrap();
        let spool = Spool::open(out.path(), 1 << 20).unwrap();
        let path = spool.dir().join("otlp-20270101T000000Z-1.pb.gz");
        let file = File::create(&path).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let entry = Entry {
            path,
            bytes: MAX_FILE_BYTES + 1,
            gzip: true,
        };
        assert!(spool.read(&entry).is_err());
    }
}
