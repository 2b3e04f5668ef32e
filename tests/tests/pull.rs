//! Profiles on demand: `GET /debug/pprof/profile?seconds=N` on the metrics listener, as Go's
//! `net/http/pprof` answers it, fetched by `go tool pprof` itself; its filters, its limits (400,
//! 401, 429, a client that leaves), `hz=`, and that the interval files go on unchanged meanwhile.

use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Fixture, HOT_C, MIN_FUNCTION_SAMPLES, Pprof, Running, TEST_FREQUENCY, TRACE_A, TRACED_EXE,
    Want, adaptive_record_command, assert_root, count_where, free_local_address, go_pprof_in,
    go_pprof_top, http_get, http_get_with, metric_value, process_cpu_nanos, read_checked_profiles,
    read_profiles, record_command, samples_of_pid, trace_id_of,
};

const STEP: Duration = Duration::from_secs(5);
const START_UP: Duration = Duration::from_secs(60);
const WIND_DOWN: Duration = Duration::from_secs(60);
const HOT_LEAF: &str = "fixture_hot_leaf";
const PROFILE: &str = "/debug/pprof/profile";

/// Starts a recording of the whole host in 2-second intervals, serving on `address`, and waits
/// until it is ready (sampling).
fn start(out: &Path, address: SocketAddr, adaptive: bool, extra: &[&str]) -> Result<Running> {
    let address = address.to_string();
    let mut args = vec!["--interval", "2", "--metrics-address", &address];
    args.extend_from_slice(extra);
    let command = if adaptive {
        adaptive_record_command(out, &args)
    } else {
        record_command(out, &args)
    };
    let profiler = Running::spawn(command)?;
    let deadline = Instant::now() + START_UP;
    loop {
        if let Ok(ready) = http_get(address.parse()?, "/readyz", STEP)
            && ready.status == 200
        {
            return Ok(profiler);
        }
        ensure!(Instant::now() < deadline, "not ready within {START_UP:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

fn stop(profiler: Running) -> Result<String> {
    profiler.signal(libc::SIGTERM)?;
    let output = profiler.wait(WIND_DOWN)?;
    output.ensure_success()?;
    Ok(output.stderr)
}

/// `go tool pprof <args> <url>`, keeping the profile it fetched; returns its stdout and the
/// profile.
fn go_pprof_fetch(args: &[&str], url: &str) -> Result<(String, Pprof)> {
    let scratch = tempfile::tempdir()?;
    let stdout = go_pprof_in(scratch.path(), args, url.as_ref())?;
    // pprof keeps what it fetched as pprof.<name>.<type>.NNN.pb.gz in PPROF_TMPDIR.
    let saved: Vec<PathBuf> = fs::read_dir(scratch.path())?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "gz"))
        .collect();
    ensure!(saved.len() == 1, "go tool pprof kept {saved:?}");
    Ok((stdout, Pprof::read(&saved[0])?))
}

/// The function names of `-top`'s rows, in order.
fn top_functions(top: &str) -> Vec<String> {
    top.lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(5).map(str::to_owned))
        .collect()
}

/// The pids the samples of `profile` carry.
fn pids(profile: &Pprof) -> BTreeSet<i64> {
    profile
        .profile
        .sample
        .iter()
        .filter_map(|sample| profile.label_num(sample, "pid"))
        .collect()
}

fn count_of_pid(profiles: &[&Pprof], pid: u32) -> i64 {
    profiles
        .iter()
        .flat_map(|p| p.samples_of_pid(pid).map(|s| p.count(s)))
        .sum()
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn go_tool_pprof_fetches_a_process_while_the_interval_files_go_on() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let other = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let address = free_local_address()?;
    let frequency = TEST_FREQUENCY.to_string();
    let profiler = start(out.path(), address, false, &["--frequency", &frequency])?;
    let started = Instant::now();
    thread::sleep(Duration::from_secs(1));

    let url = format!("http://{address}{PROFILE}?seconds=3&pid={}", fixture.pid());
    let cpu_before = process_cpu_nanos(fixture.pid())?;
    let (top, pulled) = go_pprof_fetch(&["-top", "-symbolize=none"], &url)?;
    let cpu = (process_cpu_nanos(fixture.pid())? - cpu_before) as f64 / 1e9;
    thread::sleep(Duration::from_secs(1));
    let stderr = stop(profiler)?;
    let ran = started.elapsed();

    let functions = top_functions(&top);
    ensure!(
        functions.first().map(String::as_str) == Some(HOT_LEAF),
        "the top function of the pulled profile is not {HOT_LEAF}:\n{top}"
    );
    ensure!(
        pids(&pulled) == BTreeSet::from([i64::from(fixture.pid())]),
        "pid= let other processes in: {:?} (fixture {}, other {})",
        pids(&pulled),
        fixture.pid(),
        other.pid()
    );
    let secs = pulled.profile.duration_nanos as f64 / 1e9;
    ensure!((2.9..4.0).contains(&secs), "the answer covers {secs} s");
    // The fixture's CPU time at 99 Hz, measured around the whole call (which takes longer
    // than the capture's 3 s).
    let pulled_count = count_of_pid(&[&pulled], fixture.pid());
    let expected = cpu * TEST_FREQUENCY as f64;
    ensure!(
        pulled_count as f64 >= 0.5 * expected && pulled_count as f64 <= 1.2 * expected,
        "{pulled_count} samples of the fixture, which ran {cpu:.2} s of CPU during the call"
    );

    // The interval files cover the whole run, back to back, the request's seconds included.
    let mut profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    profiles.sort_by_key(|p| p.profile.time_nanos);
    for pair in profiles.windows(2) {
        let end = pair[0].profile.time_nanos + pair[0].profile.duration_nanos;
        let gap_ms = (pair[1].profile.time_nanos - end).abs() as f64 / 1e6;
        ensure!(
            gap_ms < 50.0,
            "{} does not start where {} ends ({gap_ms} ms apart)",
            pair[1].path.display(),
            pair[0].path.display()
        );
    }
    let covered: i64 = profiles.iter().map(|p| p.profile.duration_nanos).sum();
    ensure!(
        covered as f64 >= 0.8 * ran.as_nanos() as f64,
        "the interval files cover {covered} ns of a {ran:?} run"
    );
    let long = profiles
        .iter()
        .filter(|p| p.profile.duration_nanos > 1_500_000_000);
    ensure!(
        long.count() + 2 >= profiles.len(),
        "the request cut the intervals short: {:?}",
        profiles
            .iter()
            .map(|p| p.profile.duration_nanos)
            .collect::<Vec<_>>()
    );
    let all: Vec<&Pprof> = profiles.iter().collect();
    let recorded = count_of_pid(&all, fixture.pid());
    ensure!(
        recorded >= pulled_count,
        "the interval files hold {recorded} samples of the fixture, the answer {pulled_count}"
    );
    ensure!(
        count_of_pid(&all, other.pid()) > 0,
        "the whole-host files left out the other process"
    );
    ensure!(stderr.contains("answered a profile request"), "{stderr}");
    Ok(())
}

/// A request that gives up: opened by hand, closed after `after`.
fn abandon(address: SocketAddr, path: &str, token: &str, after: Duration) -> Result<()> {
    let mut stream = TcpStream::connect(address)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )?;
    thread::sleep(after);
    drop(stream);
    Ok(())
}

fn metric(address: SocketAddr, series: &str) -> Result<f64> {
    let scrape = http_get(address, "/metrics", STEP)?;
    ensure!(scrape.status == 200, "/metrics: {scrape:?}");
    Ok(metric_value(&scrape.body, series).unwrap_or(0.0))
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn limits_token_and_a_client_that_leaves() -> Result<()> {
    assert_root();
    let out = tempfile::tempdir()?;
    let secret = tempfile::tempdir()?;
    let token_file = secret.path().join("token");
    fs::write(&token_file, "pull-s3cret\n")?;
    let address = free_local_address()?;
    let profiler = start(
        out.path(),
        address,
        false,
        &["--http-token-file", token_file.to_str().context("path")?],
    )?;
    let bearer = [("Authorization", "Bearer pull-s3cret")];
    let get = |path: &str, headers: &[(&str, &str)]| -> Result<(u16, String)> {
        let (status, body) = http_get_with(address, path, headers, Duration::from_secs(30))?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };

    // The token guards the profiles only.
    ensure!(http_get(address, "/metrics", STEP)?.status == 200);
    let (status, body) = get(&format!("{PROFILE}?seconds=1"), &[])?;
    ensure!(status == 401, "no token: {status} {body}");
    let wrong = [("Authorization", "Bearer pull-s3creT")];
    let (status, _) = get(&format!("{PROFILE}?seconds=1"), &wrong)?;
    ensure!(status == 401, "a wrong token: {status}");

    // Bad parameters: 400 with one line that says why.
    for query in [
        "seconds=0",
        "seconds=301",
        "seconds=abc",
        "pid=x",
        "hz=0",
        "colour=red",
    ] {
        let (status, body) = get(&format!("{PROFILE}?{query}"), &bearer)?;
        ensure!(
            status == 400 && body.trim().lines().count() == 1,
            "{query}: {status} {body:?}"
        );
    }

    // Four at once are served, a fifth is refused.
    let requests: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                http_get_with(
                    address,
                    &format!("{PROFILE}?seconds=4"),
                    &[("Authorization", "Bearer pull-s3cret")],
                    Duration::from_secs(60),
                )
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));
    let (status, body) = get(&format!("{PROFILE}?seconds=1"), &bearer)?;
    ensure!(status == 429, "a fifth request: {status} {body}");
    for request in requests {
        let (status, body) = request.join().expect("request thread")?;
        ensure!(status == 200, "one of four: {status}");
        let answer = Pprof::from_gzip(Path::new("answer"), &body)?;
        ensure!(
            !answer.profile.sample.is_empty(),
            "an empty whole-host answer"
        );
    }

    // A client that leaves ends its capture and frees its slot.
    let path = format!("{PROFILE}?seconds=60");
    for _ in 0..4 {
        abandon(address, &path, "pull-s3cret", Duration::from_millis(500))?;
    }
    thread::sleep(Duration::from_millis(500));
    let cancelled = metric(
        address,
        "profiler_pull_requests_total{outcome=\"cancelled\"}",
    )?;
    ensure!(
        cancelled == 4.0,
        "{cancelled} requests counted as cancelled"
    );
    let (status, _) = get(&format!("{PROFILE}?seconds=1"), &bearer)?;
    ensure!(status == 200, "after four clients left: {status}");
    ensure!(metric(address, "profiler_pull_requests_total{outcome=\"served\"}")? == 5.0);
    ensure!(metric(address, "profiler_pull_requests_total{outcome=\"busy\"}")? == 1.0);
    ensure!(
        metric(
            address,
            "profiler_pull_requests_total{outcome=\"unauthorized\"}"
        )? == 2.0
    );
    let stderr = stop(profiler)?;
    ensure!(
        stderr.matches("profile request cancelled").count() == 4,
        "{stderr}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn hz_raises_the_rate_for_the_request_only() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let address = free_local_address()?;
    // Adaptive, as by default (the rate a request may ask for is the capture's), with the
    // thresholds and the budget out of the way of this busy machine.
    let profiler = start(
        out.path(),
        address,
        true,
        &[
            "--frequency",
            "19",
            "--capture-frequency",
            "99",
            "--cpu-threshold",
            "1.0",
            "--mem-threshold",
            "1.0",
            "--overhead-budget",
            "1.0",
        ],
    )?;
    let path = format!("{PROFILE}?seconds=3&pid={}&hz=99", fixture.pid());
    let cpu_before = process_cpu_nanos(fixture.pid())?;
    let (status, body) = http_get_with(address, &path, &[], Duration::from_secs(30))?;
    let cpu = (process_cpu_nanos(fixture.pid())? - cpu_before) as f64 / 1e9;
    ensure!(status == 200, "{status}");
    let answer = Pprof::from_gzip(Path::new("answer"), &body)?;
    ensure!(
        answer.profile.period == 1_000_000_000 / 99,
        "period {} ns",
        answer.profile.period
    );
    // Samples per second of the fixture's CPU time: near 99, far from the 19 of the recording.
    let count = count_of_pid(&[&answer], fixture.pid());
    let rate = count as f64 / cpu;
    ensure!(
        (50.0..=120.0).contains(&rate),
        "{count} samples for {cpu:.2} s of CPU: {rate:.0} a second"
    );
    // Beyond the rate the maps were sized for, a request gets that rate, and says so.
    let path = format!("{PROFILE}?seconds=2&pid={}&hz=5000", fixture.pid());
    let (status, body) = http_get_with(address, &path, &[], Duration::from_secs(30))?;
    ensure!(status == 200, "{status}");
    let capped = Pprof::from_gzip(Path::new("capped"), &body)?;
    let comments: Vec<&str> = capped
        .profile
        .comment
        .iter()
        .map(|&i| capped.str(i))
        .collect();
    ensure!(
        comments
            .iter()
            .any(|c| c.starts_with("hz=5000 lowered to 99 Hz")),
        "{comments:?}"
    );
    ensure!(capped.profile.period == 1_000_000_000 / 99);
    thread::sleep(Duration::from_secs(3));
    let stderr = stop(profiler)?;
    // The rate went up for the requests and back down after them.
    ensure!(
        stderr.contains("sampling frequency 19 Hz -> 99 Hz: a profile request asked for 99 Hz"),
        "{stderr}"
    );
    ensure!(
        stderr.contains("99 Hz -> 19 Hz: the profile requests that raised the rate ended"),
        "{stderr}"
    );
    // The files of the intervals the requests ran in say 99 Hz at their end: read them as
    // they are.
    let mut profiles = read_profiles(out.path())?;
    profiles.sort_by_key(|p| p.profile.time_nanos);
    let last = profiles.last().context("no interval file")?;
    last.check_well_formed(19)?;
    let comments: Vec<&str> = last.profile.comment.iter().map(|&i| last.str(i)).collect();
    ensure!(
        comments.last() == Some(&"sampling frequency at the end: 19 Hz"),
        "{comments:?}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn the_answer_and_an_interval_file_read_the_same_in_go_tool_pprof() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn(HOT_C, &[])?;
    let out = tempfile::tempdir()?;
    let address = free_local_address()?;
    let pid = fixture.pid_arg();
    let frequency = TEST_FREQUENCY.to_string();
    let profiler = start(
        out.path(),
        address,
        false,
        &["--pid", &pid, "--frequency", &frequency],
    )?;
    let (status, body) = http_get_with(
        address,
        &format!("{PROFILE}?seconds=4"),
        &[],
        Duration::from_secs(30),
    )?;
    ensure!(status == 200, "{status}");
    stop(profiler)?;
    let elsewhere = tempfile::tempdir()?;
    let answer_path = elsewhere.path().join("answer.pb.gz");
    fs::write(&answer_path, &body)?;
    let answer = Pprof::read(&answer_path)?;
    let profiles = read_checked_profiles(out.path(), TEST_FREQUENCY)?;
    // The fullest interval: the steady state, as the answer's 4 s are.
    let interval = profiles
        .iter()
        .max_by_key(|p| p.profile.sample.iter().map(|s| p.count(s)).sum::<i64>())
        .context("no interval file")?;

    // The same kinds of values, units and labels.
    let types = |p: &Pprof| -> Vec<(String, String)> {
        p.profile
            .sample_type
            .iter()
            .map(|t| (p.str(t.r#type).to_owned(), p.str(t.unit).to_owned()))
            .collect()
    };
    ensure!(
        types(&answer) == types(interval),
        "{:?} vs {:?}",
        types(&answer),
        types(interval)
    );
    let period = |p: &Pprof| {
        let t = p
            .profile
            .period_type
            .as_ref()
            .map(|t| (p.str(t.r#type), p.str(t.unit)));
        (
            t.map(|(a, b)| (a.to_owned(), b.to_owned())),
            p.profile.period,
        )
    };
    ensure!(period(&answer) == period(interval));
    let keys = |p: &Pprof| -> BTreeSet<String> {
        p.profile
            .sample
            .iter()
            .flat_map(|s| s.label.iter().map(|l| p.str(l.key).to_owned()))
            .collect()
    };
    ensure!(
        keys(&answer) == keys(interval),
        "{:?} vs {:?}",
        keys(&answer),
        keys(interval)
    );

    // And `go tool pprof -top` reads them alike: the same type, the same functions, the hot
    // leaf's share within a few points.
    let answer_top = go_pprof_top(&answer_path)?;
    let interval_top = go_pprof_top(&interval.path)?;
    let type_line = |top: &str| {
        top.lines()
            .find(|l| l.starts_with("Type:"))
            .map(str::to_owned)
    };
    ensure!(type_line(&answer_top) == type_line(&interval_top));
    let names = |top: &str| top_functions(top).into_iter().collect::<BTreeSet<_>>();
    let (a, i) = (top_functions(&answer_top), top_functions(&interval_top));
    ensure!(
        a.first() == Some(&HOT_LEAF.to_owned()) && i.first() == Some(&HOT_LEAF.to_owned()),
        "answer:\n{answer_top}\ninterval:\n{interval_top}"
    );
    let common = names(&answer_top)
        .intersection(&names(&interval_top))
        .count();
    ensure!(
        common >= 3,
        "few functions in common:\nanswer:\n{answer_top}\ninterval:\n{interval_top}"
    );
    let share = |top: &str| -> Option<f64> {
        let row = top
            .lines()
            .find(|l| l.split_whitespace().nth(5) == Some(HOT_LEAF))?;
        row.split_whitespace()
            .nth(1)?
            .trim_end_matches('%')
            .parse()
            .ok()
    };
    let (a, i) = (share(&answer_top), share(&interval_top));
    ensure!(
        a.zip(i).is_some_and(|(a, i)| (a - i).abs() <= 10.0),
        "{HOT_LEAF}: {a:?}% of the answer, {i:?}% of the interval"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs"]
fn trace_id_answers_the_samples_of_that_trace_only() -> Result<()> {
    assert_root();
    let fixture = Fixture::spawn_ready(TRACED_EXE, &[], Duration::from_secs(30))?;
    let out = tempfile::tempdir()?;
    let address = free_local_address()?;
    let pid = fixture.pid_arg();
    let frequency = TEST_FREQUENCY.to_string();
    let profiler = start(
        out.path(),
        address,
        false,
        &["--pid", &pid, "--frequency", &frequency],
    )?;
    let path = format!("{PROFILE}?seconds=3&trace_id={}", TRACE_A.to_uppercase());
    let (status, body) = http_get_with(address, &path, &[], Duration::from_secs(30))?;
    stop(profiler)?;
    ensure!(status == 200, "{status}");
    let answer = Pprof::from_gzip(Path::new("answer"), &body)?;
    let traces: BTreeSet<Option<&str>> = answer
        .profile
        .sample
        .iter()
        .map(|s| trace_id_of(&answer, s))
        .collect();
    ensure!(
        traces == BTreeSet::from([Some(TRACE_A)]),
        "samples of other traces, or of none: {traces:?}"
    );
    let answers = [answer];
    let leaves = count_where(&samples_of_pid(&answers, fixture.pid()), |p, s| {
        p.has_leaf(s, Want::Exact("traced_fn_a"))
    });
    ensure!(
        leaves >= MIN_FUNCTION_SAMPLES,
        "{leaves} samples in traced_fn_a"
    );
    Ok(())
}
