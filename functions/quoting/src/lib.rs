//! A price quote service, as the steps of `graphs/api.toml` (one crate, the step chosen
//! by `config.step`, so the whole service reads in one file):
//!
//! - `load`: a price-list row `{"sku", "name", "unit_cents"}` into the store.
//! - `validate`: a request `{"sku", "qty"}` checked and normalised; a bad one fails as
//!   invalid input, which answers its HTTP request 400 with the reason.
//! - `enrich`: the request with its price-list row from the store (an unknown sku is
//!   invalid input too).
//! - `price`: the quote, with a volume discount, as the JSON reply.
//! - `ask`: the other side, in another graph: each request sent to the service (the
//!   endpoint `quotes` granted in `calls`), its quote going on as this node's output; a
//!   request the service refuses fails as invalid input with the service's reason.
use flowhost_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Which step this node is.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Price-list rows into the store.
    Load,
    /// Requests checked.
    Validate,
    /// Requests joined with their row.
    Enrich,
    /// Quotes made.
    Price,
    /// Quotes asked of the service, from another graph.
    Ask,
}

/// `config` of the node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteConfig {
    /// The step.
    pub step: Step,
    /// The price-list store (`load`: granted `rw`; `enrich`: `r`).
    pub store: Option<String>,
}

/// A row of the price list.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Item {
    /// Stock-keeping unit.
    pub sku: String,
    /// What it is.
    pub name: String,
    /// Price of one, in cents.
    pub unit_cents: u64,
}

/// A request, as `validate` passes it on.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Request {
    /// What is asked for.
    pub sku: String,
    /// How many (1 to 10,000).
    pub qty: u64,
}

/// A request with its row, as `enrich` passes it on.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Enriched {
    /// The request.
    pub request: Request,
    /// Its price-list row.
    pub item: Item,
}

/// The answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Quote {
    /// What was asked for.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// How many.
    pub qty: u64,
    /// Price of one, in cents.
    pub unit_cents: u64,
    /// Volume discount, in percent.
    pub discount_pct: u64,
    /// What the lot costs, in cents, rounded down.
    pub total_cents: u64,
}

/// The volume discount for `qty` pieces, in percent.
pub fn discount_pct(qty: u64) -> u64 {
    match qty {
        100.. => 10,
        10.. => 5,
        _ => 0,
    }
}

/// The quote for a request and its row.
pub fn quote(request: &Request, item: &Item) -> Quote {
    let discount = discount_pct(request.qty);
    Quote {
        sku: item.sku.clone(),
        name: item.name.clone(),
        qty: request.qty,
        unit_cents: item.unit_cents,
        discount_pct: discount,
        total_cents: item.unit_cents * request.qty * (100 - discount) / 100,
    }
}

/// Checks a request body.
pub fn validate(body: &[u8]) -> Result<Request, NodeError> {
    #[derive(Deserialize)]
    struct Raw {
        sku: Option<serde_json::Value>,
        qty: Option<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| NodeError::invalid_input(format!("the body is not a JSON object: {e}")))?;
    let sku = match raw.sku {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(_) => return Err(NodeError::invalid_input("`sku` must be a non-empty string")),
        None => return Err(NodeError::invalid_input("`sku` is missing")),
    };
    let qty = match raw.qty {
        Some(q) => q.as_u64().filter(|q| (1..=10_000).contains(q)).ok_or_else(|| {
            NodeError::invalid_input(format!("`qty` must be a whole number from 1 to 10000, not {q}"))
        })?,
        None => return Err(NodeError::invalid_input("`qty` is missing")),
    };
    Ok(Request { sku, qty })
}

/// The node.
pub struct QuoteNode {
    step: Step,
    store: Option<Store>,
}

#[node]
impl Node for QuoteNode {
    type Config = QuoteConfig;

    fn init(config: QuoteConfig) -> Result<Self, NodeError> {
        let needs_store = matches!(config.step, Step::Load | Step::Enrich);
        let store = match (&config.store, needs_store) {
            (Some(name), true) => Some(Store::open(name)?),
            (None, true) => {
                return Err(NodeError::fatal(format!("step {:?} needs `store`", config.step)));
            }
            (_, false) => None,
        };
        Ok(QuoteNode {
            step: config.step,
            store,
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        match self.step {
            Step::Load => {
                let item: Item = msg.json()?;
                let store = self.store.as_ref().expect("checked in init");
                store.set(item.sku.as_bytes(), msg.payload())
            }
            Step::Validate => out.emit(Json(validate(msg.payload())?)),
            Step::Enrich => {
                let request: Request = msg.json()?;
                let store = self.store.as_ref().expect("checked in init");
                let Some(row) = store.get(request.sku.as_bytes())? else {
                    return Err(NodeError::invalid_input(format!("unknown sku `{}`", request.sku)));
                };
                let item: Item = serde_json::from_slice(&row)
                    .map_err(|e| NodeError::fatal(format!("price list row of `{}`: {e}", request.sku)))?;
                out.emit(Json(Enriched { request, item }))
            }
            Step::Ask => {
                let answer = flowhost_sdk::call::post("quotes", msg.payload())?;
                match answer.status {
                    200 => out.emit(answer.body),
                    400..500 => {
                        #[derive(Deserialize)]
                        struct Refusal {
                            error: String,
                        }
                        let why = answer.json::<Refusal>().map(|r| r.error);
                        Err(NodeError::invalid_input(why.unwrap_or_else(|_| {
                            format!("the quote service answered {}", answer.status)
                        })))
                    }
                    status => Err(NodeError::retryable(format!(
                        "the quote service answered {status}"
                    ))),
                }
            }
            Step::Price => {
                let Enriched { request, item } = msg.json()?;
                out.send(
                    Record::new(Json(quote(&request, &item)))
                        .status(200)
                        .content_type("application/json"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::ErrorKind;

    #[test]
    fn a_request_is_checked_field_by_field() {
        assert_eq!(
            validate(br#"{"sku":" A-1 ","qty":3}"#).unwrap(),
            Request {
                sku: "A-1".into(),
                qty: 3
            }
        );
        for (body, why) in [
            (&b"nope"[..], "not a JSON object"),
            (br#"{"qty":1}"#, "`sku` is missing"),
            (br#"{"sku":"","qty":1}"#, "non-empty"),
            (br#"{"sku":"A","qty":0}"#, "from 1 to 10000"),
            (br#"{"sku":"A","qty":2.5}"#, "whole number"),
        ] {
            let e = validate(body).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput);
            assert!(
                e.message.contains(why),
                "{}: {}",
                String::from_utf8_lossy(body),
                e.message
            );
        }
    }

    #[test]
    fn ask_passes_a_quote_on_and_a_refusal_as_invalid_input() {
        use flowhost_sdk::call::{Response, respond_with};
        use flowhost_sdk::testing::Harness;
        respond_with(|endpoint, body| {
            assert_eq!(endpoint, "quotes");
            let (status, body) = if body.starts_with(b"{\"sku\":\"A\"") {
                (200, br#"{"total_cents":1}"#.to_vec())
            } else {
                (400, br#"{"error":"unknown sku `B`"}"#.to_vec())
            };
            Ok(Response {
                status,
                content_type: None,
                body,
            })
        });
        let mut h = Harness::<QuoteNode>::new(serde_json::json!({"step": "ask"})).unwrap();
        let out = h
            .process([r#"{"sku":"A","qty":1}"#, r#"{"sku":"B","qty":1}"#])
            .unwrap();
        assert_eq!(out.texts(), [r#"{"total_cents":1}"#]);
        let (index, e) = &out.errors[0];
        assert_eq!(
            (*index, e.kind, e.message.as_str()),
            (1, ErrorKind::InvalidInput, "unknown sku `B`")
        );
    }

    #[test]
    fn volume_discounts_apply_from_ten_and_a_hundred() {
        let item = Item {
            sku: "A".into(),
            name: "a".into(),
            unit_cents: 199,
        };
        let total = |qty| quote(&Request { sku: "A".into(), qty }, &item).total_cents;
        assert_eq!(total(9), 1791);
        assert_eq!(total(10), 1890);
        assert_eq!(total(100), 17910);
    }
}
