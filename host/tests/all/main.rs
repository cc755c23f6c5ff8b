//! The host's integration tests: one binary (as wasmtime's tests/all), a module per
//! area. They drive the real `flowhost` binary with real wasm; the Kafka ones start a
//! real broker each (`scripts/kafka install` puts tansu in place).

mod admin;
mod api;
mod apply;
mod cli;
mod common;
mod durability;
mod event_time;
mod fuzz_regressions;
mod hosts;
mod kafka;
mod loops;
mod page;
mod python;
mod reliability;
mod swap;
