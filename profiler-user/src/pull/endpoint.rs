//! The handler of `GET /debug/pprof/profile`: checks the token and the query, takes one of
//! [`MAX_CONCURRENT`] slots, has the recorder open a capture, waits the seconds asked, and
//! answers the profile. A client that disconnects drops the handler (hyper ends the connection
//! on the EOF), and the guard below cancels its capture.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{MAX_CONCURRENT, Opened, PullMessage, PullRequest, token::TokenFile};
use crate::metrics::Metrics;

/// How long the recorder may take to open a capture (it may be starting, or draining).
const OPEN_WITHIN: Duration = Duration::from_secs(30);
/// How long the writer may take to build the answer after the capture's end (it may be behind
/// by a few intervals).
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// Who may ask for profiles.
#[derive(Clone, Debug)]
pub enum Access {
    /// Anyone who can connect: the listener is on a loopback address.
    Local,
    /// Those who send the token.
    Token(TokenFile),
    /// No one: the listener is reachable from other hosts and no token was given. A profile
    /// names every function and thread of the host; it is not handed out to the network by
    /// default.
    Closed,
}

impl Access {
    /// For a listener on `address`, with or without `--http-token-file`.
    pub fn of(address: std::net::SocketAddr, token: Option<TokenFile>) -> Self {
        match token {
            Some(token) => Self::Token(token),
            None if address.ip().is_loopback() => Self::Local,
            None => Self::Closed,
        }
    }
}

pub struct PullEndpoint {
    recorder: mpsc::UnboundedSender<PullMessage>,
    slots: Arc<Semaphore>,
    access: Access,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl PullEndpoint {
    /// The endpoint, and the receiving end the recorder reads its messages from. Unbounded:
    /// the slots bound what is in flight (three messages per request at most).
    pub fn new(
        access: Access,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<PullMessage>) {
        let (recorder, messages) = mpsc::unbounded_channel();
        let endpoint = Self {
            recorder,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            access,
            next_id: AtomicU64::new(1),
            metrics,
        };
        (Arc::new(endpoint), messages)
    }

    /// The route, to merge into the metrics listener's router.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/debug/pprof/profile", get(profile))
            .with_state(self.clone())
    }
}

/// Cancels the request's capture unless it was answered; counts the request as cancelled (the
/// client left) unless another outcome was counted.
struct Pending<'a> {
    id: u64,
    endpoint: &'a PullEndpoint,
    answered: bool,
    counted: bool,
}

impl Pending<'_> {
    fn count(&mut self, outcome: &'static str) {
        self.endpoint.metrics.pull_request(outcome);
        self.counted = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            // A capture opened late (after its request gave up waiting) is closed too.
            let _ = self
                .endpoint
                .recorder
                .send(PullMessage::Cancel { id: self.id });
        }
        if !self.counted {
            self.endpoint.metrics.pull_request("cancelled");
            tracing::info!(
                request = self.id,
                "profile request cancelled: the client left"
            );
        }
    }
}

async fn profile(
    State(endpoint): State<Arc<PullEndpoint>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let endpoint = endpoint.as_ref();
    match &endpoint.access {
        Access::Local => {}
        Access::Closed => {
            endpoint.metrics.pull_request("forbidden");
            return text(
                StatusCode::FORBIDDEN,
                "profiles are not served to other hosts without a token: start the agent with \
                 --http-token-file, or bind --metrics-address to a loopback address",
            );
        }
        Access::Token(token) => {
            let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
            match token.admits(given) {
                Ok(true) => {}
                Ok(false) => {
                    endpoint.metrics.pull_request("unauthorized");
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer realm=\"profiler\"")],
                        "this endpoint needs the token of --http-token-file: send `Authorization: \
                     Bearer TOKEN`\n",
                    )
                        .into_response();
                }
                Err(err) => {
                    endpoint.metrics.pull_request("unavailable");
                    tracing::error!("{err}");
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the token file cannot be read: see the agent's log",
                    );
                }
            }
        }
    }
    let request = match PullRequest::parse(query.as_deref().unwrap_or("")) {
        Ok(request) => request,
        Err(bad) => {
            endpoint.metrics.pull_request("bad_request");
            return text(StatusCode::BAD_REQUEST, &bad.0);
        }
    };
    let Ok(_slot) = endpoint.slots.clone().try_acquire_owned() else {
        endpoint.metrics.pull_request("busy");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "5")],
            format!("{MAX_CONCURRENT} profile requests are under way, the most served at once; try again later\n"),
        )
            .into_response();
    };
    let id = endpoint.next_id.fetch_add(1, Ordering::Relaxed);
    let seconds = request.seconds;
    tracing::info!(
        request = id,
        seconds,
        hz = request.hz,
        filter = %request.filter,
        "profile request"
    );
    let (opened, open) = oneshot::channel();
    let start = PullMessage::Start {
        id,
        request,
        opened,
    };
    let mut pending = Pending {
        id,
        endpoint,
        answered: false,
        counted: false,
    };
    let Opened { hz } = match ask(endpoint, start, open, OPEN_WITHIN).await {
        Ok(opened) => opened,
        Err(why) => {
            pending.count("unavailable");
            return text(StatusCode::SERVICE_UNAVAILABLE, &why);
        }
    };
    tracing::debug!(request = id, hz, "pull capture open");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (profile, answer) = oneshot::channel();
    let end = PullMessage::End { id, profile };
    let answered = ask(endpoint, end, answer, ANSWER_WITHIN).await;
    pending.answered = true;
    match answered {
        Ok(body) => {
            pending.count("served");
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"profile\"",
                    ),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                body,
            )
                .into_response()
        }
        Err(why) => {
            pending.count("unavailable");
            text(StatusCode::SERVICE_UNAVAILABLE, &why)
        }
    }
}

/// Sends `message` and waits for its answer, at most `within`.
async fn ask<T>(
    endpoint: &PullEndpoint,
    message: PullMessage,
    answer: oneshot::Receiver<Result<T, String>>,
    within: Duration,
) -> Result<T, String> {
    const GONE: &str = "the recording is not running (starting or stopping): try again";
    endpoint
        .recorder
        .send(message)
        .map_err(|_| GONE.to_owned())?;
    match tokio::time::timeout(within, answer).await {
        Ok(Ok(answered)) => answered,
        Ok(Err(_)) => Err(GONE.to_owned()),
        Err(_) => Err(format!(
            "the recorder did not answer within {} s: try again",
            within.as_secs()
        )),
    }
}

fn text(status: StatusCode, line: &str) -> Response {
    (status, format!("{line}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        listener::{Limits, Listening, tests::get},
        metrics::Health,
    };

    /// Serves the endpoint alone; its recorder never answers (dropped receiver).
    async fn serve(access: Access) -> (Listening, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new("n", Health::new("/nonexistent".into(), 10)));
        let (endpoint, _messages) = PullEndpoint::new(access, metrics.clone());
        let server = Listening::start(
            "127.0.0.1:0".parse().unwrap(),
            endpoint.routes(),
            Limits::new(8),
            Default::default(),
        )
        .await
        .unwrap();
        (server, metrics)
    }

    fn status(answer: &str) -> &str {
        answer.split_whitespace().nth(1).unwrap_or("")
    }

    #[tokio::test]
    async fn exposed_without_a_token_profiles_are_forbidden() {
        let (server, metrics) = serve(Access::of("0.0.0.0:9464".parse().unwrap(), None)).await;
        let answer = get(server.address(), "/debug/pprof/profile?seconds=1").await;
        assert_eq!(status(&answer), "403", "{answer}");
        assert!(answer.contains("--http-token-file"), "{answer}");
        assert!(
            metrics
                .encode()
                .contains(r#"profiler_pull_requests_total{outcome="forbidden"} 1"#)
        );
        assert!(matches!(
            Access::of("[::1]:9464".parse().unwrap(), None),
            Access::Local
        ));
    }

    #[tokio::test]
    async fn the_token_comes_before_the_query() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "t0ken").unwrap();
        let token = TokenFile::open(Path::new(&path)).unwrap();
        let (server, _) = serve(Access::Token(token)).await;
        let answer = get(server.address(), "/debug/pprof/profile?seconds=0").await;
        assert_eq!(status(&answer), "401", "{answer}");
        assert!(answer.contains("WWW-Authenticate") || answer.contains("www-authenticate"));
    }

    #[tokio::test]
    async fn a_bad_query_is_a_400_and_a_stopped_recorder_a_503() {
        let (server, metrics) = serve(Access::Local).await;
        let answer = get(server.address(), "/debug/pprof/profile?seconds=301").await;
        assert_eq!(status(&answer), "400", "{answer}");
        assert!(answer.contains("from 1 to 300"), "{answer}");
        let answer = get(server.address(), "/debug/pprof/profile?seconds=1").await;
        assert_eq!(status(&answer), "503", "{answer}");
        assert!(answer.contains("not running"), "{answer}");
        let text = metrics.encode();
        assert!(text.contains(r#"outcome="bad_request"} 1"#), "{text}");
        assert!(text.contains(r#"outcome="unavailable"} 1"#), "{text}");
        assert!(!text.contains(r#"outcome="cancelled""#), "{text}");
    }
}
