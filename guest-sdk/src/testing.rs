//! Run a node natively in an ordinary `cargo test`, through the same batch runtime that
//! runs it in wasm: framing, ports, key/header inheritance and per-message errors included.
//!
//! ```
//! use flowhost_sdk::prelude::*;
//! use flowhost_sdk::testing::Harness;
//!
//! #[node(map)]
//! fn shout(text: &str) -> String {
//!     text.to_uppercase()
//! }
//!
//! let mut node = Harness::<ShoutNode>::new(flowhost_sdk::testing::json!({})).unwrap();
//! let out = node.process(["hi", "there"]).unwrap();
//! assert_eq!(out.texts(), ["HI", "THERE"]);
//! ```

use crate::frame::{BatchReader, BatchWriter, Item, TimeDomain, TimerOp, TimerRef, encode_headers};
use crate::node::{Node, Replica, Runtime};
use crate::time::TimerTable;
use crate::{DEFAULT_INPUT, DEFAULT_OUTPUT, NodeError};
/// Builds the `config` for a [`Harness`]: `json!({ "top": 3 })`.
pub use serde_json::json;

/// An owned input message for a [`Harness`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestMessage {
    /// Input port name (`"in"` by default).
    pub input: String,
    /// Partitioning key.
    pub key: Option<Vec<u8>>,
    /// Body.
    pub payload: Vec<u8>,
    /// Event time.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl TestMessage {
    /// A message on port `in` with only a payload.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        TestMessage {
            input: DEFAULT_INPUT.into(),
            payload: payload.into(),
            ..Default::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the input port.
    pub fn input(mut self, port: &str) -> Self {
        self.input = port.into();
        self
    }

    /// Sets the timestamp.
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl From<&str> for TestMessage {
    fn from(s: &str) -> Self {
        TestMessage::new(s)
    }
}

impl From<String> for TestMessage {
    fn from(s: String) -> Self {
        TestMessage::new(s)
    }
}

impl From<&[u8]> for TestMessage {
    fn from(b: &[u8]) -> Self {
        TestMessage::new(b)
    }
}

/// One emitted record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    /// Output port name.
    pub port: String,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Body.
    pub payload: Vec<u8>,
    /// Event time.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What a batch produced: records and per-message errors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Emitted records, in order.
    pub records: Vec<TestRecord>,
    /// `(input index, error)` for each failed message.
    pub errors: Vec<(u32, NodeError)>,
}

impl Outcome {
    /// The payloads of the records, as text (lossy).
    pub fn texts(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect()
    }

    /// The records emitted on `port`.
    pub fn on(&self, port: &str) -> Vec<&TestRecord> {
        self.records.iter().filter(|r| r.port == port).collect()
    }
}

thread_local! {
    static WATERMARK: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
}

#[cfg(not(target_arch = "wasm32"))]
/// The watermark a [`Harness`] of this thread gives its node.
pub(crate) fn watermark_now() -> Option<i64> {
    WATERMARK.with(std::cell::Cell::get)
}

/// A node running natively with all output ports connected. Like the host, it holds the
/// node's timers and fires them as its watermark ([`Harness::advance_watermark`]) or
/// clock ([`Harness::advance_clock`]) moves.
pub struct Harness<N> {
    runtime: Runtime<N>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    timers: TimerTable,
    watermark: Option<i64>,
}

impl<N: Node> Harness<N> {
    /// Starts the node with `config` and ports `in` → `out`.
    pub fn new(config: serde_json::Value) -> Result<Self, NodeError> {
        Self::with_ports(config, &[DEFAULT_INPUT], &[DEFAULT_OUTPUT])
    }

    /// Starts the node with `config` and the given connected ports.
    pub fn with_ports(
        config: serde_json::Value,
        inputs: &[&str],
        outputs: &[&str],
    ) -> Result<Self, NodeError> {
        Self::start(config, (inputs, outputs), Replica::default())
    }

    /// Starts replica `index` of `count` of the node (replicas share the thread's stores).
    pub fn replica(config: serde_json::Value, index: u32, count: u32) -> Result<Self, NodeError> {
        let ports = (&[DEFAULT_INPUT][..], &[DEFAULT_OUTPUT][..]);
        Self::start(config, ports, Replica { index, count })
    }

    fn start(
        config: serde_json::Value,
        (inputs, outputs): (&[&str], &[&str]),
        replica: Replica,
    ) -> Result<Self, NodeError> {
        let inputs: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        let outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
        let ports = (inputs.clone(), outputs.clone());
        let runtime = Runtime::new("test", &config.to_string(), ports, replica)?;
        Ok(Harness {
            runtime,
            inputs,
            outputs,
            timers: TimerTable::default(),
            watermark: None,
        })
    }

    /// The node's timers now: (domain, time, key).
    pub fn timers(&self) -> Vec<(TimeDomain, i64, Vec<u8>)> {
        self.timers.iter().map(|(d, t, k)| (d, t, k.to_vec())).collect()
    }

    /// The node's watermark moves to `watermark` (it never moves back): every event-time
    /// timer it reaches fires, earliest first; returns what the node emitted for them.
    pub fn advance_watermark(&mut self, watermark: i64) -> Result<Outcome, NodeError> {
        let watermark = self.watermark.map_or(watermark, |w| w.max(watermark));
        self.watermark = Some(watermark);
        self.fire(TimeDomain::EventTime, watermark)
    }

    /// The wall clock reads `now`: every processing-time timer it reaches fires.
    pub fn advance_clock(&mut self, now: i64) -> Result<Outcome, NodeError> {
        self.fire(TimeDomain::ProcessingTime, now)
    }

    fn fire(&mut self, domain: TimeDomain, now: i64) -> Result<Outcome, NodeError> {
        let mut all = Outcome::default();
        for _ in 0..10_000 {
            let due = self.timers.take_due(domain, now, 256);
            if due.is_empty() {
                return Ok(all);
            }
            let mut w = BatchWriter::default();
            for (time, key) in &due {
                let fired = TimerRef {
                    op: TimerOp::Fired,
                    domain,
                    time: *time,
                    key,
                };
                w.timer(&fired);
            }
            let out = self.call(|rt| rt.process(&w.finish()))?;
            all.records.extend(out.records);
            all.errors.extend(out.errors);
        }
        Err(NodeError::fatal(
            "timers keep firing: the node sets due timers as fast as they fire",
        ))
    }

    fn call(
        &mut self,
        f: impl FnOnce(&mut Runtime<N>) -> Result<Vec<u8>, NodeError>,
    ) -> Result<Outcome, NodeError> {
        WATERMARK.with(|w| w.set(self.watermark));
        let out = f(&mut self.runtime)?;
        self.decode(&out)
    }

    /// Processes one batch.
    pub fn process<M: Into<TestMessage>>(
        &mut self,
        batch: impl IntoIterator<Item = M>,
    ) -> Result<Outcome, NodeError> {
        let mut w = BatchWriter::default();
        for m in batch {
            let m = m.into();
            let port = self.inputs.iter().position(|p| *p == m.input).ok_or_else(|| {
                NodeError::fatal(format!(
                    "input port `{}` is not one of {:?}",
                    m.input, self.inputs
                ))
            })?;
            let headers = encode_headers(m.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
            w.record(
                port as u16,
                m.timestamp,
                m.key.as_deref(),
                &m.payload,
                (headers.0, &headers.1),
            );
        }
        let batch = w.finish();
        self.call(|rt| rt.process(&batch))
    }

    /// Ends the input as the host does: the watermark moves to the end of time (every
    /// event-time timer fires), then the node's `finish` runs; returns what both emitted.
    pub fn finish(&mut self) -> Result<Outcome, NodeError> {
        let mut all = self.advance_watermark(i64::MAX)?;
        let out = self.call(|rt| rt.finish())?;
        all.records.extend(out.records);
        all.errors.extend(out.errors);
        Ok(all)
    }

    fn decode(&mut self, buf: &[u8]) -> Result<Outcome, NodeError> {
        let mut outcome = Outcome::default();
        for item in BatchReader::new(buf)? {
            match item? {
                Item::Record(r) => outcome.records.push(TestRecord {
                    port: self.outputs[r.port as usize].clone(),
                    key: r.key.map(<[u8]>::to_vec),
                    payload: r.payload.to_vec(),
                    timestamp: r.timestamp,
                    headers: r
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_vec()))
                        .collect(),
                }),
                Item::Error(e) => outcome.errors.push((
                    e.input_index,
                    NodeError {
                        kind: e.kind,
                        message: e.message.to_owned(),
                    },
                )),
                Item::Timer(t) => {
                    self.timers.apply(&t);
                }
            }
        }
        Ok(outcome)
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// The contents of a store as nodes in this test thread left it (natively, stores are
/// per-thread in-memory maps).
pub fn store(name: &str) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    crate::state::with_native(name, |m| m.clone())
}

#[cfg(not(target_arch = "wasm32"))]
/// Empties every store of this test thread.
pub fn clear_stores() {
    crate::state::clear_native();
}
