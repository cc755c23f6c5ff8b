//! Entry points for the fuzz targets in `fuzz/` and for the regression test that replays
//! what they found (`host/tests/all/fuzz_regressions.rs`). Each takes arbitrary bytes and
//! must return normally: an error is fine, a panic is a bug.

use std::path::Path;
use std::sync::OnceLock;

use crate::engine::{Engine, EngineConfig, NodeSetup, NodeTemplate};
use crate::manifest::Graph;
use crate::manifest::picture::{self, Format};
use crate::message;

/// Parses `data` as a `graph.toml` and renders the outcome (diagnostics with line:col, or
/// the graph's picture).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Graph::parse(Path::new("/nonexistent/fuzz/graph.toml"), text) {
        Ok(graph) => {
            std::hint::black_box(picture::render(&graph, Format::Dot));
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
}

/// Decodes `data` as a guest's output batch for 1 to 3 ports, reads every header, and
/// checks that what decodes survives a re-encode unchanged.
pub fn batch(data: &[u8]) {
    for ports in 1..=3 {
        let Ok(out) = message::decode(data.to_vec(), ports) else {
            continue;
        };
        std::hint::black_box(&out.errors);
        for (port, batch) in out.ports.into_iter().enumerate() {
            let msgs = batch.into_msgs();
            for m in &msgs {
                std::hint::black_box(m.headers.iter().count());
            }
            let mut again = message::decode(message::encode(&msgs, port as u16), ports)
                .expect("a batch the host encoded decodes");
            let again = std::mem::take(again.ports[port].msgs());
            assert_eq!(again, msgs, "re-encoded batch differs");
        }
    }
}

/// Loads `data` as a node's module (componentize, compile, link against the node world):
/// an error or a module, never a panic.
pub fn module(data: &[u8]) {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| Engine::new(EngineConfig::default()).expect("an engine"));
    if let Ok(module) = engine.load_bytes(data, Path::new("fuzz.wasm")) {
        std::hint::black_box(NodeTemplate::new(engine, module, NodeSetup::new("fuzz")).is_ok());
    }
}
