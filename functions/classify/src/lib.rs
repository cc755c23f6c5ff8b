//! The general form with named output ports: routes priced orders to `domestic` or
//! `foreign` by country, and counts nothing it cannot read.
use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// The fields this node reads.
#[derive(Deserialize)]
pub struct Order<'a> {
    /// ISO country code.
    pub country: &'a str,
}

/// `config` of the node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Home {
    /// The home country code.
    pub home: String,
}

/// Sends each order, unchanged, to port `domestic` or `foreign`.
#[node]
pub fn classify(msg: &Message<'_>, out: &mut Output<'_>, config: &Home) -> Result<(), NodeError> {
    let order: Order = msg.json()?;
    let port = if order.country == config.home {
        "domestic"
    } else {
        "foreign"
    };
    out.forward_to(port, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::testing::Harness;

    #[test]
    fn routes_by_country() {
        let config = serde_json::json!({ "home": "DE" });
        let mut node =
            Harness::<ClassifyNode>::with_ports(config, &["in"], &["domestic", "foreign"]).unwrap();
        let out = node
            .process([r#"{"country":"DE"}"#, r#"{"country":"FR"}"#, "oops"])
            .unwrap();
        assert_eq!(out.on("domestic").len(), 1);
        assert_eq!(out.on("foreign")[0].payload, br#"{"country":"FR"}"#);
        assert_eq!(out.errors[0].0, 2);
    }
}
