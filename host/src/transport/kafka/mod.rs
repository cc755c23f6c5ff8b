//! A graph over Kafka (`transport = "kafka"`): every edge is a topic, every node and sink
//! a consumer group (`<graph>.<id>`), so every replica in every `flowhost` process
//! running the same graph shares the partitions of its inputs.
//!
//! In one process a node is what it is in-process — replicas on their own threads with
//! their instances, routers and error policies — fed by an [`ingress::Ingress`] (the
//! group member reading its input topics) and sending to topics through a producer
//! ([`client::TopicOut`]). Keys, headers and timestamps travel with each record; Kafka
//! partitions by key, so per-key order holds across processes.
//!
//! A process runs the vertices `--nodes` names (all by default). The process that runs
//! the whole graph, with bounded sources only, ends the run: once its sources have ended,
//! each node and sink drains in graph order — when everything upstream has ended and its
//! group has committed every input partition to its end, it runs `finish` and stops.
//! Other processes run until stopped (Ctrl-C), settling and committing what they hold.

mod changelog;
pub mod client;
mod ingress;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::Consumer;

pub use client::{CONNECT_TIMEOUT, Health};

use crate::engine::Engine;
use crate::io::sink::SinkWriter;
use crate::io::source;
use crate::manifest::{Connection, Delivery, ErrorPolicy, Graph, SinkKind, SourceKind, Vertex};
use crate::state::durable::Position;
use crate::state::{Entries, Stores};
use crate::topology::status::Phase;
use crate::topology::{
    InFlight, Inbox, Nodes, Route, Router, RunOptions, RunReport, Services, Shutdown, channel, drain_sink,
};
use changelog::Changelog;
use client::{Kafka, Producer, TopicOut, flush};
use ingress::{Commits, Committer, Ingress, Rebalancing};

/// The durable stores of a Kafka graph as its changelogs hold them, and the brokers.
pub fn read_state(graph: &Graph) -> anyhow::Result<(BTreeMap<String, Entries>, String)> {
    let kafka = Kafka::new(&graph.kafka)?;
    kafka.connect()?;
    let stores = Stores::for_graph(graph);
    let changelog = Changelog::new(&kafka, &graph.name, &stores, &Arc::default())?;
    for topic in changelog.topics() {
        if kafka.partitions(topic)?.is_none() {
            bail!(
                "graph `{}` has no state on {} yet: no topic `{topic}`",
                graph.name,
                kafka.brokers
            );
        }
    }
    changelog.restore(&kafka, None)?;
    let entries = stores
        .iter()
        .filter(|s| s.is_durable())
        .map(|s| (s.name().to_owned(), s.entries()))
        .collect();
    Ok((entries, kafka.brokers))
}

/// Which vertices run in this process.
struct Placement {
    sources: Vec<bool>,
    nodes: Vec<bool>,
    sinks: Vec<bool>,
}

impl Placement {
    fn new(graph: &Graph, names: Option<&[String]>) -> anyhow::Result<Placement> {
        let Some(names) = names else {
            return Ok(Placement {
                sources: vec![true; graph.sources.len()],
                nodes: vec![true; graph.nodes.len()],
                sinks: vec![true; graph.sinks.len()],
            });
        };
        for n in names {
            let known = graph.sources.iter().any(|s| &s.id == n)
                || graph.nodes.iter().any(|s| &s.id == n)
                || graph.sinks.iter().any(|s| &s.id == n);
            if !known {
                bail!(
                    "--nodes: `{n}` is not a source, node or sink of graph `{}`",
                    graph.name
                );
            }
        }
        let here = |id: &String| names.contains(id);
        Ok(Placement {
            sources: graph.sources.iter().map(|s| here(&s.id)).collect(),
            nodes: graph.nodes.iter().map(|n| here(&n.id)).collect(),
            sinks: graph.sinks.iter().map(|s| here(&s.id)).collect(),
        })
    }

    fn whole(&self) -> bool {
        [&self.sources, &self.nodes, &self.sinks]
            .iter()
            .all(|v| v.iter().all(|&b| b))
    }
}

/// The topic node `i` dead-letters into: its Kafka sink's, or `<graph>.<node>.dead-letter`.
fn dead_letter_topic(graph: &Graph, i: usize) -> Option<String> {
    let ErrorPolicy::DeadLetter(k) = graph.nodes[i].on_error else {
        return None;
    };
    Some(match &graph.sinks[k].kind {
        SinkKind::Kafka(topic) => topic.clone(),
        _ => format!("{}.{}.dead-letter", graph.name, graph.nodes[i].id),
    })
}

/// An input topic of a vertex: the port it feeds, how it spreads over replicas, and
/// whether it is written in transactions.
struct Input {
    topic: String,
    port: u16,
    connection: Connection,
    transactional: bool,
    from: Vertex,
}

fn inputs(graph: &Graph, v: Vertex) -> Vec<Input> {
    let eos = graph.kafka.delivery == Delivery::ExactlyOnce;
    let mut list: Vec<Input> = graph
        .edges
        .iter()
        .filter(|e| e.to == v)
        .map(|e| Input {
            topic: e.topic.clone(),
            port: e.to_port,
            connection: e.connection,
            transactional: eos && matches!(e.from, Vertex::Node(_)),
            from: e.from,
        })
        .collect();
    if let Vertex::Sink(k) = v {
        for (i, n) in graph.nodes.iter().enumerate() {
            if n.on_error == ErrorPolicy::DeadLetter(k)
                && let Some(topic) = dead_letter_topic(graph, i)
            {
                list.push(Input {
                    topic,
                    port: 0,
                    connection: Connection::RoundRobin,
                    transactional: eos,
                    from: Vertex::Node(i),
                });
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    list.retain(|i| seen.insert(i.topic.clone()));
    list
}

/// Creates the topics the graph writes; checks the ones Kafka sources read exist.
fn prepare_topics(kafka: &Kafka, graph: &Graph, changelog: Option<&Changelog>) -> anyhow::Result<()> {
    for s in &graph.sources {
        if let SourceKind::Kafka { topic } = &s.kind
            && kafka.partitions(topic)?.is_none()
        {
            bail!(
                "source `{}`: topic `{topic}` does not exist on the brokers {}",
                s.id,
                kafka.brokers
            );
        }
    }
    let mut topics: Vec<(String, bool)> = graph
        .edges
        .iter()
        .filter(|e| !matches!(e.from, Vertex::Source(i) if matches!(graph.sources[i].kind, SourceKind::Kafka { .. })))
        .map(|e| (e.topic.clone(), false))
        .chain((0..graph.nodes.len()).filter_map(|i| Some((dead_letter_topic(graph, i)?, false))))
        .chain(changelog.into_iter().flat_map(|c| c.topics().map(|t| (t.to_owned(), true))))
        .collect();
    topics.sort();
    topics.dedup();
    kafka.create_topics(&topics)
}

/// Runs the vertices of `graph` placed on this process over Kafka.
pub fn run(
    graph: &Graph,
    engine: &Engine,
    opts: &RunOptions,
    shutdown: &Arc<Shutdown>,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let kafka = Kafka::new(&graph.kafka)?;
    let here = Placement::new(graph, opts.placement.as_deref())?;
    kafka.connect()?;
    let stores = Stores::for_graph(graph);
    let changelog = if graph.is_durable() {
        Some(Arc::new(Changelog::new(&kafka, &graph.name, &stores, shutdown)?))
    } else {
        None
    };
    prepare_topics(&kafka, graph, changelog.as_deref())?;
    if let Some(c) = &changelog {
        c.restore(&kafka, Some(shutdown))?;
    }
    let nodes = Nodes::load(graph, engine, opts, &stores)?;
    let status = nodes.status.clone();
    status.set_kafka(kafka.brokers.clone(), kafka.link.health.clone());
    let in_flight = InFlight::default();
    let eos = graph.kafka.delivery == Delivery::ExactlyOnce;
    let to_topic = |topic: &str, producer: &Arc<Producer>| {
        Inbox::Outlet(Arc::new(TopicOut {
            topic: topic.to_owned(),
            producer: producer.clone(),
            shutdown: shutdown.clone(),
        }))
    };
    let router = |from: Vertex, ports: usize, producer: &Arc<Producer>| {
        let mut r = Router::new(ports);
        for e in graph.edges.iter().filter(|e| e.from == from) {
            let route = Route::new(
                vec![to_topic(&e.topic, producer)],
                e.to_port,
                e.connection,
                in_flight.clone(),
            );
            r.add(e.from_port, route);
        }
        r
    };
    let consumer = |v: Vertex, id: &str, commits: Commits, stores: Vec<usize>| {
        let topics: Arc<[String]> = inputs(graph, v).into_iter().map(|i| i.topic).collect();
        let committer = Committer::new(
            format!("{v} `{id}`"),
            topics.clone(),
            graph.kafka.commit_interval,
            commits,
            changelog
                .clone()
                .filter(|_| !stores.is_empty())
                .map(|c| (c, stores)),
            shutdown.clone(),
        )?;
        let context = Rebalancing {
            link: kafka.link.clone(),
            committer: Mutex::new(committer),
        };
        let group = format!("{}.{id}", graph.name);
        kafka
            .consumer_config(&group)
            .create_with_context(context)
            .with_context(|| format!("{v} `{id}`: creating the consumer of group `{group}`"))
    };

    // The vertices of this process, wired up before any thread starts.
    let mut node_runs = Vec::new();
    for (i, spec) in graph.nodes.iter().enumerate().filter(|(i, _)| here.nodes[*i]) {
        let transactional_id = eos.then(|| format!("{}.{}.{}", graph.name, spec.id, kafka.process));
        let producer = kafka.producer(
            &format!("node `{}`", spec.id),
            transactional_id.as_deref(),
            shutdown,
        )?;
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..spec.replicas as usize)
            .map(|r| channel(opts.channel_capacity, status.replica(i, r).queue.clone()))
            .unzip();
        let dead_letter = dead_letter_topic(graph, i).map(|t| to_topic(&t, &producer));
        let replicas = nodes.replicas(
            graph,
            i,
            nodes.instances(graph, i)?,
            || router(Vertex::Node(i), spec.outputs.len(), &producer),
            dead_letter,
            rxs,
            (opts, shutdown, &in_flight),
        );
        let writes: Vec<&str> = spec
            .state
            .iter()
            .filter(|(_, a)| *a == crate::manifest::Access::ReadWrite)
            .map(|(s, _)| s.as_str())
            .collect();
        let written = changelog.as_ref().map_or_else(Vec::new, |c| c.indexes(writes));
        let commits = if eos {
            Commits::ExactlyOnce(producer.clone())
        } else {
            Commits::AtLeastOnce {
                producer: Some(producer.clone()),
            }
        };
        let v = Vertex::Node(i);
        let ingress = ingress(
            graph,
            v,
            consumer(v, &spec.id, commits, written)?,
            txs,
            opts,
            shutdown,
            &in_flight,
        );
        node_runs.push((i, ingress, replicas));
    }
    let mut sink_runs = Vec::new();
    for (k, spec) in graph.sinks.iter().enumerate().filter(|(k, _)| here.sinks[*k]) {
        if matches!(spec.kind, SinkKind::Kafka(_)) {
            continue;
        }
        // The group's committed offsets say where it goes on: the file grows.
        let writer = Mutex::new(SinkWriter::open(spec, spec.file_len())?);
        let (tx, rx) = channel(opts.channel_capacity, status.sink(k).queue.clone());
        let v = Vertex::Sink(k);
        let commits = Commits::AtLeastOnce { producer: None };
        let ingress = ingress(
            graph,
            v,
            consumer(v, &spec.id, commits, Vec::new())?,
            vec![tx],
            opts,
            shutdown,
            &in_flight,
        );
        sink_runs.push((k, ingress, writer, rx));
    }
    let mut source_runs = Vec::new();
    for (i, spec) in graph.sources.iter().enumerate().filter(|(i, _)| here.sources[*i]) {
        if matches!(spec.kind, SourceKind::Kafka { .. }) {
            continue;
        }
        let producer = kafka.producer(&format!("source `{}`", spec.id), None, shutdown)?;
        source_runs.push((i, router(Vertex::Source(i), 1, &producer), producer));
    }
    // The whole graph here, every source bounded: this process ends the run.
    let ends = here.whole()
        && graph.sources.iter().all(|s| match s.kind {
            SourceKind::Kafka { .. } => false,
            SourceKind::Generator { count, .. } => count.is_some(),
            _ => true,
        });
    // Per node, then per sink: whether it has ended, and whether it may drain.
    let flags = || -> Vec<Arc<AtomicBool>> {
        (0..graph.nodes.len() + graph.sinks.len())
            .map(|_| Arc::default())
            .collect()
    };
    let (done, drains) = (flags(), flags());
    let slot = |v: Vertex| match v {
        Vertex::Node(i) => i,
        Vertex::Sink(k) => graph.nodes.len() + k,
        Vertex::Source(_) => unreachable!("sources have no ingress"),
    };

    let services = Services::start(graph, opts, &status, &stores)?;
    status.phase.set(Phase::Running);
    tracing::info!(
        brokers = %kafka.brokers,
        delivery = ?graph.kafka.delivery,
        "running {} node(s), {} sink(s), {} source(s) of `{}` over Kafka{}",
        node_runs.len(),
        sink_runs.len(),
        source_runs.len(),
        graph.name,
        if ends { "" } else { " until stopped" }
    );
    let (sources, sinks) = std::thread::scope(|s| {
        let sinks: Vec<_> = sink_runs
            .into_iter()
            .map(|(k, mut ingress, writer, rx)| {
                let (spec, sink) = (&graph.sinks[k], status.sink(k));
                let (in_flight, done) = (in_flight.clone(), done[slot(Vertex::Sink(k))].clone());
                ingress.drain = drains[slot(Vertex::Sink(k))].clone();
                let reader = s.spawn(move || read(ingress, || Ok(()), shutdown, &done));
                let writer = s.spawn(move || drain_sink(&spec.id, &writer, rx, shutdown, &in_flight, &sink));
                (k, reader, writer)
            })
            .collect();
        for (i, mut ingress, replicas) in node_runs {
            let (alive_tx, alive_rx) = mpsc::channel::<()>();
            for (replica, rx) in replicas {
                let alive = alive_tx.clone();
                s.spawn(move || {
                    replica.run(rx);
                    drop(alive);
                });
            }
            drop(alive_tx);
            let done = done[slot(Vertex::Node(i))].clone();
            ingress.drain = drains[slot(Vertex::Node(i))].clone();
            // The node has ended once every replica has (their `finish` outputs sent).
            let ended = move || {
                while alive_rx.recv().is_ok() {}
                Ok(())
            };
            s.spawn(move || read(ingress, ended, shutdown, &done));
        }
        let sources: Vec<_> = source_runs
            .into_iter()
            .map(|(i, mut router, producer)| {
                let (spec, count) = (&graph.sources[i], status.source(i));
                s.spawn(move || {
                    let start = Position::default();
                    let reached = source::run(spec, opts.batch_size, start, shutdown, |batch, _| {
                        count.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        router.send(0, batch);
                        true
                    });
                    if let Err(e) = reached
                        .map_err(anyhow::Error::msg)
                        .and_then(|_| flush(&producer, shutdown))
                    {
                        shutdown.fail(format!("source `{}`: {e:#}", spec.id));
                    }
                    (i, count.load(Ordering::Relaxed))
                })
            })
            .collect();
        let sources: Vec<(usize, u64)> = sources.into_iter().filter_map(|h| h.join().ok()).collect();
        if ends {
            status.phase.set(Phase::Draining);
            drain_in_order(graph, &drains, &done, slot, shutdown);
        }
        let sinks: Vec<(usize, u64)> = sinks
            .into_iter()
            .map(|(k, reader, writer)| {
                let _ = reader.join();
                (k, writer.join().unwrap_or(0))
            })
            .collect();
        (sources, sinks)
    });
    let sources = sources
        .into_iter()
        .map(|(i, n)| (graph.sources[i].id.clone(), n))
        .collect();
    let sinks = sinks
        .into_iter()
        .map(|(k, n)| (graph.sinks[k].id.clone(), n))
        .collect();
    let mut report = nodes.ended(graph, services, shutdown, (sources, sinks), stores);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The reader of vertex `v`: one route per input topic into `targets`.
fn ingress(
    graph: &Graph,
    v: Vertex,
    consumer: rdkafka::consumer::BaseConsumer<Rebalancing>,
    targets: Vec<Inbox>,
    opts: &RunOptions,
    shutdown: &Arc<Shutdown>,
    in_flight: &InFlight,
) -> Ingress {
    let inputs = inputs(graph, v);
    let name = consumer.context().committer().name().to_owned();
    Ingress {
        name,
        routes: inputs
            .iter()
            .map(|i| Route::new(targets.clone(), i.port, i.connection, in_flight.clone()))
            .collect(),
        topics: inputs.iter().map(|i| i.topic.clone()).collect(),
        transactional: inputs.iter().map(|i| i.transactional).collect(),
        consumer,
        batch_size: opts.batch_size,
        shutdown: shutdown.clone(),
        drain: Arc::default(),
    }
}

/// Runs a vertex's reader, then waits for the vertex to end (`ended`) and commits the
/// rest; marks it `done`.
fn read(
    ingress: Ingress,
    ended: impl FnOnce() -> anyhow::Result<()>,
    shutdown: &Shutdown,
    done: &AtomicBool,
) {
    let name = ingress.name.clone();
    let result = ingress.run().and_then(|consumer| {
        ended()?;
        let mut committer = consumer.context().committer();
        committer.close(&consumer)
    });
    if let Err(e) = result {
        shutdown.fail(format!("{name}: {e:#}"));
    }
    done.store(true, Ordering::Release);
}

/// Lets each node and sink drain once everything upstream of it has ended, until all
/// have (or the run stops).
fn drain_in_order(
    graph: &Graph,
    drains: &[Arc<AtomicBool>],
    done: &[Arc<AtomicBool>],
    slot: impl Fn(Vertex) -> usize,
    shutdown: &Shutdown,
) {
    let vertices: Vec<Vertex> = (0..graph.nodes.len())
        .map(Vertex::Node)
        .chain((0..graph.sinks.len()).map(Vertex::Sink))
        .filter(|v| !matches!(v, Vertex::Sink(k) if matches!(graph.sinks[*k].kind, SinkKind::Kafka(_))))
        .collect();
    let ended = |v: Vertex| match v {
        Vertex::Source(_) => true,
        Vertex::Sink(k) if matches!(graph.sinks[k].kind, SinkKind::Kafka(_)) => true,
        v => done[slot(v)].load(Ordering::Acquire),
    };
    while !vertices.iter().all(|&v| ended(v)) && !shutdown.is_stopping() {
        for &v in &vertices {
            if inputs(graph, v).iter().all(|i| ended(i.from)) {
                drains[slot(v)].store(true, Ordering::Release);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
