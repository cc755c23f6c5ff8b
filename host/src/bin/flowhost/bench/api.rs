//! A graph served as an API: the price quote service of `graphs/api.toml` (HTTP source →
//! validate → enrich from a host store → price → reply, all wasm) under a fixed number
//! of concurrent keep-alive clients, against a plain axum handler doing the same work
//! natively (parse, check, look up, price, answer JSON) on one runtime thread, as the
//! HTTP source has. Both answer the same requests; every answer is checked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{Better, Fixtures, Row, interleaved};
use flowhost::manifest::Graph;
use flowhost::shutdown::Shutdown;
use flowhost::topology::{RunOptions, Runner};

/// Concurrent clients, each on its own keep-alive connection.
const CLIENTS: usize = 64;
/// Items in the price list.
const ITEMS: usize = 100;

#[derive(Serialize, Deserialize, Clone)]
struct Item {
    sku: String,
    name: String,
    unit_cents: u64,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Quote {
    sku: String,
    name: String,
    qty: u64,
    unit_cents: u64,
    discount_pct: u64,
    total_cents: u64,
}

fn items() -> Vec<Item> {
    (0..ITEMS)
        .map(|i| Item {
            sku: format!("P-{i:03}"),
            name: format!("item {i}"),
            unit_cents: 50 + (i as u64 * 37) % 1900,
        })
        .collect()
}

/// What `functions/quoting` computes, natively.
fn quote(item: &Item, qty: u64) -> Quote {
    let discount = match qty {
        100.. => 10,
        10.. => 5,
        _ => 0,
    };
    Quote {
        sku: item.sku.clone(),
        name: item.name.clone(),
        qty,
        unit_cents: item.unit_cents,
        discount_pct: discount,
        total_cents: item.unit_cents * qty * (100 - discount) / 100,
    }
}

pub(super) fn run(fx: &Fixtures, requests: usize, rounds: usize) -> anyhow::Result<Vec<Row>> {
    let dir = std::env::temp_dir().join(format!("flowhost-bench-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let list = items();
        let rows: String = list
            .iter()
            .map(|i| serde_json::to_string(i).map(|l| l + "\n"))
            .collect::<Result<_, _>>()?;
        std::fs::write(dir.join("prices.jsonl"), rows)?;
        let plan =
            flowhost::plan::Plan::resolve(Graph::parse(&dir.join("graph.toml"), &manifest(fx))?, None)?;
        let opts = RunOptions::default();
        let shutdown = Arc::new(Shutdown::default());
        let native = NativeServer::start(&list)?;
        let mut latencies: (Vec<[f64; 2]>, Vec<[f64; 2]>) = (Vec::new(), Vec::new());
        let r = std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (plan, opts, shutdown) = (&plan, &opts, &shutdown);
            let graph = s.spawn(move || -> anyhow::Result<()> {
                let transport = flowhost::transport::for_plan(plan, opts.batch_size, false, true)?;
                let runner = Runner::start(plan, &fx.engine, opts, shutdown, transport)?;
                let _ = tx.send(runner.status().clone());
                let report = runner.run()?;
                anyhow::ensure!(report.failure.is_none(), "{:?}", report.failure);
                Ok(())
            });
            let measured = rx
                .recv()
                .context("the graph did not start")
                .and_then(|status| ready(&status))
                .and_then(|url| {
                    interleaved(
                        rounds,
                        || {
                            let (rps, p50, p99) = load(&url, requests, &list)?;
                            latencies.0.push([p50, p99]);
                            Ok(rps)
                        },
                        || {
                            let (rps, p50, p99) = load(&native.url, requests, &list)?;
                            latencies.1.push([p50, p99]);
                            Ok(rps)
                        },
                    )
                });
            shutdown.request_stop();
            let ran = graph.join().map_err(|_| anyhow::anyhow!("the graph panicked"))?;
            ran.and(measured)
        })?;
        let median = |v: &[[f64; 2]], k: usize| {
            let mut x: Vec<f64> = v.iter().skip(1).map(|l| l[k]).collect();
            x.sort_by(f64::total_cmp);
            x[x.len() / 2]
        };
        let (ours, base) = (&latencies.0, &latencies.1);
        let workload = |what: &str| format!("api quote, {CLIENTS} connections, {what}");
        Ok(vec![
            Row::rounds(workload("throughput"), &r, "req/s", Better::Higher).ratio_target(0.3),
            Row::new(
                workload("p50"),
                median(ours, 0),
                Some(median(base, 0)),
                "ms",
                Better::Lower,
            ),
            Row::new(
                workload("p99"),
                median(ours, 1),
                Some(median(base, 1)),
                "ms",
                Better::Lower,
            )
            .figure_target(5.0),
        ])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `requests` requests over [`CLIENTS`] keep-alive connections, each sending its next
/// request when the last is answered (a fixed concurrency), from one async client thread
/// (so the load generator takes as little of the machine as it can): requests/s, p50
/// and p99 in ms. Every answer is checked against the quote computed here.
fn load(url: &str, requests: usize, items: &[Item]) -> anyhow::Result<(f64, f64, f64)> {
    let uri: hyper::Uri = url.parse()?;
    let addr = uri.authority().context("the URL has an address")?.to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let items: Arc<[Item]> = items.into();
    let started = Instant::now();
    let histograms = runtime.block_on(async {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (addr, uri, next, items) = (addr.clone(), uri.clone(), next.clone(), items.clone());
                tokio::spawn(async move { client(&addr, &uri, &next, requests, &items).await })
            })
            .collect();
        let mut all = Vec::new();
        for c in clients {
            all.push(c.await??);
        }
        anyhow::Ok(all)
    })?;
    let secs = started.elapsed().as_secs_f64();
    let mut all = flowhost::clock::latency_histogram();
    for h in &histograms {
        all.add(h)?;
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    Ok((requests as f64 / secs, ms(0.5), ms(0.99)))
}

/// One connection's requests, taken in turn from `next` until `requests`.
async fn client(
    addr: &str,
    uri: &hyper::Uri,
    next: &std::sync::atomic::AtomicUsize,
    requests: usize,
    items: &[Item],
) -> anyhow::Result<Histogram<u64>> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut h = flowhost::clock::latency_histogram();
    loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i >= requests {
            return Ok(h);
        }
        let item = &items[i % items.len()];
        let qty = (i / items.len()) as u64 % 150 + 1;
        let body = format!(r#"{{"sku":"{}","qty":{qty}}}"#, item.sku);
        let request = hyper::Request::post(uri.clone())
            .header(header::HOST, addr)
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))?;
        let sent = Instant::now();
        let answer = sender.send_request(request).await?;
        let status = answer.status();
        let got = answer.into_body().collect().await?.to_bytes();
        h.saturating_record(sent.elapsed().as_micros() as u64);
        anyhow::ensure!(
            status == StatusCode::OK,
            "{body} answered {status}: {}",
            String::from_utf8_lossy(&got)
        );
        let got: Quote = serde_json::from_slice(&got)?;
        anyhow::ensure!(got == quote(item, qty), "{body} answered {got:?}");
    }
}

/// The example graph, with the price list in `prices.jsonl` and the module built.
fn manifest(fx: &Fixtures) -> String {
    let module = fx.quoting.path.display();
    format!(
        r#"name = "api-bench"
[stores.prices]
[sources.prices]
kind = "jsonl"
path = "prices.jsonl"
key_field = "sku"
[sources.api]
kind = "http"
listen = "127.0.0.1:0"
path = "/quote"
key_field = "sku"
[nodes.load]
module = "{module}"
state = {{ prices = "rw" }}
config = {{ step = "load", store = "prices" }}
[nodes.validate]
module = "{module}"
on_error = "skip"
config = {{ step = "validate" }}
[nodes.enrich]
module = "{module}"
on_error = "skip"
state = {{ prices = "r" }}
config = {{ step = "enrich", store = "prices" }}
[nodes.price]
module = "{module}"
config = {{ step = "price" }}
[sinks.reply]
kind = "reply"
[[edges]]
from = "prices"
to = "load"
[[edges]]
from = "api"
to = "validate"
[[edges]]
from = "validate"
to = "enrich"
[[edges]]
from = "enrich"
to = "price"
[[edges]]
from = "price"
to = "reply"
"#
    )
}

/// Waits until the price list is in the store; the service's URL.
fn ready(status: &flowhost::topology::Status) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = status.report();
        let loaded = r
            .nodes
            .iter()
            .any(|n| n.id == "load" && n.counts.received == ITEMS as u64);
        if loaded && let Some(h) = r.sources.iter().find_map(|s| s.http.clone()) {
            return Ok(format!("http://{}/quote", h.listen));
        }
        anyhow::ensure!(Instant::now() < deadline, "the price list never loaded");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The same service as a plain axum handler, until dropped.
struct NativeServer {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl NativeServer {
    fn start(items: &[Item]) -> anyhow::Result<NativeServer> {
        let table: Arc<HashMap<String, Item>> =
            Arc::new(items.iter().map(|i| (i.sku.clone(), i.clone())).collect());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/quote", listener.local_addr()?);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let app = axum::Router::new()
            .route("/quote", axum::routing::post(handle))
            .with_state(table);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
            })
        });
        Ok(NativeServer { url, _stop: stop })
    }
}

async fn handle(
    axum::extract::State(table): axum::extract::State<Arc<HashMap<String, Item>>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    #[derive(Deserialize)]
    struct Request {
        sku: String,
        qty: u64,
    }
    let bad = |why: String| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": why })),
        )
            .into_response()
    };
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(e.to_string()),
    };
    if !(1..=10_000).contains(&request.qty) {
        return bad("`qty` must be a whole number from 1 to 10000".into());
    }
    let Some(item) = table.get(request.sku.trim()) else {
        return bad(format!("unknown sku `{}`", request.sku));
    };
    let json = serde_json::to_vec(&quote(item, request.qty)).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}
