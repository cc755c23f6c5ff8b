//! The wasm boundary: ns per message through the passthrough node in wasm against the
//! same node compiled natively, both driven by the SDK's batch runtime and decoded by the
//! host the same way.

use std::time::{Duration, Instant};

use flowhost_sdk::__private::Runtime;
use flowhost_sdk::{Message, NoConfig, Node, NodeError, Output};

use super::{Better, Fixtures, Row, interleaved};
use flowhost::engine::{NodeSetup, NodeTemplate};
use flowhost::message::{self, batch_from, sequence_payload};

/// `functions/passthrough` compiled into the host: what `#[node(map)] fn(&[u8]) -> &[u8]` expands to.
pub(super) struct NativePassthrough;

impl Node for NativePassthrough {
    type Config = NoConfig;

    fn init(_: NoConfig) -> Result<Self, NodeError> {
        Ok(NativePassthrough)
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        out.emit(msg.payload())
    }
}

pub(super) fn run(fx: &Fixtures, seconds: Duration, rounds: usize) -> anyhow::Result<Vec<Row>> {
    let setup = NodeSetup {
        timeout: Duration::from_secs(10),
        memory_mb: 256,
        ..NodeSetup::new("passthrough")
    };
    let template = NodeTemplate::new(&fx.engine, fx.passthrough.clone(), setup)?;
    let mut wasm = template.instantiate()?;
    let mut native = Runtime::<NativePassthrough>::new(
        "native",
        "{}",
        (vec!["in".into()], vec!["out".into()]),
        Default::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rows = Vec::new();
    for batch_size in [1usize, 64, 1024] {
        let batch = batch_from(batch_size, Some(0), |i, b| sequence_payload(i as u64, 16, b));
        let input = message::encode(&batch, 0);
        let r = interleaved(
            rounds,
            || {
                per_message(seconds, || {
                    let out = wasm.process(&input)?;
                    Ok(message::decode(out, 1)?.ports[0].len())
                })
            },
            || {
                per_message(seconds, || {
                    let out = native.process(&input).map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok(message::decode(out, 1)?.ports[0].len())
                })
            },
        )?;
        let row = Row::rounds(
            format!("boundary, batch {batch_size}, 16 B"),
            &r,
            "ns/msg",
            Better::Lower,
        );
        // A batch of one shows the fixed cost of a call (three crossings of the canonical
        // ABI: the guest's realloc for the input, `process`, the post-return free); the
        // target is the performance issue's for batches of 64, and 1.5x beyond.
        rows.push(match batch_size {
            1 => row,
            64 => row.ratio_target(1.2),
            _ => row.ratio_target(1.5),
        });
    }
    Ok(rows)
}

/// Repeats `f` (which returns messages handled) for `seconds`; ns per message.
pub(super) fn per_message(
    seconds: Duration,
    mut f: impl FnMut() -> anyhow::Result<usize>,
) -> anyhow::Result<f64> {
    for _ in 0..10 {
        f()?;
    }
    let start = Instant::now();
    let mut msgs = 0usize;
    while start.elapsed() < seconds {
        msgs += f()?;
    }
    Ok(start.elapsed().as_nanos() as f64 / msgs.max(1) as f64)
}
