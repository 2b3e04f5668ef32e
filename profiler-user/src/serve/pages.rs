//! The HTML of every page, rendered on the server with `maud`, which escapes every string it is
//! given: function, thread, process, service and file names come from profiles and are never
//! trusted. The one thing inserted as is, the flame graph, is inferno's SVG, which escapes names
//! itself (XML). A flame graph is the first `<svg>` of its page (its script looks for that one),
//! and the page calls its `init()` once loaded. A page with a second graph (a trace's off-CPU
//! time beside its CPU time) draws it without script and with IDs of its own, and links to the
//! page drawing that one first (`?graph=off-cpu`).

use std::{cell::RefCell, collections::HashMap, sync::Arc, time::SystemTime};

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{
    catalog::{Analysis, Summary, TraceRow, Usage, View},
    filters::{TraceFilter, TraceOrder, TraceQuery},
    paths::{link_path, query_value},
};
use crate::report::{
    files::{ProfileFile, ProfileKind},
    stacks::ValueKind,
    top::{FunctionStat, Top, format_nanos, percentage},
    utc,
};

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2327; }
nav { background: #263238; padding: .55em 1.5em; display: flex; gap: 1.5em; align-items: baseline; }
nav a { color: #fff; text-decoration: none; font-weight: 600; }
nav .dir { color: #b0bec5; margin-left: auto; font-family: ui-monospace, monospace; font-size: 12px; }
main { padding: 1em 1.5em 3em; }
h1 { font-size: 1.4em; margin: .3em 0 .6em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; margin: .4em 0 1em; }
th, td { padding: .2em .7em; text-align: left; border-bottom: 1px solid #e6e6e6; vertical-align: top; }
th { background: #f3f5f6; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, .mono { font-family: ui-monospace, monospace; font-size: 13px; }
.muted { color: #6b7780; }
.trigger { color: #b3261e; font-weight: 600; }
.grew { color: #b3261e; }
.shrank { color: #1a4fa0; }
.flame { border: 1px solid #ddd; margin: .4em 0 1em; max-height: 80vh; overflow-y: auto; }
td code { overflow-wrap: anywhere; }
td.links { white-space: nowrap; }
.flame > svg { display: block; width: 100%; }
.flame.still > svg { height: auto; }
form.filters { display: flex; gap: .8em; flex-wrap: wrap; align-items: flex-end; margin-bottom: .8em; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #4b565c; }
form.filters input, form.filters select { font: inherit; padding: .15em .3em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .15em 1em; margin: .4em 0 1em; }
dl.meta dt { color: #4b565c; }
dl.meta dd { margin: 0; }
.timeline { position: relative; height: 150px; background: #f6f8f9; border: 1px solid #dde3e6; margin: .5em 0 .2em; }
.timeline a { position: absolute; bottom: 0; min-width: 2px; background: #4a7fc1; opacity: .85; }
.timeline a:hover { opacity: 1; outline: 1px solid #000; }
.timeline a.incident { background: rgba(179, 38, 30, .22); border-top: 4px solid #b3261e; height: 100%; }
.timeline a.incident:hover { background: rgba(179, 38, 30, .35); }
.timeline a.incident span { position: absolute; top: 2px; left: 4px; right: 2px; font-size: 11px; color: #b3261e; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.timeline.off-cpu { height: 90px; }
.timeline a.off-cpu { background: #8a5cb8; }
.lane { font-size: 12px; color: #4b565c; margin-top: .6em; }
.split { display: flex; height: 14px; max-width: 40em; border: 1px solid #dde3e6; margin: .3em 0; }
.split .cpu { background: #e07b39; }
.split .off-cpu { background: #8a5cb8; }
.legend { display: inline-block; width: .8em; height: .8em; margin-right: .3em; vertical-align: -1px; }
.legend.cpu { background: #e07b39; }
.legend.off-cpu { background: #8a5cb8; }
.axis { display: flex; justify-content: space-between; font-size: 12px; color: #6b7780; margin-bottom: 1em; }
tr.incident td { background: #fdf1f0; }
"#;

fn layout(title: &str, dir: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — profiler" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    a href="/" { "Traces" }
                    a href="/profiles" { "Profiles" }
                    a href="/diff" { "Diff" }
                    span.dir title="served directory" { (dir) }
                }
                main { (body) }
            }
        }
    }
}

thread_local! {
    /// The script nonce of the page being drawn on this thread (the Content-Security-Policy
    /// of its answer names it; see `routes::guard`).
    static NONCE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Draws a page (`draw`) whose scripts carry `nonce`; without one they carry none, and the
/// policy lets none run.
pub fn with_nonce<T>(nonce: Option<&str>, draw: impl FnOnce() -> T) -> T {
    NONCE.with(|n| *n.borrow_mut() = nonce.map(str::to_owned));
    let drawn = draw();
    NONCE.with(|n| *n.borrow_mut() = None);
    drawn
}

/// The flame graph inline, started once the page is parsed. Its scripts (inferno's and the
/// page's) carry the page's nonce.
fn flame(svg: Option<Result<&str, &str>>) -> Markup {
    let nonce = NONCE.with(|n| n.borrow().clone());
    match svg {
        Some(Ok(svg)) => html! {
            div.flame { (PreEscaped(with_script_nonce(svg, nonce.as_deref()))) }
            // Started once the page is laid out (its width is final then). Deep stacks make tall
            // graphs: the box scrolls, and starts at the bottom (the roots).
            script nonce=[nonce.as_deref()] { (PreEscaped("window.addEventListener('load', function () { \
                if (typeof init === 'function') { init(); } \
                document.querySelectorAll('.flame').forEach(function (flame) { flame.scrollTop = flame.scrollHeight; }); });")) }
            p.muted { "Click a frame to zoom, Ctrl-F or the Search button (top right) to highlight functions matching a regular expression." }
        },
        Some(Err(err)) => html! { p.trigger { "The flame graph could not be drawn: " (err) } },
        None => html! { p.muted { "No samples: nothing to draw." } },
    }
}

/// `svg` (an inferno flame graph) with `nonce` on its one script element.
fn with_script_nonce<'a>(svg: &'a str, nonce: Option<&str>) -> std::borrow::Cow<'a, str> {
    const SCRIPT: &str = r#"<script type="text/ecmascript">"#;
    match nonce {
        Some(nonce) => svg
            .replacen(
                SCRIPT,
                &format!(r#"<script type="text/ecmascript" nonce="{nonce}">"#),
                1,
            )
            .into(),
        None => svg.into(),
    }
}

/// A second flame graph on a page: no script, IDs of its own (see `flame::still_flame_graph`).
fn still_flame(svg: Option<Result<&str, &str>>) -> Markup {
    match svg {
        Some(Ok(svg)) => html! { div.flame.still { (PreEscaped(svg)) } },
        Some(Err(err)) => html! { p.trigger { "The flame graph could not be drawn: " (err) } },
        None => html! { p.muted { "No samples: nothing to draw." } },
    }
}

/// The view a page draws first: the one asked for (`?graph=`) when it has samples, else the
/// profile's main one.
fn first_view(analysis: &Analysis, chosen: Option<ValueKind>) -> &View {
    chosen
        .and_then(|value| analysis.view(value))
        .filter(|view| !view.is_empty())
        .unwrap_or_else(|| analysis.main())
}

/// The views a page lists, in order: the first one, then the others with samples.
fn listed_views(analysis: &Analysis, chosen: Option<ValueKind>) -> Vec<&View> {
    let first = first_view(analysis, chosen);
    let mut views = vec![first];
    views.extend(analysis.drawn().filter(|v| v.value != first.value));
    views
}

/// The flame graphs of `views` (the first one with its script, the others still, each with a
/// link to `href` of its value, which draws it first); titled by value when more than one.
fn graphs(analysis: &Analysis, views: &[&View], href: &dyn Fn(ValueKind) -> String) -> Markup {
    let Some((first, others)) = views.split_first() else {
        return html! {};
    };
    html! {
        @if !others.is_empty() { h2 { (first.value.title()) } }
        (flame(analysis.flame_graph(first, false)))
        @for view in others {
            h2 { (view.value.title()) }
            (still_flame(analysis.flame_graph(view, true)))
            p.muted {
                "Hover over a frame for its share. "
                a href=(href(view.value)) { "Zoom and search this graph" } " (drawn first)."
            }
        }
    }
}

/// `?graph=off-cpu` on `base`, or `base` for CPU (the default).
fn graph_href(base: &str, value: ValueKind) -> String {
    match value {
        ValueKind::Cpu | ValueKind::Samples => base.to_owned(),
        _ => format!("{base}?graph={}", value.flag()),
    }
}

/// `12 samples, 120ms of CPU`, `40 switches, 4s off the CPU`.
fn amount(view: &View) -> String {
    let top = &view.top;
    let total = format_nanos(top.total);
    match view.value {
        ValueKind::OffCpu | ValueKind::Switches => {
            format!("{} switches, {total} off the CPU", top.count)
        }
        ValueKind::Cpu | ValueKind::Samples => format!("{} samples, {total} of CPU", top.count),
    }
}

/// CPU against off-CPU time: a bar and the figures, absolute and as shares of their sum.
fn split(cpu: i64, off_cpu: i64) -> Markup {
    let sum = cpu.max(0).saturating_add(off_cpu.max(0));
    let share = |part: i64| {
        if sum == 0 {
            0.0
        } else {
            100.0 * part.max(0) as f64 / sum as f64
        }
    };
    html! {
        div.split title="CPU time against time off the CPU" {
            span.cpu style=(format!("width:{:.2}%", share(cpu))) {}
            span.off-cpu style=(format!("width:{:.2}%", share(off_cpu))) {}
        }
        p #split {
            span.legend.cpu {} "On the CPU " strong { (format_nanos(cpu)) } " (" (percentage(cpu, sum).trim()) ")"
            " · " span.legend.off-cpu {} "off the CPU " strong { (format_nanos(off_cpu)) } " (" (percentage(off_cpu, sum).trim()) ")"
            " · " (format_nanos(sum)) " in all"
        }
    }
}

/// Heading of a view's top functions, when a page lists more than one view.
fn top_heading(view: &View, several: bool) -> &'static str {
    match (view.value.is_off_cpu(), several) {
        (true, _) => "Top functions off the CPU",
        (false, true) => "Top functions on the CPU",
        (false, false) => "Top functions",
    }
}

/// `1 thread`, `2 threads`, `3 processes`.
fn plural(n: usize, noun: &str) -> String {
    match (n, noun.ends_with('s')) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n} {noun}es"),
        _ => format!("{n} {noun}s"),
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "—".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn system_time(t: Option<SystemTime>) -> String {
    t.map_or_else(|| "—".to_owned(), utc)
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub fn trace_href(trace_id: &str) -> String {
    format!("/traces/{}", link_path(trace_id))
}

pub fn profile_href(name: &str) -> String {
    format!("/profiles/{}", link_path(name))
}

pub fn file_href(name: &str) -> String {
    format!("/files/{}", link_path(name))
}

pub fn diff_href(base: &str, target: &str) -> String {
    format!(
        "/diff?base={}&target={}",
        query_value(base),
        query_value(target)
    )
}

/// A link to `/` with the filters of `query` and one changed by `change`.
fn traces_href(query: &TraceQuery, change: impl FnOnce(&mut TraceQuery)) -> String {
    let mut query = query.clone();
    change(&mut query);
    let mut parts = Vec::new();
    for (key, value) in [
        ("service", &query.service),
        ("trace", &query.trace),
        ("since", &query.since),
        ("until", &query.until),
        ("sort", &query.sort),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            parts.push(format!("{key}={}", query_value(value)));
        }
    }
    if let Some(limit) = query.limit {
        parts.push(format!("limit={limit}"));
    }
    if parts.is_empty() {
        "/".to_owned()
    } else {
        format!("/?{}", parts.join("&"))
    }
}

/// A link to `/` sorted by `order`, with the other filters of `query`.
fn sort_href(query: &TraceQuery, order: TraceOrder) -> String {
    traces_href(query, |q| q.sort = order.key().map(str::to_owned))
}

/// A time from the trace index, `—` when its line does not say.
fn nanos(n: Option<u64>) -> String {
    n.map_or_else(
        || "—".to_owned(),
        |n| format_nanos(i64::try_from(n).unwrap_or(i64::MAX)),
    )
}

// ---------------------------------------------------------------------------------------------
// Traces

pub fn traces(
    dir: &str,
    rows: &[TraceRow],
    matched: usize,
    total: usize,
    query: &TraceQuery,
    filter: &TraceFilter,
) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let body = html! {
        h1 { "Traces" }
        form.filters method="get" action="/" {
            label { "Service" input type="text" name="service" value=(value(&query.service)) placeholder="part of a name"; }
            label { "Trace ID" input type="text" name="trace" value=(value(&query.trace)) placeholder="part of an ID" size="34"; }
            label { "Since" input type="text" name="since" value=(value(&query.since)) placeholder="15m or 2026-01-01T12:00Z"; }
            label { "Until" input type="text" name="until" value=(value(&query.until)) placeholder="time or duration ago"; }
            label { "Sort"
                select name="sort" {
                    @for order in TraceOrder::ALL {
                        option value=(order.key().unwrap_or("")) selected[filter.order == order] { (order.label()) }
                    }
                }
            }
            button type="submit" { "Filter" }
            a href="/" { "clear" }
        }
        @if total == 0 {
            p.muted {
                "No trace files yet in " code { (dir) "/traces" } ". Samples of threads that publish an "
                "OpenTelemetry trace context get one file per trace there."
            }
        } @else {
            p.muted {
                @if rows.len() < matched {
                    "Showing " (rows.len()) " of " (matched) " matching traces ("
                    a href=(traces_href(query, |q| q.limit = Some(matched))) { "show all" } "); "
                } @else {
                    (matched) " matching traces; "
                }
                (total) " in all."
            }
            table #traces {
                thead { tr {
                    th { "Trace ID" }
                    th { "Service" }
                    th { "First sample" }
                    th { a href=(traces_href(query, |q| q.sort = None)) title="newest first" { "Last sample" } }
                    th.num { a href=(sort_href(query, TraceOrder::Samples)) title="most samples first" { "Samples" } }
                    th.num { a href=(sort_href(query, TraceOrder::Cpu)) title="most CPU time first" { "CPU" } }
                    th.num { a href=(sort_href(query, TraceOrder::OffCpu)) title="most time off the CPU first (waiting)" { "Off-CPU" } }
                    th { "Top function" }
                } }
                tbody {
                    @for row in rows {
                        tr {
                            td { a href=(trace_href(&row.trace_id)) class="mono" { (row.trace_id) } }
                            td { (row.services.join(", ")) }
                            td.num { (time(row.first)) }
                            td.num { (time(row.last)) }
                            td.num { (row.sample_count.map_or_else(|| "—".to_owned(), |n| n.to_string())) }
                            td.num.cpu { (nanos(row.cpu_ns)) }
                            td.num.off-cpu { (nanos(row.off_cpu_ns)) }
                            td { code { (row.top_function.as_deref().unwrap_or("")) } }
                        }
                    }
                }
            }
        }
    };
    layout("Traces", dir, body)
}

/// A trace's page: its flame graphs (CPU, and off-CPU when the recording had it and the trace
/// waited; `graph` picks the one drawn first), the split between the two, its top functions,
/// processes and threads.
pub fn trace(
    dir: &str,
    row: Option<&TraceRow>,
    analysis: &Analysis,
    top_n: usize,
    graph: Option<ValueKind>,
) -> Markup {
    let id = row.map_or_else(
        || {
            analysis
                .file
                .name
                .trim_start_matches("traces/")
                .trim_end_matches(".pb.gz")
                .to_owned()
        },
        |r| r.trace_id.clone(),
    );
    let services: Vec<String> = match row {
        Some(row) if !row.services.is_empty() => row.services.clone(),
        _ => services_of(&analysis.processes),
    };
    let views = listed_views(analysis, graph);
    let several = views.len() > 1;
    let (cpu, off_cpu) = (
        analysis.view(ValueKind::Cpu),
        analysis.view(ValueKind::OffCpu),
    );
    let base = trace_href(&id);
    let body = html! {
        h1 { "Trace " code { (id) } }
        @if let Some(off_cpu) = off_cpu {
            (split(cpu.map_or(0, |v| v.top.total), off_cpu.top.total))
        }
        (graphs(analysis, &views, &|value| graph_href(&base, value)))
        dl.meta {
            dt { "Services" } dd { (if services.is_empty() { "—".to_owned() } else { services.join(", ") }) }
            dt { "First sample" } dd { (row.map_or_else(|| system_time(analysis.meta.start), |r| time(r.first))) }
            dt { "Last sample" } dd { (row.map_or_else(|| system_time(analysis.meta.end()), |r| time(r.last))) }
            @if let Some(cpu) = cpu { dt { "Samples" } dd { (amount(cpu)) } }
            @if let Some(off_cpu) = off_cpu { dt { "Off-CPU" } dd { (amount(off_cpu)) } }
            dt { "Processes" } dd {
                (analysis.processes.len()) " (PID "
                (analysis.processes.iter().filter_map(|p| p.thread.pid).map(|pid| pid.to_string()).collect::<Vec<_>>().join(", "))
                "), " (plural(analysis.threads.len(), "thread"))
            }
            dt { "File" } dd {
                a #download href=(file_href(&analysis.file.name)) download { "Download " code { (analysis.file.name) } }
                " (" (bytes(analysis.file.size)) ", pprof: "
                code { "go tool pprof -http=: " (analysis.file.name) }
                @if off_cpu.is_some_and(|v| !v.is_empty()) {
                    ", where it waited: " code { "go tool pprof -sample_index=off_cpu -http=: " (analysis.file.name) }
                }
                ")"
            }
        }
        @for view in &views {
            h2 { (top_heading(view, several)) }
            (top_table(&view.top, top_n))
        }
        h2 { "Processes" }
        (processes_table(&analysis.processes, &views))
        h2 { "Threads" }
        (threads_table(&analysis.threads, &views))
    };
    layout(&format!("Trace {id}"), dir, body)
}

fn services_of(processes: &[Usage]) -> Vec<String> {
    let mut services: Vec<String> = processes
        .iter()
        .flat_map(|p| p.services.iter().map(|s| s.to_string()))
        .collect();
    services.sort();
    services.dedup();
    services
}

// ---------------------------------------------------------------------------------------------
// Tables

fn top_table(top: &Top, n: usize) -> Markup {
    let rows = top.head(n);
    let unit = top.unit(rows);
    let sums: Vec<i64> = rows
        .iter()
        .scan(0, |sum, row| {
            *sum += row.flat;
            Some(*sum)
        })
        .collect();
    html! {
        @if rows.is_empty() {
            p.muted { "No samples." }
        } @else {
            p.muted {
                "Top " (rows.len()) " of " (top.functions.len()) " functions by self time; "
                @if top.value.is_off_cpu() {
                    (unit.format(top.total)) " off the CPU in " (top.count) " switches."
                } @else {
                    (unit.format(top.total)) " of CPU in " (top.count) " samples."
                }
            }
            table.top {
                thead { tr {
                    th.num { "flat" } th.num { "flat%" } th.num { "sum%" } th.num { "cum" } th.num { "cum%" } th { "function" }
                } }
                tbody {
                    @for (row, sum) in rows.iter().zip(&sums) {
                        tr {
                            td.num { (unit.format(row.flat)) }
                            td.num { (percentage(row.flat, top.total).trim()) }
                            td.num { (percentage(*sum, top.total).trim()) }
                            td.num { (unit.format(row.cum)) }
                            td.num { (percentage(row.cum, top.total).trim()) }
                            td { code { (row.name) } span.muted { (row.inlined.label()) } }
                        }
                    }
                }
            }
        }
    }
}

/// The headings of a usage table's value columns: count, time and share per view.
fn usage_headings(views: &[&View]) -> Markup {
    html! {
        @for view in views {
            @if view.value.is_off_cpu() {
                th.num { "switches" } th.num { "off-CPU" } th.num { "share" }
            } @else {
                th.num { "samples" } th.num { "CPU" } th.num { "share" }
            }
        }
    }
}

/// A usage row's value columns (see [`usage_headings`]).
fn usage_cells(usage: &Usage, views: &[&View]) -> Markup {
    html! {
        @for view in views {
            @let time = usage.value(view.value.time_kind());
            td.num { (usage.value(view.value.count_kind())) }
            td.num { (format_nanos(time)) }
            td.num { (percentage(time, view.top.total).trim()) }
        }
    }
}

fn processes_table(processes: &[Usage], views: &[&View]) -> Markup {
    html! {
        table.processes {
            thead { tr { th.num { "PID" } th { "process" } th.num { "threads" } (usage_headings(views)) th { "services" } } }
            tbody {
                @for p in processes {
                    tr {
                        td.num { (p.thread.pid.map_or_else(|| "—".to_owned(), |pid| pid.to_string())) }
                        td { code { (p.thread.comm) } }
                        td.num { (p.threads) }
                        (usage_cells(p, views))
                        td { (p.services.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")) }
                    }
                }
            }
        }
    }
}

fn threads_table(threads: &[Usage], views: &[&View]) -> Markup {
    html! {
        table.threads {
            thead { tr { th.num { "PID" } th { "process" } th.num { "TID" } th { "thread" } (usage_headings(views)) } }
            tbody {
                @for t in threads {
                    tr {
                        td.num { (t.thread.pid.map_or_else(|| "—".to_owned(), |pid| pid.to_string())) }
                        td { code { (t.thread.comm) } }
                        td.num { (t.thread.tid.map_or_else(|| "—".to_owned(), |tid| tid.to_string())) }
                        td { code { (t.thread.thread_name) } }
                        (usage_cells(t, views))
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Profiles

/// One profile of the timeline.
pub struct TimelineEntry {
    pub file: ProfileFile,
    pub summary: Result<Arc<Summary>, String>,
    /// The interval before it, for an incident's diff.
    pub before: Option<String>,
}

pub struct ProfilesQueryView<'a> {
    pub since: &'a str,
    pub until: &'a str,
    pub shown: usize,
    pub total: usize,
}

pub fn profiles(dir: &str, entries: &[TimelineEntry], view: &ProfilesQueryView<'_>) -> Markup {
    let body = html! {
        h1 { "Profiles" }
        form.filters method="get" action="/profiles" {
            label { "Since" input type="text" name="since" value=(view.since) placeholder="1h or 2026-01-01T12:00Z"; }
            label { "Until" input type="text" name="until" value=(view.until) placeholder="time or duration ago"; }
            button type="submit" { "Show" }
            a href="/profiles" { "clear" }
        }
        @if entries.is_empty() {
            p.muted { "No interval or incident profiles in this window of " code { (dir) } "." }
        } @else {
            (timeline(entries))
            p.muted {
                (view.shown) " of " (view.total) " profiles, newest first. Incidents are marked with what triggered them."
            }
            table #profiles {
                thead { tr {
                    th { "profile" } th { "start" } th { "kind" } th.num { "length" } th.num { "count" } th.num { "time" }
                    th.num title="CPU: cores busy on average; off-CPU: threads waiting on average" { "average" }
                    th { "top function" } th { "trigger" } th { "" }
                } }
                tbody {
                    @for entry in entries {
                        @let incident = entry.file.kind == ProfileKind::Incident;
                        tr.incident[incident] {
                            // Spaces around the name keep it a word of the page's text.
                            td { " " a href=(profile_href(&entry.file.name)) class="mono" { (entry.file.name) } " " }
                            @match &entry.summary {
                                Ok(summary) => {
                                    @let off_cpu = summary.value.is_off_cpu();
                                    td.num { (system_time(summary.meta.start)) }
                                    td { (entry.file.kind.as_str()) }
                                    td.num { (format_nanos(summary.meta.duration.as_nanos() as i64)) }
                                    td.num { (summary.count) (if off_cpu { " switches" } else { " samples" }) }
                                    td.num { (format_nanos(summary.total)) (if off_cpu { " off-CPU" } else { " CPU" }) }
                                    td.num { (average(summary)) }
                                    td { code { (summary.top_function.as_deref().unwrap_or("")) } }
                                    td.trigger { (summary.meta.trigger().map(|t| t.trim_start_matches("trigger: ")).unwrap_or("")) }
                                }
                                Err(err) => {
                                    td.num { "—" } td { (entry.file.kind.as_str()) }
                                    td.muted colspan="6" { (err) }
                                }
                            }
                            td.links {
                                a href=(file_href(&entry.file.name)) download { "pprof" }
                                @if let Some(before) = &entry.before {
                                    " · " a href=(diff_href(before, &entry.file.name)) { "diff vs interval before" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout("Profiles", dir, body)
}

/// Its time per second of its window: cores busy (CPU), threads waiting (off-CPU).
fn per_second(summary: &Summary) -> Option<f64> {
    let nanos = summary.meta.duration.as_nanos();
    (nanos > 0).then(|| summary.total as f64 / nanos as f64)
}

/// `0.42 cores` busy, `3.10 threads` waiting.
fn average(summary: &Summary) -> String {
    match per_second(summary) {
        None => "—".to_owned(),
        Some(n) if summary.value.is_off_cpu() => format!("{n:.2} threads"),
        Some(n) => format!("{n:.2} cores"),
    }
}

/// Bars on a time axis: intervals by the cores they used, incidents as red bands with the
/// trigger in their tooltip; off-CPU intervals in a lane of their own below, by the threads
/// that waited. Both lanes share the axis.
fn timeline(entries: &[TimelineEntry]) -> Markup {
    let windows: Vec<(&TimelineEntry, SystemTime, SystemTime, &Summary)> = entries
        .iter()
        .filter_map(|e| {
            let summary = e.summary.as_ref().ok()?;
            Some((e, summary.meta.start?, summary.meta.end()?, &**summary))
        })
        .collect();
    let Some(first) = windows.iter().map(|w| w.1).min() else {
        return html! {};
    };
    let last = windows.iter().map(|w| w.2).max().unwrap_or(first);
    let (off_cpu, cpu): (Vec<_>, Vec<_>) = windows
        .into_iter()
        .partition(|w| w.0.file.kind == ProfileKind::OffCpu);
    html! {
        @if !off_cpu.is_empty() && !cpu.is_empty() { div.lane { "CPU (cores busy)" } }
        @if !cpu.is_empty() { (lane(&cpu, first, last, "")) }
        @if !off_cpu.is_empty() {
            div.lane { "Off-CPU (threads waiting)" }
            (lane(&off_cpu, first, last, "off-cpu"))
        }
        div.axis { span { (utc(first)) } span { (utc(last)) } }
    }
}

type Window<'a> = (&'a TimelineEntry, SystemTime, SystemTime, &'a Summary);

/// One lane of the timeline, from `first` to `last`, each bar as high as its time per second
/// against the lane's highest.
fn lane(windows: &[Window<'_>], first: SystemTime, last: SystemTime, class: &str) -> Markup {
    let span = last
        .duration_since(first)
        .unwrap_or_default()
        .as_secs_f64()
        .max(1e-3);
    let peak = windows
        .iter()
        .filter(|w| w.0.file.kind != ProfileKind::Incident)
        .filter_map(|w| per_second(w.3))
        .fold(0.0, f64::max)
        .max(1e-9);
    html! {
        div.timeline.(class) {
            @for (entry, start, end, summary) in windows {
                @let left = start.duration_since(first).unwrap_or_default().as_secs_f64() / span * 100.0;
                @let width = (end.duration_since(*start).unwrap_or_default().as_secs_f64() / span * 100.0).max(0.15);
                @let incident = entry.file.kind == ProfileKind::Incident;
                @let used = per_second(summary).unwrap_or(0.0);
                @let height = if incident { 100.0 } else { (used / peak * 92.0).max(1.0) };
                @let tip = format!(
                    "{} {}: {} {} ({}{}){}",
                    entry.file.kind.as_str(),
                    utc(*start),
                    format_nanos(summary.total),
                    summary.value.noun(),
                    average(summary),
                    if summary.value.is_off_cpu() { " waiting" } else { "" },
                    summary.meta.trigger().map(|t| format!(", {t}")).unwrap_or_default()
                );
                a class=(entry.file.kind.as_str()) href=(profile_href(&entry.file.name)) title=(tip)
                    style=(format!("left:{left:.3}%;width:{width:.3}%;height:{height:.1}%")) {
                    @if let Some(trigger) = summary.meta.trigger() {
                        span { (trigger.trim_start_matches("trigger: ")) }
                    }
                }
            }
        }
    }
}

pub struct Neighbours {
    pub previous: Option<String>,
    pub next: Option<String>,
    /// The interval before (an incident's or an interval's), to diff against.
    pub before: Option<String>,
    /// The interval of the same window with the other value: `offcpu-X` for `cpu-X`, and the
    /// other way round.
    pub counterpart: Option<String>,
}

pub fn profile(
    dir: &str,
    analysis: &Analysis,
    around: &Neighbours,
    top_n: usize,
    graph: Option<ValueKind>,
) -> Markup {
    let name = &analysis.file.name;
    let meta = &analysis.meta;
    let views = listed_views(analysis, graph);
    let several = views.len() > 1;
    let base = profile_href(name);
    let shown = &analysis.processes[..analysis.processes.len().min(50)];
    let body = html! {
        h1 { (analysis.file.kind.as_str()) " " code { (name) } }
        (graphs(analysis, &views, &|value| graph_href(&base, value)))
        dl.meta {
            dt { "Window" } dd { (system_time(meta.start)) " to " (system_time(meta.end())) " (" (format_nanos(meta.duration.as_nanos() as i64)) ")" }
            @for view in &views {
                dt { (if view.value.is_off_cpu() { "Off-CPU" } else { "Samples" }) }
                dd { (amount(view)) " in " (plural(analysis.processes.len(), "process")) }
            }
            @if let Some(trigger) = meta.trigger() {
                dt { "Trigger" } dd.trigger { (trigger.trim_start_matches("trigger: ")) }
            }
            @for comment in meta.comments.iter().filter(|c| !c.starts_with("trigger:")) {
                dt { "Note" } dd { (comment) }
            }
            dt { "File" } dd {
                a #download href=(file_href(name)) download { "Download " code { (name) } } " (" (bytes(analysis.file.size)) ")"
            }
            dt { "See also" } dd {
                @if let Some(previous) = &around.previous { a href=(profile_href(previous)) { "← previous" } " · " }
                @if let Some(next) = &around.next { a href=(profile_href(next)) { "next →" } " · " }
                @if let Some(before) = &around.before { a href=(diff_href(before, name)) { "diff against the interval before" } " · " }
                @if let Some(other) = &around.counterpart {
                    a #counterpart href=(profile_href(other)) {
                        (if analysis.file.kind == ProfileKind::OffCpu { "CPU of this interval" } else { "off-CPU of this interval" })
                    }
                    " · "
                }
                a href="/profiles" { "all profiles" }
            }
        }
        @for view in &views {
            h2 { (top_heading(view, several)) }
            (top_table(&view.top, top_n))
        }
        h2 { "Processes" }
        (processes_table(shown, &views))
    };
    layout(name, dir, body)
}

// ---------------------------------------------------------------------------------------------
// Diff

/// A function's share in both profiles.
pub struct Change {
    pub name: Arc<str>,
    pub base_flat: f64,
    pub target_flat: f64,
    pub base_cum: f64,
    pub target_cum: f64,
}

impl Change {
    pub fn delta(&self) -> f64 {
        self.target_flat - self.base_flat
    }
}

/// Every function of either profile, with its flat and cum shares in each.
pub fn changes(base: &Top, target: &Top) -> Vec<Change> {
    let mut by_name: HashMap<Arc<str>, Change> = HashMap::new();
    let mut add = |top: &Top, f: &FunctionStat, is_base: bool| {
        let change = by_name.entry(f.name.clone()).or_insert_with(|| Change {
            name: f.name.clone(),
            base_flat: 0.0,
            target_flat: 0.0,
            base_cum: 0.0,
            target_cum: 0.0,
        });
        if is_base {
            change.base_flat = top.percent(f.flat);
            change.base_cum = top.percent(f.cum);
        } else {
            change.target_flat = top.percent(f.flat);
            change.target_cum = top.percent(f.cum);
        }
    };
    for f in &base.functions {
        add(base, f, true);
    }
    for f in &target.functions {
        add(target, f, false);
    }
    let mut changes: Vec<Change> = by_name.into_values().collect();
    changes.sort_by(|a, b| {
        b.delta()
            .total_cmp(&a.delta())
            .then_with(|| a.name.cmp(&b.name))
    });
    changes
}

pub struct DiffView<'a> {
    pub base: &'a Analysis,
    pub target: &'a Analysis,
    /// The value compared: the target's main one (CPU, or off-CPU time of `offcpu-*` files).
    pub value: ValueKind,
    pub normalize: bool,
    pub svg: Result<&'a str, String>,
    pub changes: &'a [Change],
    pub choices: &'a [String],
}

pub fn diff(dir: &str, view: &DiffView<'_>) -> Markup {
    let (base, target) = (&view.base.file.name, &view.target.file.name);
    let grew: Vec<&Change> = view
        .changes
        .iter()
        .filter(|c| c.delta() > 0.005)
        .take(25)
        .collect();
    let shrank: Vec<&Change> = view
        .changes
        .iter()
        .rev()
        .filter(|c| c.delta() < -0.005)
        .take(25)
        .collect();
    let toggle = if view.normalize {
        format!("{}&normalize=0", diff_href(base, target))
    } else {
        diff_href(base, target)
    };
    let total = |analysis: &Analysis| analysis.view(view.value).map_or(0, |v| v.top.total);
    let noun = view.value.noun();
    let body = html! {
        h1 { "Diff" }
        @match &view.svg {
            Ok(svg) => { (flame(Some(Ok(svg)))) }
            Err(err) => { p.muted { (err) } }
        }
        p {
            "From " a href=(profile_href(base)) { code { (base) } } " (" (format_nanos(total(view.base))) " " (noun) ") to "
            a href=(profile_href(target)) { code { (target) } } " (" (format_nanos(total(view.target))) " " (noun) "). "
            "Widths are the target's; " span.grew { "red grew" } ", " span.shrank { "blue shrank" } ", "
            @if view.normalize {
                "as shares of each profile's total (the base scaled to the target's). "
                a href=(toggle) { "Compare absolute " (noun) " time instead" } "."
            } @else {
                "in absolute " (noun) " time. " a href=(toggle) { "Compare shares instead" } "."
            }
        }
        (diff_form(view.choices, Some(base), Some(target), view.normalize))
        h2 { "Functions that grew" }
        (changes_table(&grew))
        h2 { "Functions that shrank" }
        (changes_table(&shrank))
    };
    layout("Diff", dir, body)
}

fn changes_table(changes: &[&Change]) -> Markup {
    html! {
        @if changes.is_empty() {
            p.muted { "None." }
        } @else {
            table.changes {
                thead { tr {
                    th.num { "flat% before" } th.num { "flat% after" } th.num { "change" }
                    th.num { "cum% before" } th.num { "cum% after" } th { "function" }
                } }
                tbody {
                    @for c in changes {
                        tr {
                            td.num { (format!("{:.2}%", c.base_flat)) }
                            td.num { (format!("{:.2}%", c.target_flat)) }
                            td.num.grew[c.delta() > 0.0].shrank[c.delta() < 0.0] { (format!("{:+.2}", c.delta())) }
                            td.num { (format!("{:.2}%", c.base_cum)) }
                            td.num { (format!("{:.2}%", c.target_cum)) }
                            td { code { (c.name) } }
                        }
                    }
                }
            }
        }
    }
}

/// Two profiles to compare, picked from `choices` (names, newest first).
pub fn diff_form(
    choices: &[String],
    base: Option<&str>,
    target: Option<&str>,
    normalize: bool,
) -> Markup {
    html! {
        form.filters method="get" action="/diff" {
            label { "Base (before)"
                select name="base" {
                    @for name in choices { option value=(name) selected[Some(name.as_str()) == base] { (name) } }
                }
            }
            label { "Target (after)"
                select name="target" {
                    @for name in choices { option value=(name) selected[Some(name.as_str()) == target] { (name) } }
                }
            }
            label { "Compare"
                select name="normalize" {
                    option value="1" selected[normalize] { "shares" }
                    option value="0" selected[!normalize] { "absolute time" }
                }
            }
            button type="submit" { "Diff" }
        }
    }
}

pub fn diff_picker(dir: &str, choices: &[String]) -> Markup {
    let body = html! {
        h1 { "Diff" }
        @if choices.len() < 2 {
            p.muted { "Two profiles are needed to compare." }
        } @else {
            p { "Pick two profiles: the flame graph of the target, coloured by which functions grew (red) or shrank (blue) since the base." }
            (diff_form(choices, choices.get(1).map(String::as_str), choices.first().map(String::as_str), true))
        }
    };
    layout("Diff", dir, body)
}

// ---------------------------------------------------------------------------------------------
// Errors

pub fn error(dir: &str, status: u16, message: &str) -> Markup {
    let body = html! {
        h1 { (status) }
        p { (message) }
        p { a href="/" { "Traces" } " · " a href="/profiles" { "Profiles" } }
    };
    layout(&status.to_string(), dir, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_filters() {
        let query = TraceQuery {
            service: Some("a&b".into()),
            since: Some("15m".into()),
            ..TraceQuery::default()
        };
        assert_eq!(
            traces_href(&query, |q| q.sort = Some("samples".into())),
            "/?service=a%26b&since=15m&sort=samples"
        );
        assert_eq!(traces_href(&TraceQuery::default(), |_| {}), "/");
        assert_eq!(
            diff_href("cpu-1.pb.gz", "incident-2.pb.gz"),
            "/diff?base=cpu-1.pb.gz&target=incident-2.pb.gz"
        );
    }

    #[test]
    fn strings_from_profiles_are_escaped() {
        let page = error("<dir>", 404, "<script>alert(1)</script>");
        let html = page.into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;dir&gt;"));
    }
}
