//! Combiners: folding records per key *before* a key-hash edge.
//!
//! A key-hash edge moves every record to the replica that owns its key. When that
//! consumer only folds records per key with an associative operation (a count, a sum, a
//! minimum), the producer can fold first: over each batch it keeps one partial result per
//! key and emits those, one record per key, in `end_batch` (renoir's `fold_assoc`, Flink's
//! combiners). Fewer records cross the edge: a word count over natural text sends about a
//! quarter of its words.
//!
//! ```
//! use flowhost_sdk::combine::{Combiner, Partial};
//! use flowhost_sdk::prelude::*;
//!
//! /// Producer: counts words per batch, emits `(word, partial count)`.
//! struct Words(Combiner<u64>);
//!
//! #[node]
//! impl Node for Words {
//!     type Config = NoConfig;
//!     fn init(_: NoConfig) -> Result<Self, NodeError> {
//!         Ok(Words(Combiner::new()))
//!     }
//!     fn process<'a>(&mut self, msg: &Message<'a>, _: &mut Output<'a>) -> Result<(), NodeError> {
//!         for w in msg.text()?.split_whitespace() {
//!             self.0.add(w.as_bytes(), 1);
//!         }
//!         Ok(())
//!     }
//!     fn end_batch(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
//!         self.0.emit(out)
//!     }
//! }
//!
//! let mut node = flowhost_sdk::testing::Harness::<Words>::new(serde_json::json!({})).unwrap();
//! let out = node.process(["a b a", "b a"]).unwrap();
//! let mut got: Vec<(&[u8], u64)> = out
//!     .records
//!     .iter()
//!     .map(|r| (r.key.as_deref().unwrap(), u64::read(&r.payload).unwrap()))
//!     .collect();
//! got.sort();
//! assert_eq!(got, [(&b"a"[..], 3), (&b"b"[..], 2)]);
//! ```
//!
//! The consumer tells partials from raw records by the input port they arrive on: by
//! convention [`PARTIAL_PORT`] (`partial`), so the manifest's edge says
//! `to = "count.partial"`, and the node reads [`Partial::read`] of the payload, the key
//! naming the group. Edges into `partial` must come from a combiner: nothing else
//! checks that a payload is a partial (a malformed one fails that message as invalid
//! input).
//!
//! The same folding serves before a host store: [`Combiner::drain`] gives one partial per
//! key for one `incr_many` per batch (`functions/aggregate` adds its counts and sums so).
//!
//! What a combiner costs: one hash lookup per record and, per batch, one allocation per
//! distinct key; what it saves is a record per repeat of a key within a batch, crossing
//! the edge (framing, routing, the consumer's call). Larger batches combine more.

use foldhash::fast::FixedState;

use crate::{NodeError, Output};

/// The input port partial results arrive on, by convention.
pub const PARTIAL_PORT: &str = "partial";

/// A partial result of an associative fold, and how it travels as a payload.
pub trait Partial: Sized {
    /// Folds `other` (a later partial of the same key) into this one.
    fn merge(&mut self, other: Self);
    /// Appends its payload encoding.
    fn write(&self, buf: &mut Vec<u8>);
    /// Reads a payload [`Partial::write`] wrote.
    fn read(bytes: &[u8]) -> Result<Self, NodeError>;
}

macro_rules! sum_partial {
    ($($t:ty),*) => {$(
        /// A sum (a count is a sum of ones), as 8 little-endian bytes.
        impl Partial for $t {
            fn merge(&mut self, other: Self) {
                *self += other;
            }
            fn write(&self, buf: &mut Vec<u8>) {
                buf.extend_from_slice(&self.to_le_bytes());
            }
            fn read(bytes: &[u8]) -> Result<Self, NodeError> {
                let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
                    NodeError::invalid_input(format!(
                        "a partial {} is 8 bytes, not {}",
                        stringify!($t),
                        bytes.len()
                    ))
                })?;
                Ok(<$t>::from_le_bytes(bytes))
            }
        }
    )*};
}
sum_partial!(u64, i64, f64);

/// Partial results per key, gathered over a batch. Emitted in an order fixed by the keys
/// (a fixed-seed hash): the same batch always gives the same records in the same order.
pub struct Combiner<A> {
    partials: std::collections::HashMap<Box<[u8]>, A, FixedState>,
}

impl<A: Partial> Default for Combiner<A> {
    fn default() -> Self {
        Combiner::new()
    }
}

impl<A: Partial> Combiner<A> {
    /// An empty combiner.
    pub fn new() -> Self {
        Combiner {
            partials: Default::default(),
        }
    }

    /// Folds `value` into `key`'s partial.
    pub fn add(&mut self, key: &[u8], value: A) {
        match self.partials.get_mut(key) {
            Some(partial) => partial.merge(value),
            None => {
                self.partials.insert(key.into(), value);
            }
        }
    }

    /// Distinct keys gathered.
    pub fn len(&self) -> usize {
        self.partials.len()
    }

    /// Whether nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.partials.is_empty()
    }

    /// Takes every `(key, partial)` gathered and starts over: to fold them somewhere else
    /// than into records (e.g. one `incr_many` per batch, as `functions/aggregate` does).
    pub fn drain(&mut self) -> impl Iterator<Item = (Box<[u8]>, A)> + '_ {
        self.partials.drain()
    }

    /// Emits one record per key on the default port (key = the key, payload = its
    /// partial; timestamp and headers none) and starts over. Call it from
    /// [`crate::Node::end_batch`].
    pub fn emit(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        self.emit_to(crate::DEFAULT_OUTPUT, out)
    }

    /// [`Combiner::emit`] on the named output port.
    pub fn emit_to(&mut self, port: &str, out: &mut Output<'_>) -> Result<(), NodeError> {
        for (key, partial) in self.partials.drain() {
            out.emit_keyed_to(port, &key, PartialPayload(&partial))?;
        }
        Ok(())
    }
}

struct PartialPayload<'p, A>(&'p A);

impl<A: Partial> crate::IntoPayload for PartialPayload<'_, A> {
    fn write_payload(self, buf: &mut Vec<u8>) -> Result<(), NodeError> {
        self.0.write(buf);
        Ok(())
    }
}
