//! A node that misbehaves on command, to prove the host survives guests that fail:
//! `panic`, `trap`, `loop` (never returns), `grow` (allocates without bound),
//! `bad` (invalid input), `retry` (retryable error), `print` (writes to stdout/stderr),
//! `sleep` (sleeps an hour inside WASI, where epoch interruption cannot reach it),
//! `nap` (sleeps 50 ms at a time, forever), `pause` (sleeps 2 s, then passes through:
//! a slow node).
//! `<command>:<anything>` acts like `<command>` (so poison messages can be told apart).
//! Anything else passes through. With `count_in = "<store>"` in its config it first
//! counts each payload in that store, so tests can see which writes of a failed call stay;
//! with `sleep_in = "init"` or `"finish"` that call sleeps an hour.
use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// `config` of the node.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FaultyConfig {
    /// A store to count every payload in before acting on it.
    pub count_in: Option<String>,
    /// `init` or `finish`: sleep an hour in that call.
    pub sleep_in: Option<String>,
}

/// Misbehaves as the payload says.
pub struct Faulty {
    counts: Option<Store>,
    sleep_in_finish: bool,
}

#[node]
impl Node for Faulty {
    type Config = FaultyConfig;

    fn init(config: FaultyConfig) -> Result<Self, NodeError> {
        let counts = config.count_in.as_deref().map(Store::open).transpose()?;
        if config.sleep_in.as_deref() == Some("init") {
            sleep_an_hour();
        }
        Ok(Faulty {
            counts,
            sleep_in_finish: config.sleep_in.as_deref() == Some("finish"),
        })
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

    fn finish(&mut self, _out: &mut Output<'_>) -> Result<(), NodeError> {
        if self.sleep_in_finish {
            sleep_an_hour();
        }
        Ok(())
    }
}

fn sleep_an_hour() {
    std::thread::sleep(std::time::Duration::from_secs(3600));
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
        "sleep" => {
            sleep_an_hour();
            Ok(())
        }
        "pause" => {
            std::thread::sleep(std::time::Duration::from_secs(2));
            Ok(())
        }
        "nap" => loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
        },
        "print" => {
            println!("hello from stdout");
            eprintln!("hello from stderr");
            Ok(())
        }
        _ => Ok(()),
    }
}
