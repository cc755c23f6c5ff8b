//! `flowhost apply`: a running graph changed without a restart (nodes, sources, sinks and
//! edges added or removed, replicas, ports, config, modules, error policies).
//!
//! A run goes in graphs, one after the other, each a [`Runner`] of its own:
//!
//! 1. **Diff and check** while the graph runs: the changed manifest is validated (by
//!    whoever asks), diffed against the running graph, and what cannot change live
//!    (the transport, the graph's name, its checkpoints, a store's declaration, `http`
//!    sources) refuses the change whole, with the reason; the graph runs on untouched.
//! 2. **Prepare** while it runs: new and rebuilt nodes are loaded, checked against the
//!    WIT world and instantiated, one instance per replica. A failure refuses the change.
//! 3. **Quiesce**: the sources stop at their next batch boundary, and everything in
//!    flight drains through the running graph, so no message is lost or repeated: a
//!    source's next batch is the first the changed graph reads. A node the changed graph
//!    keeps as it is ends without `finish` and hands its instance on (its in-memory state
//!    goes on); a rebuilt node's instances are dropped as a swap drops them; a removed
//!    node finishes once its inputs have ended (its `finish` output goes downstream).
//! 4. **Go on**: the changed graph is wired from the new plan with the stores, the status
//!    (counters, versions, swaps), the sink files and the source positions (by id) of the
//!    one before, and runs. Every change applied is a graph version, in status.
//!
//! Per key, order holds: nothing of the old graph is in flight when the changed one
//! starts, and its key-hash edges route each key to one replica, of the new count.
//! State a node must keep across a change of its replicas, ports, config or module lives
//! in stores, as across a swap.
//!
//! Over Kafka, what is in flight waits in topics: each consumer stops at a batch and
//! commits what it processed, and the changed graph's groups go on from the committed
//! offsets; a consumer that is removed, or loses an input, first reads it to its end
//! ([`Next::drains`]); kept consumers keep their group members. Each process changes on
//! its own, as `control` brings it the change (see ARCHITECTURE.md for one cut for all).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::replica::Running;
use super::swap::{NodeVersions, Outcome};
use super::{Counts, Ended, NodeStats, Nodes, RunError, RunOptions, RunReport, Runner, Status};
use crate::clock::now_millis;
use crate::engine::{Engine, NodeSetup, NodeTemplate};
use crate::manifest::{Graph, SourceKind, Transport, Vertex};
use crate::plan::{ModuleSource, Placement, Plan};
use crate::shutdown::Shutdown;
use crate::state::Stores;
use crate::transport::Handover;

/// The longest `flowhost apply` waits for a change to be prepared and applied.
const PATIENCE: Duration = Duration::from_secs(600);

/// One change of a running graph, as status lists it and `flowhost apply` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyRecord {
    /// The graph version it made (1 is the graph as it started), or would have made.
    pub version: u32,
    /// When it was asked for, milliseconds since the epoch.
    pub at_ms: i64,
    /// How it went.
    pub outcome: Outcome,
    /// What changed, one line each.
    pub changes: Vec<String>,
    /// Why it was refused.
    pub reason: Option<String>,
    /// Loading, compiling and starting the new and rebuilt nodes, in milliseconds.
    pub prepare_ms: f64,
    /// From the sources stopping to the changed graph running, in milliseconds.
    pub pause_ms: f64,
}

impl std::fmt::Display for ApplyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.outcome, &self.reason) {
            (Outcome::Done, _) if self.changes.is_empty() => {
                write!(f, "graph unchanged: version {} keeps running", self.version)?
            }
            (Outcome::Done, _) => write!(
                f,
                "graph version {} applied in {:.1} ms (prepared in {:.1} ms, sources paused {:.1} ms)",
                self.version,
                self.prepare_ms + self.pause_ms,
                self.prepare_ms,
                self.pause_ms
            )?,
            (Outcome::Refused, reason) => write!(
                f,
                "change refused, version {} keeps running: {}",
                self.version.saturating_sub(1),
                reason.as_deref().unwrap_or("no reason given")
            )?,
        }
        for change in &self.changes {
            write!(f, "\n  {change}")?;
        }
        Ok(())
    }
}

/// A change asked for: the changed graph's plan.
pub struct Request {
    plan: Plan,
    at_ms: i64,
    reply: Sender<ApplyRecord>,
}

/// The changes applied to a running graph, and the door to ask for one (open while a run
/// takes changes).
#[derive(Default)]
pub struct Applied {
    door: Mutex<Option<Sender<Box<Request>>>>,
    history: Mutex<Vec<ApplyRecord>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Applied {
    /// Asks the running graph to become `plan`'s; waits until it has (or refused).
    pub fn apply(&self, plan: Plan) -> ApplyRecord {
        let (reply, answer) = channel();
        let request = Box::new(Request {
            plan,
            at_ms: now_millis(),
            reply,
        });
        let sent = lock(&self.door).as_ref().map(|door| door.send(request));
        let why = match sent {
            None => "this run does not take changes (it is not `flowhost run`, or it has ended)",
            Some(Err(_)) => "the graph has ended",
            Some(Ok(())) => match answer.recv_timeout(PATIENCE) {
                Ok(record) => return record,
                Err(RecvTimeoutError::Timeout) => "no answer within 10 minutes",
                Err(RecvTimeoutError::Disconnected) => "the graph ended before the change was applied",
            },
        };
        self.refusal(now_millis(), Vec::new(), why.to_owned())
    }

    /// A refused change, recorded.
    pub fn refusal(&self, at_ms: i64, changes: Vec<String>, reason: String) -> ApplyRecord {
        let record = ApplyRecord {
            version: self.version() + 1,
            at_ms,
            outcome: Outcome::Refused,
            changes,
            reason: Some(reason),
            prepare_ms: 0.0,
            pause_ms: 0.0,
        };
        tracing::warn!("{record}");
        self.remember(&record);
        record
    }

    /// The changes asked so far, oldest first (the latest 64).
    pub fn history(&self) -> Vec<ApplyRecord> {
        lock(&self.history).clone()
    }

    /// The version of the graph running: 1 and one more for each change applied.
    pub fn version(&self) -> u32 {
        let history = lock(&self.history);
        let applied = history
            .iter()
            .rev()
            .find(|r| r.outcome == Outcome::Done)
            .map(|r| r.version);
        applied.unwrap_or(1)
    }

    fn remember(&self, record: &ApplyRecord) {
        let mut history = lock(&self.history);
        if history.len() == 64 {
            history.remove(0);
        }
        history.push(record.clone());
    }

    fn open(&self, engine: Engine) -> Door {
        let (tx, requests) = channel();
        *lock(&self.door) = Some(tx);
        Door { requests, engine }
    }

    fn close(&self) {
        *lock(&self.door) = None;
    }
}

/// The plan of `graph`, a changed manifest of the running graph of `status`, run as
/// `flowhost run` was told besides the manifest (the transport, the brokers; which
/// vertices this process runs is kept when the change is applied); its nodes' modules
/// as given (a change sent over the control topic carries them), else built and read.
pub fn plan_change(
    status: &Status,
    mut graph: Graph,
    modules: Option<Vec<ModuleSource>>,
) -> Result<Plan, String> {
    let running = status.graph();
    graph.transport = running.transport;
    graph.kafka.brokers = running.kafka.brokers.clone();
    match modules {
        None => Plan::resolve(graph, None).map_err(|e| e.to_string()),
        Some(modules) => {
            let placement = Placement::new(&graph, None).map_err(|e| e.to_string())?;
            Ok(Plan::with_modules(graph, modules, placement))
        }
    }
}

/// Where a running graph takes the changes asked of it.
pub(crate) struct Door {
    requests: Receiver<Box<Request>>,
    engine: Engine,
}

impl Door {
    /// The next change asked, if one comes within `wait`.
    pub(super) fn next(&self, wait: Duration) -> Option<Box<Request>> {
        self.requests.recv_timeout(wait).ok()
    }
}

/// A node of the changed graph, prepared.
pub(crate) struct NextNode {
    pub versions: Arc<NodeVersions>,
    pub stats: Arc<NodeStats>,
    /// Its instances, one per replica; `None`: those the running graph's replicas hand on.
    pub instances: Option<Vec<Running>>,
}

/// A change prepared: the changed graph, its nodes, and who waits for the outcome.
pub(crate) struct Next {
    plan: Plan,
    nodes: Vec<NextNode>,
    stores: Stores,
    /// Per node of the running graph: its index in the changed graph if it goes on there
    /// (`hands_on`: with its instances), none if removed.
    goes_on: Vec<Option<(usize, bool)>>,
    record: ApplyRecord,
    reply: Sender<ApplyRecord>,
    prepared: Instant,
}

impl Next {
    /// Whether node `i` of the running graph is in the changed graph (then it ends
    /// without `finish`).
    pub(super) fn keeps(&self, i: usize) -> bool {
        self.goes_on[i].is_some()
    }

    /// Whether consumer `v` of the running graph `old` reads its inputs to their end
    /// before the graph stops (over Kafka, where what is in flight waits in topics): it
    /// is removed, or an input topic of it is (what is left there would not be read).
    pub(super) fn drains(&self, old: &Plan, v: Vertex) -> bool {
        let new = &self.plan.graph;
        let after = match v {
            Vertex::Node(i) => self.goes_on[i].map(|(j, _)| Vertex::Node(j)),
            Vertex::Sink(k) => {
                let spec = &old.graph.sinks[k];
                let kept = new
                    .sinks
                    .iter()
                    .position(|s| s.id == spec.id && s.kind.same_as(&spec.kind));
                kept.map(Vertex::Sink)
            }
            Vertex::Source(_) => return false,
        };
        let Some(after) = after else {
            return true;
        };
        let reads = self.plan.kafka.inputs(after);
        old.kafka
            .inputs(v)
            .iter()
            .any(|i| !reads.iter().any(|r| r.topic == i.topic))
    }

    /// The change cannot be applied after all: `why`.
    pub(super) fn refuse(self, applied: &Applied, why: String) {
        let record = applied.refusal(self.record.at_ms, self.record.changes, why);
        let _ = self.reply.send(record);
    }
}

/// A graph stopped to go on as a changed one: what it hands on, the change prepared, and
/// per node the instances its replicas handed on.
pub(crate) struct Changed {
    pub carry: Carry,
    pub next: Next,
    pub handed: Vec<Vec<Option<Running>>>,
}

/// What a graph hands on to its changed graph besides the nodes.
pub(crate) struct Carry {
    pub started: Instant,
    pub stores: Stores,
    pub status: Arc<Status>,
    /// What the graphs so far read and wrote, by source and sink.
    pub counts: (Counts, Counts),
    pub handover: Handover,
}

/// Diffs the change `request` asks for against the running `plan` and prepares it; `None`
/// if it is refused (the reason sent to whoever asked).
pub(super) fn prepare(
    mut request: Box<Request>,
    plan: &Plan,
    nodes: &Nodes,
    stores: &Stores,
    opts: &RunOptions,
    (shutdown, door): (&Shutdown, &Door),
) -> Option<Next> {
    let applied = &nodes.status.applied;
    let started = Instant::now();
    let (old, new) = (&plan.graph, &request.plan.graph);
    let module_of = |p: &Plan, id: &str| {
        let i = p.graph.nodes.iter().position(|n| n.id == id)?;
        Some(p.modules[i].hash.clone())
    };
    let changes = changes(old, new, |id| module_of(plan, id) == module_of(&request.plan, id));
    let refuse = |why: String| {
        let record = applied.refusal(request.at_ms, changes.clone(), why);
        let _ = request.reply.send(record);
        None
    };
    if let Some(why) = cannot_change(old, new, shutdown) {
        return refuse(why);
    }
    if changes.is_empty() {
        let _ = request.reply.send(ApplyRecord {
            version: applied.version(),
            at_ms: request.at_ms,
            outcome: Outcome::Done,
            changes,
            reason: None,
            prepare_ms: 0.0,
            pause_ms: 0.0,
        });
        return None;
    }
    if let Some(why) = cannot_open(old, new) {
        return refuse(why);
    }
    // This process runs what it ran of the graph before (all of it, or what `--nodes`
    // named that is still there).
    let placed = plan.placement.names(old);
    let placed: Option<Vec<String>> = placed.map(|names| {
        let there = |n: &String| new.vertices().any(|v| new.id(v) == n);
        names.into_iter().filter(there).collect()
    });
    match Placement::new(new, placed.as_deref()) {
        Ok(placement) => request.plan.placement = placement,
        Err(e) => return refuse(e.to_string()),
    }
    let new = &request.plan.graph;
    let stores = stores.with(new);
    let engine = &door.engine;
    let mut next_nodes = Vec::new();
    let mut goes_on = vec![None; old.nodes.len()];
    for (j, spec) in new.nodes.iter().enumerate() {
        let module = &request.plan.modules[j];
        let before = old.nodes.iter().position(|o| o.id == spec.id);
        let setup = NodeSetup::from_spec(spec, &stores);
        let fresh = |versions: Option<&NodeVersions>| -> Result<Arc<NodeVersions>, String> {
            // A module the manifest did not change stays the version running (a swap
            // made since is kept).
            let unchanged = before.is_some_and(|i| plan.modules[i].hash == module.hash);
            let loaded = match versions {
                Some(v) if unchanged => Ok(v.current().module().clone()),
                _ => engine.load(module),
            };
            let template = loaded
                .and_then(|m| NodeTemplate::new(engine, m, setup.clone()))
                .map_err(|e| format!("node `{}`: {e}", spec.id))?;
            Ok(match versions {
                Some(v) => v.rebuilt(template, setup.clone(), opts.heartbeat, started),
                None => NodeVersions::new(
                    engine,
                    template,
                    setup.clone(),
                    spec.auto_rollback,
                    opts.heartbeat,
                ),
            })
        };
        let prepared = match before {
            None => fresh(None).map(|v| (v, Arc::default())),
            Some(i) => {
                let o = &old.nodes[i];
                let same = module.hash == plan.modules[i].hash
                    && !o.makes_other_instances(spec)
                    && (o.inputs == spec.inputs && o.outputs == spec.outputs && o.replicas == spec.replicas);
                goes_on[i] = Some((j, same));
                if same {
                    Ok((nodes.versions[i].clone(), nodes.stats[i].clone()))
                } else {
                    fresh(Some(&nodes.versions[i])).map(|v| (v, nodes.stats[i].clone()))
                }
            }
        };
        let hands_on = before.is_some_and(|i| goes_on[i].is_some_and(|(_, same)| same));
        let node = prepared.and_then(|(versions, stats)| {
            let instances = match hands_on {
                true => None,
                false => Some(
                    fresh_instances(&versions, spec.replicas)
                        .map_err(|e| format!("node `{}`: {e}", spec.id))?,
                ),
            };
            Ok(NextNode {
                versions,
                stats,
                instances,
            })
        });
        match node {
            Ok(node) => next_nodes.push(node),
            Err(why) => return refuse(why),
        }
    }
    let record = ApplyRecord {
        version: applied.version() + 1,
        at_ms: request.at_ms,
        outcome: Outcome::Done,
        changes,
        reason: None,
        prepare_ms: started.elapsed().as_secs_f64() * 1000.0,
        pause_ms: 0.0,
    };
    tracing::info!(
        "applying graph version {}: {}",
        record.version,
        record.changes.join("; ")
    );
    Some(Next {
        plan: request.plan,
        nodes: next_nodes,
        stores,
        goes_on,
        record,
        reply: request.reply,
        prepared: Instant::now(),
    })
}

fn fresh_instances(
    versions: &NodeVersions,
    replicas: u32,
) -> Result<Vec<Running>, crate::engine::EngineError> {
    let version = versions.current();
    (0..replicas)
        .map(|r| {
            Ok(Running {
                instance: version.instantiate_replica(r)?,
                version: version.clone(),
                generation: versions.published(),
            })
        })
        .collect()
}

/// Why the running graph `old` cannot become `new` while it runs, if it cannot.
fn cannot_change(old: &Graph, new: &Graph, shutdown: &Shutdown) -> Option<String> {
    if shutdown.is_stopping() {
        return Some("the graph is stopping".into());
    }
    if old.transport != new.transport {
        return Some(format!(
            "the transport changed ({:?} to {:?}): restart the graph",
            old.transport, new.transport
        ));
    }
    if old.transport == Transport::Kafka && old.kafka != new.kafka {
        return Some("the graph's `[kafka]` settings changed: restart its processes".into());
    }
    if old.name != new.name {
        return Some(format!(
            "the graph's name changed (`{}` to `{}`): restart it",
            old.name, new.name
        ));
    }
    let http = |g: &Graph| {
        g.sources
            .iter()
            .find(|s| matches!(s.kind, SourceKind::Http(_)))
            .map(|s| s.id.clone())
    };
    if let Some(id) = http(old).or_else(|| http(new)) {
        return Some(format!(
            "source `{id}` serves HTTP: a graph with an `http` source is not changed while it runs (its open requests would be cut): restart it"
        ));
    }
    let checkpoints = |g: &Graph| {
        let dir = std::path::absolute(&g.checkpoint.dir).unwrap_or_else(|_| g.checkpoint.dir.clone());
        g.is_durable().then_some((dir, g.checkpoint.interval))
    };
    if checkpoints(old) != checkpoints(new) {
        return Some("the graph's durable state or its checkpoints changed: restart it".into());
    }
    for store in &new.stores {
        match old.stores.iter().find(|s| s.name == store.name) {
            Some(before) if before != store => {
                return Some(format!("store `{}` changed: restart the graph", store.name));
            }
            None if store.durability == crate::manifest::Durability::Durable => {
                return Some(format!(
                    "store `{}` is a new durable store: restart the graph",
                    store.name
                ));
            }
            _ => {}
        }
    }
    None
}

/// Why a file the changed graph `new` reads or writes anew cannot be opened, if one
/// cannot (checked before the graph stops, so a typo in a path refuses the change).
fn cannot_open(old: &Graph, new: &Graph) -> Option<String> {
    for sink in &new.sinks {
        let kept = old
            .sinks
            .iter()
            .any(|o| o.id == sink.id && o.kind.same_as(&sink.kind));
        let Some(path) = sink.file_path().filter(|_| !kept) else {
            continue;
        };
        // (Without making the file: the change may yet be refused.)
        let writable = match path.exists() {
            true => std::fs::OpenOptions::new().append(true).open(path).map(drop),
            false => std::fs::metadata(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            )
            .and_then(|m| match m.is_dir() {
                true => Ok(()),
                false => Err(std::io::Error::other("not in a folder")),
            }),
        };
        if let Err(e) = writable {
            return Some(format!(
                "sink `{}`: cannot write {}: {e}",
                sink.id,
                path.display()
            ));
        }
    }
    for source in &new.sources {
        let kept = old
            .sources
            .iter()
            .any(|o| o.id == source.id && o.kind.same_as(&source.kind));
        let path = match &source.kind {
            SourceKind::File { path } | SourceKind::Messages { path } | SourceKind::Jsonl { path, .. } => {
                path
            }
            _ => continue,
        };
        if kept {
            continue;
        }
        // (A named pipe is not opened here: that waits for a writer.)
        let fifo = |m: &std::fs::Metadata| {
            use std::os::unix::fs::FileTypeExt as _;
            m.file_type().is_fifo()
        };
        let readable = match std::fs::metadata(path) {
            Ok(m) if fifo(&m) => Ok(()),
            _ => std::fs::File::open(path).map(drop),
        };
        if let Err(e) = readable {
            return Some(format!(
                "source `{}`: cannot read {}: {e}",
                source.id,
                path.display()
            ));
        }
    }
    None
}

/// What changes from `old` to `new`, one line each (none: nothing).
fn changes(old: &Graph, new: &Graph, same_module: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    let vertices = |g: &Graph| -> BTreeSet<String> {
        let nodes = g.nodes.iter().map(|n| format!("node `{}`", n.id));
        let sources = g.sources.iter().map(|s| format!("source `{}`", s.id));
        let sinks = g.sinks.iter().map(|s| format!("sink `{}`", s.id));
        nodes.chain(sources).chain(sinks).collect()
    };
    let (before, after) = (vertices(old), vertices(new));
    lines.extend(after.difference(&before).map(|v| format!("{v} added")));
    lines.extend(before.difference(&after).map(|v| format!("{v} removed")));
    for n in &new.nodes {
        let Some(o) = old.nodes.iter().find(|o| o.id == n.id) else {
            continue;
        };
        let mut what = Vec::new();
        if o.replicas != n.replicas {
            what.push(format!("replicas {} -> {}", o.replicas, n.replicas));
        }
        if !same_module(&n.id) {
            what.push("module".into());
        }
        if o.makes_other_instances(n) {
            what.push("config or limits".into());
        }
        if o.inputs != n.inputs || o.outputs != n.outputs {
            what.push("ports".into());
        }
        if o.on_error != n.on_error || o.retry != n.retry {
            what.push("on_error / retry".into());
        }
        if !what.is_empty() {
            lines.push(format!("node `{}`: {}", n.id, what.join(", ")));
        }
    }
    let kinds = |a: &Graph, b: &Graph| {
        let sources = b.sources.iter().filter_map(|s| {
            let o = a.sources.iter().find(|o| o.id == s.id)?;
            (!o.kind.same_as(&s.kind)).then(|| format!("source `{}` reads elsewhere", s.id))
        });
        let sinks = b.sinks.iter().filter_map(|s| {
            let o = a.sinks.iter().find(|o| o.id == s.id)?;
            (!o.kind.same_as(&s.kind)).then(|| format!("sink `{}` writes elsewhere", s.id))
        });
        sources.chain(sinks).collect::<Vec<_>>()
    };
    lines.extend(kinds(old, new));
    let (edges_before, edges_after) = (edges(old), edges(new));
    lines.extend(
        edges_after
            .difference(&edges_before)
            .map(|e| format!("edge {e} added")),
    );
    lines.extend(
        edges_before
            .difference(&edges_after)
            .map(|e| format!("edge {e} removed")),
    );
    lines
}

/// A graph's edges, each as `from.port -> to.port (connection)`.
fn edges(g: &Graph) -> BTreeSet<String> {
    use crate::manifest::Vertex;
    g.edges
        .iter()
        .map(|e| {
            let from = match e.from {
                Vertex::Node(i) => format!("{}.{}", g.nodes[i].id, g.nodes[i].outputs[e.from_port as usize]),
                v => g.id(v).to_owned(),
            };
            let to = match e.to {
                Vertex::Node(i) => format!("{}.{}", g.nodes[i].id, g.nodes[i].inputs[e.to_port as usize]),
                v => g.id(v).to_owned(),
            };
            let feedback = if e.feedback.is_some() { ", feedback" } else { "" };
            format!("{from} -> {to} ({:?}{feedback})", e.connection)
        })
        .collect()
}

/// Runs `plan` to its end, taking the changes asked of it on the way (through
/// [`Status::applied`]); `observe` starts the observers from its status and stores once
/// it is loaded, and they run until it ends.
pub fn run_live<O, E: From<RunError>>(
    plan: Plan,
    engine: &Engine,
    opts: &RunOptions,
    shutdown: &Arc<Shutdown>,
    observe: impl FnOnce(&Arc<Status>, &Stores) -> Result<O, E>,
) -> Result<(RunReport, O), E> {
    let transport = crate::transport::for_plan(&plan, opts.batch_size, opts.append, opts.fresh)
        .map_err(|e| E::from(RunError::Transport(e)))?;
    let runner = Runner::start(&plan, engine, opts, shutdown, transport)?;
    let status = runner.status().clone();
    // Open before the observers start: a change they ask for at once (a Kafka process
    // catching up with the control topic) waits for the runner instead of being refused.
    let door = status.applied.open(engine.clone());
    let observers = observe(&status, runner.stores())?;
    let mut ended = runner.run_until_changed(Some(&door));
    let mut plan;
    loop {
        let changed = match ended {
            Ok(Ended::Done(report)) => {
                status.applied.close();
                return Ok((report, observers));
            }
            Err(e) => {
                status.applied.close();
                return Err(e.into());
            }
            Ok(Ended::Changed(changed)) => changed,
        };
        let Changed {
            mut carry,
            next,
            mut handed,
        } = *changed;
        let Next {
            plan: next_plan,
            mut nodes,
            stores,
            goes_on,
            mut record,
            reply,
            prepared,
        } = next;
        for (i, on) in goes_on.iter().enumerate() {
            if let Some((j, true)) = *on {
                let instances: Option<Vec<Running>> = std::mem::take(&mut handed[i]).into_iter().collect();
                nodes[j].instances = instances;
            }
        }
        carry.stores = stores;
        let handover = std::mem::take(&mut carry.handover);
        plan = next_plan;
        let started = crate::transport::after(&plan, opts.batch_size, opts.append, handover)
            .map_err(RunError::Transport)
            .and_then(|transport| {
                Runner::start_with(&plan, engine, opts, shutdown, transport, Some((carry, nodes)))
            });
        let runner = match started {
            Ok(runner) => runner,
            Err(e) => {
                let _ = reply.send(
                    status
                        .applied
                        .refusal(record.at_ms, record.changes, e.to_string()),
                );
                status.applied.close();
                return Err(e.into());
            }
        };
        record.pause_ms = prepared.elapsed().as_secs_f64() * 1000.0;
        tracing::info!("{record}");
        status.applied.remember(&record);
        let _ = reply.send(record);
        ended = runner.run_until_changed(Some(&door));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// in → a → out, and what `more` adds, in a folder with a module file.
    fn graph(dir: &Path, more: &str) -> Graph {
        std::fs::write(dir.join("m.wasm"), b"").unwrap();
        let text = format!(
            r#"name = "g"
[sources.in]
kind = "stdin"
[nodes.a]
module = "m.wasm"
[sinks.out]
kind = "stdout"
[[edges]]
from = "in"
to = "a"
[[edges]]
from = "a"
to = "out"
{more}"#
        );
        Graph::parse(&dir.join("graph.toml"), &text).unwrap()
    }

    #[test]
    fn changes_name_what_was_added_removed_and_changed() {
        let dir = tempfile::tempdir().unwrap();
        let old = graph(dir.path(), "");
        let new = graph(
            dir.path(),
            "[nodes.b]\nmodule = \"m.wasm\"\n[[edges]]\nfrom = \"in\"\nto = \"b\"\n[[edges]]\nfrom = \"b\"\nto = \"out\"\n",
        );
        let same = |_: &str| true;
        assert_eq!(
            changes(&old, &new, same),
            [
                "node `b` added",
                "edge b.out -> out (RoundRobin) added",
                "edge in -> b.in (RoundRobin) added"
            ]
        );
        assert_eq!(changes(&new, &old, same)[0], "node `b` removed");
        assert!(changes(&old, &old, same).is_empty());
        let replicated = changed(&old, |g| g.nodes[0].replicas = 3);
        assert_eq!(changes(&old, &replicated, same), ["node `a`: replicas 1 -> 3"]);
        assert_eq!(changes(&old, &old, |_| false), ["node `a`: module"]);
    }

    #[test]
    fn what_cannot_change_live_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let old = graph(dir.path(), "");
        let running = Shutdown::default();
        assert_eq!(cannot_change(&old, &old, &running), None);
        let kafka = changed(&old, |g| g.transport = Transport::Kafka);
        assert!(
            cannot_change(&old, &kafka, &running)
                .unwrap()
                .contains("the transport changed")
        );
        let both = changed(&kafka, |g| g.kafka.partitions = 12);
        assert!(
            cannot_change(&kafka, &both, &running)
                .unwrap()
                .contains("`[kafka]` settings changed")
        );
        assert_eq!(cannot_change(&kafka, &kafka, &running), None);
        let renamed = changed(&old, |g| g.name = "h".into());
        assert!(
            cannot_change(&old, &renamed, &running)
                .unwrap()
                .contains("name changed")
        );
        let durable = graph(dir.path(), "[stores.s]\ndurability = \"durable\"\n");
        assert!(
            cannot_change(&old, &durable, &running)
                .unwrap()
                .contains("durable")
        );
        let stopping = Shutdown::default();
        stopping.request_stop();
        assert_eq!(
            cannot_change(&old, &old, &stopping).as_deref(),
            Some("the graph is stopping")
        );
    }

    /// `g` changed by `change`.
    fn changed(g: &Graph, change: impl FnOnce(&mut Graph)) -> Graph {
        let mut g = g.clone();
        change(&mut g);
        g
    }
}
