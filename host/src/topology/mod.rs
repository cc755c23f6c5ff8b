//! The runner: a graph's vertices in this process, whatever the transport. Every node
//! replica and every source and sink runs on its own thread, with a bounded channel in
//! front of each consumer (a slow consumer slows its producers). The [`Transport`] says
//! where a producer's batches go (those channels, or topics), what feeds a consumer from
//! outside the process, and how a run begins and ends; error policies, hot swap, status
//! and the report are the same on both.
//!
//! [`Runner::start`] loads and wires everything and returns before any thread runs, so
//! the caller can start its observers (admin endpoint, watcher, progress line) from
//! [`Runner::status`]; [`Runner::run`] then runs the graph to its end.

pub mod apply;
pub mod finish;
mod replica;
pub mod status;
pub mod swap;
mod timers;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use crate::message::headers;
pub use status::Status;

use crate::engine::{Engine, EngineError, NodeSetup, NodeTemplate};
use crate::flow::feedback::{LoopGate, looped_channel};
use crate::flow::watermark::{Generator, Mark, Marked, Time, Watermarks};
use crate::flow::{Ack, InFlight, Mailbox, Route, Router, Sender, channel};
use crate::io::http::{Answers, Exchange, HttpServer};
use crate::io::sink::SinkWriter;
use crate::io::source;
use crate::manifest::{Graph, SinkKind, SourceKind, Vertex};
use crate::message::Msg;
use crate::plan::Plan;
use crate::shutdown::Shutdown;
use crate::state::Stores;
use crate::state::durable::Position;
use crate::transport::{Feed, Local, Senders, Transport, TransportError};
use finish::{FinishGate, FinishRecord};
use replica::{Pause, Replica, Running};
use status::{Phase, SinkStatus};
use swap::NodeVersions;
use timers::NodeTimers;

/// Runtime knobs (command-line flags, not manifest fields).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Messages per batch read from a source.
    pub batch_size: usize,
    /// Batches a channel holds before its producer waits.
    pub channel_capacity: usize,
    /// Discard the saved state of durable stores and start the sources afresh.
    pub fresh: bool,
    /// How often each replica reports it is alive.
    pub heartbeat: Duration,
    /// Keep the latest messages of each sink for `/sinks/<id>/tail`.
    pub tails: bool,
    /// File sinks append to what their files hold instead of starting them afresh.
    pub append: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_size: 256,
            channel_capacity: 16,
            fresh: false,
            heartbeat: Duration::from_secs(1),
            tails: false,
            append: false,
        }
    }
}

/// Live counters of one node, shared by its replicas.
#[derive(Debug)]
pub struct NodeStats {
    received: AtomicU64,
    emitted: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
    retries: AtomicU64,
    traps: AtomicU64,
    abandoned: AtomicU64,
    dropped: AtomicU64,
    /// Of those, per output port (touched only when something is dropped).
    dropped_by_port: Mutex<std::collections::BTreeMap<String, u64>>,
    at_finish: AtomicU64,
    /// The node's budget of per-message warnings (a skipped message each).
    warnings: crate::throttle::Throttle,
}

impl Default for NodeStats {
    fn default() -> Self {
        NodeStats {
            received: AtomicU64::default(),
            emitted: AtomicU64::default(),
            errors: AtomicU64::default(),
            skipped: AtomicU64::default(),
            dead_lettered: AtomicU64::default(),
            retries: AtomicU64::default(),
            traps: AtomicU64::default(),
            abandoned: AtomicU64::default(),
            dropped: AtomicU64::default(),
            dropped_by_port: Mutex::default(),
            at_finish: AtomicU64::default(),
            warnings: crate::throttle::Throttle::new(20),
        }
    }
}

impl NodeStats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` records dropped on output port `port`.
    fn dropped_at(&self, port: &str, n: usize) {
        let mut by_port = self.dropped_by_port.lock().unwrap_or_else(|e| e.into_inner());
        *by_port.entry(port.to_owned()).or_default() += n as u64;
    }

    /// A snapshot.
    pub fn counts(&self) -> NodeCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NodeCounts {
            received: get(&self.received),
            emitted: get(&self.emitted),
            errors: get(&self.errors),
            skipped: get(&self.skipped),
            dead_lettered: get(&self.dead_lettered),
            retries: get(&self.retries),
            traps: get(&self.traps),
            abandoned: get(&self.abandoned),
            dropped: get(&self.dropped),
            dropped_by_port: self
                .dropped_by_port
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            emitted_at_finish: get(&self.at_finish),
        }
    }
}

/// Counts of one node.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeCounts {
    /// Messages delivered to the node.
    pub received: u64,
    /// Records it emitted.
    pub emitted: u64,
    /// Messages that failed for good (whatever the policy did with them).
    pub errors: u64,
    /// Failed messages skipped.
    pub skipped: u64,
    /// Failed messages sent to the dead-letter sink.
    pub dead_lettered: u64,
    /// Retries of retryable errors.
    pub retries: u64,
    /// Instances that trapped and were replaced.
    pub traps: u64,
    /// Messages left unprocessed because the graph had to stop at once (an abort).
    #[serde(default)]
    pub abandoned: u64,
    /// Records written to an output port that no edge leaves (dropped).
    #[serde(default)]
    pub dropped: u64,
    /// Of those, per output port.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dropped_by_port: std::collections::BTreeMap<String, u64>,
    /// Of the records emitted, those its `finish` emitted.
    #[serde(default)]
    pub emitted_at_finish: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Per node: id, module hash, counts.
    pub nodes: Vec<(String, String, NodeCounts)>,
    /// Per source: id, messages read.
    pub sources: Vec<(String, u64)>,
    /// Per sink: id, messages written.
    pub sinks: Vec<(String, u64)>,
    /// Why the graph stopped early, if it failed.
    pub failure: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The graph's stores as the run left them.
    pub stores: Stores,
    /// Checkpoints of durable stores taken while running (besides the last one).
    pub checkpoints: u64,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "finished in {:.2?}", self.elapsed)?;
        for (id, n) in &self.sources {
            writeln!(f, "  source {id:<16} read {n}")?;
        }
        for (id, _, c) in &self.nodes {
            write!(
                f,
                "  node   {id:<16} in {} out {} errors {}",
                c.received, c.emitted, c.errors
            )?;
            for (what, n) in [
                ("skipped", c.skipped),
                ("dead-lettered", c.dead_lettered),
                ("retries", c.retries),
                ("traps", c.traps),
                ("abandoned", c.abandoned),
            ] {
                if n > 0 {
                    write!(f, " {what} {n}")?;
                }
            }
            if c.dropped > 0 {
                let ports: Vec<String> = c
                    .dropped_by_port
                    .iter()
                    .map(|(p, n)| format!("`{p}` {n}"))
                    .collect();
                write!(f, " dropped {} (port {})", c.dropped, ports.join(", "))?;
            }
            writeln!(f)?;
        }
        for (id, n) in &self.sinks {
            writeln!(f, "  sink   {id:<16} wrote {n}")?;
        }
        Ok(())
    }
}

/// Loads every node of `plan` (its modules already read) and checks each against the
/// WIT world, before anything runs.
pub fn load(plan: &Plan, engine: &Engine, stores: &Stores) -> Result<Vec<Arc<NodeTemplate>>, RunError> {
    plan.graph
        .nodes
        .iter()
        .zip(&plan.modules)
        .map(|(n, source)| {
            let module = engine.load(source).map_err(|e| RunError::node(&n.id, e))?;
            NodeTemplate::new(engine, module, NodeSetup::from_spec(n, stores))
                .map_err(|e| RunError::node(&n.id, e))
        })
        .collect()
}

/// Why a run could not start or end cleanly (a vertex failing while running is not an
/// error: it is the report's `failure`).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A node's module cannot be loaded, linked or instantiated.
    #[error("node `{node}`: {why}")]
    Node {
        /// The node.
        node: String,
        /// What went wrong.
        why: EngineError,
    },
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl RunError {
    fn node(id: &str, why: EngineError) -> Self {
        RunError::Node {
            node: id.to_owned(),
            why,
        }
    }
}

/// Messages per source or sink, by id.
type Counts = Vec<(String, u64)>;

/// What a run keeps per node, whatever the transport.
struct Nodes {
    pub stats: Vec<Arc<NodeStats>>,
    pub versions: Vec<Arc<NodeVersions>>,
    pub status: Arc<Status>,
    /// Where every replica's timers are kept.
    pub timers: Arc<crate::state::Store>,
    /// Per node, the instances its replicas start with if not fresh ones (a changed graph
    /// goes on with those its replicas handed on).
    pub given: Vec<Option<Vec<Running>>>,
    /// Per node, how its replicas end if the graph changes.
    pub pauses: Vec<Arc<Pause>>,
}

impl Nodes {
    /// Loads every node and sets up its counters, versions and status.
    pub fn load(plan: &Plan, engine: &Engine, opts: &RunOptions, stores: &Stores) -> Result<Nodes, RunError> {
        let graph = &plan.graph;
        let templates = load(plan, engine, stores)?;
        let stats: Vec<Arc<NodeStats>> = graph.nodes.iter().map(|_| Arc::default()).collect();
        let versions: Vec<Arc<NodeVersions>> = graph
            .nodes
            .iter()
            .zip(&templates)
            .map(|(spec, t)| {
                let setup = NodeSetup::from_spec(spec, stores);
                NodeVersions::new(engine, t.clone(), setup, spec.auto_rollback, opts.heartbeat)
            })
            .collect();
        let status = Arc::new(Status::new(
            graph,
            (&versions, &stats),
            stores.clone(),
            opts.heartbeat,
            opts.tails,
        ));
        Ok(Nodes {
            stats,
            versions,
            status,
            timers: stores.timers(),
            given: graph.nodes.iter().map(|_| None).collect(),
            pauses: graph.nodes.iter().map(|_| Arc::default()).collect(),
        })
    }

    /// The nodes of a changed graph (see [`apply`]): `status` takes its shape.
    pub fn resumed(graph: &Graph, next: Vec<apply::NextNode>, status: Arc<Status>, stores: &Stores) -> Nodes {
        let (mut stats, mut versions, mut given) = (Vec::new(), Vec::new(), Vec::new());
        for n in next {
            stats.push(n.stats);
            versions.push(n.versions);
            given.push(n.instances);
        }
        status.reshape(graph, (&versions, &stats), stores.clone());
        Nodes {
            stats,
            versions,
            status,
            timers: stores.timers(),
            given,
            pauses: graph.nodes.iter().map(|_| Arc::default()).collect(),
        }
    }

    /// One instance per replica of node `i`: those it was given, or fresh ones of its
    /// current version.
    pub fn instances(&mut self, graph: &Graph, i: usize) -> Result<Vec<Running>, RunError> {
        let replicas = graph.nodes[i].replicas as usize;
        if let Some(given) = self.given[i].take().filter(|g| g.len() == replicas) {
            return Ok(given);
        }
        let version = self.versions[i].current();
        (0..replicas as u32)
            .map(|r| {
                Ok(Running {
                    instance: version.instantiate_replica(r)?,
                    version: version.clone(),
                    generation: self.versions[i].published(),
                })
            })
            .collect::<Result<_, EngineError>>()
            .map_err(|e| RunError::node(&graph.nodes[i].id, e))
    }

    /// The replicas of node `i`, each with its instance, its router and its input.
    #[allow(clippy::too_many_arguments)]
    pub fn replicas(
        &self,
        graph: &Graph,
        i: usize,
        instances: Vec<Running>,
        mut router: impl FnMut() -> Router,
        (dead_letter, answers, loop_gate): Outlets,
        inputs: Vec<Mailbox>,
        (opts, shutdown, in_flight, finish_gate): (&RunOptions, &Arc<Shutdown>, &InFlight, &Arc<FinishGate>),
        producers: &Producers,
    ) -> Vec<(ReplicaThread, Mailbox)> {
        let spec = &graph.nodes[i];
        let finish_barrier = Arc::new(Barrier::new(spec.replicas as usize));
        instances
            .into_iter()
            .zip(inputs)
            .enumerate()
            .map(|(r, (running, rx))| {
                let replica = Replica {
                    id: spec.id.as_str().into(),
                    instance: running.instance,
                    outputs: spec.outputs.clone().into(),
                    max_output: spec.max_output,
                    inputs: spec.inputs.clone().into(),
                    router: router(),
                    dead_letter: dead_letter.clone(),
                    answers: answers.clone(),
                    ack: Ack::none(),
                    policy: spec.on_error,
                    retry: spec.retry,
                    stats: self.stats[i].clone(),
                    shutdown: shutdown.clone(),
                    provenance: graph.provenance,
                    in_flight: in_flight.clone(),
                    finish_barrier: finish_barrier.clone(),
                    finish_gate: finish_gate.clone(),
                    status: self.status.replica(i, r),
                    heartbeat: opts.heartbeat,
                    index: r,
                    versions: self.versions[i].clone(),
                    version: running.version,
                    generation: running.generation,
                    failures: 0,
                    warned_drop: false,
                    held: None,
                    producer: producers.id(Vertex::Node(i), r),
                    watermarks: Watermarks::new(producers.feeding(graph, Vertex::Node(i))),
                    mark: None,
                    event_time: None,
                    timers: NodeTimers::load(self.timers.clone(), &spec.id, r),
                    loop_gate: loop_gate.clone(),
                    pause: self.pauses[i].clone(),
                };
                (ReplicaThread(replica), rx)
            })
            .collect()
    }

    /// The run has ended: its phase set, its services stopped, its report (`elapsed`
    /// and `checkpoints` left for the caller).
    pub fn ended(
        &self,
        graph: &Graph,
        shutdown: &Shutdown,
        (sources, sinks): (Counts, Counts),
        stores: Stores,
    ) -> RunReport {
        let failure = shutdown.failure();
        let phase = if failure.is_some() {
            Phase::Failed
        } else {
            Phase::Stopped
        };
        self.status.phase.set(phase);
        RunReport {
            nodes: graph
                .nodes
                .iter()
                .zip(&self.versions)
                .zip(&self.stats)
                .map(|((n, v), s)| (n.id.clone(), v.current().hash().to_owned(), s.counts()))
                .collect(),
            sources,
            sinks,
            failure,
            elapsed: Duration::ZERO,
            stores,
            checkpoints: 0,
        }
    }
}

/// Who produces watermarks in this process: a number per source and per node replica,
/// and how many feed each consumer.
struct Producers {
    /// Per node, the number of its first replica.
    first: Vec<u32>,
    /// Over Kafka: each consumer's producer is its reader.
    read: bool,
}

impl Producers {
    fn new(graph: &Graph, read: bool) -> Self {
        let mut next = graph.sources.len() as u32;
        let first = graph
            .nodes
            .iter()
            .map(|n| {
                let at = next;
                next += n.replicas;
                at
            })
            .collect();
        Producers { first, read }
    }

    /// The number of replica `replica` of `v` (a source: 0).
    fn id(&self, v: Vertex, replica: usize) -> u32 {
        match v {
            Vertex::Source(i) => i as u32,
            Vertex::Node(i) => self.first[i] + replica as u32,
            Vertex::Sink(_) => u32::MAX, // sinks produce nothing
        }
    }

    /// How many producers feed each replica of `v`: every replica of every vertex with
    /// an edge to it, each once (over Kafka: the vertex's reader).
    fn feeding(&self, graph: &Graph, v: Vertex) -> usize {
        if self.read {
            return 1;
        }
        // (Feedback edges carry no watermarks: a loop's is its inputs' from outside.)
        let mut from: Vec<Vertex> = graph
            .edges
            .iter()
            .filter(|e| e.to == v && e.feedback.is_none())
            .map(|e| e.from)
            .collect();
        from.sort();
        from.dedup();
        from.iter()
            .map(|f| match f {
                Vertex::Node(j) => graph.nodes[*j].replicas as usize,
                _ => 1,
            })
            .sum()
    }
}

/// Where a node's replicas send besides their edges: dead letters, answers to HTTP
/// requests, and the loop whose feedback edges they hold.
type Outlets = (Option<Sender>, Option<Arc<dyn Answers>>, Option<Arc<LoopGate>>);

/// A node replica, ready to run on a thread of its own.
struct ReplicaThread(Replica);

impl ReplicaThread {
    /// Processes `input` until it closes, then finishes (or hands its instance on to a
    /// changed graph).
    pub fn run(self, input: Mailbox) -> Option<Running> {
        let span = tracing::info_span!("node", node = %self.0.id);
        span.in_scope(|| self.0.run(input))
    }
}

/// A graph loaded and wired in this process, ready to run.
pub struct Runner<'a> {
    plan: &'a Plan,
    opts: &'a RunOptions,
    shutdown: Arc<Shutdown>,
    transport: Box<dyn Transport + 'a>,
    started: Instant,
    stores: Stores,
    nodes: Nodes,
    starts: Vec<Position>,
    in_flight: InFlight,
    finish_gate: Arc<FinishGate>,
    /// Per node here: its replicas and their inputs.
    replicas: Vec<(usize, Vec<(ReplicaThread, Mailbox)>)>,
    /// Per sink here: its writer and input.
    sinks: Vec<(usize, Arc<Mutex<SinkWriter>>, Mailbox)>,
    /// Per source here: its router.
    sources: Vec<(usize, Router)>,
    /// What feeds consumers from outside the process.
    feeds: Vec<(Vertex, Box<dyn Feed>)>,
    /// This process's open HTTP requests, and its listening `http` sources by index.
    exchange: Arc<Exchange>,
    http: Vec<Option<HttpServer>>,
    /// What the graphs before this one read and wrote, by source and sink (a changed graph).
    before: (Counts, Counts),
}

/// How a graph's run in this process ended.
pub(crate) enum Ended {
    /// It ran to its end (or stopped, or failed).
    Done(RunReport),
    /// It stopped to go on as the changed graph `next` prepared (see [`apply`]); what it
    /// hands on, and per node of it the instances its replicas handed on.
    Changed(Box<apply::Changed>),
}

impl<'a> Runner<'a> {
    /// Prepares the transport (restoring state), loads every node, and wires the
    /// vertices this process runs; nothing runs yet.
    pub fn start(
        plan: &'a Plan,
        engine: &Engine,
        opts: &'a RunOptions,
        shutdown: &Arc<Shutdown>,
        transport: Box<dyn Transport + 'a>,
    ) -> Result<Self, RunError> {
        Self::start_with(plan, engine, opts, shutdown, transport, None)
    }

    /// Like [`Runner::start`], for the changed graph of a running one: with the stores,
    /// status and counts `carry` hands on, and the nodes prepared for it.
    pub(crate) fn start_with(
        plan: &'a Plan,
        engine: &Engine,
        opts: &'a RunOptions,
        shutdown: &Arc<Shutdown>,
        mut transport: Box<dyn Transport + 'a>,
        resumed: Option<(apply::Carry, Vec<apply::NextNode>)>,
    ) -> Result<Self, RunError> {
        let graph = &plan.graph;
        // An interrupted run drains for at most its longest call deadline; then calls
        // still running are cut short.
        let grace = graph.nodes.iter().map(|n| n.timeout).max().unwrap_or_default();
        shutdown.set_grace(grace.max(Duration::from_secs(1)));
        shutdown.raise_on_abort(engine.cut_flag());
        let in_flight = InFlight::default();
        let (started, stores, mut nodes, starts, before) = match resumed {
            None => {
                let stores = Stores::for_graph(graph);
                let starts = transport.prepare(&stores, &in_flight, shutdown)?;
                let nodes = Nodes::load(plan, engine, opts, &stores)?;
                (Instant::now(), stores, nodes, starts, Default::default())
            }
            Some((carry, next)) => {
                let starts = transport.prepare(&carry.stores, &in_flight, shutdown)?;
                let nodes = Nodes::resumed(graph, next, carry.status, &carry.stores);
                (carry.started, carry.stores, nodes, starts, carry.counts)
            }
        };
        let status = nodes.status.clone();
        let exchange = Exchange::new(transport.instance());
        let serves = graph
            .sources
            .iter()
            .any(|s| matches!(s.kind, SourceKind::Http(_)));
        let answers = serves
            .then(|| transport.answers(&exchange, shutdown))
            .transpose()?;
        if let Some(link) = transport.link() {
            status.set_link(link);
        }
        let placed: Vec<Vertex> = (0..graph.sources.len())
            .map(Vertex::Source)
            .chain((0..graph.nodes.len()).map(Vertex::Node))
            .chain((0..graph.sinks.len()).map(Vertex::Sink))
            .filter(|&v| transport.runs(v))
            .collect();
        status.set_runs(graph, &placed);
        let here = |v: Vertex| placed.contains(&v);

        // Every consumer's input channels here: per replica of a node, one per sink.
        let mut local = Local::default();
        let mut inputs: Vec<Vec<Mailbox>> = Vec::new();
        // A node a feedback edge enters takes that edge's batches beyond its capacity
        // (see `flow::feedback`).
        let fed_back = |i: usize| {
            graph
                .edges
                .iter()
                .any(|e| e.feedback.is_some() && e.to == Vertex::Node(i))
        };
        for (i, n) in graph.nodes.iter().enumerate() {
            let (mut tx, mut fb, mut rx) = (Vec::new(), Vec::new(), Vec::new());
            for r in (0..n.replicas as usize).filter(|_| here(Vertex::Node(i))) {
                let depth = status.replica(i, r).queue.clone();
                if fed_back(i) {
                    let (waits, never, mailbox) = looped_channel(opts.channel_capacity, depth);
                    tx.push(waits);
                    fb.push(never);
                    rx.push(mailbox);
                } else {
                    let (waits, mailbox) = channel(opts.channel_capacity, depth);
                    tx.push(waits);
                    rx.push(mailbox);
                }
            }
            local.nodes.push(tx);
            local.feedback.push(fb);
            inputs.push(rx);
        }
        // Each loop's gate, and the loop each node is in.
        let loops = graph.loops();
        let gates: Vec<Arc<LoopGate>> = loops.iter().map(|_| Arc::default()).collect();
        let loop_of = |v: Vertex| match v {
            Vertex::Node(i) => loops.iter().position(|l| l.contains(&i)),
            _ => None,
        };
        status.set_loops(&loops, &gates);
        let mut sinks = Vec::new();
        for k in 0..graph.sinks.len() {
            if !here(Vertex::Sink(k)) {
                local.sinks.push(None);
                continue;
            }
            let (tx, rx) = channel(opts.channel_capacity, status.sink(k).queue.clone());
            local.sinks.push(Some(tx));
            let writer = match (&graph.sinks[k].kind, &answers) {
                (SinkKind::Reply, Some(answers)) => Arc::new(Mutex::new(SinkWriter::reply(answers.clone()))),
                _ => transport.open_sink(k)?,
            };
            sinks.push((k, writer, rx));
        }
        // Listening before anything runs: a port in use fails the start.
        let mut http = Vec::new();
        for (i, s) in graph.sources.iter().enumerate() {
            http.push(match &s.kind {
                SourceKind::Http(spec) if here(Vertex::Source(i)) => {
                    let server = HttpServer::bind(&s.id, spec, exchange.clone())
                        .map_err(|e| TransportError::setup(format!("source `{}`", s.id), e))?;
                    status.set_http(i, server.stats(), exchange.clone());
                    Some(server)
                }
                _ => None,
            });
        }

        let finish_gate = Arc::new(if transport.has_finish_phase() {
            let files = sinks
                .iter()
                .filter(|(k, _, _)| graph.sinks[*k].file_path().is_some())
                .map(|(k, w, _)| (*k, w.clone()))
                .collect();
            let sources_here = (0..graph.sources.len())
                .filter(|&i| here(Vertex::Source(i)))
                .count();
            FinishGate::after(sources_here, in_flight.clone(), files)
        } else {
            FinishGate::open()
        });

        // Every producer's routes, then every consumer's feed.
        let router = |senders: &Senders, ports: usize| {
            let mut r = Router::new(ports);
            for (e, targets) in &senders.edges {
                let edge = &graph.edges[*e];
                let mut route = Route::new(targets.clone(), edge.to_port, edge.connection, in_flight.clone());
                match (edge.feedback, loop_of(edge.from), loop_of(edge.to)) {
                    (Some(f), _, Some(l)) => route = route.feeding(gates[l].clone(), f.max_iterations),
                    (None, from, Some(l)) if from != Some(l) => route = route.entering(gates[l].clone()),
                    _ => {}
                }
                r.add(edge.from_port, route);
            }
            r
        };
        // In-process watermarks come from each producer on the channels; over Kafka
        // from each consumer's reader, which takes them out of its topics.
        let producers = Producers::new(graph, graph.transport == crate::manifest::Transport::Kafka);
        let mut sources = Vec::new();
        for i in (0..graph.sources.len()).filter(|&i| here(Vertex::Source(i))) {
            let senders = transport.senders(Vertex::Source(i), &local, shutdown)?;
            sources.push((i, router(&senders, 1)));
        }
        let mut replicas = Vec::new();
        for (i, rx) in inputs.into_iter().enumerate() {
            if !here(Vertex::Node(i)) {
                continue;
            }
            let spec = &graph.nodes[i];
            let senders = transport.senders(Vertex::Node(i), &local, shutdown)?;
            let instances = nodes.instances(graph, i)?;
            let context = (opts, shutdown, &in_flight, &finish_gate);
            let dead_letter = senders.dead_letter.clone();
            let make_router = || router(&senders, spec.outputs.len());
            let feeds = graph
                .edges
                .iter()
                .any(|e| e.feedback.is_some() && e.from == Vertex::Node(i));
            // In-process it sees its loop end (see `flow::feedback`); over Kafka the
            // transport does, and the replica ends as its feed does.
            let loop_gate = loop_of(Vertex::Node(i))
                .filter(|_| feeds && transport.has_finish_phase())
                .map(|l| gates[l].clone());
            replicas.push((
                i,
                nodes.replicas(
                    graph,
                    i,
                    instances,
                    make_router,
                    (dead_letter, answers.clone(), loop_gate),
                    rx,
                    context,
                    &producers,
                ),
            ));
        }
        let mut feeds = Vec::new();
        let consumers = (0..graph.nodes.len())
            .map(Vertex::Node)
            .chain((0..graph.sinks.len()).map(Vertex::Sink));
        for v in consumers.filter(|&v| here(v)) {
            if let Some(feed) = transport.feed(v, local.of(v), &in_flight, shutdown)? {
                feeds.push((v, feed));
            }
        }
        // Only routers and feeds hold senders now: each channel closes when its
        // producers end.
        drop(local);
        Ok(Runner {
            plan,
            opts,
            shutdown: shutdown.clone(),
            transport,
            started,
            stores,
            nodes,
            starts,
            in_flight,
            finish_gate,
            replicas,
            sinks,
            sources,
            feeds,
            exchange,
            http,
            before,
        })
    }

    /// The running graph's status, for observers (admin endpoint, watcher, progress).
    pub fn status(&self) -> &Arc<Status> {
        &self.nodes.status
    }

    /// The graph's stores.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Runs the graph until its sources end and everything drained (or a stop is
    /// requested, or a vertex fails); then the transport's last step.
    pub fn run(self) -> Result<RunReport, RunError> {
        match self.run_until_changed(None)? {
            Ended::Done(report) => Ok(report),
            // (No door, no change.)
            Ended::Changed(_) => Err(RunError::Transport(TransportError::Refused(
                "the graph changed while it ran without taking changes".into(),
            ))),
        }
    }

    /// Like [`Runner::run`], also taking the changes asked at `door` (see [`apply`]): one
    /// that is prepared stops this graph at its sources' next batch boundary, lets
    /// everything in flight drain through it, and ends it to go on as the changed graph.
    pub(crate) fn run_until_changed(self, door: Option<&apply::Door>) -> Result<Ended, RunError> {
        let Runner {
            plan,
            opts,
            shutdown,
            mut transport,
            started,
            stores,
            nodes,
            starts,
            in_flight,
            finish_gate,
            replicas,
            sinks,
            sources,
            feeds,
            exchange,
            http,
            before,
        } = self;
        let graph = &plan.graph;
        let shutdown = &shutdown;
        // Set once a change is prepared: the sources stop at their next batch boundary.
        let changing = std::sync::atomic::AtomicBool::new(false);
        let changing = &changing;
        let stop = || shutdown.is_stopping() || changing.load(Ordering::SeqCst);
        let stop = &stop;
        let status = nodes.status.clone();
        status.phase.set(Phase::Running);
        // Per consumer: a channel its threads hold while alive, so its feed can wait
        // for it to end.
        let slot = |v: Vertex| match v {
            Vertex::Node(i) => i,
            Vertex::Sink(k) => graph.nodes.len() + k,
            Vertex::Source(_) => unreachable!("sources consume nothing"),
        };
        let (alive, ended): (Vec<_>, Vec<_>) = (0..graph.nodes.len() + graph.sinks.len())
            .map(|_| mpsc::channel::<()>())
            .unzip();
        let transport_ref = &*transport;
        let gate = &*finish_gate;
        let timers = &*nodes.timers;
        let (sources, sinks, next, handed) = std::thread::scope(|s| {
            let sinks: Vec<_> = sinks
                .into_iter()
                .map(|(k, writer, rx)| {
                    let (spec, sink) = (&graph.sinks[k], status.sink(k));
                    let (alive, in_flight) = (alive[slot(Vertex::Sink(k))].clone(), in_flight.clone());
                    s.spawn(move || {
                        let written = drain_sink(&spec.id, &writer, rx, shutdown, &in_flight, &sink);
                        drop(alive);
                        (spec.id.clone(), written)
                    })
                })
                .collect();
            let mut handing = Vec::new();
            for (i, replicas) in replicas {
                for (r, (replica, rx)) in replicas.into_iter().enumerate() {
                    let alive = alive[slot(Vertex::Node(i))].clone();
                    let handle = s.spawn(move || {
                        let running = replica.run(rx);
                        drop(alive);
                        running
                    });
                    handing.push((i, r, handle));
                }
            }
            drop(alive);
            let mut ended: Vec<Option<mpsc::Receiver<()>>> = ended.into_iter().map(Some).collect();
            for (v, feed) in feeds {
                let ended = ended[slot(v)].take().expect("one feed per consumer");
                let span = tracing::info_span!("feed", vertex = %graph.id(v));
                s.spawn(move || {
                    let mut wait = || while ended.recv().is_ok() {};
                    span.in_scope(|| feed.run(&mut wait, shutdown));
                });
            }
            if let Some(background) = transport_ref.background(shutdown) {
                s.spawn(background);
            }
            let sources: Vec<_> = sources
                .into_iter()
                .map(|(i, mut router)| {
                    let (spec, start, read) = (&graph.sources[i], starts[i], status.source(i));
                    let server = http[i].as_ref();
                    let span = tracing::info_span!("source", source = %spec.id);
                    s.spawn(move || {
                        let _entered = span.enter();
                        let marked = |mark, idle_after| Marked {
                            from: i as u32,
                            mark,
                            idle_after,
                        };
                        // The largest timestamp read is kept with the graph's timers, so a
                        // source resumed from a checkpoint goes on with its watermark.
                        let seen_key = format!("source\0{}", spec.id).into_bytes();
                        let seen = timers
                            .get(&seen_key)
                            .and_then(|v| Some(i64::from_le_bytes(v.try_into().ok()?)))
                            .filter(|_| start != Position::default());
                        let mut clock = spec.watermark.map(|w| {
                            let g = Generator::new(w.out_of_orderness).resume(seen);
                            if let Some(t) = g.current() {
                                router.mark(marked(Mark::At(t), w.idle));
                            }
                            (g, w.idle)
                        });
                        let send = |batch: Vec<Msg>, at| {
                            read.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            let watermark = clock.as_mut().and_then(|(g, idle)| {
                                let before = g.max_seen();
                                let t = g.observe(batch.iter().map(|m| m.timestamp))?;
                                if let Some(max) = g.max_seen().filter(|&m| Some(m) != before) {
                                    timers.set(seen_key.clone(), max.to_le_bytes().to_vec());
                                }
                                Some((t, *idle))
                            });
                            router.send(0, batch, &Ack::none());
                            if let Some((t, idle)) = watermark {
                                router.mark(marked(Mark::At(t), idle));
                            }
                            transport_ref.source_batch(i, at);
                            true
                        };
                        let reached = match server {
                            Some(server) => Ok(server.run(opts.batch_size, shutdown, send)),
                            None => source::run(spec, opts.batch_size, start, stop, send),
                        };
                        let ended = reached.is_ok() && !stop();
                        let end = reached.unwrap_or_else(|e| {
                            shutdown.fail(e.to_string());
                            start
                        });
                        // Read to its end (not stopped): the end of event time.
                        if ended {
                            router.mark(marked(Mark::At(Time::MAX), None));
                        }
                        drop(router);
                        gate.source_ended();
                        if let Err(e) = transport_ref.source_ended(i, end, shutdown) {
                            shutdown.fail(format!("{e}"));
                        }
                        (spec.id.clone(), end.records - start.records)
                    })
                })
                .collect();
            // Until the sources end (or, where the run ends only when stopped, until then):
            // the changes asked meanwhile, each prepared while the graph runs, then either
            // refused (the graph runs on untouched) or taken.
            let mut next = None;
            let taking = || match transport_ref.ends_run() {
                true => !sources.iter().all(|h| h.is_finished()),
                false => !shutdown.is_stopping(),
            };
            while let Some(door) = door.filter(|_| taking()) {
                let Some(request) = door.next(Duration::from_millis(20)) else {
                    continue;
                };
                if let Some(prepared) = apply::prepare(request, plan, &nodes, &stores, opts, (shutdown, door))
                {
                    for (i, pause) in nodes.pauses.iter().enumerate() {
                        pause.set(prepared.keeps(i));
                    }
                    transport_ref.change(&|v| prepared.drains(plan, v));
                    changing.store(true, Ordering::SeqCst);
                    next = Some(prepared);
                    break;
                }
            }
            let join = |h: std::thread::ScopedJoinHandle<'_, (String, u64)>| h.join().ok();
            let sources: Vec<(String, u64)> = sources.into_iter().filter_map(join).collect();
            if transport_ref.ends_run() || next.is_some() {
                status.phase.set(Phase::Draining);
                transport_ref.drain(shutdown);
            }
            let sinks: Vec<(String, u64)> = sinks.into_iter().filter_map(join).collect();
            let mut handed: Vec<Vec<Option<Running>>> = graph.nodes.iter().map(|_| Vec::new()).collect();
            for (i, r, handle) in handing {
                let running = handle.join().ok().flatten();
                handed[i].resize_with(r + 1, || None);
                handed[i][r] = running;
            }
            (sources, sinks, next, handed)
        });
        let totals = |before: &Counts, now: Counts| -> Counts {
            let mut all = now;
            for (id, n) in &mut all {
                *n += before.iter().find(|(b, _)| b == id).map_or(0, |(_, n)| *n);
            }
            all
        };
        let (sources, sinks) = (totals(&before.0, sources), totals(&before.1, sinks));
        if let Some(next) = next {
            match shutdown.failure() {
                Some(failure) => next.refuse(
                    &nodes.status.applied,
                    format!("the graph failed while changing: {failure}"),
                ),
                None => {
                    let carry = apply::Carry {
                        started,
                        stores,
                        status: nodes.status.clone(),
                        counts: (sources, sinks),
                        handover: transport.hand_over()?,
                    };
                    return Ok(Ended::Changed(Box::new(apply::Changed { carry, next, handed })));
                }
            }
        }
        for l in &status.report().loops {
            tracing::info!(
                "loop of {}: {} time(s) around at most, {} message(s) sent around, {} dropped at max_iterations",
                l.nodes.join(", "),
                l.iteration,
                l.fed_back,
                l.exceeded
            );
        }
        // Every vertex has stopped: what is still open is answered, then the servers go.
        exchange.close();
        drop(http);
        let checkpoints = transport.finish(shutdown)?;
        record_finish(graph, &finish_gate, &nodes.stats);
        let mut report = nodes.ended(graph, shutdown, (sources, sinks), stores);
        report.elapsed = started.elapsed();
        report.checkpoints = checkpoints;
        Ok(Ended::Done(report))
    }
}

/// Records where the finish phase wrote in each file sink (see [`finish`]). A record that
/// cannot be written is said, not fatal: the run's outputs are complete; a replay into
/// its aggregates then cannot replace their results.
fn record_finish(graph: &Graph, gate: &FinishGate, stats: &[Arc<NodeStats>]) {
    let emitted: Vec<bool> = stats
        .iter()
        .map(|s| s.at_finish.load(Ordering::Relaxed) > 0)
        .collect();
    let Some(blocks) = gate.blocks(graph, &emitted) else {
        return;
    };
    let blocks = blocks
        .into_iter()
        .map(|(k, b)| (graph.sinks[k].id.clone(), b))
        .collect();
    let sinks: Vec<&str> = graph.sinks.iter().map(|s| s.id.as_str()).collect();
    if let Err(e) = FinishRecord::update(&graph.checkpoint.dir, &sinks, blocks) {
        tracing::warn!("{e}: a replay into the nodes that emitted at finish will not replace their results");
    }
}

pub(crate) fn drain_sink(
    id: &str,
    writer: &Mutex<SinkWriter>,
    rx: Mailbox,
    shutdown: &Shutdown,
    in_flight: &InFlight,
    status: &SinkStatus,
) -> u64 {
    let mut written = 0;
    let mut broken = false;
    for env in rx {
        // (A batch with no messages carries only a watermark: sinks have no use for it.)
        if !broken && !env.batch.is_empty() {
            let msgs = env.batch.into_msgs();
            broken = !write_batch(id, writer, &msgs, shutdown, &mut written);
            if !broken {
                status.wrote(&msgs);
            }
        }
        in_flight.done();
    }
    written
}

/// Writes a batch; false if the sink is broken from now on.
fn write_batch(
    id: &str,
    writer: &Mutex<SinkWriter>,
    msgs: &[Msg],
    shutdown: &Shutdown,
    written: &mut u64,
) -> bool {
    let result = writer.lock().unwrap_or_else(|e| e.into_inner()).write(msgs);
    match result {
        Ok(()) => {
            *written += msgs.len() as u64;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            // The reader went away (`| head`): stop reading sources, quietly.
            shutdown.request_stop();
            false
        }
        Err(e) => {
            shutdown.fail(format!("sink `{id}`: {e}"));
            false
        }
    }
}
