//! End to end in a real browser: record the traced fixture, serve the output with
//! `profiler serve`, and walk the dashboard in headless chromium from the trace list to the
//! trace's flame graph, and from the timeline to an interval's flame graph.

use std::{net::SocketAddr, path::Path, thread, time::Duration};

use anyhow::{Result, ensure};
use integration_tests::{
    Browser, C_TRACED, Fixture, Running, TRACED_EXE, assert_root, free_local_address, http_get,
    profiler_command, record_fixture, require_chromium, target_dir,
};

const READY: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_secs(5);

/// `profiler serve --listen <address> <dir>`, once it answers.
fn serve(dir: &Path, address: SocketAddr) -> Result<Running> {
    let mut cmd = profiler_command();
    cmd.args(["serve", "--listen", &address.to_string()])
        .arg(dir);
    let server = Running::spawn(cmd)?;
    for _ in 0..300 {
        if http_get(address, "/", STEP).is_ok_and(|r| r.status == 200) {
            return Ok(server);
        }
        thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("profiler serve did not answer on {address} within 30 s")
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn the_dashboard_leads_from_a_trace_id_to_its_flame_graph() -> Result<()> {
    assert_root();
    let Some(chromium) = require_chromium() else {
        return Ok(());
    };
    let fixture = Fixture::spawn_ready(TRACED_EXE, &[], READY)?;
    let out = tempfile::tempdir()?;
    record_fixture(&fixture, out.path(), 4, &[])?;
    let comm = fixture.expected_comm();
    drop(fixture);

    let address = free_local_address()?;
    let server = serve(out.path(), address)?;
    let browser = Browser::launch(&chromium)?;
    let artifacts = target_dir().join("test-artifacts");

    // The trace list, the trace's row, its page.
    let traced = &C_TRACED[0];
    browser.open(&format!("http://{address}/"))?;
    browser.click_link(traced.trace_id)?;
    let url = browser.url();
    ensure!(
        url.ends_with(&format!("/traces/{}", traced.trace_id)),
        "the trace link led to {url}"
    );
    let flame_graph = browser.text_of("svg")?;
    let hot = traced.function.text();
    ensure!(
        flame_graph.contains(hot),
        "the trace's flame graph does not show {hot}; its text: {}",
        &flame_graph[..flame_graph.len().min(2000)]
    );
    let page = browser.text_of("body")?;
    ensure!(
        page.contains(&comm),
        "the trace page does not name the fixture's process"
    );
    let shot = artifacts.join("dashboard-trace.png");
    browser.screenshot(&shot)?;
    eprintln!("screenshot: {}", shot.display());

    // The timeline, its interval profiles, their flame graphs: the fixture's hot function is
    // in them (a short last interval may hold few samples, so every one is opened).
    let timeline = format!("http://{address}/profiles");
    browser.open(&timeline)?;
    let links: Vec<String> = browser
        .text_of(r#"a[href^="/profiles/cpu-"]"#)?
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    ensure!(
        links.len() >= 2,
        "interval profiles on the timeline: {links:?}"
    );
    let mut showing = Vec::new();
    for link in &links {
        browser.open(&timeline)?;
        browser.click_link(link)?;
        if browser.text_of("svg")?.contains(hot) {
            showing.push(link.clone());
        }
    }
    eprintln!(
        "{hot} shows in {} of {} interval flame graphs",
        showing.len(),
        links.len()
    );
    ensure!(
        !showing.is_empty(),
        "no interval flame graph shows {hot}: {links:?}"
    );
    browser.screenshot(&artifacts.join("dashboard-interval.png"))?;

    server.signal(libc::SIGTERM)?;
    server.wait(READY)?.ensure_success()
}
