//! Loops: feedback edges, the iteration count each message carries around them, and
//! when a loop has ended.
//!
//! - A feedback edge never blocks its producer: its consumer's channel takes what it
//!   sends beyond its capacity ([`looped_channel`]), while the consumer's other inputs
//!   wait for room as usual. Every cycle has a feedback edge (the manifest checks), so
//!   no ring of producers can wait on each other; what a loop holds beyond its channels'
//!   capacity is what its feedback edges queue in front of their consumers.
//! - A message crossing a feedback edge has its header [`ITERATION`] counted up; past
//!   the edge's `max_iterations` it is dropped and counted ([`LoopGate::exceeded`]).
//! - A loop has ended when every route into it from outside has gone (its producers
//!   ended) and nothing is in flight in the process (no batch in a channel, none being
//!   processed): then nothing can enter or move in it again. That is exact, not a quiet
//!   period: the in-flight count covers every batch from before it is sent until its
//!   consumer is done with it. The producers of feedback edges then let go of them,
//!   and the loop's channels close front to back like any others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::InFlight;
use crate::message::Msg;

pub use super::channel::looped_channel;

/// How many times a message went around a loop (decimal; absent: none): the SDK's
/// `Message::iteration`.
pub use flowhost_sdk::ITERATION;

/// What one loop of a running graph knows of itself.
#[derive(Debug, Default)]
pub struct LoopGate {
    /// Routes into the loop from outside it, not yet dropped.
    outside: AtomicUsize,
    /// The most iterations a message reached.
    reached: AtomicU32,
    /// Messages dropped at `max_iterations`.
    exceeded: AtomicU64,
    /// Messages sent around (over feedback edges).
    fed_back: AtomicU64,
}

impl LoopGate {
    /// Whether the loop has ended: nothing can enter it and nothing is in flight.
    pub fn ended(&self, in_flight: &InFlight) -> bool {
        self.outside.load(Ordering::SeqCst) == 0 && in_flight.is_idle()
    }

    /// The most iterations a message reached.
    pub fn reached(&self) -> u32 {
        self.reached.load(Ordering::Relaxed)
    }

    /// Messages dropped at `max_iterations`.
    pub fn exceeded(&self) -> u64 {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Messages sent around.
    pub fn fed_back(&self) -> u64 {
        self.fed_back.load(Ordering::Relaxed)
    }

    /// A route into the loop from outside is made.
    pub(super) fn enter(&self) {
        self.outside.fetch_add(1, Ordering::SeqCst);
    }

    /// A route into the loop from outside is gone.
    pub(super) fn leave(&self) {
        self.outside.fetch_sub(1, Ordering::SeqCst);
    }

    /// `msgs` about to go around again over an edge with `max` iterations: counted up,
    /// those past `max` dropped and counted.
    pub(super) fn around(&self, msgs: Vec<Msg>, max: Option<u32>) -> Vec<Msg> {
        let mut kept = Vec::with_capacity(msgs.len());
        let mut reached = 0;
        for mut m in msgs {
            let n = iteration(&m) + 1;
            if max.is_some_and(|max| n > max) {
                self.exceeded.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            reached = reached.max(n);
            m.headers.set(ITERATION, n.to_string().as_bytes());
            kept.push(m);
        }
        self.reached.fetch_max(reached, Ordering::Relaxed);
        self.fed_back.fetch_add(kept.len() as u64, Ordering::Relaxed);
        kept
    }
}

/// How many times `m` went around a loop.
pub fn iteration(m: &Msg) -> u32 {
    m.headers
        .get(ITERATION)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// A route's part in a loop.
pub(super) enum Looping {
    /// It enters the loop from outside: the loop is open while it lives.
    Enters(Arc<LoopGate>),
    /// It is a feedback edge of the loop.
    Feeds(Arc<LoopGate>, Option<u32>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn going_around_counts_up_and_drops_past_the_limit() {
        let gate = LoopGate::default();
        let once = gate.around(vec![Msg::new(&b"a"[..], None)], Some(2));
        assert_eq!(iteration(&once[0]), 1);
        let twice = gate.around(once, Some(2));
        assert_eq!(iteration(&twice[0]), 2);
        assert!(gate.around(twice, Some(2)).is_empty());
        assert_eq!((gate.reached(), gate.exceeded(), gate.fed_back()), (2, 1, 2));
    }
}
