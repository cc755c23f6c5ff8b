//! A filter: keeps priced orders at or above a threshold.
use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// The fields this filter reads from a priced order.
#[derive(Deserialize)]
pub struct Total {
    /// Gross amount in cents.
    pub total_cents: u64,
}

/// `config` of the node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Smallest total (in cents) that passes.
    pub min_cents: u64,
}

/// Passes orders whose total is at least `min_cents`.
#[node(filter)]
pub fn big_orders(order: &Json<Total>, config: &Threshold) -> bool {
    order.0.total_cents >= config.min_cents
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::testing::{Harness, TestMessage};

    #[test]
    fn keeps_big_orders_unchanged_with_their_key() {
        let mut node = Harness::<BigOrdersNode>::new(serde_json::json!({ "min_cents": 1000 })).unwrap();
        let big = r#"{"id":1,"total_cents":1190}"#;
        let out = node
            .process([
                TestMessage::new(big).key("ann"),
                TestMessage::new(r#"{"id":2,"total_cents":999}"#),
            ])
            .unwrap();
        assert_eq!(out.texts(), [big]);
        assert_eq!(out.records[0].key.as_deref(), Some(&b"ann"[..]));
    }
}
