//! Bounds the disk the output takes (`--max-disk-mb`): after each write, the oldest profiles go
//! first, trace files and rotated trace indexes included, until the total fits. The file just
//! written always stays, and so does the live `traces/index.jsonl` (counted, never deleted:
//! rotation bounds it).

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::traces::{INDEX_FILE, is_rotated_index};
use crate::report::files::TRACES_DIR;

/// What one pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub files: usize,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct Retention {
    dir: PathBuf,
    /// `None`: no limit.
    max_bytes: Option<u64>,
}

/// A profile (or rotated trace index) on disk.
struct Stored {
    path: PathBuf,
    bytes: u64,
    modified: SystemTime,
}

impl Retention {
    /// `max_mb` of zero means no limit.
    pub fn new(dir: impl Into<PathBuf>, max_mb: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: (max_mb > 0).then(|| max_mb.saturating_mul(1 << 20)),
        }
    }

    /// The limit in bytes, if any.
    pub fn max_bytes(&self) -> Option<u64> {
        self.max_bytes
    }

    /// Deletes the oldest profiles until the total is within the limit.
    pub fn enforce(&self) -> io::Result<Pruned> {
        let Some(max) = self.max_bytes else {
            return Ok(Pruned::default());
        };
        let (stored, kept) = self.oldest_first()?;
        let total: u64 = kept + stored.iter().map(|s| s.bytes).sum::<u64>();
        let keep_newest = stored.len().saturating_sub(1);
        delete_until(&stored[..keep_newest], |pruned| total - pruned.bytes <= max)
    }

    /// On a full disk: deletes the oldest profiles, at least `bytes` of them and at least one,
    /// keeping the newest unless it is the only one left to delete.
    pub fn free_oldest(&self, bytes: u64) -> io::Result<Pruned> {
        let (stored, _) = self.oldest_first()?;
        let candidates = if stored.len() > 1 {
            stored.len() - 1
        } else {
            stored.len()
        };
        delete_until(&stored[..candidates], |pruned| {
            pruned.files > 0 && pruned.bytes >= bytes
        })
    }

    /// Finished profiles and rotated trace indexes under the directory, oldest first (the
    /// name breaks ties: names carry the UTC start time), and the bytes of the files that
    /// count but stay (the live trace index).
    fn oldest_first(&self) -> io::Result<(Vec<Stored>, u64)> {
        let mut stored = Vec::new();
        let mut kept = 0;
        let traces = self.dir.join(TRACES_DIR);
        collect(&self.dir, &traces, &mut stored, &mut kept)?;
        stored.sort_by(|a, b| {
            a.modified
                .cmp(&b.modified)
                .then_with(|| a.path.cmp(&b.path))
        });
        Ok((stored, kept))
    }
}

/// Deletes `files` in order until `enough` holds. A file someone else removed meanwhile counts
/// as deleted: it takes no room either way.
fn delete_until(files: &[Stored], enough: impl Fn(&Pruned) -> bool) -> io::Result<Pruned> {
    let mut pruned = Pruned::default();
    for file in files {
        if enough(&pruned) {
            break;
        }
        match fs::remove_file(&file.path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        pruned.files += 1;
        pruned.bytes += file.bytes;
    }
    Ok(pruned)
}

/// Finished profiles (`*.pb.gz`, not the hidden temporaries) under `dir`, recursively, and
/// in `traces` the rotated indexes; the live index's size goes to `kept`.
fn collect(dir: &Path, traces: &Path, out: &mut Vec<Stored>, kept: &mut u64) -> io::Result<()> {
    let in_traces = dir == traces;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let meta = entry.metadata()?;
        let deletable = (name.ends_with(".pb.gz") && !name.starts_with('.'))
            || (in_traces && is_rotated_index(&name));
        if meta.is_dir() {
            collect(&entry.path(), traces, out, kept)?;
        } else if meta.is_file() && in_traces && name == INDEX_FILE {
            *kept += meta.len();
        } else if meta.is_file() && deletable {
            out.push(Stored {
                path: entry.path(),
                bytes: meta.len(),
                modified: meta.modified()?,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{fs::File, time::Duration};

    use super::*;

    /// A file of `kib` KiB modified `age` seconds before a fixed instant.
    fn profile(dir: &Path, name: &str, kib: usize, age: u64) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, vec![0u8; kib * 1024]).unwrap();
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000 - age);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        path
    }

    #[test]
    fn deletes_the_oldest_until_the_total_fits() {
        let dir = tempfile::tempdir().unwrap();
        let traces = dir.path().join("traces");
        fs::create_dir(&traces).unwrap();
        let oldest = profile(dir.path(), "cpu-1.pb.gz", 400, 30);
        let old_trace = profile(&traces, "t1.pb.gz", 400, 20);
        let newer = profile(dir.path(), "cpu-2.pb.gz", 400, 10);
        let newest = profile(dir.path(), "cpu-3.pb.gz", 400, 0);
        fs::write(traces.join("index.jsonl"), "{}\n").unwrap();

        let pruned = Retention::new(dir.path(), 1).enforce().unwrap();
        assert_eq!(
            pruned,
            Pruned {
                files: 2,
                bytes: 800 * 1024
            }
        );
        assert!(!oldest.exists() && !old_trace.exists());
        assert!(newer.exists() && newest.exists());
        assert!(
            traces.join("index.jsonl").exists(),
            "only profiles are pruned"
        );
    }

    #[test]
    fn rotated_trace_indexes_count_and_go_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let traces = dir.path().join("traces");
        fs::create_dir(&traces).unwrap();
        let old_index = profile(&traces, "index-20260101T000000Z.jsonl", 300, 40);
        let old_profile = profile(dir.path(), "cpu-1.pb.gz", 300, 30);
        let newer_index = profile(&traces, "index-20260101T010000Z.jsonl", 300, 20);
        let newest = profile(dir.path(), "cpu-2.pb.gz", 300, 0);
        // Counted, never deleted, however old.
        let live = profile(&traces, "index.jsonl", 300, 50);
        // Not the recorder's: left alone.
        let other = profile(dir.path(), "index-20250101T000000Z.jsonl", 300, 60);
        let notes = profile(&traces, "notes.jsonl", 300, 60);

        // 1500 KiB of the recorder's against 1024: the two oldest deletable go.
        let pruned = Retention::new(dir.path(), 1).enforce().unwrap();
        assert_eq!(
            pruned,
            Pruned {
                files: 2,
                bytes: 600 * 1024
            }
        );
        assert!(!old_index.exists() && !old_profile.exists());
        assert!(newer_index.exists() && newest.exists() && live.exists());
        assert!(other.exists() && notes.exists());
        // A full disk may take rotated indexes, never the live one.
        let freed = Retention::new(dir.path(), 0).free_oldest(1 << 30).unwrap();
        assert_eq!(freed.files, 1, "the newest stays");
        assert!(!newer_index.exists() && newest.exists() && live.exists());
    }

    #[test]
    fn the_newest_file_stays_even_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        profile(dir.path(), "cpu-1.pb.gz", 700, 10);
        let newest = profile(dir.path(), "cpu-2.pb.gz", 1500, 0);
        let pruned = Retention::new(dir.path(), 1).enforce().unwrap();
        assert_eq!(pruned.files, 1);
        assert!(newest.exists());
    }

    #[test]
    fn a_full_disk_frees_the_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = profile(dir.path(), "cpu-1.pb.gz", 100, 30);
        let older = profile(dir.path(), "cpu-2.pb.gz", 100, 20);
        let newest = profile(dir.path(), "cpu-3.pb.gz", 100, 10);
        // No limit configured: a full disk still frees space.
        let retention = Retention::new(dir.path(), 0);
        let pruned = retention.free_oldest(150 * 1024).unwrap();
        assert_eq!(pruned.files, 2);
        assert!(!oldest.exists() && !older.exists() && newest.exists());
        // The newest goes only when it is all there is.
        assert_eq!(retention.free_oldest(1).unwrap().files, 1);
        assert!(!newest.exists());
        assert_eq!(retention.free_oldest(1).unwrap(), Pruned::default());
    }

    #[test]
    fn within_the_limit_or_without_one_nothing_goes() {
        let dir = tempfile::tempdir().unwrap();
        profile(dir.path(), "cpu-1.pb.gz", 300, 10);
        profile(dir.path(), ".cpu-2.pb.gz.tmp", 3000, 0);
        assert_eq!(
            Retention::new(dir.path(), 1).enforce().unwrap(),
            Pruned::default()
        );
        profile(dir.path(), "cpu-3.pb.gz", 3000, 0);
        assert_eq!(
            Retention::new(dir.path(), 0).enforce().unwrap(),
            Pruned::default()
        );
    }
}
