//! Tests of `process_context`.

use std::ptr;

use super::{
    proto::{AnyValue, ArrayValue, KeyValue, Resource, any_value::Value},
    *,
};

fn header_bytes(version: u32, size: u32, published_at_ns: u64, ptr: u64) -> [u8; HEADER_SIZE] {
    let mut bytes = [0; HEADER_SIZE];
    bytes[..8].copy_from_slice(SIGNATURE);
    bytes[8..12].copy_from_slice(&version.to_ne_bytes());
    bytes[12..16].copy_from_slice(&size.to_ne_bytes());
    bytes[16..24].copy_from_slice(&published_at_ns.to_ne_bytes());
    bytes[24..32].copy_from_slice(&ptr.to_ne_bytes());
    bytes
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn text(value: &str) -> Value {
    Value::StringValue(value.to_string())
}

fn strings(values: &[&str]) -> Value {
    Value::ArrayValue(ArrayValue {
        values: values
            .iter()
            .map(|value| AnyValue {
                value: Some(text(value)),
            })
            .collect(),
    })
}

fn payload(resource: Vec<KeyValue>, attributes: Vec<KeyValue>) -> Vec<u8> {
    proto::ProcessContext {
        resource: Some(Resource {
            attributes: resource,
            dropped_attributes_count: 0,
        }),
        attributes,
    }
    .encode_to_vec()
}

#[test]
fn good_header() {
    let header = parse_header(&header_bytes(
        2,
        120,
        1_700_000_000_000_000_000,
        0x7f00_1000,
    ))
    .unwrap();
    assert_eq!(
        header,
        Header {
            version: 2,
            payload_size: 120,
            published_at_ns: 1_700_000_000_000_000_000,
            payload_ptr: 0x7f00_1000,
        }
    );
    assert_eq!(parse_header(&header_bytes(1, 0, 1, 0)).unwrap().version, 1);
}

#[test]
fn bad_headers() {
    let mut bytes = header_bytes(2, 120, 1, 0x1000);
    bytes[..8].copy_from_slice(b"OTEL_CTY");
    assert!(matches!(
        parse_header(&bytes),
        Err(ProcessContextError::Signature(found)) if &found == b"OTEL_CTY"
    ));
    assert!(matches!(
        parse_header(&[0; HEADER_SIZE]),
        Err(ProcessContextError::Signature(found)) if found == [0; 8]
    ));
    assert!(matches!(
        parse_header(&header_bytes(3, 120, 1, 0x1000)),
        Err(ProcessContextError::Version(3))
    ));
    assert!(matches!(
        parse_header(&header_bytes(2, 120, 0, 0x1000)),
        Err(ProcessContextError::NotPublished)
    ));
    assert!(matches!(
        parse_header(&header_bytes(2, (1 << 20) + 1, 1, 0x1000)),
        Err(ProcessContextError::PayloadTooLarge(_))
    ));
    assert!(parse_header(&header_bytes(2, 1 << 20, 1, 0x1000)).is_ok());
    assert!(matches!(
        parse_header(&header_bytes(2, 16, 1, 0)),
        Err(ProcessContextError::NullPayload)
    ));
}

#[test]
fn payload_round_trip() {
    let bytes = payload(
        vec![
            kv("service.name", text("checkout")),
            kv("service.instance.id", text("7d0c")),
            kv("process.pid", Value::IntValue(42)),
        ],
        vec![
            kv("threadlocal.schema_version", text("tlsdesc_v1_dev")),
            kv(
                "threadlocal.attribute_key_map",
                strings(&["http.route", "http.method"]),
            ),
        ],
    );
    assert_eq!(
        decode_payload(&bytes).unwrap(),
        ProcessContext {
            service_name: Some("checkout".into()),
            attribute_keys: vec!["http.route".into(), "http.method".into()],
            schema_version: Some("tlsdesc_v1_dev".into()),
        }
    );
}

/// Bytes as a C publisher writes them by hand, without a protobuf library: two entries of
/// `ProcessContext.attributes` (field 2) and no resource.
#[test]
fn hand_encoded_attributes() {
    let mut bytes = Vec::new();
    // KeyValue { key: "threadlocal.schema_version", value: { string_value: "tlsdesc_v1_dev" } }
    bytes.extend_from_slice(b"\x12\x2e\x0a\x1athreadlocal.schema_version");
    bytes.extend_from_slice(b"\x12\x10\x0a\x0etlsdesc_v1_dev");
    // KeyValue { key: "threadlocal.attribute_key_map",
    //            value: { array_value: { values: [{ string_value: "local.root.id" }] } } }
    bytes.extend_from_slice(b"\x12\x34\x0a\x1dthreadlocal.attribute_key_map");
    bytes.extend_from_slice(b"\x12\x13\x2a\x11\x0a\x0f\x0a\x0dlocal.root.id");
    let context = decode_payload(&bytes).unwrap();
    assert_eq!(context.schema_version.as_deref(), Some("tlsdesc_v1_dev"));
    assert_eq!(context.attribute_keys, ["local.root.id"]);
    assert_eq!(context.service_name, None);
}

#[test]
fn threadlocal_keys_fall_back_to_the_resource() {
    let bytes = payload(
        vec![
            kv("threadlocal.schema_version", text("from_resource")),
            kv("threadlocal.attribute_key_map", strings(&["resource.key"])),
        ],
        vec![kv("threadlocal.schema_version", text("from_attributes"))],
    );
    let context = decode_payload(&bytes).unwrap();
    assert_eq!(context.schema_version.as_deref(), Some("from_attributes"));
    assert_eq!(context.attribute_keys, ["resource.key"]);
    assert_eq!(context.service_name, None);
}

#[test]
fn odd_values_keep_their_place() {
    let keys = Value::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(text("a")),
            },
            AnyValue {
                value: Some(Value::IntValue(7)),
            },
            AnyValue { value: None },
            AnyValue {
                value: Some(text("d")),
            },
        ],
    });
    let bytes = payload(
        vec![kv("service.name", Value::BoolValue(true))],
        vec![
            kv("threadlocal.attribute_key_map", keys),
            kv("threadlocal.schema_version", Value::IntValue(1)),
        ],
    );
    let context = decode_payload(&bytes).unwrap();
    assert_eq!(context.attribute_keys, ["a", "", "", "d"]);
    assert_eq!(context.service_name, None);
    assert_eq!(context.schema_version, None);
    // A key map that is not an array yields no keys.
    let bytes = payload(
        vec![],
        vec![kv("threadlocal.attribute_key_map", text("a,b"))],
    );
    assert_eq!(
        decode_payload(&bytes).unwrap().attribute_keys,
        Vec::<String>::new()
    );
}

#[test]
fn an_empty_payload_is_an_empty_context() {
    assert_eq!(decode_payload(&[]).unwrap(), ProcessContext::default());
}

#[test]
fn garbage_payloads_are_errors() {
    // A truncated length-delimited field, and a string that is not UTF-8.
    assert!(matches!(
        decode_payload(&[0x0a, 0x05, 0x0a]),
        Err(ProcessContextError::Decode(_))
    ));
    let not_utf8 = [0x12, 0x04, 0x0a, 0x02, 0xff, 0xfe];
    assert!(matches!(
        decode_payload(&not_utf8),
        Err(ProcessContextError::Decode(_))
    ));
    // Deep nesting stops at prost's recursion limit instead of the stack's end.
    let mut nested = Vec::new();
    for _ in 0..10_000 {
        // AnyValue { array_value: ArrayValue { values: [nested] } }
        let array = [vec![0x0a], encode_len(nested.len()), nested].concat();
        nested = [vec![0x2a], encode_len(array.len()), array].concat();
    }
    let value = [vec![0x12], encode_len(nested.len()), nested].concat();
    let kv = [vec![0x12], encode_len(value.len()), value].concat();
    assert!(decode_payload(&kv).is_err());
    // Random bytes never panic.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..2000 {
        let len = (state % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = decode_payload(&bytes);
    }
}

fn encode_len(len: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    prost::encoding::encode_varint(len as u64, &mut bytes);
    bytes
}

#[test]
fn context_mapping_names() {
    let named = |text: &str| is_context_mapping(&MMapPath::from(text).unwrap());
    assert!(named("[anon:OTEL_CTX]"));
    assert!(named("[anon_shmem:OTEL_CTX]"));
    assert!(named("/memfd:OTEL_CTX (deleted)"));
    assert!(named("/memfd:OTEL_CTX"));
    assert!(!named("/memfd:OTEL_CTX_other (deleted)"));
    assert!(!named("/usr/lib/OTEL_CTX.so"));
    assert!(!named("[anon:other]"));
    assert!(!named(""));
    assert!(!named("[heap]"));
}

/// A context mapping in this very process, the way an SDK publishes one (a memfd mapping
/// that outlives its descriptor). Only this test creates one, so the others cannot
/// disturb it.
struct Published {
    base: *mut u8,
    len: usize,
}

impl Published {
    fn new() -> Published {
        let len = 4096;
        // SAFETY: plain syscalls; the result is checked before use.
        unsafe {
            let fd = libc::memfd_create(c"OTEL_CTX".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
            assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
            let base = libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                fd,
                0,
            );
            assert_ne!(
                base,
                libc::MAP_FAILED,
                "mmap: {}",
                io::Error::last_os_error()
            );
            libc::close(fd);
            Published {
                base: base.cast(),
                len,
            }
        }
    }

    /// Writes the header, the signature last (as publishers do).
    fn header(&self, bytes: &[u8; HEADER_SIZE]) {
        // SAFETY: the mapping is `len` >= 32 bytes, writable, and ours alone.
        unsafe {
            ptr::copy_nonoverlapping(bytes[8..].as_ptr(), self.base.add(8), HEADER_SIZE - 8);
            ptr::copy_nonoverlapping(bytes.as_ptr(), self.base, 8);
        }
    }

    /// Places `payload` right after the header and returns its address.
    fn payload_inside(&self, payload: &[u8]) -> u64 {
        assert!(HEADER_SIZE + payload.len() <= self.len);
        // SAFETY: bounds checked above.
        unsafe {
            let at = self.base.add(HEADER_SIZE);
            ptr::copy_nonoverlapping(payload.as_ptr(), at, payload.len());
            at as u64
        }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[test]
fn reads_the_context_of_this_process() {
    let me = std::process::id();
    let published = Published::new();
    let first = payload(
        vec![kv("service.name", text("profiled-service"))],
        vec![
            kv("threadlocal.schema_version", text("tlsdesc_v1_dev")),
            kv(
                "threadlocal.attribute_key_map",
                strings(&["http.route", "user.id"]),
            ),
        ],
    );
    let at = published.payload_inside(&first);
    published.header(&header_bytes(2, first.len() as u32, 1_000, at));
    let context = read_process_context(me).unwrap().expect("published");
    assert_eq!(context.service_name.as_deref(), Some("profiled-service"));
    assert_eq!(context.attribute_keys, ["http.route", "user.id"]);
    assert_eq!(context.schema_version.as_deref(), Some("tlsdesc_v1_dev"));

    // An update that moves the payload to the heap.
    let second = payload(vec![kv("service.name", text("renamed"))], vec![]);
    published.header(&header_bytes(
        2,
        second.len() as u32,
        2_000,
        second.as_ptr() as u64,
    ));
    let context = read_process_context(me).unwrap().expect("published");
    assert_eq!(context.service_name.as_deref(), Some("renamed"));
    assert_eq!(context.attribute_keys, Vec::<String>::new());

    // An update in progress, for longer than the reader waits.
    published.header(&header_bytes(
        2,
        second.len() as u32,
        0,
        second.as_ptr() as u64,
    ));
    assert!(matches!(
        read_process_context(me),
        Err(ProcessContextError::NotPublished)
    ));

    // A pointer to nowhere, a payload that is not protobuf, a wrong signature.
    published.header(&header_bytes(2, 64, 3_000, 8));
    assert!(matches!(
        read_process_context(me),
        Err(ProcessContextError::Read {
            address: 8,
            len: 64,
            ..
        })
    ));
    let garbage = [0x0a, 0x7f, 0x01];
    published.header(&header_bytes(2, 3, 4_000, garbage.as_ptr() as u64));
    assert!(matches!(
        read_process_context(me),
        Err(ProcessContextError::Decode(_))
    ));
    let mut wrong = header_bytes(2, 3, 5_000, garbage.as_ptr() as u64);
    wrong[..8].copy_from_slice(b"NOT_OTEL");
    published.header(&wrong);
    assert!(matches!(
        read_process_context(me),
        Err(ProcessContextError::Signature(_))
    ));

    drop(published);
    assert!(read_process_context(me).unwrap().is_none());
}

#[test]
fn a_process_without_context_has_none() {
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let result = read_process_context(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(result.unwrap().is_none());
}

#[test]
fn a_missing_process_is_an_error() {
    // PIDs are below 2^22 on Linux.
    assert!(matches!(
        read_process_context(u32::MAX >> 1),
        Err(ProcessContextError::Maps { .. })
    ));
}
