//! The profiles of an output directory and reading one: interval files (`cpu-<UTC>.pb.gz`),
//! off-CPU interval files (`offcpu-<UTC>.pb.gz`, `record --off-cpu`), incident files (`incident-<UTC>.pb.gz`), trace files (`traces/<trace_id>.pb.gz`), and any
//! other `*.pb.gz`. Hidden names (the writer's `.*.tmp` temporaries) are never listed.

use std::{
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::SystemTime,
};

use flate2::read::GzDecoder;
use prost::Message;

use super::wire;
use crate::profile::proto::Profile;

/// Where the profiler writes trace files, relative to the output directory.
pub const TRACES_DIR: &str = "traces";

/// What a profile file holds, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProfileKind {
    /// `cpu-<UTC>.pb.gz`: one interval of the whole recording.
    Interval,
    /// `offcpu-<UTC>.pb.gz`: the time threads spent off the CPU in one interval, by the stack
    /// they left it with.
    OffCpu,
    /// `incident-<UTC>.pb.gz`: a capture window (its samples are in interval files too).
    Incident,
    /// `traces/<trace_id>.pb.gz`: every sample of one trace (also in interval files).
    Trace,
    /// Any other `*.pb.gz`.
    Other,
}

impl ProfileKind {
    /// The kind of the file `name` (a plain file name), given whether it sits in `traces/`.
    pub fn of(name: &str, in_traces: bool) -> Self {
        if in_traces && trace_id_of_file(name).is_some() {
            ProfileKind::Trace
        } else if name.starts_with("cpu-") {
            ProfileKind::Interval
        } else if name.starts_with("offcpu-") {
            ProfileKind::OffCpu
        } else if name.starts_with("incident-") {
            ProfileKind::Incident
        } else {
            ProfileKind::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Interval => "interval",
            ProfileKind::OffCpu => "off-cpu",
            ProfileKind::Incident => "incident",
            ProfileKind::Trace => "trace",
            ProfileKind::Other => "profile",
        }
    }
}

/// One profile file found in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileFile {
    /// Path relative to the directory, `/`-separated: `cpu-….pb.gz`, `traces/<id>.pb.gz`.
    pub name: String,
    pub path: PathBuf,
    pub kind: ProfileKind,
    pub size: u64,
    pub modified: SystemTime,
}

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a pprof profile")]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{path} is not a pprof profile: {reason}")]
    Malformed { path: PathBuf, reason: &'static str },
    #[error("{path}: over the {limit_mb} MiB limit {what} (raise it with --max-profile-mb)")]
    TooLarge {
        path: PathBuf,
        /// Where the limit was met: "in size", "when decompressed", "when decoded", "as stacks".
        what: &'static str,
        limit_mb: u64,
    },
}

impl ReadError {
    /// The file is gone (deleted by retention, or renamed over, between listing and reading).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// The trace ID of a trace file's name: `<32 lowercase hex>.pb.gz`.
pub fn trace_id_of_file(name: &str) -> Option<&str> {
    name.strip_suffix(".pb.gz").filter(|id| is_trace_id(id))
}

/// 32 lowercase hex digits, not all zero (the W3C rule).
pub fn is_trace_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && id.bytes().any(|b| b != b'0')
}

/// The profiles in `dir` and in `dir/traces`, by name. A missing `traces/` is no error; an
/// entry that vanishes while listing is left out.
pub fn list(dir: &Path) -> io::Result<Vec<ProfileFile>> {
    let mut files = list_one(dir, "", false)?;
    match list_one(&dir.join(TRACES_DIR), "traces/", true) {
        Ok(traces) => files.extend(traces),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) if err.kind() == io::ErrorKind::NotADirectory => {}
        Err(err) => return Err(err),
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn list_one(dir: &Path, prefix: &str, in_traces: bool) -> io::Result<Vec<ProfileFile>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".pb.gz") {
            continue;
        }
        // Follows symlinks, as opening the file will; a file gone meanwhile is skipped.
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        files.push(ProfileFile {
            name: format!("{prefix}{name}"),
            path: entry.path(),
            kind: ProfileKind::of(name, in_traces),
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(files)
}

/// What reading one profile may take: the file, its decompressed message, the decoded message
/// (as prost will allocate it) and its stacks (as `report` and `serve` expand them) are each held
/// to `max_bytes`. A decompression bomb or a message of millions of empty samples is refused
/// after reading at most that much, in memory that does not grow with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    pub max_bytes: u64,
}

impl ReadLimits {
    /// `--max-profile-mb`'s default: far above what the recorder writes (a 100k-stack interval
    /// is a few MiB decoded).
    pub const DEFAULT_MB: u64 = 256;

    pub const fn mb(mb: u64) -> ReadLimits {
        ReadLimits {
            max_bytes: mb.saturating_mul(1 << 20),
        }
    }

    fn mb_text(self) -> u64 {
        self.max_bytes.div_ceil(1 << 20)
    }
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits::mb(ReadLimits::DEFAULT_MB)
    }
}

/// The limits [`read`] applies: one per process, set from `--max-profile-mb` before anything is
/// read (`report`, `serve` and `record --serve` each read with one limit).
static LIMIT_BYTES: AtomicU64 = AtomicU64::new(ReadLimits::DEFAULT_MB << 20);

/// Sets the limits every later [`read`] applies.
pub fn set_read_limits(limits: ReadLimits) {
    LIMIT_BYTES.store(limits.max_bytes, Ordering::Relaxed);
}

/// The limits [`read`] applies.
pub fn read_limits() -> ReadLimits {
    ReadLimits {
        max_bytes: LIMIT_BYTES.load(Ordering::Relaxed),
    }
}

/// Reads a pprof file, gzip-compressed (as the profiler writes them) or not, within the
/// process's [`read_limits`].
pub fn read(path: &Path) -> Result<Profile, ReadError> {
    read_with(path, read_limits())
}

/// Reads a pprof file within `limits`. The file is read once (at most `max_bytes`); its message
/// is first walked as it decompresses, without being kept, to add up what decoding it would
/// allocate; only then is it decompressed again into a buffer of the size now known, decoded,
/// and its stacks measured before anyone expands them.
pub fn read_with(path: &Path, limits: ReadLimits) -> Result<Profile, ReadError> {
    let mut bytes = Vec::new();
    // One byte past the limit tells `decode` that the file is over it.
    fs::File::open(path)
        .and_then(|file| {
            file.take(limits.max_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
        })
        .map_err(|source| ReadError::Io {
            path: path.to_owned(),
            source,
        })?;
    decode(path, bytes, limits)
}

/// Decodes the bytes of a pprof file (`path` only names it in errors) within `limits`, as
/// [`read_with`] does.
pub fn decode(path: &Path, bytes: Vec<u8>, limits: ReadLimits) -> Result<Profile, ReadError> {
    let too_large = |what| ReadError::TooLarge {
        path: path.to_owned(),
        what,
        limit_mb: limits.mb_text(),
    };
    let io_error = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let max = limits.max_bytes;
    if bytes.len() as u64 > max {
        return Err(too_large("in size"));
    }
    let gzip = bytes.starts_with(&[0x1f, 0x8b]);
    fn message(bytes: &[u8], gzip: bool) -> Box<dyn Read + '_> {
        if gzip {
            Box::new(GzDecoder::new(bytes))
        } else {
            Box::new(bytes)
        }
    }

    let (walked, over) = {
        let mut counted = Counted::new(message(&bytes, gzip).take(max.saturating_add(1)));
        let walked = wire::walk(&mut io::BufReader::new(&mut counted), max);
        (walked, counted.count > max)
    };
    let length = match walked {
        _ if over => return Err(too_large("when decompressed")),
        Ok(footprint) => footprint.length,
        Err(wire::WalkError::Io(source)) => return Err(io_error(source)),
        Err(wire::WalkError::Malformed(reason)) => {
            return Err(ReadError::Malformed {
                path: path.to_owned(),
                reason,
            });
        }
        Err(wire::WalkError::OverBudget) => return Err(too_large("when decoded")),
    };

    let raw = if gzip {
        let mut raw = Vec::with_capacity(length as usize);
        message(&bytes, gzip)
            .take(length)
            .read_to_end(&mut raw)
            .map_err(io_error)?;
        raw
    } else {
        bytes
    };
    let profile = Profile::decode(raw.as_slice()).map_err(|source| ReadError::Decode {
        path: path.to_owned(),
        source,
    })?;
    if wire::expanded_size(&profile, max) > max {
        return Err(too_large("as stacks"));
    }
    Ok(profile)
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R> Counted<R> {
    fn new(inner: R) -> Self {
        Counted { inner, count: 0 }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileWriter;

    #[test]
    fn kinds_from_names() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            ProfileKind::of("cpu-20260101T120000Z.pb.gz", false),
            ProfileKind::Interval
        );
        assert_eq!(
            ProfileKind::of("incident-20260101T120000Z.pb.gz", false),
            ProfileKind::Incident
        );
        assert_eq!(
            ProfileKind::of("offcpu-20260101T120000Z_01.pb.gz", false),
            ProfileKind::OffCpu
        );
        assert_eq!(
            ProfileKind::of(&format!("{id}.pb.gz"), true),
            ProfileKind::Trace
        );
        assert_eq!(
            ProfileKind::of(&format!("{id}.pb.gz"), false),
            ProfileKind::Other
        );
        assert!(is_trace_id(id));
        assert!(!is_trace_id(&"0".repeat(32)));
        assert!(!is_trace_id(&id.to_uppercase()));
        assert!(!is_trace_id("../../etc/passwd"));
    }

    #[test]
    fn lists_profiles_and_trace_files_but_not_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let writer = ProfileWriter::new(dir.path());
        let profile = Profile::default();
        writer
            .write_named("cpu-20260101T120000Z.pb.gz", &profile)
            .unwrap();
        writer
            .write_named("incident-20260101T120005Z.pb.gz", &profile)
            .unwrap();
        writer
            .write_named("offcpu-20260101T120000Z.pb.gz", &profile)
            .unwrap();
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        ProfileWriter::new(dir.path().join("traces"))
            .write_named(&format!("{id}.pb.gz"), &profile)
            .unwrap();
        fs::write(dir.path().join(".cpu-x.pb.gz.tmp"), b"half").unwrap();
        fs::write(dir.path().join("notes.txt"), b"").unwrap();
        fs::write(dir.path().join("traces/index.jsonl"), b"").unwrap();
        let files = list(dir.path()).unwrap();
        let names: Vec<_> = files.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            [
                ("cpu-20260101T120000Z.pb.gz", ProfileKind::Interval),
                ("incident-20260101T120005Z.pb.gz", ProfileKind::Incident),
                ("offcpu-20260101T120000Z.pb.gz", ProfileKind::OffCpu),
                (
                    "traces/4bf92f3577b34da6a3ce929d0e0e4736.pb.gz",
                    ProfileKind::Trace
                )
            ]
        );
        assert_eq!(read(&files[0].path).unwrap(), profile);
    }

    /// A gzip member expanding to `expanded` bytes of `pattern`, from one deflate chunk repeated
    /// (a full flush resets the compressor, so each chunk compresses the same).
    fn gzip_bomb(pattern: &[u8], expanded: usize) -> Vec<u8> {
        use flate2::{Compress, Compression, FlushCompress};
        const CHUNK: usize = 1 << 20;
        let input: Vec<u8> = pattern.iter().copied().cycle().take(CHUNK).collect();
        let mut compress = Compress::new(Compression::best(), false);
        let (mut chunk, mut end) = (Vec::with_capacity(CHUNK), Vec::with_capacity(64));
        compress
            .compress_vec(&input, &mut chunk, FlushCompress::Full)
            .unwrap();
        compress
            .compress_vec(&[], &mut end, FlushCompress::Finish)
            .unwrap();
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        for _ in 0..expanded / CHUNK {
            gz.extend_from_slice(&chunk);
        }
        gz.extend_from_slice(&end);
        gz.extend_from_slice(&[0; 8]);
        gz
    }

    #[test]
    fn bombs_are_refused_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ReadLimits::mb(4);
        let too_large = |bytes: Vec<u8>| {
            let path = dir.path().join("bomb.pb.gz");
            fs::write(&path, bytes).unwrap();
            let started = std::time::Instant::now();
            let err = read_with(&path, limits).unwrap_err();
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            assert!(matches!(err, ReadError::TooLarge { .. }), "{err}");
            assert!(err.to_string().contains("--max-profile-mb"), "{err}");
            err.to_string()
        };
        // 1 GiB of empty samples: refused when their structs pass the budget.
        let err = too_large(gzip_bomb(&[0x12, 0x00], 1 << 30));
        assert!(err.contains("when decoded"), "{err}");
        // A string said to be 1 GiB long: refused at its length, before reading it.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &[0x32, 0x80, 0x80, 0x80, 0x80, 0x04]).unwrap();
        let err = too_large(gz.finish().unwrap());
        assert!(err.contains("when decoded"), "{err}");
        // 8 MiB of a valid padding field (unknown field 100, skipped by prost): refused by
        // size once decompressed.
        let mut padding = vec![0xa2, 0x06, 0x80, 0x80, 0x80, 0x04];
        padding.resize(8 << 20, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &padding).unwrap();
        let err = too_large(gz.finish().unwrap());
        assert!(err.contains("when decompressed"), "{err}");
        // Not compressed and over the limit on disk.
        let err = too_large(padding);
        assert!(err.contains("in size"), "{err}");
    }

    #[test]
    fn stacks_that_would_expand_past_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep.pb.gz");
        // 1M references to a location of 100 lines: 100M frames from 1 MiB.
        let profile = Profile {
            sample: vec![crate::profile::proto::Sample {
                location_id: vec![1; 1 << 20],
                ..Default::default()
            }],
            location: vec![crate::profile::proto::Location {
                id: 1,
                line: vec![Default::default(); 100],
                ..Default::default()
            }],
            ..Profile::default()
        };
        fs::write(&path, profile.encode_to_vec()).unwrap();
        let err = read_with(&path, ReadLimits::mb(64)).unwrap_err();
        assert!(err.to_string().contains("as stacks"), "{err}");
    }

    #[test]
    fn a_recorder_sized_profile_reads_within_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let profile = crate::report::stacks::tests::profile(
            &(0..2000)
                .map(|i| {
                    (
                        "main;a;b;c;d;e;f;g",
                        crate::report::stacks::tests::labels(i, i),
                        1,
                    )
                })
                .collect::<Vec<_>>(),
        );
        ProfileWriter::new(dir.path())
            .write_named("cpu-x.pb.gz", &profile)
            .unwrap();
        let path = dir.path().join("cpu-x.pb.gz");
        assert_eq!(read(&path).unwrap(), profile);
        assert_eq!(read_with(&path, ReadLimits::mb(1)).unwrap(), profile);
    }

    #[test]
    fn reads_plain_pprof_and_names_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.pb.gz");
        let profile = Profile {
            period: 7,
            ..Profile::default()
        };
        fs::write(&plain, profile.encode_to_vec()).unwrap();
        assert_eq!(read(&plain).unwrap().period, 7);

        let corrupt = dir.path().join("corrupt.pb.gz");
        fs::write(&corrupt, [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
        let err = read(&corrupt).unwrap_err();
        assert!(err.to_string().contains("corrupt.pb.gz"), "{err}");
        let garbage = dir.path().join("garbage.pb.gz");
        fs::write(&garbage, [0xff; 16]).unwrap();
        let err = read(&garbage).unwrap_err();
        assert!(err.to_string().contains("not a pprof profile"), "{err}");
        assert!(
            read(&dir.path().join("gone.pb.gz"))
                .unwrap_err()
                .is_not_found()
        );
    }
}
