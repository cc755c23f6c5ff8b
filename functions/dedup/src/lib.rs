//! De-duplication: passes the first message of each identity and drops repeats, across
//! replicas (a compare-and-swap in a host store decides who was first). The identity is
//! the message key, or the values of chosen JSON fields. With `window_ms`, a repeat counts
//! only within that much event time (the message timestamp) of the first one seen.
use flowhost_sdk::prelude::*;
use flowhost_sdk::state::counter;
use serde::Deserialize;
use serde_json::Value;

/// `config` of the node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// The store that remembers identities (granted `rw`).
    pub store: String,
    /// JSON fields that make the identity; absent: the message key (or the payload, if no key).
    pub by: Option<Vec<String>>,
    /// Forget an identity this many milliseconds of event time after it was first seen.
    pub window_ms: Option<i64>,
}

/// The node.
pub struct Dedup {
    store: Store,
    config: DedupConfig,
}

impl Dedup {
    fn identity(&self, msg: &Message<'_>) -> Result<Vec<u8>, NodeError> {
        let Some(fields) = &self.config.by else {
            return Ok(msg.key().unwrap_or(msg.payload()).to_vec());
        };
        let obj: Value = msg.json()?;
        let values = fields
            .iter()
            .map(|f| {
                obj.get(f)
                    .ok_or_else(|| NodeError::invalid_input(format!("no field `{f}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        serde_json::to_vec(&values).map_err(|e| NodeError::fatal(e.to_string()))
    }

    /// Whether this message is the first of its identity (within the window), recording it if so.
    fn first(&self, id: &[u8], at: i64) -> Result<bool, NodeError> {
        let fresh = at.to_le_bytes();
        loop {
            let seen = self.store.get(id)?;
            let expired = match (seen.as_deref().and_then(counter), self.config.window_ms) {
                (None, _) => true,
                (Some(first), Some(window)) => at - first >= window,
                (Some(_), None) => false,
            };
            if !expired {
                return Ok(false);
            }
            // Another replica may have recorded it meanwhile: then look again.
            if self.store.compare_and_swap(id, seen.as_deref(), Some(&fresh))? {
                return Ok(true);
            }
        }
    }
}

#[node]
impl Node for Dedup {
    type Config = DedupConfig;

    fn init(config: DedupConfig) -> Result<Self, NodeError> {
        Ok(Dedup {
            store: Store::open(&config.store)?,
            config,
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        let id = self.identity(msg)?;
        if self.first(&id, msg.timestamp().unwrap_or(0))? {
            out.forward(msg)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::testing::{Harness, TestMessage, json};

    #[test]
    fn by_fields_across_batches() {
        let mut node = Harness::<Dedup>::new(json!({ "store": "d1", "by": ["user", "event"] })).unwrap();
        let a = r#"{"user":"ann","event":1,"n":1}"#;
        let out = node
            .process([
                a,
                r#"{"user":"ann","event":1,"n":2}"#,
                r#"{"user":"bob","event":1}"#,
            ])
            .unwrap();
        assert_eq!(out.texts(), [a, r#"{"user":"bob","event":1}"#]);
        assert!(
            node.process([r#"{"event":1,"user":"ann"}"#])
                .unwrap()
                .records
                .is_empty(),
            "field order is irrelevant"
        );
        assert_eq!(
            node.process([r#"{"user":"cy"}"#]).unwrap().errors.len(),
            1,
            "a missing field is invalid input"
        );
    }

    #[test]
    fn by_key_within_a_window() {
        let mut node = Harness::<Dedup>::new(json!({ "store": "d2", "window_ms": 1000 })).unwrap();
        let at = |payload: &str, ms: i64| TestMessage::new(payload).key("k").timestamp(ms);
        let out = node
            .process([
                at("a", 0),
                at("b", 999),
                at("c", 1000),
                at("d", 1500),
                at("e", 2000),
            ])
            .unwrap();
        assert_eq!(out.texts(), ["a", "c", "e"]);
    }
}
