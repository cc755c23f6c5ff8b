//! Every name the Kafka transport uses, in one place: a topic per edge
//! (`<graph>.<from>.<to>` unless the manifest names one), a consumer group per node and
//! sink (`<graph>.<id>`), a dead-letter topic per dead-lettering node
//! (`<graph>.<node>.dead-letter`, or its Kafka sink's topic), a compacted changelog per
//! durable store (`<graph>.<store>.changelog`) and a transactional id per node.

use std::collections::HashSet;

use crate::manifest::{Connection, Delivery, Durability, ErrorPolicy, Graph, SinkKind, SourceKind, Vertex};
use crate::{DEFAULT_INPUT, DEFAULT_OUTPUT};

/// An input topic of a vertex: the port it feeds, how it spreads over replicas, and
/// whether it is written in transactions.
#[derive(Debug, Clone)]
pub struct Input {
    /// The topic.
    pub topic: String,
    /// The consumer's input port.
    pub port: u16,
    /// How its messages spread over the consumer's replicas.
    pub connection: Connection,
    /// Written in transactions: its partitions end in a commit marker.
    pub transactional: bool,
    /// Who writes it.
    pub from: Vertex,
    /// A feedback edge's (it carries no watermarks).
    pub feedback: bool,
}

/// The Kafka names of one graph.
#[derive(Debug, Clone)]
pub struct KafkaNames {
    graph: String,
    /// Per edge (in `graph.edges` order), its topic.
    edges: Vec<String>,
    /// Per node, the topic its dead letters go to.
    dead_letters: Vec<Option<String>>,
    /// Per node, then per sink: its input topics.
    inputs: Vec<Vec<Input>>,
    nodes: usize,
    /// Per durable store: its name and changelog topic.
    changelogs: Vec<(String, String)>,
    /// Topics the graph reads but does not write (Kafka sources): they must exist.
    external: Vec<(String, String)>,
}

impl KafkaNames {
    /// Names everything of `graph`.
    pub fn new(graph: &Graph) -> KafkaNames {
        let name = &graph.name;
        let port = |v: Vertex, p: u16, outputs: bool| -> String {
            let id = graph.id(v);
            let (ports, default) = match v {
                Vertex::Node(i) if outputs => (&graph.nodes[i].outputs, DEFAULT_OUTPUT),
                Vertex::Node(i) => (&graph.nodes[i].inputs, DEFAULT_INPUT),
                _ => return id.to_owned(),
            };
            match ports.get(p as usize) {
                Some(port) if port != default => format!("{id}.{port}"),
                _ => id.to_owned(),
            }
        };
        let edges: Vec<String> = graph
            .edges
            .iter()
            .map(|e| {
                e.topic.clone().unwrap_or_else(|| {
                    format!(
                        "{name}.{}.{}",
                        port(e.from, e.from_port, true),
                        port(e.to, e.to_port, false)
                    )
                })
            })
            .collect();
        let dead_letters: Vec<Option<String>> = graph
            .nodes
            .iter()
            .map(|n| {
                let ErrorPolicy::DeadLetter(k) = n.on_error else {
                    return None;
                };
                Some(match &graph.sinks[k].kind {
                    SinkKind::Kafka(topic) => topic.clone(),
                    _ => format!("{name}.{}.dead-letter", n.id),
                })
            })
            .collect();
        let eos = graph.kafka.delivery == Delivery::ExactlyOnce;
        let inputs_of = |v: Vertex| -> Vec<Input> {
            let mut list: Vec<Input> = graph
                .edges
                .iter()
                .zip(&edges)
                .filter(|(e, _)| e.to == v)
                .map(|(e, topic)| Input {
                    topic: topic.clone(),
                    port: e.to_port,
                    connection: e.connection,
                    transactional: eos && matches!(e.from, Vertex::Node(_)),
                    from: e.from,
                    feedback: e.feedback.is_some(),
                })
                .collect();
            if let Vertex::Sink(k) = v {
                for (i, n) in graph.nodes.iter().enumerate() {
                    if n.on_error == ErrorPolicy::DeadLetter(k)
                        && let Some(topic) = &dead_letters[i]
                    {
                        list.push(Input {
                            topic: topic.clone(),
                            port: 0,
                            connection: Connection::RoundRobin,
                            transactional: eos,
                            from: Vertex::Node(i),
                            feedback: false,
                        });
                    }
                }
            }
            let mut seen = HashSet::new();
            list.retain(|i| seen.insert(i.topic.clone()));
            list
        };
        let inputs = (0..graph.nodes.len())
            .map(Vertex::Node)
            .chain((0..graph.sinks.len()).map(Vertex::Sink))
            .map(inputs_of)
            .collect();
        let mut changelogs: Vec<(String, String)> = graph
            .stores
            .iter()
            .filter(|s| s.durability == Durability::Durable)
            .map(|s| (s.name.clone(), format!("{name}.{}.changelog", s.name)))
            .collect();
        // The nodes' timers are as durable as the graph's stores.
        if graph.is_durable() {
            changelogs.push((
                crate::state::TIMERS.to_owned(),
                format!("{name}.timers.changelog"),
            ));
        }
        let external = graph
            .sources
            .iter()
            .filter_map(|s| match &s.kind {
                SourceKind::Kafka { topic } => Some((s.id.clone(), topic.clone())),
                _ => None,
            })
            .collect();
        KafkaNames {
            graph: name.clone(),
            edges,
            dead_letters,
            inputs,
            nodes: graph.nodes.len(),
            changelogs,
            external,
        }
    }

    /// The topic of edge `e` (an index into `graph.edges`).
    pub fn edge(&self, e: usize) -> &str {
        &self.edges[e]
    }

    /// The topic node `i` dead-letters into, if it dead-letters.
    pub fn dead_letter(&self, i: usize) -> Option<&str> {
        self.dead_letters[i].as_deref()
    }

    /// The input topics of node or sink `v`.
    pub fn inputs(&self, v: Vertex) -> &[Input] {
        match v {
            Vertex::Node(i) => &self.inputs[i],
            Vertex::Sink(k) => &self.inputs[self.nodes + k],
            Vertex::Source(_) => &[],
        }
    }

    /// The consumer group of the node or sink `id`.
    pub fn group(&self, id: &str) -> String {
        format!("{}.{id}", self.graph)
    }

    /// The transactional id of node `id`'s producer in the process at place `instance`
    /// (stable across restarts: see `transport::kafka::instance`).
    pub fn transactional_id(&self, id: &str, instance: &str) -> String {
        format!("{}.{id}.{instance}", self.graph)
    }

    /// The reply topic of the process at place `instance`: answers to the HTTP requests
    /// it holds (see `transport::kafka::replies`).
    pub fn replies(&self, instance: &str) -> String {
        format!("{}.replies.{instance}", self.graph)
    }

    /// The changelog topic of durable store `store`.
    pub fn changelog(&self, store: &str) -> Option<&str> {
        self.changelogs
            .iter()
            .find(|(s, _)| s == store)
            .map(|(_, t)| t.as_str())
    }

    /// The topic every process of the graph publishes its heartbeats on.
    pub fn status(&self) -> String {
        format!("{}.status", self.graph)
    }

    /// The topic commands to every process of the graph go to (`flowhost swap --graph`).
    pub fn control(&self) -> String {
        format!("{}.control", self.graph)
    }

    /// The topic the processes answer commands on.
    pub fn acks(&self) -> String {
        format!("{}.control.acks", self.graph)
    }

    /// Every changelog topic.
    pub fn changelogs(&self) -> impl Iterator<Item = &str> {
        self.changelogs.iter().map(|(_, t)| t.as_str())
    }

    /// The topics Kafka sources read (source id, topic): these must exist.
    pub fn external(&self) -> &[(String, String)] {
        &self.external
    }

    /// The topics the graph writes: every edge's (but those out of a Kafka source) and
    /// dead-letter topic, and with `compacted` true, the changelogs.
    pub fn written(&self, graph: &Graph) -> Vec<(String, bool)> {
        let mut topics: Vec<(String, bool)> = graph
            .edges
            .iter()
            .zip(&self.edges)
            .filter(|(e, _)| {
                !matches!(e.from, Vertex::Source(i) if matches!(graph.sources[i].kind, SourceKind::Kafka { .. }))
            })
            .map(|(_, t)| (t.clone(), false))
            .chain(self.dead_letters.iter().flatten().map(|t| (t.clone(), false)))
            .chain(self.changelogs().map(|t| (t.to_owned(), true)))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_graph_and_ports_only_when_not_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.wasm"), b"").unwrap();
        let toml = r#"
            name = "g"
            transport = "kafka"
            [sources.in]
            kind = "stdin"
            [nodes.parse]
            module = "m.wasm"
            on_error = "dead-letter"
            dead_letter = "dlq"
            [stores.counts]
            durability = "durable"
            [sinks.out]
            kind = "stdout"
            [sinks.bad]
            kind = "stdout"
            [sinks.dlq]
            kind = "stdout"
            format = "json"
            [[edges]]
            from = "in"
            to = "parse"
            [[edges]]
            from = "parse"
            to = "out"
            [[edges]]
            from = "parse.errors"
            to = "bad"
        "#;
        let path = dir.path().join("g.toml");
        std::fs::write(&path, toml).unwrap();
        let graph = Graph::load(&path).unwrap();
        let names = KafkaNames::new(&graph);
        let topics: Vec<&str> = (0..graph.edges.len()).map(|e| names.edge(e)).collect();
        assert_eq!(topics, ["g.in.parse", "g.parse.out", "g.parse.errors.bad"]);
        assert_eq!(names.dead_letter(0), Some("g.parse.dead-letter"));
        assert_eq!(names.group("parse"), "g.parse");
        assert_eq!(names.changelog("counts"), Some("g.counts.changelog"));
        let dlq = graph.sinks.iter().position(|s| s.id == "dlq").unwrap();
        let inputs: Vec<&str> = names
            .inputs(Vertex::Sink(dlq))
            .iter()
            .map(|i| i.topic.as_str())
            .collect();
        assert_eq!(inputs, ["g.parse.dead-letter"]);
    }
}
