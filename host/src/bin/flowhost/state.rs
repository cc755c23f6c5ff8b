//! `flowhost state`: what a graph's durable stores hold, read from its state directory
//! (the last checkpoint; safe while the graph runs).

use std::fmt::Write;

use flowhost::clock::now_millis;
use flowhost::manifest::{Durability, Graph};
use flowhost::state::Entries;
use flowhost::state::durable::{self, Recovered};

/// A value as people read it: text if it is printable UTF-8, a counter if it is 8 other
/// bytes, else hex.
pub fn render(value: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(value) {
        Ok(text) if !text.chars().any(char::is_control) => text.into(),
        _ => match <[u8; 8]>::try_from(value) {
            Ok(counter) => i64::from_le_bytes(counter).into(),
            Err(_) => {
                let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
                format!("0x{hex}").into()
            }
        },
    }
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What `flowhost state` reads.
pub struct Saved<'g> {
    graph: &'g Graph,
    recovered: Recovered,
    /// Where it was read from.
    place: String,
}

impl<'g> Saved<'g> {
    /// Reads the graph's state directory, or with the Kafka transport its changelogs.
    pub fn read(graph: &'g Graph) -> anyhow::Result<Self> {
        if graph.transport == flowhost::manifest::Transport::Kafka {
            let (stores, brokers) = flowhost::transport::kafka::read_state(graph)?;
            return Ok(Saved {
                graph,
                recovered: Recovered {
                    stores,
                    ..Recovered::default()
                },
                place: format!("its Kafka changelogs on {brokers}"),
            });
        }
        Ok(Saved {
            graph,
            recovered: durable::read(&graph.checkpoint.dir)?,
            place: graph.checkpoint.dir.display().to_string(),
        })
    }

    /// Each store: durability, TTL and saved keys; then the last checkpoint.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "state of graph `{}` in {}", self.graph.name, self.place);
        for spec in &self.graph.stores {
            let ttl = spec.ttl.map(|t| format!(", ttl {t:?}")).unwrap_or_default();
            let held = match spec.durability {
                Durability::Durable => {
                    let now = now_millis();
                    let keys = self
                        .recovered
                        .stores
                        .get(&spec.name)
                        .map_or(0, |s| s.values().filter(|(_, expires)| *expires > now).count());
                    format!("{keys} keys")
                }
                Durability::Memory => "in memory only: nothing saved".to_owned(),
            };
            let kind = format!("{:?}", spec.durability).to_lowercase();
            let _ = writeln!(out, "  store {:<16} {kind}{ttl}: {held}", spec.name);
        }
        let _ = match &self.recovered.last {
            None if self.graph.transport == flowhost::manifest::Transport::Kafka => Ok(()),
            None => writeln!(out, "  no checkpoint yet"),
            Some(cp) => {
                let how = if cp.complete {
                    "the run finished; the next starts its sources afresh"
                } else {
                    "the run stopped early; the next resumes from here"
                };
                let at: Vec<String> = cp
                    .sources
                    .iter()
                    .map(|(id, p)| format!("`{id}` at record {}", p.records))
                    .collect();
                writeln!(out, "  last checkpoint {} ({how}): {}", cp.epoch, at.join(", "))
            }
        };
        out
    }

    /// The entries of `store` whose key starts with `prefix`, one `key<TAB>value` per line,
    /// or JSON lines `{"key", "value", "expires"}`.
    pub fn dump(&self, store: &str, prefix: &str, json: bool) -> anyhow::Result<String> {
        let mut out = String::new();
        for (key, (value, expires)) in self.entries(store)?.range(prefix.as_bytes().to_vec()..) {
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if *expires <= now_millis() {
                continue;
            }
            let (key, value) = (String::from_utf8_lossy(key), render(value));
            if json {
                let expires = (*expires != i64::MAX).then_some(*expires);
                let line = serde_json::json!({ "key": key, "value": value, "expires": expires });
                let _ = writeln!(out, "{line}");
            } else {
                let _ = writeln!(out, "{key}\t{}", text(&value));
            }
        }
        Ok(out)
    }

    /// The value of one key, if it is there.
    pub fn get(&self, store: &str, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .entries(store)?
            .get(key.as_bytes())
            .filter(|(_, expires)| *expires > now_millis())
            .map(|(v, _)| text(&render(v))))
    }

    fn entries(&self, store: &str) -> anyhow::Result<&Entries> {
        static EMPTY: Entries = Entries::new();
        let spec = self
            .graph
            .stores
            .iter()
            .find(|s| s.name == store)
            .ok_or_else(|| {
                let names: Vec<&str> = self.graph.stores.iter().map(|s| s.name.as_str()).collect();
                anyhow::anyhow!(
                    "graph `{}` has no store `{store}` (its stores: {})",
                    self.graph.name,
                    names.join(", ")
                )
            })?;
        anyhow::ensure!(
            spec.durability == Durability::Durable,
            "store `{store}` is kept in memory only; declare it `durability = \"durable\"` to keep and inspect it"
        );
        Ok(self.recovered.stores.get(store).unwrap_or(&EMPTY))
    }
}
