//! flowhost: a runtime for dataflow graphs of sandboxed WebAssembly functions.
//!
//! # Layout
//!
//! From the bottom up (ARCHITECTURE.md at the repository root draws it); a module uses
//! only those listed before it.
//!
//! - [`clock`], [`shutdown`]: wall-clock milliseconds; the stop signal and first failure.
//! - [`manifest`]: `graph.toml` → raw serde types → a validated [`manifest::Graph`],
//!   every error reported at once with its file:line:col.
//! - [`message`]: the host's message envelope and its batch framing.
//! - [`state`]: host-side stores nodes share, their undo log and durable checkpoint log.
//! - [`plan`]: a graph resolved to run — modules built, read and pinned, placement,
//!   every Kafka name.
//! - [`engine`]: the wasmtime engine, module → component, compile cache, instances,
//!   limits (epoch deadlines, memory caps), traps, and the WIT `state` interface.
//! - [`io`]: sources (file, JSON lines, stdin, generator) and sinks (stdout, file, null).
//! - [`flow`]: how batches move: envelopes, acknowledgements, channels, routing.
//! - [`transport`]: the seam between the runner and the two transports, in-memory and
//!   Kafka.
//! - [`topology`]: the runner — node replicas on their own threads, error policies,
//!   status, hot swap ([`topology::swap`]) — over any transport.
//! - [`admin`], [`watch`], [`progress`], [`beacon`] (heartbeats on a Kafka graph's
//!   status topic), [`control`] (commands to every process of a Kafka graph): observers of a running graph, started by the caller; [`replay`]:
//!   dead letters back through a node.
#![deny(missing_docs)]

pub mod admin;
pub mod beacon;
pub mod clock;
pub mod control;
pub mod engine;
#[doc(hidden)]
pub mod flow;
pub mod fuzzing;
pub mod io;
pub mod manifest;
pub mod message;
pub mod plan;
pub mod progress;
pub mod replay;
pub mod shutdown;
pub mod state;
pub mod throttle;
pub mod topology;
pub mod transport;
pub mod watch;

pub use flowhost_sdk::{DEFAULT_INPUT, DEFAULT_OUTPUT};

/// Runs `plan` to its end over the transport it names, with no observers: what tests,
/// benchmarks and `replay` use (`flowhost run` starts its observers between
/// [`topology::Runner::start`] and [`topology::Runner::run`]).
pub fn run(
    plan: &plan::Plan,
    engine: &engine::Engine,
    opts: &topology::RunOptions,
    shutdown: &std::sync::Arc<shutdown::Shutdown>,
) -> Result<topology::RunReport, topology::RunError> {
    let _graph = tracing::info_span!("graph", graph = %plan.graph.name).entered();
    let transport = transport::for_plan(plan, opts.batch_size, opts.append, opts.fresh)?;
    topology::Runner::start(plan, engine, opts, shutdown, transport)?.run()
}
