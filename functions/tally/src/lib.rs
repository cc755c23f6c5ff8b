//! Counts messages per key (the payload when there is no key) in a host store, with one
//! `incr_many` per batch (an `IncrBatch`): the count survives traps and is shared by every replica.
//! With `report = true` it emits `key<TAB>count` for every key of the store at `finish`
//! (in key order; meant for one replica): the totals of an aggregate kept in a store.
use flowhost_sdk::prelude::*;
use flowhost_sdk::state::{IncrBatch, counter};
use serde::Deserialize;

/// `config` of the node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TallyConfig {
    /// The store to count in (default `counts`); the manifest must grant it `rw`.
    #[serde(default = "counts")]
    pub store: String,
    /// Gather counts over a batch and flush them with one `incr_many` (default true);
    /// `false` calls `incr` once per message (for measuring the difference).
    #[serde(default = "yes")]
    pub batched: bool,
    /// Emit the store's counts at `finish`.
    #[serde(default)]
    pub report: bool,
}

fn yes() -> bool {
    true
}

fn counts() -> String {
    "counts".to_owned()
}

/// Increments gathered over a batch, flushed to the store at its end.
pub struct Tally {
    store: Store,
    batched: bool,
    report: bool,
    pending: IncrBatch,
}

#[node]
impl Node for Tally {
    type Config = TallyConfig;

    fn init(config: TallyConfig) -> Result<Self, NodeError> {
        Ok(Tally {
            store: Store::open(&config.store)?,
            batched: config.batched,
            report: config.report,
            pending: IncrBatch::default(),
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, _out: &mut Output<'a>) -> Result<(), NodeError> {
        let key = msg.key().unwrap_or(msg.payload());
        if !self.batched {
            self.store.incr(key, 1)?;
            return Ok(());
        }
        self.pending.add(key, 1);
        Ok(())
    }

    fn end_batch(&mut self, _out: &mut Output<'_>) -> Result<(), NodeError> {
        self.pending.flush(&self.store)?;
        Ok(())
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        if !self.report {
            return Ok(());
        }
        for (key, value) in self.store.scan(b"", u32::MAX)? {
            let n = counter(&value).unwrap_or(0);
            out.send(Record::new(format!("{}\t{n}", String::from_utf8_lossy(&key))))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::state::counter;
    use flowhost_sdk::testing::{Harness, TestMessage, json, store};

    #[test]
    fn counts_per_key_across_batches_batched_or_not() {
        for batched in [true, false] {
            let name = format!("t{batched}");
            let mut node = Harness::<Tally>::new(json!({ "store": name, "batched": batched })).unwrap();
            let batch = [
                TestMessage::new("x").key("a"),
                TestMessage::new("y").key("b"),
                TestMessage::new("a"),
            ];
            node.process(batch).unwrap();
            node.process(["a"]).unwrap();
            let t = store(&name);
            assert_eq!(counter(&t[&b"a"[..]]), Some(3));
            assert_eq!(counter(&t[&b"b"[..]]), Some(1));
        }
    }

    #[test]
    fn reports_the_stores_counts_at_finish() {
        let mut node = Harness::<Tally>::new(json!({ "store": "r", "report": true })).unwrap();
        node.process(["b", "a", "b"]).unwrap();
        assert_eq!(node.finish().unwrap().texts(), ["a\t1", "b\t2"]);
    }
}
