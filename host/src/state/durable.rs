//! Durable stores: a checkpoint log in the graph's state directory.
//!
//! The pipeline is checkpointed as a whole (see `topology::checkpoint`): sources pause at
//! a batch boundary, everything in flight drains, and then one record is appended with
//! the sources' positions, the file sinks' lengths and every durable key that changed
//! since the previous record — and fsynced before the sources go on. After a crash the
//! next run replays the records into the stores, truncates file sinks to their recorded
//! lengths and resumes the sources from their positions, so state and outputs are those
//! of a run without the crash: a batch counts once, or (after the last checkpoint) is
//! processed again from scratch.
//!
//! Why a log of our own rather than an embedded database: a checkpoint must commit store
//! changes, source positions and sink lengths atomically, and nothing else reads the
//! data between checkpoints (the live state is the in-memory map). One append + one
//! `fdatasync` per checkpoint, proportional to the keys changed (a hot counter is written
//! once per checkpoint, not once per increment), is the least work that does this; an
//! LSM or B-tree store would add its own log and compaction for no gain.
//!
//! File: `state.log` = magic, then records `[len: u32][crc32: u32][bincode Checkpoint]`.
//! A torn or corrupt tail (a crash mid-append) fails its checksum and is dropped. When the
//! log grows past twice its last snapshot, it is rewritten as a single full record
//! (temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Change, Entries, Stores};

const MAGIC: &[u8; 8] = b"FHSTATE1";
const LOG: &str = "state.log";
const LOCK: &str = "lock";
/// Rewrite the log once it is this much past twice the last snapshot.
const COMPACT_SLACK: u64 = 8 << 20;

/// Where a source is: bytes consumed and records emitted (both up to a batch boundary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Bytes of input consumed (files).
    pub offset: u64,
    /// Records emitted so far.
    pub records: u64,
}

/// One record of the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Counts up from 1 over the life of the state directory.
    pub epoch: u64,
    /// Whether the run ended with its sources exhausted: the next run starts them afresh.
    pub complete: bool,
    /// Whether `stores` holds every live key (a snapshot), not changes since the last record.
    pub full: bool,
    /// Source id → position.
    pub sources: BTreeMap<String, Position>,
    /// File sink id → committed length in bytes.
    pub sinks: BTreeMap<String, u64>,
    /// Store name → changed keys.
    pub stores: BTreeMap<String, Vec<Change>>,
}

/// What the log says: the stores' entries (key → value, expiry) and the last record.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Store name → key → (value, expiry).
    pub stores: BTreeMap<String, Entries>,
    /// The last checkpoint, without its changes.
    pub last: Option<Checkpoint>,
    /// Records read.
    pub records: u64,
}

impl Recovered {
    fn apply(&mut self, mut cp: Checkpoint) {
        if cp.full {
            self.stores.clear();
        }
        for (store, changes) in std::mem::take(&mut cp.stores) {
            let entries = self.stores.entry(store).or_default();
            for (key, now) in changes {
                match now {
                    Some(v) => entries.insert(key, v),
                    None => entries.remove(&key),
                };
            }
        }
        self.last = Some(cp);
        self.records += 1;
    }

    /// Whether the last run stopped before its sources ended (crash, Ctrl-C): the next
    /// run resumes it.
    pub fn resumable(&self) -> Option<&Checkpoint> {
        self.last.as_ref().filter(|cp| !cp.complete)
    }
}

/// A state directory that cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateLogError {
    /// A file operation failed.
    #[error("{what} {}: {error}", path.display())]
    Io {
        /// What was being done (`reading`, `writing a checkpoint to`, …).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The file is not a flowhost state log.
    #[error("{} is not a flowhost state log", path.display())]
    NotALog {
        /// The file.
        path: PathBuf,
    },
    /// Another run holds the directory.
    #[error("state directory {} is in use by another `flowhost run` of this graph", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A checkpoint cannot be encoded (4 GiB or more of changes).
    #[error("encoding a checkpoint: {0}")]
    Encode(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateLogError {
    let path = path.to_owned();
    move |error| StateLogError::Io { what, path, error }
}

/// Reads a state directory's log (read-only; a torn tail is ignored).
pub fn read(dir: &Path) -> Result<Recovered, StateLogError> {
    let path = dir.join(LOG);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io("reading", &path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recovered::default()),
        Err(e) => return Err(io("opening", &path)(e)),
    }
    if bytes.is_empty() {
        return Ok(Recovered::default());
    }
    if !bytes.starts_with(MAGIC) {
        return Err(StateLogError::NotALog { path });
    }
    let mut recovered = Recovered::default();
    let mut at = MAGIC.len();
    while let Some((cp, next)) = record_at(&bytes, at) {
        recovered.apply(cp);
        at = next;
    }
    if at < bytes.len() {
        tracing::warn!(
            "{}: ignoring {} bytes of an incomplete checkpoint at the end (a crash while writing it)",
            path.display(),
            bytes.len() - at
        );
    }
    Ok(recovered)
}

/// The record at `at`, if it is whole and its checksum matches, and where the next starts.
fn record_at(bytes: &[u8], at: usize) -> Option<(Checkpoint, usize)> {
    let header = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let body = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let (cp, _) = bincode::serde::decode_from_slice(body, bincode::config::standard()).ok()?;
    Some((cp, at + 8 + len))
}

fn encode(cp: &Checkpoint) -> Result<Vec<u8>, StateLogError> {
    let body = bincode::serde::encode_to_vec(cp, bincode::config::standard())
        .map_err(|e| StateLogError::Encode(e.to_string()))?;
    let len = u32::try_from(body.len())
        .map_err(|_| StateLogError::Encode(format!("{} bytes: 4 GiB or more", body.len())))?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The open log of a running graph; holds the directory's lock.
#[derive(Debug)]
pub struct StateLog {
    dir: PathBuf,
    file: File,
    _lock: File,
    /// Bytes of records in the log.
    len: u64,
    /// Bytes of the last full record.
    snapshot_len: u64,
    epoch: u64,
}

impl StateLog {
    /// Locks `dir` (one run at a time), reads its log and loads the durable stores of
    /// `stores` from it. `fresh` discards what was there.
    pub fn open(dir: &Path, stores: &Stores, fresh: bool) -> Result<(StateLog, Recovered), StateLogError> {
        std::fs::create_dir_all(dir).map_err(io("creating state directory", dir))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(io("opening", &dir.join(LOCK)))?;
        lock.try_lock()
            .map_err(|_| StateLogError::Locked { dir: dir.to_owned() })?;
        let recovered = if fresh { Recovered::default() } else { read(dir)? };
        for (name, entries) in &recovered.stores {
            match stores.get(name) {
                Some(store) if store.is_durable() => {
                    for (k, (v, expires)) in entries {
                        store.restore(k.clone(), v.clone(), *expires);
                    }
                }
                _ => tracing::warn!(
                    "{}: store `{name}` is no longer declared durable; its {} saved keys are dropped",
                    dir.display(),
                    entries.len()
                ),
            }
        }
        let epoch = recovered.last.as_ref().map_or(0, |cp| cp.epoch);
        // Start from one snapshot of what was recovered: drops the history and any torn tail.
        let mut base = recovered.last.clone().unwrap_or_default();
        base.epoch = epoch;
        let (file, len) = write_snapshot(dir, base, stores)?;
        let log = StateLog {
            dir: dir.to_owned(),
            file,
            _lock: lock,
            len,
            snapshot_len: len,
            epoch,
        };
        Ok((log, recovered))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a checkpoint of what changed in `stores` since the last one, with `meta`'s
    /// positions and flags, and syncs it to disk. Returns its epoch.
    pub fn commit(&mut self, mut meta: Checkpoint, stores: &Stores) -> Result<u64, StateLogError> {
        if self.len > 2 * self.snapshot_len + COMPACT_SLACK {
            self.epoch += 1;
            meta.epoch = self.epoch;
            // The snapshot takes everything, what changed included.
            self.rewrite(meta, stores)?;
            return Ok(self.epoch);
        }
        self.epoch += 1;
        meta.epoch = self.epoch;
        meta.full = false;
        meta.stores = stores
            .iter()
            .filter(|s| s.is_durable())
            .map(|s| (s.name().to_owned(), s.take_changes()))
            .filter(|(_, changes)| !changes.is_empty())
            .collect();
        let record = encode(&meta)?;
        self.file
            .write_all(&record)
            .and_then(|()| self.file.sync_data())
            .map_err(io("writing a checkpoint to", &self.dir.join(LOG)))?;
        self.len += record.len() as u64;
        Ok(self.epoch)
    }

    /// Replaces the log with one full record: `meta` plus every live durable entry.
    fn rewrite(&mut self, meta: Checkpoint, stores: &Stores) -> Result<(), StateLogError> {
        (self.file, self.len) = write_snapshot(&self.dir, meta, stores)?;
        self.snapshot_len = self.len;
        Ok(())
    }
}

/// Writes `meta` plus every live durable entry as the whole log of `dir` (temporary file,
/// fsync, rename, fsync of the directory); returns the log opened for appending, and the
/// record's length.
fn write_snapshot(dir: &Path, mut meta: Checkpoint, stores: &Stores) -> Result<(File, u64), StateLogError> {
    meta.full = true;
    meta.stores = stores
        .iter()
        .filter(|s| s.is_durable())
        .map(|s| {
            s.take_changes();
            let all = s.entries().into_iter().map(|(k, held)| (k, Some(held)));
            (s.name().to_owned(), all.collect())
        })
        .collect();
    let record = encode(&meta)?;
    let tmp = dir.join(format!("{LOG}.new"));
    let path = dir.join(LOG);
    let write = || -> std::io::Result<File> {
        let mut f = File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&record)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename itself must reach the disk.
        File::open(dir)?.sync_all()?;
        OpenOptions::new().append(true).open(&path)
    };
    let file = write().map_err(io("writing a snapshot to", &path))?;
    Ok((file, record.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Durability, StoreSpec};

    fn stores() -> Stores {
        let spec = |name: &str, durability| StoreSpec {
            durability,
            ..StoreSpec::memory(name)
        };
        Stores::from_specs(&[spec("d", Durability::Durable), spec("m", Durability::Memory)])
    }

    fn at(records: u64) -> Checkpoint {
        let mut cp = Checkpoint::default();
        cp.sources.insert("src".into(), Position { offset: 0, records });
        cp
    }

    #[test]
    fn recovers_committed_changes_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = stores();
            let (mut log, recovered) = StateLog::open(dir.path(), &s, false).unwrap();
            assert!(recovered.last.is_none());
            s.get("d").unwrap().incr(b"n", 5).unwrap();
            s.get("d").unwrap().set(b"gone".to_vec(), b"x".to_vec());
            s.get("m").unwrap().set(b"m".to_vec(), b"not saved".to_vec());
            assert_eq!(log.commit(at(10), &s).unwrap(), 1);
            s.get("d").unwrap().incr(b"n", 1).unwrap();
            s.get("d").unwrap().delete(b"gone");
            assert_eq!(log.commit(at(20), &s).unwrap(), 2);
            s.get("d").unwrap().incr(b"n", 100).unwrap(); // never committed
        }
        // A crash in the middle of appending the third checkpoint.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG))
            .unwrap();
        f.write_all(&encode(&at(30)).unwrap()[..11]).unwrap();
        drop(f);

        let s = stores();
        let (_log, recovered) = StateLog::open(dir.path(), &s, false).unwrap();
        let d = s.get("d").unwrap();
        assert_eq!(d.get(b"n"), Some(6i64.to_le_bytes().to_vec()));
        assert_eq!(d.get(b"gone"), None);
        assert!(s.get("m").unwrap().is_empty());
        let last = recovered.resumable().unwrap();
        assert_eq!((last.epoch, last.sources["src"].records), (2, 20));
        // Reopening rewrote the log as one snapshot of the same state.
        let again = read(dir.path()).unwrap();
        assert_eq!(again.records, 1);
        assert_eq!(again.stores["d"].len(), 1);
    }

    #[test]
    fn a_fresh_open_discards_and_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = stores();
            let (mut log, _) = StateLog::open(dir.path(), &s, false).unwrap();
            s.get("d").unwrap().incr(b"n", 1).unwrap();
            log.commit(at(1), &s).unwrap();
        }
        let s = stores();
        let (_log, recovered) = StateLog::open(dir.path(), &s, true).unwrap();
        assert!(recovered.last.is_none() && s.get("d").unwrap().is_empty());
        drop(_log);
        std::fs::write(dir.path().join(LOG), b"something else").unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("state.log is not a flowhost state log"), "{err}");
    }
}
