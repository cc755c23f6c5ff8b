//! Poison messages: text lines → faulty (wasm, dead-letter policy) → null, with 0% and 1%
//! of the messages failing, in the same run. Two kinds of failure: an invalid-input error
//! the node returns (cheap: the rest of the batch stands), and a panic (the instance is
//! replaced and its batch re-run one message at a time).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::{Better, Fixtures, Row, interleaved};
use flowhost::manifest::Graph;
use flowhost::shutdown::Shutdown;
use flowhost::topology::RunOptions;

pub(super) fn run(fx: &Fixtures, messages: u64, rounds: usize) -> anyhow::Result<Vec<Row>> {
    let dir = std::env::temp_dir().join(format!("flowhost-bench-poison-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        for poison in [None, Some("bad"), Some("panic")] {
            let name = poison.unwrap_or("clean");
            generate(&dir.join(format!("{name}.txt")), messages, poison)?;
        }
        let rate = |poison: Option<&str>| -> anyhow::Result<f64> {
            let input = format!("{}.txt", poison.unwrap_or("clean"));
            let secs = flowhost(fx, &dir, &input, messages, poison.map_or(0, |_| messages / 100))?;
            Ok(messages as f64 / secs)
        };
        let invalid = interleaved(rounds, || rate(Some("bad")), || rate(None))?;
        let panics = interleaved(rounds, || rate(Some("panic")), || rate(None))?;
        Ok(vec![
            Row::rounds(
                "poison 1%, invalid input, vs 0%",
                &invalid,
                "msg/s",
                Better::Higher,
            ),
            Row::rounds("poison 1%, guest panics, vs 0%", &panics, "msg/s", Better::Higher).ratio_target(0.3),
        ])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `messages` lines; with `poison`, every 100th is `<poison>:<n>`.
fn generate(path: &Path, messages: u64, poison: Option<&str>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for n in 1..=messages {
        match poison {
            Some(p) if n % 100 == 0 => writeln!(out, "{p}:{n}")?,
            _ => writeln!(out, "message-{n:012}")?,
        }
    }
    out.flush()
}

/// Seconds to run the graph; checks every message was delivered or dead-lettered.
fn flowhost(fx: &Fixtures, dir: &Path, input: &str, messages: u64, poisoned: u64) -> anyhow::Result<f64> {
    let manifest = format!(
        r#"name = "poison-bench"
[sources.in]
kind = "file"
path = "{input}"
[nodes.faulty]
module = "{module}"
replicas = 2
on_error = "dead-letter"
dead_letter = "dead"
[sinks.out]
kind = "null"
[sinks.dead]
kind = "null"
[[edges]]
from = "in"
to = "faulty"
[[edges]]
from = "faulty"
to = "out"
"#,
        module = fx.faulty.path.display()
    );
    let graph = Graph::parse(&dir.join("graph.toml"), &manifest)?;
    let opts = RunOptions {
        batch_size: 256,
        ..RunOptions::default()
    };
    let plan = flowhost::plan::Plan::resolve(graph, None)?;
    let report = flowhost::run(&plan, &fx.engine, &opts, &Arc::new(Shutdown::default()))?;
    anyhow::ensure!(report.failure.is_none(), "{:?}", report.failure);
    let written: Vec<u64> = report.sinks.iter().map(|(_, n)| *n).collect();
    anyhow::ensure!(
        written == [poisoned, messages - poisoned],
        "dead/out {written:?}, expected {poisoned}/{}",
        messages - poisoned
    );
    Ok(report.elapsed.as_secs_f64())
}
