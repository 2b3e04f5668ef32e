//! The worked example of examples/go-checkout/README.md, end to end: the Go service runs each
//! request under `pprof.Do` labels from its `traceparent`; recorded under load with one known
//! trace, that trace's file names the N+1 lookup; with `-fix`, the lookup is gone.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Pprof, Running, TEST_FREQUENCY, Want, assert_root, free_local_address, http_get,
    record_command, run_timeout, skip_or_fail, trace_file_ids, traces_dir,
};

const CHECKOUT: &str = env!("FIXTURE_GO_CHECKOUT");
/// The trace `load.sh` sends a few requests under.
const KNOWN_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// The N+1 lookup, as Go names it.
const N_PLUS_ONE: Want<'static> = Want::Exact("main.(*store).customerByID");
const RECORD_SECONDS: u64 = 8;

#[test]
#[ignore = "needs root: loads BPF programs"]
fn the_slow_trace_names_the_n_plus_one_lookup_until_the_fix() -> Result<()> {
    assert_root();
    if CHECKOUT.is_empty() {
        skip_or_fail("no Go toolchain when the tests were built: run `cargo xtask setup`");
        return Ok(());
    }
    let slow = walk_through(&[])?;
    ensure!(
        slow.iter().any(|p| p.mentions(N_PLUS_ONE)),
        "traces/{KNOWN_TRACE}.pb.gz does not name {}",
        N_PLUS_ONE.text()
    );
    let fixed = walk_through(&["-fix"])?;
    ensure!(
        !fixed.iter().any(|p| p.mentions(N_PLUS_ONE)),
        "with -fix, traces/{KNOWN_TRACE}.pb.gz still names {}",
        N_PLUS_ONE.text()
    );
    Ok(())
}

/// Starts the service with `flags`, records it while sending requests (every fifth under the
/// known trace), and returns the known trace's file.
fn walk_through(flags: &[&str]) -> Result<Vec<Pprof>> {
    let address = free_local_address()?;
    let mut cmd = Command::new(CHECKOUT);
    cmd.arg("-address").arg(address.to_string()).args(flags);
    let service = Running::spawn(cmd)?;
    wait_healthy(address)?;

    let out = tempfile::tempdir()?;
    let (pid, frequency, duration) = (
        service.pid().to_string(),
        TEST_FREQUENCY.to_string(),
        RECORD_SECONDS.to_string(),
    );
    let args = [
        "--pid",
        &pid,
        "--frequency",
        &frequency,
        "--duration",
        &duration,
        "--interval",
        "2",
    ];
    let profiler = Running::spawn(record_command(out.path(), &args))?;
    profiler.wait_until_sampling(Duration::from_secs(30));
    let until = Instant::now() + Duration::from_secs(RECORD_SECONDS - 3);
    let mut sent = 0;
    while Instant::now() < until {
        let traceparent = (sent % 5 == 2).then_some(TRACEPARENT);
        get_orders(address, traceparent)?;
        sent += 1;
    }
    profiler
        .wait(run_timeout(Duration::from_secs(RECORD_SECONDS)))?
        .ensure_success()?;
    drop(service);

    let files = trace_file_ids(out.path())?;
    ensure!(
        files.contains(KNOWN_TRACE),
        "no traces/{KNOWN_TRACE}.pb.gz after {sent} requests ({flags:?}); traces: {}",
        files.len()
    );
    let file = traces_dir(out.path()).join(format!("{KNOWN_TRACE}.pb.gz"));
    Ok(vec![Pprof::read(&file)?])
}

fn wait_healthy(address: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get(address, "/health", Duration::from_secs(2)) {
            Ok(answer) if answer.status == 200 => return Ok(()),
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            other => {
                return other
                    .map(|_| ())
                    .context("the example service never answered");
            }
        }
    }
}

/// `GET /orders`, with a `traceparent` header when given; the answer must be 200.
fn get_orders(address: SocketAddr, traceparent: Option<&str>) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let header = traceparent.map_or(String::new(), |t| format!("traceparent: {t}\r\n"));
    write!(
        stream,
        "GET /orders HTTP/1.1\r\nHost: {address}\r\n{header}Connection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    ensure!(
        answer.starts_with(b"HTTP/1.1 200"),
        "GET /orders: {}",
        String::from_utf8_lossy(&answer[..answer.len().min(80)])
    );
    Ok(())
}
