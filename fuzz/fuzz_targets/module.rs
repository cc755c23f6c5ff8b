//! Any bytes as a node's module (run, swap, --watch, replay --module all load this way):
//! loaded or refused with an error, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flowhost::fuzzing::module(data));
