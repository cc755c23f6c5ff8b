//! The Kafka transport (`transport = "kafka"`): every edge is a topic, every node and
//! sink a consumer group, so every replica in every `flowhost` process running the same
//! graph shares the partitions of its inputs. The names come from the plan
//! ([`crate::plan::KafkaNames`]).
//!
//! In one process a node is what it is in-process — the runner's replicas with their
//! instances, routers and error policies — fed by an [`ingress::Ingress`] (the group
//! member reading its input topics) and sending to topics through a producer
//! ([`client::TopicOut`]). Keys, headers and timestamps travel with each record; Kafka
//! partitions by key, so per-key order holds across processes.
//!
//! A process runs the vertices `--nodes` names (all by default). The process that runs
//! the whole graph, with bounded sources only, ends the run: once its sources have ended,
//! each node and sink drains in graph order — when everything upstream has ended and its
//! group has committed every input partition to its end, it runs `finish` and stops.
//! Other processes run until stopped (Ctrl-C), settling and committing what they hold.
//! A loop's nodes drain together, once nothing enters the loop any more and `loops` has
//! seen it end (distributed termination detection over the groups' committed offsets).

mod changelog;
pub mod client;
mod ingress;
mod instance;
mod loops;
mod marks;
pub mod progress;
mod replies;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer as _;

pub use client::{CONNECT_TIMEOUT, Health};

use super::{Feed, LinkHealth, LinkReport, Local, Senders, Transport, TransportError};
use crate::flow::{InFlight, Route, Sender};
use crate::io::http::{Answers, Exchange};
use crate::io::sink::SinkWriter;
use crate::manifest::{Access, Delivery, Graph, SinkKind, SourceKind, Vertex};
use crate::plan::{KafkaNames, Plan};
use crate::shutdown::Shutdown;
use crate::state::durable::Position;
use crate::state::{Entries, Stores};
use changelog::Changelog;
use client::{ClientError, Doing, Kafka, Producer, TopicOut, flush};
use ingress::{Commits, Committer, Ingress, Rebalancing};

/// The durable stores of a Kafka graph as its changelogs hold them, and the brokers.
pub fn read_state(graph: &Graph) -> Result<(BTreeMap<String, Entries>, String), TransportError> {
    let names = KafkaNames::new(graph);
    let setup = |e| TransportError::setup(format!("reading the changelogs of graph `{}`", graph.name), e);
    let kafka = Kafka::new(&graph.kafka).map_err(setup)?;
    kafka.connect().map_err(setup)?;
    let stores = Stores::for_graph(graph);
    let changelog = Changelog::new(&kafka, &names, &stores, &Arc::default()).map_err(setup)?;
    for topic in names.changelogs() {
        if kafka.partitions(topic).map_err(setup)?.is_none() {
            return Err(TransportError::Refused(format!(
                "graph `{}` has no state on {} yet: no topic `{topic}`",
                graph.name, kafka.brokers
            )));
        }
    }
    changelog.restore(&kafka, None).map_err(setup)?;
    let entries = stores
        .iter()
        .filter(|s| s.is_durable())
        .map(|s| (s.name().to_owned(), s.entries()))
        .collect();
    Ok((entries, kafka.brokers))
}

/// What the Kafka transport of a graph changed while it runs goes on with: the clients'
/// link (its health and progress), and the members of the groups of the consumers kept
/// as they were (they stay in their groups: no rebalance, no pause for one).
pub(crate) struct Carried {
    kafka: Kafka,
    consumers: Vec<(String, Member)>,
}

/// A vertex's member of its group.
type Member = rdkafka::consumer::BaseConsumer<Rebalancing>;

/// Group members kept for the changed graph, by vertex id.
type Parked = Arc<Mutex<Vec<(String, Member)>>>;

/// The Kafka transport of one run in this process.
pub struct KafkaTransport<'p> {
    plan: &'p Plan,
    kafka: Kafka,
    /// This process's place (its transactional ids), claimed for exactly-once graphs.
    instance: Option<instance::Instance>,
    batch_size: usize,
    changelog: Option<Arc<Changelog>>,
    /// Per source, then per node: its producer, once wired.
    producers: Vec<Option<Arc<Producer>>>,
    /// Per node, then per sink: whether it has ended, whether it may drain, and whether
    /// it stops at its next batch (the graph changes, see [`Transport::change`]).
    done: Vec<Arc<AtomicBool>>,
    drains: Vec<Arc<AtomicBool>>,
    stops: Vec<Arc<AtomicBool>>,
    /// What the graph before handed on, if this is a changed graph's.
    before: Option<super::Handover>,
    /// Where each source ended, and the sinks' writers opened (for a change).
    ended_at: Mutex<Vec<Position>>,
    opened: Vec<(usize, Arc<Mutex<SinkWriter>>)>,
    /// The group members of the consumers stopped for a change, by vertex id (for the
    /// changed graph's), and those the graph before handed on.
    parked: Parked,
    kept: Vec<(String, Member)>,
    /// Set once every vertex here has ended.
    ended: AtomicBool,
    /// The reader of this process's reply topic (an `http` source here).
    replies: Option<replies::ReplyReader>,
}

impl<'p> KafkaTransport<'p> {
    /// The transport for `plan` (its brokers as the manifest or `--brokers` says).
    pub fn new(plan: &'p Plan, batch_size: usize) -> Result<Self, TransportError> {
        let graph = &plan.graph;
        if let Some(why) = graph.kafka_refusal() {
            return Err(TransportError::Refused(why));
        }
        let kafka = Kafka::new(&graph.kafka).map_err(|e| TransportError::Refused(format!("{e:#}")))?;
        // This process's stable place: its transactional ids, and the name of its
        // watermarks' producers.
        let eos = graph.kafka.delivery == Delivery::ExactlyOnce;
        // (An `http` source here names this process by its place in return addresses.)
        let serves = (0..graph.sources.len()).any(|i| {
            matches!(graph.sources[i].kind, SourceKind::Http(_)) && plan.placement.runs(Vertex::Source(i))
        });
        let instance = if eos || graph.has_event_time() || serves {
            let claimed =
                instance::Instance::claim(&graph.name).map_err(|e| TransportError::Refused(e.to_string()))?;
            if eos {
                tracing::info!(
                    "transactional ids of this process: {}.<node>.{}",
                    graph.name,
                    claimed.name
                );
            }
            Some(claimed)
        } else {
            None
        };
        let flags = || -> Vec<Arc<AtomicBool>> {
            (0..graph.nodes.len() + graph.sinks.len())
                .map(|_| Arc::default())
                .collect()
        };
        Ok(KafkaTransport {
            plan,
            kafka,
            instance,
            batch_size,
            changelog: None,
            producers: vec![None; graph.sources.len() + graph.nodes.len()],
            done: flags(),
            drains: flags(),
            stops: flags(),
            before: None,
            ended_at: Mutex::new(vec![Position::default(); graph.sources.len()]),
            opened: Vec::new(),
            parked: Arc::default(),
            kept: Vec::new(),
            ended: AtomicBool::new(false),
            replies: None,
        })
    }

    /// This transport going on from what the one of the graph before handed on (its
    /// sources' positions, its sinks' writers): a changed graph's.
    pub fn after(mut self, mut before: super::Handover) -> Self {
        if let Some(carried) = before.kafka.take() {
            self.kafka = carried.kafka;
            self.kept = carried.consumers;
        }
        self.before = Some(before);
        self
    }

    /// Index of a node or sink among the flags.
    fn slot(&self, v: Vertex) -> usize {
        match v {
            Vertex::Node(i) => i,
            Vertex::Sink(k) => self.plan.graph.nodes.len() + k,
            Vertex::Source(_) => unreachable!("sources have no ingress"),
        }
    }

    fn producer_slot(&self, v: Vertex) -> usize {
        match v {
            Vertex::Source(i) => i,
            Vertex::Node(i) => self.plan.graph.sources.len() + i,
            Vertex::Sink(_) => unreachable!("sinks produce nothing"),
        }
    }

    fn eos(&self) -> bool {
        self.plan.graph.kafka.delivery == Delivery::ExactlyOnce
    }

    /// Creates the topics the graph writes; checks the ones Kafka sources read exist.
    fn prepare_topics(&self) -> Result<(), ClientError> {
        for (source, topic) in self.plan.kafka.external() {
            if self.kafka.partitions(topic)?.is_none() {
                return Err(ClientError::Refused(format!(
                    "source `{source}`: topic `{topic}` does not exist on the brokers {}",
                    self.kafka.brokers
                )));
            }
        }
        self.kafka
            .create_topics(&self.plan.kafka.written(&self.plan.graph))
    }

    /// While the graph runs, every few seconds: the topics its sources read exist; one
    /// that is missing is said in status and the log until it is back.
    ///
    /// Not detected: a broker that lost the topics the graph writes (an in-memory one
    /// restarted). tansu makes a topic again, empty, when a client asks for its
    /// metadata, and the ends it lists trail what was written, so neither a missing
    /// topic nor an end before acknowledged records can be told apart there.
    fn watch_topics(&self, shutdown: &Shutdown) {
        const EVERY: Duration = Duration::from_secs(3);
        let health = &self.kafka.link.health;
        let external: Vec<&str> = self
            .plan
            .kafka
            .external()
            .iter()
            .map(|(_, t)| t.as_str())
            .collect();
        if external.is_empty() {
            return;
        }
        let mut checked = std::time::Instant::now();
        let mut missing_before = std::collections::BTreeSet::new();
        while !shutdown.is_stopping() && !self.ended.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(100));
            if checked.elapsed() < EVERY || health.is_down() {
                continue;
            }
            checked = std::time::Instant::now();
            let Ok(have) = self.kafka.existing(external.iter().copied()) else {
                continue;
            };
            let missing: std::collections::BTreeSet<&str> =
                external.iter().copied().filter(|t| !have.contains(t)).collect();
            for topic in missing.iter().filter(|t| !missing_before.contains(**t)) {
                let what = format!(
                    "source topic `{topic}` is missing from the brokers: nothing is read from it until it is back"
                );
                tracing::warn!("{what}");
                health.fault(what);
            }
            missing_before = missing.into_iter().map(str::to_owned).collect();
        }
    }

    /// The member of `v`'s group, committing as `commits` says.
    fn consumer(
        &mut self,
        v: Vertex,
        commits: Commits,
        stores: Vec<usize>,
        shutdown: &Arc<Shutdown>,
    ) -> Result<Member, ClientError> {
        let graph = &self.plan.graph;
        let id = graph.id(v);
        let topics: Arc<[String]> = self
            .plan
            .kafka
            .inputs(v)
            .iter()
            .map(|i| i.topic.clone())
            .collect();
        let committer = Committer::new(
            format!("{v} `{id}`"),
            topics,
            graph.kafka.commit_interval,
            commits,
            self.changelog
                .clone()
                .filter(|_| !stores.is_empty())
                .map(|c| (c, stores)),
            (self.kafka.link.health.clone(), shutdown.clone()),
        )?;
        // The graph before's member goes on, committing as this graph's vertex does.
        if let Some(at) = self.kept.iter().position(|(kept, _)| kept == id) {
            let (_, consumer) = self.kept.swap_remove(at);
            *consumer.context().committer() = committer;
            return Ok(consumer);
        }
        let context = Rebalancing {
            vertex: format!("{v} `{id}`"),
            link: self.kafka.link.clone(),
            committer: Mutex::new(committer),
        };
        let group = self.plan.kafka.group(id);
        self.kafka
            .consumer_config(&group)
            .create_with_context(context)
            .doing(|| format!("{v} `{id}`: creating the consumer of group `{group}`"))
    }
}

impl Transport for KafkaTransport<'_> {
    fn prepare(
        &mut self,
        stores: &Stores,
        _in_flight: &InFlight,
        shutdown: &Arc<Shutdown>,
    ) -> Result<Vec<Position>, TransportError> {
        let graph = &self.plan.graph;
        self.kafka
            .connect()
            .map_err(|e| TransportError::Refused(format!("{e:#}")))?;
        let setup = |what: &str| {
            let what = format!("graph `{}` on {}: {what}", graph.name, self.kafka.brokers);
            move |e| TransportError::setup(what, e)
        };
        if graph.is_durable() {
            let changelog = Changelog::new(&self.kafka, &self.plan.kafka, stores, shutdown)
                .map_err(setup("the changelogs"))?;
            self.changelog = Some(Arc::new(changelog));
        }
        self.prepare_topics()
            .map_err(|e| TransportError::Refused(format!("{e:#}")))?;
        if let Some(c) = &self.changelog {
            c.restore(&self.kafka, Some(shutdown))
                .map_err(setup("restoring the stores from their changelogs"))?;
        }
        tracing::info!(
            brokers = %self.kafka.brokers,
            delivery = ?graph.kafka.delivery,
            "running graph `{}` over Kafka{}",
            graph.name,
            if self.ends_run() { "" } else { " until stopped" }
        );
        // A file source reads from its beginning every run (no source checkpoint here),
        // or, in a changed graph, from where the graph before stopped.
        let before = self.before.as_ref();
        Ok(graph
            .sources
            .iter()
            .map(|s| before.and_then(|b| b.position(s)).unwrap_or_default())
            .collect())
    }

    fn instance(&self) -> &str {
        self.instance.as_ref().map_or("local", |i| i.name.as_str())
    }

    fn answers(
        &mut self,
        local: &Arc<Exchange>,
        shutdown: &Arc<Shutdown>,
    ) -> Result<Arc<dyn Answers>, TransportError> {
        let setup = |e| TransportError::setup("answering HTTP requests over Kafka", e);
        let graph = &self.plan.graph;
        let serves = (0..graph.sources.len()).any(|i| {
            matches!(graph.sources[i].kind, SourceKind::Http(_))
                && self.plan.placement.runs(Vertex::Source(i))
        });
        if let Some(instance) = self.instance.as_ref().filter(|_| serves) {
            let topic = self.plan.kafka.replies(&instance.name);
            self.replies =
                Some(replies::ReplyReader::start(&self.kafka, &topic, local.clone()).map_err(setup)?);
        }
        let producer = self.kafka.producer("replies", None, shutdown).map_err(setup)?;
        Ok(Arc::new(replies::KafkaAnswers::new(
            local.clone(),
            producer,
            self.plan.kafka.clone(),
        )))
    }

    fn link(&self) -> Option<Arc<dyn LinkHealth>> {
        Some(Arc::new(Link {
            brokers: self.kafka.brokers.clone(),
            health: self.kafka.link.health.clone(),
        }))
    }

    fn runs(&self, v: Vertex) -> bool {
        let graph = &self.plan.graph;
        self.plan.placement.runs(v)
            && match v {
                Vertex::Source(i) => !matches!(graph.sources[i].kind, SourceKind::Kafka { .. }),
                Vertex::Sink(k) => !matches!(graph.sinks[k].kind, SinkKind::Kafka(_)),
                Vertex::Node(_) => true,
            }
    }

    fn open_sink(&mut self, k: usize) -> Result<Arc<Mutex<SinkWriter>>, TransportError> {
        // The group's committed offsets say where it goes on: the file grows.
        let spec = &self.plan.graph.sinks[k];
        let writer = match self.before.as_ref().and_then(|b| b.writer(spec)) {
            Some(writer) => writer,
            None => SinkWriter::open(spec, spec.file_len())
                .map(|w| Arc::new(Mutex::new(w)))
                .map_err(|e| TransportError::setup(format!("sink `{}`", spec.id), e))?,
        };
        self.opened.push((k, writer.clone()));
        Ok(writer)
    }

    fn senders(
        &mut self,
        from: Vertex,
        _: &Local,
        shutdown: &Arc<Shutdown>,
    ) -> Result<Senders, TransportError> {
        let graph = &self.plan.graph;
        let names = &self.plan.kafka;
        let id = graph.id(from);
        let transactional_id = match from {
            Vertex::Node(_) if self.eos() => self
                .instance
                .as_ref()
                .map(|i| names.transactional_id(id, &i.name)),
            _ => None,
        };
        let producer = self
            .kafka
            .producer(&format!("{from} `{id}`"), transactional_id.as_deref(), shutdown)
            .map_err(|e| TransportError::setup(format!("{from} `{id}`"), e))?;
        let slot = self.producer_slot(from);
        self.producers[slot] = Some(producer.clone());
        let to_topic = |topic: &str, marks: Option<marks::MarkOut>| {
            Sender::Outlet(Arc::new(TopicOut {
                topic: topic.to_owned(),
                producer: producer.clone(),
                shutdown: shutdown.clone(),
                marks,
            }))
        };
        let mut edges = Vec::new();
        for (e, edge) in graph.edges.iter().enumerate().filter(|(_, e)| e.from == from) {
            let topic = names.edge(e);
            // Watermarks go where a node reads: not to sinks, not to Kafka sinks' topics,
            // not around a loop.
            let marks = match (&self.instance, edge.to) {
                (Some(place), Vertex::Node(_)) if graph.has_event_time() && edge.feedback.is_none() => {
                    Some(marks::MarkOut {
                        process: place.name.clone(),
                        partitions: self
                            .kafka
                            .partitions(topic)
                            .map_err(|e| TransportError::setup(format!("topic `{topic}`"), e))?
                            .unwrap_or(graph.kafka.partitions),
                        written: Default::default(),
                    })
                }
                _ => None,
            };
            edges.push((e, vec![to_topic(topic, marks)]));
        }
        let dead_letter = match from {
            Vertex::Node(i) => names.dead_letter(i).map(|t| to_topic(t, None)),
            _ => None,
        };
        Ok(Senders { edges, dead_letter })
    }

    fn feed(
        &mut self,
        v: Vertex,
        inputs: Vec<Sender>,
        in_flight: &InFlight,
        shutdown: &Arc<Shutdown>,
    ) -> Result<Option<Box<dyn Feed>>, TransportError> {
        let graph = &self.plan.graph;
        let (commits, written) = match v {
            Vertex::Node(i) => {
                let producer = self.producers[self.producer_slot(v)]
                    .clone()
                    .expect("a node's senders are wired before its feed");
                // The stores it may write, and the timers every node may set.
                let writes = graph.nodes[i]
                    .state
                    .iter()
                    .filter(|(_, a)| *a == Access::ReadWrite)
                    .map(|(s, _)| s.as_str())
                    .chain([crate::state::TIMERS]);
                let written = self
                    .changelog
                    .as_ref()
                    .map_or_else(Vec::new, |c| c.indexes(writes));
                let commits = if self.eos() {
                    Commits::ExactlyOnce(producer)
                } else {
                    Commits::AtLeastOnce {
                        producer: Some(producer),
                    }
                };
                (commits, written)
            }
            _ => (Commits::AtLeastOnce { producer: None }, Vec::new()),
        };
        let consumer = self
            .consumer(v, commits, written, shutdown)
            .map_err(|e| TransportError::setup(format!("{v} `{}`", graph.id(v)), e))?;
        let topics = self.plan.kafka.inputs(v);
        let name = consumer.context().committer().name().to_owned();
        let ingress = Ingress {
            name,
            routes: topics
                .iter()
                .map(|i| Route::new(inputs.clone(), i.port, i.connection, in_flight.clone()))
                .collect(),
            topics: topics.iter().map(|i| i.topic.clone()).collect(),
            transactional: topics.iter().map(|i| i.transactional).collect(),
            consumer,
            batch_size: self.batch_size,
            shutdown: shutdown.clone(),
            drain: self.drains[self.slot(v)].clone(),
            stop: self.stops[self.slot(v)].clone(),
            // Only nodes use watermarks.
            marks: (graph.has_event_time() && matches!(v, Vertex::Node(_))).then(|| {
                marks::ReaderMarks::new(
                    topics
                        .iter()
                        .map(|i| match i.from {
                            Vertex::Source(s) => graph.sources[s]
                                .watermark
                                .filter(|_| matches!(graph.sources[s].kind, SourceKind::Kafka { .. })),
                            _ => None,
                        })
                        .collect(),
                    topics.iter().map(|i| i.feedback).collect(),
                )
            }),
            assigned: Vec::new(),
        };
        let stopped = self.stops[self.slot(v)].clone();
        Ok(Some(Box::new(Reader {
            ingress,
            done: self.done[self.slot(v)].clone(),
            park: (graph.id(v).to_owned(), stopped, self.parked.clone()),
        })))
    }

    fn source_ended(&self, i: usize, at: Position, shutdown: &Shutdown) -> Result<(), TransportError> {
        self.ended_at.lock().unwrap_or_else(|e| e.into_inner())[i] = at;
        match &self.producers[self.producer_slot(Vertex::Source(i))] {
            Some(producer) => flush(producer, shutdown)
                .map_err(|e| TransportError::setup(format!("source `{}`", self.plan.graph.sources[i].id), e)),
            None => Ok(()),
        }
    }

    /// The whole graph here, every source bounded: this process ends the run.
    fn ends_run(&self) -> bool {
        self.plan.placement.whole()
            && self.plan.graph.sources.iter().all(|s| match s.kind {
                SourceKind::Kafka { .. } | SourceKind::Http(_) => false,
                SourceKind::Generator { count, .. } => count.is_some(),
                _ => true,
            })
    }

    /// Lets each node and sink drain once everything upstream of it has ended, until all
    /// have (or the run stops). A loop's nodes drain together, once everything entering
    /// the loop has ended and the loop is seen to have ended ([`loops::LoopEnd`]).
    fn drain(&self, shutdown: &Shutdown) {
        let graph = &self.plan.graph;
        let names = &self.plan.kafka;
        let vertices: Vec<Vertex> = (0..graph.nodes.len())
            .map(Vertex::Node)
            .chain((0..graph.sinks.len()).map(Vertex::Sink))
            .filter(|&v| self.runs(v))
            .collect();
        let ended = |v: Vertex| match v {
            Vertex::Source(_) => true,
            v if !self.runs(v) => true,
            v => self.done[self.slot(v)].load(Ordering::Acquire),
        };
        let loops = graph.loops();
        let loop_of = |v: Vertex| match v {
            Vertex::Node(i) => loops.iter().position(|l| l.contains(&i)),
            _ => None,
        };
        // What must have ended before a vertex drains: its producers outside its loop.
        let upstream_ended = |v: Vertex| {
            names
                .inputs(v)
                .iter()
                .all(|i| ended(i.from) || (loop_of(v).is_some() && loop_of(i.from) == loop_of(v)))
        };
        let mut ends = Vec::new();
        for l in &loops {
            let ids: Vec<&str> = l.iter().map(|&i| graph.nodes[i].id.as_str()).collect();
            let inputs: Vec<(String, String)> = l
                .iter()
                .flat_map(|&i| {
                    let group = names.group(&graph.nodes[i].id);
                    names
                        .inputs(Vertex::Node(i))
                        .iter()
                        .map(move |input| (input.topic.clone(), group.clone()))
                })
                .collect();
            match loops::LoopEnd::new(&self.kafka, format!("loop of {}", ids.join(", ")), &inputs) {
                Ok(end) => ends.push((end, false, false)),
                Err(e) => return shutdown.fail(format!("{e:#}")),
            }
        }
        const LOOK_EVERY: Duration = Duration::from_millis(250);
        let mut looked = std::time::Instant::now();
        while !vertices.iter().all(|&v| ended(v)) && !shutdown.is_stopping() {
            for &v in &vertices {
                let open = loop_of(v).is_some_and(|l| !ends[l].1);
                if upstream_ended(v) && !open {
                    self.drains[self.slot(v)].store(true, Ordering::Release);
                }
            }
            if looked.elapsed() >= LOOK_EVERY {
                looked = std::time::Instant::now();
                for (l, (end, done, warned)) in ends.iter_mut().enumerate() {
                    let entered = loops[l].iter().all(|&i| upstream_ended(Vertex::Node(i)));
                    if *done || !entered {
                        continue;
                    }
                    match end.ended() {
                        Ok(true) => {
                            tracing::info!("{}: ended (seen quiet twice in {} looks)", end.name, end.waves);
                            *done = true;
                        }
                        Ok(false) => {}
                        // The brokers away for a while: look again (said once; the
                        // link's health in status says the rest).
                        Err(e) if !*warned => {
                            tracing::warn!("{}: cannot look now, trying again: {e:#}", end.name);
                            *warned = true;
                        }
                        Err(e) => tracing::debug!("{}: cannot look now: {e:#}", end.name),
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.ended.store(true, Ordering::Release);
    }

    fn background<'t>(&'t self, shutdown: &'t Shutdown) -> Option<Box<dyn FnOnce() + Send + 't>> {
        Some(Box::new(move || self.watch_topics(shutdown)))
    }

    /// Stops every consumer here but those `drains` names at its next batch, committing;
    /// those drain as at the end of a run, once what feeds them has ended.
    fn change(&self, drains: &dyn Fn(Vertex) -> bool) {
        let graph = &self.plan.graph;
        let consumers = (0..graph.nodes.len())
            .map(Vertex::Node)
            .chain((0..graph.sinks.len()).map(Vertex::Sink));
        for v in consumers.filter(|&v| !drains(v)) {
            self.stops[self.slot(v)].store(true, Ordering::Release);
        }
    }

    fn finish(&mut self, _: &Shutdown) -> Result<u64, TransportError> {
        self.replies = None;
        Ok(0)
    }

    /// Every group here has committed what it processed: the changed graph's groups go
    /// on from there; its sources from where these stopped, its sinks with their writers.
    fn hand_over(&mut self) -> Result<super::Handover, TransportError> {
        self.replies = None;
        let graph = &self.plan.graph;
        let ended_at = self.ended_at.lock().unwrap_or_else(|e| e.into_inner());
        let consumers = std::mem::take(&mut *self.parked.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(super::Handover {
            kafka: Some(Carried {
                kafka: self.kafka.clone(),
                consumers,
            }),
            log: None,
            checkpoints: 0,
            positions: graph
                .sources
                .iter()
                .cloned()
                .zip(ended_at.iter().copied())
                .collect(),
            sinks: super::Handover::sinks(graph, &self.opened),
        })
    }
}

/// The reader of one vertex's group.
struct Reader {
    ingress: Ingress,
    /// Set once the vertex has ended and committed the rest.
    done: Arc<AtomicBool>,
    /// The vertex's id, whether it was stopped for a change (its member then goes on in
    /// the changed graph), and where it is kept for it.
    park: (String, Arc<AtomicBool>, Parked),
}

impl Feed for Reader {
    /// Reads until drained or stopped, then waits for the vertex to end and commits the
    /// rest.
    fn run(self: Box<Self>, ended: &mut dyn FnMut(), shutdown: &Shutdown) {
        let Reader { ingress, done, park } = *self;
        let name = ingress.name.clone();
        let result = ingress.run().and_then(|consumer| {
            ended();
            consumer.context().committer().close(&consumer)?;
            let (id, stopped, parked) = park;
            if stopped.load(Ordering::Acquire) && !shutdown.is_stopping() {
                parked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((id, consumer));
            }
            Ok(())
        });
        if let Err(e) = result {
            shutdown.fail(format!("{name}: {e:#}"));
        }
        done.store(true, Ordering::Release);
    }
}

/// The brokers' health, for status.
struct Link {
    brokers: String,
    health: Arc<Health>,
}

impl LinkHealth for Link {
    fn report(&self) -> LinkReport {
        let (down, errors, last_error) = self.health.report();
        LinkReport {
            brokers: self.brokers.clone(),
            connected: !down,
            errors,
            last_error,
            inputs: self.health.progress.report(),
        }
    }

    fn written_to(&self, topic: &str) -> u64 {
        self.health.written_to(topic)
    }
}
