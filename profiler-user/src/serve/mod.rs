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
//! request, so a recorder may write there meanwhile.

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

use tokio::signal::unix::{SignalKind, signal};

use crate::listener::Listening;
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
    #[error("cannot listen on {address}: {source}; pass another --listen address")]
    Listen {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("the web server stopped")]
    Stopped(#[source] io::Error),
    #[error("setting up signal handling failed")]
    Signals(#[source] io::Error),
}

/// The running server; it stops when dropped.
pub struct Server {
    listening: Listening,
}

impl Server {
    /// Serves `dir` (which must exist) on `address` (port 0 picks a free port), and says where
    /// on the log.
    pub async fn start(dir: &Path, address: SocketAddr) -> Result<Server, ServeError> {
        let catalog = Catalog::new(dir).map_err(|source| ServeError::Dir {
            dir: dir.to_owned(),
            source,
        })?;
        // Drawing runs on the blocking pool; on a recorder's host, leave it most of the CPUs.
        let concurrency = std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2));
        let app = App::new(catalog, dir.display().to_string(), concurrency);
        let listening = Listening::start(address, routes::router(app))
            .await
            .map_err(|source| ServeError::Listen { address, source })?;
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
pub async fn serve(dir: &Path, address: SocketAddr) -> Result<(), ServeError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut server = Server::start(dir, address).await?;
    tokio::select! {
        ended = server.listening.stopped() => return ended.map_err(ServeError::Stopped),
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    tracing::info!("stopped serving {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::tests::get;
    use crate::{
        profile::ProfileWriter,
        report::stacks::tests::{labels, profile},
    };

    #[tokio::test]
    async fn serves_pages_on_the_recorders_runtime_and_refuses_ways_out() {
        let dir = tempfile::tempdir().unwrap();
        let name = "cpu-20260101T000000Z.pb.gz";
        ProfileWriter::new(dir.path())
            .write_named(name, &profile(&[("main;serve_test_leaf", labels(1, 1), 3)]))
            .unwrap();
        let server = Server::start(dir.path(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let address = server.address();
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
    async fn a_taken_port_or_a_missing_directory_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = Server::start(dir.path(), address).await.err().unwrap();
        let line = crate::error_chain(&err);
        assert!(
            line.contains(&address.to_string()) && line.contains("--listen"),
            "{line}"
        );
        let err = Server::start(&dir.path().join("none"), "127.0.0.1:0".parse().unwrap())
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
