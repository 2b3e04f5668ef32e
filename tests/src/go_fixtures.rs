//! The Go labels fixture (fixtures/go/labels/main.go), built by build.rs with every toolchain of
//! fixtures/go/toolchains.txt, and what it publishes.

use crate::{TracedFn, Want};

/// `version=full,stripped;...` from build.rs.
const BUILT: &str = env!("FIXTURE_GO_LABELS");
const TOOLCHAINS: &str = include_str!("../fixtures/go/toolchains.txt");

/// One build of the fixture.
#[derive(Clone, Copy, Debug)]
pub struct GoFixture {
    /// The toolchain's version, e.g. `1.21.13`.
    pub version: &'static str,
    /// Built with DWARF and symbols.
    pub full: &'static str,
    /// Built with `-ldflags="-s -w"`.
    pub stripped: &'static str,
}

/// Every pinned toolchain's version, installed or not.
pub fn go_versions() -> Vec<&'static str> {
    TOOLCHAINS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().next())
        .collect()
}

/// The fixture built with `version`; `None` when that toolchain was not installed at build time
/// (`cargo xtask setup` installs it).
pub fn go_fixture(version: &str) -> Option<GoFixture> {
    BUILT.split(';').find_map(|entry| {
        let (v, paths) = entry.split_once('=')?;
        let (full, stripped) = paths.split_once(',')?;
        (v == version).then_some(GoFixture {
            version: v,
            full,
            stripped,
        })
    })
}

/// The fixture's goroutines under a fixed trace: Go names as Go writes them.
pub const GO_TRACED: [TracedFn<'static>; 2] = [
    TracedFn {
        function: Want::Exact("main.(*server).handle"),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
        span_id: Some("00f067aa0ba902b7"),
        labels: &[("http.route", "/checkout")],
        absent: &["service_name"],
    },
    TracedFn {
        function: Want::Exact("main.(*worker).process"),
        trace_id: "0af7651916cd43dd8448eb211c80319c",
        span_id: Some("b7ad6b7169203331"),
        labels: &[],
        absent: &["http.route", "service_name"],
    },
];

/// The goroutine without labels.
pub const GO_UNLABELLED: Want<'static> = Want::Exact("main.unlabelled");
/// The goroutine that switches every 2 ms between two traces, each with its own hot function,
/// and collects garbage between them (a label set's address may be reused by the next).
pub const GO_CHURN: [(Want<'static>, &str); 2] = [
    (
        Want::Exact("main.(*server).churn"),
        "c1a2b3c4d5e6f708192a3b4c5d6e7f80",
    ),
    (
        Want::Exact("main.(*server).rechurn"),
        "00c2b3c4d5e6f708192a3b4c5d6e7f81",
    ),
];
