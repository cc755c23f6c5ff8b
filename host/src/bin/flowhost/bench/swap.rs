//! Hot swap under load: `flowhost run` as its own process streams generator → stamp (two
//! replicas) → stdout at full speed, read here with every chunk timestamped, while
//! `POST /nodes/stamp/swap` alternates the two versions of `stamp`. Figures: the gaps in
//! output while a swap is under way against the gaps while none is, and the time from the
//! request to the first output of the new version.

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

pub(super) fn run(fx: &Fixtures, swaps: usize) -> anyhow::Result<Vec<Row>> {
    let dir = super::process::scratch("swap")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let manifest = format!(
        r#"name = "swap-bench"
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
    std::fs::write(dir.join("graph.toml"), manifest)?;
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

    let mut prepared = Vec::new();
    let result = (|| {
        // Warm up, and wait for the endpoint.
        std::thread::sleep(Duration::from_secs(1));
        let mut windows = Vec::new();
        for i in 0..swaps {
            let (module, to_v2) = if i % 2 == 0 {
                (&fx.stamp_v2.path, true)
            } else {
                (&fx.stamp.path, false)
            };
            let asked = Instant::now();
            let record = request_swap(&addr, "stamp", SwapRequest::Module(module, None))?;
            anyhow::ensure!(
                record.outcome == flowhost::topology::swap::Outcome::Done,
                "{record}"
            );
            windows.push((asked, Instant::now(), to_v2));
            prepared.push(record.prepare_ms);
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

    let warm = windows.first().map(|w| w.0 - Duration::from_millis(500));
    let (mut during, mut between) = (Vec::new(), Vec::new());
    for pair in chunks.windows(2) {
        let (gap, end) = (pair[1].at - pair[0].at, pair[1].at);
        if warm.is_some_and(|w| end < w) {
            continue;
        }
        let swapping = windows
            .iter()
            .any(|(asked, done, _)| end >= *asked && end <= *done);
        if swapping { &mut during } else { &mut between }.push(gap.as_secs_f64() * 1e3);
    }
    let to_first: Vec<f64> = windows
        .iter()
        .filter_map(|(asked, _, to_v2)| {
            let first = chunks
                .iter()
                .find(|c| c.at >= *asked && if *to_v2 { c.v2 } else { c.v1 })?;
            Some((first.at - *asked).as_secs_f64() * 1e3)
        })
        .collect();
    anyhow::ensure!(!during.is_empty() && !between.is_empty(), "no output to measure");
    Ok(vec![
        Row::new(
            "swap: p99 output gap (vs no swap)",
            quantile(&mut during, 0.99),
            Some(quantile(&mut between, 0.99)),
            "ms",
            Better::Lower,
        )
        .figure_target(10.0),
        Row::new(
            "swap: max output gap (vs no swap)",
            quantile(&mut during, 1.0),
            Some(quantile(&mut between, 1.0)),
            "ms",
            Better::Lower,
        ),
        Row::new(
            "swap: request to new-version output",
            quantile(&mut to_first.clone(), 0.5),
            None,
            "ms",
            Better::Lower,
        ),
        Row::new(
            "swap: prepare (load, start, init)",
            quantile(&mut prepared, 0.5),
            None,
            "ms",
            Better::Lower,
        ),
    ])
}

/// The `q` quantile of `xs` (nearest rank).
fn quantile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let rank = ((xs.len() as f64 * q).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}
