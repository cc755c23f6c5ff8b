//! A typed JSON map: adds VAT by country to each order.
use std::collections::HashMap;

use flowhost_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// An incoming order.
#[derive(Deserialize)]
pub struct Order {
    /// Order id.
    pub id: u64,
    /// Who ordered.
    pub customer: String,
    /// ISO country code.
    pub country: String,
    /// Net amount in cents.
    pub amount_cents: u64,
}

/// An order with its gross total.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Priced {
    /// Order id.
    pub id: u64,
    /// Who ordered.
    pub customer: String,
    /// ISO country code.
    pub country: String,
    /// VAT rate applied.
    pub vat: f64,
    /// Gross amount in cents, rounded.
    pub total_cents: u64,
}

/// `config` of the node: VAT rate per country, and the rate for the rest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Rate for countries not in `vat`.
    pub default_vat: f64,
    /// Rate per country code.
    #[serde(default)]
    pub vat: HashMap<String, f64>,
}

/// Prices one order; a message that is not an order is invalid input.
#[node(map)]
pub fn price(order: Json<Order>, config: &PriceConfig) -> Json<Priced> {
    let Json(o) = order;
    let vat = config.vat.get(&o.country).copied().unwrap_or(config.default_vat);
    let total_cents = (o.amount_cents as f64 * (1.0 + vat)).round() as u64;
    Json(Priced {
        id: o.id,
        customer: o.customer,
        country: o.country,
        vat,
        total_cents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::ErrorKind;
    use flowhost_sdk::testing::Harness;

    #[test]
    fn prices_by_country_and_rejects_bad_json() {
        let config = serde_json::json!({ "default_vat": 0.1, "vat": { "DE": 0.19 } });
        let mut node = Harness::<PriceNode>::new(config).unwrap();
        let out = node
            .process([
                r#"{"id":1,"customer":"ann","country":"DE","amount_cents":1000}"#,
                r#"{"id":2,"customer":"bob"}"#,
                r#"{"id":3,"customer":"cy","country":"US","amount_cents":500}"#,
            ])
            .unwrap();
        let priced: Vec<Priced> = out
            .records
            .iter()
            .map(|r| serde_json::from_slice(&r.payload).unwrap())
            .collect();
        assert_eq!(
            priced[0],
            Priced {
                id: 1,
                customer: "ann".into(),
                country: "DE".into(),
                vat: 0.19,
                total_cents: 1190
            }
        );
        assert_eq!(priced[1].total_cents, 550);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(
            (out.errors[0].0, out.errors[0].1.kind),
            (1, ErrorKind::InvalidInput)
        );
        assert!(
            out.errors[0].1.message.contains("missing field `country`"),
            "{:?}",
            out.errors
        );
    }
}
