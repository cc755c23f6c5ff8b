//! The WIT `state` interface over the host's stores ([`crate::state`]): handles index
//! the node's grants, so a node can only ever reach what it was granted.

use flowhost_sdk::NodeError;

use std::sync::Arc;

use super::HostState;
use super::bindings::flowhost::node::{state, types};
use crate::manifest::Access;
use crate::state::{Grant, Store};

type Res<T> = Result<T, types::NodeError>;

fn fatal(message: String) -> types::NodeError {
    types::NodeError {
        kind: types::ErrorKind::Fatal,
        message,
    }
}

fn to_wit(e: NodeError) -> types::NodeError {
    let kind = match e.kind {
        flowhost_sdk::ErrorKind::InvalidInput => types::ErrorKind::InvalidInput,
        flowhost_sdk::ErrorKind::Retryable => types::ErrorKind::Retryable,
        flowhost_sdk::ErrorKind::Fatal => types::ErrorKind::Fatal,
    };
    types::NodeError {
        kind,
        message: e.message,
    }
}

impl HostState {
    fn grant(&self, handle: u32, write: bool) -> Res<&Grant> {
        let grant = self.grants.get(handle as usize).ok_or_else(|| {
            fatal(format!(
                "node `{}` used a store handle it was never given",
                self.node
            ))
        })?;
        if write && grant.access == Access::Read {
            return Err(fatal(format!(
                "node `{}` may only read store `{}`",
                self.node,
                grant.store.name()
            )));
        }
        Ok(grant)
    }
}

impl HostState {
    fn set_one(&mut self, store: &Arc<Store>, key: Vec<u8>, value: Vec<u8>) -> Res<()> {
        store.admit(&key, value.len()).map_err(to_wit)?;
        let previous = store.set(key.clone(), value.clone());
        self.undo.restore(store, key, Some(value), previous);
        Ok(())
    }
}

impl state::Host for HostState {
    fn open(&mut self, name: String) -> Res<u32> {
        self.grants
            .iter()
            .position(|g| g.store.name() == name)
            .map(|i| i as u32)
            .ok_or_else(|| {
                fatal(format!(
                    "node `{}` is not granted store `{name}` (grant it with `state = {{ {name} = \"rw\" }}`)",
                    self.node
                ))
            })
    }

    fn get(&mut self, store: u32, key: Vec<u8>) -> Res<Option<Vec<u8>>> {
        Ok(self.grant(store, false)?.store.get(&key))
    }

    fn get_many(&mut self, store: u32, keys: Vec<Vec<u8>>) -> Res<Vec<Option<Vec<u8>>>> {
        let store = &self.grant(store, false)?.store;
        Ok(keys.iter().map(|k| store.get(k)).collect())
    }

    fn set(&mut self, store: u32, key: Vec<u8>, value: Vec<u8>) -> Res<()> {
        let store = self.grant(store, true)?.store.clone();
        self.set_one(&store, key, value)
    }

    fn set_many(&mut self, store: u32, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Res<()> {
        let store = self.grant(store, true)?.store.clone();
        for (k, v) in entries {
            self.set_one(&store, k, v)?;
        }
        Ok(())
    }

    fn delete(&mut self, store: u32, key: Vec<u8>) -> Res<bool> {
        let store = self.grant(store, true)?.store.clone();
        let previous = store.delete(&key);
        let existed = previous.is_some();
        self.undo.restore(&store, key, None, previous);
        Ok(existed)
    }

    fn incr(&mut self, store: u32, key: Vec<u8>, delta: i64) -> Res<i64> {
        let store = self.grant(store, true)?.store.clone();
        let (next, created) = store.incr_created(&key, delta).map_err(to_wit)?;
        self.undo.incr(&store, key, delta, created);
        Ok(next)
    }

    fn incr_many(
        &mut self,
        store: u32,
        keys: Vec<u8>,
        key_lengths: Vec<u32>,
        mut deltas: Vec<i64>,
    ) -> Res<Vec<i64>> {
        let store = self.grant(store, true)?.store.clone();
        let mut results = Vec::with_capacity(deltas.len());
        let mut created = Vec::with_capacity(deltas.len());
        let mut failed = None;
        {
            let split = flowhost_sdk::state::split_flat(&keys, &key_lengths)
                .filter(|k| k.len() == deltas.len())
                .ok_or_else(|| {
                    fatal(format!(
                        "node `{}`: incr-many got {} key bytes, {} key lengths and {} deltas that do not match",
                        self.node,
                        keys.len(),
                        key_lengths.len(),
                        deltas.len()
                    ))
                })?;
            for (k, &delta) in split.iter().zip(&deltas) {
                match store.incr_created(k, delta) {
                    Ok((next, new)) => {
                        results.push(next);
                        created.push(new);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        let (mut keys, mut key_lengths) = (keys, key_lengths);
        if failed.is_some() {
            // Only what was applied is to be undone.
            let applied = results.len();
            keys.truncate(key_lengths[..applied].iter().map(|&n| n as usize).sum());
            key_lengths.truncate(applied);
            deltas.truncate(applied);
        }
        self.undo.incr_many(&store, (keys, key_lengths), deltas, created);
        match failed {
            Some(e) => Err(to_wit(e)),
            None => Ok(results),
        }
    }

    fn compare_and_swap(
        &mut self,
        store: u32,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        replacement: Option<Vec<u8>>,
    ) -> Res<bool> {
        let store = self.grant(store, true)?.store.clone();
        if let Some(v) = &replacement {
            store.admit(&key, v.len()).map_err(to_wit)?;
        }
        let swapped = store.compare_and_swap(key.clone(), expected.as_deref(), replacement.clone());
        if swapped {
            self.undo.restore(&store, key, replacement, expected);
        }
        Ok(swapped)
    }

    fn scan(&mut self, store: u32, prefix: Vec<u8>, limit: u32) -> Res<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.grant(store, false)?.store.scan(&prefix, limit as usize))
    }
}
