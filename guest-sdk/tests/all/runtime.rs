//! The batch runtime through the native harness: what nodes emit, what they inherit,
//! and what a failed message leaves behind.

use flowhost_sdk::prelude::*;
use flowhost_sdk::testing::{Harness, TestMessage, json};
use flowhost_sdk::{ErrorKind, Record};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Reading {
    sensor: u32,
    celsius: f32,
}

mod to_fahrenheit {
    use super::*;
    #[node(map)]
    pub fn convert(r: Bincode<Reading>) -> Bincode<(u32, f32)> {
        Bincode((r.0.sensor, r.0.celsius * 9.0 / 5.0 + 32.0))
    }
}

#[test]
fn bincode_payloads_round_trip() {
    let mut node = Harness::<to_fahrenheit::ConvertNode>::new(json!({})).unwrap();
    let input = bincode::serde::encode_to_vec(
        Reading {
            sensor: 7,
            celsius: 100.0,
        },
        bincode::config::standard(),
    )
    .unwrap();
    let out = node
        .process([TestMessage::new(input), TestMessage::new(vec![0xff; 3])])
        .unwrap();
    let (value, _): ((u32, f32), _) =
        bincode::serde::decode_from_slice(&out.records[0].payload, bincode::config::standard()).unwrap();
    assert_eq!(value, (7, 212.0));
    assert_eq!(out.errors.len(), 1, "undecodable bincode is invalid input");
    assert_eq!(out.errors[0].1.kind, ErrorKind::InvalidInput);
}

mod tagger {
    use super::*;
    #[node]
    pub fn tag(msg: &Message<'_>, out: &mut Output<'_>) -> Result<(), NodeError> {
        out.emit(msg.payload())?; // inherits key, timestamp, headers
        out.send(
            Record::new("override")
                .key("k2")
                .timestamp(9)
                .header("seen", "yes")
                .port("side"),
        )?;
        if msg.payload() == b"fail" {
            return Err(NodeError::invalid_input("told to fail"));
        }
        Ok(())
    }
}

#[test]
fn records_inherit_metadata_unless_overridden_and_failures_withdraw_output() {
    let mut node = Harness::<tagger::TagNode>::with_ports(json!({}), &["in"], &["out", "side"]).unwrap();
    let msg = TestMessage::new("x").key("k1").timestamp(5).header("trace", "t1");
    let out = node.process([msg, TestMessage::new("fail")]).unwrap();
    assert_eq!(
        out.records.len(),
        2,
        "the failed message's two records were withdrawn"
    );
    let plain = &out.records[0];
    assert_eq!(
        (plain.port.as_str(), plain.key.as_deref(), plain.timestamp),
        ("out", Some(&b"k1"[..]), Some(5))
    );
    assert_eq!(plain.headers, [("trace".to_owned(), b"t1".to_vec())]);
    let custom = &out.records[1];
    assert_eq!(
        (custom.port.as_str(), custom.key.as_deref(), custom.timestamp),
        ("side", Some(&b"k2"[..]), Some(9))
    );
    assert_eq!(
        custom.headers,
        [
            ("trace".to_owned(), b"t1".to_vec()),
            ("seen".to_owned(), b"yes".to_vec())
        ]
    );
    assert_eq!(out.errors, [(1, NodeError::invalid_input("told to fail"))]);
}

#[test]
fn an_unconnected_port_drops_its_records() {
    let mut node = Harness::<tagger::TagNode>::new(json!({})).unwrap();
    let out = node.process(["x"]).unwrap();
    assert_eq!(out.texts(), ["x"], "`side` is not connected here");
}

#[test]
fn input_ports_are_named() {
    mod which {
        use super::*;
        #[node(map)]
        pub fn which(msg: Message<'_>) -> String {
            msg.input().to_owned()
        }
    }
    let mut node = Harness::<which::WhichNode>::with_ports(json!({}), &["left", "right"], &["out"]).unwrap();
    let out = node
        .process([
            TestMessage::new("a").input("right"),
            TestMessage::new("b").input("left"),
        ])
        .unwrap();
    assert_eq!(out.texts(), ["right", "left"]);
}
