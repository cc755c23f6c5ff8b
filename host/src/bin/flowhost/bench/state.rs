//! State: ns per `incr` from a guest (the `tally` node), one host call per message and one
//! `incr_many` per batch, against the same store operation called natively.

use std::time::Duration;

use bytes::Bytes;

use super::boundary::per_message;
use super::{Better, Fixtures, Row};
use flowhost::engine::{NodeSetup, NodeTemplate};
use flowhost::manifest::Access;
use flowhost::message::{self, Msg};
use flowhost::state::{Store, Stores};

const KEYS: usize = 1024;

pub(super) fn run(fx: &Fixtures, seconds: Duration) -> anyhow::Result<Vec<Row>> {
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("key{i:05}").into_bytes()).collect();
    let batch: Vec<Msg> = keys
        .iter()
        .map(|k| Msg {
            key: Some(Bytes::from(k.clone())),
            ..Msg::new("x", None)
        })
        .collect();
    let input = message::encode(&batch, 0);

    let native_store = Store::new("bench");
    let native = per_message(seconds, || {
        for k in &keys {
            native_store.incr(k, 1)?;
        }
        Ok(KEYS)
    })?;

    let mut rows = Vec::new();
    for batched in [false, true] {
        let stores = Stores::new(["bench".to_owned()]);
        let setup = NodeSetup {
            config_json: serde_json::json!({ "store": "bench", "batched": batched }).to_string(),
            grants: stores.grants(&[("bench".to_owned(), Access::ReadWrite)]),
            ..NodeSetup::new("tally")
        };
        let mut tally = NodeTemplate::new(&fx.engine, fx.tally.clone(), setup)?.instantiate()?;
        let ns = per_message(seconds, || {
            tally.process(&input)?;
            Ok(KEYS)
        })?;
        let name = if batched {
            "state incr, batched (incr_many)"
        } else {
            "state incr, one call each"
        };
        let row = Row::new(name, ns, Some(native), "ns/op", Better::Lower);
        rows.push(if batched { row.ratio_target(2.0) } else { row });
    }
    Ok(rows)
}
