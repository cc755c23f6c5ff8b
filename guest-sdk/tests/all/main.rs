//! The SDK's integration tests: one binary, a module per area.

mod node_macro_ui;
mod runtime;
