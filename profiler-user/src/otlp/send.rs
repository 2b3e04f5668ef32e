//! Delivery of OTLP requests to the collector, on a thread of its own: the profile writer hands
//! a request over without ever waiting ([`Exporter::submit`]), and the exporter posts it
//! (OTLP/HTTP: protobuf, gzip), retries what the specification calls retryable (429, 502, 503,
//! 504, a connection that failed or timed out) with exponential backoff and jitter, never sooner
//! than `Retry-After` says, and puts what still did not go into the [spool](super::spool), replayed
//! oldest first once the collector answers again. Other statuses are refused requests: dropped,
//! counted, and named in one warning per status.

use std::{
    collections::{HashSet, VecDeque},
    io::Write,
    path::Path,
    sync::{
        Arc,
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime},
};

use flate2::{Compression as Level, write::GzEncoder};
use prost::Message;
use ureq::Agent;

use super::{
    config::{Compression, OtlpConfig},
    proto::collector::ExportProfilesServiceRequest,
    spool::{self, Entry, Spool, SpoolError},
};
use crate::metrics::{Metrics, OtlpOutcome};

/// Requests waiting for the exporter thread. It takes them at once, unless an attempt is in
/// progress (bounded by the timeout): with intervals of a second or more this never fills.
const QUEUED: usize = 16;
/// Requests held in memory while the collector does not answer; older ones go to the spool.
const PENDING: usize = 4;
/// Attempts of a request before it goes to the spool.
const TRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest `Retry-After` obeyed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// At shutdown, what is left gets one try within this, then goes to the spool.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);
/// The most of a response body read (and thrown away: the status says it all).
const MAX_RESPONSE_BYTES: u64 = 64 << 10;

/// Sends OTLP requests from its own thread; see the module's documentation.
pub struct Exporter {
    queue: Option<SyncSender<ExportProfilesServiceRequest>>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// Opens the spool under `output_dir` (its share of `max_disk_bytes`) and starts the thread.
    pub fn start(
        config: OtlpConfig,
        output_dir: &Path,
        max_disk_bytes: Option<u64>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SpoolError> {
        let spool = Spool::open(output_dir, spool::budget(max_disk_bytes))?;
        if !spool.is_empty() {
            tracing::info!(
                requests = spool.len(),
                bytes = spool.bytes(),
                "OTLP requests an earlier run spooled will be sent first"
            );
        }
        let (queue, receiver) = mpsc::sync_channel(QUEUED);
        let mut worker = Worker::new(config, spool, metrics.clone());
        let thread = thread::Builder::new()
            .name("otlp-exporter".into())
            .spawn(move || worker.run(&receiver))
            .map_err(|source| SpoolError::Open {
                dir: output_dir.into(),
                source,
            })?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            metrics,
        })
    }

    /// Hands `request` to the exporter thread without waiting. Should its queue be full (an
    /// attempt taking longer than [`QUEUED`] intervals), the request is dropped and counted.
    pub fn submit(&self, request: ExportProfilesServiceRequest) {
        let Some(queue) = &self.queue else {
            return;
        };
        match queue.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.otlp_request(OtlpOutcome::Dropped);
                tracing::warn!("the OTLP exporter is behind: dropped an interval's request");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.otlp_request(OtlpOutcome::Dropped);
            }
        }
    }

    /// Stops the thread: what it holds gets one short try, then goes to the spool.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the OTLP exporter thread panicked");
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request not yet delivered, with its attempts so far.
struct Pending {
    body: Vec<u8>,
    tries: u32,
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Sent,
    /// Try again, not before the delay the collector asked for, if it did.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The collector refused the request: sending it again would not help.
    Refused(u16),
}

/// How the specification classes a status.
fn attempt_of_status(status: u16, retry_after: Option<Duration>) -> Attempt {
    match status {
        200..=299 => Attempt::Sent,
        429 | 502 | 503 | 504 => Attempt::Retry {
            reason: format!("HTTP {status}"),
            after: retry_after,
        },
        _ => Attempt::Refused(status),
    }
}

/// `Retry-After`: delta-seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The wait after `failures` failures in a row: 1 s doubling up to 30 s, times a jitter factor
/// in [0.5, 1] (`jitter` in [0, 1]) so that a fleet's nodes do not retry in step.
fn backoff(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let full = FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

fn jitter() -> f64 {
    getrandom::u32().map_or(0.5, |r| f64::from(r) / f64::from(u32::MAX))
}

/// Posts bodies to the endpoint.
struct Client {
    agent: Agent,
    config: OtlpConfig,
}

impl Client {
    fn new(config: OtlpConfig) -> Self {
        let agent = Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .timeout_connect(Some(config.timeout))
            .http_status_as_error(false)
            // A redirect of a POST is the collector misconfigured: reported as its status.
            .max_redirects(0)
            .user_agent(concat!("profiler/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self { agent, config }
    }

    fn post(&self, body: &[u8], gzip: bool, timeout: Duration) -> Attempt {
        let mut request = self
            .agent
            .post(&self.config.endpoint)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("content-type", "application/x-protobuf");
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        for (key, value) in &self.config.headers {
            request = request.header(key.as_str(), value.as_str());
        }
        match request.send(body) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| retry_after(value, SystemTime::now()));
                // Read (bounded) so that the connection can be reused; its content is not needed.
                let _ = response
                    .body_mut()
                    .with_config()
                    .limit(MAX_RESPONSE_BYTES)
                    .read_to_vec();
                attempt_of_status(status, after)
            }
            Err(err) => Attempt::Retry {
                reason: err.to_string(),
                after: None,
            },
        }
    }
}

struct Worker {
    client: Client,
    spool: Spool,
    pending: VecDeque<Pending>,
    /// Retryable failures in a row.
    failures: u32,
    next_attempt: Instant,
    /// Statuses already warned about.
    warned: HashSet<u16>,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn new(config: OtlpConfig, spool: Spool, metrics: Arc<Metrics>) -> Self {
        metrics.set_otlp_spool_bytes(spool.bytes());
        Self {
            client: Client::new(config),
            spool,
            pending: VecDeque::new(),
            failures: 0,
            next_attempt: Instant::now(),
            warned: HashSet::new(),
            metrics,
        }
    }

    fn gzip(&self) -> bool {
        self.client.config.compression == Compression::Gzip
    }

    fn run(&mut self, receiver: &mpsc::Receiver<ExportProfilesServiceRequest>) {
        loop {
            let idle = self.pending.is_empty() && self.spool.is_empty();
            let wait = if idle {
                Duration::from_secs(3600)
            } else {
                self.next_attempt.saturating_duration_since(Instant::now())
            };
            match receiver.recv_timeout(wait) {
                Ok(request) => self.accept(&request),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(request) = receiver.try_recv() {
                self.accept(&request);
            }
            if Instant::now() >= self.next_attempt {
                self.attempt_next();
            }
        }
        self.shut_down();
    }

    /// Encodes and compresses `request`; beyond [`PENDING`] held, the oldest goes to the spool.
    fn accept(&mut self, request: &ExportProfilesServiceRequest) {
        let encoded = request.encode_to_vec();
        let body = if self.gzip() {
            let mut gz = GzEncoder::new(Vec::with_capacity(encoded.len() / 4), Level::default());
            match gz.write_all(&encoded).and_then(|()| gz.finish()) {
                Ok(body) => body,
                Err(err) => {
                    // Writing to memory: cannot happen, but never panic on it.
                    self.metrics.otlp_request(OtlpOutcome::Dropped);
                    tracing::error!("cannot compress an OTLP request: {err}");
                    return;
                }
            }
        } else {
            encoded
        };
        self.pending.push_back(Pending { body, tries: 0 });
        while self.pending.len() > PENDING {
            if let Some(oldest) = self.pending.pop_front() {
                self.spool_body(&oldest.body);
            }
        }
    }

    /// One attempt: the oldest request in memory, else the oldest spooled one.
    fn attempt_next(&mut self) {
        if let Some(mut pending) = self.pending.pop_front() {
            let attempt = self
                .client
                .post(&pending.body, self.gzip(), self.client.config.timeout);
            pending.tries += 1;
            match self.outcome(attempt) {
                Some(true) => {}
                Some(false) if pending.tries < TRIES => {
                    self.metrics.otlp_request(OtlpOutcome::Retried);
                    self.pending.push_front(pending);
                }
                Some(false) => self.spool_body(&pending.body),
                None => {}
            }
        } else if let Some(entry) = self.spool.oldest().cloned() {
            let body = match self.spool.read(&entry) {
                Ok(body) => body,
                Err(err) => {
                    tracing::warn!(
                        "dropped the spooled OTLP request {}: {err}",
                        entry.path.display()
                    );
                    self.drop_spooled(&entry);
                    return;
                }
            };
            let attempt = self
                .client
                .post(&body, entry.gzip, self.client.config.timeout);
            match self.outcome(attempt) {
                Some(true) => {
                    self.spool.remove(&entry);
                    self.metrics.set_otlp_spool_bytes(self.spool.bytes());
                    if self.spool.is_empty() {
                        tracing::info!("the OTLP spool is empty: every spooled request was sent");
                    }
                }
                Some(false) => self.metrics.otlp_request(OtlpOutcome::Retried),
                None => self.drop_spooled(&entry),
            }
        }
    }

    /// Counts and logs an attempt, and sets the next one's time: `Some(true)` sent,
    /// `Some(false)` to retry, `None` refused (dropped).
    fn outcome(&mut self, attempt: Attempt) -> Option<bool> {
        match attempt {
            Attempt::Sent => {
                self.metrics.otlp_request(OtlpOutcome::Sent);
                if self.failures > 0 {
                    tracing::info!(
                        endpoint = %self.client.config.endpoint,
                        "the OTLP collector takes requests again"
                    );
                }
                self.failures = 0;
                self.next_attempt = Instant::now();
                Some(true)
            }
            Attempt::Retry { reason, after } => {
                self.failures += 1;
                // Retry-After as a floor, as the collector's own retry sender does: a "0"
                // must not turn the replay of a long outage's spool into a busy loop.
                let delay = backoff(self.failures, jitter()).max(after.unwrap_or_default());
                if self.failures == 1 {
                    tracing::warn!(
                        endpoint = %self.client.config.endpoint,
                        "the OTLP collector did not take a request ({reason}): retrying with backoff; \
                         requests that keep failing are spooled under the output directory"
                    );
                } else {
                    tracing::debug!(failures = self.failures, ?delay, "OTLP retry: {reason}");
                }
                self.next_attempt = Instant::now() + delay;
                Some(false)
            }
            Attempt::Refused(status) => {
                self.metrics.otlp_request(OtlpOutcome::Dropped);
                self.failures = 0;
                self.next_attempt = Instant::now();
                if self.warned.insert(status) {
                    tracing::warn!(
                        "the OTLP collector at {} refused a request with HTTP {status}: dropped; {}",
                        self.client.config.endpoint,
                        what_to_check(status)
                    );
                }
                None
            }
        }
    }

    fn spool_body(&mut self, body: &[u8]) {
        match self.spool.put(body, self.gzip(), SystemTime::now()) {
            Ok(put) => {
                self.metrics.otlp_request(OtlpOutcome::Spooled);
                for _ in 0..put.evicted {
                    self.metrics.otlp_request(OtlpOutcome::Dropped);
                }
                if put.evicted > 0 {
                    tracing::warn!(
                        evicted = put.evicted,
                        "the OTLP spool is full: deleted its oldest requests unsent"
                    );
                }
            }
            Err(err) => {
                self.metrics.otlp_request(OtlpOutcome::Dropped);
                tracing::error!("dropped an OTLP request: {}", crate::error_chain(&err));
            }
        }
        self.metrics.set_otlp_spool_bytes(self.spool.bytes());
    }

    fn drop_spooled(&mut self, entry: &Entry) {
        self.metrics.otlp_request(OtlpOutcome::Dropped);
        self.spool.remove(entry);
        self.metrics.set_otlp_spool_bytes(self.spool.bytes());
    }

    /// Each request in memory gets one try within [`SHUTDOWN_BUDGET`]; what fails or finds the
    /// budget spent goes to the spool.
    fn shut_down(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_BUDGET;
        while let Some(pending) = self.pending.pop_front() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(50) {
                self.spool_body(&pending.body);
                continue;
            }
            let timeout = left.min(self.client.config.timeout);
            let attempt = self.client.post(&pending.body, self.gzip(), timeout);
            match self.outcome(attempt) {
                Some(true) | None => {}
                Some(false) => self.spool_body(&pending.body),
            }
        }
        if !self.spool.is_empty() {
            tracing::warn!(
                requests = self.spool.len(),
                bytes = self.spool.bytes(),
                "OTLP requests left in {} for the next run",
                self.spool.dir().display()
            );
        }
    }
}

/// What the operator should look at for a refused request.
fn what_to_check(status: u16) -> &'static str {
    match status {
        401 | 403 => "check the credentials: --otlp-header or OTEL_EXPORTER_OTLP_HEADERS",
        404 | 405 => {
            "check the URL's path: the collector must serve OTLP profiles there (otlp receiver, /v1development/profiles)"
        }
        413 => "the collector's request size limit is below an interval's profiles",
        400 | 415 => "the collector does not accept OTLP profiles v1development: check its version",
        300..=399 => "the endpoint redirects: give the final URL",
        _ => "check the collector's logs",
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Read},
        net::{TcpListener, TcpStream},
        sync::Mutex,
    };

    use flate2::read::GzDecoder;

    use super::*;
    use crate::{
        metrics::Health,
        otlp::proto::{collector::ExportProfilesServiceRequest, profiles::ProfilesDictionary},
    };

    #[test]
    fn statuses_are_classed_as_the_specification_says() {
        assert_eq!(attempt_of_status(200, None), Attempt::Sent);
        assert_eq!(attempt_of_status(204, None), Attempt::Sent);
        for status in [429, 502, 503, 504] {
            assert!(matches!(
                attempt_of_status(status, None),
                Attempt::Retry { .. }
            ));
        }
        for status in [400, 401, 403, 404, 413, 500, 501] {
            assert_eq!(attempt_of_status(status, None), Attempt::Refused(status));
        }
        assert!(what_to_check(401).contains("--otlp-header"));
    }

    #[test]
    fn retry_after_seconds_or_date_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("99999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(42)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(86_400));
        assert_eq!(retry_after(&far, now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-3", now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(6, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX, 1.0), MAX_BACKOFF);
        for _ in 0..100 {
            let wait = backoff(2, jitter());
            assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2));
        }
    }

    /// What the test server got: (decoded request, content-encoding, user-agent, auth header).
    type Received = Arc<Mutex<Vec<(ExportProfilesServiceRequest, String, String, String)>>>;

    /// A tiny HTTP/1.1 server: answers `statuses` in turn (then 200) and records the requests.
    fn server(statuses: Vec<u16>) -> (String, Received) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let received: Received = Arc::default();
        let got = received.clone();
        thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                serve(stream, &mut statuses, &got);
            }
        });
        (format!("http://{address}/v1development/profiles"), received)
    }

    fn serve(stream: TcpStream, statuses: &mut impl Iterator<Item = u16>, got: &Received) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        // Requests on one connection until it closes.
        loop {
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
                headers.push(line.trim_end().to_owned());
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find_map(|h| {
                        let (k, v) = h.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let length: usize = header("content-length").parse().unwrap();
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut decoded = Vec::new();
            if header("content-encoding") == "gzip" {
                GzDecoder::new(&body[..]).read_to_end(&mut decoded).unwrap();
            } else {
                decoded = body;
            }
            let request = ExportProfilesServiceRequest::decode(&decoded[..]).unwrap();
            let status = statuses.next().unwrap_or(200);
            if status == 200 {
                got.lock().unwrap().push((
                    request,
                    header("content-encoding"),
                    header("user-agent"),
                    header("authorization"),
                ));
            }
            let extra = if status == 503 {
                "Retry-After: 0\r\n"
            } else {
                ""
            };
            let answer = format!("HTTP/1.1 {status} X\r\n{extra}Content-Length: 0\r\n\r\n");
            (&stream).write_all(answer.as_bytes()).unwrap();
        }
    }

    fn request(n: u32) -> ExportProfilesServiceRequest {
        ExportProfilesServiceRequest {
            resource_profiles: Vec::new(),
            dictionary: Some(ProfilesDictionary {
                string_table: vec![String::new(), format!("request {n}")],
                ..ProfilesDictionary::default()
            }),
        }
    }

    fn label(request: &ExportProfilesServiceRequest) -> String {
        request.dictionary.as_ref().unwrap().string_table[1].clone()
    }

    fn config(endpoint: String) -> OtlpConfig {
        OtlpConfig {
            endpoint,
            headers: vec![("authorization".into(), "Bearer t0ken".into())],
            timeout: Duration::from_secs(5),
            compression: Compression::Gzip,
        }
    }

    fn metrics(dir: &Path) -> Arc<Metrics> {
        Arc::new(Metrics::new("n", Health::new(dir.into(), 10)))
    }

    fn series(metrics: &Metrics, outcome: &str) -> u64 {
        let text = metrics.encode();
        let name = format!("profiler_otlp_requests_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&name))
            .map_or(0, |v| v.parse().unwrap())
    }

    fn wait_for(what: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !what() {
            assert!(Instant::now() < until, "timed out");
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_503_is_retried_then_sent_with_its_headers() {
        let out = tempfile::tempdir().unwrap();
        let (endpoint, received) = server(vec![503]);
        let metrics = metrics(out.path());
        let exporter =
            Exporter::start(config(endpoint), out.path(), Some(1 << 30), metrics.clone()).unwrap();
        exporter.submit(request(1));
        wait_for(|| received.lock().unwrap().len() == 1);
        exporter.finish();
        let received = received.lock().unwrap();
        let (request, encoding, agent, auth) = &received[0];
        assert_eq!(label(request), "request 1");
        assert_eq!(encoding, "gzip");
        assert!(agent.starts_with("profiler/"), "{agent}");
        assert_eq!(auth, "Bearer t0ken");
        assert_eq!(series(&metrics, "retried"), 1);
        assert_eq!(series(&metrics, "sent"), 1);
        assert_eq!(series(&metrics, "dropped"), 0);
    }

    #[test]
    fn requests_that_keep_failing_are_spooled_then_replayed() {
        let out = tempfile::tempdir().unwrap();
        // Three failures spool the first request; it is replayed once the collector answers.
        let (endpoint, received) = server(vec![503, 503, 503]);
        let metrics = metrics(out.path());
        let exporter =
            Exporter::start(config(endpoint), out.path(), Some(1 << 30), metrics.clone()).unwrap();
        exporter.submit(request(1));
        wait_for(|| series(&metrics, "spooled") == 1);
        exporter.submit(request(2));
        wait_for(|| received.lock().unwrap().len() == 2);
        exporter.finish();
        let mut labels: Vec<String> = received
            .lock()
            .unwrap()
            .iter()
            .map(|r| label(&r.0))
            .collect();
        // The replay may come before or after the second request: each arrives once.
        labels.sort();
        assert_eq!(labels, ["request 1", "request 2"]);
        assert_eq!(series(&metrics, "retried"), 2);
        assert_eq!(series(&metrics, "sent"), 2);
        assert!(fs_empty(&out.path().join(spool::SPOOL_DIR)));
        assert!(metrics.encode().contains("profiler_otlp_spool_bytes 0"));
    }

    #[test]
    fn without_compression_the_body_is_plain_protobuf() {
        let out = tempfile::tempdir().unwrap();
        let (endpoint, received) = server(vec![]);
        let config = OtlpConfig {
            compression: Compression::None,
            ..config(endpoint)
        };
        let exporter = Exporter::start(config, out.path(), None, metrics(out.path())).unwrap();
        exporter.submit(request(1));
        wait_for(|| received.lock().unwrap().len() == 1);
        exporter.finish();
        let received = received.lock().unwrap();
        assert_eq!(label(&received[0].0), "request 1");
        assert_eq!(received[0].1, "", "no Content-Encoding");
    }

    #[test]
    fn refused_requests_are_dropped_and_the_next_one_goes() {
        let out = tempfile::tempdir().unwrap();
        let (endpoint, received) = server(vec![401]);
        let metrics = metrics(out.path());
        let exporter =
            Exporter::start(config(endpoint), out.path(), Some(1 << 30), metrics.clone()).unwrap();
        exporter.submit(request(1));
        exporter.submit(request(2));
        wait_for(|| received.lock().unwrap().len() == 1);
        exporter.finish();
        assert_eq!(label(&received.lock().unwrap()[0].0), "request 2");
        assert_eq!(series(&metrics, "dropped"), 1);
        assert_eq!(series(&metrics, "retried"), 0);
    }

    /// No collector at all: at the end, what was queued is in the spool, and the next run sends
    /// it once a collector answers.
    #[test]
    fn at_shutdown_nothing_is_lost_and_the_next_run_replays() {
        let out = tempfile::tempdir().unwrap();
        // A port nobody listens on (bound, then closed).
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let metrics = metrics(out.path());
        let exporter = Exporter::start(
            config(format!("http://{closed}/v1development/profiles")),
            out.path(),
            Some(1 << 30),
            metrics.clone(),
        )
        .unwrap();
        exporter.submit(request(1));
        exporter.submit(request(2));
        let started = Instant::now();
        exporter.finish();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(series(&metrics, "spooled"), 2);
        assert_eq!(series(&metrics, "dropped"), 0);
        assert!(!fs_empty(&out.path().join(spool::SPOOL_DIR)));

        let (endpoint, received) = server(vec![]);
        let metrics = self::metrics(out.path());
        let exporter =
            Exporter::start(config(endpoint), out.path(), Some(1 << 30), metrics.clone()).unwrap();
        wait_for(|| received.lock().unwrap().len() == 2);
        exporter.finish();
        let labels: Vec<String> = received
            .lock()
            .unwrap()
            .iter()
            .map(|r| label(&r.0))
            .collect();
        assert_eq!(labels, ["request 1", "request 2"]);
        assert!(fs_empty(&out.path().join(spool::SPOOL_DIR)));
    }

    fn fs_empty(dir: &Path) -> bool {
        std::fs::read_dir(dir).unwrap().next().is_none()
    }
}
