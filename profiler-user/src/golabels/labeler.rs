//! A goroutine's label set, as the BPF program read it, becomes a sample's trace labels:
//! `trace_id` and `span_id` exactly as the thread-context path writes them (lowercase hex), the
//! other labels as attributes, sorted by key (a Go map has no order).

use profiler_common::{GO_MAX_KEY, GO_MAX_LABELS, GO_MAX_VALUE, GoLabels};

use crate::tracectx::TraceLabels;

/// The label keys that carry the IDs, as the OpenTelemetry Go profiling bridges set them.
const TRACE_ID: &str = "trace_id";
const SPAN_ID: &str = "span_id";

/// The labels of a sample taken under `labels`; `None` without a `trace_id` label of 32 hex
/// digits (not all zero): the per-trace files are named by it, so nothing else may take its
/// place. A missing or malformed `span_id` is written as zeros. A string the kernel kept by
/// address is read by `literal` (address, length); a pair whose string cannot be read is left
/// out.
pub fn go_trace_labels(
    labels: &GoLabels,
    mut literal: impl FnMut(u64, usize) -> Option<Vec<u8>>,
) -> Option<TraceLabels> {
    let count = usize::from(labels.count).min(GO_MAX_LABELS);
    let mut string = |slot: usize, value: bool| {
        let bytes = match labels.literal(slot, value) {
            Some(address) => {
                let (len, max) = if value {
                    (labels.value_lens[slot], GO_MAX_VALUE)
                } else {
                    (labels.key_lens[slot], GO_MAX_KEY)
                };
                literal(address, usize::from(len).min(max))?
            }
            None if value => labels.value(slot).to_vec(),
            None => labels.key(slot).to_vec(),
        };
        Some(String::from_utf8_lossy(&bytes).into_owned())
    };
    let pairs: Vec<(String, String)> = (0..count)
        .filter(|i| labels.present & (1 << i) != 0)
        .filter_map(|i| Some((string(i, false)?, string(i, true)?)))
        .collect();
    let find = |name: &str| pairs.iter().find(|(key, _)| key == name).map(|(_, v)| v);
    let trace_id = find(TRACE_ID).and_then(|id| hex_id(id, 32))?;
    let span_id = find(SPAN_ID)
        .and_then(|id| hex_id(id, 16))
        .unwrap_or_else(|| "0".repeat(16));
    let mut attributes: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(key, _)| key != TRACE_ID && key != SPAN_ID)
        .collect();
    attributes.sort();
    Some(TraceLabels {
        trace_id,
        span_id,
        service_name: None,
        attributes,
    })
}

/// `text` in lowercase when it is `len` hex digits, not all zero (W3C's invalid ID).
fn hex_id(text: &str, len: usize) -> Option<String> {
    let valid = text.len() == len
        && text.bytes().all(|b| b.is_ascii_hexdigit())
        && text.bytes().any(|b| b != b'0');
    valid.then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> GoLabels {
        let mut labels = GoLabels {
            count: pairs.len() as u8,
            cut: 0,
            present: (1u16 << pairs.len()).wrapping_sub(1) as u8,
            keys_at_end: 0,
            values_at_end: 0,
            keys_literal: 0,
            values_literal: 0,
            _pad: 0,
            key_lens: [0; GO_MAX_LABELS],
            value_lens: [0; GO_MAX_LABELS],
            keys: [[0xee; GO_MAX_KEY]; GO_MAX_LABELS],
            values: [[0xee; GO_MAX_VALUE]; GO_MAX_LABELS],
        };
        for (i, (key, value)) in pairs.iter().enumerate() {
            labels.key_lens[i] = key.len() as u8;
            labels.value_lens[i] = value.len() as u8;
            labels.keys[i][..key.len()].copy_from_slice(key.as_bytes());
            labels.values[i][..value.len()].copy_from_slice(value.as_bytes());
        }
        labels
    }

    fn no_literals(_: u64, _: usize) -> Option<Vec<u8>> {
        panic!("no string was kept by address")
    }

    #[test]
    fn ids_as_the_thread_context_path_writes_them_and_the_rest_sorted() {
        let got = go_trace_labels(
            &labels(&[
                ("http.route", "/checkout"),
                ("trace_id", "4BF92F3577B34DA6A3CE929D0E0E4736"),
                ("span_id", "00f067aa0ba902b7"),
                ("a", "1"),
            ]),
            no_literals,
        )
        .unwrap();
        assert_eq!(got.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(got.span_id, "00f067aa0ba902b7");
        assert_eq!(
            got.attributes,
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("http.route".to_owned(), "/checkout".to_owned())
            ]
        );
    }

    #[test]
    fn no_trace_without_a_valid_trace_id() {
        assert_eq!(
            go_trace_labels(&labels(&[("span_id", "00f067aa0ba902b7")]), no_literals),
            None
        );
        assert_eq!(
            go_trace_labels(&labels(&[("trace_id", "abc")]), no_literals),
            None
        );
        assert_eq!(
            go_trace_labels(&labels(&[("trace_id", &"0".repeat(32))]), no_literals),
            None
        );
        assert_eq!(
            go_trace_labels(&labels(&[("trace_id", &"g".repeat(32))]), no_literals),
            None
        );
        let no_span =
            go_trace_labels(&labels(&[("trace_id", &"a".repeat(32))]), no_literals).unwrap();
        assert_eq!(no_span.span_id, "0".repeat(16));
    }

    #[test]
    fn empty_slots_of_a_map_bucket_are_skipped() {
        let mut bucket = labels(&[("x", "stale"), ("trace_id", &"b".repeat(32))]);
        bucket.present = 0b10;
        let got = go_trace_labels(&bucket, no_literals).unwrap();
        assert_eq!(got.trace_id, "b".repeat(32));
        assert!(got.attributes.is_empty(), "{:?}", got.attributes);
    }

    #[test]
    fn strings_read_as_the_window_ending_at_their_end() {
        let mut labels = labels(&[
            ("trace_id", &"c".repeat(32)),
            ("span_id", "00f067aa0ba902b7"),
        ]);
        // Slot 0's key and slot 1's value were read as windows ending where the strings end.
        let key = b"trace_id";
        labels.keys[0] = [0xee; GO_MAX_KEY];
        labels.keys[0][GO_MAX_KEY - key.len()..].copy_from_slice(key);
        labels.keys_at_end = 0b01;
        let span = b"11f067aa0ba902b7";
        labels.values[1] = [0xee; GO_MAX_VALUE];
        labels.values[1][GO_MAX_VALUE - span.len()..].copy_from_slice(span);
        labels.values_at_end = 0b10;
        let got = go_trace_labels(&labels, no_literals).unwrap();
        assert_eq!(got.trace_id, "c".repeat(32));
        assert_eq!(got.span_id, "11f067aa0ba902b7");
    }

    /// The kernel kept slot 0's value and slot 1's key by address: read through `literal`,
    /// and a pair whose string cannot be read is left out.
    #[test]
    fn strings_kept_by_address_are_read_from_the_executable() {
        let mut labels = labels(&[
            ("trace_id", "unread"),
            ("span", "00f067aa0ba902b7"),
            ("http.route", "unread"),
        ]);
        labels.values[0][..8].copy_from_slice(&0x4a_0010u64.to_le_bytes());
        labels.value_lens[0] = 32;
        labels.keys[1][..8].copy_from_slice(&0x4a_0100u64.to_le_bytes());
        labels.key_lens[1] = 7;
        labels.values[2][..8].copy_from_slice(&0x4a_0200u64.to_le_bytes());
        labels.values_literal = 0b101;
        labels.keys_literal = 0b010;
        let mut asked = Vec::new();
        let got = go_trace_labels(&labels, |address, len| {
            asked.push((address, len));
            match address {
                0x4a_0010 => Some(b"4bf92f3577b34da6a3ce929d0e0e4736".to_vec()),
                0x4a_0100 => Some(b"span_id".to_vec()),
                _ => None,
            }
        })
        .unwrap();
        assert_eq!(asked, [(0x4a_0010, 32), (0x4a_0100, 7), (0x4a_0200, 6)]);
        assert_eq!(got.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(got.span_id, "00f067aa0ba902b7");
        assert!(got.attributes.is_empty(), "{:?}", got.attributes);
    }

    #[test]
    fn lengths_past_the_buffers_are_bounded() {
        let mut bad = labels(&[("trace_id", &"a".repeat(32))]);
        bad.count = 200;
        bad.present = 0xff;
        bad.key_lens = [255; GO_MAX_LABELS];
        bad.value_lens = [255; GO_MAX_LABELS];
        // Keys are garbage now: no trace, and no panic.
        assert_eq!(go_trace_labels(&bad, no_literals), None);
    }
}
