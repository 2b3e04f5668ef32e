//! The 32-byte header at the start of the process context mapping (native endian):
//!
//! | offset | field | |
//! |-------:|-------|-|
//! |      0 | signature `"OTEL_CTX"` | written last: without it the mapping is not ready |
//! |      8 | `version: u32` | 2 |
//! |     12 | `payload_size: u32` | bytes of protobuf at `payload_ptr` |
//! |     16 | `published_at_ns: u64` | ns since the Unix epoch; 0 while an update is in progress |
//! |     24 | `payload_ptr: u64` | address of the payload in the publishing process |

/// The first 8 bytes of a published mapping.
pub const SIGNATURE: [u8; 8] = *b"OTEL_CTX";
/// The header version this crate writes and reads.
pub const VERSION: u32 = 2;
/// Size of the header.
pub const HEADER_SIZE: usize = 32;
/// Offset of `version`.
pub const VERSION_OFFSET: usize = 8;
/// Offset of `payload_size`.
pub const PAYLOAD_SIZE_OFFSET: usize = 12;
/// Offset of `published_at_ns`.
pub const PUBLISHED_AT_OFFSET: usize = 16;
/// Offset of `payload_ptr`.
pub const PAYLOAD_PTR_OFFSET: usize = 24;

/// Why a header cannot be used (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("header is {0} bytes, expected {HEADER_SIZE}")]
    TooShort(usize),
    /// No `OTEL_CTX` signature: not a process context, or not published yet.
    #[error("no OTEL_CTX signature")]
    NoSignature,
    /// A version this crate does not read.
    #[error("unsupported process context version {0}")]
    UnsupportedVersion(u32),
    /// `published_at_ns` is 0: the publisher is updating the payload; read again later.
    #[error("process context update in progress")]
    UpdateInProgress,
}

/// The fields of a published header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Header version, [`VERSION`].
    pub version: u32,
    /// Size of the payload in bytes.
    pub payload_size: u32,
    /// When the payload was published, ns since the Unix epoch; never 0 once published.
    pub published_at_ns: u64,
    /// Address of the payload in the publishing process.
    pub payload_ptr: u64,
}

impl Header {
    /// The header's bytes, signature included.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0; HEADER_SIZE];
        out[..VERSION_OFFSET].copy_from_slice(&SIGNATURE);
        out[VERSION_OFFSET..PAYLOAD_SIZE_OFFSET].copy_from_slice(&self.version.to_ne_bytes());
        out[PAYLOAD_SIZE_OFFSET..PUBLISHED_AT_OFFSET]
            .copy_from_slice(&self.payload_size.to_ne_bytes());
        out[PUBLISHED_AT_OFFSET..PAYLOAD_PTR_OFFSET]
            .copy_from_slice(&self.published_at_ns.to_ne_bytes());
        out[PAYLOAD_PTR_OFFSET..].copy_from_slice(&self.payload_ptr.to_ne_bytes());
        out
    }

    /// Parses a header read from a mapping (of this or another process, of the same
    /// architecture). A reader reads the header, then the payload, then the header again, and
    /// uses the payload only if `published_at_ns` did not change.
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let bytes: &[u8; HEADER_SIZE] = bytes
            .get(..HEADER_SIZE)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(HeaderError::TooShort(bytes.len()))?;
        if bytes[..VERSION_OFFSET] != SIGNATURE {
            return Err(HeaderError::NoSignature);
        }
        let header = Self {
            version: u32::from_ne_bytes(field(bytes, VERSION_OFFSET)),
            payload_size: u32::from_ne_bytes(field(bytes, PAYLOAD_SIZE_OFFSET)),
            published_at_ns: u64::from_ne_bytes(field(bytes, PUBLISHED_AT_OFFSET)),
            payload_ptr: u64::from_ne_bytes(field(bytes, PAYLOAD_PTR_OFFSET)),
        };
        if header.version != VERSION {
            return Err(HeaderError::UnsupportedVersion(header.version));
        }
        if header.published_at_ns == 0 {
            return Err(HeaderError::UpdateInProgress);
        }
        Ok(header)
    }
}

/// `N` bytes of the header from `offset` (all offsets are constants within the header).
fn field<const N: usize>(header: &[u8; HEADER_SIZE], offset: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&header[offset..offset + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: VERSION,
            payload_size: 0x0102,
            published_at_ns: 0x1122_3344_5566_7788,
            payload_ptr: 0x7f00_dead_beef,
        }
    }

    #[test]
    fn bytes_layout() {
        let bytes = header().to_bytes();
        assert_eq!(&bytes[..8], b"OTEL_CTX");
        assert_eq!(bytes[8..12], 2u32.to_ne_bytes());
        assert_eq!(bytes[12..16], 0x0102u32.to_ne_bytes());
        assert_eq!(bytes[16..24], 0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(bytes[24..32], 0x7f00_dead_beefu64.to_ne_bytes());
        assert_eq!(Header::parse(&bytes), Ok(header()));
    }

    #[test]
    fn parse_errors() {
        let bytes = header().to_bytes();
        assert_eq!(Header::parse(&bytes[..31]), Err(HeaderError::TooShort(31)));
        let mut unsigned = bytes;
        unsigned[..8].fill(0);
        assert_eq!(Header::parse(&unsigned), Err(HeaderError::NoSignature));
        let mut v3 = bytes;
        v3[8..12].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(Header::parse(&v3), Err(HeaderError::UnsupportedVersion(3)));
        let updating = Header {
            published_at_ns: 0,
            ..header()
        };
        assert_eq!(
            Header::parse(&updating.to_bytes()),
            Err(HeaderError::UpdateInProgress)
        );
    }
}
