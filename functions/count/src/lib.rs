//! Counts equal payloads (words) and emits `word<TAB>count` lines when the input ends,
//! most frequent first. Feed it by key hash so each replica owns a disjoint set of words.
//!
//! On its `partial` port it takes a combiner's partial counts instead (key the word,
//! payload a partial `u64`, see `flowhost_sdk::combine`), e.g. from `split` with
//! `combine = true`. Words are counted as bytes; they are checked to be text once each,
//! at the end.
use flowhost_sdk::collections::HashMap;
use flowhost_sdk::combine::{PARTIAL_PORT, Partial};
use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// `config` of the node in the manifest.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CountConfig {
    /// Emit only the `top` most frequent words (all if absent).
    pub top: Option<usize>,
}

/// Word counts kept in guest memory until the end of input.
pub struct Count {
    counts: HashMap<Box<[u8]>, u64>,
    top: Option<usize>,
}

#[node]
impl Node for Count {
    type Config = CountConfig;

    fn init(config: CountConfig) -> Result<Self, NodeError> {
        Ok(Count {
            counts: HashMap::default(),
            top: config.top,
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, _out: &mut Output<'a>) -> Result<(), NodeError> {
        let (word, n) = if msg.input() == PARTIAL_PORT {
            let word = msg
                .key()
                .ok_or_else(|| NodeError::invalid_input("a partial count without a key"))?;
            (word, u64::read(msg.payload())?)
        } else {
            (msg.payload(), 1)
        };
        match self.counts.get_mut(word) {
            Some(count) => *count += n,
            None => {
                self.counts.insert(word.into(), n);
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        let mut counts = Vec::with_capacity(self.counts.len());
        for (word, n) in self.counts.drain() {
            let word = String::from_utf8(word.into_vec())
                .map_err(|e| NodeError::invalid_input(format!("a word that is not UTF-8: {e}")))?;
            counts.push((word, n));
        }
        counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts.truncate(self.top.unwrap_or(usize::MAX));
        for (word, n) in counts {
            out.send(Record::new(format!("{word}\t{n}")).key(word))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::testing::Harness;

    #[test]
    fn counts_across_batches_and_emits_at_the_end() {
        let mut node = Harness::<Count>::new(serde_json::json!({ "top": 2 })).unwrap();
        assert!(node.process(["b", "a", "b"]).unwrap().records.is_empty());
        node.process(["c", "a", "b"]).unwrap();
        assert_eq!(node.finish().unwrap().texts(), ["b\t3", "a\t2"]);
    }

    #[test]
    fn partial_counts_add_to_words_counted_one_by_one() {
        use flowhost_sdk::testing::TestMessage;
        let mut node = Harness::<Count>::with_ports(json_none(), &["in", "partial"], &["out"]).unwrap();
        let partial = |w: &str, n: u64| TestMessage::new(n.to_le_bytes().to_vec()).key(w).input("partial");
        node.process(vec![partial("a", 5), TestMessage::new("a"), partial("b", 2)])
            .unwrap();
        let bad = node
            .process(vec![TestMessage::new("x").input("partial")])
            .unwrap();
        assert_eq!(bad.errors.len(), 1, "a partial without a key is invalid input");
        assert_eq!(node.finish().unwrap().texts(), ["a\t6", "b\t2"]);
    }

    fn json_none() -> serde_json::Value {
        serde_json::json!({})
    }
}
