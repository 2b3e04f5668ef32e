//! Protobuf messages of the process context payload, written by hand with `prost` so that no
//! `protoc` or build step is needed. Field numbers follow `opentelemetry/proto/common/v1/common.proto`
//! and `opentelemetry/proto/resource/v1/resource.proto`; fields this crate does not use
//! (`Resource.entity_refs`) are left out and skipped when decoding.
//!
//! The profiler decodes the payload it reads from another process with these types:
//!
//! ```
//! use prost::Message;
//! use profiler_marker::process_context::{proto::ProcessContext, ProcessContextInfo};
//!
//! let info = ProcessContextInfo::new("checkout").with_attribute_keys(["http.route"]);
//! let bytes = info.payload().encode_to_vec();
//! let decoded = ProcessContext::decode(bytes.as_slice())?;
//! assert_eq!(decoded.service_name(), Some("checkout"));
//! assert_eq!(decoded.attribute_key_map(), Some(vec!["http.route"]));
//! # Ok::<(), prost::DecodeError>(())
//! ```

/// Key of the resource attribute that names the service.
pub const SERVICE_NAME: &str = "service.name";
/// Key of the attribute that names the thread-local record's format.
pub const SCHEMA_VERSION: &str = "threadlocal.schema_version";
/// The value of [`SCHEMA_VERSION`] for the record of OTEP 4947 (`otel_thread_ctx_v1`).
pub const SCHEMA_VERSION_TLS_V1: &str = "tls_v1";
/// Key of the attribute whose array value maps record key indexes to attribute names.
pub const ATTRIBUTE_KEY_MAP: &str = "threadlocal.attribute_key_map";

/// The payload: the process's resource and the attributes of the process context protocol.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProcessContext {
    /// The process's OpenTelemetry resource (`service.name`, ...).
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Protocol attributes: [`SCHEMA_VERSION`], [`ATTRIBUTE_KEY_MAP`].
    #[prost(message, repeated, tag = "2")]
    pub attributes: Vec<KeyValue>,
}

/// `opentelemetry.proto.resource.v1.Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    /// Resource attributes.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the producer.
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
}

/// `opentelemetry.proto.common.v1.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// Attribute name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Attribute value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `opentelemetry.proto.common.v1.AnyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    /// The value; `None` is an empty value.
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub value: Option<any_value::Value>,
}

/// The `oneof` of [`AnyValue`].
pub mod any_value {
    /// One value of an [`AnyValue`](super::AnyValue).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// `string_value = 1`
        #[prost(string, tag = "1")]
        StringValue(String),
        /// `bool_value = 2`
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        /// `int_value = 3`
        #[prost(int64, tag = "3")]
        IntValue(i64),
        /// `double_value = 4`
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        /// `array_value = 5`
        #[prost(message, tag = "5")]
        ArrayValue(super::ArrayValue),
        /// `kvlist_value = 6`
        #[prost(message, tag = "6")]
        KvlistValue(super::KeyValueList),
        /// `bytes_value = 7`
        #[prost(bytes = "vec", tag = "7")]
        BytesValue(Vec<u8>),
    }
}

/// `opentelemetry.proto.common.v1.ArrayValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayValue {
    /// The elements.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

/// `opentelemetry.proto.common.v1.KeyValueList`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueList {
    /// The entries.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

impl AnyValue {
    /// A string value.
    pub fn string(value: impl Into<String>) -> Self {
        Self {
            value: Some(any_value::Value::StringValue(value.into())),
        }
    }

    /// The value if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Some(any_value::Value::StringValue(value)) => Some(value),
            _ => None,
        }
    }
}

impl KeyValue {
    /// `key` = string `value`.
    pub fn string(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: Some(AnyValue::string(value)),
        }
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

impl ProcessContext {
    /// The resource's `service.name`, if it is a string.
    pub fn service_name(&self) -> Option<&str> {
        let resource = self.resource.as_ref()?;
        find(&resource.attributes, SERVICE_NAME)?.as_str()
    }

    /// The `threadlocal.schema_version` attribute (`"tls_v1"` from this crate).
    pub fn schema_version(&self) -> Option<&str> {
        find(&self.attributes, SCHEMA_VERSION)?.as_str()
    }

    /// The `threadlocal.attribute_key_map`: element `i` names the attribute of key index `i`.
    /// `None` if it is missing or not an array; a non-string element is an empty name.
    pub fn attribute_key_map(&self) -> Option<Vec<&str>> {
        match &find(&self.attributes, ATTRIBUTE_KEY_MAP)?.value {
            Some(any_value::Value::ArrayValue(array)) => Some(
                array
                    .values
                    .iter()
                    .map(|value| value.as_str().unwrap_or_default())
                    .collect(),
            ),
            _ => None,
        }
    }
}
