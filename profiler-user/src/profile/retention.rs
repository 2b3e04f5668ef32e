//! Bounds the disk the output takes (`--max-disk-mb`): after each write, the oldest profiles go
//! first, trace files and rotated trace indexes included, until the total fits. The file just
//! written always stays, and so does the live `traces/index.jsonl` (counted, never deleted:
//! rotation bounds it).
//!
//! Only the profiler's own files count and go, known by their exact names ([`Owned::of`]):
//! `cpu-`, `incident-` and `offcpu-<UTC>[-N].pb.gz` in the directory, `<trace ID>.pb.gz` and the
//! indexes in its `traces/`, and the temporary files of all these (counted; removed at start by
//! [`Retention::remove_temporaries`]: a killed recorder leaves them). Nothing else is read: no
//! other directory, and no link (neither followed nor deleted).
//!
//! The OTLP spool's files (`otlp-spool/`, see `otlp/spool.rs`) count too but are never deleted
//! here: the spool keeps within its share of the budget itself, and counts what it deletes.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::traces::{INDEX_FILE, is_rotated_index};
use crate::{
    otlp::spool,
    report::files::{TRACES_DIR, trace_id_of_file},
    safe_file,
};

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

    /// Deletes the temporary files a killed recorder left (call at start, before writing).
    pub fn remove_temporaries(&self) -> io::Result<Pruned> {
        let mut pruned = Pruned::default();
        for (path, owned, meta) in owned_files(&self.dir)? {
            if owned == Owned::Temporary {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
                pruned.files += 1;
                pruned.bytes += meta.len();
            }
        }
        Ok(pruned)
    }

    /// Finished profiles and rotated trace indexes, oldest first (the name breaks ties: names
    /// carry the UTC start time), and the bytes of the files that count but stay (the live
    /// trace index, temporary files).
    fn oldest_first(&self) -> io::Result<(Vec<Stored>, u64)> {
        let mut stored = Vec::new();
        let mut kept = 0;
        for (path, owned, meta) in owned_files(&self.dir)? {
            match owned {
                Owned::Deletable => stored.push(Stored {
                    path,
                    bytes: meta.len(),
                    modified: meta.modified()?,
                }),
                Owned::Live | Owned::Temporary => kept += meta.len(),
            }
        }
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

/// What retention does with one of the profiler's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owned {
    /// A finished profile or a rotated index: deleted oldest first.
    Deletable,
    /// The live trace index, the OTLP spool's files: counted, never deleted.
    Live,
    /// A temporary file: counted; removed at start.
    Temporary,
}

/// Prefixes of the files the recorder writes in the output directory, `<prefix>-<UTC>.pb.gz`.
const PREFIXES: [&str; 3] = ["cpu", "incident", "offcpu"];

impl Owned {
    /// Whether `name` (a plain file name, in `traces/` or not) is a file the profiler writes.
    fn of(name: &str, in_traces: bool) -> Option<Owned> {
        let finished = |name: &str| {
            if in_traces {
                trace_id_of_file(name).is_some()
            } else {
                is_stamped_profile(name)
            }
        };
        if finished(name) || (in_traces && is_rotated_index(name)) {
            Some(Owned::Deletable)
        } else if in_traces && name == INDEX_FILE {
            Some(Owned::Live)
        } else if safe_file::is_temporary_of(name, |inner| {
            finished(inner) || (!in_traces && inner == safe_file::WRITE_TEST)
        }) {
            Some(Owned::Temporary)
        } else {
            None
        }
    }
}

/// `<prefix>-<UTC %Y%m%dT%H%M%SZ>.pb.gz`, or `..._<NN>.pb.gz` when the name was taken
/// (`...-<N>.pb.gz` from older versions).
fn is_stamped_profile(name: &str) -> bool {
    let Some((prefix, rest)) = name
        .strip_suffix(".pb.gz")
        .and_then(|stem| stem.split_once('-'))
    else {
        return false;
    };
    let (stamp, n) = rest.split_once(['_', '-']).unwrap_or((rest, "1"));
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let stamp = stamp.as_bytes();
    PREFIXES.contains(&prefix)
        && stamp.len() == 16
        && digits(&stamp[..8])
        && stamp[8] == b'T'
        && digits(&stamp[9..15])
        && stamp[15] == b'Z'
        && digits(n.as_bytes())
}

/// The profiler's regular files in `dir` and in its `traces/` (a real directory, not a link),
/// with their metadata (of the entry itself, not followed).
fn owned_files(dir: &Path) -> io::Result<Vec<(PathBuf, Owned, fs::Metadata)>> {
    let mut files = Vec::new();
    collect(dir, false, &mut files)?;
    let traces = dir.join(TRACES_DIR);
    if fs::symlink_metadata(&traces).is_ok_and(|meta| meta.is_dir()) {
        collect(&traces, true, &mut files)?;
    }
    let spool = dir.join(spool::SPOOL_DIR);
    if fs::symlink_metadata(&spool).is_ok_and(|meta| meta.is_dir()) {
        for entry in fs::read_dir(&spool)? {
            let entry = entry?;
            let ours = entry.file_name().to_str().is_some_and(|name| {
                spool::is_spool_file(name) || safe_file::is_temporary_of(name, spool::is_spool_file)
            });
            match entry.metadata() {
                Ok(meta) if ours && meta.file_type().is_file() => {
                    files.push((entry.path(), Owned::Live, meta))
                }
                _ => {}
            }
        }
    }
    Ok(files)
}

fn collect(
    dir: &Path,
    in_traces: bool,
    out: &mut Vec<(PathBuf, Owned, fs::Metadata)>,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(owned) = name.to_str().and_then(|name| Owned::of(name, in_traces)) else {
            continue;
        };
        // lstat: a link is no regular file, so it is neither followed nor deleted.
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if meta.file_type().is_file() {
            out.push((entry.path(), owned, meta));
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
        let oldest = profile(dir.path(), "cpu-20260101T000001Z.pb.gz", 400, 30);
        let old_trace = profile(&traces, "4bf92f3577b34da6a3ce929d0e0e4736.pb.gz", 400, 20);
        let newer = profile(dir.path(), "cpu-20260101T000002Z.pb.gz", 400, 10);
        let newest = profile(dir.path(), "cpu-20260101T000003Z.pb.gz", 400, 0);
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
        let old_profile = profile(dir.path(), "cpu-20260101T000001Z.pb.gz", 300, 30);
        let newer_index = profile(&traces, "index-20260101T010000Z.jsonl", 300, 20);
        let newest = profile(dir.path(), "cpu-20260101T000002Z.pb.gz", 300, 0);
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
        profile(dir.path(), "cpu-20260101T000001Z.pb.gz", 700, 10);
        let newest = profile(dir.path(), "cpu-20260101T000002Z.pb.gz", 1500, 0);
        let pruned = Retention::new(dir.path(), 1).enforce().unwrap();
        assert_eq!(pruned.files, 1);
        assert!(newest.exists());
    }

    #[test]
    fn a_full_disk_frees_the_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = profile(dir.path(), "cpu-20260101T000001Z.pb.gz", 100, 30);
        let older = profile(dir.path(), "cpu-20260101T000002Z.pb.gz", 100, 20);
        let newest = profile(dir.path(), "cpu-20260101T000003Z.pb.gz", 100, 10);
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
        profile(dir.path(), "cpu-20260101T000001Z.pb.gz", 300, 10);
        assert_eq!(
            Retention::new(dir.path(), 1).enforce().unwrap(),
            Pruned::default()
        );
        profile(dir.path(), "cpu-20260101T000003Z.pb.gz", 3000, 0);
        assert_eq!(
            Retention::new(dir.path(), 0).enforce().unwrap(),
            Pruned::default()
        );
    }

    /// `out/myproject/pprof/important-heap.pb.gz` was deleted by `--max-disk-mb`: only the
    /// profiler's own names go, never another directory's files.
    #[test]
    fn deletes_only_the_profilers_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("myproject/pprof");
        fs::create_dir_all(&project).unwrap();
        let traces = dir.path().join("traces");
        fs::create_dir(&traces).unwrap();
        let theirs = [
            profile(&project, "important-heap.pb.gz", 400, 90),
            profile(dir.path(), "heap.pb.gz", 400, 80),
            profile(dir.path(), "cpu-notes.pb.gz", 400, 80),
            profile(&traces, "my-trace.pb.gz", 400, 80),
            profile(&traces, &format!("{}.pb.gz", "AB".repeat(16)), 400, 80),
            profile(dir.path(), &format!("{}.pb.gz", "ab".repeat(16)), 400, 80),
        ];
        let ours = [
            profile(dir.path(), "cpu-20260101T000000Z.pb.gz", 600, 50),
            profile(dir.path(), "incident-20260101T000000Z_01.pb.gz", 600, 40),
            // Named by an older version.
            profile(dir.path(), "incident-20260101T000000Z-1.pb.gz", 600, 35),
            profile(dir.path(), "offcpu-20260101T000000Z.pb.gz", 600, 30),
            profile(&traces, &format!("{}.pb.gz", "ab".repeat(16)), 600, 20),
        ];
        let newest = profile(dir.path(), "cpu-20260101T000010Z.pb.gz", 600, 0);
        let pruned = Retention::new(dir.path(), 1).enforce().unwrap();
        assert_eq!(pruned.files, ours.len(), "all of ours but the newest");
        assert!(ours.iter().all(|path| !path.exists()));
        assert!(newest.exists());
        for path in &theirs {
            assert!(path.exists(), "{path:?} is not the profiler's");
        }
    }

    /// The OTLP spool's requests take their room from the profiles: the oldest profiles go,
    /// the spool's files stay (the spool deletes its own and counts them).
    #[test]
    fn the_otlp_spool_counts_and_stays() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("otlp-spool");
        fs::create_dir(&spool).unwrap();
        let spooled = profile(&spool, "otlp-20260101T000000Z-00000001.pb.gz", 700, 90);
        let theirs = profile(&spool, "notes.pb.gz", 600, 90);
        let old = profile(dir.path(), "cpu-20260101T000001Z.pb.gz", 300, 30);
        let newer = profile(dir.path(), "cpu-20260101T000002Z.pb.gz", 300, 20);
        let newest = profile(dir.path(), "cpu-20260101T000003Z.pb.gz", 100, 0);
        // 1400 KiB of ours against 1024: two profiles go, the spool stays, theirs is not counted.
        let pruned = Retention::new(dir.path(), 1).enforce().unwrap();
        assert_eq!(pruned.files, 2);
        assert!(!old.exists() && !newer.exists() && newest.exists());
        assert!(spooled.exists() && theirs.exists());
    }

    /// A link is never deleted nor followed, whatever its name, nor is a linked directory.
    #[test]
    fn links_are_neither_deleted_nor_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = profile(elsewhere.path(), "cpu-20250101T000000Z.pb.gz", 400, 90);
        let trace = profile(
            elsewhere.path(),
            &format!("{}.pb.gz", "cd".repeat(16)),
            400,
            90,
        );
        let link = dir.path().join("cpu-20240101T000000Z.pb.gz");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("traces")).unwrap();
        profile(dir.path(), "cpu-20260101T000000Z.pb.gz", 400, 10);
        profile(dir.path(), "cpu-20260101T000010Z.pb.gz", 400, 0);
        let pruned = Retention::new(dir.path(), 1).free_oldest(1 << 30).unwrap();
        assert_eq!(pruned.files, 1);
        assert!(fs::symlink_metadata(&link).is_ok() && victim.exists() && trace.exists());
    }

    /// A killed agent leaves its temporaries: they count against the limit, and the next start
    /// removes them (the profiler's names only; a link is left alone).
    #[test]
    fn leftover_temporaries_count_and_go_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let old = profile(dir.path(), "cpu-20260101T000000Z.pb.gz", 300, 10);
        let newest = profile(dir.path(), "cpu-20260101T000010Z.pb.gz", 300, 0);
        let temporaries = [
            profile(
                dir.path(),
                ".cpu-20260101T000020Z.pb.gz.a1B2c3.tmp",
                1000,
                0,
            ),
            profile(dir.path(), ".cpu-20260101T000020Z.pb.gz.tmp", 100, 0),
        ];
        let retention = Retention::new(dir.path(), 1);
        assert_eq!(retention.enforce().unwrap().files, 1, "temporaries count");
        assert!(!old.exists() && newest.exists());
        assert!(
            temporaries.iter().all(|path| path.exists()),
            "not while running"
        );

        let traces = dir.path().join("traces");
        fs::create_dir(&traces).unwrap();
        let trace_temporary = profile(
            &traces,
            &format!(".{}.pb.gz.x9Y8z7.tmp", "ef".repeat(16)),
            1,
            0,
        );
        let theirs = profile(dir.path(), ".notes.tmp", 1, 0);
        let link = dir.path().join(".cpu-20260101T000030Z.pb.gz.tmp");
        std::os::unix::fs::symlink(&newest, &link).unwrap();
        let removed = retention.remove_temporaries().unwrap();
        assert_eq!(removed.files, 3);
        assert!(temporaries.iter().all(|path| !path.exists()) && !trace_temporary.exists());
        assert!(theirs.exists() && fs::symlink_metadata(&link).is_ok() && newest.exists());
    }
}
