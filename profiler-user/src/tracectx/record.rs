//! Decoding what the BPF program copied out of a thread's OTEP 4947 record into labels.

use std::fmt::Write as _;

use profiler_common::TraceContext;

/// Lowercase hex of `bytes`, as trace and span IDs are written everywhere.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The attributes of a record's `attrs_data`: `key_index u8 | len u8 | utf8[len]` entries.
/// The last occurrence of a key wins; parsing stops at an entry that does not fit. Values are
/// decoded lossily: garbage in a target's memory must not stop the profiler.
pub fn attributes(data: &[u8]) -> Vec<(u8, String)> {
    let mut found: Vec<(u8, String)> = Vec::new();
    let mut rest = data;
    while let [key, len, tail @ ..] = rest {
        let len = usize::from(*len);
        if tail.len() < len {
            break;
        }
        let value = String::from_utf8_lossy(&tail[..len]).into_owned();
        match found.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => found.push((*key, value)),
        }
        rest = &tail[len..];
    }
    found
}

/// The attribute bytes the BPF program kept for a context.
pub fn attribute_bytes(context: &TraceContext) -> &[u8] {
    let len = usize::from(context.attrs_len).min(context.attrs.len());
    &context.attrs[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
    }

    #[test]
    fn last_occurrence_wins_and_truncated_entries_stop_parsing() {
        let data = [
            0, 3, b'a', b'b', b'c', 1, 1, b'x', 0, 2, b'z', b'z', 2, 9, b'q',
        ];
        assert_eq!(
            attributes(&data),
            vec![(0, "zz".to_owned()), (1, "x".to_owned())]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(
            attributes(&[4, 2, 0xff, b'a']),
            vec![(4, "\u{fffd}a".to_owned())]
        );
        assert!(attributes(&[]).is_empty());
        assert!(attributes(&[7]).is_empty());
    }

    #[test]
    fn attribute_bytes_respect_the_kept_length() {
        let mut context = TraceContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            valid: 1,
            trace_flags: 0,
            attrs_len: 3,
            _pad: [0; 4],
            attrs: [9; profiler_common::MAX_ATTR_BYTES],
        };
        assert_eq!(attribute_bytes(&context), &[9, 9, 9]);
        context.attrs_len = u16::MAX;
        assert_eq!(
            attribute_bytes(&context).len(),
            profiler_common::MAX_ATTR_BYTES
        );
    }
}
