//! `flowhost replay`: dead-lettered messages back into the node that failed on them —
//! after a fix was deployed, say — without touching the pipeline's manifest.
//!
//! The dead-letter sink must be a file sink with `format = "json"` (key, timestamp and
//! headers survive). Replay takes the messages that node dead-lettered out of the file,
//! strips the `flowhost-error*` headers and runs them through the node and everything
//! downstream of it; file sinks are appended to. What fails again is dead-lettered again,
//! with a fresh error. Nothing is lost on the way: the messages being replayed are kept in
//! `<file>.replaying` until the replay completes, and an interrupted replay picks them up
//! on its next run (so messages delivered before the interruption are delivered again:
//! at-least-once).
//!
//! Durable stores: the replay restores every durable store of the graph from its state
//! directory (the graph must not be running: the directory is locked), applies the
//! replayed messages' writes, and saves them back with a checkpoint of its own; it refuses
//! while the graph has an interrupted run to resume, whose resume point that would lose.
//!
//! Aggregates: a node that emits at `finish` (an aggregate's totals) emits again at the
//! end of the replay. The replay gives the corrected result once: the block the last
//! run's finish phase wrote at the end of each replayed file sink (recorded by the run,
//! see `topology::finish`) is cut off before the replay runs, and the replay's own finish
//! phase writes the totals over the restored state plus the replayed messages in its
//! place. That needs the aggregate's state to survive the run, so the replay is refused,
//! with the reason, when such a node keeps no durable store, when the block also holds
//! results of nodes the replay does not run again, or when the file changed since the
//! run. Such a node's totals are correct after a replay only if it keeps them in its
//! stores (as the SDK's `aggregate` does), not in guest memory.
//!
//! Not yet: replaying while the graph is running.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::Engine;
use crate::io::NotAMessage;
use crate::io::sink::{as_json, from_json};
use crate::manifest::{
    Connection, Durability, Edge, ErrorPolicy, Graph, ModuleRef, SinkKind, SourceKind, SourceSpec, Transport,
    Vertex,
};
use crate::message::Msg;
use crate::plan::{Plan, PlanError};
use crate::shutdown::Shutdown;
use crate::topology::finish::{Block, FinishRecord};
use crate::topology::{RunError, RunOptions, RunReport, headers};

/// Why a replay did not run, or did not finish. Once the replayed messages have moved
/// out of the dead-letter file, the error says where they are kept.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The request does not fit the graph (no such sink or node, a sink it cannot read).
    #[error("{0}")]
    Refused(String),
    /// A file could not be read or written.
    #[error("{what} {}: {error}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// A line of the dead-letter file is not a message.
    #[error("{}:{line}: {error}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        error: NotAMessage,
    },
    /// The replayed part of the graph cannot be planned (its modules).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The replay run failed or was interrupted.
    #[error("{why}; {kept}")]
    Run {
        /// What happened.
        why: String,
        /// Where the messages being replayed are kept.
        kept: String,
    },
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The dead-letter sink to read.
    pub from: String,
    /// The node to feed.
    pub into: String,
    /// Run the node with this module instead of the manifest's.
    pub module: Option<PathBuf>,
    /// Replay every message in the file, whichever node dead-lettered it.
    pub all: bool,
}

/// What a replay did.
#[derive(Debug)]
pub struct ReplayReport {
    /// Messages fed back into the node.
    pub replayed: u64,
    /// Of those, how many the node processed without an error.
    pub succeeded: u64,
    /// Of those, how many failed again (and went through the node's policy again).
    pub failed: u64,
    /// Messages left in the dead-letter file (other nodes' failures).
    pub kept: u64,
    /// The run over the replayed part of the graph (`None`: nothing to replay).
    pub run: Option<RunReport>,
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replayed {}: {} succeeded, {} failed again; {} other message(s) left in the dead-letter file",
            self.replayed, self.succeeded, self.failed, self.kept
        )
    }
}

/// Replays `req` over `graph`.
pub fn replay(
    graph: &Graph,
    req: &Replay,
    engine: &Engine,
    opts: &RunOptions,
    shutdown: &Arc<Shutdown>,
) -> Result<ReplayReport, ReplayError> {
    let ids = |names: Vec<&str>| names.join(", ");
    let Some(sink) = graph.sinks.iter().find(|s| s.id == req.from) else {
        return Err(ReplayError::Refused(format!(
            "no sink `{}` in {} (sinks: {})",
            req.from,
            graph.path.display(),
            ids(graph.sinks.iter().map(|s| s.id.as_str()).collect())
        )));
    };
    let SinkKind::File(path) = &sink.kind else {
        return Err(ReplayError::Refused(format!(
            "sink `{}` does not write a file; only a file sink can be replayed",
            req.from
        )));
    };
    let Some(node) = graph.nodes.iter().position(|n| n.id == req.into) else {
        return Err(ReplayError::Refused(format!(
            "no node `{}` in {} (nodes: {})",
            req.into,
            graph.path.display(),
            ids(graph.nodes.iter().map(|n| n.id.as_str()).collect())
        )));
    };
    let pending = with_suffix(path, ".replaying");

    // Everything is read and checked before any file changes.
    let earlier = read_lines(&pending)?;
    let earlier_empty = earlier.is_empty();
    let mut selected = Vec::new();
    let mut kept = Vec::new();
    for (line, msg) in read_lines(path)? {
        let failed_here = msg.headers.get(headers::NODE) == Some(req.into.as_bytes());
        if req.all || failed_here {
            selected.push((line, msg));
        } else {
            kept.push(line);
        }
    }
    if !earlier.is_empty() {
        tracing::info!(
            "picking up {} message(s) of an interrupted replay from {}",
            earlier.len(),
            pending.display()
        );
    }
    let batch: Vec<(String, Msg)> = earlier.into_iter().chain(selected).collect();
    let kept_count = kept.len() as u64;
    if batch.is_empty() {
        return Ok(ReplayReport {
            replayed: 0,
            succeeded: 0,
            failed: 0,
            kept: kept_count,
            run: None,
        });
    }

    let spec = &graph.nodes[node];
    let mut by_port: BTreeMap<u16, Vec<Msg>> = BTreeMap::new();
    for (_, msg) in &batch {
        let port = msg
            .headers
            .get(headers::PORT)
            .and_then(|p| spec.inputs.iter().position(|i| i.as_bytes() == p))
            .unwrap_or(0) as u16;
        // Every error header's name starts with that of the error text.
        let clean = msg.headers.without(|h| h.starts_with(headers::ERROR));
        by_port.entry(port).or_default().push(Msg {
            headers: clean,
            ..msg.clone()
        });
    }
    let feeds: Vec<(PathBuf, u16)> = by_port
        .keys()
        .map(|&p| (with_suffix(path, &format!(".in{p}")), p))
        .collect();
    let mut sub = downstream(graph, node, &feeds)?;
    if let Some(module) = &req.module {
        let n = sub
            .nodes
            .iter_mut()
            .find(|n| n.id == req.into)
            .expect("the node is kept");
        n.module = ModuleRef::File(module.clone());
        n.sha256 = None;
    }
    let cuts = finish_cuts(&sub, &req.into, !earlier_empty)?;

    // The replayed messages move from the dead-letter file to `<file>.replaying`.
    write_atomically(&pending, batch.iter().map(|(line, _)| line.as_str()))?;
    write_atomically(path, kept.iter().map(String::as_str))?;
    for ((file, _), msgs) in feeds.iter().zip(by_port.values()) {
        let lines: Vec<String> = msgs.iter().map(|m| as_json(m).to_string()).collect();
        write_atomically(file, lines.iter().map(String::as_str))?;
    }
    cut(&sub.checkpoint.dir, cuts)?;

    // Appending to the sinks; durable stores as the graph left them.
    let opts = RunOptions {
        append: true,
        fresh: false,
        ..opts.clone()
    };
    let plan = Plan::resolve(sub, None)?;
    let run = crate::run(&plan, engine, &opts, shutdown);
    for (file, _) in &feeds {
        let _ = std::fs::remove_file(file);
    }
    let stopped = |why: String| ReplayError::Run {
        why,
        kept: keep_note(&pending),
    };
    let run = run.map_err(|e: RunError| stopped(e.to_string()))?;
    if let Some(failure) = &run.failure {
        return Err(stopped(failure.clone()));
    }
    if shutdown.was_interrupted() {
        return Err(stopped("interrupted".into()));
    }
    std::fs::remove_file(&pending).map_err(io("removing", &pending))?;
    let replayed = batch.len() as u64;
    let failed = run
        .nodes
        .iter()
        .find(|(id, _, _)| *id == req.into)
        .map_or(0, |(_, _, c)| c.errors);
    Ok(ReplayReport {
        replayed,
        succeeded: replayed - failed.min(replayed),
        failed,
        kept: kept_count,
        run: Some(run),
    })
}

/// The blocks of results that nodes of the replayed part `sub` wrote at `finish` into its
/// file sinks in the last run, which the replay writes anew; refused if it cannot.
/// `resuming`: an interrupted replay is being picked up (it may have cut them already).
fn finish_cuts(sub: &Graph, into: &str, resuming: bool) -> Result<Vec<(String, Block)>, ReplayError> {
    let refused = |why: String| ReplayError::Refused(why);
    let record = FinishRecord::read(&sub.checkpoint.dir).map_err(|e| refused(e.to_string()))?;
    let replayed = |id: &str| sub.nodes.iter().find(|n| n.id == id);
    let mut cuts = Vec::new();
    for sink in &sub.sinks {
        let Some(block) = record.sinks.get(&sink.id) else {
            continue;
        };
        let (again, others): (Vec<&String>, Vec<&String>) =
            block.nodes.iter().partition(|n| replayed(n).is_some());
        if again.is_empty() {
            // Results of nodes the replay does not run: the replay appends after them.
            continue;
        }
        let names = |ids: &[&String]| {
            ids.iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let at = format!(
            "sink `{}` ({}, bytes {}..{})",
            sink.id,
            block.path.display(),
            block.from,
            block.to
        );
        if !others.is_empty() {
            return Err(refused(format!(
                "{at} ends with results that {} and {} emitted at finish; a replay into `{into}` computes those of {} only, so it cannot replace them: run the graph again instead",
                names(&again),
                names(&others),
                names(&again)
            )));
        }
        for id in &again {
            let node = replayed(id).expect("partitioned by it");
            let durable = |store: &str| {
                sub.stores
                    .iter()
                    .any(|s| s.name == store && s.durability == Durability::Durable)
            };
            if node.state.is_empty() || !node.state.iter().all(|(store, _)| durable(store)) {
                return Err(refused(format!(
                    "node `{id}` emitted its results at finish into {at}; its state is not durable, so a replay would emit them again from the replayed messages alone: run the graph again, or keep its state in durable stores (`durability = \"durable\"`) so a replay can correct its results"
                )));
            }
        }
        let len = sink.file_len().unwrap_or(0);
        let cut_already = block.cut && resuming && len >= block.from;
        if len != block.to && !cut_already {
            return Err(refused(format!(
                "{at} holds {len} bytes now, but the run in which {} emitted at finish left {}: the file changed since, so a replay cannot tell where those results are",
                names(&again),
                block.to
            )));
        }
        cuts.push((sink.id.clone(), block.clone()));
    }
    Ok(cuts)
}

/// Cuts each sink's block of finish results off its file, noting that first in the
/// record (so an interrupted replay cuts again on its next run, whatever it appended).
fn cut(dir: &Path, cuts: Vec<(String, Block)>) -> Result<(), ReplayError> {
    if cuts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = cuts.iter().map(|(id, _)| id.as_str()).collect();
    let noted = cuts
        .iter()
        .map(|(id, b)| {
            (
                id.clone(),
                Block {
                    cut: true,
                    ..b.clone()
                },
            )
        })
        .collect();
    FinishRecord::update(dir, &ids, noted).map_err(|e| ReplayError::Refused(e.to_string()))?;
    for (id, block) in &cuts {
        let truncate = || -> std::io::Result<()> {
            let file = std::fs::OpenOptions::new().write(true).open(&block.path)?;
            file.set_len(block.from)?;
            file.sync_all()
        };
        truncate().map_err(io("cutting the finish results off", &block.path))?;
        tracing::info!(
            "sink `{id}`: the results its finish phase wrote last (bytes {}..{}) are replaced by the replay's",
            block.from,
            block.to
        );
    }
    Ok(())
}

fn keep_note(pending: &Path) -> String {
    format!(
        "the messages being replayed are kept in {}; run the replay again to retry them",
        pending.display()
    )
}

/// The part of `graph` that `node` feeds (the node, everything downstream of it and its
/// dead-letter sinks), with one `messages` source per input port in `feeds`.
fn downstream(graph: &Graph, node: usize, feeds: &[(PathBuf, u16)]) -> Result<Graph, ReplayError> {
    let mut reach = BTreeSet::from([Vertex::Node(node)]);
    let mut todo = vec![Vertex::Node(node)];
    while let Some(v) = todo.pop() {
        let mut next: Vec<Vertex> = graph.edges.iter().filter(|e| e.from == v).map(|e| e.to).collect();
        if let Vertex::Node(i) = v
            && let ErrorPolicy::DeadLetter(k) = graph.nodes[i].on_error
        {
            next.push(Vertex::Sink(k));
        }
        for to in next {
            if reach.insert(to) {
                todo.push(to);
            }
        }
    }
    let nodes: Vec<usize> = (0..graph.nodes.len())
        .filter(|&i| reach.contains(&Vertex::Node(i)))
        .collect();
    let sinks: Vec<usize> = (0..graph.sinks.len())
        .filter(|&i| reach.contains(&Vertex::Sink(i)))
        .collect();
    let node_at = |i: usize| nodes.iter().position(|&n| n == i).expect("reachable node");
    let sink_at = |i: usize| sinks.iter().position(|&s| s == i).expect("reachable sink");
    let remap = |v: Vertex| match v {
        Vertex::Node(i) => Vertex::Node(node_at(i)),
        Vertex::Sink(i) => Vertex::Sink(sink_at(i)),
        Vertex::Source(i) => Vertex::Source(i),
    };

    let mut sub = graph.clone();
    sub.nodes = nodes.iter().map(|&i| graph.nodes[i].clone()).collect();
    for n in &mut sub.nodes {
        if let ErrorPolicy::DeadLetter(k) = n.on_error {
            n.on_error = ErrorPolicy::DeadLetter(sink_at(k));
        }
    }
    sub.sinks = sinks.iter().map(|&i| graph.sinks[i].clone()).collect();
    let used: BTreeSet<&str> = sub
        .nodes
        .iter()
        .flat_map(|n| n.state.iter().map(|(s, _)| s.as_str()))
        .collect();
    // Durable stores all stay: the replay restores them from the graph's state directory
    // and saves them back, and a store left out would be dropped from it.
    sub.stores
        .retain(|s| used.contains(s.name.as_str()) || s.durability == Durability::Durable);
    // A replay reads a local dead-letter file and runs the part it feeds in this process,
    // whatever transport the graph runs on; its sinks must be writable from here.
    sub.transport = Transport::InProcess;
    if let Some(sink) = sub.sinks.iter().find(|s| matches!(s.kind, SinkKind::Kafka(_))) {
        return Err(ReplayError::Refused(format!(
            "the replayed part of the graph writes Kafka sink `{}`; replay runs in this process and writes only local sinks",
            sink.id
        )));
    }
    if sub.is_durable() {
        // The replay's last checkpoint replaces the graph's: refuse if the graph still has
        // a run to resume, whose resume point that would lose.
        let dir = &sub.checkpoint.dir;
        let recovered = crate::state::durable::read(dir).map_err(|e| ReplayError::Refused(e.to_string()))?;
        if let Some(cp) = recovered.resumable() {
            return Err(ReplayError::Refused(format!(
                "the last run of graph `{}` stopped before its sources ended (checkpoint {} in {}): run it again to its end before replaying, or its resume point would be lost",
                graph.name,
                cp.epoch,
                dir.display()
            )));
        }
    }
    sub.edges = graph
        .edges
        .iter()
        .filter(|e| reach.contains(&e.from))
        .map(|e| Edge {
            from: remap(e.from),
            to: remap(e.to),
            ..e.clone()
        })
        .collect();
    sub.sources.clear();
    let into = Vertex::Node(node_at(node));
    for (i, (file, port)) in feeds.iter().enumerate() {
        // Spread over the node's replicas as its own input edge does.
        let connection = graph
            .edges
            .iter()
            .find(|e| e.to == Vertex::Node(node) && e.to_port == *port)
            .map_or(Connection::RoundRobin, |e| e.connection);
        sub.sources.push(SourceSpec {
            id: format!("replay-{port}"),
            kind: SourceKind::Messages { path: file.clone() },
            watermark: None,
        });
        sub.edges.push(Edge {
            feedback: None,
            from: Vertex::Source(i),
            from_port: 0,
            to: into,
            to_port: *port,
            connection,
            topic: None,
        });
    }
    Ok(sub)
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Each line of a dead-letter file with the message it holds; a missing file is empty.
fn read_lines(path: &Path) -> Result<Vec<(String, Msg)>, ReplayError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("reading", path)(e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let msg = from_json(line.as_bytes()).map_err(|error| ReplayError::Line {
                path: path.to_owned(),
                line: n + 1,
                error,
            })?;
            Ok((line.to_owned(), msg))
        })
        .collect()
}

/// Replaces `path` with `lines`, durably: a crash leaves the old file or the new one.
fn write_atomically<'a>(path: &Path, lines: impl Iterator<Item = &'a str>) -> Result<(), ReplayError> {
    let tmp = with_suffix(path, ".tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for line in lines {
            file.write_all(line.as_bytes())?;
            file.write_all(b"\n")?;
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(io("writing", path))
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError {
    let path = path.to_owned();
    move |error| ReplayError::Io { what, path, error }
}
