//! Hostile input to `report` and `serve` (no root needed): a decompression bomb is skipped with
//! one warning line, quickly and in bounded memory (peak RSS from `wait4`, and `VmHWM` of a
//! server); out-of-range durations and times are a usage error (exit 2, one line) or a 400,
//! never a panic; sample values of `i64::MAX` do not wrap.

use std::{
    fs,
    io::Read,
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use flate2::{Compress, Compression, FlushCompress};
use integration_tests::{
    HttpResponse, LoggedRun, Stack, http_get, profiler_command, run, synthetic_profile,
    synthetic_time, write_synthetic,
};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Far above what reading a small profile takes, far below what the bomb expands to.
const BOUNDED_RSS_KIB: u64 = 128 * 1024;

/// A gzip file of `expanded` bytes of `pattern` repeated (a pprof message of empty samples when
/// `pattern` is `[0x12, 0x00]`), about a thousandth of that on disk. Built from one deflate
/// chunk repeated: a full flush resets the compressor, so every chunk compresses the same. The
/// CRC is left wrong, which a reader only finds after expanding everything.
fn gzip_bomb(pattern: &[u8], expanded: u64) -> Vec<u8> {
    const CHUNK: usize = 1 << 20;
    let input: Vec<u8> = pattern.iter().copied().cycle().take(CHUNK).collect();
    let mut compress = Compress::new(Compression::best(), false);
    let mut chunk = Vec::with_capacity(CHUNK);
    compress
        .compress_vec(&input, &mut chunk, FlushCompress::Full)
        .expect("deflate");
    let mut end = Vec::with_capacity(64);
    compress
        .compress_vec(&[], &mut end, FlushCompress::Finish)
        .expect("deflate");
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..expanded / CHUNK as u64 {
        gz.extend_from_slice(&chunk);
    }
    gz.extend_from_slice(&end);
    gz.extend_from_slice(&0u32.to_le_bytes());
    gz.extend_from_slice(&(expanded as u32).to_le_bytes());
    gz
}

/// A directory with one small interval file.
fn directory_with_one_profile() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let stacks = [Stack::new("main;work", 10, 10, 5)];
    write_synthetic(
        dir.path(),
        "cpu-20260101T120000Z.pb.gz",
        &synthetic_profile(&stacks, synthetic_time(0), Duration::from_secs(10), &[]),
    )?;
    Ok(dir)
}

/// A directory with one good interval file and a bomb of 4 GiB of empty samples named as the
/// next interval (the old reader took several GiB for one).
fn directory_with_bomb() -> Result<tempfile::TempDir> {
    let dir = directory_with_one_profile()?;
    fs::write(
        dir.path().join("cpu-20260101T120010Z.pb.gz"),
        gzip_bomb(&[0x12, 0x00], 4 << 30),
    )?;
    Ok(dir)
}

/// Output, exit code and peak RSS (KiB) of `cmd`, run under a 3 GiB address-space limit so that
/// a reader without a cap fails instead of taking the machine's memory.
fn run_measured(mut cmd: Command) -> Result<(String, String, Option<i32>, u64, Duration)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; the closure touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 3 << 30,
                rlim_max: 3 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().context("spawning profiler")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let pid = child.id() as libc::pid_t;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills when it returns the pid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let ret = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if ret == pid {
            break (status, usage);
        }
        ensure!(ret == 0, "wait4: {}", std::io::Error::last_os_error());
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            bail!("still running after {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    Ok((out, err, code, usage.ru_maxrss as u64, elapsed))
}

#[test]
fn report_skips_a_decompression_bomb_quickly_in_bounded_memory() -> Result<()> {
    let dir = directory_with_bomb()?;
    let bomb_size = fs::metadata(dir.path().join("cpu-20260101T120010Z.pb.gz"))?.len();
    ensure!(bomb_size < 8 << 20, "the bomb is {bomb_size} bytes");
    let mut cmd = profiler_command();
    cmd.arg("report").arg(dir.path());
    let (stdout, stderr, code, peak_kib, elapsed) = run_measured(cmd)?;
    ensure!(
        code == Some(0),
        "exit {code:?}, peak {peak_kib} KiB, stderr:\n{stderr}"
    );
    ensure!(
        stdout.contains("work"),
        "the good profile is reported:\n{stdout}"
    );
    ensure!(
        peak_kib < BOUNDED_RSS_KIB,
        "peak RSS {peak_kib} KiB reading a {bomb_size}-byte bomb"
    );
    ensure!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cpu-20260101T120010Z"))
        .collect();
    ensure!(
        warnings.len() == 1 && warnings[0].contains("--max-profile-mb"),
        "one warning line naming the file and the flag:\n{stderr}"
    );
    Ok(())
}

#[test]
fn report_refuses_a_profile_over_max_profile_mb() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // 4 MiB of strings: well formed, over a 1 MiB limit.
    let mut profile = synthetic_profile(
        &[Stack::new("main;work", 10, 10, 5)],
        synthetic_time(0),
        Duration::from_secs(10),
        &[],
    );
    profile.string_table.push("x".repeat(4 << 20));
    write_synthetic(dir.path(), "cpu-20260101T120000Z.pb.gz", &profile)?;
    let output = run(
        {
            let mut cmd = profiler_command();
            cmd.args(["report", "--max-profile-mb", "1"])
                .arg(dir.path());
            cmd
        },
        TIMEOUT,
    )?;
    ensure!(!output.status.success(), "nothing left to report");
    let warning = output
        .stderr
        .lines()
        .find(|l| l.contains("cpu-20260101T120000Z.pb.gz"))
        .context("a warning naming the file")?;
    ensure!(
        warning.contains("1 MiB limit") && warning.contains("--max-profile-mb"),
        "{warning}"
    );
    let output = run(
        {
            let mut cmd = profiler_command();
            cmd.args(["report", "--max-profile-mb", "8"])
                .arg(dir.path());
            cmd
        },
        TIMEOUT,
    )?;
    output.ensure_success()?;
    ensure!(output.stdout.contains("work"), "{}", output.stdout);
    Ok(())
}

/// `profiler serve` on `dir`, and the address it serves on.
fn serve(dir: &Path, args: &[&str]) -> Result<(LoggedRun, SocketAddr)> {
    let mut cmd = profiler_command();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg(dir);
    let mut server = LoggedRun::spawn(cmd)?;
    let log = server.wait_for_log(Duration::from_secs(30), "the serving line", |log| {
        log.contains("serving ")
    })?;
    let address = log
        .lines()
        .find_map(|line| {
            let rest = line.split_once(" on http://")?.1;
            rest.trim_end().strip_suffix('/')?.parse().ok()
        })
        .context("serving line")?;
    Ok((server, address))
}

fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/PID/status")
}

fn get(address: SocketAddr, path: &str) -> Result<HttpResponse> {
    http_get(address, path, Duration::from_secs(30))
}

#[test]
fn serve_lists_a_bomb_as_unreadable_in_bounded_memory() -> Result<()> {
    let dir = directory_with_bomb()?;
    let (server, address) = serve(dir.path(), &[])?;
    let started = Instant::now();
    let page = get(address, "/profiles")?;
    ensure!(page.status == 200, "{} {}", page.status, page.body);
    let page = get(address, "/profiles/cpu-20260101T120010Z.pb.gz")?;
    ensure!(page.status != 200, "the bomb's own page: {}", page.status);
    ensure!(started.elapsed() < Duration::from_secs(20));
    let peak = peak_rss_kib(server.pid())?;
    ensure!(peak < BOUNDED_RSS_KIB, "server peak RSS {peak} KiB");
    Ok(())
}

#[test]
fn out_of_range_durations_are_usage_errors() -> Result<()> {
    let dir = directory_with_one_profile()?;
    for since in ["100000000d", "18446744073709551615s", "600000y"] {
        let mut cmd = profiler_command();
        cmd.args(["report", "--since", since]).arg(dir.path());
        let output = run(cmd, TIMEOUT)?;
        ensure!(
            output.status.code() == Some(2),
            "--since {since}: {:?}\n{}",
            output.status,
            output.stderr
        );
        ensure!(
            output.stderr.trim_end().lines().count() == 1 && !output.stderr.contains("panicked"),
            "--since {since}: {}",
            output.stderr
        );
    }
    Ok(())
}

#[test]
fn out_of_range_times_in_queries_are_400() -> Result<()> {
    let dir = directory_with_one_profile()?;
    let (_server, address) = serve(dir.path(), &[])?;
    for path in [
        "/?since=100000000d",
        "/?until=100000000d",
        "/?since=18446744073709551615s",
        "/profiles?since=100000000d",
        "/profiles?until=100000000d",
        "/?since=%2B262143-12-31T23:59:59Z",
    ] {
        let response = get(address, path)?;
        ensure!(
            response.status == 400,
            "GET {path}: {} {}",
            response.status,
            response.body
        );
    }
    Ok(())
}

#[test]
fn sample_values_of_i64_max_do_not_wrap() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let stacks = [
        Stack::new("main;work", 10, 10, 1).period(i64::MAX),
        Stack::new("main;rest", 10, 10, 1).period(i64::MAX),
    ];
    let profile = synthetic_profile(&stacks, synthetic_time(0), Duration::from_secs(10), &[]);
    let path = write_synthetic(dir.path(), "cpu-20260101T120000Z.pb.gz", &profile)?;
    let mut cmd = profiler_command();
    cmd.arg("report").arg(&path);
    let output = run(cmd, TIMEOUT)?;
    output.ensure_success()?;
    let negative = output
        .stdout
        .split_whitespace()
        .any(|word| word.starts_with('-') && word[1..].starts_with(|c: char| c.is_ascii_digit()));
    ensure!(!negative, "a negative value in:\n{}", output.stdout);
    Ok(())
}
