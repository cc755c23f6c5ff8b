//! Core module → component, in-process, with the WASI preview1 *reactor* adapter.

use anyhow::Context;
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};

const MAGIC: &[u8; 4] = b"\0asm";

/// Whether `bytes` is a component (rather than a core module), from its header.
pub fn is_component(bytes: &[u8]) -> bool {
    // Core modules have version 1; components have layer 1 in bytes 6..8.
    bytes.len() >= 8 && &bytes[..4] == MAGIC && bytes[6..8] == [1, 0]
}

/// Returns `bytes` as a component: components pass through, core modules built for
/// wasm32-wasip1 are wrapped with the reactor adapter.
pub fn componentize(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        bytes.len() >= 8 && &bytes[..4] == MAGIC,
        "not a WebAssembly module or component (no `\\0asm` header)"
    );
    if is_component(bytes) {
        return Ok(bytes.to_vec());
    }
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(bytes)
        .context("reading the core module")?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .context("adding the WASI preview1 adapter")?
        .encode()
        .context("encoding the component")
}
