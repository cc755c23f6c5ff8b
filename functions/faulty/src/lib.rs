//! A node that misbehaves on command, to prove the host survives guests that fail:
//! `panic`, `trap`, `loop` (never returns), `grow` (allocates without bound),
//! `bad` (invalid input), `retry` (retryable error), `print` (writes to stdout/stderr).
//! Anything else passes through.
use flowhost_sdk::prelude::*;

/// Misbehaves as the payload says.
#[node(map)]
pub fn faulty(text: &str) -> Result<String, NodeError> {
    match text {
        "panic" => panic!("asked to panic"),
        "trap" => std::process::abort(),
        "loop" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "grow" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "bad" => Err(NodeError::invalid_input("asked for bad input")),
        "retry" => Err(NodeError::retryable("asked to retry")),
        "print" => {
            println!("hello from stdout");
            eprintln!("hello from stderr");
            Ok(text.to_owned())
        }
        _ => Ok(text.to_owned()),
    }
}
