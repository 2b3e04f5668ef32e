//! Reads the OpenTelemetry process context a process publishes (OTEP 4719): a named mapping
//! whose first 32 bytes are a header pointing to a protobuf payload with the resource
//! attributes, among them the key table of the thread-local records.
//!
//! Everything read from the target is untrusted: wrong signatures, absurd sizes, dangling
//! pointers and undecodable payloads are errors, never panics.

use std::{fs::File, io, os::unix::fs::FileExt, time::Duration};

use procfs::process::{MMPermissions, MMapPath, Process};
use prost::Message as _;

/// Errors of reading a process context.
#[derive(Debug, thiserror::Error)]
pub enum ProcessContextError {
    #[error("reading /proc/{pid}/maps failed")]
    Maps {
        pid: u32,
        #[source]
        source: procfs::ProcError,
    },
    #[error("opening /proc/{pid}/mem failed")]
    OpenMem {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("pread(/proc/{pid}/mem, {len} bytes at {address:#x}) failed")]
    Read {
        pid: u32,
        address: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("the mapping does not start with the OTEL_CTX signature (found {0:02x?})")]
    Signature([u8; 8]),
    #[error("process context version {0} is not supported (only 1 and 2)")]
    Version(u32),
    #[error("the process context is being published or updated (published_at_ns is 0)")]
    NotPublished,
    #[error("the process context payload of {0} bytes exceeds the 1 MiB limit")]
    PayloadTooLarge(u32),
    #[error("the process context payload pointer is null")]
    NullPayload,
    #[error("the process context changed during each of {0} attempts to read it")]
    Unstable(u32),
    #[error("decoding the process context payload failed")]
    Decode(#[source] prost::DecodeError),
}

/// The header at the start of the mapping: `"OTEL_CTX" | version u32 | payload_size u32 |
/// published_at_ns u64 | payload_ptr u64`, in native byte order (the target runs on this host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version: 2, or 1 during the OTEP's development.
    pub version: u32,
    /// Length of the protobuf payload in bytes.
    pub payload_size: u32,
    /// When the context was published; 0 while the publisher writes.
    pub published_at_ns: u64,
    /// Address of the payload in the target process.
    pub payload_ptr: u64,
}

/// Size of [`Header`] in the target's memory.
pub const HEADER_SIZE: usize = 32;

const SIGNATURE: &[u8; 8] = b"OTEL_CTX";
/// A key table and a few resource attributes take a few KiB; refuse to read more.
const MAX_PAYLOAD_SIZE: u32 = 1 << 20;
/// Attempts at a consistent read while the publisher updates the context.
const ATTEMPTS: u32 = 3;

/// Parses and validates the header: signature, version, a finished publication, and a
/// payload of at most 1 MiB.
pub fn parse_header(bytes: &[u8; HEADER_SIZE]) -> Result<Header, ProcessContextError> {
    let (signature, rest) = bytes.split_first_chunk::<8>().expect("32 bytes");
    if signature != SIGNATURE {
        return Err(ProcessContextError::Signature(*signature));
    }
    let u32_at = |at: usize| u32::from_ne_bytes(rest[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_ne_bytes(rest[at..at + 8].try_into().expect("8 bytes"));
    let header = Header {
        version: u32_at(0),
        payload_size: u32_at(4),
        published_at_ns: u64_at(8),
        payload_ptr: u64_at(16),
    };
    if !matches!(header.version, 1 | 2) {
        return Err(ProcessContextError::Version(header.version));
    }
    if header.published_at_ns == 0 {
        return Err(ProcessContextError::NotPublished);
    }
    if header.payload_size > MAX_PAYLOAD_SIZE {
        return Err(ProcessContextError::PayloadTooLarge(header.payload_size));
    }
    if header.payload_ptr == 0 && header.payload_size > 0 {
        return Err(ProcessContextError::NullPayload);
    }
    Ok(header)
}

/// What the profiler uses of a process context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessContext {
    /// The resource's `service.name`.
    pub service_name: Option<String>,
    /// `threadlocal.attribute_key_map`: the names of the thread-local records' attribute keys,
    /// by key index. A non-string entry keeps its index with an empty name.
    pub attribute_keys: Vec<String>,
    /// `threadlocal.schema_version`: the layout of the thread-local records.
    pub schema_version: Option<String>,
}

const SERVICE_NAME: &str = "service.name";
const ATTRIBUTE_KEY_MAP: &str = "threadlocal.attribute_key_map";
const SCHEMA_VERSION: &str = "threadlocal.schema_version";

/// Decodes a payload: `ProcessContext { Resource resource = 1; repeated KeyValue attributes
/// = 2; }`. The `threadlocal.*` keys are looked up in `attributes`, then in the resource.
pub fn decode_payload(bytes: &[u8]) -> Result<ProcessContext, ProcessContextError> {
    let message = proto::ProcessContext::decode(bytes).map_err(ProcessContextError::Decode)?;
    let resource = message
        .resource
        .as_ref()
        .map(|resource| resource.attributes.as_slice())
        .unwrap_or_default();
    let find = |key: &str| {
        let in_list = |list: &'_ [proto::KeyValue]| {
            list.iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .cloned()
        };
        in_list(&message.attributes).or_else(|| in_list(resource))
    };
    let string = |value: proto::any_value::Value| match value {
        proto::any_value::Value::StringValue(text) => Some(text),
        _ => None,
    };

    let service_name = resource
        .iter()
        .find(|kv| kv.key == SERVICE_NAME)
        .and_then(|kv| kv.value.clone()?.value)
        .and_then(string);
    let attribute_keys = match find(ATTRIBUTE_KEY_MAP) {
        Some(proto::any_value::Value::ArrayValue(array)) => array
            .values
            .into_iter()
            .map(|value| value.value.and_then(string).unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    };
    Ok(ProcessContext {
        service_name,
        attribute_keys,
        schema_version: find(SCHEMA_VERSION).and_then(string),
    })
}

/// Reads the process context of `pid`; `Ok(None)` when the process publishes none.
///
/// Publishers write the signature last, so a [`ProcessContextError::Signature`] of zeros can
/// mean a first publication in progress; like [`ProcessContextError::NotPublished`], it is
/// worth another try later.
///
/// Needs `PTRACE_MODE_READ` access to the process (root, or `CAP_SYS_PTRACE`, or the same
/// user under Yama's default policy for a descendant; any process may read itself).
pub fn read_process_context(pid: u32) -> Result<Option<ProcessContext>, ProcessContextError> {
    let maps_error = |source| ProcessContextError::Maps { pid, source };
    let maps = Process::new(pid as i32)
        .and_then(|process| process.maps())
        .map_err(maps_error)?;
    let mut candidates = maps
        .into_iter()
        .filter(|map| map.perms.contains(MMPermissions::READ) && is_context_mapping(&map.pathname))
        .map(|map| map.address.0)
        .peekable();
    if candidates.peek().is_none() {
        return Ok(None);
    }
    let mem = File::open(format!("/proc/{pid}/mem"))
        .map_err(|source| ProcessContextError::OpenMem { pid, source })?;
    let memory = Memory { pid, file: mem };

    // A process publishes one context; a stray mapping with the name but not the signature
    // is skipped, and its error reported only if no other mapping holds a context.
    let mut last_error = None;
    for start in candidates {
        match read_at(&memory, start) {
            Ok(context) => return Ok(Some(context)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("at least one candidate"))
}

/// The names a context mapping gets: `[anon:OTEL_CTX]` (private anonymous memory named with
/// `prctl(PR_SET_VMA_ANON_NAME)`), `[anon_shmem:OTEL_CTX]` (shared anonymous), and
/// `/memfd:OTEL_CTX (deleted)` (a memfd).
fn is_context_mapping(path: &MMapPath) -> bool {
    match path {
        MMapPath::Other(name) => name == "anon:OTEL_CTX" || name == "anon_shmem:OTEL_CTX",
        MMapPath::Path(path) => path.to_str().is_some_and(|path| {
            path.strip_suffix(" (deleted)").unwrap_or(path) == "/memfd:OTEL_CTX"
        }),
        _ => false,
    }
}

struct Memory {
    pid: u32,
    file: File,
}

impl Memory {
    fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), ProcessContextError> {
        self.file
            .read_exact_at(buffer, address)
            .map_err(|source| ProcessContextError::Read {
                pid: self.pid,
                address,
                len: buffer.len(),
                source,
            })
    }

    fn header(&self, address: u64) -> Result<Header, ProcessContextError> {
        let mut bytes = [0; HEADER_SIZE];
        self.read(address, &mut bytes)?;
        parse_header(&bytes)
    }
}

/// Header, payload, header again: the same `published_at_ns` both times means the payload was
/// not replaced while it was read.
fn read_at(memory: &Memory, start: u64) -> Result<ProcessContext, ProcessContextError> {
    let mut last_error = ProcessContextError::Unstable(ATTEMPTS);
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            // Give a publisher that is mid-update a moment to finish.
            std::thread::sleep(Duration::from_millis(1));
        }
        let header = match memory.header(start) {
            Err(ProcessContextError::NotPublished) => {
                last_error = ProcessContextError::NotPublished;
                continue;
            }
            other => other?,
        };
        let mut payload = vec![0; header.payload_size as usize];
        memory.read(header.payload_ptr, &mut payload)?;
        match memory.header(start) {
            Ok(again) if again.published_at_ns == header.published_at_ns => {
                return decode_payload(&payload);
            }
            Ok(_) => last_error = ProcessContextError::Unstable(ATTEMPTS),
            Err(ProcessContextError::NotPublished) => {
                last_error = ProcessContextError::NotPublished
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error)
}

/// The payload's protobuf messages, shared with the writer side (`profiler-marker`).
pub use profiler_marker::process_context::proto;

#[cfg(test)]
mod tests;
