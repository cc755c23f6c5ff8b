//! A running graph, in-process: every node replica and every source and sink on its own
//! thread, bounded channels between them (a slow consumer slows its producers), and an
//! orderly end — when the sources end (or a stop is requested) each thread drains its
//! input, runs `finish`, and drops its senders, so the graph empties front to back.

mod checkpoint;
mod replica;
mod router;
pub mod status;
pub mod swap;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

pub use replica::headers;
pub use router::{Ack, Envelope, Inbox, Mailbox, Outlet, Route, Router, channel};
pub use status::Status;

use crate::engine::{Engine, LoadedModule, NodeInstance, NodeSetup, NodeTemplate};
use crate::io::sink::SinkWriter;
use crate::io::source;
use crate::manifest::{ErrorPolicy, Graph, ModuleRef, SourceKind, Vertex};
use crate::state::Stores;
use crate::state::durable::{Checkpoint, Position, StateLog};
pub(crate) use checkpoint::InFlight;
use checkpoint::{Checkpointer, Gate};
use replica::Replica;
use status::{Phase, SinkStatus};
use swap::NodeVersions;

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
    /// Serve `/status`, `/metrics` and sink tails here while running.
    pub admin: Option<std::net::SocketAddr>,
    /// Show a progress line on stderr.
    pub progress: bool,
    /// File sinks append to what their files hold instead of starting them afresh.
    pub append: bool,
    /// Watch this manifest and the nodes' modules, and swap or reconfigure nodes when
    /// they change.
    pub watch: Option<std::path::PathBuf>,
    /// With the Kafka transport: the nodes, sources and sinks this process runs (all if
    /// `None`).
    pub placement: Option<Vec<String>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_size: 256,
            channel_capacity: 16,
            fresh: false,
            heartbeat: Duration::from_secs(1),
            admin: None,
            progress: false,
            append: false,
            watch: None,
            placement: None,
        }
    }
}

/// Asks a running graph to stop, and records why it stopped.
#[derive(Debug, Default)]
pub struct Shutdown {
    stopping: AtomicBool,
    interrupted: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Shutdown {
    /// Stop reading sources; everything in flight drains (e.g. on Ctrl-C).
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Stop on the user's request (Ctrl-C): like [`Shutdown::request_stop`], remembered.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.request_stop();
    }

    /// Whether [`Shutdown::interrupt`] was called.
    pub fn was_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Stop because of `reason`; the first failure is the one reported.
    pub fn fail(&self, reason: String) {
        tracing::error!("{reason}");
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.request_stop();
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Why the graph failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Live counters of one node, shared by its replicas.
#[derive(Debug, Default)]
pub struct NodeStats {
    received: AtomicU64,
    emitted: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
    retries: AtomicU64,
    traps: AtomicU64,
}

impl NodeStats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
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
        }
    }
}

/// Counts of one node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
            ] {
                if n > 0 {
                    write!(f, " {what} {n}")?;
                }
            }
            writeln!(f)?;
        }
        for (id, n) in &self.sinks {
            writeln!(f, "  sink   {id:<16} wrote {n}")?;
        }
        Ok(())
    }
}

/// Loads every node of `graph` (building crates as needed) and checks each against the
/// WIT world, before anything runs.
pub fn load(graph: &Graph, engine: &Engine, stores: &Stores) -> anyhow::Result<Vec<Arc<NodeTemplate>>> {
    let mut loaded: HashMap<&ModuleRef, LoadedModule> = HashMap::new();
    graph
        .nodes
        .iter()
        .map(|n| {
            let pinned = n.sha256.as_deref();
            let module = match loaded.get(&n.module) {
                Some(m) if pinned.is_none_or(|h| h.eq_ignore_ascii_case(&m.hash)) => m.clone(),
                _ => {
                    let m = engine
                        .load(&n.module, pinned)
                        .with_context(|| format!("node `{}`", n.id))?;
                    loaded.entry(&n.module).or_insert(m).clone()
                }
            };
            NodeTemplate::new(engine, module, NodeSetup::from_spec(n, stores))
                .with_context(|| format!("node `{}`", n.id))
        })
        .collect()
}

/// Messages per source or sink, by id.
pub(crate) type Counts = Vec<(String, u64)>;

/// What a run keeps per node, whatever the transport.
pub(crate) struct Nodes {
    pub templates: Vec<Arc<NodeTemplate>>,
    pub stats: Vec<Arc<NodeStats>>,
    pub versions: Vec<Arc<NodeVersions>>,
    pub status: Arc<Status>,
}

impl Nodes {
    /// Loads every node and sets up its counters, versions and status.
    pub fn load(graph: &Graph, engine: &Engine, opts: &RunOptions, stores: &Stores) -> anyhow::Result<Nodes> {
        let templates = load(graph, engine, stores)?;
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
            opts.admin.is_some(),
        ));
        Ok(Nodes {
            templates,
            stats,
            versions,
            status,
        })
    }

    /// One instance per replica of node `i`.
    pub fn instances(&self, graph: &Graph, i: usize) -> anyhow::Result<Vec<NodeInstance>> {
        (0..graph.nodes[i].replicas)
            .map(|r| self.templates[i].instantiate_replica(r))
            .collect()
    }

    /// The replicas of node `i`, each with its instance, its router and its input.
    #[allow(clippy::too_many_arguments)]
    pub fn replicas(
        &self,
        graph: &Graph,
        i: usize,
        instances: Vec<NodeInstance>,
        mut router: impl FnMut() -> Router,
        dead_letter: Option<Inbox>,
        inputs: Vec<Mailbox>,
        (opts, shutdown, in_flight): (&RunOptions, &Arc<Shutdown>, &InFlight),
    ) -> Vec<(ReplicaThread, Mailbox)> {
        let spec = &graph.nodes[i];
        let finish_barrier = Arc::new(Barrier::new(spec.replicas as usize));
        instances
            .into_iter()
            .zip(inputs)
            .enumerate()
            .map(|(r, (instance, rx))| {
                let replica = Replica {
                    id: spec.id.as_str().into(),
                    instance,
                    outputs: spec.outputs.len(),
                    inputs: spec.inputs.clone().into(),
                    router: router(),
                    dead_letter: dead_letter.clone(),
                    policy: spec.on_error,
                    retry: spec.retry,
                    stats: self.stats[i].clone(),
                    shutdown: shutdown.clone(),
                    provenance: graph.provenance,
                    in_flight: in_flight.clone(),
                    finish_barrier: finish_barrier.clone(),
                    status: self.status.replica(i, r),
                    heartbeat: opts.heartbeat,
                    index: r,
                    versions: self.versions[i].clone(),
                    version: self.versions[i].current(),
                    generation: 0,
                    failures: 0,
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
        services: Services,
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
        drop(services);
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

/// A node replica, ready to run on a thread of its own.
pub(crate) struct ReplicaThread(Replica);

impl ReplicaThread {
    /// Processes `input` until it closes, then finishes.
    pub fn run(self, input: Mailbox) {
        let span = tracing::info_span!("node", node = %self.0.id);
        span.in_scope(|| self.0.run(input));
    }
}

/// What serves a running graph besides its vertices: the admin endpoint, the watcher,
/// the progress line. Dropped when the run ends.
pub(crate) struct Services {
    _running: Box<dyn std::any::Any>,
}

impl Services {
    pub fn start(
        graph: &Graph,
        opts: &RunOptions,
        status: &Arc<Status>,
        stores: &Stores,
    ) -> anyhow::Result<Self> {
        let admin = opts
            .admin
            .map(|a| crate::admin::serve(a, status.clone()))
            .transpose()?;
        let watch = opts
            .watch
            .as_deref()
            .map(|manifest| crate::watch::start(manifest, graph, status.clone(), stores.clone()))
            .transpose()?;
        let progress = opts
            .progress
            .then(|| crate::progress::Progress::start(status.clone()));
        Ok(Services {
            _running: Box::new((progress, watch, admin)),
        })
    }
}

/// Runs `graph` to the end of its sources (or until `shutdown` is requested): in this
/// process, or over Kafka with `transport = "kafka"`.
pub fn run(
    graph: &Graph,
    engine: &Engine,
    opts: &RunOptions,
    shutdown: &Arc<Shutdown>,
) -> anyhow::Result<RunReport> {
    let _graph = tracing::info_span!("graph", graph = %graph.name).entered();
    if graph.transport == crate::manifest::Transport::Kafka {
        return crate::kafka::run(graph, engine, opts, shutdown);
    }
    if opts.placement.is_some() {
        anyhow::bail!(
            "--nodes places nodes on processes of a Kafka graph: run it with transport = \"kafka\""
        );
    }
    let started = Instant::now();
    let stores = Stores::for_graph(graph);
    let (log, resume) = open_state(graph, &stores, opts.fresh)?;
    let nodes = Nodes::load(graph, engine, opts, &stores)?;
    let instances: Vec<Vec<NodeInstance>> = (0..graph.nodes.len())
        .map(|i| nodes.instances(graph, i))
        .collect::<anyhow::Result<_>>()?;
    let writers: Vec<Arc<Mutex<SinkWriter>>> = graph
        .sinks
        .iter()
        .map(|s| {
            let checkpointed = resume.as_ref().and_then(|cp| cp.sinks.get(&s.id).copied());
            SinkWriter::open(
                s,
                checkpointed.or_else(|| opts.append.then(|| s.file_len()).flatten()),
            )
        })
        .map(|w| w.map(|w| Arc::new(Mutex::new(w))))
        .collect::<anyhow::Result<_>>()?;
    let starts: Vec<Position> = graph
        .sources
        .iter()
        .map(|s| {
            resume
                .as_ref()
                .and_then(|cp| cp.sources.get(&s.id).copied())
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

    let status = nodes.status.clone();
    let in_flight = InFlight::default();
    let gate = Gate::new(starts.clone(), in_flight.clone());
    let (node_tx, node_rx): (Vec<Vec<_>>, Vec<Vec<_>>) = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (0..n.replicas as usize)
                .map(|r| channel(opts.channel_capacity, status.replica(i, r).queue.clone()))
                .unzip()
        })
        .unzip();
    let (sink_tx, sink_rx): (Vec<_>, Vec<_>) = (0..graph.sinks.len())
        .map(|k| channel(opts.channel_capacity, status.sink(k).queue.clone()))
        .unzip();
    let router = |from: Vertex, ports: usize| {
        let mut r = Router::new(ports);
        for e in graph.edges.iter().filter(|e| e.from == from) {
            let targets = match e.to {
                Vertex::Node(j) => node_tx[j].clone(),
                Vertex::Sink(k) => vec![sink_tx[k].clone()],
                Vertex::Source(_) => unreachable!("validated: edges never end at a source"),
            };
            r.add(
                e.from_port,
                Route::new(targets, e.to_port, e.connection, in_flight.clone()),
            );
        }
        r
    };
    let mut replicas = Vec::new();
    for (i, (instances, inputs)) in instances.into_iter().zip(node_rx).enumerate() {
        let spec = &graph.nodes[i];
        let dead_letter = match spec.on_error {
            ErrorPolicy::DeadLetter(k) => Some(sink_tx[k].clone()),
            _ => None,
        };
        let router = || router(Vertex::Node(i), spec.outputs.len());
        let context = (opts, shutdown, &in_flight);
        replicas.extend(nodes.replicas(graph, i, instances, router, dead_letter, inputs, context));
    }
    let source_routers: Vec<Router> = (0..graph.sources.len())
        .map(|i| router(Vertex::Source(i), 1))
        .collect();
    // Only the routers hold senders now: each channel closes when its producers end.
    drop((node_tx, sink_tx));

    let mut checkpointer = Checkpointer {
        graph,
        log,
        stores: stores.clone(),
        sinks: writers.clone(),
        taken: 0,
        longest_pause: Duration::ZERO,
    };
    let expiring = graph.stores.iter().any(|s| s.ttl.is_some());
    let services = Services::start(graph, opts, &status, &stores)?;
    status.phase.set(Phase::Running);
    let (sources, sinks) = std::thread::scope(|s| {
        let sinks: Vec<_> = writers
            .iter()
            .zip(sink_rx)
            .zip(&graph.sinks)
            .enumerate()
            .map(|(k, ((w, rx), spec))| {
                let (in_flight, sink) = (in_flight.clone(), status.sink(k));
                s.spawn(move || drain_sink(&spec.id, w, rx, shutdown, &in_flight, &sink))
            })
            .collect();
        for (replica, rx) in replicas {
            s.spawn(move || replica.run(rx));
        }
        if checkpointer.log.is_some() || expiring {
            let (gate, checkpointer) = (&gate, &mut checkpointer);
            s.spawn(move || checkpointer.run(gate, graph.checkpoint.interval, shutdown));
        }
        let sources: Vec<_> = graph
            .sources
            .iter()
            .zip(source_routers)
            .zip(&starts)
            .enumerate()
            .map(|(i, ((spec, mut router), &start))| {
                let span = tracing::info_span!("source", source = %spec.id);
                let (gate, read) = (&gate, status.source(i));
                s.spawn(move || {
                    let _entered = span.enter();
                    let reached = source::run(spec, opts.batch_size, start, shutdown, |batch, at| {
                        read.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        router.send(0, batch);
                        gate.boundary(i, at);
                        true
                    });
                    let end = reached.unwrap_or_else(|e| {
                        shutdown.fail(e);
                        start
                    });
                    gate.finished(i, end);
                    end.records - start.records
                })
            })
            .collect();
        let join = |h: std::thread::ScopedJoinHandle<'_, u64>| h.join().unwrap_or(0);
        let sources: Vec<u64> = sources.into_iter().map(join).collect();
        status.phase.set(Phase::Draining);
        let sinks: Vec<u64> = sinks.into_iter().map(join).collect();
        (sources, sinks)
    });

    // Everything has drained: the last checkpoint. After a failure the state may hold
    // part of a batch that was cut short, so the previous checkpoint stays the last.
    if checkpointer.log.is_some() && shutdown.failure().is_none() {
        let complete = !shutdown.is_stopping();
        let epoch = checkpointer.commit(gate.positions(), complete)?;
        tracing::info!(
            epoch,
            checkpoints = checkpointer.taken,
            longest_pause = ?checkpointer.longest_pause,
            "state saved in {}",
            graph.checkpoint.dir.display()
        );
    }

    let sources = graph.sources.iter().map(|s| s.id.clone()).zip(sources).collect();
    let sinks = graph.sinks.iter().map(|s| s.id.clone()).zip(sinks).collect();
    let mut report = nodes.ended(graph, services, shutdown, (sources, sinks), stores);
    report.elapsed = started.elapsed();
    report.checkpoints = checkpointer.taken;
    Ok(report)
}

/// Opens the state directory of a graph with durable stores, loads the stores from it,
/// and says where to resume if the last run did not finish.
fn open_state(
    graph: &Graph,
    stores: &Stores,
    fresh: bool,
) -> anyhow::Result<(Option<StateLog>, Option<Checkpoint>)> {
    if !graph.is_durable() {
        return Ok((None, None));
    }
    let (log, recovered) = StateLog::open(&graph.checkpoint.dir, stores, fresh)?;
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
        if !broken {
            broken = !write_batch(id, writer, &env, shutdown, &mut written);
            if !broken {
                status.wrote(&env.msgs);
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
    env: &Envelope,
    shutdown: &Shutdown,
    written: &mut u64,
) -> bool {
    let result = writer.lock().unwrap_or_else(|e| e.into_inner()).write(&env.msgs);
    match result {
        Ok(()) => {
            *written += env.msgs.len() as u64;
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
