//! How batches travel between the vertices of a graph: the seam between the runner
//! ([`crate::topology`]) and the two transports that implement it.
//!
//! - [`memory`]: in this process. Every edge is a bounded channel to the consumer's
//!   replicas; durable stores are checkpointed to a local log at consistent cuts (the
//!   sources pause, nothing in flight), and a run ends when its sources end and the
//!   channels empty front to back.
//! - [`kafka`]: every edge is a topic, every node and sink a consumer group, so many
//!   processes share one graph. A consumer's replicas in this process are fed by a
//!   reader of its group (a [`Feed`]); an input batch is acknowledged once its outputs
//!   are safe on the brokers, then its offsets are committed; durable stores are
//!   changelog topics; the process running the whole graph ends the run by draining
//!   vertex after vertex in graph order.
//!
//! What is the same on both — replicas and their instances, routing, error policies,
//! hot swap, status, sinks, sources — lives in the runner, which names neither
//! transport: it asks a [`Transport`] for the senders of each producer, the feeds of
//! each consumer, and the steps of a run's beginning and end.

pub mod kafka;
pub mod memory;

use std::sync::{Arc, Mutex};

use crate::flow::{InFlight, Sender};
use crate::io::http::{Answers, Exchange};
use crate::io::sink::SinkWriter;
use crate::manifest::{Transport as Kind, Vertex};
use crate::plan::Plan;
use crate::shutdown::Shutdown;
use crate::state::Stores;
use crate::state::durable::Position;

/// A failure of a transport, before or while running.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The graph cannot be set up on this transport (what, and why).
    #[error("{what}: {why}")]
    Setup {
        /// What was being done.
        what: String,
        /// Why it failed.
        why: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The transport refuses to run the graph (no brokers, brokers unreachable, a
    /// placement it cannot run), with the reason.
    #[error("{0}")]
    Refused(String),
}

impl TransportError {
    /// A setup step `what` that failed with `why`.
    pub fn setup(what: impl Into<String>, why: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        TransportError::Setup {
            what: what.into(),
            why: why.into(),
        }
    }
}

/// What every run of a graph over a transport goes through, in this order:
///
/// 1. [`Transport::prepare`], once, before any module is instantiated: connect, create
///    what is missing, restore the durable stores; say where each source starts.
/// 2. [`Transport::open_sink`] for every sink that runs here, [`Transport::senders`] for
///    every producer and [`Transport::feed`] for every consumer, wiring the vertices.
/// 3. While running: [`Transport::background`] on a thread of its own;
///    [`Transport::source_batch`] after every batch a source sent and
///    [`Transport::source_ended`] when it ends.
/// 4. When the sources have ended: [`Transport::drain`] (if [`Transport::ends_run`]),
///    then, once every vertex has stopped, [`Transport::finish`].
pub trait Transport: Send + Sync {
    /// Prepares the run: restores `stores`; where each source starts (by index).
    /// `in_flight` counts the batches in this process's channels.
    fn prepare(
        &mut self,
        stores: &Stores,
        in_flight: &InFlight,
        shutdown: &Arc<Shutdown>,
    ) -> Result<Vec<Position>, TransportError>;

    /// The link to services the transport depends on, for status.
    fn link(&self) -> Option<Arc<dyn LinkHealth>> {
        None
    }

    /// This process's place among the processes running the graph (it names the
    /// process in return addresses).
    fn instance(&self) -> &str {
        "local"
    }

    /// Where answers to HTTP requests go: `local` holds this process's open requests;
    /// over Kafka an answer for another process goes to its reply topic, and this
    /// process's reply topic is read into `local`.
    fn answers(
        &mut self,
        local: &Arc<Exchange>,
        _shutdown: &Arc<Shutdown>,
    ) -> Result<Arc<dyn Answers>, TransportError> {
        Ok(local.clone())
    }

    /// Whether `v` runs as a thread in this process (a Kafka source or sink is only a
    /// topic).
    fn runs(&self, v: Vertex) -> bool;

    /// Opens sink `k`'s writer (from its checkpointed length, appended to, or afresh).
    fn open_sink(&mut self, k: usize) -> Result<Arc<Mutex<SinkWriter>>, TransportError>;

    /// Where producer `from` sends: per edge leaving it, the senders of the edge's
    /// consumer; and where its dead letters go. `local` holds the inputs of every
    /// consumer in this process.
    fn senders(
        &mut self,
        from: Vertex,
        local: &Local,
        shutdown: &Arc<Shutdown>,
    ) -> Result<Senders, TransportError>;

    /// What feeds consumer `v` in this process from elsewhere (a Kafka group member), into
    /// `inputs` (its replicas' channels).
    fn feed(
        &mut self,
        v: Vertex,
        inputs: Vec<Sender>,
        in_flight: &InFlight,
        shutdown: &Arc<Shutdown>,
    ) -> Result<Option<Box<dyn Feed>>, TransportError>;

    /// Work beside the vertices for the whole run (checkpoints, expiry).
    fn background<'t>(&'t self, _shutdown: &'t Shutdown) -> Option<Box<dyn FnOnce() + Send + 't>> {
        None
    }

    /// Source `i` sent a batch; `at` is its position after it.
    fn source_batch(&self, _i: usize, _at: Position) {}

    /// Source `i` ended at `at` (`Err`: it failed).
    fn source_ended(&self, i: usize, at: Position, shutdown: &Shutdown) -> Result<(), TransportError>;

    /// Whether this process ends the run when its sources end (else it runs until
    /// stopped).
    fn ends_run(&self) -> bool {
        true
    }

    /// Whether every message between vertices passes through this process's channels
    /// (counted in `in_flight`), so a run has one finish phase (see `topology::finish`).
    fn has_finish_phase(&self) -> bool {
        false
    }

    /// The sources have ended: let the vertices drain, in whatever order the transport
    /// needs, until every one has ended (or the run stops). Also called when the graph
    /// stops for a change (after [`Transport::change`]).
    fn drain(&self, _shutdown: &Shutdown) {}

    /// The graph stops to go on as a changed one (see `topology::apply`): the consumers
    /// `drains` names read their inputs to the end first (a removed vertex, one an input
    /// of is removed); every other one stops at its next batch boundary, committing.
    /// The sources stop on their own.
    fn change(&self, _drains: &dyn Fn(Vertex) -> bool) {}

    /// Every vertex has stopped: the last step (a final checkpoint). Returns the
    /// checkpoints taken during the run.
    fn finish(&mut self, shutdown: &Shutdown) -> Result<u64, TransportError>;

    /// Every vertex has stopped because the graph changes while it runs (see
    /// `topology::apply`): instead of [`Transport::finish`], what the transport of the
    /// changed graph goes on from.
    fn hand_over(&mut self) -> Result<Handover, TransportError> {
        Err(TransportError::Refused(
            "this transport cannot change a graph while it runs".into(),
        ))
    }
}

/// What a transport hands on to the transport of the changed graph of a running one.
#[derive(Default)]
pub struct Handover {
    /// The durable stores' log, if the graph has one, and the checkpoints taken so far.
    pub(crate) log: Option<crate::state::durable::StateLog>,
    pub(crate) checkpoints: u64,
    /// Where each source stopped (a source of the changed graph with its id that reads
    /// the same goes on from there).
    pub(crate) positions: Vec<(crate::manifest::SourceSpec, Position)>,
    /// Each sink's writer (a sink of the changed graph with its id that writes the same
    /// goes on writing with it).
    pub(crate) sinks: Vec<(crate::manifest::SinkSpec, Arc<Mutex<SinkWriter>>)>,
    /// Over Kafka: the link and the group members that go on.
    pub(crate) kafka: Option<kafka::Carried>,
}

impl Handover {
    /// The sinks' writers opened (by sink index), with their sinks.
    pub(crate) fn sinks(
        graph: &crate::manifest::Graph,
        opened: &[(usize, Arc<Mutex<SinkWriter>>)],
    ) -> Vec<(crate::manifest::SinkSpec, Arc<Mutex<SinkWriter>>)> {
        let sinks = opened.iter().map(|(k, w)| (graph.sinks[*k].clone(), w.clone()));
        sinks.collect()
    }

    /// Where the source of the changed graph like `spec` (its id, reading the same) goes
    /// on from, if the graph before had it.
    pub(crate) fn position(&self, spec: &crate::manifest::SourceSpec) -> Option<Position> {
        let mut before = self.positions.iter();
        before
            .find(|(b, _)| b.id == spec.id && b.kind.same_as(&spec.kind))
            .map(|(_, at)| *at)
    }

    /// The writer the sink of the changed graph like `spec` (its id, writing the same)
    /// goes on with, if the graph before had it.
    pub(crate) fn writer(&self, spec: &crate::manifest::SinkSpec) -> Option<Arc<Mutex<SinkWriter>>> {
        let mut before = self.sinks.iter();
        before
            .find(|(b, _)| b.id == spec.id && b.kind.same_as(&spec.kind))
            .map(|(_, w)| w.clone())
    }
}

/// The inputs of the consumers in this process, by vertex: a sender per replica of
/// each node, one per sink.
#[derive(Default)]
pub struct Local {
    /// Per node, per replica.
    pub nodes: Vec<Vec<Sender>>,
    /// Per node, per replica: the senders of feedback edges into it (that never wait;
    /// empty for a node no feedback edge enters).
    pub feedback: Vec<Vec<Sender>>,
    /// Per sink (`None`: not here).
    pub sinks: Vec<Option<Sender>>,
}

impl Local {
    /// The senders of edge `e`'s consumer: a feedback edge's never wait.
    pub fn of_edge(&self, e: &crate::manifest::Edge) -> Vec<Sender> {
        match (e.feedback, e.to) {
            (Some(_), Vertex::Node(i)) => self.feedback[i].clone(),
            _ => self.of(e.to),
        }
    }

    /// The senders into consumer `v`'s replicas (empty if it is not here).
    pub fn of(&self, v: Vertex) -> Vec<Sender> {
        match v {
            Vertex::Node(i) => self.nodes[i].clone(),
            Vertex::Sink(k) => self.sinks[k].iter().cloned().collect(),
            Vertex::Source(_) => Vec::new(),
        }
    }
}

/// Where one producer sends.
#[derive(Default)]
pub struct Senders {
    /// Per edge leaving it (its index into `graph.edges`): the consumer's senders.
    pub edges: Vec<(usize, Vec<Sender>)>,
    /// Where its dead letters go.
    pub dead_letter: Option<Sender>,
}

/// A consumer's reader of input from outside the process, run on a thread of its own.
pub trait Feed: Send {
    /// Reads until the input ends (or the run stops), then lets go of its senders; once
    /// `ended` returns (every replica of the consumer has ended), settles what is left.
    fn run(self: Box<Self>, ended: &mut dyn FnMut(), shutdown: &Shutdown);
}

/// The health of a transport's link to its services (the Kafka brokers).
pub trait LinkHealth: Send + Sync {
    /// As status shows it.
    fn report(&self) -> LinkReport;

    /// Records this process delivered to `topic`.
    fn written_to(&self, topic: &str) -> u64;
}

/// A link's health in status.
#[derive(Debug, Clone)]
pub struct LinkReport {
    /// The services (bootstrap brokers).
    pub brokers: String,
    /// Whether they are reachable.
    pub connected: bool,
    /// Errors seen.
    pub errors: u64,
    /// The last error.
    pub last_error: Option<String>,
    /// This process's consumer groups: partitions, offsets, lag.
    pub inputs: Vec<kafka::progress::GroupReport>,
}

/// The transport `plan` asks for.
pub fn for_plan<'p>(
    plan: &'p Plan,
    batch_size: usize,
    append: bool,
    fresh: bool,
) -> Result<Box<dyn Transport + 'p>, TransportError> {
    Ok(match plan.graph.transport {
        Kind::InProcess => {
            if !plan.placement.whole() {
                return Err(TransportError::Refused(
                    "--nodes places nodes on processes of a Kafka graph: run it with transport = \"kafka\""
                        .into(),
                ));
            }
            Box::new(memory::Memory::new(plan, append, fresh))
        }
        Kind::Kafka => Box::new(kafka::KafkaTransport::new(plan, batch_size)?),
    })
}

/// The transport of `plan`, the changed graph of a running one, going on from what the
/// transport before handed on.
pub fn after<'p>(
    plan: &'p Plan,
    batch_size: usize,
    append: bool,
    before: Handover,
) -> Result<Box<dyn Transport + 'p>, TransportError> {
    Ok(match plan.graph.transport {
        Kind::InProcess => Box::new(memory::Memory::after(plan, append, before)),
        Kind::Kafka => Box::new(kafka::KafkaTransport::new(plan, batch_size)?.after(before)),
    })
}
