//! The in-memory transport: every vertex in this process, every edge a bounded channel.
//!
//! A producer's senders are its consumers' channels, so there is nothing to feed: the
//! runner's channels are the whole data path. A run ends when its sources end: each
//! thread drains its input and drops its senders, so the graph empties front to back.
//! Durable stores are checkpointed every interval at a consistent cut ([`checkpoint`]):
//! the sources pause, nothing is in flight, and one record (state changes, source
//! positions, file sink lengths) is appended to the graph's state log.

mod checkpoint;

use std::sync::{Arc, Mutex};

use checkpoint::{Checkpointer, Gate};

use super::{Feed, Handover, Local, Senders, Transport, TransportError};
use crate::flow::{InFlight, Sender};
use crate::io::sink::SinkWriter;
use crate::manifest::{ErrorPolicy, SourceKind, Vertex};
use crate::plan::Plan;
use crate::shutdown::Shutdown;
use crate::state::Stores;
use crate::state::durable::{Checkpoint, Position, StateLog};

/// The in-memory transport of one run.
pub struct Memory<'p> {
    plan: &'p Plan,
    /// File sinks append to what their files hold.
    append: bool,
    /// Discard the saved state.
    fresh: bool,
    /// Where the last run stopped, if it did not finish.
    resume: Option<Checkpoint>,
    gate: Option<Gate>,
    checkpointer: Mutex<Checkpointer<'p>>,
    /// The graph before, for a graph changed while it runs: what it hands on.
    before: Option<Handover>,
    /// The sinks opened, by index.
    opened: Vec<(usize, Arc<Mutex<SinkWriter>>)>,
}

impl<'p> Memory<'p> {
    /// The transport for `plan`.
    pub fn new(plan: &'p Plan, append: bool, fresh: bool) -> Self {
        Memory {
            plan,
            append,
            fresh,
            resume: None,
            gate: None,
            checkpointer: Mutex::new(Checkpointer {
                graph: &plan.graph,
                log: None,
                stores: Stores::default(),
                sinks: Vec::new(),
                taken: 0,
                longest_pause: std::time::Duration::ZERO,
            }),
            before: None,
            opened: Vec::new(),
        }
    }

    /// The transport of `plan`, the changed graph of a running one, going on from what the
    /// transport of the graph before handed on: its state log, its sources' positions and
    /// its sinks' writers (by id, where they read and write the same).
    pub fn after(plan: &'p Plan, append: bool, before: Handover) -> Self {
        let mut memory = Memory::new(plan, append, false);
        memory.checkpointer().taken = before.checkpoints;
        memory.before = Some(before);
        memory
    }

    fn checkpointer(&self) -> std::sync::MutexGuard<'_, Checkpointer<'p>> {
        self.checkpointer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gate(&self) -> &Gate {
        self.gate.as_ref().expect("prepared before running")
    }
}

impl Transport for Memory<'_> {
    fn prepare(
        &mut self,
        stores: &Stores,
        in_flight: &InFlight,
        _: &Arc<Shutdown>,
    ) -> Result<Vec<Position>, TransportError> {
        let graph = &self.plan.graph;
        let (log, resume) = match self.before.as_mut() {
            Some(before) => (before.log.take(), None),
            None => open_state(self.plan, stores, self.fresh)?,
        };
        let starts: Vec<Position> = graph
            .sources
            .iter()
            .map(|s| {
                let kept = self.before.as_ref().and_then(|b| b.position(s));
                kept.or_else(|| resume.as_ref()?.sources.get(&s.id).copied())
                    .unwrap_or_default()
            })
            .collect();
        if let Some(cp) = &resume {
            let at: Vec<String> = cp
                .sources
                .iter()
                .map(|(id, p)| format!("`{id}` at record {}", p.records))
                .collect();
            tracing::info!(
                epoch = cp.epoch,
                "resuming from the last checkpoint: {}",
                at.join(", ")
            );
        }
        self.resume = resume;
        self.gate = Some(Gate::new(starts.clone(), in_flight.clone()));
        let mut checkpointer = self.checkpointer();
        checkpointer.log = log;
        checkpointer.stores = stores.clone();
        drop(checkpointer);
        Ok(starts)
    }

    fn runs(&self, _v: Vertex) -> bool {
        true
    }

    fn has_finish_phase(&self) -> bool {
        true
    }

    fn open_sink(&mut self, k: usize) -> Result<Arc<Mutex<SinkWriter>>, TransportError> {
        let spec = &self.plan.graph.sinks[k];
        if let Some(writer) = self.before.as_ref().and_then(|b| b.writer(spec)) {
            self.checkpointer().sinks.push(writer.clone());
            self.opened.push((k, writer.clone()));
            return Ok(writer);
        }
        let checkpointed = self
            .resume
            .as_ref()
            .and_then(|cp| cp.sinks.get(&spec.id).copied());
        let from = checkpointed.or_else(|| self.append.then(|| spec.file_len()).flatten());
        let writer = SinkWriter::open(spec, from)
            .map(|w| Arc::new(Mutex::new(w)))
            .map_err(|e| TransportError::setup(format!("sink `{}`", spec.id), e))?;
        self.checkpointer().sinks.push(writer.clone());
        self.opened.push((k, writer.clone()));
        Ok(writer)
    }

    fn senders(&mut self, from: Vertex, local: &Local, _: &Arc<Shutdown>) -> Result<Senders, TransportError> {
        let graph = &self.plan.graph;
        let edges = graph
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.from == from)
            .map(|(i, e)| (i, local.of_edge(e)))
            .collect();
        let dead_letter = match from {
            Vertex::Node(i) => match graph.nodes[i].on_error {
                ErrorPolicy::DeadLetter(k) => local.sinks[k].clone(),
                _ => None,
            },
            _ => None,
        };
        Ok(Senders { edges, dead_letter })
    }

    fn feed(
        &mut self,
        _v: Vertex,
        _inputs: Vec<Sender>,
        _in_flight: &InFlight,
        _shutdown: &Arc<Shutdown>,
    ) -> Result<Option<Box<dyn Feed>>, TransportError> {
        Ok(None)
    }

    fn background<'t>(&'t self, shutdown: &'t Shutdown) -> Option<Box<dyn FnOnce() + Send + 't>> {
        let graph = &self.plan.graph;
        let expiring = graph.stores.iter().any(|s| s.ttl.is_some());
        if self.checkpointer().log.is_none() && !expiring {
            return None;
        }
        Some(Box::new(move || {
            self.checkpointer()
                .run(self.gate(), graph.checkpoint.interval, shutdown)
        }))
    }

    fn source_batch(&self, i: usize, at: Position) {
        self.gate().boundary(i, at);
    }

    fn source_ended(&self, i: usize, at: Position, _: &Shutdown) -> Result<(), TransportError> {
        self.gate().finished(i, at);
        Ok(())
    }

    fn finish(&mut self, shutdown: &Shutdown) -> Result<u64, TransportError> {
        // Everything has drained: the last checkpoint. After a failure the state may
        // hold part of a batch that was cut short, and after an abort batches were
        // abandoned unprocessed, so the previous checkpoint stays the last.
        let positions = self.gate().positions();
        let mut checkpointer = self.checkpointer();
        if checkpointer.log.is_some() && shutdown.failure().is_none() && !shutdown.is_aborting() {
            let complete = !shutdown.is_stopping();
            let epoch = checkpointer
                .commit(positions, complete)
                .map_err(|e| TransportError::setup("the last checkpoint", e))?;
            tracing::info!(
                epoch,
                checkpoints = checkpointer.taken,
                longest_pause = ?checkpointer.longest_pause,
                "state saved in {}",
                self.plan.graph.checkpoint.dir.display()
            );
        }
        Ok(checkpointer.taken)
    }

    fn hand_over(&mut self) -> Result<Handover, TransportError> {
        let graph = &self.plan.graph;
        let positions = graph.sources.iter().zip(self.gate().positions());
        let mut checkpointer = self.checkpointer();
        let handover = Handover {
            log: checkpointer.log.take(),
            checkpoints: checkpointer.taken,
            positions: positions.map(|(s, at)| (s.clone(), at)).collect(),
            sinks: Handover::sinks(graph, &self.opened),
            kafka: None,
        };
        Ok(handover)
    }
}

/// Opens the state directory of a graph with durable stores, loads the stores from it,
/// and says where to resume if the last run did not finish.
fn open_state(
    plan: &Plan,
    stores: &Stores,
    fresh: bool,
) -> Result<(Option<StateLog>, Option<Checkpoint>), TransportError> {
    let graph = &plan.graph;
    if !graph.is_durable() {
        return Ok((None, None));
    }
    let dir = &graph.checkpoint.dir;
    let (log, recovered) = StateLog::open(dir, stores, fresh)
        .map_err(|e| TransportError::setup(format!("opening the state in {}", dir.display()), e))?;
    let resume = recovered.resumable().cloned();
    if recovered.records > 0 {
        let keys: usize = recovered.stores.values().map(|s| s.len()).sum();
        tracing::info!(
            "restored {keys} keys of durable stores from {}",
            log.dir().display()
        );
    }
    if resume.is_some() && graph.sources.iter().any(|s| matches!(s.kind, SourceKind::Stdin)) {
        tracing::warn!(
            "resuming a graph that reads standard input: input read before the restart is not read again"
        );
    }
    Ok((Some(log), resume))
}
