//! Passthrough: generator → wasm passthrough → counting sink, through the real topology,
//! against a hand-written native pipeline with the same threads, channels and batch size.

use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::Instant;

use bytes::Bytes;

use super::{Better, Fixtures, Row, interleaved};
use flowhost::clock::now_millis;
use flowhost::manifest::Graph;
use flowhost::message::{Msg, batch_from, sequence_payload};
use flowhost::shutdown::Shutdown;
use flowhost::topology::RunOptions;

const BATCH: usize = 1024;

pub(super) fn run(fx: &Fixtures, messages: u64, rounds: usize) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for size in [16usize, 1024] {
        let n = if size > 16 { messages / 4 } else { messages };
        let r = interleaved(
            rounds,
            || Ok(flowhost(fx, n, size)? / 1e6),
            || Ok(native(n, size) / 1e6),
        )?;
        let row = Row::rounds(format!("passthrough, {size} B"), &r, "M msg/s", Better::Higher);
        rows.push(row.ratio_target(0.8));
        if size == 16 {
            rows.push(
                Row::new(
                    "passthrough per node, 16 B",
                    r.ours,
                    None,
                    "M msg/s",
                    Better::Higher,
                )
                .figure_target(5.0),
            );
        }
    }
    Ok(rows)
}

fn flowhost(fx: &Fixtures, count: u64, size: usize) -> anyhow::Result<f64> {
    let manifest = format!(
        "name = \"bench\"\n[sources.gen]\nkind = \"generator\"\ncount = {count}\npayload_size = {size}\n\
         [nodes.pass]\nmodule = \"{}\"\n[sinks.null]\nkind = \"null\"\n\
         [[edges]]\nfrom = \"gen\"\nto = \"pass\"\n[[edges]]\nfrom = \"pass\"\nto = \"null\"\n",
        fx.passthrough.path.display()
    );
    let graph = Graph::parse(&std::env::current_dir()?.join("bench.toml"), &manifest)?;
    let opts = RunOptions {
        batch_size: BATCH,
        ..RunOptions::default()
    };
    let plan = flowhost::plan::Plan::resolve(graph, None)?;
    let report = flowhost::run(&plan, &fx.engine, &opts, &Arc::new(Shutdown::default()))?;
    anyhow::ensure!(
        report.sinks[0].1 == count,
        "the sink got {} of {count} messages",
        report.sinks[0].1
    );
    Ok(count as f64 / report.elapsed.as_secs_f64())
}

/// Three threads and two bounded channels of batches, as the topology has; the node copies
/// each payload, as the passthrough node does.
fn native(count: u64, size: usize) -> f64 {
    let start = Instant::now();
    let (to_node, node_in) = sync_channel::<Vec<Msg>>(RunOptions::default().channel_capacity);
    let (to_sink, sink_in) = sync_channel::<Vec<Msg>>(RunOptions::default().channel_capacity);
    let source = thread::spawn(move || {
        let mut next = 0u64;
        while next < count {
            let n = (count - next).min(BATCH as u64) as usize;
            let batch = batch_from(n, Some(now_millis()), |i, b| {
                sequence_payload(next + i as u64, size, b)
            });
            next += n as u64;
            if to_node.send(batch).is_err() {
                break;
            }
        }
    });
    let node = thread::spawn(move || {
        for batch in node_in {
            let out: Vec<Msg> = batch
                .into_iter()
                .map(|m| Msg {
                    payload: Bytes::copy_from_slice(&m.payload),
                    ..m
                })
                .collect();
            if to_sink.send(out).is_err() {
                break;
            }
        }
    });
    let received: u64 = sink_in.iter().map(|b| b.len() as u64).sum();
    let _ = (source.join(), node.join());
    assert_eq!(received, count);
    count as f64 / start.elapsed().as_secs_f64()
}
