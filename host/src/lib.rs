//! flowhost: a runtime for dataflow graphs of sandboxed WebAssembly functions.
//!
//! # Layout
//!
//! - [`manifest`]: `graph.toml` → raw serde types → a validated [`manifest::Graph`],
//!   every error reported at once with its file:line:col.
//! - [`engine`]: the wasmtime engine, module → component, compile cache, instances,
//!   limits (epoch deadlines, memory caps) and traps.
//! - [`message`]: the host's message envelope and its batch framing.
//! - [`topology`]: a running graph — sources, node replicas on their own threads,
//!   bounded channels, routing, error policies, drain and shutdown; hot swap of a
//!   node's module ([`topology::swap`]).
//! - [`state`]: host-side stores nodes share, and the WIT `state` interface over them.
//! - [`io`]: sources (file, JSON lines, stdin, generator) and sinks (stdout, file, null).
//! - [`bench`]: `flowhost bench`, throughput and boundary cost against native.
#![deny(missing_docs)]

pub mod admin;
pub mod bench;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod kafka;
pub mod manifest;
pub mod message;
pub mod new;
pub mod progress;
pub mod replay;
pub mod state;
pub mod topology;
pub mod watch;

pub use flowhost_sdk::{DEFAULT_INPUT, DEFAULT_OUTPUT};
