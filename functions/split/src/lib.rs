//! Splits lines of text into words, each keyed by the word so that downstream replicas
//! fed by key hash see every occurrence of a word.
//!
//! With `combine = true` it is a combiner (see `flowhost_sdk::combine`): instead of a
//! record per word it emits, per batch, one record per distinct word — key the word,
//! payload its count in the batch as a partial `u64` — for a counter's `partial` port.
use flowhost_sdk::combine::Combiner;
use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// `config` of the node in the manifest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Lower-case every word (default true).
    #[serde(default = "yes")]
    pub lowercase: bool,
    /// Drop words shorter than this, in characters (default 1).
    #[serde(default = "one")]
    pub min_len: usize,
    /// Emit partial counts per batch instead of words (default false).
    #[serde(default)]
    pub combine: bool,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}

/// The splitter: its config, the buffer each word is lower-cased into, and the
/// combiner's counts.
pub struct Split {
    config: SplitConfig,
    word: String,
    counts: Option<Combiner<u64>>,
}

impl Split {
    /// The words of `line`, each as the config wants it, to `each`.
    fn words(
        &mut self,
        line: &str,
        mut each: impl FnMut(&str) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let min_len = self.config.min_len.max(1);
        for w in line.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
            let w = w.trim_matches('\'');
            if w.is_empty() || (min_len > 1 && w.chars().count() < min_len) {
                continue;
            }
            if !self.config.lowercase {
                each(w)?;
                continue;
            }
            // Into one reused buffer: no allocation per word. Non-ASCII words take
            // `str::to_lowercase`, which knows context (a final sigma).
            self.word.clear();
            if w.is_ascii() {
                self.word
                    .extend(w.bytes().map(|b| b.to_ascii_lowercase() as char));
            } else {
                self.word.push_str(&w.to_lowercase());
            }
            let word = std::mem::take(&mut self.word);
            let result = each(&word);
            self.word = word;
            result?;
        }
        Ok(())
    }
}

#[node]
impl Node for Split {
    type Config = SplitConfig;

    fn init(config: SplitConfig) -> Result<Self, NodeError> {
        Ok(Split {
            counts: config.combine.then(Combiner::new),
            config,
            word: String::new(),
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        let line = msg.text()?;
        match self.counts.take() {
            Some(mut counts) => {
                let result = self.words(line, |w| {
                    counts.add(w.as_bytes(), 1);
                    Ok(())
                });
                self.counts = Some(counts);
                result
            }
            None => self.words(line, |w| out.emit_keyed(w.as_bytes(), w)),
        }
    }

    fn end_batch(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        match &mut self.counts {
            Some(counts) => counts.emit(out),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::testing::Harness;

    #[test]
    fn splits_lowercases_and_keys_each_word() {
        let mut node = Harness::<Split>::new(serde_json::json!({ "min_len": 2 })).unwrap();
        let out = node.process(["The cat's hat, a HAT!"]).unwrap();
        assert_eq!(out.texts(), ["the", "cat's", "hat", "hat"]);
        assert_eq!(out.records[2].key.as_deref(), Some(&b"hat"[..]));
    }

    #[test]
    fn unknown_config_is_rejected() {
        let err = Harness::<Split>::new(serde_json::json!({ "lowercas": false }))
            .err()
            .unwrap();
        assert!(err.message.contains("unknown field `lowercas`"), "{err}");
    }

    #[test]
    fn non_ascii_words_lower_case_like_str_to_lowercase() {
        let mut node = Harness::<Split>::new(serde_json::json!({})).unwrap();
        let out = node.process(["ÉTÉ ΟΔΟΣ Straße"]).unwrap();
        assert_eq!(out.texts(), ["été", "οδος", "straße"]);
    }

    #[test]
    fn combined_it_emits_each_words_count_in_the_batch_once() {
        use flowhost_sdk::combine::Partial;
        let mut node = Harness::<Split>::new(serde_json::json!({ "combine": true })).unwrap();
        let out = node.process(["The cat, the hat.", "THE END"]).unwrap();
        let mut got: Vec<(String, u64)> = out
            .records
            .iter()
            .map(|r| {
                let word = String::from_utf8(r.key.clone().unwrap()).unwrap();
                (word, u64::read(&r.payload).unwrap())
            })
            .collect();
        got.sort();
        let want = [("cat", 1), ("end", 1), ("hat", 1), ("the", 3)];
        assert_eq!(got, want.map(|(w, n)| (w.to_owned(), n)));
        // The next batch starts over.
        assert_eq!(node.process(["cat"]).unwrap().records.len(), 1);
    }
}
