//! Where and how to send OTLP profiles: the `--otlp-*` flags, and the standard
//! `OTEL_EXPORTER_OTLP_*` variables of the OTLP exporter specification when the flag is absent.
//! The variables are read through an injected lookup, so that tests need not touch the
//! process's environment.

use std::time::Duration;

use clap::Args;
use percent_encoding::percent_decode_str;
use ureq::http::{HeaderName, HeaderValue, Uri};

/// The path of the profiles signal, appended to a base URL.
pub const PROFILES_PATH: &str = "v1development/profiles";

/// The exporter specification's default timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A timeout longer than this is taken as this: the exporter thread must come back to its queue.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, Default, Args, PartialEq, Eq)]
pub struct OtlpArgs {
    /// Also send each interval's profiles to this OpenTelemetry collector (OTLP/HTTP, protobuf,
    /// gzip): http(s)://HOST:PORT gets the path /v1development/profiles, a URL with a path is
    /// used as given. Without it, OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT or
    /// OTEL_EXPORTER_OTLP_ENDPOINT are honoured.
    #[arg(long, value_name = "URL", env = "PROFILER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// A header sent with every OTLP request, e.g. `authorization=Bearer TOKEN` (repeat); wins
    /// over OTEL_EXPORTER_OTLP_HEADERS, the environment's way to give them.
    #[arg(long = "otlp-header", value_name = "KEY=VALUE", value_parser = header_flag)]
    pub otlp_headers: Vec<(String, String)>,
}

/// How request bodies are sent (and spooled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
}

/// Everything the exporter needs, resolved and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full URL requests are posted to.
    pub endpoint: String,
    /// Environment headers first, then the flags' (a later header of the same name wins).
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub compression: Compression,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "{source_name}={url:?} is not a URL: give http://HOST:PORT or https://HOST:PORT/PATH ({reason})"
    )]
    BadUrl {
        source_name: &'static str,
        url: String,
        reason: String,
    },
    #[error(
        "{source_name}={url:?}: the scheme must be http or https (OTLP/HTTP; gRPC is not supported)"
    )]
    BadScheme {
        source_name: &'static str,
        url: String,
    },
    #[error("{source_name}: {reason}: write headers as KEY=VALUE (variables: comma-separated)")]
    BadHeader {
        source_name: &'static str,
        reason: String,
    },
    #[error("{variable}={value:?} is not a timeout: give whole milliseconds, e.g. 10000")]
    BadTimeout {
        variable: &'static str,
        value: String,
    },
    #[error("{variable}={value:?}: the compression must be gzip or none")]
    BadCompression {
        variable: &'static str,
        value: String,
    },
}

impl OtlpConfig {
    /// The configuration `args` and the environment (`lookup`) ask for; `None` when no endpoint
    /// is set anywhere: no export.
    pub fn resolve(
        args: &OtlpArgs,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        // Empty variables count as unset, as the specification asks.
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let endpoint = if let Some(url) = &args.otlp_endpoint {
            endpoint(url, "--otlp-endpoint", PathRule::AppendIfNone)?
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT") {
            endpoint(&url, "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", PathRule::AsIs)?
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            endpoint(&url, "OTEL_EXPORTER_OTLP_ENDPOINT", PathRule::Append)?
        } else {
            return Ok(None);
        };
        let mut headers = Vec::new();
        for variable in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_PROFILES_HEADERS",
        ] {
            if let Some(list) = var(variable) {
                headers.extend(header_list(&list, variable)?);
            }
        }
        headers.extend(args.otlp_headers.iter().cloned());
        let headers = last_wins(headers);

        let timeout = match signal_first(&var, "TIMEOUT") {
            Some((variable, value)) => {
                let ms = value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| ConfigError::BadTimeout { variable, value })?;
                // Zero would mean no timeout at all: keep the default bound.
                if ms == 0 {
                    DEFAULT_TIMEOUT
                } else {
                    Duration::from_millis(ms).min(MAX_TIMEOUT)
                }
            }
            None => DEFAULT_TIMEOUT,
        };
        let compression = match signal_first(&var, "COMPRESSION") {
            Some((variable, value)) => match value.trim().to_ascii_lowercase().as_str() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                _ => return Err(ConfigError::BadCompression { variable, value }),
            },
            None => Compression::Gzip,
        };
        Ok(Some(Self {
            endpoint,
            headers,
            timeout,
            compression,
        }))
    }
}

/// The profiles-specific variable `OTEL_EXPORTER_OTLP_PROFILES_<what>`, else the general one.
fn signal_first(
    var: &impl Fn(&str) -> Option<String>,
    what: &str,
) -> Option<(&'static str, String)> {
    let names: [&'static str; 2] = match what {
        "TIMEOUT" => [
            "OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ],
        _ => [
            "OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ],
    };
    names
        .into_iter()
        .find_map(|name| var(name).map(|value| (name, value)))
}

#[derive(Clone, Copy)]
enum PathRule {
    /// `--otlp-endpoint`: the signal's path when the URL has none.
    AppendIfNone,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: a base, the signal's path always appended.
    Append,
    /// `OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT`: the full URL.
    AsIs,
}

fn endpoint(url: &str, source_name: &'static str, rule: PathRule) -> Result<String, ConfigError> {
    let url = url.trim();
    let uri: Uri = url
        .parse()
        .map_err(|err: ureq::http::uri::InvalidUri| ConfigError::BadUrl {
            source_name,
            url: url.to_owned(),
            reason: err.to_string(),
        })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => {
            return Err(ConfigError::BadScheme {
                source_name,
                url: url.to_owned(),
            });
        }
        None => {
            return Err(ConfigError::BadUrl {
                source_name,
                url: url.to_owned(),
                reason: "no scheme".into(),
            });
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::BadUrl {
            source_name,
            url: url.to_owned(),
            reason: "no host".into(),
        });
    }
    let no_path = matches!(uri.path(), "" | "/") && uri.query().is_none();
    let append = match rule {
        PathRule::AppendIfNone => no_path,
        PathRule::Append => true,
        PathRule::AsIs => false,
    };
    Ok(if append {
        let base = url.trim_end_matches('/');
        format!("{base}/{PROFILES_PATH}")
    } else {
        url.to_owned()
    })
}

/// `--otlp-header KEY=VALUE`, taken as given (no percent-decoding).
fn header_flag(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} has no `=`: write KEY=VALUE"))?;
    checked_header(key.trim(), value.trim()).map_err(|reason| format!("{reason}: write KEY=VALUE"))
}

/// A variable's `key1=value1,key2=value2`; values are percent-decoded (the exporter
/// specification's format, that of the W3C baggage).
fn header_list(
    list: &str,
    source_name: &'static str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let bad = |reason: String| ConfigError::BadHeader {
        source_name,
        reason,
    };
    let mut headers = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| bad(format!("{entry:?} has no `=`")))?;
        let value = percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| bad(format!("the value of {:?} is not UTF-8", key.trim())))?;
        headers.push(checked_header(key.trim(), value.trim()).map_err(bad)?);
    }
    Ok(headers)
}

/// A header HTTP can carry (checked now rather than at the first request).
fn checked_header(key: &str, value: &str) -> Result<(String, String), String> {
    HeaderName::from_bytes(key.as_bytes()).map_err(|_| format!("{key:?} is not a header name"))?;
    HeaderValue::from_str(value)
        .map_err(|_| format!("the value of {key:?} is not a header value"))?;
    Ok((key.to_ascii_lowercase(), value.to_owned()))
}

/// One header per name, the last one given, in the order names first appeared.
fn last_wins(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = Vec::new();
    for (key, value) in headers {
        match kept.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => kept.push((key, value)),
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(
        endpoint: Option<&str>,
        flags: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<Option<OtlpConfig>, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = OtlpArgs {
            otlp_endpoint: endpoint.map(str::to_owned),
            otlp_headers: flags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        OtlpConfig::resolve(&args, |name| env.get(name).cloned())
    }

    fn url(endpoint: Option<&str>, env: &[(&str, &str)]) -> String {
        resolve(endpoint, &[], env).unwrap().unwrap().endpoint
    }

    #[test]
    fn no_endpoint_no_export() {
        assert_eq!(resolve(None, &[], &[]), Ok(None));
        assert_eq!(
            resolve(None, &[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            Ok(None)
        );
    }

    #[test]
    fn the_flag_gets_the_path_only_when_it_has_none() {
        for given in ["http://127.0.0.1:4318", "http://127.0.0.1:4318/"] {
            assert_eq!(
                url(Some(given), &[]),
                "http://127.0.0.1:4318/v1development/profiles"
            );
        }
        assert_eq!(
            url(Some("https://collector.example/otlp/profiles"), &[]),
            "https://collector.example/otlp/profiles"
        );
    }

    #[test]
    fn the_flag_wins_then_the_profiles_variable_then_the_base() {
        let env = [
            ("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", "http://p:1/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/prefix/"),
        ];
        assert_eq!(
            url(Some("http://flag:2"), &env),
            "http://flag:2/v1development/profiles"
        );
        assert_eq!(url(None, &env), "http://p:1/custom");
        assert_eq!(
            url(None, &env[1..]),
            "http://base:4318/prefix/v1development/profiles"
        );
    }

    #[test]
    fn bad_urls_say_what_to_do() {
        for (given, expected) in [
            ("grpc://collector:4317", "the scheme must be http or https"),
            ("collector:4318", "is not a URL"),
            ("http://", "is not a URL"),
            ("http://exa mple", "is not a URL"),
            ("/v1development/profiles", "is not a URL"),
        ] {
            let err = resolve(Some(given), &[], &[]).unwrap_err().to_string();
            assert!(err.contains(expected), "{given}: {err}");
            assert!(
                err.contains("--otlp-endpoint") && !err.contains('\n'),
                "{err}"
            );
        }
        let err = resolve(None, &[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x")]).unwrap_err();
        assert!(
            err.to_string().starts_with("OTEL_EXPORTER_OTLP_ENDPOINT="),
            "{err}"
        );
    }

    #[test]
    fn headers_decoded_merged_and_the_flags_win() {
        let env = [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Basic%20abc%3D%3D , x-scope=general,,",
            ),
            ("OTEL_EXPORTER_OTLP_PROFILES_HEADERS", "X-Scope=profiles"),
        ];
        let config = resolve(Some("http://c:1"), &[("x-tenant", "a=b")], &env)
            .unwrap()
            .unwrap();
        assert_eq!(
            config.headers,
            [
                ("authorization".into(), "Basic abc==".into()),
                ("x-scope".into(), "profiles".into()),
                ("x-tenant".into(), "a=b".into()),
            ]
        );
        let config = resolve(Some("http://c:1"), &[("authorization", "Bearer t")], &env)
            .unwrap()
            .unwrap();
        assert_eq!(
            config.headers[0],
            ("authorization".into(), "Bearer t".into())
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        let err = resolve(
            Some("http://c:1"),
            &[],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "a=1,token")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"token\" has no `=`"), "{err}");
        assert!(
            header_flag("novalue")
                .unwrap_err()
                .contains("write KEY=VALUE")
        );
        assert!(header_flag("bad key=1").is_err());
        assert!(header_flag("k=line\nbreak").is_err());
        assert_eq!(header_flag("k= v=w "), Ok(("k".into(), "v=w".into())));
    }

    /// The flags as `profiler record` parses them.
    #[test]
    fn record_parses_the_flags() {
        use clap::Parser;

        use crate::cli::{Cli, Command};
        let parse = |args: &[&str]| {
            let all = ["profiler", "record"].iter().chain(args);
            Cli::try_parse_from(all).map(|cli| match cli.command {
                Command::Record(record) => record.otlp,
                _ => unreachable!("parsed a record command"),
            })
        };
        let otlp = parse(&[
            "--otlp-endpoint",
            "http://c:4318",
            "--otlp-header",
            "a=b",
            "--otlp-header",
            "c=d=e",
        ])
        .unwrap();
        assert_eq!(otlp.otlp_endpoint.as_deref(), Some("http://c:4318"));
        assert_eq!(
            otlp.otlp_headers,
            [("a".into(), "b".into()), ("c".into(), "d=e".into())]
        );
        let err = parse(&["--otlp-header", "novalue"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("write KEY=VALUE"), "{err}");
    }

    #[test]
    fn timeout_and_compression() {
        let config = resolve(Some("http://c:1"), &[], &[]).unwrap().unwrap();
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.compression, Compression::Gzip);
        let env = [
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ];
        let config = resolve(Some("http://c:1"), &[], &env).unwrap().unwrap();
        assert_eq!(config.timeout, Duration::from_millis(2500));
        assert_eq!(config.compression, Compression::None);
        let env = [
            ("OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT", "500"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ];
        let config = resolve(Some("http://c:1"), &[], &env).unwrap().unwrap();
        assert_eq!(config.timeout, Duration::from_millis(500));
        assert!(matches!(
            resolve(
                Some("http://c:1"),
                &[],
                &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]
            ),
            Err(ConfigError::BadTimeout { .. })
        ));
        assert!(matches!(
            resolve(
                Some("http://c:1"),
                &[],
                &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]
            ),
            Err(ConfigError::BadCompression { .. })
        ));
    }
}
