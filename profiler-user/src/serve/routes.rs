//! The routes. Handlers are thin: each reads the directory and draws its page on the blocking
//! pool (decoding a profile and drawing a flame graph take milliseconds to seconds, and the
//! recorder's runtime has one thread), at most a few at a time.
//!
//! Every request passes [`guard`] first: a `Host` that is not an IP address, `localhost` or an
//! allowed name is refused (403), and every answer carries a Content-Security-Policy whose
//! script nonce is drawn for that answer, `nosniff`, and no framing.

use std::{cmp::Reverse, net::IpAddr, sync::Arc};

use axum::{
    Router,
    extract::{Query, Request, State},
    http::{HeaderValue, StatusCode, Uri, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::Markup;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::{
    catalog::{Analysis, Catalog},
    filters::{TraceFilter, TraceQuery, parse_time},
    pages::{self, Neighbours, ProfilesQueryView, TimelineEntry},
    paths::{self, Refusal},
};
use crate::report::{
    files::{self, ProfileFile, ProfileKind, ReadError},
    flame::{self, Labels},
    stacks::ValueKind,
    top::Top,
};

/// Profiles on the timeline when `limit` is not given.
const PROFILES_SHOWN: usize = 200;
/// Functions in a page's table when `top` is not given.
const TOP_SHOWN: usize = 30;

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    catalog: Arc<Catalog>,
    /// Pages being drawn at once.
    drawing: Arc<Semaphore>,
    /// The directory as the user named it, for page headers.
    dir: Arc<str>,
}

impl App {
    pub fn new(catalog: Catalog, dir: String, concurrency: usize) -> App {
        App {
            catalog: Arc::new(catalog),
            drawing: Arc::new(Semaphore::new(concurrency.max(1))),
            dir: dir.into(),
        }
    }

    /// Runs `work` (which decodes profiles or draws flame graphs) on the blocking pool, once a
    /// drawing slot is free.
    async fn run(
        &self,
        work: impl FnOnce(&Catalog, &str) -> Result<Markup, PageError> + Send + 'static,
    ) -> Response {
        match self.drawing.clone().acquire_owned().await {
            Ok(permit) => {
                self.run_light(move |catalog, dir| {
                    let _permit = permit;
                    work(catalog, dir)
                })
                .await
            }
            Err(_) => self.respond(Err(PageError::Internal("the server is stopping".into()))),
        }
    }

    /// Runs `work` (a directory listing, no decoding) on the blocking pool.
    async fn run_light(
        &self,
        work: impl FnOnce(&Catalog, &str) -> Result<Markup, PageError> + Send + 'static,
    ) -> Response {
        let (catalog, dir) = (self.catalog.clone(), self.dir.clone());
        let nonce = NONCE.try_with(Clone::clone).ok();
        let result = tokio::task::spawn_blocking(move || {
            pages::with_nonce(nonce.as_deref(), || work(&catalog, &dir))
        })
        .await
        .unwrap_or_else(|err| {
            Err(PageError::Internal(format!(
                "drawing the page failed: {err}"
            )))
        });
        self.respond(result)
    }

    fn respond(&self, result: Result<Markup, PageError>) -> Response {
        match result {
            Ok(page) => Html(page.into_string()).into_response(),
            Err(err) => err.into_page(&self.dir),
        }
    }
}

/// Why a page was not drawn.
#[derive(Debug)]
pub enum PageError {
    BadRequest(String),
    NotFound(String),
    Internal(String),
}

impl PageError {
    fn into_page(self, dir: &str) -> Response {
        let (status, message) = match self {
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            PageError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        let page = pages::error(dir, status.as_u16(), &message);
        (status, Html(page.into_string())).into_response()
    }
}

/// A refused path: 400 with a warning in the log when it tries to leave the directory.
fn refused(requested: &str, refusal: Refusal) -> PageError {
    match refusal {
        Refusal::Outside(why) => {
            tracing::warn!("refused {requested:?}: {why} (400)");
            PageError::BadRequest(format!(
                "{requested} is not a path inside the served directory"
            ))
        }
        Refusal::NotFound => PageError::NotFound(format!("{requested}: no such profile")),
    }
}

fn read_error(err: ReadError) -> PageError {
    if err.is_not_found() {
        PageError::NotFound("the profile is gone (deleted or replaced meanwhile)".into())
    } else {
        PageError::Internal(crate::error_chain(&err))
    }
}

tokio::task_local! {
    /// The script nonce of the answer being made (see [`guard`]).
    static NONCE: String;
}

/// The names a request's `Host` may give besides IP addresses and `localhost`.
#[derive(Debug)]
struct Hosts(Vec<String>);

impl Hosts {
    fn new(allowed: &[String]) -> Hosts {
        Hosts(allowed.iter().map(|h| normal_host(h).to_owned()).collect())
    }

    /// Whether `host` (a `Host` header: a name or an address, perhaps with a port) is ours. A
    /// DNS-rebinding page sends its own name, which is none of these.
    fn allow(&self, host: &str) -> bool {
        let name = normal_host(host);
        let literal = name
            .strip_prefix('[')
            .and_then(|v6| v6.strip_suffix(']'))
            .unwrap_or(name);
        literal.parse::<IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
            || self
                .0
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }
}

/// `host` without its port or a final dot.
fn normal_host(host: &str) -> &str {
    let host = host.trim();
    let name = match host.rsplit_once(':') {
        // `[::1]:8080`, `name:8080`; a bare IPv6 address has more than one colon.
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (name.ends_with(']') || !name.contains(':')) =>
        {
            name
        }
        _ => host,
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// 32 hex digits from the kernel's random source; `None` if it cannot be read (the page then
/// runs no script).
fn new_nonce() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Refuses a foreign `Host`; sets the security headers of every answer.
async fn guard(State(hosts): State<Arc<Hosts>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("")
        .to_owned();
    let nonce = new_nonce();
    let mut response = if !hosts.allow(&host) {
        tracing::warn!(
            "refused a request for host {host:?} (403): pass --allowed-host {host} to serve it"
        );
        (
            StatusCode::FORBIDDEN,
            format!(
                "{host:?} is not a name of this server: use its IP address or localhost, or \
                 start it with --allowed-host NAME\n"
            ),
        )
            .into_response()
    } else if let Some(nonce) = &nonce {
        NONCE.scope(nonce.clone(), next.run(request)).await
    } else {
        next.run(request).await
    };
    let scripts = nonce.map_or_else(|| "'none'".to_owned(), |n| format!("'nonce-{n}'"));
    let policy = format!(
        "default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; img-src 'self' data:; \
         form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    );
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The web application; `allowed_hosts`: names accepted in `Host` besides IP addresses and
/// `localhost`.
pub fn router(app: App, allowed_hosts: &[String]) -> Router {
    let hosts = Arc::new(Hosts::new(allowed_hosts));
    Router::new()
        .route("/", get(traces))
        .route("/traces", get(|| async { Redirect::to("/") }))
        .route("/traces/{*id}", get(trace))
        .route("/profiles", get(profiles))
        .route("/profiles/{*name}", get(profile))
        .route("/diff", get(diff))
        .route("/files/{*path}", get(download))
        .fallback(fallback)
        .with_state(app)
        .layer(middleware::from_fn_with_state(hosts, guard))
}

/// The still-encoded part of the request path after `prefix`.
fn tail<'a>(uri: &'a Uri, prefix: &str) -> &'a str {
    uri.path().strip_prefix(prefix).unwrap_or("")
}

#[derive(Debug, Default, Deserialize)]
struct TopQuery {
    top: Option<usize>,
    /// The flame graph drawn first (with zoom and search): `cpu` or `off-cpu`.
    graph: Option<String>,
}

impl TopQuery {
    fn top(&self) -> usize {
        self.top.filter(|&n| n > 0).unwrap_or(TOP_SHOWN)
    }

    /// The value `graph` names (anything else: the page's default).
    fn graph(&self) -> Option<ValueKind> {
        self.graph.as_deref().and_then(ValueKind::of_flag)
    }
}

async fn traces(State(app): State<App>, Query(query): Query<TraceQuery>) -> Response {
    app.run_light(move |catalog, dir| {
        let filter = TraceFilter::parse(&query, Utc::now()).map_err(PageError::BadRequest)?;
        let rows = catalog
            .traces()
            .map_err(|err| PageError::Internal(format!("cannot list the traces: {err}")))?;
        let total = rows.len();
        let (rows, matched) = filter.apply(rows);
        Ok(pages::traces(dir, &rows, matched, total, &query, &filter))
    })
    .await
}

async fn trace(State(app): State<App>, uri: Uri, Query(query): Query<TopQuery>) -> Response {
    let raw = tail(&uri, "/traces/").to_owned();
    let id = match paths::decode(&raw) {
        Ok(id) => id,
        Err(refusal) => return app.respond(Err(refused(uri.path(), refusal))),
    };
    if !files::is_trace_id(&id) {
        return app.respond(Err(PageError::BadRequest(format!(
            "{id:?} is not a trace ID (32 lowercase hex digits)"
        ))));
    }
    app.run(move |catalog, dir| {
        let name = format!("{}/{id}.pb.gz", files::TRACES_DIR);
        let file = catalog.file(&name).map_err(|refusal| match refusal {
            Refusal::NotFound => PageError::NotFound(format!("no trace file for {id}")),
            outside => refused(&name, outside),
        })?;
        let analysis = catalog.analysis(&file).map_err(read_error)?;
        let row = catalog
            .traces()
            .ok()
            .and_then(|rows| rows.into_iter().find(|r| r.trace_id == id));
        Ok(pages::trace(
            dir,
            row.as_ref(),
            &analysis,
            query.top(),
            query.graph(),
        ))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
struct ProfilesQuery {
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

/// The start in a profile's name (`cpu-20260101T120000Z.pb.gz`, `offcpu-…`, `incident-…`).
fn name_time(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name
        .strip_prefix("cpu-")
        .or_else(|| name.strip_prefix("offcpu-"))
        .or_else(|| name.strip_prefix("incident-"))?
        .get(..16)?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// The interval of the same window with the other value: `offcpu-X` for `cpu-X` and back.
fn counterpart(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("cpu-") {
        Some(format!("offcpu-{rest}"))
    } else {
        name.strip_prefix("offcpu-")
            .map(|rest| format!("cpu-{rest}"))
    }
}

/// When a profile started, by its name, else when it was written.
fn start_of(file: &ProfileFile) -> DateTime<Utc> {
    name_time(&file.name).unwrap_or_else(|| DateTime::<Utc>::from(file.modified))
}

/// The root profiles, newest first.
fn newest_first(catalog: &Catalog) -> Result<Vec<ProfileFile>, PageError> {
    let mut files = catalog
        .profiles()
        .map_err(|err| PageError::Internal(format!("cannot list the profiles: {err}")))?;
    files.sort_by_key(|f| Reverse((start_of(f), f.name.clone())));
    Ok(files)
}

/// Whether two profiles measure the same: off-CPU intervals against off-CPU intervals, the
/// rest (CPU intervals, incidents, trace files) against each other.
fn same_family(a: &ProfileFile, b: &ProfileFile) -> bool {
    (a.kind == ProfileKind::OffCpu) == (b.kind == ProfileKind::OffCpu)
}

/// The interval file that ended where `target` started (a capture's start cuts an interval, so
/// the next interval starts with the incident): of the few intervals of its kind (`cpu-*`, or
/// `offcpu-*` for an off-CPU interval) named at or before it, the one that ended last, not
/// after its start.
fn interval_before(
    catalog: &Catalog,
    newest_first: &[ProfileFile],
    target: &ProfileFile,
) -> Option<String> {
    let target_start = catalog.summary(target).ok()?.meta.start?;
    // Drains and captures are stamped microseconds apart.
    let slack = std::time::Duration::from_millis(100);
    let named = start_of(target);
    let kind = if target.kind == ProfileKind::OffCpu {
        ProfileKind::OffCpu
    } else {
        ProfileKind::Interval
    };
    newest_first
        .iter()
        .filter(|f| f.kind == kind && f.name != target.name && start_of(f) <= named)
        .take(4)
        .filter_map(|f| Some((catalog.summary(f).ok()?.meta.end()?, f)))
        .filter(|(end, _)| *end <= target_start + slack)
        .max_by_key(|(end, _)| *end)
        .map(|(_, f)| f.name.clone())
}

async fn profiles(State(app): State<App>, Query(query): Query<ProfilesQuery>) -> Response {
    app.run(move |catalog, dir| {
        let now = Utc::now();
        let time = |text: &Option<String>| -> Result<Option<DateTime<Utc>>, PageError> {
            text.as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| parse_time(t, now))
                .transpose()
                .map_err(PageError::BadRequest)
        };
        let (since, until) = (time(&query.since)?, time(&query.until)?);
        let all = newest_first(catalog)?;
        let in_window: Vec<&ProfileFile> = all
            .iter()
            .filter(|f| since.is_none_or(|since| DateTime::<Utc>::from(f.modified) >= since))
            .filter(|f| until.is_none_or(|until| start_of(f) <= until))
            .collect();
        let limit = query.limit.filter(|&n| n > 0).unwrap_or(PROFILES_SHOWN);
        let entries: Vec<TimelineEntry> = in_window
            .iter()
            .take(limit)
            .filter_map(|file| {
                let summary = match catalog.summary(file) {
                    Ok(summary) => Ok(summary),
                    // Deleted by retention since the listing: not a profile any more.
                    Err(err) if err.is_not_found() => return None,
                    Err(err) => Err(crate::error_chain(&err)),
                };
                let before = (file.kind == ProfileKind::Incident)
                    .then(|| interval_before(catalog, &all, file))
                    .flatten();
                Some(TimelineEntry {
                    file: (*file).clone(),
                    summary,
                    before,
                })
            })
            .collect();
        let view = ProfilesQueryView {
            since: query.since.as_deref().unwrap_or(""),
            until: query.until.as_deref().unwrap_or(""),
            shown: entries.len(),
            total: in_window.len(),
        };
        Ok(pages::profiles(dir, &entries, &view))
    })
    .await
}

async fn profile(State(app): State<App>, uri: Uri, Query(query): Query<TopQuery>) -> Response {
    let name = match paths::decode(tail(&uri, "/profiles/")) {
        Ok(name) => name,
        Err(refusal) => return app.respond(Err(refused(uri.path(), refusal))),
    };
    let requested = uri.path().to_owned();
    app.run(move |catalog, dir| {
        let file = catalog.file(&name).map_err(|r| refused(&requested, r))?;
        let analysis = catalog.analysis(&file).map_err(read_error)?;
        let around = if file.kind == ProfileKind::Trace {
            Neighbours {
                previous: None,
                next: None,
                before: None,
                counterpart: None,
            }
        } else {
            let all = newest_first(catalog)?;
            // Previous and next among the profiles that measure the same.
            let family: Vec<&ProfileFile> = all.iter().filter(|f| same_family(f, &file)).collect();
            let at = family.iter().position(|f| f.name == file.name);
            Neighbours {
                next: at
                    .and_then(|i| i.checked_sub(1))
                    .map(|i| family[i].name.clone()),
                previous: at.and_then(|i| family.get(i + 1)).map(|f| f.name.clone()),
                before: interval_before(catalog, &all, &file),
                counterpart: counterpart(&file.name)
                    .filter(|other| all.iter().any(|f| &f.name == other)),
            }
        };
        Ok(pages::profile(
            dir,
            &analysis,
            &around,
            query.top(),
            query.graph(),
        ))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
struct DiffQuery {
    base: Option<String>,
    target: Option<String>,
    normalize: Option<String>,
}

async fn diff(State(app): State<App>, Query(query): Query<DiffQuery>) -> Response {
    let given = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(str::to_owned);
    let (Some(base), Some(target)) = (given(&query.base), given(&query.target)) else {
        return app
            .run(|catalog, dir| {
                let choices = choices(catalog)?;
                Ok(pages::diff_picker(dir, &choices))
            })
            .await;
    };
    for (key, value) in [("base", &base), ("target", &target)] {
        if let Err(refusal) = paths::check_relative(value) {
            return app.respond(Err(refused(&format!("{key}={value}"), refusal)));
        }
    }
    let normalize = query.normalize.as_deref() != Some("0");
    app.run(move |catalog, dir| {
        let load = |key: &str, name: &str| -> Result<Arc<Analysis>, PageError> {
            let file = catalog
                .file(name)
                .map_err(|r| refused(&format!("{key}={name}"), r))?;
            catalog.analysis(&file).map_err(read_error)
        };
        let (base, target) = (load("base", &base)?, load("target", &target)?);
        // What the target measures (CPU, or off-CPU time for an off-CPU interval); the base
        // must have it too.
        let value = target.main().value;
        let to = target.main();
        let from = base.view(value);
        let svg = match from {
            None => Err(format!(
                "{} has no {} values: compare it with a profile that has.",
                base.file.name,
                value.noun()
            )),
            Some(_) if to.is_empty() => Err(format!(
                "{} has no samples: nothing to draw.",
                target.file.name
            )),
            Some(from) => {
                let title = format!("{} → {}", base.file.name, target.file.name);
                let subtitle = if normalize {
                    "red: a larger share than in the base; blue: a smaller one".to_owned()
                } else {
                    format!(
                        "red: more {} time than in the base; blue: less",
                        value.noun()
                    )
                };
                flame::differential(
                    &from.folded,
                    &to.folded,
                    normalize,
                    Labels {
                        title: &title,
                        subtitle: Some(&subtitle),
                        value,
                    },
                )
                .map(|svg| flame::without_onload(flame::for_html(&svg)))
                .map_err(|err| format!("the flame graph could not be drawn: {err}"))
            }
        };
        let empty = Top::default();
        let changes = pages::changes(from.map_or(&empty, |v| &v.top), &to.top);
        let choices = choices(catalog)?;
        let view = pages::DiffView {
            base: &base,
            target: &target,
            value,
            normalize,
            svg: svg.as_deref().map_err(String::clone),
            changes: &changes,
            choices: &choices,
        };
        Ok(pages::diff(dir, &view))
    })
    .await
}

/// Profiles to pick from in the diff form, newest first.
fn choices(catalog: &Catalog) -> Result<Vec<String>, PageError> {
    Ok(newest_first(catalog)?
        .into_iter()
        .take(500)
        .map(|f| f.name)
        .collect())
}

async fn download(State(app): State<App>, uri: Uri) -> Response {
    let relative = match paths::decode(tail(&uri, "/files/")) {
        Ok(relative) => relative,
        Err(refusal) => return app.respond(Err(refused(uri.path(), refusal))),
    };
    let catalog = app.catalog.clone();
    let requested = uri.path().to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let file = catalog
            .file(&relative)
            .map_err(|r| refused(&requested, r))?;
        let bytes = std::fs::read(&file.path).map_err(|source| {
            read_error(ReadError::Io {
                path: file.path.clone(),
                source,
            })
        })?;
        Ok::<_, PageError>((file, bytes))
    })
    .await
    .unwrap_or_else(|err| Err(PageError::Internal(err.to_string())));
    match read {
        Ok((file, bytes)) => {
            let base = file.name.rsplit('/').next().unwrap_or("profile.pb.gz");
            let safe: String = base
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() && c != '"' && c != '\\' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\""))
                .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    ),
                    (header::CONTENT_DISPOSITION, disposition),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Err(err) => app.respond(Err(err)),
    }
}

/// Anything else: 404, or 400 when it tries to leave the directory.
async fn fallback(State(app): State<App>, uri: Uri) -> Response {
    let path = uri.path();
    if let Err(Refusal::Outside(why)) = paths::decode(path.trim_start_matches('/')) {
        return app.respond(Err(refused(path, Refusal::Outside(why))));
    }
    app.respond(Err(PageError::NotFound(format!("{path}: no such page"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_this_server_only() {
        let hosts = Hosts::new(&["Profiler.Example".into()]);
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "10.1.2.3:9464",
            "[::1]:8080",
            "[::1]",
            "localhost",
            "LOCALHOST:8080",
            "localhost.",
            "app.localhost:1",
            "profiler.example",
            "profiler.example.:8080",
        ] {
            assert!(hosts.allow(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "profiler.example.evil",
            "[::1",
        ] {
            assert!(!hosts.allow(host), "{host}");
        }
    }

    #[test]
    fn times_from_names() {
        let t = name_time("cpu-20260101T120000Z-1.pb.gz").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T12:00:00+00:00");
        assert!(name_time("incident-20260101T120000Z.pb.gz").is_some());
        assert_eq!(name_time("offcpu-20260101T120000Z_01.pb.gz"), Some(t));
        assert_eq!(
            counterpart("cpu-20260101T120000Z_01.pb.gz").as_deref(),
            Some("offcpu-20260101T120000Z_01.pb.gz")
        );
        assert_eq!(
            counterpart("offcpu-20260101T120000Z.pb.gz").as_deref(),
            Some("cpu-20260101T120000Z.pb.gz")
        );
        assert_eq!(counterpart("incident-20260101T120000Z.pb.gz"), None);
        assert!(name_time("other.pb.gz").is_none());
    }
}
