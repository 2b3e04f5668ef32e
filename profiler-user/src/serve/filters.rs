//! The traces list's filters (`service`, `trace`, `since`, `until`), its order (newest first, or
//! `sort=samples`, `sort=cpu`, `sort=off-cpu`) and its length (`limit`); and the times the forms take: RFC 3339, a
//! `datetime-local` value (`2026-01-01T12:00`, read as UTC), or a duration ago (`15m`).

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;

use super::catalog::TraceRow;

/// Rows shown when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 500;

/// The query string of `/`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TraceQuery {
    pub service: Option<String>,
    pub trace: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub sort: Option<String>,
    pub limit: Option<usize>,
}

/// How the traces list is filtered and sorted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceFilter {
    /// Part of a service name, lowercase.
    pub service: Option<String>,
    /// Part of the trace ID, lowercase.
    pub trace: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub order: TraceOrder,
    pub limit: usize,
}

/// The traces list's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceOrder {
    /// By last sample, newest first.
    #[default]
    Newest,
    /// Most samples first.
    Samples,
    /// Most CPU time first (from the index).
    Cpu,
    /// Most time off the CPU first (from the index): the traces that waited most.
    OffCpu,
}

impl TraceOrder {
    pub const ALL: [TraceOrder; 4] = [
        TraceOrder::Newest,
        TraceOrder::Samples,
        TraceOrder::Cpu,
        TraceOrder::OffCpu,
    ];

    /// Its `sort` value (`None`: the default).
    pub fn key(self) -> Option<&'static str> {
        match self {
            TraceOrder::Newest => None,
            TraceOrder::Samples => Some("samples"),
            TraceOrder::Cpu => Some("cpu"),
            TraceOrder::OffCpu => Some("off-cpu"),
        }
    }

    /// How a form and a link's title say it.
    pub fn label(self) -> &'static str {
        match self {
            TraceOrder::Newest => "newest first",
            TraceOrder::Samples => "most samples",
            TraceOrder::Cpu => "most CPU time",
            TraceOrder::OffCpu => "most off-CPU time",
        }
    }

    /// The order a `sort` value names; anything else is the default.
    pub fn of(sort: Option<&str>) -> TraceOrder {
        TraceOrder::ALL
            .into_iter()
            .find(|order| order.key() == sort)
            .unwrap_or_default()
    }
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl TraceFilter {
    pub fn parse(query: &TraceQuery, now: DateTime<Utc>) -> Result<TraceFilter, String> {
        Ok(TraceFilter {
            service: given(&query.service).map(str::to_lowercase),
            trace: given(&query.trace).map(str::to_lowercase),
            since: given(&query.since)
                .map(|t| parse_time(t, now))
                .transpose()?,
            until: given(&query.until)
                .map(|t| parse_time(t, now))
                .transpose()?,
            order: TraceOrder::of(given(&query.sort)),
            limit: query.limit.filter(|&n| n > 0).unwrap_or(DEFAULT_LIMIT),
        })
    }

    /// Whether a trace passes the filters: a service name and the ID contain what was asked,
    /// and its samples overlap the window.
    pub fn keeps(&self, row: &TraceRow) -> bool {
        let service = self.service.as_deref().is_none_or(|wanted| {
            row.services
                .iter()
                .any(|s| s.to_lowercase().contains(wanted))
        });
        let trace = self
            .trace
            .as_deref()
            .is_none_or(|wanted| row.trace_id.contains(wanted));
        let since = self
            .since
            .is_none_or(|since| row.last.is_some_and(|last| last >= since));
        let until = self
            .until
            .is_none_or(|until| row.first.or(row.last).is_some_and(|first| first <= until));
        service && trace && since && until
    }

    /// The rows kept, sorted, at most `limit`; and how many passed the filters.
    pub fn apply(&self, mut rows: Vec<TraceRow>) -> (Vec<TraceRow>, usize) {
        rows.retain(|row| self.keeps(row));
        // Most first; a row whose line does not say (`None`) after every one that does.
        let most: fn(&TraceRow) -> Option<u64> = match self.order {
            TraceOrder::Newest => |_| None,
            TraceOrder::Samples => |row| row.sample_count,
            TraceOrder::Cpu => |row| row.cpu_ns,
            TraceOrder::OffCpu => |row| row.off_cpu_ns,
        };
        rows.sort_by(|a, b| {
            most(b)
                .cmp(&most(a))
                .then_with(|| b.last.cmp(&a.last))
                .then_with(|| a.trace_id.cmp(&b.trace_id))
        });
        let matched = rows.len();
        rows.truncate(self.limit);
        (rows, matched)
    }
}

/// A time from a form or a link.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(time.and_utc());
        }
    }
    if humantime::parse_duration(text).is_ok() {
        // At most 100 years ago: out of range is a bad request, not a panic.
        return crate::cli::duration(text)
            .ok()
            .and_then(|ago| chrono::Duration::from_std(ago).ok())
            .and_then(|ago| now.checked_sub_signed(ago))
            .ok_or_else(|| format!("{text:?} is more than 100 years ago"));
    }
    Err(format!(
        "{text:?} is neither a time (2026-01-01T12:00:00Z) nor a duration ago (15m)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        parse_time("2026-01-01T12:00:00Z", Utc::now()).unwrap()
    }

    fn row(id: &str, service: &str, first: &str, last: &str, samples: u64) -> TraceRow {
        TraceRow {
            trace_id: id.into(),
            first: Some(parse_time(first, now()).unwrap()),
            last: Some(parse_time(last, now()).unwrap()),
            sample_count: Some(samples),
            cpu_ns: Some(samples * 10_000_000),
            // The trace with fewest samples waited most.
            off_cpu_ns: Some(1_000_000_000 / samples),
            services: vec![service.into()],
            top_function: None,
        }
    }

    fn rows() -> Vec<TraceRow> {
        vec![
            row(
                "aa01",
                "checkout",
                "2026-01-01T10:00:00Z",
                "2026-01-01T10:05:00Z",
                50,
            ),
            row(
                "bb02",
                "Payments",
                "2026-01-01T11:00:00Z",
                "2026-01-01T11:50:00Z",
                5,
            ),
            row(
                "cc03",
                "checkout",
                "2026-01-01T11:55:00Z",
                "2026-01-01T11:59:00Z",
                20,
            ),
        ]
    }

    fn ids(filter: &TraceFilter) -> Vec<String> {
        filter
            .apply(rows())
            .0
            .into_iter()
            .map(|r| r.trace_id)
            .collect()
    }

    fn filter(query: TraceQuery) -> TraceFilter {
        TraceFilter::parse(&query, now()).unwrap()
    }

    #[test]
    fn newest_first_or_by_samples() {
        assert_eq!(
            ids(&filter(TraceQuery::default())),
            ["cc03", "bb02", "aa01"]
        );
        let by_samples = filter(TraceQuery {
            sort: Some("samples".into()),
            ..TraceQuery::default()
        });
        assert_eq!(ids(&by_samples), ["aa01", "cc03", "bb02"]);
        let sorted = |sort: &str| {
            ids(&filter(TraceQuery {
                sort: Some(sort.into()),
                ..TraceQuery::default()
            }))
        };
        assert_eq!(sorted("cpu"), ["aa01", "cc03", "bb02"]);
        assert_eq!(sorted("off-cpu"), ["bb02", "cc03", "aa01"]);
        assert_eq!(sorted("nonsense"), ["cc03", "bb02", "aa01"]);
        // Traces whose index lines do not say come last, newest first among them.
        let mut old = rows();
        old[1].off_cpu_ns = None;
        old[2].off_cpu_ns = None;
        let by_off_cpu = filter(TraceQuery {
            sort: Some("off-cpu".into()),
            ..TraceQuery::default()
        });
        let order: Vec<String> = by_off_cpu
            .apply(old)
            .0
            .into_iter()
            .map(|r| r.trace_id)
            .collect();
        assert_eq!(order, ["aa01", "cc03", "bb02"]);
        for order in TraceOrder::ALL {
            assert_eq!(TraceOrder::of(order.key()), order);
        }
        let limited = filter(TraceQuery {
            limit: Some(1),
            ..TraceQuery::default()
        });
        assert_eq!(limited.apply(rows()).1, 3);
        assert_eq!(ids(&limited), ["cc03"]);
    }

    #[test]
    fn filters_by_service_trace_and_window() {
        let service = filter(TraceQuery {
            service: Some("PAY".into()),
            ..TraceQuery::default()
        });
        assert_eq!(ids(&service), ["bb02"]);
        let trace = filter(TraceQuery {
            trace: Some("CC".into()),
            ..TraceQuery::default()
        });
        assert_eq!(ids(&trace), ["cc03"]);
        let recent = filter(TraceQuery {
            since: Some("30m".into()),
            ..TraceQuery::default()
        });
        assert_eq!(ids(&recent), ["cc03", "bb02"]);
        let window = filter(TraceQuery {
            since: Some("2026-01-01T10:04".into()),
            until: Some("2026-01-01T11:00:00Z".into()),
            service: Some(" ".into()),
            ..TraceQuery::default()
        });
        assert_eq!(ids(&window), ["bb02", "aa01"]);
        assert!(
            TraceFilter::parse(
                &TraceQuery {
                    since: Some("yesterday-ish".into()),
                    ..TraceQuery::default()
                },
                now()
            )
            .is_err()
        );
    }

    #[test]
    fn out_of_range_durations_are_errors_not_panics() {
        for text in [
            "100000000d",
            "18446744073709551615s",
            "101years",
            "+262143-12-31T23:59:59Z",
        ] {
            let query = TraceQuery {
                since: Some(text.into()),
                until: Some(text.into()),
                ..TraceQuery::default()
            };
            assert!(TraceFilter::parse(&query, now()).is_err(), "{text}");
        }
        assert!(parse_time("99years", now()).is_ok());
    }
}
