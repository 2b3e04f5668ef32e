//! `profiler serve` (and `profiler record --serve`): a small web application over a directory of
//! profiles. HTML is rendered on the server; the only script is the flame graph's own.
//!
//! - `/`: the traces seen, newest first, with filters (`service`, `trace`, `since`, `until`,
//!   `sort=samples`, `limit`);
//! - `/traces/<trace_id>`: a trace's flame graph, top functions, processes and threads, and its
//!   file;
//! - `/profiles`: interval and incident profiles on a timeline, incidents marked with their
//!   trigger; `/profiles/<name>`: one profile's flame graph and top functions;
//! - `/diff?base=<name>&target=<name>`: a differential flame graph and the functions that grew
//!   and shrank;
//! - `/files/<relative path>`: download of a profile.
//!
//! Only files inside the directory are served (see [`paths`]); the directory is read on every
//! request, so a recorder may write there meanwhile. Pages answer only requests whose `Host` is
//! an IP address, `localhost` or a name given with `--allowed-host` (a DNS-rebinding page
//! cannot read them), and carry a Content-Security-Policy that lets no script run but the
//! page's own (see [`routes`]).

mod catalog;
mod filters;
#[doc(hidden)]
pub mod fuzzing;
mod pages;
mod paths;
mod routes;

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::stop_signals::StopSignals;
use prometheus_client::metrics::counter::Counter;

use crate::listener::{Limits, Listening};
use catalog::Catalog;
use routes::App;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot serve {dir}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The cause is in the line itself, not a source, so that it is said once, before the advice.
    #[error("cannot listen on {address}: {cause}; pass another {flag} address")]
    Listen {
        address: SocketAddr,
        flag: &'static str,
        cause: io::Error,
    },
    #[error("the web server stopped")]
    Stopped(#[source] io::Error),
    #[error("setting up signal handling failed")]
    Signals(#[source] io::Error),
}

/// How the web application is reached.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// The flag that chose the address, named when it cannot be used (`--listen`, `--serve`).
    pub flag: &'static str,
    /// Connections open at once; more are refused (see `--max-connections`).
    pub max_connections: usize,
    /// Host names the pages answer to besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// Where refused connections are counted (a recorder's metrics); `None`: only logged.
    pub refused: Option<Counter>,
}

impl WebOptions {
    /// `profiler serve`'s: the address comes from `--listen`.
    pub fn serve(max_connections: usize, allowed_hosts: Vec<String>) -> WebOptions {
        WebOptions {
            flag: "--listen",
            max_connections,
            allowed_hosts,
            refused: None,
        }
    }
}

/// The running server; it stops when dropped.
pub struct Server {
    listening: Listening,
}

impl Server {
    /// Serves `dir` (which must exist) on `address` (port 0 picks a free port), and says where
    /// on the log.
    pub async fn start(
        dir: &Path,
        address: SocketAddr,
        options: WebOptions,
    ) -> Result<Server, ServeError> {
        let catalog = Catalog::new(dir).map_err(|source| ServeError::Dir {
            dir: dir.to_owned(),
            source,
        })?;
        // Drawing runs on the blocking pool; on a recorder's host, leave it most of the CPUs.
        let concurrency = std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2));
        let app = App::new(catalog, dir.display().to_string(), concurrency);
        let router = routes::router(app, &options.allowed_hosts);
        let limits = Limits::new(options.max_connections);
        let refused = options.refused.unwrap_or_default();
        let listening = Listening::start(address, router, limits, refused)
            .await
            .map_err(|cause| ServeError::Listen {
                address,
                flag: options.flag,
                cause,
            })?;
        tracing::info!(
            "serving {} on http://{}/",
            dir.display(),
            listening.address()
        );
        Ok(Server { listening })
    }

    /// Where it listens (with the port chosen when 0 was asked).
    pub fn address(&self) -> SocketAddr {
        self.listening.address()
    }
}

/// Runs `profiler serve` on `dir` and `address` (as [`Server::start`]) until SIGINT or SIGTERM.
pub async fn serve(dir: &Path, address: SocketAddr, options: WebOptions) -> Result<(), ServeError> {
    let mut signals = StopSignals::install().map_err(ServeError::Signals)?;
    let mut server = Server::start(dir, address, options).await?;
    tokio::select! {
        ended = server.listening.stopped() => return ended.map_err(ServeError::Stopped),
        _ = signals.recv() => {}
    }
    tracing::info!("stopped serving {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::tests::{get, get_from};
    use crate::{
        profile::ProfileWriter,
        report::stacks::tests::{labels, mixed_profile, profile, traced},
    };

    fn options() -> WebOptions {
        WebOptions::serve(8, vec!["profiler.example".into()])
    }

    const PROFILE: &str = "cpu-20260101T000000Z.pb.gz";

    /// A server of a directory holding [`PROFILE`], whose leaf is `serve_test_leaf`.
    async fn serving_one_profile() -> (tempfile::TempDir, Server) {
        let dir = tempfile::tempdir().unwrap();
        ProfileWriter::new(dir.path())
            .write_named(
                PROFILE,
                &profile(&[("main;serve_test_leaf", labels(1, 1), 3)]),
            )
            .unwrap();
        let server = Server::start(dir.path(), "127.0.0.1:0".parse().unwrap(), options())
            .await
            .unwrap();
        (dir, server)
    }

    #[tokio::test]
    async fn serves_pages_on_the_recorders_runtime_and_refuses_ways_out() {
        let (_dir, server) = serving_one_profile().await;
        let (name, address) = (PROFILE, server.address());
        assert_ne!(address.port(), 0);

        let home = get(address, "/").await;
        assert!(home.starts_with("HTTP/1.1 200"), "{home}");
        assert!(home.contains("No trace files yet"), "{home}");
        let page = get(address, &format!("/profiles/{name}")).await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        let svg = page.find("<svg").expect("an inline flame graph");
        assert!(page[svg..].contains("serve_test_leaf"));
        for path in [
            "/files/../x.pb.gz",
            "/files/%2e%2e/x.pb.gz",
            "/profiles/a%2fb.pb.gz",
            "/..",
        ] {
            let response = get(address, path).await;
            assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
        }
        assert!(
            get(address, "/files/none.pb.gz")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(get(address, "/nothing").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn pages_answer_their_own_hosts_only_under_a_strict_policy() {
        let (_dir, server) = serving_one_profile().await;
        let (name, address) = (PROFILE, server.address());
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
        ] {
            let answer = get_from(address, "/", host).await;
            assert!(answer.starts_with("HTTP/1.1 403"), "{host}: {answer}");
            assert!(answer.contains("--allowed-host"), "{answer}");
        }
        for host in [
            address.to_string(),
            "localhost:8080".into(),
            "profiler.example".into(),
        ] {
            let answer = get_from(address, "/", &host).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
        }

        let page = get(address, &format!("/profiles/{name}")).await;
        let (head, body) = page.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        let policy = head
            .lines()
            .find_map(|l| l.strip_prefix("content-security-policy: "))
            .expect("a policy");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        let nonce = policy
            .split("'nonce-")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("a script nonce");
        assert_eq!(nonce.len(), 32);
        // Every script of the page, inferno's and ours, carries it; nothing else may run.
        let scripts = body.matches("<script").count();
        assert_eq!(scripts, 2, "{body}");
        assert_eq!(body.matches(&format!("nonce=\"{nonce}\"")).count(), scripts);
        let again = get(address, &format!("/profiles/{name}")).await;
        assert!(!again.contains(nonce), "a nonce is drawn per answer");
    }

    /// A trace page with CPU and off-CPU graphs: one live graph (its script and the page's
    /// carry the nonce), the other still (no script at all, IDs of its own), names escaped.
    #[tokio::test]
    async fn a_trace_page_with_two_graphs_runs_only_the_first_ones_script() {
        const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        let dir = tempfile::tempdir().unwrap();
        ProfileWriter::new(dir.path().join("traces"))
            .write_named(
                &format!("{ID}.pb.gz"),
                &mixed_profile(
                    &[("main;compute_leaf", traced(1, 1, ID), 3)],
                    &[(
                        "main;call;recv<img src=x onerror=alert(1)>[k]",
                        traced(1, 1, ID),
                        9,
                    )],
                ),
            )
            .unwrap();
        let server = Server::start(dir.path(), "127.0.0.1:0".parse().unwrap(), options())
            .await
            .unwrap();
        for (path, first) in [
            (format!("/traces/{ID}"), "compute_leaf"),
            (format!("/traces/{ID}?graph=off-cpu"), "recv&lt;img"),
        ] {
            let page = get(server.address(), &path).await;
            let (head, body) = page.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let head = head.to_ascii_lowercase();
            let nonce = head
                .split("'nonce-")
                .nth(1)
                .and_then(|rest| rest.split('\'').next())
                .expect("a script nonce");
            assert_eq!(body.matches("<script").count(), 2, "{body}");
            assert_eq!(body.matches(&format!("nonce=\"{nonce}\"")).count(), 2);
            assert_eq!(
                body.matches(r#"<svg id="frames""#).count(),
                1,
                "one live graph"
            );
            assert_eq!(
                body.matches(r#"<svg id="still-off-cpu-frames""#).count()
                    + body.matches(r#"<svg id="still-cpu-frames""#).count(),
                1,
                "one still graph"
            );
            assert!(!body.contains("<img src=x"), "a frame name became markup");
            let live = body.find(r#"<svg id="frames""#).unwrap();
            let still = body.find(r#"<svg id="still-"#).unwrap();
            assert!(live < still, "the live graph is the page's first");
            assert!(
                body[live..still].contains(first),
                "{path}: {first} drawn first"
            );
            assert!(body.contains(r#"id="split""#));
        }
    }

    #[tokio::test]
    async fn a_taken_port_or_a_missing_directory_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = Server::start(dir.path(), address, options())
            .await
            .err()
            .unwrap();
        let line = crate::error_chain(&err);
        assert!(
            line.contains(&address.to_string()) && line.contains("--listen"),
            "{line}"
        );
        assert_eq!(line.matches("already in use").count(), 1, "{line}");
        let recording = WebOptions {
            flag: "--serve",
            ..options()
        };
        let line = crate::error_chain(
            &Server::start(dir.path(), address, recording)
                .await
                .err()
                .unwrap(),
        );
        assert!(line.contains("another --serve address"), "{line}");
        assert!(!line.contains("--listen"), "{line}");
        let err = Server::start(
            &dir.path().join("none"),
            "127.0.0.1:0".parse().unwrap(),
            options(),
        )
        .await
        .err()
        .unwrap();
        let line = crate::error_chain(&err);
        assert!(
            line.starts_with("cannot serve ") && line.contains("No such file"),
            "{line}"
        );
    }
}
