//! Joins a stream (input port `left`, e.g. purchases) with a table (input port `right`,
//! e.g. customers) on a key, inner or left, in a host store. Order between the two inputs
//! does not matter: a left record whose right side has not arrived waits in the store and
//! is joined when it does; at the end of input a left join emits the ones still waiting
//! with `null`. Output: the left object with the right object under `as`. Feed both ports
//! by key hash on the join key, so each key is owned by one replica.
//!
//! Store layout: `r\0<key>` holds the right record; `p\0<key>\0<seq>` a waiting left record.
use std::collections::BTreeSet;

use flowhost_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Inner or left join.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Only left records with a match.
    Inner,
    /// Every left record; `null` where nothing matched.
    Left,
}

/// `config` of the node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinConfig {
    /// The store (granted `rw`).
    pub store: String,
    /// The join-key field of left records.
    pub left_key: String,
    /// The join-key field of right records.
    pub right_key: String,
    /// Field of the output that holds the right record.
    #[serde(rename = "as")]
    pub as_field: String,
    /// Inner (default) or left.
    #[serde(default = "inner")]
    pub kind: Kind,
}

fn inner() -> Kind {
    Kind::Inner
}

/// The node.
pub struct Join {
    store: Store,
    config: JoinConfig,
    /// Keys this replica parked left records under, for `finish`.
    waiting: BTreeSet<String>,
    next: u64,
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

impl Join {
    fn object(msg: &Message<'_>, field: &str) -> Result<(Map<String, Value>, String), NodeError> {
        let Value::Object(obj) = msg.json::<Value>()? else {
            return Err(NodeError::invalid_input("not a JSON object"));
        };
        let k = match obj.get(field) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Number(_)) => v.to_string(),
            _ => {
                return Err(NodeError::invalid_input(format!(
                    "no string or number field `{field}`"
                )));
            }
        };
        Ok((obj, k))
    }

    fn emit(
        &self,
        mut left: Map<String, Value>,
        right: Value,
        out: &mut Output<'_>,
    ) -> Result<(), NodeError> {
        left.insert(self.config.as_field.clone(), right);
        out.emit(Json(Value::Object(left)))
    }

    fn parse(bytes: &[u8]) -> Result<Value, NodeError> {
        serde_json::from_slice(bytes).map_err(|e| NodeError::fatal(format!("corrupt join state: {e}")))
    }
}

#[node]
impl Node for Join {
    type Config = JoinConfig;

    fn init(config: JoinConfig) -> Result<Self, NodeError> {
        Ok(Join {
            store: Store::open(&config.store)?,
            config,
            waiting: BTreeSet::new(),
            next: 0,
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        match msg.input() {
            "right" => {
                let (right, k) = Self::object(msg, &self.config.right_key)?;
                self.store.set(&key(&["r", &k]), msg.payload())?;
                // Left records that waited for this key.
                let prefix = key(&["p", &k, ""]);
                for (pk, left) in self.store.scan(&prefix, u32::MAX)? {
                    let Value::Object(left) = Self::parse(&left)? else {
                        continue;
                    };
                    self.emit(left, Value::Object(right.clone()), out)?;
                    self.store.delete(&pk)?;
                }
                Ok(())
            }
            "left" => {
                let (left, k) = Self::object(msg, &self.config.left_key)?;
                match self.store.get(&key(&["r", &k]))? {
                    Some(right) => self.emit(left, Self::parse(&right)?, out),
                    None => {
                        self.next += 1;
                        let seq = format!("{:020}", self.next);
                        self.store.set(&key(&["p", &k, &seq]), msg.payload())?;
                        self.waiting.insert(k);
                        Ok(())
                    }
                }
            }
            other => Err(NodeError::fatal(format!(
                "unknown input port `{other}`: connect `left` and `right`"
            ))),
        }
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        for k in std::mem::take(&mut self.waiting) {
            for (pk, left) in self.store.scan(&key(&["p", &k, ""]), u32::MAX)? {
                if self.config.kind == Kind::Left {
                    let Value::Object(left) = Self::parse(&left)? else {
                        continue;
                    };
                    self.emit(left, Value::Null, out)?;
                }
                self.store.delete(&pk)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::testing::{Harness, TestMessage, json};

    fn join(kind: &str, store: &str) -> Harness<Join> {
        let config =
            json!({ "store": store, "left_key": "cust", "right_key": "id", "as": "customer", "kind": kind });
        Harness::<Join>::with_ports(config, &["left", "right"], &["out"]).unwrap()
    }

    #[test]
    fn matches_in_either_order_and_left_keeps_the_unmatched() {
        for (kind, store) in [("inner", "j1"), ("left", "j2")] {
            let mut node = join(kind, store);
            let early = node
                .process([TestMessage::new(r#"{"cust":"c1","item":"tea"}"#).input("left")])
                .unwrap();
            assert!(early.records.is_empty(), "waits for its customer");
            let out = node
                .process([
                    TestMessage::new(r#"{"id":"c1","name":"Ann"}"#).input("right"),
                    TestMessage::new(r#"{"cust":"c1","item":"jam"}"#).input("left"),
                    TestMessage::new(r#"{"cust":"c9","item":"ham"}"#).input("left"),
                ])
                .unwrap();
            assert_eq!(
                out.texts(),
                [
                    r#"{"cust":"c1","customer":{"id":"c1","name":"Ann"},"item":"tea"}"#,
                    r#"{"cust":"c1","customer":{"id":"c1","name":"Ann"},"item":"jam"}"#
                ]
            );
            let end = node.finish().unwrap().texts();
            let expected: &[&str] = if kind == "left" {
                &[r#"{"cust":"c9","customer":null,"item":"ham"}"#]
            } else {
                &[]
            };
            assert_eq!(end, expected, "{kind} join at the end");
        }
    }
}
