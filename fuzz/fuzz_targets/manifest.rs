//! Any bytes as a `graph.toml`: a diagnostic or a graph, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flowhost::fuzzing::manifest(data));
