// The body of the `stamp` node, shared by its two versions (`stamp` and `stamp-v2`),
// which differ only in `VERSION`: hot-swap tests tell from every output which version
// processed it.

use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// `config` of the node.
#[derive(Deserialize, Default)]
pub struct StampConfig {
    /// A store to count, per version, the messages each version stamped.
    pub count_in: Option<String>,
}

/// Stamps messages with its version and replica.
pub struct Stamp {
    counts: Option<Store>,
    replica: u32,
}

#[node]
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
        if let Some(counts) = &self.counts {
            counts.incr(VERSION.as_bytes(), 1)?;
        }
        out.emit(format!("{VERSION} r{} {}", self.replica, msg.text()?))
    }
}
