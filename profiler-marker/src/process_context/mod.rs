//! The process context of OTEP 4719: who this process is (`service.name`, ...) and how to read
//! its thread-local records (the names of their attribute key indexes), published in a small
//! mapping that an out-of-process reader such as the profiler finds through
//! `/proc/<pid>/maps` (`/memfd:OTEL_CTX (deleted)`, or `[anon:OTEL_CTX]`) and reads through
//! `/proc/<pid>/mem`.
//!
//! The mapping holds a 32-byte [`Header`] followed by the payload, a protobuf
//! [`proto::ProcessContext`]. One process context exists per process.
//!
//! ```
//! use profiler_marker::process_context::{self, ProcessContextInfo};
//!
//! let info = ProcessContextInfo::new("checkout")
//!     .with_attribute_keys(["http.route", "user.id"])
//!     .with_resource_attribute("deployment.environment.name", "prod");
//! let mut handle = process_context::publish(&info)?;
//! // Later, e.g. after a configuration change:
//! handle.update(&info.clone().with_attribute_keys(["http.route"]))?;
//! // Keep it published until the process exits:
//! handle.leak();
//! # Ok::<(), process_context::ProcessContextError>(())
//! ```

mod header;
mod mapping;
pub mod proto;

use std::{
    io,
    sync::atomic::{AtomicI32, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use prost::Message as _;

pub use header::{HEADER_SIZE, Header, HeaderError, SIGNATURE, VERSION};
use mapping::Mapping;

/// Largest payload this crate publishes; readers need not read more.
pub const MAX_PAYLOAD_SIZE: usize = 1 << 20;
/// Most attribute keys: a record's key index is one byte.
pub const MAX_ATTRIBUTE_KEYS: usize = 256;

/// Errors of publishing the process context.
#[derive(Debug, thiserror::Error)]
pub enum ProcessContextError {
    /// A system call failed.
    #[error("{syscall} failed")]
    Syscall {
        /// The call, e.g. `mmap`.
        syscall: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// More attribute keys than a one-byte key index can name.
    #[error("{count} attribute keys, at most {MAX_ATTRIBUTE_KEYS} fit the record's key index")]
    TooManyAttributeKeys {
        /// Keys given.
        count: usize,
    },
    /// The encoded payload is larger than [`MAX_PAYLOAD_SIZE`].
    #[error("payload is {size} bytes, more than {MAX_PAYLOAD_SIZE}")]
    PayloadTooLarge {
        /// Encoded size.
        size: usize,
    },
    /// This process already has a live [`ProcessContextHandle`]; update that one.
    #[error("this process already published its process context; update the handle instead")]
    AlreadyPublished,
}

/// What the process publishes about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessContextInfo {
    /// The resource attribute `service.name`.
    pub service_name: String,
    /// Names of the attributes in thread-local records: key index `i` is `attribute_keys[i]`
    /// (at most [`MAX_ATTRIBUTE_KEYS`]).
    pub attribute_keys: Vec<String>,
    /// More string resource attributes (`service.version`, `deployment.environment.name`,
    /// ...). A `service.name` here is left out in favour of `service_name`.
    pub resource_attributes: Vec<(String, String)>,
}

impl ProcessContextInfo {
    /// A context with the given service name, no attribute keys and no other attributes.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            ..Self::default()
        }
    }

    /// Replaces the attribute key names (index `i` = key index `i` in records).
    #[must_use]
    pub fn with_attribute_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.attribute_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a string resource attribute.
    #[must_use]
    pub fn with_resource_attribute(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.resource_attributes.push((key.into(), value.into()));
        self
    }

    /// The protobuf payload this context publishes.
    pub fn payload(&self) -> proto::ProcessContext {
        use proto::{AnyValue, ArrayValue, KeyValue, any_value::Value};

        let mut resource = vec![KeyValue::string(proto::SERVICE_NAME, &self.service_name)];
        resource.extend(
            self.resource_attributes
                .iter()
                .filter(|(key, _)| key != proto::SERVICE_NAME)
                .map(|(key, value)| KeyValue::string(key, value)),
        );
        let key_map = ArrayValue {
            values: self.attribute_keys.iter().map(AnyValue::string).collect(),
        };
        proto::ProcessContext {
            resource: Some(proto::Resource {
                attributes: resource,
                dropped_attributes_count: 0,
            }),
            attributes: vec![
                KeyValue::string(proto::SCHEMA_VERSION, proto::SCHEMA_VERSION_TLS_V1),
                KeyValue {
                    key: proto::ATTRIBUTE_KEY_MAP.to_owned(),
                    value: Some(AnyValue {
                        value: Some(Value::ArrayValue(key_map)),
                    }),
                },
            ],
        }
    }

    fn encode(&self) -> Result<Vec<u8>, ProcessContextError> {
        if self.attribute_keys.len() > MAX_ATTRIBUTE_KEYS {
            return Err(ProcessContextError::TooManyAttributeKeys {
                count: self.attribute_keys.len(),
            });
        }
        let payload = self.payload().encode_to_vec();
        if payload.len() > MAX_PAYLOAD_SIZE {
            return Err(ProcessContextError::PayloadTooLarge {
                size: payload.len(),
            });
        }
        Ok(payload)
    }
}

/// PID of the process whose handle is alive, 0 if none: a process publishes one context. A
/// child after `fork` inherits the parent's PID here but not the mapping, and may publish.
static PUBLISHER: AtomicI32 = AtomicI32::new(0);

/// Publishes the process context: a memfd named `OTEL_CTX` (anonymous memory if memfd is not
/// available), not inherited by `fork`, with the header and the payload right after it; the
/// signature is written last, after a fence, and the mapping is then named `OTEL_CTX` with
/// `prctl(PR_SET_VMA_ANON_NAME)` (Linux 5.17+, error ignored).
///
/// Fails with [`ProcessContextError::AlreadyPublished`] while another handle of this process
/// is alive.
pub fn publish(info: &ProcessContextInfo) -> Result<ProcessContextHandle, ProcessContextError> {
    publish_with(info, true)
}

fn publish_with(
    info: &ProcessContextInfo,
    try_memfd: bool,
) -> Result<ProcessContextHandle, ProcessContextError> {
    let payload = info.encode()?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let previous = PUBLISHER.load(Ordering::SeqCst);
    if previous == pid
        || PUBLISHER
            .compare_exchange(previous, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
    {
        return Err(ProcessContextError::AlreadyPublished);
    }
    match new_mapping(&payload, now_ns(0), try_memfd) {
        Ok(mapping) => Ok(ProcessContextHandle { mapping }),
        Err(err) => {
            let _ = PUBLISHER.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
            Err(err)
        }
    }
}

fn new_mapping(
    payload: &[u8],
    published_at_ns: u64,
    try_memfd: bool,
) -> Result<Mapping, ProcessContextError> {
    let mut mapping = Mapping::create(mapping_len(payload.len()), try_memfd)?;
    mapping.publish(payload, published_at_ns);
    Ok(mapping)
}

/// Header + payload, rounded up to whole pages.
fn mapping_len(payload_len: usize) -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&page| page >= 4096)
        .unwrap_or(4096);
    (HEADER_SIZE + payload_len).div_ceil(page) * page
}

/// Nanoseconds since the Unix epoch, never 0 and always after `previous` (readers notice a
/// change by the timestamp).
fn now_ns(previous: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        });
    now.max(previous.saturating_add(1)).max(1)
}

/// The published process context. Dropping it unmaps the context (readers then find none);
/// call [`ProcessContextHandle::leak`] to keep it for the life of the process.
pub struct ProcessContextHandle {
    mapping: Mapping,
}

impl ProcessContextHandle {
    /// Replaces the payload following the update protocol: `published_at_ns` = 0, fence, new
    /// payload and size, fence, new (larger) timestamp. If the new payload does not fit the
    /// mapping, a new mapping is published and the old one is marked as updating, then
    /// unmapped. In a child after `fork` (which has no mapping), this publishes a new one.
    pub fn update(&mut self, info: &ProcessContextInfo) -> Result<(), ProcessContextError> {
        let payload = info.encode()?;
        if !self.mapping.is_ours() {
            let handle = publish_with(info, true)?;
            // The inherited mapping is not ours to unmap; Drop checks the PID.
            self.mapping = handle.into_mapping();
            return Ok(());
        }
        let published_at_ns = now_ns(self.mapping.published_at_ns());
        if payload.len() <= self.mapping.capacity() {
            self.mapping.update(&payload, published_at_ns);
        } else {
            let mapping = new_mapping(&payload, published_at_ns, self.mapping.is_memfd())?;
            self.mapping.mark_updating();
            // The old mapping is unmapped here.
            self.mapping = mapping;
        }
        Ok(())
    }

    /// Address of the header in this process.
    pub fn address(&self) -> usize {
        self.mapping.addr()
    }

    /// Size of the mapping in bytes (whole pages).
    pub fn mapping_len(&self) -> usize {
        self.mapping.len()
    }

    /// Whether the mapping is a memfd (`/memfd:OTEL_CTX`) rather than anonymous memory.
    pub fn is_memfd(&self) -> bool {
        self.mapping.is_memfd()
    }

    /// Keeps the context published until the process exits.
    pub fn leak(self) {
        std::mem::forget(self);
    }

    fn into_mapping(self) -> Mapping {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the mapping is moved out once.
        unsafe { std::ptr::read(&this.mapping) }
    }
}

impl Drop for ProcessContextHandle {
    fn drop(&mut self) {
        if self.mapping.is_ours() {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            let _ = PUBLISHER.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

impl std::fmt::Debug for ProcessContextHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessContextHandle")
            .field("address", &format_args!("{:#x}", self.address()))
            .field("mapping_len", &self.mapping_len())
            .field("memfd", &self.is_memfd())
            .finish()
    }
}

#[cfg(test)]
mod tests;
