//! Host-side state: named stores shared by every replica of every node on this host,
//! reachable by a node only as the manifest grants it.
//!
//! Consistency: each operation is atomic per key (a `DashMap` shard lock), and a write is
//! visible to every replica as soon as the call returns; there are no multi-key
//! transactions. `incr-many` and `set-many` apply key by key, in order. Stores are in
//! memory for now: they survive a trapped instance (state is not in the guest) but not a
//! restart of `flowhost run`.
//!
//! Writes are not yet transactional per batch: when a batch traps and is re-run message by
//! message, writes a node made per message before the trap are made again. Nodes that
//! gather writes and flush them in `end_batch` (as `functions/tally` does) are not affected.

mod host;

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use flowhost_sdk::NodeError;

use crate::manifest::{Access, Graph};

/// One named store: keys and values are bytes; counters are 8-byte little-endian `i64`s.
#[derive(Debug, Default)]
pub struct Store {
    name: String,
    map: DashMap<Vec<u8>, Vec<u8>>,
}

impl Store {
    /// An empty store.
    pub fn new(name: impl Into<String>) -> Self {
        Store {
            name: name.into(),
            map: DashMap::new(),
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).map(|v| v.clone())
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: Vec<u8>, value: Vec<u8>) {
        self.map.insert(key, value);
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&self, key: &[u8]) -> bool {
        self.map.remove(key).is_some()
    }

    /// Adds `delta` to the counter at `key` (absent: 0) and returns the new value.
    pub fn incr(&self, key: &[u8], delta: i64) -> Result<i64, NodeError> {
        // Existing counters (the hot case) are updated without allocating a key.
        let mut entry = match self.map.get_mut(key) {
            Some(entry) => entry,
            None => self
                .map
                .entry(key.to_vec())
                .or_insert_with(|| 0i64.to_le_bytes().to_vec()),
        };
        let current: [u8; 8] = entry.as_slice().try_into().map_err(|_| {
            NodeError::invalid_input(format!(
                "store `{}`: the value at this key is not a counter ({} bytes, not 8)",
                self.name,
                entry.len()
            ))
        })?;
        let next = i64::from_le_bytes(current).wrapping_add(delta);
        *entry = next.to_le_bytes().to_vec();
        Ok(next)
    }

    /// Replaces the value at `key` with `replacement` (`None`: removes it) if it is
    /// `expected` (`None`: absent). Whether it did.
    pub fn compare_and_swap(
        &self,
        key: Vec<u8>,
        expected: Option<&[u8]>,
        replacement: Option<Vec<u8>>,
    ) -> bool {
        match (self.map.entry(key), expected) {
            (Entry::Occupied(e), Some(x)) if e.get().as_slice() == x => {
                match replacement {
                    Some(v) => {
                        e.replace_entry(v);
                    }
                    None => {
                        e.remove();
                    }
                }
                true
            }
            (Entry::Vacant(e), None) => {
                if let Some(v) = replacement {
                    e.insert(v);
                }
                true
            }
            _ => false,
        }
    }

    /// Entries whose key starts with `prefix`, in key order, at most `limit`.
    pub fn scan(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let matching: BTreeMap<Vec<u8>, Vec<u8>> = self
            .map
            .iter()
            .filter(|e| e.key().starts_with(prefix))
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        matching.into_iter().take(limit).collect()
    }
}

/// Every store a graph declares.
#[derive(Debug, Default, Clone)]
pub struct Stores {
    by_name: BTreeMap<String, Arc<Store>>,
}

impl Stores {
    /// Empty stores for each `[stores.<name>]` of `graph`.
    pub fn for_graph(graph: &Graph) -> Self {
        Self::new(graph.stores.iter().cloned())
    }

    /// Empty stores with these names.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Stores {
            by_name: names
                .into_iter()
                .map(|n| (n.clone(), Arc::new(Store::new(n))))
                .collect(),
        }
    }

    /// A store by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Store>> {
        self.by_name.get(name)
    }

    /// All stores, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Store>> {
        self.by_name.values()
    }

    /// The grants of a node, resolved to stores (validation made sure they exist).
    pub fn grants(&self, grants: &[(String, Access)]) -> Vec<Grant> {
        grants
            .iter()
            .filter_map(|(name, access)| {
                Some(Grant {
                    store: self.by_name.get(name)?.clone(),
                    access: *access,
                })
            })
            .collect()
    }
}

/// A store a node may use, and how.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The store.
    pub store: Arc<Store>,
    /// Read, or read and write.
    pub access: Access,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_cas_and_scan() {
        let s = Store::new("t");
        assert_eq!(s.incr(b"a", 2).unwrap(), 2);
        assert_eq!(s.incr(b"a", -5).unwrap(), -3);
        s.set(b"text".to_vec(), b"hello".to_vec());
        assert!(s.incr(b"text", 1).unwrap_err().message.contains("not a counter"));
        assert!(s.compare_and_swap(b"k".to_vec(), None, Some(b"v1".to_vec())));
        assert!(!s.compare_and_swap(b"k".to_vec(), None, Some(b"v2".to_vec())));
        assert!(s.compare_and_swap(b"k".to_vec(), Some(b"v1"), Some(b"v2".to_vec())));
        assert!(s.compare_and_swap(b"k".to_vec(), Some(b"v2"), None));
        assert_eq!(s.get(b"k"), None);
        s.set(b"p/2".to_vec(), b"2".to_vec());
        s.set(b"p/1".to_vec(), b"1".to_vec());
        s.set(b"q/1".to_vec(), b"x".to_vec());
        let keys: Vec<Vec<u8>> = s.scan(b"p/", 10).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [b"p/1".to_vec(), b"p/2".to_vec()]);
        assert_eq!(s.scan(b"p/", 1).len(), 1);
    }

    #[test]
    fn concurrent_increments_are_exact() {
        let s = Arc::new(Store::new("t"));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let s = s.clone();
                scope.spawn(move || {
                    for i in 0..10_000u32 {
                        s.incr(format!("k{}", i % 7).as_bytes(), 1).unwrap();
                    }
                });
            }
        });
        let total: i64 = (0..7)
            .map(|k| i64::from_le_bytes(s.get(format!("k{k}").as_bytes()).unwrap().try_into().unwrap()))
            .sum();
        assert_eq!(total, 40_000);
    }
}
