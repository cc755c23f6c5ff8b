//! Counts equal payloads (words) and emits `word<TAB>count` lines when the input ends,
//! most frequent first. Feed it by key hash so each replica owns a disjoint set of words.
use std::collections::HashMap;

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
    counts: HashMap<String, u64>,
    top: Option<usize>,
}

#[node]
impl Node for Count {
    type Config = CountConfig;

    fn init(config: CountConfig) -> Result<Self, NodeError> {
        Ok(Count {
            counts: HashMap::new(),
            top: config.top,
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, _out: &mut Output<'a>) -> Result<(), NodeError> {
        let word = msg.text()?;
        match self.counts.get_mut(word) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(word.to_owned(), 1);
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        let mut counts: Vec<_> = self.counts.drain().collect();
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
}
