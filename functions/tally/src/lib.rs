//! Counts messages per key (the payload when there is no key) in a host store, with one
//! `incr_many` per batch: the count survives traps and is shared by every replica.
use std::collections::HashMap;

use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// `config` of the node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TallyConfig {
    /// The store to count in (default `counts`); the manifest must grant it `rw`.
    #[serde(default = "counts")]
    pub store: String,
}

fn counts() -> String {
    "counts".to_owned()
}

/// Per-batch deltas, flushed to the store at the end of each batch.
pub struct Tally {
    store: Store,
    pending: HashMap<Vec<u8>, i64>,
}

#[node]
impl Node for Tally {
    type Config = TallyConfig;

    fn init(config: TallyConfig) -> Result<Self, NodeError> {
        Ok(Tally {
            store: Store::open(&config.store)?,
            pending: HashMap::new(),
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, _out: &mut Output<'a>) -> Result<(), NodeError> {
        let key = msg.key().unwrap_or(msg.payload());
        *self.pending.entry(key.to_vec()).or_default() += 1;
        Ok(())
    }

    fn end_batch(&mut self, _out: &mut Output<'_>) -> Result<(), NodeError> {
        let deltas: Vec<(Vec<u8>, i64)> = self.pending.drain().collect();
        self.store.incr_many(&deltas)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::state::counter;
    use flowhost_sdk::testing::{Harness, TestMessage, json, store};

    #[test]
    fn counts_per_key_across_batches() {
        let mut node = Harness::<Tally>::new(json!({ "store": "t" })).unwrap();
        node.process([
            TestMessage::new("x").key("a"),
            TestMessage::new("y").key("b"),
            TestMessage::new("a"),
        ])
        .unwrap();
        node.process(["a"]).unwrap();
        let t = store("t");
        assert_eq!(counter(&t[&b"a"[..]]), Some(3));
        assert_eq!(counter(&t[&b"b"[..]]), Some(1));
    }
}
