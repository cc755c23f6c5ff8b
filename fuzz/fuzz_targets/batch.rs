//! Any bytes as a guest's output batch: decoded or refused, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flowhost::fuzzing::batch(data));
