//! Writes profiles as gzip-compressed pprof, atomically: to a new hidden temporary file in the
//! same directory, then renamed ([`crate::safe_file::replace`]: nothing planted under a
//! predictable name is ever followed). A reader never sees half a file; how much a crash of the
//! machine may cost depends on the [`Durability`] chosen for the kind of file.

use std::{
    fs::{self, File},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use chrono::{DateTime, Utc};
use flate2::{Compression, write::GzEncoder};
use prost::Message;

use super::proto::Profile;
use crate::safe_file;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl WriteError {
    /// The file system (or the user's quota) is full.
    pub fn is_disk_full(&self) -> bool {
        let WriteError::Io { source, .. } = self;
        is_disk_full(source)
    }
}

/// ENOSPC, or EDQUOT: the file system (or the user's quota) is full.
pub(crate) fn is_disk_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// What a write promises once it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The data reaches the disk (fsync) before the rename: the file survives a crash of the
    /// machine whole. For files written once: interval and incident profiles.
    Synced,
    /// Renamed without fsync: readers still never see half a file, but a power loss may leave
    /// an empty or cut one under the name. For trace files, rewritten after every interval
    /// while their trace is active (an fsync each time would be most of the writer's disk
    /// work), and whose samples the synced interval files hold as well.
    Renamed,
}

/// Writes `<dir>/<prefix>-<UTC %Y%m%dT%H%M%SZ>.pb.gz` files.
#[derive(Clone, Debug)]
pub struct ProfileWriter {
    dir: PathBuf,
    durability: Durability,
}

impl ProfileWriter {
    /// A writer of [`Durability::Synced`] files.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_durability(dir, Durability::Synced)
    }

    pub fn with_durability(dir: impl Into<PathBuf>, durability: Durability) -> Self {
        Self {
            dir: dir.into(),
            durability,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Writes `profile` under a name made of `prefix` and `time`; a name already taken gets a
    /// [`taken_suffix`]. Returns the path and the number of bytes written.
    pub fn write(
        &self,
        prefix: &str,
        time: SystemTime,
        profile: &Profile,
    ) -> Result<(PathBuf, u64), WriteError> {
        self.recreate_dir()?;
        let stamp = DateTime::<Utc>::from(time).format("%Y%m%dT%H%M%SZ");
        let path = free_name(&self.dir, &format!("{prefix}-{stamp}"));
        let bytes = replace(&path, profile, self.durability)?;
        Ok((path, bytes))
    }

    /// Writes (or atomically replaces) `<dir>/<name>`. Returns the number of bytes written.
    pub fn write_named(&self, name: &str, profile: &Profile) -> Result<(PathBuf, u64), WriteError> {
        self.recreate_dir()?;
        let path = self.dir.join(name);
        let bytes = replace(&path, profile, self.durability)?;
        Ok((path, bytes))
    }

    /// Someone cleaning up may delete the directory under a long-running recorder: make it
    /// again rather than fail every write from then on. Either way, a directory others could
    /// plant links in (or a link someone else made) is refused.
    fn recreate_dir(&self) -> Result<(), WriteError> {
        safe_file::create_dir(&self.dir).map_err(|source| WriteError::Io {
            path: self.dir.clone(),
            source,
        })
    }
}

/// Writes to a new temporary file beside `path`, then renames it over `path`.
fn replace(path: &Path, profile: &Profile, durability: Durability) -> Result<u64, WriteError> {
    safe_file::replace(path, |file| write_gzip(file, profile, durability)).map_err(|source| {
        WriteError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// The suffix of the `n`th file whose name (a time to the second) was taken: `_01`, `_02`...
/// It sorts after the name without it (`_` after `.`) and in order, so files sort by time by
/// name. Older versions wrote `-N`, which sorted before: retention still knows those.
pub fn taken_suffix(n: u32) -> String {
    format!("_{n:02}")
}

/// The first name not taken by any entry (a link someone planted included: left alone).
fn free_name(dir: &Path, stem: &str) -> PathBuf {
    let taken = |path: &Path| fs::symlink_metadata(path).is_ok();
    let first = dir.join(format!("{stem}.pb.gz"));
    if !taken(&first) {
        return first;
    }
    (1..)
        .map(|n| dir.join(format!("{stem}{}.pb.gz", taken_suffix(n))))
        .find(|p| !taken(p))
        .unwrap_or(first)
}

/// gzip's fastest level, as Go's own profiles are written (`gzip.BestSpeed`): a profile is
/// mostly varints of location IDs, which compress little at any level, and level 6 took 700 ms
/// of a 100k-stack interval's 1.5 s for files 24% smaller (the output benchmark's interval).
const LEVEL: Compression = Compression::fast();

/// A profile as a file holds it (gzipped protobuf), in memory: the pull endpoint's answer.
pub fn gzipped(profile: &Profile) -> io::Result<Vec<u8>> {
    let mut gzip = GzEncoder::new(Vec::new(), LEVEL);
    gzip.write_all(&profile.encode_to_vec())?;
    gzip.finish()
}

fn write_gzip(file: &File, profile: &Profile, durability: Durability) -> io::Result<u64> {
    let mut gzip = GzEncoder::new(BufWriter::new(file), LEVEL);
    gzip.write_all(&profile.encode_to_vec())?;
    let file = gzip.finish()?.into_inner().map_err(|e| e.into_error())?;
    if durability == Durability::Synced {
        file.sync_all()?;
    }
    Ok(file.metadata()?.len())
}

#[cfg(test)]
mod tests {
    use std::{io::Read, time::Duration};

    use flate2::read::GzDecoder;

    use super::*;
    use crate::test_support::Victim;

    fn read(path: &Path) -> Profile {
        let mut bytes = Vec::new();
        GzDecoder::new(File::open(path).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        Profile::decode(bytes.as_slice()).unwrap()
    }

    #[test]
    fn writes_named_gzip_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let writer = ProfileWriter::new(dir.path());
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_072_000);
        let profile = Profile {
            period: 5,
            string_table: vec![String::new()],
            ..Profile::default()
        };
        let (first, bytes) = writer.write("cpu", time, &profile).unwrap();
        assert_eq!(first.file_name().unwrap(), "cpu-20251125T120000Z.pb.gz");
        assert!(bytes > 0);
        assert_eq!(read(&first), profile);
        let (second, _) = writer.write("cpu", time, &profile).unwrap();
        assert_eq!(second.file_name().unwrap(), "cpu-20251125T120000Z_01.pb.gz");
        // Names sort in the order written.
        assert!(first < second);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn named_files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        // Without fsync too: still a temporary file and a rename.
        let writer = ProfileWriter::with_durability(dir.path(), Durability::Renamed);
        let mut profile = Profile::default();
        writer.write_named("t.pb.gz", &profile).unwrap();
        profile.period = 9;
        let (path, _) = writer.write_named("t.pb.gz", &profile).unwrap();
        assert_eq!(read(&path).period, 9);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A user who can write to the directory plants links under the names the writer will use
    /// (file names are predictable: a time stamp, a trace ID): the files they point to stay
    /// untouched, and the profile is written under its own name all the same.
    #[test]
    fn planted_links_are_never_followed() {
        let scratch = tempfile::tempdir().unwrap();
        let victim = Victim::new(scratch.path());
        let dir = scratch.path().join("out");
        fs::create_dir(&dir).unwrap();
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_072_000);
        let planted = [
            ".cpu-20251125T120000Z.pb.gz.tmp",
            ".cpu-20251125T120000Z_01.pb.gz.tmp",
            ".t.pb.gz.tmp",
            "t.pb.gz",
        ];
        for name in planted {
            victim.plant(&dir.join(name));
        }
        let writer = ProfileWriter::new(&dir);
        let profile = Profile {
            period: 5,
            ..Profile::default()
        };
        let (first, _) = writer.write("cpu", time, &profile).unwrap();
        let (second, _) = writer.write("cpu", time, &profile).unwrap();
        let (named, _) = writer.write_named("t.pb.gz", &profile).unwrap();
        victim.assert_untouched();
        for path in [first, second, named] {
            assert!(fs::symlink_metadata(&path).unwrap().is_file(), "{path:?}");
            assert_eq!(read(&path), profile);
        }
    }

    #[test]
    fn files_are_readable_but_never_writable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = ProfileWriter::new(dir.path())
            .write("cpu", SystemTime::now(), &Profile::default())
            .unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o622, 0o600, "{mode:o}");
    }

    #[test]
    fn reports_an_unwritable_directory() {
        let writer = ProfileWriter::new("/proc/no-such-dir");
        let err = writer
            .write("cpu", SystemTime::now(), &Profile::default())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot write /proc/no-such-dir"),
            "{err}"
        );
    }

    #[test]
    fn a_deleted_directory_is_made_again() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("out");
        let writer = ProfileWriter::new(&dir);
        writer
            .write("cpu", SystemTime::now(), &Profile::default())
            .unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let (path, _) = writer
            .write("cpu", SystemTime::now(), &Profile::default())
            .unwrap();
        assert!(path.starts_with(&dir) && path.exists());
    }
}
