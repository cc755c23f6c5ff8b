//! The `Node` trait every node implements (the `#[node]` attribute writes the impl for
//! function nodes), and the runtime that drives it over framed batches.

use serde::de::DeserializeOwned;

use crate::frame::{BatchReader, Item, TimeDomain, TimerOp};
use crate::output::Ports;
use crate::time::Timer;
use crate::{Message, NodeError, Output};

/// Config type for nodes that take none: accepts any manifest `config` table.
pub type NoConfig = serde::de::IgnoredAny;

/// A dataflow node.
///
/// Function nodes get this impl from `#[node]`; implement it by hand (and put `#[node]` on
/// the impl block) for nodes that keep state between messages or emit at the end of input.
pub trait Node: Sized + 'static {
    /// The node's `config` table from the manifest; use [`NoConfig`] for none.
    type Config: DeserializeOwned;

    /// Builds the node from its config; an error here fails the node's start.
    fn init(config: Self::Config) -> Result<Self, NodeError>;

    /// Handles one message. An error withdraws what was emitted for this message and
    /// reports the message to the host, which applies the node's `on_error` policy.
    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError>;

    /// Called after each batch, once its messages are processed: the place to flush state
    /// gathered over the batch in one call (`incr_many`). An error fails the whole batch
    /// (the host retries it, or runs its messages one at a time).
    fn end_batch(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        let _ = out;
        Ok(())
    }

    /// Called when a timer the node set fires (see [`crate::time`]). Records emitted here
    /// have the timer's time as their timestamp (for an event-time timer) unless they set
    /// one. An error is logged and counted against the node; a fatal one stops the graph.
    fn on_timer(&mut self, timer: &Timer<'_>, out: &mut Output<'_>) -> Result<(), NodeError> {
        let _ = (timer, out);
        Ok(())
    }

    /// Called once after every input has ended, to emit final results. On the host, every
    /// replica of the node has processed all of its input before any replica's `finish`
    /// runs, so what they wrote to host stores is complete.
    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        let _ = out;
        Ok(())
    }
}

/// Which of its node's replicas an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    /// 0 ≤ `index` < `count`; stable across restarts of the same graph.
    pub index: u32,
    /// How many replicas the node has on this host.
    pub count: u32,
}

impl Default for Replica {
    fn default() -> Self {
        Replica { index: 0, count: 1 }
    }
}

thread_local! {
    static REPLICA: std::cell::Cell<Replica> = std::cell::Cell::new(Replica::default());
    /// The input item being handled, for the panic hook to name (see FRAMING.md, Traps).
    static CURRENT: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// The index in its input batch of the item the node is handling now, if it is handling
/// one (not in `end_batch` or `finish`).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn current_input() -> Option<u32> {
    CURRENT.with(|c| c.get())
}

/// This instance's place among its node's replicas (known from before [`Node::init`]).
/// Replicas share host stores; work that must happen once per node — emitting each group
/// of a shared store at `finish`, say — can be split by index.
pub fn replica() -> Replica {
    REPLICA.with(|r| r.get())
}

/// Drives a [`Node`] over framed batches: the same code runs in wasm and in native tests.
#[doc(hidden)]
pub struct Runtime<N> {
    node: N,
    ports: Ports,
    replica: Replica,
}

impl<N: Node> Runtime<N> {
    /// Parses the config and initialises the node.
    pub fn new(
        name: &str,
        config_json: &str,
        (inputs, outputs): (Vec<String>, Vec<String>),
        replica: Replica,
    ) -> Result<Self, NodeError> {
        REPLICA.with(|r| r.set(replica));
        let config = serde_json::from_str(config_json)
            .map_err(|e| NodeError::fatal(format!("invalid config for node `{name}`: {e}")))?;
        Ok(Runtime {
            node: N::init(config)?,
            ports: Ports::new(inputs, outputs),
            replica,
        })
    }

    /// Processes one input batch into one output batch.
    pub fn process(&mut self, input: &[u8]) -> Result<Vec<u8>, NodeError> {
        REPLICA.with(|r| r.set(self.replica));
        crate::time::new_call();
        let mut out = Output::new(&self.ports, input.len() + 64);
        for (index, item) in BatchReader::new(input)?.enumerate() {
            CURRENT.with(|c| c.set(Some(index as u32)));
            let record = match item? {
                Item::Record(record) => record,
                Item::Timer(t) if t.op == TimerOp::Fired => {
                    let timestamp = (t.domain == TimeDomain::EventTime).then_some(t.time);
                    let mark = out.begin_timer(timestamp);
                    let timer = Timer {
                        domain: t.domain,
                        time: t.time,
                        key: t.key,
                    };
                    if let Err(error) = self.node.on_timer(&timer, &mut out) {
                        out.fail(mark, index as u32, &error);
                    }
                    continue;
                }
                Item::Timer(_) => return Err(NodeError::fatal("a timer set or deleted in an input batch")),
                Item::Error(_) => return Err(NodeError::fatal("error item in an input batch")),
            };
            let msg = Message {
                record,
                input: self.ports.input_name(record.port),
            };
            let mark = out.begin(&msg);
            if let Err(error) = self.node.process(&msg, &mut out) {
                out.fail(mark, index as u32, &error);
            }
        }
        CURRENT.with(|c| c.set(None));
        out.end_of_input();
        self.node.end_batch(&mut out)?;
        Ok(out.into_batch())
    }

    /// Runs the node's `finish`.
    pub fn finish(&mut self) -> Result<Vec<u8>, NodeError> {
        REPLICA.with(|r| r.set(self.replica));
        crate::time::new_call();
        let mut out = Output::new(&self.ports, 256);
        out.end_of_input();
        self.node.finish(&mut out)?;
        Ok(out.into_batch())
    }
}
