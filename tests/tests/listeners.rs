//! The HTTP listeners under attack and misuse: idle and half-sent connections are closed, a
//! connection over the cap is refused and counted while the recorder keeps writing, the web
//! pages answer only their own `Host` names and carry a strict Content-Security-Policy, the
//! timeline leaves out files linked out of the directory, and a taken port is one error line
//! that names the flag to change.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::symlink,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Browser, LoggedRun, Stack, assert_root, free_local_address, http_get, metric_value,
    profiler_command, record_command, require_chromium, run, synthetic_profile, synthetic_time,
    wrapped_record_command, write_synthetic,
};

const STEP: Duration = Duration::from_secs(10);
const START: Duration = Duration::from_secs(60);
/// Well above the 10 s header timeout, for a loaded machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(60);

/// `profiler serve --listen 127.0.0.1:0 <extra> <dir>` and the address its log names.
fn serve(dir: &Path, extra: &[&str]) -> Result<(LoggedRun, SocketAddr)> {
    let mut cmd = profiler_command();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg(dir);
    let mut server = LoggedRun::spawn(cmd)?;
    let address_of = |line: &str| -> Option<SocketAddr> {
        let (before, rest) = line.split_once(" on http://")?;
        before.contains("serving ").then_some(())?;
        rest.trim_end().strip_suffix('/')?.parse().ok()
    };
    let log = server.wait_for_log(START, "the serving line", |log| {
        log.lines().any(|l| address_of(l).is_some())
    })?;
    let address = log.lines().find_map(address_of).context("serving line")?;
    Ok((server, address))
}

/// The raw answer (head and body) to `GET path` with this `Host`.
fn raw_get(address: SocketAddr, path: &str, host: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, STEP)?;
    stream.set_read_timeout(Some(STEP))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// Whether the server closes `stream` within `within` (reading whatever it sends first).
fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<bool> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Reset: closed.
            Err(_) => return Ok(true),
        }
    }
    Ok(false)
}

fn empty_dir() -> Result<tempfile::TempDir> {
    Ok(tempfile::tempdir()?)
}

#[test]
fn idle_and_half_sent_connections_are_closed() -> Result<()> {
    let dir = empty_dir()?;
    let (_server, address) = serve(dir.path(), &[])?;
    let mut silent = TcpStream::connect(address)?;
    let mut half = TcpStream::connect(address)?;
    half.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")?;
    let opened = Instant::now();
    ensure!(
        closed_within(&mut silent, CLOSED_WITHIN)?,
        "a connection that sent nothing is still open after {:?}",
        opened.elapsed()
    );
    ensure!(
        closed_within(&mut half, CLOSED_WITHIN)?,
        "a connection that never finished its headers is still open after {:?}",
        opened.elapsed()
    );
    let home = http_get(address, "/", STEP)?;
    ensure!(home.status == 200, "the server no longer answers: {home:?}");
    Ok(())
}

#[test]
fn connections_over_the_cap_are_refused_and_the_server_answers_again() -> Result<()> {
    let dir = empty_dir()?;
    let (_server, address) = serve(dir.path(), &["--max-connections", "4"])?;
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(address))
        .collect::<std::io::Result<_>>()?;
    // Until the server has taken the four, a fifth may still get in.
    let mut refused = None;
    let deadline = Instant::now() + START;
    while refused.is_none() && Instant::now() < deadline {
        let answer = raw_get(address, "/", "localhost").unwrap_or_default();
        if answer.starts_with("HTTP/1.1 503") {
            refused = Some(answer);
        }
    }
    let refused = refused.context("no connection refused with four held open")?;
    ensure!(refused.contains("too many connections"), "{refused}");
    drop(held);
    let deadline = Instant::now() + START;
    loop {
        let answer = raw_get(address, "/", "localhost").unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no answer once the connections were closed: {answer}"
        );
    }
}

#[test]
fn pages_answer_their_own_names_only_under_a_strict_policy() -> Result<()> {
    let dir = empty_dir()?;
    let (_server, address) = serve(dir.path(), &[])?;
    // A DNS-rebinding page reaches the port under its own name.
    let foreign = raw_get(address, "/", "attacker.example:8080")?;
    ensure!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    ensure!(foreign.contains("--allowed-host"), "{foreign}");
    for host in [address.to_string(), format!("localhost:{}", address.port())] {
        let answer = raw_get(address, "/", &host)?;
        ensure!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let policy = head
            .lines()
            .find_map(|l| l.strip_prefix("content-security-policy: "))
            .with_context(|| format!("no Content-Security-Policy: {head}"))?;
        for directive in ["default-src 'none'", "frame-ancestors 'none'", "'nonce-"] {
            ensure!(policy.contains(directive), "{directive} missing: {policy}");
        }
        ensure!(!policy.contains("unsafe-inline'; script"), "{policy}");
        ensure!(head.contains("x-content-type-options: nosniff"), "{head}");
    }
    // A name of the operator's choosing.
    let (_named, named_address) = serve(dir.path(), &["--allowed-host", "profiler.example"])?;
    let answer = raw_get(named_address, "/", "profiler.example:8080")?;
    ensure!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}

/// The policy lets the flame graph's own scripts run: inferno's `init` (called by the page's
/// script) makes the graph fluid by removing the `width` of its `<svg>`.
#[test]
fn the_flame_graph_scripts_still_run_in_a_browser() -> Result<()> {
    let Some(chromium) = require_chromium() else {
        return Ok(());
    };
    let dir = empty_dir()?;
    let profile = synthetic_profile(
        &[Stack::new("main;policy_test_leaf", 10, 10, 5)],
        synthetic_time(0),
        Duration::from_secs(10),
        &[],
    );
    write_synthetic(dir.path(), "cpu-20260101T120000Z.pb.gz", &profile)?;
    let (_server, address) = serve(dir.path(), &[])?;
    let browser = Browser::launch(&chromium)?;
    browser.open(&format!(
        "http://{address}/profiles/cpu-20260101T120000Z.pb.gz"
    ))?;
    let deadline = Instant::now() + START;
    loop {
        if browser
            .text_of(".flame svg:not([width])")?
            .contains("policy_test_leaf")
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the flame graph's script did not run (its <svg> keeps its width)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_timeline_leaves_out_files_linked_out_of_the_directory() -> Result<()> {
    let outside = empty_dir()?;
    let dir = empty_dir()?;
    let profile = |frames: &'static str| {
        synthetic_profile(
            &[Stack::new(frames, 10, 10, 5)],
            synthetic_time(0),
            Duration::from_secs(10),
            &[],
        )
    };
    let secret = write_synthetic(
        outside.path(),
        "secret.pb.gz",
        &profile("main;outside_secret_function"),
    )?;
    write_synthetic(
        dir.path(),
        "cpu-20260101T120000Z.pb.gz",
        &profile("main;inside_function"),
    )?;
    symlink(&secret, dir.path().join("cpu-20260101T120010Z.pb.gz"))?;
    let (_server, address) = serve(dir.path(), &[])?;
    let page = http_get(address, "/profiles", STEP)?;
    ensure!(page.status == 200, "{page:?}");
    ensure!(
        page.body.contains("cpu-20260101T120000Z.pb.gz"),
        "{}",
        page.body
    );
    ensure!(
        !page.body.contains("outside_secret_function")
            && !page.body.contains("cpu-20260101T120010Z"),
        "the timeline shows a file outside the directory: {}",
        page.body
    );
    Ok(())
}

#[test]
fn a_taken_port_is_one_line_naming_the_listen_flag() -> Result<()> {
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let address = taken.local_addr()?.to_string();
    let dir = empty_dir()?;
    let mut cmd = profiler_command();
    cmd.args(["serve", "--listen", &address]).arg(dir.path());
    let output = run(cmd, START)?;
    output.ensure_error(&[&address, "another --listen address"])?;
    let line = output.last_stderr_line().unwrap_or("");
    ensure!(
        line.matches("already in use").count() == 1,
        "the cause said more than once: {line}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_taken_port_names_the_record_flags() -> Result<()> {
    assert_root();
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let address = taken.local_addr()?.to_string();
    let out = empty_dir()?;
    let web = record_command(out.path(), &["--serve", &address, "--duration", "5"]);
    let output = run(web, START)?;
    output.ensure_error(&[&address, "another --serve address"])?;
    let line = output.last_stderr_line().unwrap_or("");
    ensure!(!line.contains("--listen"), "record has no --listen: {line}");
    ensure!(line.matches("already in use").count() == 1, "{line}");
    let metrics = record_command(
        out.path(),
        &["--metrics-address", &address, "--duration", "5"],
    );
    let output = run(metrics, START)?;
    output.ensure_error(&[&address, "--metrics-address"])?;
    let line = output.last_stderr_line().unwrap_or("");
    ensure!(line.matches("already in use").count() == 1, "{line}");
    Ok(())
}

/// The incident of the issue: 900 idle connections to the metrics port of a recorder
/// whose descriptors are few. The recorder keeps writing its intervals, refuses the excess, and
/// counts it.
#[test]
#[ignore = "needs root: loads BPF programs"]
fn a_connection_flood_does_not_starve_the_recorder() -> Result<()> {
    assert_root();
    let out = empty_dir()?;
    let address = free_local_address()?;
    let bin = integration_tests::profiler_bin();
    let cmd = wrapped_record_command(
        &["prlimit", "--nofile=512:512", "--"],
        bin,
        out.path(),
        &[
            "--no-adaptive",
            "--interval",
            "1",
            "--metrics-address",
            &address.to_string(),
        ],
    );
    let mut recorder = LoggedRun::spawn(cmd)?;
    recorder.wait_until_recording(START)?;
    let mut held = Vec::new();
    for _ in 0..900 {
        match TcpStream::connect_timeout(&address, STEP) {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    let intervals = |dir: &Path| -> Result<usize> {
        Ok(fs::read_dir(dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("cpu-"))
            .count())
    };
    let before = intervals(out.path())?;
    // Five more intervals written while the connections are held.
    let deadline = Instant::now() + START;
    while intervals(out.path())? < before + 5 {
        ensure!(
            Instant::now() < deadline,
            "intervals stopped while connections were held ({} then {}); log:\n{}",
            before,
            intervals(out.path())?,
            recorder.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
    let log = recorder.log();
    ensure!(
        !log.contains("Too many open files"),
        "descriptors ran out:\n{log}"
    );
    // The scrape gets in once the held connections are gone.
    let deadline = Instant::now() + START;
    let scrape = loop {
        if let Ok(response) = http_get(address, "/metrics", STEP)
            && response.status == 200
        {
            break response.body;
        }
        ensure!(Instant::now() < deadline, "no scrape after the flood");
        std::thread::sleep(Duration::from_millis(200));
    };
    let refused = metric_value(
        &scrape,
        "profiler_connections_refused_total{listener=\"metrics\"}",
    )
    .context("no refused-connections series")?;
    ensure!(refused >= 800.0, "{refused} refused of 900");
    Ok(())
}
