//! A graph served as an API: an `http` source turns each request into a message with a
//! return address, and the message that reaches a `reply` sink answers it.
//!
//! - The return address is the header [`REPLY_TO`], `<process>/<request>`: which process
//!   holds the connection (`<instance>~<nonce>`, a new nonce every run, so a restarted
//!   process never takes an answer meant for its predecessor) and which of its requests.
//!   Nodes pass it on like any header (outputs inherit their input's headers).
//! - [`Exchange`] is this process's table of open requests. An answer for a request of
//!   this process completes it; the first answer wins, and later ones (a request that
//!   yielded several messages, or an answer after the timeout) are counted as
//!   `unmatched` and dropped. Over Kafka an answer for another process travels on that
//!   process's reply topic (`transport::kafka`), whose reader hands it to its exchange.
//! - A request that yields no answer within the source's `timeout_ms` is answered 504; a
//!   message that fails for good on its way (skipped, dead-lettered, or stopping the
//!   graph) answers its request with the error ([`Answer::Failed`]); when the graph stops,
//!   every request still open is answered 503. A caller never waits for nothing.
//! - Backpressure: at most `max_in_flight` requests are open per source; more are answered
//!   503 with `Retry-After` at once (no queue beyond that bound). Bodies over
//!   `max_body_bytes` are answered 413 before entering the graph.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dashmap::DashMap;
use hdrhistogram::Histogram;

use super::IoError;
use crate::clock::now_millis;
use crate::manifest::HttpSpec;
use crate::message::{Headers, Msg};
use crate::shutdown::Shutdown;
use crate::state::durable::Position;

/// The headers of a request's message and of a reply: one definition, the SDK's.
pub use flowhost_sdk::http::{CONTENT_TYPE, HEADER_PREFIX, METHOD, PATH, QUERY, REPLY_TO, STATUS};

/// What answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A reply: a message that reached a `reply` sink.
    Reply {
        /// HTTP status.
        status: u16,
        /// Content type (`None`: text if the body is UTF-8, else bytes).
        content_type: Option<String>,
        /// Body.
        body: Bytes,
    },
    /// The request's message failed for good in node `node`.
    Failed {
        /// The node.
        node: String,
        /// The error kind (`invalid-input`, `retryable`, `fatal`, `trap`, …).
        kind: String,
        /// The error text.
        error: String,
    },
    /// The graph stopped before the request was answered.
    Stopped,
}

impl Answer {
    /// The reply a message makes: its payload, with the status and content type its
    /// headers set.
    pub fn reply(msg: &Msg) -> Answer {
        let status = msg
            .headers
            .get(STATUS)
            .and_then(|s| std::str::from_utf8(s).ok()?.trim().parse().ok())
            .filter(|s| (100..1000).contains(s))
            .unwrap_or(200);
        let content_type = msg
            .headers
            .get(CONTENT_TYPE)
            .and_then(|c| std::str::from_utf8(c).ok())
            .map(str::to_owned);
        Answer::Reply {
            status,
            content_type,
            body: msg.payload.clone(),
        }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Reply { status, .. } => *status,
            Answer::Failed { kind, .. } => match kind.as_str() {
                "invalid-input" => 400,
                "retryable" => 503,
                _ => 500,
            },
            Answer::Stopped => 503,
        }
    }

    fn into_response(self, expose_errors: bool) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self {
            Answer::Reply {
                content_type, body, ..
            } => {
                let content_type = content_type
                    .and_then(|c| HeaderValue::from_str(&c).ok())
                    .unwrap_or_else(|| {
                        HeaderValue::from_static(if std::str::from_utf8(&body).is_ok() {
                            "text/plain; charset=utf-8"
                        } else {
                            "application/octet-stream"
                        })
                    });
                (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
            }
            Answer::Failed { node, kind, error } => {
                let body = if expose_errors || status.is_client_error() {
                    serde_json::json!({ "error": error, "kind": kind, "node": node })
                } else {
                    serde_json::json!({ "error": "internal error" })
                };
                (status, axum::Json(body)).into_response()
            }
            Answer::Stopped => failure(status, "the graph stopped before answering this request"),
        }
    }
}

/// A JSON error body: `{"error": …}`.
fn failure(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
}

/// A return address, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address<'a> {
    /// The process holding the connection: `<instance>~<nonce>`.
    pub process: &'a str,
    /// Its instance (which names its reply topic over Kafka).
    pub instance: &'a str,
    /// The request, numbered by that process.
    pub request: u64,
}

impl<'a> Address<'a> {
    /// Parses a [`REPLY_TO`] value.
    pub fn parse(raw: &'a [u8]) -> Option<Address<'a>> {
        let text = std::str::from_utf8(raw).ok()?;
        let (process, request) = text.rsplit_once('/')?;
        let (instance, _nonce) = process.rsplit_once('~')?;
        Some(Address {
            process,
            instance,
            request: request.parse().ok()?,
        })
    }
}

/// Where answers go: this process's [`Exchange`], or another process's reply topic.
pub trait Answers: Send + Sync {
    /// Answers the request `to` (a [`REPLY_TO`] value).
    fn answer(&self, to: &[u8], answer: Answer);
}

/// Counters of one HTTP source, for status.
#[derive(Debug)]
pub struct HttpStats {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Requests open now.
    pub in_flight: AtomicU64,
    /// Requests taken into the graph.
    pub requests: AtomicU64,
    /// Requests answered by the graph (a reply, or a failure of their message).
    pub answered: AtomicU64,
    /// Of those, answered with a status of 400 or more.
    pub errors: AtomicU64,
    /// Requests answered 504: no answer within `timeout_ms`.
    pub timed_out: AtomicU64,
    /// Requests answered 503 because `max_in_flight` were open, or the graph was stopping.
    pub rejected: AtomicU64,
    /// Requests answered 413: the body was over `max_body_bytes`.
    pub too_large: AtomicU64,
    /// Time from request to answer, microseconds (answered requests).
    pub latency: Mutex<Histogram<u64>>,
}

impl HttpStats {
    fn new(listen: SocketAddr) -> Self {
        HttpStats {
            listen,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            latency: Mutex::new(crate::clock::latency_histogram()),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// This process's open requests, by number.
pub struct Exchange {
    /// `<instance>~<nonce>`.
    process: String,
    next: AtomicU64,
    open: DashMap<u64, tokio::sync::oneshot::Sender<Answer>>,
    unmatched: AtomicU64,
}

impl Exchange {
    /// The exchange of this process, whose place among the graph's processes is `instance`.
    pub fn new(instance: &str) -> Arc<Exchange> {
        let nonce = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(crate::clock::now_millis() as u128);
            h.write_u32(std::process::id());
            h.finish()
        };
        Arc::new(Exchange {
            process: format!("{instance}~{nonce:016x}"),
            next: AtomicU64::new(0),
            open: DashMap::new(),
            unmatched: AtomicU64::new(0),
        })
    }

    /// Whether `to` is a request of this process.
    pub fn holds(&self, to: &Address<'_>) -> bool {
        to.process == self.process
    }

    /// Answers that found no open request: a request answered twice (the first answer
    /// won), or after it timed out, or a return address of an earlier run.
    pub fn unmatched(&self) -> u64 {
        self.unmatched.load(Ordering::Relaxed)
    }

    /// Requests open now.
    pub fn open_requests(&self) -> usize {
        self.open.len()
    }

    /// Completes request `to` of this process (false: it is another process's).
    pub fn complete(&self, to: &Address<'_>, answer: Answer) -> bool {
        if !self.holds(to) {
            return false;
        }
        match self.open.remove(&to.request) {
            // (The caller may have just gone away: nothing left to tell.)
            Some((_, waiting)) => drop(waiting.send(answer)),
            None => {
                self.unmatched.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    /// Answers every open request: the graph stopped.
    pub fn close(&self) {
        let open: Vec<u64> = self.open.iter().map(|e| *e.key()).collect();
        for id in open {
            if let Some((_, waiting)) = self.open.remove(&id) {
                let _ = waiting.send(Answer::Stopped);
            }
        }
    }

    fn open(&self) -> (u64, String, tokio::sync::oneshot::Receiver<Answer>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.open.insert(id, tx);
        (id, format!("{}/{id}", self.process), rx)
    }
}

impl Answers for Exchange {
    fn answer(&self, to: &[u8], answer: Answer) {
        let known = Address::parse(to).is_some_and(|a| self.complete(&a, answer));
        if !known {
            // Another process's (in-process there is none: an address read back from a
            // file of an earlier run) or not an address at all.
            self.unmatched.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Forgets its request when dropped (answered, timed out, or the caller went away).
struct Opened<'a> {
    exchange: &'a Exchange,
    id: u64,
}

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        self.exchange.open.remove(&self.id);
    }
}

/// Counts a request open while it lives.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the request handlers share.
struct Shared {
    spec: HttpSpec,
    exchange: Arc<Exchange>,
    stats: Arc<HttpStats>,
    queue: mpsc::Sender<Msg>,
    accepting: AtomicBool,
}

/// A listening HTTP source. Its requests queue for [`HttpServer::run`], the source
/// thread, which sends them into the graph in batches of what has arrived. Dropping it
/// stops the server once the requests it holds are answered (see [`Exchange::close`]).
pub struct HttpServer {
    id: String,
    shared: Arc<Shared>,
    /// (Taken by the source thread only; a lock, so the server can be shared.)
    queue: Mutex<mpsc::Receiver<Msg>>,
    served: Option<Served>,
}

impl HttpServer {
    /// Listens for source `id` as `spec` says, answering through `exchange`.
    pub fn bind(id: &str, spec: &HttpSpec, exchange: Arc<Exchange>) -> Result<HttpServer, IoError> {
        let failed = |(what, error)| IoError::Listen {
            vertex: format!("source `{id}`"),
            what,
            error,
        };
        let (listener, addr) = listen(spec.listen).map_err(failed)?;
        let (tx, queue) = mpsc::channel();
        let shared = Arc::new(Shared {
            spec: spec.clone(),
            exchange,
            stats: Arc::new(HttpStats::new(addr)),
            queue: tx,
            accepting: AtomicBool::new(true),
        });
        let app = axum::Router::new()
            .route(&spec.path, axum::routing::any(handle))
            .fallback(|uri: Uri| async move {
                failure(StatusCode::NOT_FOUND, &format!("no route for {}", uri.path()))
            })
            .with_state(shared.clone());
        let served = Served::start(listener, &format!("http {id}"), app).map_err(failed)?;
        tracing::info!("source `{id}` serves http://{addr}{}", spec.path);
        Ok(HttpServer {
            id: id.to_owned(),
            shared,
            queue: Mutex::new(queue),
            served: Some(served),
        })
    }

    /// Where it listens (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.shared.stats.listen
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<HttpStats> {
        self.shared.stats.clone()
    }

    /// The source thread: sends what requests have arrived as a batch (at most
    /// `batch_size`, no waiting for more), until a stop is requested or `send` returns
    /// false; then takes no new requests and sends those already queued.
    pub fn run(
        &self,
        batch_size: usize,
        shutdown: &Shutdown,
        mut send: impl FnMut(Vec<Msg>, Position) -> bool,
    ) -> Position {
        let mut records = 0u64;
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = |n: usize| {
            records += n as u64;
            Position { offset: 0, records }
        };
        while !shutdown.is_stopping() {
            let first = match queue.recv_timeout(Duration::from_millis(50)) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::with_capacity(batch_size.min(64));
            batch.push(first);
            batch.extend(queue.try_iter().take(batch_size.saturating_sub(1)));
            let n = batch.len();
            if !send(batch, at(n)) {
                break;
            }
        }
        self.shared.accepting.store(false, Ordering::SeqCst);
        let rest: Vec<Msg> = queue.try_iter().collect();
        if !rest.is_empty() {
            let n = rest.len();
            send(rest, at(n));
        }
        tracing::debug!("source `{}` takes no more requests", self.id);
        at(0)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
        drop(self.served.take());
    }
}

/// A failed step of starting a server: what was being done, and the error.
pub type ServeError = (String, std::io::Error);

/// Binds `addr` for [`Served::start`]: the listener and the address it really has (the
/// port it took, when asked for port 0).
pub fn listen(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), ServeError> {
    let failed = |error| (format!("listen on {addr}"), error);
    let listener = std::net::TcpListener::bind(addr).map_err(failed)?;
    listener.set_nonblocking(true).map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    Ok((listener, addr))
}

/// An axum app served on a thread of its own (a current-thread runtime with I/O and
/// timers) until dropped; dropping it shuts the server down gracefully, waiting for the
/// requests it is answering.
pub struct Served {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Serves `app` on `listener` (from [`listen`]) on a thread named `name`.
    pub fn start(
        listener: std::net::TcpListener,
        name: &str,
        app: axum::Router,
    ) -> Result<Served, ServeError> {
        let addr = listener
            .local_addr()
            .map_err(|e| ("read its address".to_owned(), e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| ("start its runtime".to_owned(), e))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let what = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let served = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                });
                if let Err(e) = served {
                    tracing::error!("{what}: the server failed: {e}");
                }
            })
            .map_err(|e| ("start its thread".to_owned(), e))?;
        Ok(Served {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request: into the graph, then wait for its answer.
async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let stats = &*s.stats;
    let rejected = |why: String| {
        HttpStats::bump(&stats.rejected);
        let mut r = failure(StatusCode::SERVICE_UNAVAILABLE, &why);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    };
    if !s.accepting.load(Ordering::SeqCst) {
        return rejected("shutting down: this process takes no more requests".into());
    }
    let open = stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _in_flight = InFlight(&stats.in_flight);
    if open > s.spec.max_in_flight as u64 {
        return rejected(format!(
            "busy: {} requests are open (max_in_flight); try again",
            s.spec.max_in_flight
        ));
    }
    let body = match axum::body::to_bytes(body, s.spec.max_body).await {
        Ok(b) => b,
        Err(_) => {
            HttpStats::bump(&stats.too_large);
            return failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than max_body_bytes = {}", s.spec.max_body),
            );
        }
    };
    let key = match (&s.spec.key_header, &s.spec.key_field) {
        (Some(h), _) => headers.get(h).map(|v| Bytes::copy_from_slice(v.as_bytes())),
        (None, Some(field)) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| super::source::json_key(&v, field)),
        (None, None) => None,
    };
    let (id, address, answer) = s.exchange.open();
    let _opened = Opened {
        exchange: &s.exchange,
        id,
    };
    let copied: Vec<(String, &[u8])> = s
        .spec
        .headers
        .iter()
        .flat_map(|name| {
            let values = headers.get_all(name.as_str()).iter();
            values.map(move |v| (format!("{HEADER_PREFIX}{name}"), v.as_bytes()))
        })
        .collect();
    let mut pairs: Vec<(&str, &[u8])> = vec![
        (REPLY_TO, address.as_bytes()),
        (METHOD, method.as_str().as_bytes()),
        (PATH, uri.path().as_bytes()),
    ];
    if let Some(q) = uri.query() {
        pairs.push((QUERY, q.as_bytes()));
    }
    pairs.extend(copied.iter().map(|(n, v)| (n.as_str(), *v)));
    let msg = Msg {
        key,
        payload: body,
        timestamp: Some(now_millis()),
        headers: Headers::from_pairs(pairs),
    };
    if s.queue.send(msg).is_err() {
        return rejected("shutting down: this process takes no more requests".into());
    }
    HttpStats::bump(&stats.requests);
    let answer = match tokio::time::timeout(s.spec.timeout, answer).await {
        Ok(Ok(answer)) => answer,
        // (The exchange answers every request before it goes: this is only a fallback.)
        Ok(Err(_)) => Answer::Stopped,
        Err(_) => {
            HttpStats::bump(&stats.timed_out);
            return failure(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("no reply within timeout_ms = {}", s.spec.timeout.as_millis()),
            );
        }
    };
    HttpStats::bump(&stats.answered);
    if answer.status() >= 400 {
        HttpStats::bump(&stats.errors);
    }
    let micros = started.elapsed().as_micros().min(u64::MAX as u128) as u64;
    stats
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .saturating_record(micros.max(1));
    answer.into_response(s.spec.expose_errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_names_its_process_instance_and_request() {
        let a = Address::parse(b"host-0~00ff/42").unwrap();
        assert_eq!((a.process, a.instance, a.request), ("host-0~00ff", "host-0", 42));
        assert_eq!(Address::parse(b"host-0/42"), None, "no nonce");
        assert_eq!(Address::parse(b"host-0~1/x"), None);
    }

    #[test]
    fn the_first_answer_wins_and_a_later_one_is_unmatched() {
        let ex = Exchange::new("here");
        let (_, address, mut rx) = ex.open();
        ex.answer(address.as_bytes(), Answer::Stopped);
        assert_eq!(rx.try_recv().unwrap(), Answer::Stopped);
        ex.answer(address.as_bytes(), Answer::Stopped);
        ex.answer(b"elsewhere~1/0", Answer::Stopped);
        assert_eq!(ex.unmatched(), 2);
        assert_eq!(ex.open_requests(), 0);
    }

    #[test]
    fn a_reply_takes_status_and_content_type_from_its_headers() {
        let mut m = Msg::new(&b"{}"[..], None);
        m.headers.set(STATUS, b"201");
        m.headers.set(CONTENT_TYPE, b"application/json");
        let a = Answer::reply(&m);
        assert_eq!(a.status(), 201);
        assert!(matches!(a, Answer::Reply { content_type: Some(ref c), .. } if c == "application/json"));
        m.headers.set(STATUS, b"nope");
        assert_eq!(
            Answer::reply(&m).status(),
            200,
            "an unreadable status is the default"
        );
        let failed = |kind: &str| Answer::Failed {
            node: "n".into(),
            kind: kind.into(),
            error: "e".into(),
        };
        assert_eq!(failed("invalid-input").status(), 400);
        assert_eq!(failed("trap").status(), 500);
    }
}
