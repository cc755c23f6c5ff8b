//! The WIT `state` interface, implemented for a node's store: handles index the node's
//! grants, so a node can only ever reach what it was granted.

use flowhost_sdk::NodeError;

use super::Grant;
use crate::engine::HostState;
use crate::engine::bindings::flowhost::node::{state, types};
use crate::manifest::Access;

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
        self.grant(store, true)?.store.set(key, value);
        Ok(())
    }

    fn set_many(&mut self, store: u32, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Res<()> {
        let store = &self.grant(store, true)?.store;
        for (k, v) in entries {
            store.set(k, v);
        }
        Ok(())
    }

    fn delete(&mut self, store: u32, key: Vec<u8>) -> Res<bool> {
        Ok(self.grant(store, true)?.store.delete(&key))
    }

    fn incr(&mut self, store: u32, key: Vec<u8>, delta: i64) -> Res<i64> {
        self.grant(store, true)?.store.incr(&key, delta).map_err(to_wit)
    }

    fn incr_many(
        &mut self,
        store: u32,
        keys: Vec<u8>,
        key_lengths: Vec<u32>,
        deltas: Vec<i64>,
    ) -> Res<Vec<i64>> {
        let store = &self.grant(store, true)?.store;
        let keys = flowhost_sdk::state::split_flat(&keys, &key_lengths)
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
        keys.iter()
            .zip(deltas)
            .map(|(k, delta)| store.incr(k, delta).map_err(to_wit))
            .collect()
    }

    fn compare_and_swap(
        &mut self,
        store: u32,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        replacement: Option<Vec<u8>>,
    ) -> Res<bool> {
        Ok(self
            .grant(store, true)?
            .store
            .compare_and_swap(key, expected.as_deref(), replacement))
    }

    fn scan(&mut self, store: u32, prefix: Vec<u8>, limit: u32) -> Res<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.grant(store, false)?.store.scan(&prefix, limit as usize))
    }
}
