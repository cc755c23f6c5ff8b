//! The admin endpoint of a running graph (loopback only: it has no authentication):
//! `/status` (JSON), `/metrics` (Prometheus text), `/sinks/{id}/tail?after=N` (the latest
//! messages a sink wrote), and hot swap: `POST /nodes/{id}/swap` (the module in the body)
//! and `POST /nodes/{id}/rollback`. Served by axum on a thread of its own, off the data
//! path; a swap is prepared on a blocking thread of that runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::io::http::Served;
use crate::manifest::AutoRollback;
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

/// Starts serving `status` on `addr`, which must be a loopback address.
pub fn serve(addr: SocketAddr, status: Arc<Status>) -> Result<AdminServer, AdminError> {
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
    let app = axum::Router::new()
        .route("/", get(index))
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
        .with_state(status);
    // (Timers too: a swapped-in module's `init` may sleep through WASI, on this runtime.)
    let served = Served::start(listener, "admin", app).map_err(failed)?;
    tracing::info!(
        "admin endpoint on http://{addr} (/status, /metrics, /sinks/<id>/tail, POST /nodes/<id>/swap)"
    );
    Ok(AdminServer { served })
}

async fn index() -> &'static str {
    "flowhost admin endpoint: /status (JSON), /metrics (Prometheus), /sinks/<id>/tail?after=N, \
     POST /nodes/<id>/swap?name=<file>&auto_rollback=<rate>&within=<messages> (module in the body), \
     POST /nodes/<id>/rollback\n"
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
