//! Least values propagated over a graph's edges until nothing changes: the body of a
//! loop (a feedback edge from `out` back to `updates`). Two algorithms, one rule — a
//! vertex's value is the least its neighbours offer, plus the edge's weight:
//!
//! - `components`: connected components by label propagation. Edges `u v` (undirected,
//!   weight 0); every vertex starts as its own label; the result is each vertex with the
//!   least vertex id of its component.
//! - `shortest-paths`: single-source shortest paths. Edges `u v w` (directed, weight w);
//!   `from` starts at 0; the result is each reachable vertex with its distance.
//!
//! Input port `edges` takes edge lines; port `updates` takes proposals (`v`, value: 12
//! bytes, little-endian u32 and u64) — what this node emits on `out` whenever a
//! vertex's value improves, one per neighbour. The per-vertex values and adjacency live
//! in a host store (granted `rw`), updated by compare-and-swap, so replicas may share
//! it. `finish` (after the loop ended) emits `vertex value` lines on port `result`,
//! replica 0 for all.
//!
//! Store layout: `v<u32 le>` → value (u64 le); `a<u32 le>` → neighbours, 12 bytes each
//! (u32 vertex, u64 weight).
use flowhost_sdk::prelude::*;
use serde::Deserialize;

/// Which algorithm.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Connected components (min-label propagation).
    Components,
    /// Single-source shortest paths.
    ShortestPaths,
}

/// `config` of the node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropagateConfig {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The store of values and adjacency (granted `rw`).
    pub store: String,
    /// `shortest-paths`: the source vertex.
    #[serde(default)]
    pub from: u32,
}

/// The node.
pub struct Propagate {
    algorithm: Algorithm,
    from: u32,
    store: Store,
}

fn key(tag: u8, v: u32) -> [u8; 5] {
    let b = v.to_le_bytes();
    [tag, b[0], b[1], b[2], b[3]]
}

/// A proposal: vertex `v` could have `value`.
pub fn proposal(v: u32, value: u64) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&v.to_le_bytes());
    p[4..].copy_from_slice(&value.to_le_bytes());
    p
}

fn read_proposal(b: &[u8]) -> Result<(u32, u64), NodeError> {
    if b.len() != 12 {
        return Err(NodeError::invalid_input(format!(
            "a proposal is 12 bytes, not {}",
            b.len()
        )));
    }
    let v = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    Ok((v, u64::from_le_bytes(b[4..].try_into().expect("8 bytes"))))
}

/// An edge line: `u v` or `u v w`.
pub fn read_edge(line: &str) -> Result<(u32, u32, u64), NodeError> {
    let mut parts = line.split_ascii_whitespace();
    let mut next = |what: &str| {
        parts
            .next()
            .ok_or_else(|| NodeError::invalid_input(format!("edge `{line}`: no {what}")))
            .map(str::to_owned)
    };
    let bad = |e: std::num::ParseIntError| NodeError::invalid_input(format!("edge `{line}`: {e}"));
    let u = next("first vertex")?.parse().map_err(bad)?;
    let v = next("second vertex")?.parse().map_err(bad)?;
    let w = match parts.next() {
        Some(w) => w.parse().map_err(bad)?,
        None => 0,
    };
    Ok((u, v, w))
}

impl Propagate {
    fn value(&self, v: u32) -> Result<Option<u64>, NodeError> {
        Ok(self
            .store
            .get(&key(b'v', v))?
            .and_then(|b| Some(u64::from_le_bytes(b.try_into().ok()?))))
    }

    /// Lowers `v`'s value to `value` if that is less (or it has none): whether it did.
    fn lower(&self, v: u32, value: u64) -> Result<bool, NodeError> {
        let k = key(b'v', v);
        loop {
            let now = self.store.get(&k)?;
            let current = now
                .as_deref()
                .and_then(|b| Some(u64::from_le_bytes(b.try_into().ok()?)));
            if current.is_some_and(|c| c <= value) {
                return Ok(false);
            }
            if self
                .store
                .compare_and_swap(&k, now.as_deref(), Some(&value.to_le_bytes()))?
            {
                return Ok(true);
            }
        }
    }

    fn connect(&self, u: u32, v: u32, w: u64) -> Result<(), NodeError> {
        let k = key(b'a', u);
        let mut entry = [0u8; 12];
        entry[..4].copy_from_slice(&v.to_le_bytes());
        entry[4..].copy_from_slice(&w.to_le_bytes());
        loop {
            let now = self.store.get(&k)?;
            let mut next = now.clone().unwrap_or_default();
            next.extend_from_slice(&entry);
            if self.store.compare_and_swap(&k, now.as_deref(), Some(&next))? {
                return Ok(());
            }
        }
    }

    /// `v`'s value improved to `value`: a proposal to each neighbour.
    fn spread(&self, v: u32, value: u64, out: &mut Output<'_>) -> Result<(), NodeError> {
        let neighbours = self.store.get(&key(b'a', v))?.unwrap_or_default();
        for n in neighbours.chunks_exact(12) {
            let to = u32::from_le_bytes(n[..4].try_into().expect("4 bytes"));
            let w = u64::from_le_bytes(n[4..].try_into().expect("8 bytes"));
            let p = proposal(to, value.saturating_add(w));
            out.emit_keyed(&p[..4], p)?;
        }
        Ok(())
    }

    /// A new edge: stored, and the values at its ends offered across it.
    fn edge(&self, (u, v, w): (u32, u32, u64), out: &mut Output<'_>) -> Result<(), NodeError> {
        let undirected = self.algorithm == Algorithm::Components;
        self.connect(u, v, w)?;
        if undirected {
            self.connect(v, u, w)?;
        }
        // Every vertex starts as its own label; only the source has a distance at first.
        for x in [u, v] {
            if undirected || x == self.from {
                let start = if undirected { x as u64 } else { 0 };
                self.lower(x, start)?;
            }
        }
        let mut offer = |from: u32, to: u32| -> Result<(), NodeError> {
            if let Some(value) = self.value(from)? {
                let p = proposal(to, value.saturating_add(w));
                out.emit_keyed(&p[..4], p)?;
            }
            Ok(())
        };
        offer(u, v)?;
        if undirected {
            offer(v, u)?;
        }
        Ok(())
    }
}

#[node]
impl Node for Propagate {
    type Config = PropagateConfig;

    fn init(config: PropagateConfig) -> Result<Self, NodeError> {
        Ok(Propagate {
            algorithm: config.algorithm,
            from: config.from,
            store: Store::open(&config.store)?,
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        match msg.input() {
            "updates" => {
                let (v, value) = read_proposal(msg.payload())?;
                if self.lower(v, value)? {
                    self.spread(v, value, out)?;
                }
                Ok(())
            }
            _ => self.edge(read_edge(msg.text()?)?, out),
        }
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        if flowhost_sdk::replica().index != 0 {
            return Ok(());
        }
        for entry in self.store.scan(b"v", u32::MAX)? {
            let v = u32::from_le_bytes(
                entry.0[1..]
                    .try_into()
                    .map_err(|_| NodeError::fatal("a value key is 5 bytes"))?,
            );
            let value = u64::from_le_bytes(
                entry.1[..]
                    .try_into()
                    .map_err(|_| NodeError::fatal("a value is 8 bytes"))?,
            );
            out.emit_to("result", format!("{v} {value}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::testing::{Harness, TestMessage, clear_stores};

    /// Runs the node as the loop would: edges in, then every proposal fed back until none.
    fn run(algorithm: &str, edges: &[&str]) -> Vec<String> {
        clear_stores();
        let config = serde_json::json!({"algorithm": algorithm, "store": "g"});
        let mut h =
            Harness::<Propagate>::with_ports(config, &["edges", "updates"], &["out", "result"]).unwrap();
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let first = h
            .process(edges.iter().map(|e| TestMessage::new(*e).input("edges")))
            .unwrap();
        pending.extend(first.on("out").iter().map(|r| r.payload.clone()));
        while !pending.is_empty() {
            let batch: Vec<TestMessage> = pending
                .drain(..)
                .map(|p| TestMessage::new(p).input("updates"))
                .collect();
            let out = h.process(batch).unwrap();
            pending.extend(out.on("out").iter().map(|r| r.payload.clone()));
        }
        let mut result = h.finish().unwrap().texts();
        result.sort();
        result
    }

    #[test]
    fn components_take_their_least_vertex() {
        assert_eq!(
            run("components", &["3 4", "1 2", "4 9", "2 7"]),
            ["1 1", "2 1", "3 3", "4 3", "7 1", "9 3"]
        );
    }

    #[test]
    fn shortest_paths_take_the_lightest_route() {
        let got = run("shortest-paths", &["0 1 5", "0 2 1", "2 1 1", "1 3 1", "4 0 1"]);
        assert_eq!(got, ["0 0", "1 2", "2 1", "3 3"]);
    }
}
