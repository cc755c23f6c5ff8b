//! Host-side stores: state that outlives the instance (a trap or a module swap keeps it)
//! and is shared by every replica on the host. Open a store the manifest grants this node
//! (`state = { counts = "rw" }`), then read and write by key; every operation is atomic
//! per key. Batch what you can (`get_many`, `set_many`, `incr_many`): each call crosses the
//! wasm boundary once.
//!
//! Flush a batch's writes from `Node::end_batch`: if a batch fails part-way and the host
//! re-runs it message by message, writes made per message would be made twice.
//!
//! Natively (in unit tests) stores are plain in-memory maps of the test thread, see
//! [`crate::testing::store`].
//!
//! ```
//! use flowhost_sdk::state::Store;
//! let counts = Store::open("counts").unwrap();
//! assert_eq!(counts.incr(b"apples", 2).unwrap(), 2);
//! assert_eq!(counts.incr_many(&[("apples", 1), ("pears", 5)]).unwrap(), [3, 5]);
//! ```

/// A key and its value, as `scan` returns them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A handle on a granted store.
#[derive(Debug, Clone)]
pub struct Store {
    #[cfg(target_arch = "wasm32")]
    handle: u32,
    #[cfg(not(target_arch = "wasm32"))]
    name: String,
}

/// Increments gathered for one `incr_many` call, in the flat form it crosses the boundary
/// in: add to it while processing a batch, `flush` it at the end (`Node::end_batch`).
/// Buffers are kept between flushes, so a steady node allocates nothing per key.
#[derive(Debug, Default, Clone)]
pub struct IncrBatch {
    keys: Vec<u8>,
    lengths: Vec<u32>,
    deltas: Vec<i64>,
}

impl IncrBatch {
    /// Adds `delta` to `key` when flushed (a key may appear more than once).
    pub fn add(&mut self, key: &[u8], delta: i64) {
        self.keys.extend_from_slice(key);
        self.lengths.push(key.len() as u32);
        self.deltas.push(delta);
    }

    /// Number of increments gathered.
    pub fn len(&self) -> usize {
        self.deltas.len()
    }

    /// Whether nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// Applies every increment to `store` in one call; the new values, in order.
    pub fn flush(&mut self, store: &Store) -> Result<Vec<i64>, crate::NodeError> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let result = store.incr_flat(&self.keys, &self.lengths, &self.deltas);
        self.keys.clear();
        self.lengths.clear();
        self.deltas.clear();
        result
    }
}

/// Splits `keys` (concatenated) by `lengths`, the flat form `incr-many` uses; `None` if
/// the lengths do not add up to the bytes.
pub fn split_flat<'k>(keys: &'k [u8], lengths: &[u32]) -> Option<Vec<&'k [u8]>> {
    let mut start = 0usize;
    let parts = lengths
        .iter()
        .map(|&n| {
            let part = keys.get(start..start.checked_add(n as usize)?)?;
            start += n as usize;
            Some(part)
        })
        .collect::<Option<Vec<_>>>()?;
    (start == keys.len()).then_some(parts)
}

/// Reads a counter value (8-byte little-endian `i64`).
pub fn counter(value: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(value.try_into().ok()?))
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Store;
    use crate::__private::bindings::flowhost::node::{state as wit, types};
    use crate::NodeError;

    /// A host's error as the SDK's.
    pub(crate) fn err(e: types::NodeError) -> NodeError {
        let kind = match e.kind {
            types::ErrorKind::InvalidInput => crate::ErrorKind::InvalidInput,
            types::ErrorKind::Retryable => crate::ErrorKind::Retryable,
            types::ErrorKind::Fatal => crate::ErrorKind::Fatal,
        };
        NodeError {
            kind,
            message: e.message,
        }
    }

    impl Store {
        /// Opens a store granted to this node.
        pub fn open(name: &str) -> Result<Store, NodeError> {
            wit::open(name).map(|handle| Store { handle }).map_err(err)
        }
        /// The value at `key`.
        pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, NodeError> {
            wit::get(self.handle, key).map_err(err)
        }
        /// The values at `keys`, in one call.
        pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, NodeError> {
            let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
            wit::get_many(self.handle, &keys).map_err(err)
        }
        /// Sets `key` to `value`.
        pub fn set(&self, key: &[u8], value: &[u8]) -> Result<(), NodeError> {
            wit::set(self.handle, key, value).map_err(err)
        }
        /// Sets many keys in one call.
        pub fn set_many(&self, entries: &[(&[u8], &[u8])]) -> Result<(), NodeError> {
            let entries: Vec<(Vec<u8>, Vec<u8>)> =
                entries.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            wit::set_many(self.handle, &entries).map_err(err)
        }
        /// Removes `key`; whether it was there.
        pub fn delete(&self, key: &[u8]) -> Result<bool, NodeError> {
            wit::delete(self.handle, key).map_err(err)
        }
        /// Adds `delta` to the counter at `key` (absent: 0); the new value.
        pub fn incr(&self, key: &[u8], delta: i64) -> Result<i64, NodeError> {
            wit::incr(self.handle, key, delta).map_err(err)
        }
        /// `incr` for many keys in one call; the new values in order.
        pub fn incr_many<K: AsRef<[u8]>>(&self, deltas: &[(K, i64)]) -> Result<Vec<i64>, NodeError> {
            let mut batch = super::IncrBatch::default();
            deltas.iter().for_each(|(k, d)| batch.add(k.as_ref(), *d));
            batch.flush(self)
        }

        pub(super) fn incr_flat(
            &self,
            keys: &[u8],
            lengths: &[u32],
            deltas: &[i64],
        ) -> Result<Vec<i64>, NodeError> {
            wit::incr_many(self.handle, keys, lengths, deltas).map_err(err)
        }
        /// Sets `key` to `replacement` (`None`: deletes) if it holds `expected` (`None`: absent).
        pub fn compare_and_swap(
            &self,
            key: &[u8],
            expected: Option<&[u8]>,
            replacement: Option<&[u8]>,
        ) -> Result<bool, NodeError> {
            wit::compare_and_swap(self.handle, key, expected, replacement).map_err(err)
        }
        /// Entries whose key starts with `prefix`, in key order, at most `limit`.
        pub fn scan(&self, prefix: &[u8], limit: u32) -> Result<Vec<super::Entry>, NodeError> {
            wit::scan(self.handle, prefix, limit).map_err(err)
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashMap};

    use super::{Store, counter};
    use crate::NodeError;

    type Map = BTreeMap<Vec<u8>, Vec<u8>>;

    thread_local! {
        static STORES: RefCell<HashMap<String, Map>> = RefCell::default();
    }

    pub(crate) fn with<R>(name: &str, f: impl FnOnce(&mut Map) -> R) -> R {
        STORES.with_borrow_mut(|s| f(s.entry(name.to_owned()).or_default()))
    }

    pub(crate) fn clear() {
        STORES.with_borrow_mut(HashMap::clear);
    }

    impl Store {
        /// Opens a store granted to this node.
        pub fn open(name: &str) -> Result<Store, NodeError> {
            Ok(Store {
                name: name.to_owned(),
            })
        }
        /// The value at `key`.
        pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, NodeError> {
            Ok(with(&self.name, |m| m.get(key).cloned()))
        }
        /// The values at `keys`, in one call.
        pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, NodeError> {
            keys.iter().map(|k| self.get(k)).collect()
        }
        /// Sets `key` to `value`.
        pub fn set(&self, key: &[u8], value: &[u8]) -> Result<(), NodeError> {
            with(&self.name, |m| m.insert(key.to_vec(), value.to_vec()));
            Ok(())
        }
        /// Sets many keys in one call.
        pub fn set_many(&self, entries: &[(&[u8], &[u8])]) -> Result<(), NodeError> {
            entries.iter().try_for_each(|(k, v)| self.set(k, v))
        }
        /// Removes `key`; whether it was there.
        pub fn delete(&self, key: &[u8]) -> Result<bool, NodeError> {
            Ok(with(&self.name, |m| m.remove(key).is_some()))
        }
        /// Adds `delta` to the counter at `key` (absent: 0); the new value.
        pub fn incr(&self, key: &[u8], delta: i64) -> Result<i64, NodeError> {
            with(&self.name, |m| {
                let slot = m
                    .entry(key.to_vec())
                    .or_insert_with(|| 0i64.to_le_bytes().to_vec());
                let n = counter(slot).ok_or_else(|| {
                    NodeError::invalid_input(format!(
                        "store `{}`: the value at this key is not a counter",
                        self.name
                    ))
                })?;
                let next = n.wrapping_add(delta);
                *slot = next.to_le_bytes().to_vec();
                Ok(next)
            })
        }
        /// `incr` for many keys in one call; the new values in order.
        pub fn incr_many<K: AsRef<[u8]>>(&self, deltas: &[(K, i64)]) -> Result<Vec<i64>, NodeError> {
            deltas.iter().map(|(k, d)| self.incr(k.as_ref(), *d)).collect()
        }

        pub(super) fn incr_flat(
            &self,
            keys: &[u8],
            lengths: &[u32],
            deltas: &[i64],
        ) -> Result<Vec<i64>, NodeError> {
            let keys = super::split_flat(keys, lengths)
                .filter(|k| k.len() == deltas.len())
                .ok_or_else(|| NodeError::fatal("incr-many: key lengths do not match the keys or deltas"))?;
            keys.iter().zip(deltas).map(|(k, &d)| self.incr(k, d)).collect()
        }
        /// Sets `key` to `replacement` (`None`: deletes) if it holds `expected` (`None`: absent).
        pub fn compare_and_swap(
            &self,
            key: &[u8],
            expected: Option<&[u8]>,
            replacement: Option<&[u8]>,
        ) -> Result<bool, NodeError> {
            Ok(with(&self.name, |m| {
                if m.get(key).map(Vec::as_slice) != expected {
                    return false;
                }
                match replacement {
                    Some(v) => m.insert(key.to_vec(), v.to_vec()),
                    None => m.remove(key),
                };
                true
            }))
        }
        /// Entries whose key starts with `prefix`, in key order, at most `limit`.
        pub fn scan(&self, prefix: &[u8], limit: u32) -> Result<Vec<super::Entry>, NodeError> {
            Ok(with(&self.name, |m| {
                m.range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .take(limit as usize)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }))
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub(crate) use imp::err as from_wit;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use imp::{clear as clear_native, with as with_native};

#[cfg(test)]
mod tests {
    use super::split_flat;

    #[test]
    fn flat_keys_split_only_when_the_lengths_add_up() {
        assert_eq!(
            split_flat(b"abcde", &[2, 0, 3]),
            Some(vec![&b"ab"[..], b"", b"cde"])
        );
        assert_eq!(split_flat(b"abcde", &[2, 2]), None, "bytes left over");
        assert_eq!(split_flat(b"abc", &[2, 2]), None, "lengths past the end");
        assert_eq!(split_flat(b"", &[]), Some(vec![]));
    }
}
