//! Publishes in this process and reads the mapping back the way the profiler does: find it in
//! /proc/self/maps, parse the header, decode the payload.

use std::sync::{Mutex, MutexGuard};

use prost::Message as _;

use super::{proto::ProcessContext, *};

/// One process context per process: tests that publish take turns.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn info() -> ProcessContextInfo {
    ProcessContextInfo::new("marker-test")
        .with_attribute_keys(["http.route", "user.id"])
        .with_resource_attribute("service.version", "1.2.3")
        .with_resource_attribute("service.name", "ignored")
}

/// Reads our own mapping: the header, then the payload it points to.
fn read_back(address: usize) -> (Header, [u8; HEADER_SIZE], ProcessContext) {
    // SAFETY: the handle of the caller keeps the mapping alive; nothing writes it meanwhile.
    let raw: [u8; HEADER_SIZE] =
        unsafe { std::slice::from_raw_parts(address as *const u8, HEADER_SIZE) }
            .try_into()
            .unwrap();
    let header = Header::parse(&raw).unwrap();
    // SAFETY: as above; the header says where the payload is and how long.
    let payload = unsafe {
        std::slice::from_raw_parts(
            header.payload_ptr as *const u8,
            header.payload_size as usize,
        )
    };
    (header, raw, ProcessContext::decode(payload).unwrap())
}

/// The /proc/self/maps line of the mapping that starts at `address`.
fn maps_line(address: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let start = format!("{address:x}-");
    maps.lines()
        .find(|line| line.starts_with(&start))
        .map(str::to_owned)
}

fn vm_flags(address: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let start = format!("{address:x}-");
    let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&start));
    lines
        .find_map(|line| line.strip_prefix("VmFlags:"))
        .unwrap()
        .to_owned()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn publish_writes_header_and_payload() {
    let _serial = serial();
    let before = now_ns();
    let handle = publish(&info()).unwrap();
    let (header, raw, payload) = read_back(handle.address());

    assert_eq!(&raw[..8], b"OTEL_CTX");
    assert_eq!(raw[8..12], 2u32.to_ne_bytes());
    assert_eq!(header.version, 2);
    assert_eq!(header.payload_ptr, (handle.address() + HEADER_SIZE) as u64);
    assert_eq!(
        header.payload_size as usize,
        info().payload().encode_to_vec().len()
    );
    assert!(header.published_at_ns >= before && header.published_at_ns <= now_ns());
    assert_eq!(handle.mapping_len() % 4096, 0);

    assert_eq!(payload, info().payload());
    assert_eq!(payload.service_name(), Some("marker-test"));
    assert_eq!(payload.schema_version(), Some("tls_v1"));
    assert_eq!(
        payload.attribute_key_map(),
        Some(vec!["http.route", "user.id"])
    );
    let resource = payload.resource.unwrap();
    let keys: Vec<_> = resource
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    assert_eq!(keys, ["service.name", "service.version"]);

    // Found by name, not inherited by fork.
    if handle.is_memfd() {
        let line = maps_line(handle.address()).unwrap();
        assert!(line.contains("/memfd:OTEL_CTX"), "{line}");
    }
    assert!(vm_flags(handle.address()).contains(" dc"));
}

#[test]
fn anonymous_fallback_is_named() {
    let _serial = serial();
    let handle = publish_with(&info(), false).unwrap();
    assert!(!handle.is_memfd());
    let line = maps_line(handle.address()).unwrap();
    if handle.mapping.is_named() {
        assert!(line.ends_with("[anon:OTEL_CTX]"), "{line}");
    } else {
        eprintln!("PR_SET_VMA_ANON_NAME not supported by this kernel; mapping unnamed: {line}");
    }
    let (_, _, payload) = read_back(handle.address());
    assert_eq!(payload, info().payload());
}

#[test]
fn update_in_place() {
    let _serial = serial();
    let mut handle = publish(&info()).unwrap();
    let (first, _, _) = read_back(handle.address());
    let address = handle.address();

    let smaller = ProcessContextInfo::new("renamed").with_attribute_keys(["k"]);
    handle.update(&smaller).unwrap();
    assert_eq!(handle.address(), address);
    let (second, _, payload) = read_back(address);
    assert!(second.published_at_ns > first.published_at_ns);
    assert_eq!(second.payload_ptr, first.payload_ptr);
    assert_eq!(payload, smaller.payload());
    // The tail of the longer first payload is zeroed.
    // SAFETY: inside the mapping the handle keeps alive.
    let tail = unsafe {
        std::slice::from_raw_parts(
            (address + HEADER_SIZE + second.payload_size as usize) as *const u8,
            (first.payload_size - second.payload_size) as usize,
        )
    };
    assert!(tail.iter().all(|&byte| byte == 0));
}

#[test]
fn update_that_outgrows_the_mapping_moves_it() {
    let _serial = serial();
    let mut handle = publish(&info()).unwrap();
    let old = handle.address();
    let (first, _, _) = read_back(old);
    let keys: Vec<String> = (0..200).map(|i| format!("attribute.key.{i:03}")).collect();
    let big = info()
        .with_attribute_keys(keys.clone())
        .with_resource_attribute("padding", "p".repeat(2000));
    handle.update(&big).unwrap();
    assert_ne!(handle.address(), old);
    assert!(handle.mapping_len() > 4096);
    assert!(maps_line(old).is_none(), "old mapping still mapped");
    let (second, _, payload) = read_back(handle.address());
    assert!(second.published_at_ns > first.published_at_ns);
    assert_eq!(payload.attribute_key_map().unwrap().len(), 200);
    assert_eq!(payload, big.payload());
}

#[test]
fn one_context_per_process() {
    let _serial = serial();
    let handle = publish(&info()).unwrap();
    assert!(matches!(
        publish(&info()),
        Err(ProcessContextError::AlreadyPublished)
    ));
    drop(handle);
    let handle = publish(&info()).unwrap();
    drop(handle);
}

#[test]
fn dropping_the_handle_unmaps() {
    let _serial = serial();
    let handle = publish(&info()).unwrap();
    let address = handle.address();
    assert!(maps_line(address).is_some());
    drop(handle);
    assert!(maps_line(address).is_none());
}

#[test]
fn rejects_bad_input() {
    let keys: Vec<String> = (0..257).map(|i| i.to_string()).collect();
    let too_many = info().with_attribute_keys(keys);
    assert!(matches!(
        publish(&too_many),
        Err(ProcessContextError::TooManyAttributeKeys { count: 257 })
    ));
    let huge = info().with_resource_attribute("blob", "x".repeat(MAX_PAYLOAD_SIZE));
    assert!(matches!(
        publish(&huge),
        Err(ProcessContextError::PayloadTooLarge { .. })
    ));
}

#[test]
fn timestamps_increase() {
    assert!(super::now_ns(u64::MAX - 1) == u64::MAX);
    let now = super::now_ns(0);
    assert!(now > 0);
    assert_eq!(super::now_ns(now + 1000), now + 1001);
}
