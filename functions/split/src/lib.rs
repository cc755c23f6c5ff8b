//! Splits lines of text into words, each keyed by the word so that downstream replicas
//! fed by key hash see every occurrence of a word.
use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// `config` of the node in the manifest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Lower-case every word (default true).
    #[serde(default = "yes")]
    pub lowercase: bool,
    /// Drop words shorter than this (default 1).
    #[serde(default = "one")]
    pub min_len: usize,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}

/// One record per word; punctuation around words is dropped.
#[node(flat_map)]
pub fn split<'a>(line: &'a str, config: &'a SplitConfig) -> impl Iterator<Item = Record<String>> + 'a {
    line.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(move |w| w.chars().count() >= config.min_len.max(1))
        .map(move |w| {
            let word = if config.lowercase {
                w.to_lowercase()
            } else {
                w.to_owned()
            };
            Record::new(word.clone()).key(word)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::testing::Harness;

    #[test]
    fn splits_lowercases_and_keys_each_word() {
        let mut node = Harness::<SplitNode>::new(serde_json::json!({ "min_len": 2 })).unwrap();
        let out = node.process(["The cat's hat, a HAT!"]).unwrap();
        assert_eq!(out.texts(), ["the", "cat's", "hat", "hat"]);
        assert_eq!(out.records[2].key.as_deref(), Some(&b"hat"[..]));
    }

    #[test]
    fn unknown_config_is_rejected() {
        let err = Harness::<SplitNode>::new(serde_json::json!({ "lowercas": false }))
            .err()
            .unwrap();
        assert!(err.message.contains("unknown field `lowercas`"), "{err}");
    }
}
