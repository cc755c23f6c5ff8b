//! `flowhost bench`: what a message costs, measured against a baseline in the same run.
//!
//! 1. **Boundary**: one batch through the passthrough node in wasm (frame → `process` →
//!    decode, as the host does it) against the same node logic compiled natively and
//!    driven by the same SDK batch runtime.
//! 2. **Graph**: messages/s through generator → passthrough → null sink, threads,
//!    channels and routing included.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowhost_sdk::__private::Runtime;
use flowhost_sdk::{Message, NoConfig, Node, NodeError, Output};

use crate::engine::{Engine, EngineConfig, NodeTemplate};
use crate::manifest::Graph;
use crate::message::{self, Msg, batch_from, sequence_payload};
use crate::topology::{self, RunOptions, Shutdown};

/// Options of `flowhost bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Messages through the graph.
    #[arg(long, default_value_t = 2_000_000)]
    pub messages: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 16)]
    pub payload_size: usize,
    /// Messages per batch.
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    /// How long to measure each boundary variant.
    #[arg(long, default_value = "2", value_parser = parse_secs)]
    pub seconds: Duration,
    /// The passthrough node crate (built when stale).
    #[arg(long, default_value = "functions/passthrough")]
    pub node: PathBuf,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| e.to_string())
}

/// The passthrough node's logic, compiled into the host: what `#[node(map)] fn(&[u8]) -> &[u8]` expands to.
struct NativePassthrough;

impl Node for NativePassthrough {
    type Config = NoConfig;

    fn init(_: NoConfig) -> Result<Self, NodeError> {
        Ok(NativePassthrough)
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        out.emit(msg.payload())
    }
}

/// Runs both measurements and prints them.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let engine = Engine::new(EngineConfig::default())?;
    let module = engine.load(&crate::manifest::ModuleRef::Crate(args.node.clone()))?;
    let ports = (
        &[crate::DEFAULT_INPUT.to_owned()][..],
        &[crate::DEFAULT_OUTPUT.to_owned()][..],
    );
    let template = NodeTemplate::new(
        &engine,
        module,
        "passthrough",
        "{}",
        ports,
        Duration::from_secs(10),
        256,
    )?;
    let mut wasm = template.instantiate()?;
    let mut native = Runtime::<NativePassthrough>::new("native", "{}", vec!["in".into()], vec!["out".into()])
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let size = args.payload_size;
    let batch: Vec<Msg> = batch_from(args.batch_size, Some(0), |i, b| {
        sequence_payload(i as u64, size, b)
    });
    let input = message::encode(&batch, 0);
    println!(
        "boundary: batches of {} messages, {} B payloads",
        args.batch_size, size
    );
    let native_ns = per_message(args, || {
        let out = native.process(&input).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(message::decode(out, 1)?.records.len())
    })?;
    let wasm_ns = per_message(args, || {
        let out = wasm.process(&input).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(message::decode(out, 1)?.records.len())
    })?;
    println!(
        "  native  {native_ns:8.1} ns/msg  {:6.2} M msg/s",
        1e3 / native_ns
    );
    println!("  wasm    {wasm_ns:8.1} ns/msg  {:6.2} M msg/s", 1e3 / wasm_ns);
    println!("  wasm/native = {:.2}x", wasm_ns / native_ns);

    let manifest = format!(
        r#"name = "bench"
[sources.gen]
kind = "generator"
count = {}
payload_size = {size}
[nodes.pass]
crate = "{}"
[sinks.null]
kind = "null"
[[edges]]
from = "gen"
to = "pass"
[[edges]]
from = "pass"
to = "null"
"#,
        args.messages,
        args.node
            .canonicalize()
            .with_context(|| format!("{}", args.node.display()))?
            .display()
    );
    let graph = Graph::parse(&std::env::current_dir()?.join("bench.toml"), &manifest)?;
    topology::load(&graph, &engine)?; // compile outside the timed run
    let opts = RunOptions {
        batch_size: args.batch_size,
        ..RunOptions::default()
    };
    let report = topology::run(&graph, &engine, &opts, &Arc::new(Shutdown::default()))?;
    let written = report.sinks[0].1;
    anyhow::ensure!(
        written == args.messages,
        "the sink got {written} of {} messages",
        args.messages
    );
    let secs = report.elapsed.as_secs_f64();
    println!(
        "graph: generator -> passthrough (wasm) -> null: {} messages in {:.2} s = {:.2} M msg/s",
        args.messages,
        secs,
        args.messages as f64 / secs / 1e6
    );
    Ok(())
}

/// Repeats `f` (which returns messages handled) for `args.seconds`; ns per message.
fn per_message(args: &BenchArgs, mut f: impl FnMut() -> anyhow::Result<usize>) -> anyhow::Result<f64> {
    for _ in 0..10 {
        f()?;
    }
    let start = Instant::now();
    let mut msgs = 0usize;
    while start.elapsed() < args.seconds {
        msgs += f()?;
    }
    Ok(start.elapsed().as_nanos() as f64 / msgs as f64)
}
