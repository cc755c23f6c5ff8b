//! The admin endpoint of a running graph (loopback only: it has no authentication):
//! a page at `/` (the graph drawn, with live numbers in every box), `/status` (JSON),
//! `/metrics` (Prometheus text), `/graph.svg`, `/processes` (over Kafka: every process of
//! the graph, from its status topic), `/sinks/{id}/tail?after=N` (the latest messages a
//! sink wrote), and hot swap: `POST /nodes/{id}/swap` (the module in the body) and
//! `POST /nodes/{id}/rollback`, and live graph changes: `POST /apply`. Served by axum on a thread of its own, off the data
//! path; a swap is prepared, and the status topic read, on blocking threads of that
//! runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::beacon::Heartbeat;
use crate::io::http::Served;
use crate::manifest::{AutoRollback, Graph, Transport};
use crate::topology::Status;
use crate::topology::status::StatusReport;
use crate::topology::swap::{NodeVersions, Outcome, SwapRecord};

/// The largest module `POST /nodes/{id}/swap` takes.
const MAX_MODULE_BYTES: usize = 512 << 20;

/// Where `flowhost run --admin` listens when given no address, and where `flowhost status`
/// and `flowhost tail` look by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// A running admin endpoint; dropping it stops the server.
pub struct AdminServer {
    served: Served,
}

impl AdminServer {
    /// The address it listens on (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.served.addr()
    }
}

#[derive(Deserialize)]
struct TailQuery {
    #[serde(default)]
    after: u64,
}

/// Why the admin endpoint did not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// It only listens on loopback.
    #[error("the admin endpoint has no authentication and listens on loopback only; {0} is not")]
    NotLoopback(SocketAddr),
    /// Listening or starting its runtime failed.
    #[error("admin endpoint: cannot {what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        error: std::io::Error,
    },
}

/// What the page shows besides the status: the graph's picture, and over Kafka the
/// heartbeats of its processes (read at most once a second, whoever asks).
struct Page {
    kafka: Option<Graph>,
    processes: tokio::sync::Mutex<Option<(std::time::Instant, Arc<Vec<Heartbeat>>)>>,
}

/// The state every handler shares.
#[derive(Clone)]
struct Admin {
    status: Arc<Status>,
    page: Arc<Page>,
}

impl axum::extract::FromRef<Admin> for Arc<Status> {
    fn from_ref(admin: &Admin) -> Arc<Status> {
        admin.status.clone()
    }
}

/// Starts serving `status` of `graph` (the whole graph, also where this process runs a
/// part of it) on `addr`, which must be a loopback address.
pub fn serve(addr: SocketAddr, status: Arc<Status>, graph: &Graph) -> Result<AdminServer, AdminError> {
    if !addr.ip().is_loopback() {
        return Err(AdminError::NotLoopback(addr));
    }
    let failed = |(what, error)| AdminError::Io { what, error };
    let (listener, addr) = crate::io::http::listen(addr).map_err(failed)?;
    // One upload at a time: what uploads can hold in memory is MAX_MODULE_BYTES in all.
    let uploads = Arc::new(tokio::sync::Semaphore::new(1));
    let one_upload = axum::middleware::from_fn(move |request, next: axum::middleware::Next| {
        let uploads = uploads.clone();
        async move {
            match uploads.try_acquire_owned() {
                Ok(_permit) => next.run(request).await,
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    "another module upload is in progress; try again when it is done\n",
                )
                    .into_response(),
            }
        }
    });
    let page = Arc::new(Page {
        kafka: (graph.transport == Transport::Kafka).then(|| graph.clone()),
        processes: tokio::sync::Mutex::new(None),
    });
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/graph.svg", get(picture))
        .route("/processes", get(processes))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .route("/sinks/{id}/tail", get(tail))
        .route(
            "/nodes/{id}/swap",
            post(swap)
                .layer(DefaultBodyLimit::max(MAX_MODULE_BYTES))
                .layer(one_upload),
        )
        .route("/nodes/{id}/rollback", post(rollback))
        .route("/apply", post(apply))
        .with_state(Admin { status, page });
    // (Timers too: a swapped-in module's `init` may sleep through WASI, on this runtime.)
    let served = Served::start(listener, "admin", app).map_err(failed)?;
    tracing::info!(
        "admin endpoint on http://{addr} (the page at /, /status, /metrics, /sinks/<id>/tail, POST /nodes/<id>/swap, POST /apply)"
    );
    Ok(AdminServer { served })
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page.html"),
    )
}

/// The graph as it runs now (a change applied redraws it).
async fn picture(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let svg = crate::manifest::picture::svg(&status.graph(), true);
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg)
}

/// `POST /apply`, the changed manifest's path in the body (`flowhost apply`): the graph
/// becomes the manifest's while it runs (see `topology::apply`); the record as JSON, 422
/// if refused (an invalid manifest too, with where it is wrong).
async fn apply(State(status): State<Arc<Status>>, manifest: String) -> Response {
    let asked = crate::clock::now_millis();
    let applied = tokio::task::spawn_blocking(move || {
        let plan = Graph::load(std::path::Path::new(manifest.trim()))
            .map_err(|e| e.to_string())
            .and_then(|graph| crate::topology::apply::plan_change(&status, graph, None));
        match plan {
            Ok(plan) => status.applied.apply(plan),
            Err(why) => status.applied.refusal(asked, Vec::new(), why),
        }
    })
    .await;
    match applied {
        Ok(record) if record.outcome == Outcome::Done => Json(record).into_response(),
        Ok(record) => (StatusCode::UNPROCESSABLE_ENTITY, Json(record)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Over Kafka, the processes alive now (`flowhost status graph.toml --json`).
async fn processes(State(page): State<Arc<Page>>) -> Response {
    let Some(graph) = page.kafka.clone() else {
        let why = "this graph runs in one process (in-process transport): its status is /status\n";
        return (StatusCode::NOT_FOUND, why).into_response();
    };
    // One reader at a time; what it read serves everyone for a second.
    let mut cached = page.processes.lock().await;
    if let Some((at, seen)) = &*cached
        && at.elapsed() < std::time::Duration::from_secs(1)
    {
        return Json(seen.as_ref().clone()).into_response();
    }
    match tokio::task::spawn_blocking(move || crate::beacon::read(&graph)).await {
        Ok(Ok(seen)) => {
            let seen = Arc::new(seen);
            *cached = Some((std::time::Instant::now(), seen.clone()));
            Json(seen.as_ref().clone()).into_response()
        }
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

impl axum::extract::FromRef<Admin> for Arc<Page> {
    fn from_ref(admin: &Admin) -> Arc<Page> {
        admin.page.clone()
    }
}

#[derive(Deserialize)]
struct SwapQuery {
    /// The module's file name, for logs and status.
    name: Option<String>,
    /// Roll back on its own if more than this share of the first `within` messages fail.
    auto_rollback: Option<f64>,
    within: Option<u64>,
}

async fn swap(
    State(status): State<Arc<Status>>,
    Path(id): Path<String>,
    Query(q): Query<SwapQuery>,
    module: Bytes,
) -> Response {
    let trial = match (q.auto_rollback, q.within) {
        (Some(rate), _) if !(0.0..=1.0).contains(&rate) => {
            let why = format!("auto_rollback must be between 0 and 1, not {rate}\n");
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
        (Some(error_rate), within) => Some(AutoRollback {
            error_rate,
            messages: within.unwrap_or(AutoRollback::DEFAULT_MESSAGES).max(1),
        }),
        (None, _) => None,
    };
    let name = q.name.unwrap_or_else(|| String::from("posted module"));
    on_node(&status, &id, move |versions| {
        versions.swap(|engine| Ok(engine.load_bytes(&module, name.as_ref())?), trial)
    })
    .await
}

async fn rollback(State(status): State<Arc<Status>>, Path(id): Path<String>) -> Response {
    on_node(&status, &id, |versions| versions.rollback(None)).await
}

/// Runs a swap of node `id` on a blocking thread; the record as JSON, 422 if refused.
async fn on_node(
    status: &Status,
    id: &str,
    swap: impl FnOnce(&NodeVersions) -> SwapRecord + Send + 'static,
) -> Response {
    let Some(versions) = status.versions(id) else {
        return (StatusCode::NOT_FOUND, format!("no node `{id}` in this graph\n")).into_response();
    };
    match tokio::task::spawn_blocking(move || swap(&versions)).await {
        Ok(record) if record.outcome == Outcome::Done => Json(record).into_response(),
        Ok(record) => (StatusCode::UNPROCESSABLE_ENTITY, Json(record)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the swap failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn status_json(State(status): State<Arc<Status>>) -> Json<StatusReport> {
    Json(status.report())
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        status.prometheus(),
    )
}

async fn tail(
    State(status): State<Arc<Status>>,
    Path(id): Path<String>,
    Query(q): Query<TailQuery>,
) -> axum::response::Response {
    match status.tail(&id, q.after) {
        Some(msgs) => Json(msgs).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no sink `{id}` in this graph\n")).into_response(),
    }
}
