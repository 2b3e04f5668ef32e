//! The profiles of an output directory and reading one: interval files (`cpu-<UTC>.pb.gz`),
//! incident files (`incident-<UTC>.pb.gz`), trace files (`traces/<trace_id>.pb.gz`), and any
//! other `*.pb.gz`. Hidden names (the writer's `.*.tmp` temporaries) are never listed.

use std::{
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
    time::SystemTime,
};

use flate2::read::GzDecoder;
use prost::Message;

use crate::profile::proto::Profile;

/// Where the profiler writes trace files, relative to the output directory.
pub const TRACES_DIR: &str = "traces";

/// What a profile file holds, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProfileKind {
    /// `cpu-<UTC>.pb.gz`: one interval of the whole recording.
    Interval,
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
        } else if name.starts_with("incident-") {
            ProfileKind::Incident
        } else {
            ProfileKind::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Interval => "interval",
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

/// Reads a pprof file, gzip-compressed (as the profiler writes them) or not.
pub fn read(path: &Path) -> Result<Profile, ReadError> {
    let io_error = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = fs::read(path).map_err(io_error)?;
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut raw)
            .map_err(io_error)?;
        raw
    } else {
        bytes
    };
    Profile::decode(raw.as_slice()).map_err(|source| ReadError::Decode {
        path: path.to_owned(),
        source,
    })
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
                (
                    "traces/4bf92f3577b34da6a3ce929d0e0e4736.pb.gz",
                    ProfileKind::Trace
                )
            ]
        );
        assert_eq!(read(&files[0].path).unwrap(), profile);
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
