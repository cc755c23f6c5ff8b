//! A node that misbehaves on command, to prove the host survives guests that fail:
//! `panic`, `trap`, `loop` (never returns), `grow` (allocates without bound),
//! `bad` (invalid input), `retry` (retryable error), `print` (writes to stdout/stderr).
//! `<command>:<anything>` acts like `<command>` (so poison messages can be told apart).
//! Anything else passes through. With `count_in = "<store>"` in its config it first
//! counts each payload in that store, so tests can see which writes of a failed call stay.
use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// `config` of the node.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FaultyConfig {
    /// A store to count every payload in before acting on it.
    pub count_in: Option<String>,
}

/// Misbehaves as the payload says.
pub struct Faulty {
    counts: Option<Store>,
}

#[node]
impl Node for Faulty {
    type Config = FaultyConfig;

    fn init(config: FaultyConfig) -> Result<Self, NodeError> {
        let counts = config.count_in.as_deref().map(Store::open).transpose()?;
        Ok(Faulty { counts })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        if let Some(counts) = &self.counts {
            counts.incr(msg.payload(), 1)?;
        }
        let text = msg.text()?;
        misbehave(text)?;
        out.emit(text)?;
        Ok(())
    }
}

fn misbehave(text: &str) -> Result<(), NodeError> {
    match text.split_once(':').map_or(text, |(command, _)| command) {
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
            Ok(())
        }
        _ => Ok(()),
    }
}
