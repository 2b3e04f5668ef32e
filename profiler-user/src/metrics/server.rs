//! The HTTP endpoints: `/metrics` (OpenMetrics text), `/healthz`, `/readyz`, and the routes the
//! recorder adds (`/debug/pprof/profile`). The server runs as a task on the recorder's runtime;
//! encoding a scrape reads atomics and takes microseconds.

use std::{net::SocketAddr, sync::Arc};

use super::Metrics;
use crate::listener::{Limits, Listening};
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The cause is in the line itself, not a source, so that it is said once, before the advice.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot serve metrics on {address}: {cause}; pass another --metrics-address, or `--metrics-address off`"
)]
pub struct MetricsError {
    address: SocketAddr,
    cause: std::io::Error,
}

/// The running server; it stops when dropped.
pub struct MetricsServer {
    listening: Listening,
}

impl MetricsServer {
    /// Binds `address` (port 0 picks a free port) and starts answering, with at most
    /// `max_connections` connections at once (see [`Limits::new`]), `more` routes beside the
    /// metrics'.
    pub async fn start(
        address: SocketAddr,
        metrics: Arc<Metrics>,
        max_connections: usize,
        more: Option<Router>,
    ) -> Result<Self, MetricsError> {
        let refused = metrics.connections_refused("metrics");
        let limits = Limits::new(max_connections);
        let app = match more {
            Some(more) => router(metrics).merge(more),
            None => router(metrics),
        };
        let listening = Listening::start(address, app, limits, refused)
            .await
            .map_err(|cause| MetricsError { address, cause })?;
        Ok(Self { listening })
    }

    /// Where it listens (with the port chosen when 0 was asked).
    pub fn address(&self) -> SocketAddr {
        self.listening.address()
    }
}

fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics)
}

async fn index() -> &'static str {
    "profiler: /metrics (OpenMetrics), /healthz (live), /readyz (ready), \
     /debug/pprof/profile?seconds=N (a CPU profile of the next N seconds, when recording)\n"
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.encode()).into_response()
}

async fn healthz(State(metrics): State<Arc<Metrics>>) -> Response {
    verdict(metrics.health.live())
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> Response {
    verdict(metrics.health.ready())
}

fn verdict(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::tests::get;
    use crate::metrics::Health;

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new("n1", Health::new(dir.path().to_owned(), 10)));
        metrics.set_frequency(19);
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics.clone(), 8, None)
            .await
            .unwrap();
        let address = server.address();
        assert_ne!(address.port(), 0);

        let scrape = get(address, "/metrics").await;
        assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
        assert!(scrape.contains("application/openmetrics-text"), "{scrape}");
        assert!(
            scrape.contains("profiler_sampling_frequency_hertz 19"),
            "{scrape}"
        );

        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
        let not_ready = get(address, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.contains("not attached"), "{not_ready}");
        metrics.health.set_attached();
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(address, "/nothing").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new("n1", Health::new("/".into(), 10)));
        let err = MetricsServer::start(address, metrics, 8, None)
            .await
            .err()
            .expect("the port is taken");
        let line = crate::error_chain(&err);
        assert!(line.contains(&address.to_string()), "{line}");
        assert!(line.contains("--metrics-address off"), "{line}");
        assert_eq!(line.matches("already in use").count(), 1, "{line}");
    }
}
