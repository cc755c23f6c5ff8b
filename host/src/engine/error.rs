//! What can go wrong loading a module or starting an instance.

use std::path::PathBuf;

use super::instance::CallError;

/// A module that cannot be loaded, or an instance that cannot be started. Each variant's
/// text names the file or node and carries its cause.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The wasm engine itself cannot be set up.
    #[error("setting up the wasm engine: {0}")]
    Setup(String),
    /// The bytes are not WebAssembly at all.
    #[error("{}: not a WebAssembly module or component (no `\\0asm` header)", path.display())]
    NotWasm {
        /// The module's file (or the name it was given).
        path: PathBuf,
    },
    /// A module file cannot be read.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// A step of turning the bytes into a component failed.
    #[error("{}: {step}: {why}", path.display())]
    Module {
        /// The module's file.
        path: PathBuf,
        /// What was being done (`reading the core module`, `compiling the component`, …).
        step: &'static str,
        /// Why it failed.
        why: String,
    },
    /// The component does not implement the `flowhost:node` world (exports, imports).
    #[error("{} does not fit the flowhost:node world: {why}", path.display())]
    World {
        /// The module's file.
        path: PathBuf,
        /// What is missing or mistyped.
        why: String,
    },
    /// An instance of a node cannot be started (linking, grants). The text leaves the
    /// node's name to whoever reports it (the run, a swap record).
    #[error("{step}: {why}")]
    Start {
        /// The node.
        node: String,
        /// What was being done.
        step: &'static str,
        /// Why it failed.
        why: String,
    },
    /// The node's `init` returned an error or trapped.
    #[error("init: {error}")]
    Init {
        /// The node.
        node: String,
        /// What the call said.
        error: CallError,
    },
}

impl EngineError {
    pub(super) fn module(path: &std::path::Path, step: &'static str, why: impl std::fmt::Display) -> Self {
        EngineError::Module {
            path: path.to_owned(),
            step,
            why: format!("{why:#}"),
        }
    }

    pub(super) fn start(node: &str, step: &'static str, why: impl std::fmt::Display) -> Self {
        EngineError::Start {
            node: node.to_owned(),
            step,
            why: format!("{why:#}"),
        }
    }
}
