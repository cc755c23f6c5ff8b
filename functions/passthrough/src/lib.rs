//! Passes every message on unchanged: the baseline for measuring the wasm boundary.
use flowhost_sdk::prelude::*;

/// Returns the payload as it came.
#[node(map)]
pub fn passthrough(payload: &[u8]) -> &[u8] {
    payload
}
