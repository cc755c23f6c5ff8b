//! Core module → component, in-process, with the WASI preview1 *reactor* adapter.

use std::path::Path;

use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};

use super::EngineError;

use crate::plan::is_wasm;

/// Whether `bytes` is a component (rather than a core module), from its header.
pub fn is_component(bytes: &[u8]) -> bool {
    // Core modules have version 1; components have layer 1 in bytes 6..8.
    is_wasm(bytes) && bytes[6..8] == [1, 0]
}

/// Returns `bytes` as a component: components pass through, core modules built for
/// wasm32-wasip1 are wrapped with the reactor adapter. `path` names the module in errors.
pub fn componentize(bytes: &[u8], path: &Path) -> Result<Vec<u8>, EngineError> {
    if !is_wasm(bytes) {
        return Err(EngineError::NotWasm {
            path: path.to_owned(),
        });
    }
    if is_component(bytes) {
        return Ok(bytes.to_vec());
    }
    // Checked before the component tooling reads it: some malformed modules (a custom
    // section cut short) make it panic rather than refuse.
    wasmparser::Validator::new()
        .validate_all(bytes)
        .map_err(|e| EngineError::module(path, "reading the core module", e))?;
    let mut encoder = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(bytes)
        .map_err(|e| EngineError::module(path, "reading the core module", e))?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .map_err(|e| EngineError::module(path, "adding the WASI preview1 adapter", e))?;
    encoder
        .encode()
        .map_err(|e| EngineError::module(path, "encoding the component", e))
}
