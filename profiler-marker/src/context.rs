//! The trace context a thread publishes, and its hex forms.

use std::fmt::Write as _;

/// Errors of building or encoding a [`TraceContext`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A hex ID has the wrong number of characters.
    #[error("{field} must be {expected} hex digits, got {len} characters")]
    HexLength {
        /// `trace_id` or `span_id`.
        field: &'static str,
        /// Digits required: 32 for a trace ID, 16 for a span ID.
        expected: usize,
        /// Characters given.
        len: usize,
    },
    /// A hex ID has a character that is not a hex digit.
    #[error("{field} has {character:?} at position {position}, not a hex digit")]
    HexDigit {
        /// `trace_id` or `span_id`.
        field: &'static str,
        /// The offending character.
        character: char,
        /// Its character position in the string.
        position: usize,
    },
    /// The trace ID is all zeros, which OpenTelemetry and the record treat as "no context".
    #[error("trace id is all zeros")]
    ZeroTraceId,
    /// An attribute value does not fit the record's one-byte length.
    #[error("attribute {key} is {len} bytes long, more than 255")]
    AttributeTooLong {
        /// Key index of the attribute.
        key: u8,
        /// Its length in bytes.
        len: usize,
    },
    /// The attributes make the record longer than readers accept.
    #[error("record would be {size} bytes, more than {max}")]
    RecordTooLarge {
        /// Size the record would have, header included.
        size: usize,
        /// [`crate::record::MAX_SIZE`].
        max: usize,
    },
}

/// An OpenTelemetry trace context as the thread-local record carries it.
///
/// `attributes` are `(key index, value)` pairs. The key index points into the attribute key map
/// the process publishes ([`crate::process_context`]); the last occurrence of an index wins.
///
/// ```
/// use profiler_marker::TraceContext;
///
/// let ctx = TraceContext::from_hex("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")?
///     .with_attribute(0, "/checkout");
/// assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(ctx.attribute(0), Some("/checkout"));
/// # Ok::<(), profiler_marker::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// W3C trace ID, in the byte order of its hex form. All zeros means no context.
    pub trace_id: [u8; 16],
    /// W3C span ID, in the byte order of its hex form.
    pub span_id: [u8; 8],
    /// W3C trace flags (bit 0: sampled).
    pub trace_flags: u8,
    /// `(key index, UTF-8 value)` pairs, at most 255 bytes per value.
    pub attributes: Vec<(u8, String)>,
}

impl TraceContext {
    /// The W3C "sampled" trace flag, which [`TraceContext::new`] and
    /// [`TraceContext::from_hex`] set.
    pub const SAMPLED: u8 = 0x01;

    /// A context with the given IDs, the sampled flag and no attributes.
    ///
    /// Fails with [`Error::ZeroTraceId`] for an all-zero trace ID.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8]) -> Result<Self, Error> {
        let ctx = Self {
            trace_id,
            span_id,
            trace_flags: Self::SAMPLED,
            attributes: Vec::new(),
        };
        if !ctx.is_valid() {
            return Err(Error::ZeroTraceId);
        }
        Ok(ctx)
    }

    /// Parses the W3C hex forms: 32 hex digits of trace ID and 16 of span ID (either case).
    ///
    /// ```
    /// use profiler_marker::{Error, TraceContext};
    ///
    /// assert!(TraceContext::from_hex("00000000000000000000000000000001", "0000000000000001").is_ok());
    /// assert_eq!(
    ///     TraceContext::from_hex("00000000000000000000000000000000", "0000000000000001"),
    ///     Err(Error::ZeroTraceId)
    /// );
    /// assert!(matches!(TraceContext::from_hex("xyz", "0000000000000001"), Err(Error::HexLength { .. })));
    /// ```
    pub fn from_hex(trace_id: &str, span_id: &str) -> Result<Self, Error> {
        Self::new(
            parse_hex("trace_id", trace_id)?,
            parse_hex("span_id", span_id)?,
        )
    }

    /// Replaces the trace flags.
    #[must_use]
    pub fn with_trace_flags(mut self, trace_flags: u8) -> Self {
        self.trace_flags = trace_flags;
        self
    }

    /// Appends an attribute: `key` is the index of its name in the published attribute key map.
    #[must_use]
    pub fn with_attribute(mut self, key: u8, value: impl Into<String>) -> Self {
        self.attributes.push((key, value.into()));
        self
    }

    /// Whether readers take this context: the trace ID is not all zeros.
    pub fn is_valid(&self) -> bool {
        self.trace_id != [0; 16]
    }

    /// The trace ID as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span ID as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }

    /// The value of attribute `key`: its last occurrence, as readers see it.
    pub fn attribute(&self, key: u8) -> Option<&str> {
        self.attributes
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, value)| value.as_str())
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn parse_hex<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], Error> {
    let length_error = || Error::HexLength {
        field,
        expected: N * 2,
        len: text.chars().count(),
    };
    if text.len() != N * 2 {
        return Err(length_error());
    }
    let mut out = [0u8; N];
    let mut digits = text.chars().enumerate().map(|(position, character)| {
        character
            .to_digit(16)
            .map(|digit| digit as u8)
            .ok_or(Error::HexDigit {
                field,
                character,
                position,
            })
    });
    for byte in &mut out {
        // The byte length is right, so a missing digit means multi-byte characters: too short.
        let high = digits.next().ok_or_else(length_error)??;
        let low = digits.next().ok_or_else(length_error)??;
        *byte = (high << 4) | low;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn hex_round_trip() {
        let ctx = TraceContext::from_hex(TRACE, SPAN).unwrap();
        assert_eq!(ctx.trace_id[0], 0x4b);
        assert_eq!(ctx.trace_id[15], 0x36);
        assert_eq!(
            ctx.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(ctx.trace_id_hex(), TRACE);
        assert_eq!(ctx.span_id_hex(), SPAN);
        assert_eq!(ctx.trace_flags, TraceContext::SAMPLED);
    }

    #[test]
    fn hex_accepts_uppercase() {
        let ctx = TraceContext::from_hex(&TRACE.to_uppercase(), &SPAN.to_uppercase()).unwrap();
        assert_eq!(ctx.trace_id_hex(), TRACE);
    }

    #[test]
    fn hex_errors() {
        assert_eq!(
            TraceContext::from_hex("abc", SPAN),
            Err(Error::HexLength {
                field: "trace_id",
                expected: 32,
                len: 3
            })
        );
        assert_eq!(
            TraceContext::from_hex(TRACE, "00f067aa0ba902b"),
            Err(Error::HexLength {
                field: "span_id",
                expected: 16,
                len: 15
            })
        );
        assert_eq!(
            TraceContext::from_hex(TRACE, "00f067aa0ba902bz"),
            Err(Error::HexDigit {
                field: "span_id",
                character: 'z',
                position: 15
            })
        );
        // 32 bytes but 31 characters: the two-byte 'é' must not be read as two digits.
        let accented = format!("é{}", &TRACE[2..]);
        assert_eq!(accented.len(), 32);
        assert_eq!(
            TraceContext::from_hex(&accented, SPAN),
            Err(Error::HexDigit {
                field: "trace_id",
                character: 'é',
                position: 0
            })
        );
        assert_eq!(
            TraceContext::from_hex(&"0".repeat(32), SPAN),
            Err(Error::ZeroTraceId)
        );
        // A sign is not a digit even though integer parsing would take it.
        assert!(TraceContext::from_hex(&format!("+{}", &TRACE[1..]), SPAN).is_err());
    }

    #[test]
    fn last_attribute_wins() {
        let ctx = TraceContext::from_hex(TRACE, SPAN)
            .unwrap()
            .with_attribute(0, "a")
            .with_attribute(1, "b")
            .with_attribute(0, "c");
        assert_eq!(ctx.attribute(0), Some("c"));
        assert_eq!(ctx.attribute(1), Some("b"));
        assert_eq!(ctx.attribute(2), None);
    }
}
