//! Host-side state: named stores shared by every replica of every node on this host,
//! reachable by a node only as the manifest grants it.
//!
//! Consistency: each operation is atomic per key (a `DashMap` shard lock), and a write is
//! visible to every replica as soon as the call returns; there are no multi-key
//! transactions. `incr-many` and `set-many` apply key by key, in order.
//!
//! A call into a node is all or nothing for state too: the writes of a call that traps or
//! fails as a whole are undone (see [`UndoLog`]) before the batch is retried, so a batch
//! re-run message by message after a trap counts each message once.
//!
//! Durable stores (`durability = "durable"`) are checkpointed with the sources' positions
//! (see [`durable`]): after a crash the next run restores the last checkpoint and resumes
//! the sources from there. Keys of a store with `ttl_ms` expire that long after their last
//! write (wall-clock time); expired keys read as absent and are swept at checkpoints.

pub mod durable;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use flowhost_sdk::NodeError;

use crate::clock::now_millis;
use crate::manifest::{Access, Durability, Graph, StoreLimits, StoreSpec};

/// A value with its expiry (milliseconds since the epoch; `i64::MAX`: never), and whether
/// it changed since the last checkpoint.
#[derive(Debug)]
struct Stored {
    value: Vec<u8>,
    expires: i64,
    dirty: bool,
}

/// A value and when it expires (milliseconds since the epoch; `i64::MAX`: never).
pub type Held = (Vec<u8>, i64);

/// A key's new state: its value and expiry, or gone.
pub type Change = (Vec<u8>, Option<Held>);

/// A store's entries, in key order.
pub type Entries = BTreeMap<Vec<u8>, Held>;

/// One named store: keys and values are bytes; counters are 8-byte little-endian `i64`s.
#[derive(Debug)]
pub struct Store {
    name: String,
    map: DashMap<Vec<u8>, Stored>,
    ttl_ms: Option<i64>,
    /// Durable stores: keys written since the last checkpoint (each once per checkpoint,
    /// guarded by its slot's `dirty` flag; deleted keys every time).
    changed: Option<Mutex<Vec<Vec<u8>>>>,
    limits: StoreLimits,
    /// Bytes of keys and values held, and keys (expired ones not yet swept included):
    /// kept here because `DashMap::len` visits every shard.
    bytes: AtomicI64,
    keys: AtomicI64,
}

impl Store {
    /// An empty in-memory store without expiry.
    pub fn new(name: impl Into<String>) -> Self {
        Self::from_spec(&StoreSpec::memory(name))
    }

    /// An empty store as declared.
    pub fn from_spec(spec: &StoreSpec) -> Self {
        Store {
            name: spec.name.clone(),
            map: DashMap::new(),
            ttl_ms: spec.ttl.map(|t| t.as_millis().min(i64::MAX as u128) as i64),
            changed: (spec.durability == Durability::Durable).then(Mutex::default),
            limits: spec.limits,
            bytes: AtomicI64::new(0),
            keys: AtomicI64::new(0),
        }
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed).max(0) as u64
    }

    fn grew(&self, by: usize) {
        self.bytes.fetch_add(by as i64, Ordering::Relaxed);
    }

    fn shrank(&self, by: usize) {
        self.bytes.fetch_sub(by as i64, Ordering::Relaxed);
    }

    /// A new entry of `bytes` (key and value).
    fn added(&self, bytes: usize) {
        self.grew(bytes);
        self.keys.fetch_add(1, Ordering::Relaxed);
    }

    /// An entry of `bytes` gone.
    fn removed(&self, bytes: usize) {
        self.shrank(bytes);
        self.keys.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether a node may write a value of `value_len` bytes at `key`: an
    /// `invalid-input` error naming the limit if not. (Replicas checking at once may
    /// overshoot `max_keys`/`max_bytes` by what they write together; never by more.)
    pub fn admit(&self, key: &[u8], value_len: usize) -> Result<(), NodeError> {
        let l = &self.limits;
        let refuse = |what: String| Err(NodeError::invalid_input(format!("store `{}`: {what}", self.name)));
        if key.len() as u64 > l.max_key_bytes {
            return refuse(format!(
                "a key of {} bytes is over max_key_bytes = {}",
                key.len(),
                l.max_key_bytes
            ));
        }
        if value_len as u64 > l.max_value_bytes {
            return refuse(format!(
                "a value of {value_len} bytes is over max_value_bytes = {}",
                l.max_value_bytes
            ));
        }
        let held = self.bytes();
        let keys = self.keys.load(Ordering::Relaxed).max(0) as u64;
        let full_keys = keys >= l.max_keys;
        if !full_keys && held + (key.len() + value_len) as u64 <= l.max_bytes {
            return Ok(());
        }
        // Near a limit: what the write adds depends on what the key holds now.
        match self.map.get(key).map(|s| s.value.len()) {
            Some(old) if held + value_len as u64 <= l.max_bytes + old as u64 => Ok(()),
            Some(_) => refuse(format!(
                "full: it holds {held} bytes, max_bytes = {}",
                l.max_bytes
            )),
            None if full_keys => refuse(format!("full: it holds {keys} keys, max_keys = {}", l.max_keys)),
            None => refuse(format!(
                "full: it holds {held} bytes, max_bytes = {}",
                l.max_bytes
            )),
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the store is checkpointed.
    pub fn is_durable(&self) -> bool {
        self.changed.is_some()
    }

    /// Number of keys, counting those that expired since the last sweep (cheap: status
    /// reads it several times a second).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store has no keys (expired ones not yet swept included).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The current time, if keys of this store expire (else 0: nothing is ever expired).
    fn now(&self) -> i64 {
        if self.ttl_ms.is_some() { now_millis() } else { 0 }
    }

    /// When a key written now expires.
    fn expiry(&self, now: i64) -> i64 {
        self.ttl_ms.map_or(i64::MAX, |ttl| now.saturating_add(ttl))
    }

    /// Marks a written slot: new expiry, and (durable stores) changed since the checkpoint.
    fn touch(&self, key: &[u8], slot: &mut Stored, now: i64) {
        slot.expires = self.expiry(now);
        if let Some(changed) = &self.changed
            && !slot.dirty
        {
            slot.dirty = true;
            changed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(key.to_vec());
        }
    }

    fn new_slot(&self, key: &[u8], value: Vec<u8>, now: i64) -> Stored {
        let mut slot = Stored {
            value,
            expires: 0,
            dirty: false,
        };
        self.touch(key, &mut slot, now);
        slot
    }

    fn deleted(&self, key: Vec<u8>) {
        if let Some(changed) = &self.changed {
            changed.lock().unwrap_or_else(|e| e.into_inner()).push(key);
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let now = self.now();
        self.map
            .get(key)
            .filter(|s| s.expires > now)
            .map(|s| s.value.clone())
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn set(&self, key: Vec<u8>, value: Vec<u8>) -> Option<Vec<u8>> {
        let now = self.now();
        match self.map.entry(key) {
            Entry::Occupied(mut e) => {
                let key = e.key().clone();
                let slot = e.get_mut();
                let live = slot.expires > now;
                self.grew(value.len());
                let old = std::mem::replace(&mut slot.value, value);
                self.shrank(old.len());
                self.touch(&key, slot, now);
                live.then_some(old)
            }
            Entry::Vacant(e) => {
                self.added(e.key().len() + value.len());
                let slot = self.new_slot(e.key(), value, now);
                e.insert(slot);
                None
            }
        }
    }

    /// Removes `key`; returns the value it had.
    pub fn delete(&self, key: &[u8]) -> Option<Vec<u8>> {
        let now = self.now();
        let (key, slot) = self.map.remove(key)?;
        self.removed(key.len() + slot.value.len());
        self.deleted(key);
        (slot.expires > now).then_some(slot.value)
    }

    /// Adds `delta` to the counter at `key` (absent: 0) and returns the new value.
    pub fn incr(&self, key: &[u8], delta: i64) -> Result<i64, NodeError> {
        self.incr_created(key, delta).map(|(next, _)| next)
    }

    /// [`Store::incr`], and whether the counter was absent before.
    pub fn incr_created(&self, key: &[u8], delta: i64) -> Result<(i64, bool), NodeError> {
        let now = self.now();
        // Existing counters (the hot case) are updated without allocating a key.
        let mut created = false;
        let mut slot = match self.map.get_mut(key) {
            Some(slot) => slot,
            None => {
                self.admit(key, 8)?;
                self.map.entry(key.to_vec()).or_insert_with(|| {
                    created = true;
                    self.added(key.len() + 8);
                    self.new_slot(key, 0i64.to_le_bytes().to_vec(), now)
                })
            }
        };
        if slot.expires <= now {
            created = true;
            self.grew(8);
            self.shrank(std::mem::replace(&mut slot.value, 0i64.to_le_bytes().to_vec()).len());
        }
        let current: [u8; 8] = slot.value.as_slice().try_into().map_err(|_| {
            NodeError::invalid_input(format!(
                "store `{}`: the value at this key is not a counter ({} bytes, not 8)",
                self.name,
                slot.value.len()
            ))
        })?;
        let next = i64::from_le_bytes(current).wrapping_add(delta);
        slot.value.copy_from_slice(&next.to_le_bytes());
        self.touch(key, &mut slot, now);
        Ok((next, created))
    }

    /// Takes back an increment: subtracts `delta`, and removes the counter if the
    /// increment created it and nothing else has changed it since.
    fn unincr(&self, key: &[u8], delta: i64, created: bool) {
        if let Ok(0) = self.incr(key, delta.wrapping_neg())
            && created
        {
            self.compare_and_swap(key.to_vec(), Some(&0i64.to_le_bytes()), None);
        }
    }

    /// Replaces the value at `key` with `replacement` (`None`: removes it) if it is
    /// `expected` (`None`: absent). Whether it did.
    pub fn compare_and_swap(
        &self,
        key: Vec<u8>,
        expected: Option<&[u8]>,
        replacement: Option<Vec<u8>>,
    ) -> bool {
        let now = self.now();
        match self.map.entry(key) {
            Entry::Occupied(mut e) => {
                let live = e.get().expires > now;
                let current = live.then_some(e.get().value.as_slice());
                if current != expected {
                    return false;
                }
                match replacement {
                    Some(v) => {
                        let key = e.key().clone();
                        let slot = e.get_mut();
                        self.grew(v.len());
                        self.shrank(std::mem::replace(&mut slot.value, v).len());
                        self.touch(&key, slot, now);
                    }
                    None => {
                        let (key, slot) = e.remove_entry();
                        self.removed(key.len() + slot.value.len());
                        self.deleted(key);
                    }
                }
                true
            }
            Entry::Vacant(e) => {
                if expected.is_some() {
                    return false;
                }
                if let Some(v) = replacement {
                    self.added(e.key().len() + v.len());
                    let slot = self.new_slot(e.key(), v, now);
                    e.insert(slot);
                }
                true
            }
        }
    }

    /// Live entries whose key starts with `prefix`, in key order, at most `limit`.
    pub fn scan(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let now = self.now();
        let matching: BTreeMap<Vec<u8>, Vec<u8>> = self
            .map
            .iter()
            .filter(|e| e.key().starts_with(prefix) && e.expires > now)
            .map(|e| (e.key().clone(), e.value.clone()))
            .collect();
        matching.into_iter().take(limit).collect()
    }

    /// Drops expired keys.
    pub fn sweep(&self) {
        if self.ttl_ms.is_some() {
            let now = now_millis();
            self.map.retain(|k, s| {
                let live = s.expires > now;
                if !live {
                    self.removed(k.len() + s.value.len());
                }
                live
            });
        }
    }

    /// What changed since the last call: each key with its value and expiry, or `None`
    /// if it is gone. Called while no node runs (at a checkpoint).
    pub fn take_changes(&self) -> Vec<Change> {
        let Some(changed) = &self.changed else {
            return Vec::new();
        };
        let mut keys = std::mem::take(&mut *changed.lock().unwrap_or_else(|e| e.into_inner()));
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .map(|key| {
                let now = self.map.get_mut(&key).map(|mut slot| {
                    slot.dirty = false;
                    (slot.value.clone(), slot.expires)
                });
                (key, now)
            })
            .collect()
    }

    /// Every live entry with its expiry, in key order.
    pub fn entries(&self) -> Entries {
        let now = self.now();
        self.map
            .iter()
            .filter(|e| e.expires > now)
            .map(|e| (e.key().clone(), (e.value.clone(), e.expires)))
            .collect()
    }

    /// Drops `key` because another process deleted it (not a change of its own).
    pub fn forget(&self, key: &[u8]) {
        if let Some((key, slot)) = self.map.remove(key) {
            self.removed(key.len() + slot.value.len());
        }
    }

    /// Puts back an entry from a checkpoint (not a change of its own).
    pub fn restore(&self, key: Vec<u8>, value: Vec<u8>, expires: i64) {
        let key_len = key.len();
        self.added(key_len + value.len());
        let slot = Stored {
            value,
            expires,
            dirty: false,
        };
        if let Some(old) = self.map.insert(key, slot) {
            self.removed(key_len + old.value.len());
        }
    }
}

/// How to take back the writes of a call into a node that trapped or failed as a whole.
///
/// Undoing never clobbers another replica's later write: counters are decremented by what
/// was added, and other values are put back only if they still hold what this call wrote.
#[derive(Debug, Default)]
pub struct UndoLog {
    steps: Vec<Undo>,
}

#[derive(Debug)]
enum Undo {
    Incr {
        store: Arc<Store>,
        key: Vec<u8>,
        delta: i64,
        created: bool,
    },
    /// Keys packed as in `incr-many`.
    IncrMany {
        store: Arc<Store>,
        keys: Vec<u8>,
        lengths: Vec<u32>,
        deltas: Vec<i64>,
        created: Vec<bool>,
    },
    Restore {
        store: Arc<Store>,
        key: Vec<u8>,
        written: Option<Vec<u8>>,
        previous: Option<Vec<u8>>,
    },
}

impl UndoLog {
    /// Forgets the steps (the call they belong to succeeded).
    pub fn clear(&mut self) {
        self.steps.clear();
    }

    /// Whether there is nothing to undo.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub(crate) fn incr(&mut self, store: &Arc<Store>, key: Vec<u8>, delta: i64, created: bool) {
        let store = store.clone();
        self.steps.push(Undo::Incr {
            store,
            key,
            delta,
            created,
        });
    }

    pub(crate) fn incr_many(
        &mut self,
        store: &Arc<Store>,
        (keys, lengths): (Vec<u8>, Vec<u32>),
        deltas: Vec<i64>,
        created: Vec<bool>,
    ) {
        let store = store.clone();
        self.steps.push(Undo::IncrMany {
            store,
            keys,
            lengths,
            deltas,
            created,
        });
    }

    pub(crate) fn restore(
        &mut self,
        store: &Arc<Store>,
        key: Vec<u8>,
        written: Option<Vec<u8>>,
        previous: Option<Vec<u8>>,
    ) {
        if written != previous {
            let store = store.clone();
            self.steps.push(Undo::Restore {
                store,
                key,
                written,
                previous,
            });
        }
    }

    /// Undoes every step, last first.
    pub fn rollback(&mut self) {
        for step in self.steps.drain(..).rev() {
            match step {
                Undo::Incr {
                    store,
                    key,
                    delta,
                    created,
                } => store.unincr(&key, delta, created),
                Undo::IncrMany {
                    store,
                    keys,
                    lengths,
                    deltas,
                    created,
                } => {
                    let keys = flowhost_sdk::state::split_flat(&keys, &lengths).unwrap_or_default();
                    for ((key, delta), created) in keys.iter().zip(deltas).zip(created).rev() {
                        store.unincr(key, delta, created);
                    }
                }
                Undo::Restore {
                    store,
                    key,
                    written,
                    previous,
                } => {
                    store.compare_and_swap(key, written.as_deref(), previous);
                }
            }
        }
    }
}

/// Every store a graph declares.
#[derive(Debug, Default, Clone)]
pub struct Stores {
    by_name: BTreeMap<String, Arc<Store>>,
}

/// The store that holds every node's timers (see `topology::timers`): durable when the
/// graph is, not grantable, not listed with the manifest's stores.
pub const TIMERS: &str = "flowhost.timers";

impl Stores {
    /// Empty stores for each `[stores.<name>]` of `graph`, and its timer store.
    pub fn for_graph(graph: &Graph) -> Self {
        let timers = StoreSpec {
            durability: if graph.is_durable() {
                Durability::Durable
            } else {
                Durability::Memory
            },
            limits: StoreLimits {
                max_keys: u64::MAX,
                max_bytes: u64::MAX,
                ..StoreLimits::default()
            },
            ..StoreSpec::memory(TIMERS)
        };
        let mut specs = graph.stores.clone();
        specs.push(timers);
        Self::from_specs(&specs)
    }

    /// These stores, and an empty one for each store of `graph` they lack (a graph changed
    /// while it runs keeps the stores it had).
    pub fn with(&self, graph: &Graph) -> Stores {
        let mut by_name = self.by_name.clone();
        for (name, store) in Stores::for_graph(graph).by_name {
            by_name.entry(name).or_insert(store);
        }
        Stores { by_name }
    }

    /// The timer store.
    pub fn timers(&self) -> Arc<Store> {
        self.by_name
            .get(TIMERS)
            .cloned()
            .unwrap_or_else(|| Arc::new(Store::new(TIMERS)))
    }

    /// Empty in-memory stores with these names.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self::from_specs(&names.into_iter().map(StoreSpec::memory).collect::<Vec<_>>())
    }

    /// Empty stores as declared.
    pub fn from_specs(specs: &[StoreSpec]) -> Self {
        Stores {
            by_name: specs
                .iter()
                .map(|s| (s.name.clone(), Arc::new(Store::from_spec(s))))
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
    fn bytes_are_accounted_and_limits_refuse_what_does_not_fit() {
        let spec = StoreSpec {
            limits: StoreLimits {
                max_key_bytes: 4,
                max_value_bytes: 8,
                max_keys: 3,
                max_bytes: 20,
            },
            ..StoreSpec::memory("l")
        };
        let s = Store::from_spec(&spec);
        s.set(b"ab".to_vec(), b"123".to_vec());
        assert_eq!(s.bytes(), 5);
        s.set(b"ab".to_vec(), b"1234567".to_vec());
        assert_eq!(s.bytes(), 9, "a replaced value counts once");
        s.incr(b"c", 1).unwrap();
        assert_eq!(s.bytes(), 18);
        let refused = |r: Result<(), NodeError>| r.unwrap_err().message;
        assert_eq!(
            refused(s.admit(b"toolong", 1)),
            "store `l`: a key of 7 bytes is over max_key_bytes = 4"
        );
        assert_eq!(
            refused(s.admit(b"ab", 9)),
            "store `l`: a value of 9 bytes is over max_value_bytes = 8"
        );
        assert_eq!(
            refused(s.admit(b"d", 2)),
            "store `l`: full: it holds 18 bytes, max_bytes = 20"
        );
        s.admit(b"ab", 8).expect("replacing 7 bytes by 8: 19 of 20");
        s.admit(b"d", 1).expect("exactly 20");
        s.set(b"d".to_vec(), b"x".to_vec());
        assert_eq!(
            refused(s.admit(b"e", 0)),
            "store `l`: full: it holds 3 keys, max_keys = 3"
        );
        assert!(s.incr(b"e", 1).unwrap_err().message.contains("max_keys = 3"));
        assert!(s.compare_and_swap(b"c".to_vec(), Some(&1i64.to_le_bytes()), None));
        assert_eq!(s.bytes(), 11);
        s.delete(b"ab");
        s.forget(b"d");
        assert_eq!(s.bytes(), 0);
    }

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
        assert_eq!(s.set(b"k".to_vec(), b"v3".to_vec()), None);
        assert_eq!(s.set(b"k".to_vec(), b"v4".to_vec()), Some(b"v3".to_vec()));
        assert_eq!(s.delete(b"k"), Some(b"v4".to_vec()));
        assert_eq!(s.delete(b"k"), None);
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

    fn durable(name: &str, ttl: Option<u64>) -> Arc<Store> {
        Arc::new(Store::from_spec(&StoreSpec {
            name: name.into(),
            durability: Durability::Durable,
            ttl: ttl.map(std::time::Duration::from_millis),
            ..StoreSpec::memory(name)
        }))
    }

    #[test]
    fn changes_name_each_written_key_once_and_deletions() {
        let s = durable("d", None);
        for _ in 0..3 {
            s.incr(b"hot", 1).unwrap();
        }
        s.set(b"gone".to_vec(), b"x".to_vec());
        s.delete(b"gone");
        let changes = s.take_changes();
        assert_eq!(
            changes,
            [
                (b"gone".to_vec(), None),
                (b"hot".to_vec(), Some((3i64.to_le_bytes().to_vec(), i64::MAX)))
            ]
        );
        assert!(s.take_changes().is_empty(), "nothing changed since");
        s.incr(b"hot", 1).unwrap();
        assert_eq!(s.take_changes().len(), 1);
        assert!(Store::new("m").take_changes().is_empty());
    }

    #[test]
    fn expired_keys_read_as_absent_and_are_swept() {
        let s = durable("t", Some(1));
        s.set(b"a".to_vec(), b"1".to_vec());
        s.incr(b"n", 5).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(s.get(b"a"), None);
        assert!(s.scan(b"", 10).is_empty());
        assert_eq!(s.incr(b"n", 1).unwrap(), 1, "an expired counter starts again");
        assert!(s.compare_and_swap(b"a".to_vec(), None, Some(b"2".to_vec())));
        std::thread::sleep(std::time::Duration::from_millis(5));
        s.sweep();
        assert_eq!(s.map.len(), 0);
    }

    #[test]
    fn rollback_undoes_a_call_without_clobbering_other_writers() {
        let s = Arc::new(Store::new("u"));
        s.set(b"v".to_vec(), b"before".to_vec());
        let mut undo = UndoLog::default();
        let (_, created) = s.incr_created(b"c", 5).unwrap();
        undo.incr(&s, b"c".to_vec(), 5, created);
        s.incr(b"made", 1).unwrap();
        undo.incr(&s, b"made".to_vec(), 1, true);
        let previous = s.set(b"v".to_vec(), b"mine".to_vec());
        undo.restore(&s, b"v".to_vec(), Some(b"mine".to_vec()), previous);
        s.set(b"w".to_vec(), b"mine".to_vec());
        undo.restore(&s, b"w".to_vec(), Some(b"mine".to_vec()), None);
        // Another replica writes after this call.
        s.incr(b"c", 100).unwrap();
        s.set(b"w".to_vec(), b"theirs".to_vec());
        undo.rollback();
        assert_eq!(s.get(b"c"), Some(100i64.to_le_bytes().to_vec()));
        assert_eq!(s.get(b"made"), None, "a counter the call created is gone");
        assert_eq!(s.get(b"v"), Some(b"before".to_vec()));
        assert_eq!(s.get(b"w"), Some(b"theirs".to_vec()));
        assert!(undo.is_empty());
    }
}
