//! `profiler serve` over HTTP: the traces list with its filters and order, a trace's page (its
//! flame graph inline, its top functions, threads and processes, its download), the timeline
//! with the incident and its diff, the diff page; off-CPU recordings (a trace's CPU and off-CPU
//! graphs and their split, the list by off-CPU time, off-CPU intervals on the timeline); every path out of the directory refused with
//! 400 (raw and encoded `..`, encoded slashes, absolute paths, symlinks leaving it); pages that
//! keep working while files come and go. `record --serve` serves a recording as it runs (root).

use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::symlink,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use integration_tests::{
    Fixture, HOT_C, HttpResponse, LoggedRun, SYNTHETIC_BLOCKED_FUNCTION, SYNTHETIC_INCIDENT,
    SYNTHETIC_TRACES, SYNTHETIC_TRIGGER, SYNTHETIC_WAITING_TRACE, Stack, TEST_FREQUENCY,
    assert_root, http_get, http_get_bytes, profiler_command, record_command,
    synthetic_off_cpu_recording, synthetic_profile, synthetic_recording, synthetic_time,
    write_synthetic,
};

const STEP: Duration = Duration::from_secs(10);
const START: Duration = Duration::from_secs(30);

/// `profiler serve --listen 127.0.0.1:0 <dir>` and the address its log names.
fn serve(dir: &Path) -> Result<(LoggedRun, SocketAddr)> {
    let mut cmd = profiler_command();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).arg(dir);
    let mut server = LoggedRun::spawn(cmd)?;
    let address = wait_for_address(&mut server)?;
    Ok((server, address))
}

/// The address of the `serving <dir> on http://<address>/` log line (not the metrics
/// server's `serving metrics on http://<address>/metrics …`).
fn wait_for_address(run: &mut LoggedRun) -> Result<SocketAddr> {
    let address_of = |line: &str| -> Option<SocketAddr> {
        let (before, rest) = line.split_once(" on http://")?;
        before.contains("serving ").then_some(())?;
        rest.trim_end().strip_suffix('/')?.parse().ok()
    };
    let log = run.wait_for_log(START, "the serving line", |log| {
        log.lines().any(|l| address_of(l).is_some())
    })?;
    log.lines().find_map(address_of).context("serving line")
}

fn get(address: SocketAddr, path: &str) -> Result<HttpResponse> {
    http_get(address, path, STEP)
}

fn get_ok(address: SocketAddr, path: &str) -> Result<String> {
    let response = get(address, path)?;
    ensure!(
        response.status == 200,
        "GET {path}: {} {}",
        response.status,
        response.body
    );
    Ok(response.body)
}

/// The trace IDs the traces list links to, in page order.
fn listed_traces(page: &str) -> Vec<String> {
    page.split("<a href=\"/traces/")
        .skip(1)
        .filter_map(|rest| {
            let (id, after) = rest.split_once('"')?;
            // The link's text is the trace ID.
            let text = after.split_once('>')?.1.split_once("</a>")?.0;
            (text == id).then(|| id.to_owned())
        })
        .collect()
}

#[test]
fn pages_list_traces_and_draw_their_flame_graphs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    let (_server, address) = serve(dir.path())?;
    let [a, b] = SYNTHETIC_TRACES;

    // Newest first (b's last sample is a second after a's), filters, sort by samples.
    let page = get_ok(address, "/")?;
    ensure!(listed_traces(&page) == [b, a], "{page}");
    ensure!(
        page.contains("checkout_hot_leaf") && page.contains("checkout"),
        "{page}"
    );
    ensure!(listed_traces(&get_ok(address, "/?sort=samples")?) == [a, b]);
    ensure!(listed_traces(&get_ok(address, "/?trace=0AF7")?) == [b]);
    ensure!(listed_traces(&get_ok(address, "/?service=CHECK")?).len() == 2);
    ensure!(listed_traces(&get_ok(address, "/?service=nobody")?).is_empty());
    let since = get_ok(address, "/?since=2026-01-01T12:00:20.500Z")?;
    ensure!(listed_traces(&since) == [b], "{since}");
    let until = get_ok(address, "/?until=2026-01-01T12:00:00.500Z")?;
    ensure!(listed_traces(&until) == [a], "{until}");
    ensure!(listed_traces(&get_ok(address, "/?limit=1")?) == [b]);
    ensure!(get(address, "/?since=whenever")?.status == 400);

    // A trace's page: the flame graph inline, top functions, threads and processes, download.
    let page = get_ok(address, &format!("/traces/{a}"))?;
    let svg = page.find("<svg").context("no inline <svg>")?;
    ensure!(
        page[svg..].contains("checkout_hot_leaf"),
        "the flame graph lacks the hot function"
    );
    for text in [
        "synthetic200 (200)",
        "worker-201 (201)",
        "Top functions",
        "Processes",
        "Threads",
        "worker-201",
        &format!("href=\"/files/traces/{a}.pb.gz\""),
    ] {
        ensure!(page.contains(text), "the trace page lacks {text:?}");
    }
    ensure!(
        !page.contains("payment_hot_leaf"),
        "another trace's function"
    );
    let (status, bytes) = http_get_bytes(address, &format!("/files/traces/{a}.pb.gz"), STEP)?;
    ensure!(status == 200);
    ensure!(
        bytes == fs::read(dir.path().join(format!("traces/{a}.pb.gz")))?,
        "download differs"
    );
    ensure!(get(address, &format!("/traces/{}", "ab".repeat(16)))?.status == 404);
    ensure!(get(address, "/traces/not-a-trace")?.status == 400);

    // The timeline: intervals and the incident with its trigger, linked to its diff.
    let page = get_ok(address, "/profiles")?;
    for name in [
        "cpu-20260101T120000Z.pb.gz",
        "cpu-20260101T120010Z.pb.gz",
        "cpu-20260101T120020Z.pb.gz",
        SYNTHETIC_INCIDENT,
    ] {
        ensure!(
            page.contains(&format!("href=\"/profiles/{name}\"")),
            "no link to {name}"
        );
    }
    let trigger = SYNTHETIC_TRIGGER
        .trim_start_matches("trigger: ")
        .replace('>', "&gt;");
    ensure!(
        page.contains(&trigger),
        "the incident's trigger is not shown:\n{page}"
    );
    let diff = format!("/diff?base=cpu-20260101T120010Z.pb.gz&amp;target={SYNTHETIC_INCIDENT}");
    ensure!(
        page.contains(&diff),
        "no diff against the interval before:\n{page}"
    );

    let page = get_ok(address, "/profiles/cpu-20260101T120000Z.pb.gz")?;
    let svg = page.find("<svg").context("no inline <svg>")?;
    ensure!(page[svg..].contains("synthetic_hot_leaf"));
    ensure!(page.contains("inlined_helper"));
    let page = get_ok(address, &format!("/profiles/{SYNTHETIC_INCIDENT}"))?;
    ensure!(page.contains(&trigger) && page.contains("diff against the interval before"));

    // The diff: a differential graph, and the function only the incident has grew.
    let page = get_ok(address, &diff.replace("&amp;", "&"))?;
    let svg = page.find("<svg").context("no inline <svg>")?;
    ensure!(page[svg..].contains("incident_only_function"));
    let grew = page
        .find("Functions that grew")
        .context("no growth table")?;
    let shrank = page
        .find("Functions that shrank")
        .context("no shrink table")?;
    ensure!(
        page[grew..shrank].contains("incident_only_function"),
        "{page}"
    );
    ensure!(page[shrank..].contains("checkout_hot_leaf"), "{page}");
    let picker = get_ok(address, "/diff")?;
    ensure!(picker.contains("name=\"base\"") && picker.contains("name=\"target\""));
    Ok(())
}

/// The outermost `<svg>` elements of a page (a flame graph nests one), in order.
fn svgs(page: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let (mut depth, mut start, mut at) = (0, 0, 0);
    while let Some(next) = page[at..].find("<svg").map(|i| at + i) {
        let close = page[at..].find("</svg>").map(|i| at + i);
        match close {
            Some(close) if close < next => {
                depth -= 1;
                if depth == 0 {
                    found.push(&page[start..close + "</svg>".len()]);
                }
                at = close + 1;
            }
            _ => {
                if depth == 0 {
                    start = next;
                }
                depth += 1;
                at = next + 1;
            }
        }
    }
    while depth > 0 {
        let Some(close) = page[at..].find("</svg>").map(|i| at + i) else {
            break;
        };
        depth -= 1;
        if depth == 0 {
            found.push(&page[start..close + "</svg>".len()]);
        }
        at = close + 1;
    }
    found
}

#[test]
fn a_trace_page_shows_where_the_time_went_on_and_off_the_cpu() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_off_cpu_recording(dir.path())?;
    let (_server, address) = serve(dir.path())?;
    let [a, b] = SYNTHETIC_TRACES;
    let c = SYNTHETIC_WAITING_TRACE;

    // The list: CPU and off-CPU columns from the index, sorted by either.
    let page = get_ok(address, "/")?;
    ensure!(listed_traces(&page) == [b, a, c], "newest first: {page}");
    for text in [
        ">CPU</a>",
        ">Off-CPU</a>",
        "sort=off-cpu",
        "most off-CPU time",
    ] {
        ensure!(page.contains(text), "the traces list lacks {text:?}");
    }
    // a: 550 ms of CPU, 900 ms off it; b: 250 ms, none; c: none, 1 s.
    for cell in ["550ms", "900ms", "250ms", "1s"] {
        ensure!(
            page.contains(&format!(">{cell}</td>")),
            "no {cell} cell: {page}"
        );
    }
    ensure!(listed_traces(&get_ok(address, "/?sort=off-cpu")?) == [c, a, b]);
    ensure!(listed_traces(&get_ok(address, "/?sort=cpu")?) == [a, b, c]);
    ensure!(listed_traces(&get_ok(address, "/?sort=off-cpu&limit=1")?) == [c]);

    // A trace that waited: the CPU graph (live) first, the off-CPU one (still) below, the
    // split, both top tables.
    let page = get_ok(address, &format!("/traces/{a}"))?;
    let graphs = svgs(&page);
    ensure!(
        graphs.len() == 2,
        "{} graphs on the trace page",
        graphs.len()
    );
    ensure!(graphs[0].contains("CPU time") && graphs[0].contains("checkout_hot_leaf"));
    ensure!(
        graphs[0].contains("<script"),
        "the first graph zooms and searches"
    );
    ensure!(
        !graphs[0].contains(SYNTHETIC_BLOCKED_FUNCTION),
        "{}",
        graphs[0]
    );
    ensure!(graphs[1].contains("Off-CPU time") && graphs[1].contains(SYNTHETIC_BLOCKED_FUNCTION));
    ensure!(graphs[1].contains("µs off-CPU") && !graphs[1].contains("<script"));
    ensure!(
        !graphs[1].contains("id=\"frames\""),
        "the second graph's IDs are its own"
    );
    let split = page.find("id=\"split\"").context("no split")?;
    let split = &page[split..split + page[split..].find("</p>").context("split end")?];
    for text in ["550ms", "37.93%", "900ms", "62.07%", "1.45s in all"] {
        ensure!(split.contains(text), "the split lacks {text}: {split}");
    }
    for text in [
        "Top functions on the CPU",
        "Top functions off the CPU",
        "-sample_index=off_cpu",
        "switches",
        &format!("href=\"/traces/{a}?graph=off-cpu\""),
    ] {
        ensure!(page.contains(text), "the trace page lacks {text:?}");
    }
    // ?graph=off-cpu: the off-CPU graph first, live.
    let page = get_ok(address, &format!("/traces/{a}?graph=off-cpu"))?;
    let graphs = svgs(&page);
    ensure!(graphs.len() == 2);
    ensure!(graphs[0].contains(SYNTHETIC_BLOCKED_FUNCTION) && graphs[0].contains("<script"));
    ensure!(graphs[1].contains("checkout_hot_leaf") && !graphs[1].contains("<script"));
    ensure!(
        page.contains(&format!("href=\"/traces/{a}\"")),
        "a way back to CPU first"
    );

    // A trace that never waited: CPU only, no empty graph.
    let page = get_ok(address, &format!("/traces/{b}"))?;
    ensure!(svgs(&page).len() == 1, "{page}");
    ensure!(!page.contains("Off-CPU time</h2>") && !page.contains("Top functions off the CPU"));
    // A trace that only waited: its off-CPU graph, escaped.
    let page = get_ok(address, &format!("/traces/{c}"))?;
    let graphs = svgs(&page);
    ensure!(
        graphs.len() == 1 && graphs[0].contains("flush_&lt;script&gt;"),
        "{page}"
    );
    ensure!(
        !page.contains("<script>alert"),
        "a frame name became markup"
    );
    ensure!(page.contains("Top functions off the CPU"));
    // A trace of a recording without off-CPU is as before: one graph, no split.
    let plain = tempfile::tempdir()?;
    synthetic_recording(plain.path())?;
    let (_plain_server, plain_address) = serve(plain.path())?;
    let page = get_ok(plain_address, &format!("/traces/{a}"))?;
    ensure!(
        svgs(&page).len() == 1 && !page.contains("id=\"split\""),
        "{page}"
    );
    ensure!(!page.contains("Top functions on the CPU") && page.contains("Top functions"));
    Ok(())
}

#[test]
fn the_timeline_shows_off_cpu_intervals_and_opens_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_off_cpu_recording(dir.path())?;
    let (_server, address) = serve(dir.path())?;
    let page = get_ok(address, "/profiles")?;
    for name in [
        "cpu-20260101T120000Z.pb.gz",
        "offcpu-20260101T120000Z.pb.gz",
        "offcpu-20260101T120010Z.pb.gz",
        "offcpu-20260101T120020Z.pb.gz",
        SYNTHETIC_INCIDENT,
    ] {
        ensure!(
            page.contains(&format!("href=\"/profiles/{name}\"")),
            "no link to {name}"
        );
    }
    let lane = page
        .find("class=\"timeline off-cpu\"")
        .context("no off-CPU lane")?;
    let lane = &page[lane..lane + page[lane..].find("</div>").context("lane end")?];
    ensure!(
        lane.matches("href=\"/profiles/offcpu-").count() == 3 && !lane.contains("/profiles/cpu-"),
        "{lane}"
    );
    ensure!(lane.contains("threads waiting"), "{lane}");
    ensure!(page.contains("Off-CPU (threads waiting)"));
    ensure!(
        page.contains(" switches</td>") && page.contains(" off-CPU</td>"),
        "{page}"
    );

    let name = "offcpu-20260101T120010Z.pb.gz";
    let page = get_ok(address, &format!("/profiles/{name}"))?;
    let graphs = svgs(&page);
    ensure!(graphs.len() == 1, "{page}");
    ensure!(graphs[0].contains(&format!("Off-CPU time: {name}")));
    ensure!(
        graphs[0].contains(SYNTHETIC_BLOCKED_FUNCTION)
            && graphs[0].contains("pthread_cond_timedwait")
    );
    ensure!(page.contains("Top functions off the CPU"));
    for link in [
        "href=\"/profiles/offcpu-20260101T120000Z.pb.gz\">← previous",
        "href=\"/profiles/offcpu-20260101T120020Z.pb.gz\">next →",
        "href=\"/profiles/cpu-20260101T120010Z.pb.gz\">CPU of this interval",
        "/diff?base=offcpu-20260101T120000Z.pb.gz&amp;target=offcpu-20260101T120010Z.pb.gz",
    ] {
        ensure!(
            page.contains(link),
            "the off-CPU profile page lacks {link:?}"
        );
    }
    let page = get_ok(address, "/profiles/cpu-20260101T120010Z.pb.gz")?;
    ensure!(
        page.contains("href=\"/profiles/offcpu-20260101T120010Z.pb.gz\">off-CPU of this interval"),
        "{page}"
    );
    ensure!(page.contains("href=\"/profiles/cpu-20260101T120000Z.pb.gz\">← previous"));

    // The diff of two off-CPU intervals, in off-CPU time.
    let page = get_ok(
        address,
        "/diff?base=offcpu-20260101T120000Z.pb.gz&target=offcpu-20260101T120010Z.pb.gz",
    )?;
    let graphs = svgs(&page);
    ensure!(
        graphs.len() == 1 && graphs[0].contains("µs off-CPU"),
        "{page}"
    );
    // An off-CPU interval against a CPU one: said, not drawn.
    let page = get_ok(
        address,
        "/diff?base=cpu-20260101T120000Z.pb.gz&target=offcpu-20260101T120010Z.pb.gz",
    )?;
    ensure!(
        svgs(&page).is_empty() && page.contains("has no off-CPU values"),
        "{page}"
    );
    let (status, bytes) = http_get_bytes(address, &format!("/files/{name}"), STEP)?;
    ensure!(status == 200 && bytes == fs::read(dir.path().join(name))?);
    Ok(())
}

#[test]
fn paths_out_of_the_directory_get_400_and_a_warning() -> Result<()> {
    let outside = tempfile::tempdir()?;
    let secret = "secret profile bytes";
    fs::write(outside.path().join("secret.pb.gz"), secret)?;
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    symlink(
        outside.path().join("secret.pb.gz"),
        dir.path().join("leak.pb.gz"),
    )?;
    symlink(outside.path(), dir.path().join("out"))?;
    let secret_path = outside.path().join("secret.pb.gz");
    let absolute = secret_path.to_str().context("UTF-8 path")?;
    let [a, _] = SYNTHETIC_TRACES;
    let (mut server, address) = serve(&dir.path().join("traces"))?;
    // Served from traces/: its parent holds the intervals, one `..` away.
    let attempts = [
        "/files/../cpu-20260101T120000Z.pb.gz".to_owned(),
        "/files/%2e%2e/cpu-20260101T120000Z.pb.gz".to_owned(),
        "/files/%2E%2E%2Fcpu-20260101T120000Z.pb.gz".to_owned(),
        "/files/..%2fleak.pb.gz".to_owned(),
        format!("/files/.%2f{a}.pb.gz"),
        format!("/files/{a}.pb.gz%2f"),
        format!("/files/{absolute}"),
        format!("/files/%2F{}", absolute.trim_start_matches('/')),
        "/profiles/../../../../../../etc/passwd".to_owned(),
        "/profiles/%2e%2e/%2e%2e/%2e%2e/etc/passwd".to_owned(),
        "/traces/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/traces/../../etc/passwd".to_owned(),
        "/diff?base=../cpu-20260101T120000Z.pb.gz&target=x.pb.gz".to_owned(),
        format!("/diff?base={a}.pb.gz&target={absolute}"),
        "/../etc/passwd".to_owned(),
        "/%2e%2e/%2e%2e/etc/passwd".to_owned(),
    ];
    // The same through symlinks inside a directory served from its root.
    let (mut root_server, root) = serve(dir.path())?;
    let through_links = [
        "/files/leak.pb.gz",
        "/files/out/secret.pb.gz",
        "/profiles/leak.pb.gz",
    ];
    for (server, path) in attempts
        .iter()
        .map(|p| (address, p.as_str()))
        .chain(through_links.iter().map(|p| (root, *p)))
    {
        let response = get(server, path)?;
        ensure!(
            response.status == 400,
            "GET {path}: {} instead of 400: {}",
            response.status,
            response.body
        );
        ensure!(!response.body.contains(secret) && !response.body.contains("root:x:0"));
    }
    // Still fine: plain names, a missing one, a hidden temporary.
    ensure!(http_get_bytes(address, &format!("/files/{a}.pb.gz"), STEP)?.0 == 200);
    ensure!(get(address, "/files/none.pb.gz")?.status == 404);
    fs::write(dir.path().join(".cpu-x.pb.gz.tmp"), "half")?;
    ensure!(get(root, "/files/.cpu-x.pb.gz.tmp")?.status == 404);

    let warnings = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("refused"))
            .count()
    };
    let log = server.wait_for_log(STEP, "a warning per refusal", |log| {
        warnings(log) >= attempts.len()
    })?;
    ensure!(warnings(&log) == attempts.len(), "{log}");
    let log = root_server.wait_for_log(STEP, "a warning per refusal", |log| {
        warnings(log) >= through_links.len()
    })?;
    ensure!(log.contains("symlink"), "{log}");
    Ok(())
}

#[test]
fn pages_keep_working_while_files_come_and_go() -> Result<()> {
    let dir = tempfile::tempdir()?;
    synthetic_recording(dir.path())?;
    // A name whose file is gone (a dangling link), and an index line of a deleted trace.
    symlink(
        dir.path().join("gone.pb.gz"),
        dir.path().join("cpu-20260101T115950Z.pb.gz"),
    )?;
    let [a, b] = SYNTHETIC_TRACES;
    fs::remove_file(dir.path().join(format!("traces/{b}.pb.gz")))?;
    let (_server, address) = serve(dir.path())?;
    ensure!(listed_traces(&get_ok(address, "/")?) == [a]);
    get_ok(address, "/profiles")?;

    // A writer replaces, adds and deletes files as a recorder and its retention do.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (stop, out) = (stop.clone(), dir.path().to_owned());
        thread::spawn(move || -> Result<u64> {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let profile = synthetic_profile(
                    &[Stack::new(
                        "main;churned_function",
                        300,
                        300,
                        1 + round as i64,
                    )],
                    synthetic_time(100 + round),
                    Duration::from_secs(1),
                    &[],
                );
                let name = format!("cpu-20260101T1201{:02}Z.pb.gz", round % 60);
                write_synthetic(&out, &name, &profile)?;
                write_synthetic(
                    &out.join("traces"),
                    &format!("{}.pb.gz", "cd".repeat(16)),
                    &profile,
                )?;
                if round % 2 == 1 {
                    fs::remove_file(out.join(&name))?;
                    fs::remove_file(out.join(format!("traces/{}.pb.gz", "cd".repeat(16))))?;
                }
                round += 1;
            }
            Ok(round)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut requests = 0;
    while Instant::now() < deadline {
        for path in ["/", "/profiles", &format!("/traces/{a}"), "/diff"] {
            let response = get(address, path)?;
            ensure!(
                response.status == 200,
                "GET {path} while files change: {response:?}"
            );
            requests += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = churn
        .join()
        .map_err(|_| anyhow::anyhow!("churn thread panicked"))??;
    eprintln!("{requests} requests answered while {rounds} files came and went");
    ensure!(rounds > 10 && requests > 20);

    // New files show; a deleted one is a 404, not a 500.
    let page = get_ok(address, "/profiles")?;
    ensure!(
        page.contains("cpu-20260101T120100Z.pb.gz"),
        "a new file is not listed"
    );
    fs::remove_file(dir.path().join("cpu-20260101T120000Z.pb.gz"))?;
    let gone = get(address, "/profiles/cpu-20260101T120000Z.pb.gz")?;
    ensure!(gone.status == 404, "{gone:?}");
    ensure!(get(address, "/files/cpu-20260101T120000Z.pb.gz")?.status == 404);
    Ok(())
}

#[test]
fn a_directory_that_does_not_exist_is_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing");
    let mut cmd = profiler_command();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).arg(&missing);
    integration_tests::run(cmd, STEP)?.ensure_error(&["cannot serve", "missing"])?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut cmd = profiler_command();
    cmd.args(["serve", "--listen", &taken.local_addr()?.to_string()])
        .arg(dir.path());
    integration_tests::run(cmd, STEP)?.ensure_error(&["cannot listen on", "--listen"])?;
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn record_serves_its_output_while_recording() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let frequency = TEST_FREQUENCY.to_string();
    let pid = fixture.pid_arg();
    let cmd = record_command(
        out.path(),
        &[
            "--pid",
            &pid,
            "--frequency",
            &frequency,
            "--interval",
            "1",
            "--serve",
            "127.0.0.1:0",
        ],
    );
    let mut recorder = LoggedRun::spawn(cmd)?;
    let address = wait_for_address(&mut recorder)?;
    recorder.wait_until_recording(Duration::from_secs(60))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let name = loop {
        let page = get_ok(address, "/profiles")?;
        if let Some(at) = page.find("href=\"/profiles/cpu-") {
            let rest = &page[at + "href=\"/profiles/".len()..];
            break rest.split('"').next().unwrap_or_default().to_owned();
        }
        if Instant::now() > deadline {
            bail!("no interval listed within 30 s:\n{page}");
        }
        thread::sleep(Duration::from_millis(200));
    };
    let page = get_ok(address, &format!("/profiles/{name}"))?;
    ensure!(
        page.contains("fixture_hot_leaf"),
        "the served flame graph lacks the hot function"
    );
    recorder.signal(libc::SIGINT)?;
    recorder.wait(Duration::from_secs(60))?.ensure_success()?;
    drop(fixture);
    Ok(())
}
