//! Changes under load: `flowhost run` as its own process streams generator → stamp (two
//! replicas) → stdout at full speed, read here with every chunk timestamped, while
//! `POST /nodes/stamp/swap` alternates the two versions of `stamp` (swap), or `POST
//! /apply` adds and removes a branch (apply). Figures: the gaps in output while a change
//! is under way against the gaps while none is; for a swap the time from the request to
//! the first output of the new version, for an apply how long the sources paused.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Better, Fixtures, Row};
use crate::client::{SwapRequest, request_swap};

/// One read of the graph's output: when, and which versions' lines it held.
struct Chunk {
    at: Instant,
    v1: bool,
    v2: bool,
}

/// generator → stamp (two replicas) → stdout, and with `tap` also generator → pass →
/// null: the graph the changes run against.
fn manifest(fx: &Fixtures, tap: bool) -> String {
    let mut manifest = format!(
        r#"name = "change-bench"
[sources.in]
kind = "generator"
payload_size = 16
[nodes.stamp]
module = "{}"
replicas = 2
[sinks.out]
kind = "stdout"
[[edges]]
from = "in"
to = "stamp"
[[edges]]
from = "stamp"
to = "out"
"#,
        fx.stamp.path.display()
    );
    if tap {
        manifest += &format!(
            r#"[nodes.tap]
module = "{}"
[sinks.tapped]
kind = "null"
[[edges]]
from = "in"
to = "tap"
[[edges]]
from = "tap"
to = "tapped"
"#,
            fx.passthrough.path.display()
        );
    }
    manifest
}

/// What a run under load saw: every read of its output, and per change asked its window
/// (asked, answered), whether it was to v2, and its own figure (prepare or pause, ms).
struct Seen {
    chunks: Vec<Chunk>,
    windows: Vec<(Instant, Instant, bool, f64)>,
}

/// Runs the graph of `manifest(fx, false)` as its own process and asks `changes` changes
/// of it through its admin endpoint, `change(i, addr)` each (whether to v2, its figure).
fn under_load(
    fx: &Fixtures,
    name: &str,
    changes: usize,
    mut change: impl FnMut(usize, &str, &std::path::Path) -> anyhow::Result<(bool, f64)>,
) -> anyhow::Result<Seen> {
    let dir = super::process::scratch(name)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(dir.join("graph.toml"), manifest(fx, false))?;
    std::fs::write(dir.join("tapped.toml"), manifest(fx, true))?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "run",
            "--quiet",
            "graph.toml",
            "--admin",
            &addr,
            "--heartbeat-ms",
            "100",
        ])
        .current_dir(&dir)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut chunks = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let has = |v: &[u8]| buf[..n].windows(3).any(|w| w == v);
            chunks.push(Chunk {
                at: Instant::now(),
                v1: has(b"v1 "),
                v2: has(b"v2 "),
            });
        }
        chunks
    });
    let result = (|| -> anyhow::Result<_> {
        // Warm up, and wait for the endpoint.
        std::thread::sleep(Duration::from_secs(1));
        let mut windows = Vec::new();
        for i in 0..changes {
            let asked = Instant::now();
            let (to_v2, figure) = change(i, &addr, &dir)?;
            windows.push((asked, Instant::now(), to_v2, figure));
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(windows)
    })();
    let _ = child.kill();
    let _ = child.wait();
    let chunks = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let windows = result?;
    anyhow::ensure!(chunks.len() > 100, "the graph wrote almost nothing");
    Ok(Seen { chunks, windows })
}

impl Seen {
    /// The output gaps (ms) ending while a change was under way, and while none was.
    fn gaps(&self) -> (Vec<f64>, Vec<f64>) {
        let warm = self.windows.first().map(|w| w.0 - Duration::from_millis(500));
        let (mut during, mut between) = (Vec::new(), Vec::new());
        for pair in self.chunks.windows(2) {
            let (gap, end) = (pair[1].at - pair[0].at, pair[1].at);
            if warm.is_some_and(|w| end < w) {
                continue;
            }
            let changing = self
                .windows
                .iter()
                .any(|(asked, done, _, _)| end >= *asked && end <= *done);
            if changing { &mut during } else { &mut between }.push(gap.as_secs_f64() * 1e3);
        }
        (during, between)
    }

    /// Rows `<what>: p99 output gap` and `max output gap`, against no change running.
    fn gap_rows(&self, what: &str, target_ms: f64) -> anyhow::Result<Vec<Row>> {
        let (mut during, mut between) = self.gaps();
        anyhow::ensure!(!during.is_empty() && !between.is_empty(), "no output to measure");
        Ok(vec![
            Row::new(
                format!("{what}: p99 output gap (vs no {what})"),
                quantile(&mut during, 0.99),
                Some(quantile(&mut between, 0.99)),
                "ms",
                Better::Lower,
            )
            .figure_target(target_ms),
            Row::new(
                format!("{what}: max output gap (vs no {what})"),
                quantile(&mut during, 1.0),
                Some(quantile(&mut between, 1.0)),
                "ms",
                Better::Lower,
            ),
        ])
    }

    /// The median of the changes' own figures.
    fn figure(&self) -> f64 {
        let mut figures: Vec<f64> = self.windows.iter().map(|w| w.3).collect();
        quantile(&mut figures, 0.5)
    }
}

/// Hot swaps alternating the two versions of `stamp`.
pub(super) fn run(fx: &Fixtures, swaps: usize) -> anyhow::Result<Vec<Row>> {
    let seen = under_load(fx, "swap", swaps, |i, addr, _| {
        let (module, to_v2) = if i % 2 == 0 {
            (&fx.stamp_v2.path, true)
        } else {
            (&fx.stamp.path, false)
        };
        let record = request_swap(addr, "stamp", SwapRequest::Module(module, None))?;
        anyhow::ensure!(
            record.outcome == flowhost::topology::swap::Outcome::Done,
            "{record}"
        );
        Ok((to_v2, record.prepare_ms))
    })?;
    let mut to_first: Vec<f64> = seen
        .windows
        .iter()
        .filter_map(|(asked, _, to_v2, _)| {
            let first = seen
                .chunks
                .iter()
                .find(|c| c.at >= *asked && if *to_v2 { c.v2 } else { c.v1 })?;
            Some((first.at - *asked).as_secs_f64() * 1e3)
        })
        .collect();
    let mut rows = seen.gap_rows("swap", 10.0)?;
    rows.push(Row::new(
        "swap: request to new-version output",
        quantile(&mut to_first, 0.5),
        None,
        "ms",
        Better::Lower,
    ));
    rows.push(Row::new(
        "swap: prepare (load, start, init)",
        seen.figure(),
        None,
        "ms",
        Better::Lower,
    ));
    Ok(rows)
}

/// Live graph changes (`flowhost apply`): a branch added, then removed again, in turn.
pub(super) fn apply(fx: &Fixtures, applies: usize) -> anyhow::Result<Vec<Row>> {
    let seen = under_load(fx, "apply", applies, |i, addr, dir| {
        let manifest = dir.join(if i % 2 == 0 { "tapped.toml" } else { "graph.toml" });
        let record = crate::client::request_apply(addr, &manifest)?;
        anyhow::ensure!(
            record.outcome == flowhost::topology::swap::Outcome::Done && !record.changes.is_empty(),
            "{record}"
        );
        Ok((false, record.pause_ms))
    })?;
    let mut rows = seen.gap_rows("apply", 10.0)?;
    rows.push(Row::new(
        "apply: sources paused (drain, rewire)",
        seen.figure(),
        None,
        "ms",
        Better::Lower,
    ));
    Ok(rows)
}

/// The `q` quantile of `xs` (nearest rank).
fn quantile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let rank = ((xs.len() as f64 * q).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}
