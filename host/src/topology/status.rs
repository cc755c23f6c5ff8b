//! What a running graph is doing, for `/status`, `/metrics`, `flowhost status` and the
//! progress line: per node its counts and batch latency, per replica its state, queue
//! depth and heartbeat; per source and sink their counts, and a sink's latest messages.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::flow::feedback::LoopGate;
use crate::io::http::{Exchange, HttpStats};
use serde::{Deserialize, Serialize};

use super::swap::{NodeVersions, SwapRecord};
use super::{NodeCounts, NodeStats};
use crate::clock::now_millis;
use crate::io::sink::as_json;
use crate::manifest::{Graph, SinkKind, SourceKind};
use crate::message::Msg;
use crate::state::Stores;
use crate::transport::LinkHealth;
use crate::transport::kafka::progress::{GroupReport, PartitionReport};

/// Messages a sink keeps for `flowhost tail`.
pub const RECENT: usize = 100;

/// Where a replica (or the whole graph) is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum Phase {
    /// Instantiated, not yet reading.
    Starting = 0,
    /// Reading its input.
    Running = 1,
    /// Its input has ended: finishing what is in flight.
    Draining = 2,
    /// Done.
    Stopped = 3,
    /// Stopped the graph with an error.
    Failed = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Starting,
            1 => Phase::Running,
            2 => Phase::Draining,
            3 => Phase::Stopped,
            _ => Phase::Failed,
        }
    }

    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        }
    }
}

/// A phase shared between threads.
#[derive(Debug)]
pub struct SharedPhase(AtomicU8);

impl SharedPhase {
    fn new(p: Phase) -> Self {
        SharedPhase(AtomicU8::new(p as u8))
    }

    /// Moves to `p`.
    pub fn set(&self, p: Phase) {
        self.0.store(p as u8, Ordering::Relaxed);
    }

    /// The current phase.
    pub fn get(&self) -> Phase {
        Phase::from_u8(self.0.load(Ordering::Relaxed))
    }
}

/// Live status of one replica, written by its own thread (the heartbeat proves that
/// thread is alive and not stuck) and by its producers (queue depth).
#[derive(Debug)]
pub struct ReplicaStatus {
    /// Its phase.
    pub phase: SharedPhase,
    heartbeat: AtomicI64,
    /// Batches waiting in its channel.
    pub queue: Arc<AtomicUsize>,
    latency: Mutex<Histogram<u64>>,
    /// Its watermark (`i64::MIN`: none yet).
    watermark: AtomicI64,
    /// Whether its inputs are all idle.
    idle: std::sync::atomic::AtomicBool,
    /// Timers set: event time, processing time.
    timers: [AtomicU64; 2],
}

impl ReplicaStatus {
    fn new() -> Self {
        ReplicaStatus {
            phase: SharedPhase::new(Phase::Starting),
            heartbeat: AtomicI64::new(now_millis()),
            queue: Arc::default(),
            latency: Mutex::new(crate::clock::latency_histogram()),
            watermark: AtomicI64::new(i64::MIN),
            idle: Default::default(),
            timers: Default::default(),
        }
    }

    /// Its event time now: its watermark, whether its inputs are idle, and its timers.
    pub fn event_time(&self, watermark: Option<i64>, idle: bool, (event, processing): (usize, usize)) {
        self.watermark
            .store(watermark.unwrap_or(i64::MIN), Ordering::Relaxed);
        self.idle.store(idle, Ordering::Relaxed);
        self.timers[0].store(event as u64, Ordering::Relaxed);
        self.timers[1].store(processing as u64, Ordering::Relaxed);
    }

    /// The replica is alive.
    pub fn beat(&self) {
        self.heartbeat.store(now_millis(), Ordering::Relaxed);
    }

    /// A batch took `took` to process.
    pub fn processed(&self, took: Duration) {
        let micros = took.as_micros().min(u64::MAX as u128) as u64;
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(micros.max(1));
    }
}

/// A sink's count and (when something can read them) latest messages.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// Messages written.
    pub written: AtomicU64,
    /// Batches waiting in its channel.
    pub queue: Arc<AtomicUsize>,
    keep_recent: bool,
    recent: Mutex<VecDeque<Msg>>,
}

impl SinkStatus {
    /// Records a written batch.
    pub fn wrote(&self, msgs: &[Msg]) {
        if !self.keep_recent {
            self.written.fetch_add(msgs.len() as u64, Ordering::Relaxed);
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let keep = &msgs[msgs.len().saturating_sub(RECENT)..];
        let excess = (recent.len() + keep.len())
            .saturating_sub(RECENT)
            .min(recent.len());
        recent.drain(..excess);
        recent.extend(keep.iter().cloned());
        // Under the lock, so `tail` numbers what it sees right.
        self.written.fetch_add(msgs.len() as u64, Ordering::Relaxed);
    }
}

/// A node's id, versions, counters and replicas.
struct NodeEntry {
    id: String,
    versions: Arc<NodeVersions>,
    stats: Arc<NodeStats>,
    replicas: Vec<Arc<ReplicaStatus>>,
}

/// Status of a running graph.
pub struct Status {
    graph: String,
    started: Instant,
    heartbeat: Duration,
    /// The graph's phase.
    pub phase: SharedPhase,
    /// What is graph-shaped: replaced whole when a change is applied (`flowhost apply`).
    shape: RwLock<Arc<Shape>>,
    link: std::sync::OnceLock<Arc<dyn LinkHealth>>,
    /// The changes applied to the graph while it runs, and the door to apply one.
    pub applied: super::apply::Applied,
}

/// The graph as it runs now, and the status of each of its vertices.
struct Shape {
    graph: Graph,
    nodes: Vec<NodeEntry>,
    sources: Vec<(String, Arc<AtomicU64>)>,
    sinks: Vec<(String, Arc<SinkStatus>)>,
    /// The topic of each Kafka source and sink (by index), whose counts the link keeps.
    topics: (Vec<Option<String>>, Vec<Option<String>>),
    stores: Stores,
    /// Per source, its HTTP counters (an `http` source here) and the process's exchange.
    http: Vec<std::sync::OnceLock<(Arc<HttpStats>, Arc<Exchange>)>>,
    /// The graph's loops: their nodes and gates.
    loops: std::sync::OnceLock<Vec<(Vec<usize>, Arc<LoopGate>)>>,
    /// The vertices this process runs, as `<kind>:<id>`.
    runs: std::sync::OnceLock<Vec<String>>,
}

impl Shape {
    /// `before`: the shape the graph had, whose vertices' status carries over by id.
    fn new(
        graph: &Graph,
        (versions, stats): (&[Arc<NodeVersions>], &[Arc<NodeStats>]),
        stores: Stores,
        tails: bool,
        before: Option<&Shape>,
    ) -> Self {
        let kept = |id: &str, replicas: u32| {
            let entry = before?.nodes.iter().find(|n| n.id == id)?;
            (entry.replicas.len() == replicas as usize).then(|| entry.replicas.clone())
        };
        Shape {
            graph: graph.clone(),
            nodes: graph
                .nodes
                .iter()
                .zip(versions)
                .zip(stats)
                .map(|((n, versions), s)| {
                    let replicas = kept(&n.id, n.replicas)
                        .unwrap_or_else(|| (0..n.replicas).map(|_| Arc::new(ReplicaStatus::new())).collect());
                    NodeEntry {
                        id: n.id.clone(),
                        versions: versions.clone(),
                        stats: s.clone(),
                        replicas,
                    }
                })
                .collect(),
            sources: graph
                .sources
                .iter()
                .map(|s| {
                    let read = before.and_then(|b| b.sources.iter().find(|(id, _)| *id == s.id));
                    (s.id.clone(), read.map(|(_, n)| n.clone()).unwrap_or_default())
                })
                .collect(),
            sinks: graph
                .sinks
                .iter()
                .map(|s| {
                    let sink = before.and_then(|b| b.sinks.iter().find(|(id, _)| *id == s.id));
                    let sink = sink.map(|(_, k)| k.clone()).unwrap_or_else(|| {
                        Arc::new(SinkStatus {
                            keep_recent: tails,
                            ..SinkStatus::default()
                        })
                    });
                    (s.id.clone(), sink)
                })
                .collect(),
            topics: (
                graph
                    .sources
                    .iter()
                    .map(|s| match &s.kind {
                        SourceKind::Kafka { topic } => Some(topic.clone()),
                        _ => None,
                    })
                    .collect(),
                graph
                    .sinks
                    .iter()
                    .map(|s| match &s.kind {
                        SinkKind::Kafka(topic) => Some(topic.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            stores,
            http: graph.sources.iter().map(|_| std::sync::OnceLock::new()).collect(),
            loops: std::sync::OnceLock::new(),
            runs: std::sync::OnceLock::new(),
        }
    }
}

impl Status {
    /// Reports the graph's loops (nodes by index) and their gates.
    pub fn set_loops(&self, loops: &[Vec<usize>], gates: &[Arc<LoopGate>]) {
        let shape = self.shape();
        let _ = shape
            .loops
            .set(loops.iter().cloned().zip(gates.iter().cloned()).collect());
    }

    /// Reports the vertices this process runs (over Kafka, maybe a part of the graph).
    pub fn set_runs(&self, graph: &Graph, here: &[crate::manifest::Vertex]) {
        let shape = self.shape();
        use crate::manifest::Vertex;
        let names = here.iter().map(|&v| {
            let kind = match v {
                Vertex::Source(_) => "source",
                Vertex::Node(_) => "node",
                Vertex::Sink(_) => "sink",
            };
            format!("{kind}:{}", graph.id(v))
        });
        let _ = shape.runs.set(names.collect());
    }

    /// Reports `http` source `i`'s counters.
    pub fn set_http(&self, i: usize, stats: Arc<HttpStats>, exchange: Arc<Exchange>) {
        let shape = self.shape();
        let _ = shape.http[i].set((stats, exchange));
    }

    /// Reports the transport's link to its services (the Kafka brokers).
    pub fn set_link(&self, link: Arc<dyn LinkHealth>) {
        let _ = self.link.set(link);
    }

    /// Status for `graph`: each node's versions and counters, the stores; with `tails`,
    /// sinks keep their latest messages for [`Status::tail`].
    pub fn new(
        graph: &Graph,
        nodes: (&[Arc<NodeVersions>], &[Arc<NodeStats>]),
        stores: Stores,
        heartbeat: Duration,
        tails: bool,
    ) -> Self {
        Status {
            graph: graph.name.clone(),
            started: Instant::now(),
            heartbeat,
            phase: SharedPhase::new(Phase::Starting),
            shape: RwLock::new(Arc::new(Shape::new(graph, nodes, stores, tails, None))),
            link: std::sync::OnceLock::new(),
            applied: Default::default(),
        }
    }

    /// The graph runs as `graph` from now on: the vertices it keeps keep their status
    /// (by id), its new ones start at zero.
    pub fn reshape(&self, graph: &Graph, nodes: (&[Arc<NodeVersions>], &[Arc<NodeStats>]), stores: Stores) {
        let mut shape = self.shape.write().unwrap_or_else(|e| e.into_inner());
        let tails = shape.sinks.first().is_some_and(|(_, s)| s.keep_recent);
        *shape = Arc::new(Shape::new(graph, nodes, stores, tails, Some(&shape)));
    }

    fn shape(&self) -> Arc<Shape> {
        self.shape.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The graph as it runs now.
    pub fn graph(&self) -> Graph {
        self.shape().graph.clone()
    }

    /// How often replicas beat.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Replica `r` of node `i`.
    pub fn replica(&self, i: usize, r: usize) -> Arc<ReplicaStatus> {
        let shape = self.shape();
        shape.nodes[i].replicas[r].clone()
    }

    /// The counter of messages read by source `i`.
    pub fn source(&self, i: usize) -> Arc<AtomicU64> {
        let shape = self.shape();
        shape.sources[i].1.clone()
    }

    /// Sink `k`.
    pub fn sink(&self, k: usize) -> Arc<SinkStatus> {
        let shape = self.shape();
        shape.sinks[k].1.clone()
    }

    /// The versions of node `id`, to swap it.
    pub fn versions(&self, id: &str) -> Option<Arc<NodeVersions>> {
        let shape = self.shape();
        shape
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.versions.clone())
    }

    /// A snapshot, as `/status` serves it.
    pub fn report(&self) -> StatusReport {
        let shape = self.shape();
        let now = now_millis();
        let stale_after = 3 * self.heartbeat.as_millis() as i64;
        let link = self.link.get();
        let kafka = link.map(|link| {
            let r = link.report();
            KafkaReport {
                brokers: r.brokers,
                connected: r.connected,
                errors: r.errors,
                last_error: r.last_error,
                lag: r.inputs.iter().map(|g| g.lag).sum(),
                inputs: r.inputs,
            }
        });
        // A Kafka source is read by the groups of the vertices it feeds (each reads all
        // of it), a Kafka sink written by this process's producers.
        let read_from = |topic: &str| {
            let inputs = kafka.iter().flat_map(|k| &k.inputs);
            inputs
                .filter_map(|g| g.read.get(topic))
                .max()
                .copied()
                .unwrap_or(0)
        };
        let (source_topics, sink_topics) = &shape.topics;
        StatusReport {
            graph: self.graph.clone(),
            state: self.phase.get(),
            graph_version: self.applied.version(),
            applied: self.applied.history(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            heartbeat_ms: self.heartbeat.as_millis() as u64,
            sources: shape
                .sources
                .iter()
                .zip(source_topics)
                .zip(&shape.http)
                .map(|(((id, n), topic), http)| SourceReport {
                    id: id.clone(),
                    read: match topic {
                        Some(t) => read_from(t),
                        None => n.load(Ordering::Relaxed),
                    },
                    http: http.get().map(|(h, exchange)| {
                        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
                        let latency = h.latency.lock().unwrap_or_else(|e| e.into_inner());
                        HttpReport {
                            listen: h.listen.to_string(),
                            in_flight: get(&h.in_flight),
                            requests: get(&h.requests),
                            answered: get(&h.answered),
                            errors: get(&h.errors),
                            timed_out: get(&h.timed_out),
                            rejected: get(&h.rejected),
                            too_large: get(&h.too_large),
                            unmatched: exchange.unmatched(),
                            latency_us: Latency::of(&latency),
                        }
                    }),
                })
                .collect(),
            nodes: shape
                .nodes
                .iter()
                .map(
                    |NodeEntry {
                         id,
                         versions,
                         stats,
                         replicas,
                     }| {
                        let mut all = crate::clock::latency_histogram();
                        let replicas = replicas
                            .iter()
                            .enumerate()
                            .map(|(index, r)| {
                                let _ = all.add(&*r.latency.lock().unwrap_or_else(|e| e.into_inner()));
                                let phase = r.phase.get();
                                let ago = now - r.heartbeat.load(Ordering::Relaxed);
                                ReplicaReport {
                                    index,
                                    state: phase,
                                    queue_depth: r.queue.load(Ordering::Relaxed),
                                    heartbeat_ms_ago: ago,
                                    stale: matches!(phase, Phase::Running | Phase::Draining)
                                        && ago > stale_after,
                                    version: versions.running(index),
                                    watermark: Some(r.watermark.load(Ordering::Relaxed))
                                        .filter(|&w| w != i64::MIN),
                                    idle: r.idle.load(Ordering::Relaxed),
                                    event_timers: r.timers[0].load(Ordering::Relaxed),
                                    processing_timers: r.timers[1].load(Ordering::Relaxed),
                                }
                            })
                            .collect();
                        let current = versions.current();
                        NodeReport {
                            id: id.clone(),
                            module_hash: current.hash().to_owned(),
                            version: current.number,
                            swaps: versions.history(),
                            counts: stats.counts(),
                            latency_us: Latency::of(&all),
                            replicas,
                        }
                    },
                )
                .collect(),
            sinks: shape
                .sinks
                .iter()
                .zip(sink_topics)
                .map(|((id, s), topic)| SinkReport {
                    id: id.clone(),
                    written: match (topic, link) {
                        (Some(t), Some(link)) => link.written_to(t),
                        _ => s.written.load(Ordering::Relaxed),
                    },
                    queue_depth: s.queue.load(Ordering::Relaxed),
                })
                .collect(),
            stores: shape
                .stores
                .iter()
                .filter(|s| s.name() != crate::state::TIMERS)
                .map(|s| StoreReport {
                    name: s.name().to_owned(),
                    keys: s.len() as u64,
                    bytes: s.bytes(),
                    durable: s.is_durable(),
                })
                .collect(),
            runs: shape.runs.get().cloned().unwrap_or_default(),
            loops: shape
                .loops
                .get()
                .into_iter()
                .flatten()
                .map(|(nodes, gate)| LoopReport {
                    nodes: nodes.iter().map(|&i| shape.nodes[i].id.clone()).collect(),
                    iteration: gate.reached(),
                    fed_back: gate.fed_back(),
                    exceeded: gate.exceeded(),
                    queued: nodes
                        .iter()
                        .flat_map(|&i| &shape.nodes[i].replicas)
                        .map(|r| r.queue.load(Ordering::Relaxed))
                        .sum(),
                    lag: nodes
                        .iter()
                        .map(|&i| format!("node `{}`", shape.nodes[i].id))
                        .flat_map(|vertex| {
                            let groups = kafka.iter().flat_map(|k| &k.inputs);
                            groups.filter(move |g| g.vertex == vertex).map(|g| g.lag)
                        })
                        .sum(),
                })
                .collect(),
            kafka,
        }
    }

    /// The latest messages of sink `id` after number `after` (1-based over the run), as
    /// `(number, message as JSON)`; `None` if there is no such sink.
    pub fn tail(&self, id: &str, after: u64) -> Option<Vec<(u64, serde_json::Value)>> {
        let shape = self.shape();
        let (_, sink) = shape.sinks.iter().find(|(s, _)| s == id)?;
        let recent = sink.recent.lock().unwrap_or_else(|e| e.into_inner());
        let last = sink.written.load(Ordering::Relaxed);
        let first = last + 1 - recent.len() as u64;
        Some(
            recent
                .iter()
                .zip(first..)
                .filter(|(_, n)| *n > after)
                .map(|(m, n)| (n, as_json(m)))
                .collect(),
        )
    }

    /// Prometheus text exposition of the counters.
    pub fn prometheus(&self) -> String {
        let r = self.report();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            out += &format!("# HELP flowhost_{name} {help}\n# TYPE flowhost_{name} {kind}\n");
            for (labels, v) in samples {
                out += &format!("flowhost_{name}{{graph=\"{}\"{labels}}} {v}\n", r.graph);
            }
        };
        let per_node = |f: &dyn Fn(&NodeReport) -> f64| -> Vec<(String, f64)> {
            r.nodes
                .iter()
                .map(|n| (format!(",node=\"{}\"", n.id), f(n)))
                .collect()
        };
        for (name, help, get) in [
            (
                "node_received_total",
                "Messages delivered to the node.",
                (|c: &NodeCounts| c.received) as fn(&NodeCounts) -> u64,
            ),
            ("node_emitted_total", "Records the node emitted.", |c| c.emitted),
            ("node_errors_total", "Messages that failed for good.", |c| {
                c.errors
            }),
            (
                "node_dead_lettered_total",
                "Failed messages sent to the dead-letter sink.",
                |c| c.dead_lettered,
            ),
            ("node_skipped_total", "Failed messages skipped.", |c| c.skipped),
            ("node_retries_total", "Retries of retryable errors.", |c| {
                c.retries
            }),
            (
                "node_traps_total",
                "Instances that trapped and were replaced.",
                |c| c.traps,
            ),
        ] {
            family(name, "counter", help, per_node(&|n| get(&n.counts) as f64));
        }
        for (q, get) in [
            ("0.5", (|l: &Latency| l.p50) as fn(&Latency) -> u64),
            ("0.9", |l| l.p90),
            ("0.99", |l| l.p99),
        ] {
            let samples = r
                .nodes
                .iter()
                .map(|n| {
                    (
                        format!(",node=\"{}\",quantile=\"{q}\"", n.id),
                        get(&n.latency_us) as f64 / 1e6,
                    )
                })
                .collect();
            family(
                &format!("node_batch_seconds_q{}", q.replace('.', "_")),
                "gauge",
                "Time to process one batch, by quantile.",
                samples,
            );
        }
        family(
            "node_version",
            "gauge",
            "The module version the node runs (hot swap).",
            per_node(&|n| f64::from(n.version)),
        );
        let replicas = |f: &dyn Fn(&ReplicaReport) -> f64| -> Vec<(String, f64)> {
            r.nodes
                .iter()
                .flat_map(|n| {
                    n.replicas
                        .iter()
                        .map(move |p| (format!(",node=\"{}\",replica=\"{}\"", n.id, p.index), f(p)))
                })
                .collect()
        };
        family(
            "replica_queue_depth",
            "gauge",
            "Batches waiting for the replica.",
            replicas(&|p| p.queue_depth as f64),
        );
        family(
            "replica_up",
            "gauge",
            "1 if the replica is running and its heartbeat is fresh.",
            replicas(&|p| f64::from(u8::from(p.state == Phase::Running && !p.stale))),
        );
        family(
            "replica_watermark_seconds",
            "gauge",
            "The replica's event-time watermark, seconds since the epoch (+Inf once its inputs ended).",
            replicas(&|p| match p.watermark {
                Some(i64::MAX) => f64::INFINITY,
                Some(w) => w as f64 / 1000.0,
                None => f64::NAN,
            })
            .into_iter()
            .filter(|(_, v)| !v.is_nan())
            .collect(),
        );
        family(
            "replica_idle",
            "gauge",
            "1 if every input of the replica is idle.",
            replicas(&|p| f64::from(u8::from(p.idle))),
        );
        family(
            "replica_event_timers",
            "gauge",
            "Event-time timers set (open windows, for a windowed node).",
            replicas(&|p| p.event_timers as f64),
        );
        family(
            "replica_processing_timers",
            "gauge",
            "Processing-time timers set.",
            replicas(&|p| p.processing_timers as f64),
        );
        family(
            "source_read_total",
            "counter",
            "Messages read by the source.",
            r.sources
                .iter()
                .map(|s| (format!(",source=\"{}\"", s.id), s.read as f64))
                .collect(),
        );
        let per_http = |f: &dyn Fn(&HttpReport) -> f64| -> Vec<(String, f64)> {
            r.sources
                .iter()
                .filter_map(|s| Some((format!(",source=\"{}\"", s.id), f(s.http.as_ref()?))))
                .collect()
        };
        for (name, kind, help, get) in [
            (
                "http_in_flight",
                "gauge",
                "HTTP requests open (waiting for their answer).",
                (|h: &HttpReport| h.in_flight) as fn(&HttpReport) -> u64,
            ),
            (
                "http_requests_total",
                "counter",
                "HTTP requests taken into the graph.",
                |h| h.requests,
            ),
            (
                "http_answered_total",
                "counter",
                "HTTP requests answered by the graph.",
                |h| h.answered,
            ),
            (
                "http_errors_total",
                "counter",
                "HTTP requests answered with a status of 400 or more.",
                |h| h.errors,
            ),
            (
                "http_timed_out_total",
                "counter",
                "HTTP requests answered 504 (no answer in time).",
                |h| h.timed_out,
            ),
            (
                "http_rejected_total",
                "counter",
                "HTTP requests answered 503 (busy or shutting down).",
                |h| h.rejected,
            ),
            (
                "http_too_large_total",
                "counter",
                "HTTP requests answered 413 (body too large).",
                |h| h.too_large,
            ),
            (
                "http_unmatched_total",
                "counter",
                "Answers whose request was already answered or gone.",
                |h| h.unmatched,
            ),
            (
                "http_latency_p50_us",
                "gauge",
                "Median time from request to answer, microseconds.",
                |h| h.latency_us.p50,
            ),
            (
                "http_latency_p99_us",
                "gauge",
                "99th percentile of request to answer, microseconds.",
                |h| h.latency_us.p99,
            ),
        ] {
            let samples = per_http(&|h| get(h) as f64);
            if !samples.is_empty() {
                family(name, kind, help, samples);
            }
        }
        family(
            "sink_written_total",
            "counter",
            "Messages written by the sink.",
            r.sinks
                .iter()
                .map(|s| (format!(",sink=\"{}\"", s.id), s.written as f64))
                .collect(),
        );
        if let Some(k) = &r.kafka {
            family(
                "kafka_connected",
                "gauge",
                "1 while a Kafka broker is reachable.",
                vec![(String::new(), f64::from(u8::from(k.connected)))],
            );
            let partitions = |f: &dyn Fn(&PartitionReport) -> i64| -> Vec<(String, f64)> {
                k.inputs
                    .iter()
                    .flat_map(|g| {
                        g.partitions.iter().map(move |p| {
                            let labels = format!(
                                ",vertex=\"{}\",topic=\"{}\",partition=\"{}\"",
                                g.vertex.replace(['`', '"'], ""),
                                p.topic,
                                p.partition
                            );
                            (labels, f(p) as f64)
                        })
                    })
                    .collect()
            };
            family(
                "kafka_lag",
                "gauge",
                "Records of the partition after the group's committed offset.",
                partitions(&|p| p.lag),
            );
            family(
                "kafka_committed_offset",
                "gauge",
                "The group's committed offset.",
                partitions(&|p| p.committed),
            );
            family(
                "kafka_end_offset",
                "gauge",
                "The partition's end offset.",
                partitions(&|p| p.end),
            );
            let stuck = k
                .inputs
                .iter()
                .map(|g| {
                    let labels = format!(",vertex=\"{}\"", g.vertex.replace(['`', '"'], ""));
                    (labels, g.uncommitted_ms.unwrap_or(0) as f64 / 1e3)
                })
                .collect();
            family(
                "kafka_uncommitted_seconds",
                "gauge",
                "How long work has waited to be committed (0: all committed).",
                stuck,
            );
        }
        family(
            "store_keys",
            "gauge",
            "Live keys in the store.",
            r.stores
                .iter()
                .map(|s| (format!(",store=\"{}\"", s.name), s.keys as f64))
                .collect(),
        );
        family(
            "store_bytes",
            "gauge",
            "Bytes of keys and values in the store.",
            r.stores
                .iter()
                .map(|s| (format!(",store=\"{}\"", s.name), s.bytes as f64))
                .collect(),
        );
        out
    }
}

fn first_version() -> u32 {
    1
}

/// `/status`: the graph and every node replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// The graph's name.
    pub graph: String,
    /// The graph's phase.
    pub state: Phase,
    /// Its version: 1 as it started, one more for each change applied (`flowhost apply`).
    #[serde(default = "first_version")]
    pub graph_version: u32,
    /// The changes asked while it runs, applied or refused (the latest 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<super::apply::ApplyRecord>,
    /// Since the run started.
    pub uptime_ms: u64,
    /// How often replicas beat; a replica is stale after three missed beats.
    pub heartbeat_ms: u64,
    /// Sources.
    pub sources: Vec<SourceReport>,
    /// Nodes.
    pub nodes: Vec<NodeReport>,
    /// Sinks.
    pub sinks: Vec<SinkReport>,
    /// Stores.
    pub stores: Vec<StoreReport>,
    /// The vertices this process runs (`source:in`, `node:count`, `sink:out`); the
    /// report's other vertices run elsewhere (over Kafka) and show zeros here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<String>,
    /// Loops (feedback edges).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loops: Vec<LoopReport>,
    /// The link to the Kafka brokers (Kafka transport).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaReport>,
}

/// The Kafka link in [`StatusReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KafkaReport {
    /// Bootstrap brokers.
    pub brokers: String,
    /// False while every broker is unreachable (the host retries with backoff).
    pub connected: bool,
    /// Client errors seen (connections lost, timeouts).
    pub errors: u64,
    /// The last of them.
    pub last_error: Option<String>,
    /// The input lag of every group in this process, in records.
    #[serde(default)]
    pub lag: i64,
    /// This process's consumer groups (one per vertex fed from topics): partitions held,
    /// committed and fetched offsets, ends, lag, records read; work waiting to commit.
    #[serde(default)]
    pub inputs: Vec<GroupReport>,
}

/// A source in [`StatusReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceReport {
    /// Its id.
    pub id: String,
    /// Messages read.
    pub read: u64,
    /// An `http` source's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpReport>,
}

/// A loop in [`StatusReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopReport {
    /// The nodes inside it.
    pub nodes: Vec<String>,
    /// The most times a message has gone around.
    pub iteration: u32,
    /// Messages sent around (over its feedback edges).
    pub fed_back: u64,
    /// Messages dropped at `max_iterations`.
    pub exceeded: u64,
    /// Batches waiting in its nodes' channels now.
    pub queued: usize,
    /// Over Kafka: records waiting in the loop's input partitions this process holds
    /// (not yet committed by its nodes' groups).
    #[serde(default)]
    pub lag: i64,
}

/// An `http` source's requests in [`SourceReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpReport {
    /// Where it listens.
    pub listen: String,
    /// Open now (waiting for their answer).
    pub in_flight: u64,
    /// Taken into the graph.
    pub requests: u64,
    /// Answered by the graph: a reply, or the error of their message.
    pub answered: u64,
    /// Of those, with a status of 400 or more.
    pub errors: u64,
    /// Answered 504: no answer within `timeout_ms`.
    pub timed_out: u64,
    /// Answered 503: `max_in_flight` open, or shutting down.
    pub rejected: u64,
    /// Answered 413: body over `max_body_bytes`.
    pub too_large: u64,
    /// Answers (of this process) that found their request gone: a second answer, or
    /// one after the timeout.
    pub unmatched: u64,
    /// Request to answer, microseconds (`batches`: requests measured).
    pub latency_us: Latency,
}

/// A node in [`StatusReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    /// Its id.
    pub id: String,
    /// SHA-256 of its module.
    pub module_hash: String,
    /// Module version: 1 as started, one more for each swap (a rollback returns to the
    /// number it rolls back to).
    pub version: u32,
    /// Its swaps, oldest first.
    #[serde(default)]
    pub swaps: Vec<SwapRecord>,
    /// Its counters.
    #[serde(flatten)]
    pub counts: NodeCounts,
    /// Time to process a batch, over all replicas.
    pub latency_us: Latency,
    /// Its replicas.
    pub replicas: Vec<ReplicaReport>,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Longest.
    pub max: u64,
    /// Batches measured.
    pub batches: u64,
}

impl Latency {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            batches: h.len(),
        }
    }
}

/// A replica in [`NodeReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaReport {
    /// 0-based.
    pub index: usize,
    /// Its phase.
    pub state: Phase,
    /// Batches waiting for it.
    pub queue_depth: usize,
    /// Since its last heartbeat.
    pub heartbeat_ms_ago: i64,
    /// Running, but no heartbeat for three intervals: stuck (a long call, a blocked send).
    pub stale: bool,
    /// The module version it runs (during a swap, replicas switch one by one).
    #[serde(default)]
    pub version: u32,
    /// Its watermark (milliseconds since the epoch; `i64::MAX` once its inputs ended),
    /// if every input has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// Every input is idle (its watermark holds nobody back).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idle: bool,
    /// Event-time timers set (open windows, for a windowed node).
    #[serde(default)]
    pub event_timers: u64,
    /// Processing-time timers set.
    #[serde(default)]
    pub processing_timers: u64,
}

/// A sink in [`StatusReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkReport {
    /// Its id.
    pub id: String,
    /// Messages written.
    pub written: u64,
    /// Batches waiting for it.
    pub queue_depth: usize,
}

/// A store in [`StatusReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreReport {
    /// Its name.
    pub name: String,
    /// Live keys.
    pub keys: u64,
    /// Bytes of keys and values (what `max_bytes` limits).
    #[serde(default)]
    pub bytes: u64,
    /// Whether it is checkpointed.
    pub durable: bool,
}
