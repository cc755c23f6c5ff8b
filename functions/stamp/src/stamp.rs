// The body of the `stamp` node, shared by its two versions (`stamp` and `stamp-v2`),
// which differ only in `VERSION`. Hot-swap tests read from every output which version,
// replica and batch processed it: `<version> r<replica> b<batch> c<count> <payload>`,
// where `<batch>` counts this instance's `process` calls (a new version is a new
// instance: its first batch is b1) and `<count>` is the store counter of this version
// after counting the message (with `count_in`), else 0.

use std::sync::atomic::{AtomicU64, Ordering};

use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// `process` calls of this instance so far.
static BATCHES: AtomicU64 = AtomicU64::new(0);

/// `config` of the node.
#[derive(Deserialize, Default)]
pub struct StampConfig {
    /// A store to count, per version, the messages each version stamped.
    pub count_in: Option<String>,
}

/// Stamps messages with its version, replica, batch and count.
pub struct Stamp {
    counts: Option<Store>,
    replica: u32,
}

impl Node for Stamp {
    type Config = StampConfig;

    fn init(config: StampConfig) -> Result<Self, NodeError> {
        let counts = config.count_in.as_deref().map(Store::open).transpose()?;
        Ok(Stamp {
            counts,
            replica: flowhost_sdk::replica().index,
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        let count = match &self.counts {
            Some(counts) => counts.incr(VERSION.as_bytes(), 1)?,
            None => 0,
        };
        let batch = BATCHES.load(Ordering::Relaxed);
        out.emit(format!(
            "{VERSION} r{} b{batch} c{count} {}",
            self.replica,
            msg.text()?
        ))
    }
}

/// The SDK's exports, with each `process` call counted first.
#[cfg(target_arch = "wasm32")]
mod export {
    use flowhost_sdk::__private::bindings::{self, flowhost::node::types as wit};
    use flowhost_sdk::__private::{finish, init, process};

    struct Counted;

    impl bindings::Guest for Counted {
        fn init(info: wit::NodeInfo) -> Result<(), wit::NodeError> {
            init::<super::Stamp>(info)
        }
        fn process(input: Vec<u8>) -> Result<Vec<u8>, wit::NodeError> {
            super::BATCHES.fetch_add(1, super::Ordering::Relaxed);
            process::<super::Stamp>(input)
        }
        fn finish() -> Result<Vec<u8>, wit::NodeError> {
            finish::<super::Stamp>()
        }
    }

    bindings::export!(Counted with_types_in bindings);
}
