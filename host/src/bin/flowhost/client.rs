//! The admin endpoint's client: `flowhost status`, `swap` and `tail` talk to a running
//! graph through it.

use anyhow::Context;
use axum::http::StatusCode;

use flowhost::manifest::AutoRollback;
use flowhost::topology::status::StatusReport;
use flowhost::topology::swap::SwapRecord;

/// Reads `/status` of the graph served at `addr`.
pub fn fetch_status(addr: &str) -> anyhow::Result<StatusReport> {
    let url = format!("http://{addr}/status");
    let body = ureq::get(&url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .with_context(|| {
            format!("no flowhost admin endpoint at {addr} (start one with `flowhost run --admin`)")
        })?;
    serde_json::from_str(&body).with_context(|| format!("{url} did not answer with a status"))
}

/// What `flowhost swap` asks of a running graph.
pub enum SwapRequest<'a> {
    /// Swap in this module file, judged by the trial if given.
    Module(&'a std::path::Path, Option<AutoRollback>),
    /// Return to the version before.
    Rollback,
}

/// Asks the graph at `addr` to swap `node`; the swap's record, whether done or refused.
pub fn request_swap(addr: &str, node: &str, req: SwapRequest<'_>) -> anyhow::Result<SwapRecord> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = match req {
        SwapRequest::Module(path, trial) => {
            let module = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let mut request = agent
                .post(format!("http://{addr}/nodes/{node}/swap"))
                .query("name", name);
            if let Some(t) = trial {
                request = request
                    .query("auto_rollback", t.error_rate.to_string())
                    .query("within", t.messages.to_string());
            }
            request.send(&module[..])
        }
        SwapRequest::Rollback => agent
            .post(format!("http://{addr}/nodes/{node}/rollback"))
            .send_empty(),
    };
    record(response, addr, "a swap record")
}

/// The record a change asked of the admin endpoint at `addr` answered with (done: 200,
/// refused: 422); anything else is an error, with what the endpoint said.
fn record<T: serde::de::DeserializeOwned>(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    addr: &str,
    what: &str,
) -> anyhow::Result<T> {
    let mut response = response.with_context(|| {
        format!("no flowhost admin endpoint at {addr} (start the graph with `flowhost run --admin`)")
    })?;
    let code = response.status().as_u16();
    let body = response.body_mut().read_to_string()?;
    if ![StatusCode::OK, StatusCode::UNPROCESSABLE_ENTITY]
        .map(|c| c.as_u16())
        .contains(&code)
    {
        anyhow::bail!("{}", body.trim_end());
    }
    serde_json::from_str(&body).with_context(|| format!("{addr} did not answer with {what}"))
}

/// Reads the messages sink `sink` wrote after number `after`; `Ok(None)` once the graph
/// has gone away.
pub fn fetch_tail(
    addr: &str,
    sink: &str,
    after: u64,
) -> anyhow::Result<Option<Vec<(u64, serde_json::Value)>>> {
    let url = format!("http://{addr}/sinks/{sink}/tail?after={after}");
    match ureq::get(&url).call() {
        Ok(mut r) => Ok(Some(serde_json::from_str(&r.body_mut().read_to_string()?)?)),
        Err(ureq::Error::StatusCode(404)) => anyhow::bail!("the graph at {addr} has no sink `{sink}`"),
        Err(ureq::Error::Io(_)) | Err(ureq::Error::ConnectionFailed) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {url}")),
    }
}

/// Milliseconds since the epoch as UTC, `2026-12-02T10:00:00.000Z`.
fn utc(ms: i64) -> String {
    // (humantime formats times from the epoch on.)
    match u64::try_from(ms).map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)) {
        Ok(t) => humantime::format_rfc3339_millis(t).to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

/// A status as a table for people.
pub fn table(r: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "graph `{}` {} for {:.1}s (heartbeat every {} ms)\n",
        r.graph,
        r.state.as_str(),
        r.uptime_ms as f64 / 1000.0,
        r.heartbeat_ms
    );
    for s in &r.sources {
        let _ = writeln!(out, "  source {:<16} read {}", s.id, s.read);
        if let Some(h) = &s.http {
            let _ = writeln!(
                out,
                "    http {}: {} open, {} answered ({} errors), {} timed out, {} rejected, {} too large, {} unmatched; p50 {} µs p99 {} µs",
                h.listen,
                h.in_flight,
                h.answered,
                h.errors,
                h.timed_out,
                h.rejected,
                h.too_large,
                h.unmatched,
                h.latency_us.p50,
                h.latency_us.p99
            );
        }
    }
    let _ = writeln!(
        out,
        "  {:<22} {:>10} {:>10} {:>7} {:>6} {:>9} {:>9}  replicas",
        "node", "in", "out", "errors", "dead", "p50 µs", "p99 µs"
    );
    for n in &r.nodes {
        let replicas: Vec<String> = n
            .replicas
            .iter()
            .map(|p| {
                let stale = if p.stale { " STALE" } else { "" };
                format!(
                    "#{} {} v{} q{}{stale}",
                    p.index,
                    p.state.as_str(),
                    p.version,
                    p.queue_depth
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  {:<22} {:>10} {:>10} {:>7} {:>6} {:>9} {:>9}  {}",
            format!("{} v{}", n.id, n.version),
            n.counts.received,
            n.counts.emitted,
            n.counts.errors,
            n.counts.dead_lettered,
            n.latency_us.p50,
            n.latency_us.p99,
            replicas.join(", ")
        );
    }
    for n in &r.nodes {
        // Event time, for nodes that have any: watermark (UTC), idleness, timers.
        let timed: Vec<String> = n
            .replicas
            .iter()
            .filter(|p| p.watermark.is_some() || p.event_timers + p.processing_timers > 0)
            .map(|p| {
                let watermark = match p.watermark {
                    None => "none".to_owned(),
                    Some(i64::MAX) => "end".to_owned(),
                    Some(ms) => utc(ms),
                };
                let idle = if p.idle { " idle" } else { "" };
                format!(
                    "#{} watermark {watermark}{idle}, timers {} event {} processing",
                    p.index, p.event_timers, p.processing_timers
                )
            })
            .collect();
        if !timed.is_empty() {
            let _ = writeln!(out, "  time   {:<16} {}", n.id, timed.join("; "));
        }
    }
    for n in &r.nodes {
        // The latest swaps; the rest are in `--json`.
        for swap in &n.swaps[n.swaps.len().saturating_sub(3)..] {
            let _ = writeln!(out, "  swap   {swap}");
        }
    }
    for s in &r.sinks {
        let _ = writeln!(
            out,
            "  sink   {:<16} wrote {} (queue {})",
            s.id, s.written, s.queue_depth
        );
    }
    for s in &r.stores {
        let durable = if s.durable { "durable" } else { "memory" };
        let _ = writeln!(out, "  store  {:<16} {} keys ({durable})", s.name, s.keys);
    }
    for l in &r.loops {
        let lag = if r.kafka.is_some() {
            format!(", lag {}", l.lag)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  loop   {:<16} iteration {}, {} sent around, {} dropped, {} batch(es) queued{lag}",
            l.nodes.join(","),
            l.iteration,
            l.fed_back,
            l.exceeded,
            l.queued
        );
    }
    if let Some(k) = &r.kafka {
        let link = if k.connected { "connected" } else { "NOT CONNECTED" };
        let _ = writeln!(
            out,
            "  kafka  {} {link}, {} error(s), lag {}",
            k.brokers, k.errors, k.lag
        );
        for g in &k.inputs {
            let waiting = match (g.stuck, g.uncommitted_ms) {
                (true, Some(ms)) => format!(", STUCK: nothing committed for {}s", ms / 1000),
                _ => String::new(),
            };
            let _ = writeln!(out, "  group  {} lag {}{waiting}", g.vertex, g.lag);
            for p in &g.partitions {
                let _ = writeln!(
                    out,
                    "         {}/{} committed {} fetched {} end {} lag {}",
                    p.topic, p.partition, p.committed, p.fetched, p.end, p.lag
                );
            }
        }
    }
    out
}

/// Every process of Kafka graph `graph` (from its status topic): each one's status table,
/// under a line naming it and how old its heartbeat is.
pub fn processes_table(graph: &str, processes: &[flowhost::beacon::Heartbeat]) -> String {
    use std::fmt::Write;
    let now = flowhost::clock::now_millis();
    let mut out = format!("graph `{graph}`: {} process(es)\n", processes.len());
    for p in processes {
        let partitions: usize = p
            .report
            .kafka
            .iter()
            .flat_map(|k| &k.inputs)
            .map(|g| g.partitions.len())
            .sum();
        let lag = p.report.kafka.as_ref().map_or(0, |k| k.lag);
        let _ = writeln!(
            out,
            "\nprocess {} (host {}, pid {}): heartbeat {:.1}s ago, {partitions} partition(s), lag {lag}",
            p.process,
            p.host,
            p.pid,
            (now - p.at_ms).max(0) as f64 / 1000.0
        );
        out.push_str(&table(&p.report));
    }
    out
}

/// `flowhost apply`: asks the graph at `addr` to become what `manifest` says (checked
/// here first, so a bad manifest is reported where it is wrong); prints the outcome;
/// whether it was applied.
pub fn apply(addr: &str, manifest: &std::path::Path, json: bool) -> anyhow::Result<bool> {
    if let Err(e) = flowhost::manifest::Graph::load(manifest) {
        eprintln!("error: the change is not applied, the graph runs on untouched:\n{e}");
        return Ok(false);
    }
    let record = request_apply(addr, manifest)?;
    let done = record.outcome == flowhost::topology::swap::Outcome::Done;
    match (json, done) {
        (true, _) => println!("{}", serde_json::to_string(&record)?),
        (false, true) => println!("{record}"),
        (false, false) => eprintln!("error: {record}"),
    }
    Ok(done)
}

/// Asks the graph at `addr` to become what `manifest` says (`POST /apply`); its record.
pub fn request_apply(
    addr: &str,
    manifest: &std::path::Path,
) -> anyhow::Result<flowhost::topology::apply::ApplyRecord> {
    let path = manifest
        .canonicalize()
        .with_context(|| format!("resolving {}", manifest.display()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(660)))
        .build()
        .into();
    let response = agent
        .post(format!("http://{addr}/apply"))
        .send(path.display().to_string());
    record(response, addr, "an apply record")
}

/// Calls `changed` whenever `file` changes (once the writes of an editor settle), until
/// the process is stopped.
pub fn on_change(
    file: &std::path::Path,
    mut changed: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use notify::Watcher as _;
    let file = file.canonicalize()?;
    let dir = file.parent().unwrap_or(std::path::Path::new("/")).to_owned();
    let (tx, events) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx)?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    eprintln!("watching {} (Ctrl-C to stop)", file.display());
    let settle = std::time::Duration::from_millis(200);
    let mut due = None;
    loop {
        match events.recv_timeout(settle) {
            Ok(Ok(event)) => {
                let ours = event.paths.iter().any(|p| p.file_name() == file.file_name());
                if ours && !matches!(event.kind, notify::EventKind::Access(_)) {
                    due = Some(std::time::Instant::now() + settle);
                }
            }
            Ok(Err(e)) => eprintln!("file watcher: {e}"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if due.is_some_and(|at| std::time::Instant::now() >= at) {
            due = None;
            changed()?;
        }
    }
}
