//! An axum router served as a task of the current tokio runtime, for the metrics endpoints and
//! the web application alike: bound before it is spawned (so a taken port is an error at
//! start), told its real port when 0 was asked, stopped when dropped.
//!
//! The accept loop is ours (hyper's HTTP/1 connection per socket), not `axum::serve`, because a
//! listener open to a cluster must not let idle clients hold descriptors the recorder needs:
//! - at most [`Limits::max_connections`] connections at once; one more is answered `503` (when
//!   the answer fits the socket buffer at once) and closed, and counted. Up to [`LINGERING`]
//!   refused connections at a time first read what their client sent, for at most [`LINGER`]:
//!   closing a socket with unread bytes sends a reset, and a client that gets the reset before
//!   it reads the answer sees "connection reset" instead of the 503 and its `Retry-After`;
//! - a request's headers must arrive within [`Limits::header_timeout`] of the connection's
//!   opening or of the previous response (hyper's header read timeout, which also ends idle
//!   keep-alive connections);
//! - a connection on which no byte moved either way for [`Limits::idle_timeout`] is closed (a
//!   client that stops reading an answer, or trickles a body), unless a handler is working on
//!   its request: a profile request waits its seconds (up to 5 minutes) before it answers.

use std::{
    io,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
};

/// How many connections a listener keeps, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; more are refused.
    pub max_connections: usize,
    /// From a connection's opening, or the end of the previous answer, to the end of the next
    /// request's headers.
    pub header_timeout: Duration,
    /// With no byte read or written.
    pub idle_timeout: Duration,
}

impl Limits {
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    /// `max_connections` (at least 1), but never more than an eighth of the open-file limit, so
    /// that the listeners together cannot take the descriptors the recorder writes with.
    pub fn new(max_connections: usize) -> Limits {
        let budget = open_file_limit().map_or(usize::MAX, |limit| (limit / 8).max(1));
        if max_connections > budget {
            tracing::warn!(
                "at most {budget} connections per listener, not {max_connections}: the open-file \
                 limit is {} (raise it with `ulimit -n` or LimitNOFILE=)",
                budget * 8
            );
        }
        Limits {
            max_connections: max_connections.clamp(1, budget),
            header_timeout: Self::HEADER_TIMEOUT,
            idle_timeout: Self::IDLE_TIMEOUT,
        }
    }
}

/// The soft `RLIMIT_NOFILE`.
fn open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the local struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as usize)
}

/// Refused connections that may linger at once (each holds a descriptor for [`LINGER`]).
const LINGERING: usize = 16;
/// How long a refused connection waits for its client's request and close.
const LINGER: Duration = Duration::from_millis(500);
/// What a lingering refusal reads at most.
const LINGER_BYTES: usize = 64 << 10;

/// The answer to a connection over the cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Content-Type: text/plain\r\nRetry-After: 1\r\nContent-Length: 21\r\n\r\ntoo many connections\n";

pub struct Listening {
    address: SocketAddr,
    task: JoinHandle<io::Result<()>>,
}

impl Listening {
    /// Binds `address` and serves `app` within `limits`; connections over the cap add to
    /// `refused`.
    pub async fn start(
        address: SocketAddr,
        app: Router,
        limits: Limits,
        refused: Counter,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(accept(listener, app, limits, refused));
        Ok(Self { address, task })
    }

    /// Where it listens (with the port chosen when 0 was asked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Waits until the server stops by itself (it only does on an error of its listener).
    pub async fn stopped(&mut self) -> io::Result<()> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(err) => Err(io::Error::other(err)),
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    refused: Counter,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let lingering = Arc::new(Semaphore::new(LINGERING));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut last_warning: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors, or a connection reset before it was taken: neither ends
                // the listener. Wait a little rather than spin on a full table.
                tracing::warn!("accepting a connection failed: {err}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.inc();
            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    "refusing connections to {}: {} are open, the most it keeps (counted in \
                     profiler_connections_refused_total)",
                    listener.local_addr()?,
                    limits.max_connections
                );
            }
            // Never waits: an answer that does not fit the socket buffer at once is not sent.
            let _ = stream.try_write(REFUSAL);
            if let Ok(permit) = lingering.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _permit = permit;
                    linger(stream).await;
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let io = TokioIo::new(Watched {
            stream,
            activity: activity.clone(),
        });
        let service = Busy {
            inner: TowerToHyperService::new(app.clone()),
            activity: activity.clone(),
        };
        let connection = http.serve_connection(io, service);
        tokio::spawn(async move {
            let _slot = slot;
            let mut connection = pin!(connection);
            loop {
                let last = activity.last();
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(err) = ended {
                            tracing::debug!("connection ended: {err}");
                        }
                        return;
                    }
                    () = tokio::time::sleep_until((last + limits.idle_timeout).into()) => {
                        if activity.last() == last && !activity.busy() {
                            tracing::debug!("closing a connection idle for {:?}", limits.idle_timeout);
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// Ends a refused connection with a FIN rather than a reset: shuts its sending side (after the
/// answer), then reads what the client sent until it closes, within [`LINGER`] and
/// [`LINGER_BYTES`].
async fn linger(stream: TcpStream) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: shutdown(2) on the socket this function owns; no memory is passed.
    unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) };
    let mut buf = [0u8; 4096];
    let mut read = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while read < LINGER_BYTES {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => read += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// When a connection last moved a byte, and whether a handler is working on its request.
#[derive(Clone)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: Arc<AtomicU64>,
    /// Handlers under way.
    handling: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            handling: Arc::new(AtomicU64::new(0)),
        }
    }

    fn busy(&self) -> bool {
        self.handling.load(Ordering::Relaxed) > 0
    }

    fn touch(&self) {
        let millis = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// A service that counts its calls under way in the connection's [`Activity`]: the time a
/// handler takes is not idleness. The count drops when the call's future ends or is dropped.
struct Busy<S> {
    inner: S,
    activity: Activity,
}

/// Decrements the count of handlers under way when dropped.
struct Handling(Arc<AtomicU64>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, R> hyper::service::Service<R> for Busy<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: R) -> Self::Future {
        self.activity.handling.fetch_add(1, Ordering::Relaxed);
        let handling = Handling(self.activity.handling.clone());
        let call = self.inner.call(request);
        Box::pin(async move {
            let _handling = handling;
            call.await
        })
    }
}

/// A socket that notes its reads and writes in its [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// The raw answer (status line, headers, body) to `GET path`.
    pub(crate) async fn get(address: SocketAddr, path: &str) -> String {
        get_from(address, path, "localhost").await
    }

    /// The raw answer to `GET path` with this `Host` header.
    pub(crate) async fn get_from(address: SocketAddr, path: &str, host: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    fn hello() -> Router {
        Router::new().route("/", axum::routing::get(|| async { "hello\n" }))
    }

    /// Reads until the server closes; `None` if it has not within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut read = Vec::new();
        tokio::time::timeout(within, async {
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => read.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .ok()
        .map(|()| read)
    }

    #[tokio::test]
    async fn idle_and_slow_clients_are_closed() {
        let limits = Limits {
            max_connections: 8,
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(600),
        };
        let server = Listening::start(
            "127.0.0.1:0".parse().unwrap(),
            hello(),
            limits,
            Counter::default(),
        )
        .await
        .unwrap();
        let address = server.address();
        // Connected, says nothing.
        let mut silent = TcpStream::connect(address).await.unwrap();
        // Headers trickled, never finished.
        let mut slow = TcpStream::connect(address).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // Kept alive after an answer.
        let mut kept = TcpStream::connect(address).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let generous = Duration::from_secs(30);
        for stream in [&mut silent, &mut slow] {
            assert!(closed_within(stream, generous).await.is_some(), "left open");
        }
        let answered = closed_within(&mut kept, generous).await.expect("left open");
        assert!(String::from_utf8_lossy(&answered).contains("hello"));
        assert!(get(address, "/").await.contains("hello"), "still serving");
    }

    #[tokio::test]
    async fn a_handler_at_work_is_not_idleness_a_client_gone_quiet_after_is() {
        let limits = Limits {
            max_connections: 8,
            header_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_millis(300),
        };
        // A profile request waits its seconds before it answers.
        let slow = Router::new().route(
            "/",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "late\n"
            }),
        );
        let server = Listening::start(
            "127.0.0.1:0".parse().unwrap(),
            slow,
            limits,
            Counter::default(),
        )
        .await
        .unwrap();
        let mut stream = TcpStream::connect(server.address()).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The answer comes after five idle timeouts, then the kept-alive connection idles out.
        let read = closed_within(&mut stream, Duration::from_secs(30))
            .await
            .expect("left open after the answer");
        assert!(String::from_utf8_lossy(&read).contains("late"), "{read:?}");
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_refused_and_counted() {
        let limits = Limits {
            max_connections: 3,
            header_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(600),
        };
        let refused = Counter::default();
        let server = Listening::start(
            "127.0.0.1:0".parse().unwrap(),
            hello(),
            limits,
            refused.clone(),
        )
        .await
        .unwrap();
        let address = server.address();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(address).await.unwrap());
        }
        // The accept loop takes them in order: wait until the three are in.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = TcpStream::connect(address).await.unwrap();
        let answer = closed_within(&mut extra, Duration::from_secs(30))
            .await
            .expect("an extra connection is closed at once");
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"));
        assert_eq!(refused.get(), 1);
        drop(held);
        // The slots come back when the held connections go.
        let mut answered = false;
        for _ in 0..100 {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text).await;
            if text.contains("hello") {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(answered);
    }

    #[test]
    fn the_cap_stays_under_the_open_file_limit() {
        let limit = open_file_limit().unwrap();
        assert!(Limits::new(usize::MAX).max_connections <= limit / 8);
        assert_eq!(Limits::new(0).max_connections, 1);
        assert_eq!(Limits::new(5).max_connections, 5.min(limit / 8).max(1));
    }
}
