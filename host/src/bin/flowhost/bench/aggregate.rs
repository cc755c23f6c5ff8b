//! Aggregation: JSON sales through jsonl source → aggregate (wasm, 2 replicas, key-hash on
//! the country, count/sum/avg/min/max/count-distinct in a host store) → null, against the
//! same aggregation in plain Rust; then the same graph with the store durable
//! (checkpointed every second) against the in-memory store; then event-time windows (1 s
//! tumbling per country, records up to 50 ms out of order, a watermark 100 ms behind)
//! against the same windows in a plain loop that closes them by the same watermark,
//! in interleaved rounds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{Better, Fixtures, Row};
use flowhost::manifest::Graph;
use flowhost::shutdown::Shutdown;
use flowhost::topology::RunOptions;

const COUNTRIES: u64 = 20;

pub(super) fn run(fx: &Fixtures, messages: u64) -> anyhow::Result<Vec<Row>> {
    let dir = std::env::temp_dir().join(format!("flowhost-bench-agg-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let data = dir.join("sales.jsonl");
        generate(&data, messages)?;
        let native = native(&data)?;
        let memory = flowhost(fx, &dir, false)?;
        let durable = flowhost(fx, &dir, true)?;
        let rate = |secs: f64| messages as f64 / secs;
        // Windows: best of two interleaved rounds each.
        let (mut native_windows, mut windowed) = (f64::MAX, f64::MAX);
        for _ in 0..2 {
            native_windows = native_windows.min(native_windowed(&data)?);
            windowed = windowed.min(flowhost_windowed(fx, &dir, messages)?);
        }
        Ok(vec![
            Row::new(
                "windowed aggregation (1 s tumbling)",
                rate(windowed),
                Some(rate(native_windows)),
                "msg/s",
                Better::Higher,
            ),
            Row::new(
                format!("aggregation {messages} msgs, host store"),
                rate(memory),
                Some(rate(native)),
                "msg/s",
                Better::Higher,
            ),
            Row::new(
                "aggregation, durable store vs memory",
                rate(durable),
                Some(rate(memory)),
                "msg/s",
                Better::Higher,
            )
            .ratio_target(0.9),
        ])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Record `n`'s event time: 1 ms apart, up to 49 ms out of order.
fn event_time(n: u64) -> i64 {
    (n + 100 - (n.wrapping_mul(7919) % 50)) as i64
}

/// Windows of this length.
const WINDOW_MS: i64 = 1000;
/// The watermark trails the largest timestamp by this much.
const OUT_OF_ORDERNESS_MS: i64 = 100;

/// Runs `manifest` (in `dir`, 1,024 messages a batch, afresh); its report, if it did not fail.
fn run_graph(fx: &Fixtures, dir: &Path, manifest: &str) -> anyhow::Result<flowhost::topology::RunReport> {
    let graph = Graph::parse(&dir.join("graph.toml"), manifest)?;
    let opts = RunOptions {
        batch_size: 1024,
        fresh: true,
        ..RunOptions::default()
    };
    let plan = flowhost::plan::Plan::resolve(graph, None)?;
    let report = flowhost::run(&plan, &fx.engine, &opts, &Arc::new(Shutdown::default()))?;
    anyhow::ensure!(report.failure.is_none(), "{:?}", report.failure);
    Ok(report)
}

/// Seconds to run the windowed graph; checks it emitted a row per country and window.
fn flowhost_windowed(fx: &Fixtures, dir: &Path, messages: u64) -> anyhow::Result<f64> {
    let manifest = format!(
        r#"name = "window-bench"
[stores.windows]
[sources.sales]
kind = "jsonl"
path = "sales.jsonl"
key_field = "country"
timestamp_field = "ts"
watermark = {{ out_of_orderness_ms = {OUT_OF_ORDERNESS_MS} }}
[nodes.agg]
module = "{module}"
replicas = 2
state = {{ windows = "rw" }}
[nodes.agg.config]
store = "windows"
group_by = ["country"]
aggregates = [{{ fn = "count" }}, {{ fn = "sum", field = "amount_cents" }}]
window = {{ kind = "tumbling", size_ms = {WINDOW_MS} }}
[sinks.null]
kind = "null"
[[edges]]
from = "sales"
to = "agg"
connection = "key-hash"
[[edges]]
from = "agg"
to = "null"
"#,
        module = fx.aggregate.path.display()
    );
    let report = run_graph(fx, dir, &manifest)?;
    let windows = (event_time(messages - 1) / WINDOW_MS + 1) as u64;
    anyhow::ensure!(
        report.sinks[0].1 >= windows * COUNTRIES * 9 / 10 && report.sinks[0].1 <= windows * COUNTRIES,
        "{} rows for {windows} windows of {COUNTRIES} countries",
        report.sinks[0].1
    );
    Ok(report.elapsed.as_secs_f64())
}

/// The same windows in a plain loop: count and sum per (window, country), each window
/// closed (its rows made) once the same watermark passes its end.
fn native_windowed(data: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut open: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut max_seen = i64::MIN;
    for line in BufReader::new(std::fs::File::open(data)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let (Some(country), Some(amount), Some(ts)) = (
            v["country"].as_str(),
            v["amount_cents"].as_i64(),
            v["ts"].as_i64(),
        ) else {
            anyhow::bail!("a generated line without its fields");
        };
        let window = ts - ts.rem_euclid(WINDOW_MS);
        let t = open.entry((window, country.to_owned())).or_default();
        t.0 += 1;
        t.1 += amount;
        max_seen = max_seen.max(ts);
        let watermark = max_seen - OUT_OF_ORDERNESS_MS;
        while let Some(entry) = open.first_entry() {
            if entry.key().0 + WINDOW_MS > watermark {
                break;
            }
            let ((w, c), (count, sum)) = entry.remove_entry();
            rows.push(
                serde_json::json!({"country": c, "window_start": w, "count": count, "sum": sum}).to_string(),
            );
        }
    }
    for ((w, c), (count, sum)) in open {
        rows.push(
            serde_json::json!({"country": c, "window_start": w, "count": count, "sum": sum}).to_string(),
        );
    }
    anyhow::ensure!(!rows.is_empty());
    Ok(start.elapsed().as_secs_f64())
}

fn generate(path: &Path, messages: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for n in 0..messages {
        let h = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        writeln!(
            out,
            r#"{{"country":"C{}","customer":"c{}","amount_cents":{},"ts":{}}}"#,
            h % COUNTRIES,
            (h >> 8) % 5000,
            (h >> 24) % 10_000,
            event_time(n)
        )?;
    }
    out.flush()
}

/// Seconds to run the graph; checks it emitted one row per country.
fn flowhost(fx: &Fixtures, dir: &Path, durable: bool) -> anyhow::Result<f64> {
    let durability = if durable { "durable" } else { "memory" };
    let manifest = format!(
        r#"name = "aggregate-bench"
[checkpoint]
dir = "state"
[stores.totals]
durability = "{durability}"
[sources.sales]
kind = "jsonl"
path = "sales.jsonl"
key_field = "country"
[nodes.agg]
module = "{module}"
replicas = 2
state = {{ totals = "rw" }}
[nodes.agg.config]
store = "totals"
group_by = ["country"]
aggregates = [{{ fn = "count" }}, {{ fn = "sum", field = "amount_cents" }}, {{ fn = "avg", field = "amount_cents" }},
  {{ fn = "min", field = "amount_cents" }}, {{ fn = "max", field = "amount_cents" }},
  {{ fn = "count_distinct", field = "customer" }}]
[sinks.null]
kind = "null"
[[edges]]
from = "sales"
to = "agg"
connection = "key-hash"
[[edges]]
from = "agg"
to = "null"
"#,
        module = fx.aggregate.path.display()
    );
    let report = run_graph(fx, dir, &manifest)?;
    anyhow::ensure!(
        report.sinks[0].1 == COUNTRIES,
        "{} rows for {COUNTRIES} countries",
        report.sinks[0].1
    );
    Ok(report.elapsed.as_secs_f64())
}

#[derive(Default)]
struct Totals {
    count: i64,
    sum: i64,
    min: i64,
    max: i64,
    customers: HashSet<String>,
}

/// The same aggregation in a plain loop.
fn native(data: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut groups: HashMap<String, Totals> = HashMap::new();
    for line in BufReader::new(std::fs::File::open(data)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let (Some(country), Some(customer), Some(amount)) = (
            v["country"].as_str(),
            v["customer"].as_str(),
            v["amount_cents"].as_i64(),
        ) else {
            anyhow::bail!("a generated line without its fields");
        };
        let t = groups
            .entry(format!("[{:?}]", country))
            .or_insert_with(|| Totals {
                min: i64::MAX,
                max: i64::MIN,
                ..Totals::default()
            });
        t.count += 1;
        t.sum += amount;
        t.min = t.min.min(amount);
        t.max = t.max.max(amount);
        t.customers.insert(customer.to_owned());
    }
    anyhow::ensure!(groups.len() as u64 == COUNTRIES);
    Ok(start.elapsed().as_secs_f64())
}
