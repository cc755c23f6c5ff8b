//! A node replica's timers, held by the host: a trap or a swap replaces the instance,
//! not these. Every change is mirrored into the graph's timer store
//! ([`crate::state::TIMERS`]), durable with the graph, so a restarted durable graph
//! fires the timers its last checkpoint held.
//!
//! Store key: `<node>\0<replica:u32 BE><domain:u8><time:u64 BE, sign bit flipped><key>`,
//! so one replica's timers are one prefix, in firing order.

use std::sync::Arc;

use flowhost_sdk::frame::{TimeDomain, TimerRef};
use flowhost_sdk::time::TimerTable;

use crate::message::TimerChange;
use crate::state::Store;

pub(super) struct NodeTimers {
    table: TimerTable,
    store: Arc<Store>,
    prefix: Vec<u8>,
}

fn domain_byte(d: TimeDomain) -> u8 {
    match d {
        TimeDomain::EventTime => 0,
        TimeDomain::ProcessingTime => 1,
    }
}

impl NodeTimers {
    /// Replica `replica` of node `node`'s timers, as the store holds them.
    pub fn load(store: Arc<Store>, node: &str, replica: usize) -> Self {
        let mut prefix = node.as_bytes().to_vec();
        prefix.push(0);
        prefix.extend_from_slice(&(replica as u32).to_be_bytes());
        let mut table = TimerTable::default();
        for (k, _) in store.scan(&prefix, usize::MAX) {
            let rest = &k[prefix.len()..];
            if rest.len() < 9 {
                continue;
            }
            let domain = if rest[0] == 0 {
                TimeDomain::EventTime
            } else {
                TimeDomain::ProcessingTime
            };
            let time = (u64::from_be_bytes(rest[1..9].try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
            table.apply(&TimerRef {
                op: flowhost_sdk::frame::TimerOp::Set,
                domain,
                time,
                key: &rest[9..],
            });
        }
        NodeTimers { table, store, prefix }
    }

    fn store_key(&self, domain: TimeDomain, time: i64, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 9 + key.len());
        k.extend_from_slice(&self.prefix);
        k.push(domain_byte(domain));
        k.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
        k.extend_from_slice(key);
        k
    }

    /// Applies what a call set and deleted.
    pub fn apply(&mut self, changes: &[TimerChange]) {
        for c in changes {
            if self.table.apply(&c.as_ref()) {
                let k = self.store_key(c.domain, c.time, &c.key);
                match c.op {
                    flowhost_sdk::frame::TimerOp::Set => {
                        self.store.set(k, Vec::new());
                    }
                    _ => {
                        self.store.delete(&k);
                    }
                }
            }
        }
    }

    /// Takes out the timers of `domain` due at `now`, earliest first, at most `limit`.
    pub fn take_due(&mut self, domain: TimeDomain, now: i64, limit: usize) -> Vec<(i64, Vec<u8>)> {
        let due = self.table.take_due(domain, now, limit);
        for (time, key) in &due {
            self.store.delete(&self.store_key(domain, *time, key));
        }
        due
    }

    /// The earliest timer of `domain`.
    pub fn next(&self, domain: TimeDomain) -> Option<i64> {
        self.table.next(domain)
    }

    /// Timers set: (event time, processing time).
    pub fn counts(&self) -> (usize, usize) {
        self.table.counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::frame::TimerOp;

    fn set(domain: TimeDomain, time: i64, key: &[u8]) -> TimerChange {
        TimerChange {
            op: TimerOp::Set,
            domain,
            time,
            key: key.to_vec(),
        }
    }

    #[test]
    fn timers_come_back_from_the_store_in_firing_order_negative_times_included() {
        let store = Arc::new(Store::new("timers"));
        let mut a = NodeTimers::load(store.clone(), "agg", 1);
        a.apply(&[
            set(TimeDomain::EventTime, 20, b"w2"),
            set(TimeDomain::EventTime, -5, b"w0"),
            set(TimeDomain::ProcessingTime, 7, b"tick"),
        ]);
        // Another replica's timers are its own.
        NodeTimers::load(store.clone(), "agg", 0).apply(&[set(TimeDomain::EventTime, 1, b"x")]);
        assert_eq!(a.take_due(TimeDomain::EventTime, 0, 10), [(-5, b"w0".to_vec())]);
        let again = NodeTimers::load(store, "agg", 1);
        assert_eq!(
            again.counts(),
            (1, 1),
            "the fired timer is gone from the store too"
        );
        assert_eq!(again.next(TimeDomain::EventTime), Some(20));
        assert_eq!(again.next(TimeDomain::ProcessingTime), Some(7));
    }
}
