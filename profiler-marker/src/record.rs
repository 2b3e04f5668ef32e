//! The byte record of OTEP 4947 that `otel_thread_ctx_v1` points to: encoding and decoding.
//!
//! Byte-packed, native endian, starting at an address aligned to at least 2 bytes:
//!
//! | offset | field             | |
//! |-------:|-------------------|-|
//! |      0 | `trace_id[16]`    | all zeros: no context |
//! |     16 | `span_id[8]`      | |
//! |     24 | `valid: u8`       | 1 = valid, anything else: ignore the record |
//! |     25 | `trace_flags: u8` | |
//! |     26 | `attrs_data_size: u16` | |
//! |     28 | `attrs_data`      | `key_index: u8, len: u8, utf8[len]`, back to back; the last occurrence of a key wins |
//!
//! A record is at most [`MAX_SIZE`] bytes. [`encode`] rejects a context that does not fit;
//! [`encode_truncated`], which [`crate::attach`] uses, cuts a value longer than 255 bytes at a
//! character boundary and drops the attributes from the first one that would overflow onwards.

#[cfg(feature = "tls")]
use std::ffi::c_void;

use crate::context::{Error, TraceContext};

/// Size of the fixed part, before `attrs_data`.
pub const HEADER_SIZE: usize = 28;
/// Largest record, header included, that readers accept.
pub const MAX_SIZE: usize = 640;
/// Longest attribute value (its length is one byte).
pub const MAX_VALUE_LEN: usize = 255;
/// Offset of `span_id`.
pub const SPAN_ID_OFFSET: usize = 16;
/// Offset of `valid`.
pub const VALID_OFFSET: usize = 24;
/// Offset of `trace_flags`.
pub const TRACE_FLAGS_OFFSET: usize = 25;
/// Offset of `attrs_data_size`.
pub const ATTRS_DATA_SIZE_OFFSET: usize = 26;
/// Offset of `attrs_data`.
pub const ATTRS_DATA_OFFSET: usize = HEADER_SIZE;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Reject,
    Truncate,
}

/// Encodes `ctx`, or fails if its trace ID is zero, a value is longer than 255 bytes or the
/// record would exceed [`MAX_SIZE`].
///
/// ```
/// use profiler_marker::{record, TraceContext};
///
/// let ctx = TraceContext::new([1; 16], [2; 8])?.with_attribute(0, "/x");
/// let bytes = record::encode(&ctx)?;
/// assert_eq!(bytes.len(), record::HEADER_SIZE + 2 + 2);
/// assert_eq!(bytes[record::VALID_OFFSET], 1);
/// assert_eq!(&bytes[record::ATTRS_DATA_OFFSET..], &[0, 2, b'/', b'x']);
/// assert_eq!(record::decode(&bytes), Some(ctx));
/// # Ok::<(), profiler_marker::Error>(())
/// ```
pub fn encode(ctx: &TraceContext) -> Result<Vec<u8>, Error> {
    let mut out = [0; MAX_SIZE];
    let len = encode_into(ctx, &mut out, Overflow::Reject)?;
    Ok(out[..len].to_vec())
}

/// Encodes `ctx`, shortening what does not fit (see the [module docs](self)) instead of failing.
/// A zero trace ID is encoded as it is, and readers ignore such a record.
pub fn encode_truncated(ctx: &TraceContext) -> Vec<u8> {
    let mut out = [0; MAX_SIZE];
    match encode_into(ctx, &mut out, Overflow::Truncate) {
        Ok(len) => out[..len].to_vec(),
        // Truncation has no failure case; keep the header alone if that ever changes.
        Err(_) => out[..HEADER_SIZE].to_vec(),
    }
}

fn encode_into(
    ctx: &TraceContext,
    out: &mut [u8; MAX_SIZE],
    overflow: Overflow,
) -> Result<usize, Error> {
    if overflow == Overflow::Reject {
        validate(ctx)?;
    }
    out[..SPAN_ID_OFFSET].copy_from_slice(&ctx.trace_id);
    out[SPAN_ID_OFFSET..VALID_OFFSET].copy_from_slice(&ctx.span_id);
    out[VALID_OFFSET] = 1;
    out[TRACE_FLAGS_OFFSET] = ctx.trace_flags;
    let mut len = HEADER_SIZE;
    for (key, value) in &ctx.attributes {
        let value = &value.as_bytes()[..floor_char_boundary(value, MAX_VALUE_LEN)];
        let end = len + 2 + value.len();
        if end > MAX_SIZE {
            break;
        }
        out[len] = *key;
        // At most 255 by `floor_char_boundary`.
        out[len + 1] = value.len() as u8;
        out[len + 2..end].copy_from_slice(value);
        len = end;
    }
    // At most MAX_SIZE - HEADER_SIZE, which fits a u16.
    let attrs_data_size = (len - HEADER_SIZE) as u16;
    out[ATTRS_DATA_SIZE_OFFSET..HEADER_SIZE].copy_from_slice(&attrs_data_size.to_ne_bytes());
    Ok(len)
}

fn validate(ctx: &TraceContext) -> Result<(), Error> {
    if !ctx.is_valid() {
        return Err(Error::ZeroTraceId);
    }
    let mut size = HEADER_SIZE;
    for (key, value) in &ctx.attributes {
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::AttributeTooLong {
                key: *key,
                len: value.len(),
            });
        }
        size += 2 + value.len();
    }
    if size > MAX_SIZE {
        return Err(Error::RecordTooLarge {
            size,
            max: MAX_SIZE,
        });
    }
    Ok(())
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn floor_char_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    // Some index in max-3..=max is a boundary: a UTF-8 character is at most 4 bytes.
    (0..=max)
        .rev()
        .find(|&index| text.is_char_boundary(index))
        .unwrap_or(0)
}

/// Decodes a record as a reader does: `None` if it is shorter than its header says, not
/// marked valid, or has an all-zero trace ID. An attribute cut short at the end is ignored and
/// invalid UTF-8 is replaced (U+FFFD).
pub fn decode(bytes: &[u8]) -> Option<TraceContext> {
    let header = bytes.get(..HEADER_SIZE)?;
    if header[VALID_OFFSET] != 1 {
        return None;
    }
    let mut ctx = TraceContext {
        trace_id: header[..SPAN_ID_OFFSET].try_into().ok()?,
        span_id: header[SPAN_ID_OFFSET..VALID_OFFSET].try_into().ok()?,
        trace_flags: header[TRACE_FLAGS_OFFSET],
        attributes: Vec::new(),
    };
    if !ctx.is_valid() {
        return None;
    }
    let size = u16::from_ne_bytes([
        header[ATTRS_DATA_SIZE_OFFSET],
        header[ATTRS_DATA_SIZE_OFFSET + 1],
    ]);
    let mut data = bytes.get(HEADER_SIZE..HEADER_SIZE + usize::from(size))?;
    while let [key, len, rest @ ..] = data {
        let Some(value) = rest.get(..usize::from(*len)) else {
            break;
        };
        ctx.attributes
            .push((*key, String::from_utf8_lossy(value).into_owned()));
        data = &rest[value.len()..];
    }
    Some(ctx)
}

/// The `attrs_data_size` a record declares, if `header` holds at least the fixed part.
#[cfg(feature = "tls")]
pub(crate) fn declared_size(header: &[u8]) -> Option<usize> {
    let size = header.get(ATTRS_DATA_SIZE_OFFSET..HEADER_SIZE)?;
    Some(HEADER_SIZE + usize::from(u16::from_ne_bytes([size[0], size[1]])))
}

/// An encoded record in heap memory that does not move, aligned to 8 bytes (readers ask for 2),
/// so that its address can be published.
#[cfg(feature = "tls")]
pub(crate) struct RecordBuf {
    words: Box<[u64]>,
    len: usize,
}

#[cfg(feature = "tls")]
impl RecordBuf {
    /// The record of `ctx` (truncated to fit), or `None` for an invalid context.
    pub(crate) fn new(ctx: &TraceContext) -> Option<Self> {
        ctx.is_valid()
            .then(|| Self::from_bytes(&encode_truncated(ctx)))
    }

    /// The record of `ctx`, or the reason it cannot be encoded unchanged.
    pub(crate) fn try_new(ctx: &TraceContext) -> Result<Self, Error> {
        encode(ctx).map(|bytes| Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let words = bytes
            .chunks(8)
            .map(|chunk| {
                let mut word = [0; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                u64::from_ne_bytes(word)
            })
            .collect();
        Self {
            words,
            len: bytes.len(),
        }
    }

    /// The address readers get. Nobody writes through it.
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.words.as_ptr().cast_mut().cast()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialized bytes (`from_bytes`), any byte is a
        // valid u8, and the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TraceContext {
        TraceContext {
            trace_id: *b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10",
            span_id: *b"\xa1\xa2\xa3\xa4\xa5\xa6\xa7\xa8",
            trace_flags: 1,
            attributes: vec![(0, "/checkout".into()), (3, "42".into())],
        }
    }

    #[test]
    fn exact_bytes() {
        let bytes = encode(&ctx()).unwrap();
        let mut expected = Vec::new();
        expected.extend(1..=16u8);
        expected.extend(0xa1..=0xa8u8);
        expected.extend([1, 1]);
        expected.extend(15u16.to_ne_bytes());
        expected.extend([0, 9]);
        expected.extend(b"/checkout");
        expected.extend([3, 2]);
        expected.extend(b"42");
        assert_eq!(bytes, expected);
        assert_eq!(bytes.len(), 43);
    }

    #[test]
    fn decode_round_trip() {
        let bytes = encode(&ctx()).unwrap();
        assert_eq!(decode(&bytes), Some(ctx()));
        #[cfg(feature = "tls")]
        assert_eq!(declared_size(&bytes), Some(bytes.len()));
    }

    #[test]
    fn decode_rejects_what_readers_ignore() {
        let bytes = encode(&ctx()).unwrap();
        let mut invalid = bytes.clone();
        invalid[VALID_OFFSET] = 2;
        assert_eq!(decode(&invalid), None);
        let mut zero = bytes.clone();
        zero[..16].fill(0);
        assert_eq!(decode(&zero), None);
        assert_eq!(decode(&bytes[..HEADER_SIZE - 1]), None);
        // Shorter than attrs_data_size says.
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn decode_skips_a_cut_attribute_and_bad_utf8() {
        let mut bytes = encode(&TraceContext::new([1; 16], [2; 8]).unwrap()).unwrap();
        bytes.extend([5, 2, 0xff, b'a', 6, 9, b'x']);
        bytes[ATTRS_DATA_SIZE_OFFSET..HEADER_SIZE].copy_from_slice(&7u16.to_ne_bytes());
        let ctx = decode(&bytes).unwrap();
        assert_eq!(ctx.attributes, vec![(5, "\u{fffd}a".to_owned())]);
    }

    #[test]
    fn empty_attributes() {
        let bytes = encode(&TraceContext::new([1; 16], [2; 8]).unwrap()).unwrap();
        assert_eq!(bytes.len(), HEADER_SIZE);
        assert_eq!(&bytes[ATTRS_DATA_SIZE_OFFSET..], &[0, 0]);
    }

    #[test]
    fn strict_encoding_rejects() {
        let zero = TraceContext::default();
        assert_eq!(encode(&zero), Err(Error::ZeroTraceId));

        let long = ctx().with_attribute(7, "x".repeat(256));
        assert_eq!(
            encode(&long),
            Err(Error::AttributeTooLong { key: 7, len: 256 })
        );

        // 3 values of 255 bytes: 28 + 3 * 257 = 799 bytes.
        let mut big = TraceContext::new([1; 16], [2; 8]).unwrap();
        for key in 0..3 {
            big = big.with_attribute(key, "y".repeat(255));
        }
        assert_eq!(
            encode(&big),
            Err(Error::RecordTooLarge {
                size: 799,
                max: MAX_SIZE
            })
        );
    }

    #[test]
    fn truncation_cuts_values_and_drops_the_overflow() {
        // 'é' is two bytes: 200 of them are 400 bytes, cut to 127 characters (254 bytes).
        let mut big = TraceContext::new([1; 16], [2; 8])
            .unwrap()
            .with_attribute(0, "é".repeat(200))
            .with_attribute(1, "z".repeat(255))
            .with_attribute(2, "w".repeat(100));
        let bytes = encode_truncated(&big);
        // 28 + (2 + 254) + (2 + 255) = 541; the third (2 + 100) would make 643.
        assert_eq!(bytes.len(), 541);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.attribute(0), Some("é".repeat(127).as_str()));
        assert_eq!(decoded.attribute(1).map(str::len), Some(255));
        assert_eq!(decoded.attribute(2), None);

        big.attributes.truncate(1);
        assert!(encode(&big).is_err());
        assert_eq!(encode_truncated(&big).len(), HEADER_SIZE + 256);
    }

    #[test]
    fn exactly_max_size_fits() {
        // 28 + 2 * (2 + 255) + (2 + 96) = 640.
        let ctx = TraceContext::new([1; 16], [2; 8])
            .unwrap()
            .with_attribute(0, "a".repeat(255))
            .with_attribute(1, "b".repeat(255))
            .with_attribute(2, "c".repeat(96));
        assert_eq!(encode(&ctx).unwrap().len(), MAX_SIZE);
        assert_eq!(encode_truncated(&ctx).len(), MAX_SIZE);
    }

    #[test]
    #[cfg(feature = "tls")]
    fn record_buf_is_aligned_and_matches() {
        let buf = RecordBuf::try_new(&ctx()).unwrap();
        assert_eq!(buf.as_ptr() as usize % 8, 0);
        assert_eq!(buf.bytes(), encode(&ctx()).unwrap());
        assert!(RecordBuf::new(&TraceContext::default()).is_none());
    }
}
