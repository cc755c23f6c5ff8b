//! The finish phase of a bounded run, and where its results went.
//!
//! In a run that ends (in-process), no node calls `finish` before every message read from
//! the sources has been processed by every node and written by every sink: the
//! [`FinishGate`] opens once the sources have ended and nothing is in flight. At that
//! moment each file sink's length is the mark between the two phases of its file: what
//! came before was made message by message, everything after descends from some node's
//! `finish` (an aggregate's totals and whatever downstream made of them).
//!
//! The run then records those blocks in `finish.json` in the graph's state directory
//! ([`FinishRecord`]), with the nodes whose `finish` emitted upstream of each sink, so a
//! replay into such a node can put the corrected results in place of the old ones (see
//! `replay`). Nothing is written for a graph whose nodes emit nothing at `finish`.
//!
//! Over Kafka a process's sources do not end the graph and nodes finish when a process
//! stops (each with its own share of the keys), so there is no single finish phase: the
//! gate stays open and nothing is recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::flow::InFlight;
use crate::io::sink::SinkWriter;
use crate::manifest::{Graph, Vertex};
use crate::shutdown::Shutdown;

/// The record's file in the graph's state directory.
const FILE: &str = "finish.json";

/// Where nodes wait before `finish` until the message-by-message phase has ended.
pub(crate) struct FinishGate {
    /// `None`: there is no finish phase to wait for (the gate is open).
    phase: Option<Phase>,
}

struct Phase {
    sources_left: AtomicUsize,
    in_flight: InFlight,
    /// File sinks here: id, writer.
    sinks: Vec<(usize, Arc<Mutex<SinkWriter>>)>,
    /// Each file sink's length when the gate opened (set once).
    marks: OnceLock<BTreeMap<usize, u64>>,
}

impl FinishGate {
    /// A gate that never holds a node back.
    pub fn open() -> Self {
        FinishGate { phase: None }
    }

    /// A gate that opens once `sources` sources have ended and nothing is in flight.
    pub fn after(sources: usize, in_flight: InFlight, sinks: Vec<(usize, Arc<Mutex<SinkWriter>>)>) -> Self {
        FinishGate {
            phase: Some(Phase {
                sources_left: AtomicUsize::new(sources),
                in_flight,
                sinks,
                marks: OnceLock::new(),
            }),
        }
    }

    /// A source has ended (its router dropped).
    pub fn source_ended(&self) {
        if let Some(p) = &self.phase {
            p.sources_left.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits until the finish phase may begin (or the run aborts).
    ///
    /// Every waiting replica has consumed its whole input, and nothing upstream of it
    /// waits on it, so the messages still in flight drain without it: the wait ends.
    pub fn wait(&self, shutdown: &Shutdown) {
        let Some(p) = &self.phase else { return };
        while p.marks.get().is_none() && !shutdown.is_aborting() {
            if p.sources_left.load(Ordering::SeqCst) == 0 && p.in_flight.is_idle() {
                p.marks.get_or_init(|| {
                    p.sinks
                        .iter()
                        .filter_map(|(k, w)| Some((*k, lock(w).file_len()?)))
                        .collect()
                });
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The blocks the finish phase wrote, per file sink of `graph` (by index), once the run
    /// has ended; `None` if there was no finish phase.
    pub fn blocks(&self, graph: &Graph, emitted_at_finish: &[bool]) -> Option<BTreeMap<usize, Block>> {
        let p = self.phase.as_ref()?;
        let marks = p.marks.get()?;
        let mut blocks = BTreeMap::new();
        for (k, writer) in &p.sinks {
            let (Some(&from), Some(to)) = (marks.get(k), lock(writer).file_len()) else {
                continue;
            };
            let nodes: Vec<String> = upstream(graph, Vertex::Sink(*k))
                .into_iter()
                .filter(|&i| emitted_at_finish[i])
                .map(|i| graph.nodes[i].id.clone())
                .collect();
            if to > from && !nodes.is_empty() {
                let path = graph.sinks[*k]
                    .file_path()
                    .map(Path::to_owned)
                    .unwrap_or_default();
                blocks.insert(
                    *k,
                    Block {
                        path,
                        from,
                        to,
                        nodes,
                        cut: false,
                    },
                );
            }
        }
        Some(blocks)
    }
}

fn lock(w: &Mutex<SinkWriter>) -> std::sync::MutexGuard<'_, SinkWriter> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// The nodes from which `to` can be reached along edges.
fn upstream(graph: &Graph, to: Vertex) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![to];
    while let Some(v) = todo.pop() {
        for e in graph.edges.iter().filter(|e| e.to == v) {
            if let Vertex::Node(i) = e.from
                && seen.insert(i)
            {
                todo.push(e.from);
            }
        }
    }
    seen
}

/// What the finish phase of the last run wrote into one file sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The sink's file.
    pub path: PathBuf,
    /// Where the block begins: the file's length when the finish phase began.
    pub from: u64,
    /// Where it ends: the file's length when the run ended.
    pub to: u64,
    /// The nodes upstream of the sink whose `finish` emitted records.
    pub nodes: Vec<String>,
    /// A replay has cut the block off (the file was truncated to `from`) and has not
    /// finished yet.
    #[serde(default)]
    pub cut: bool,
}

/// `finish.json`: sink id → the block its last finish phase wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishRecord {
    /// Per sink id.
    pub sinks: BTreeMap<String, Block>,
}

/// The record could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {why}", path.display())]
pub struct FinishRecordError {
    what: &'static str,
    path: PathBuf,
    why: String,
}

impl FinishRecord {
    /// The record in state directory `dir` (empty if there is none).
    pub fn read(dir: &Path) -> Result<Self, FinishRecordError> {
        let path = dir.join(FILE);
        let failed = |why: String| FinishRecordError {
            what: "reading",
            path: path.clone(),
            why,
        };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| failed(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FinishRecord::default()),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// Replaces the entries of `sinks` (ids of the sinks a run wrote) with `blocks`, and
    /// writes the record back to `dir` atomically: a crash leaves the old one or the new.
    /// Writes nothing when there is nothing to record and no record to change.
    pub fn update(
        dir: &Path,
        sinks: &[&str],
        blocks: BTreeMap<String, Block>,
    ) -> Result<(), FinishRecordError> {
        let mut record = FinishRecord::read(dir)?;
        let before = record.clone();
        record.sinks.retain(|id, _| !sinks.contains(&id.as_str()));
        record.sinks.extend(blocks);
        if record == before {
            return Ok(());
        }
        record.write(dir)
    }

    /// Writes the record to `dir` (temporary file, fsync, rename).
    pub fn write(&self, dir: &Path) -> Result<(), FinishRecordError> {
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
            let file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut &file, &bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| FinishRecordError {
            what: "writing",
            path,
            why: e.to_string(),
        })
    }
}
