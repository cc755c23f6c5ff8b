//! End-to-end tests of graphs through the library: one binary, a module per area. Node
//! crates from `functions/` are built for wasm32-wasip1 on demand.

mod event_time;
mod faults;
mod graphs;
mod manifest_ui;
mod sandbox;
mod state;
