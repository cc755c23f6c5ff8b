//! One control plane for every process of a Kafka graph: `flowhost swap --graph
//! graph.toml` publishes the command on the graph's control topic (`<graph>.control`,
//! [`crate::plan::KafkaNames::control`]); every process reads it ([`Control`]), applies it
//! to the node through the same [`NodeVersions`] the admin endpoint uses, and answers on
//! `<graph>.control.acks` with its swap record, which the command waits for from every
//! process alive ([`crate::beacon::read`]). Every process keeps every node's versions
//! (status shows them), so each applies it, whether or not it runs the node's replicas.
//! `flowhost apply` travels the same way ([`Command::change`]: the manifest's text, its
//! modules as the payload): every process changes its graph (`topology::apply`) and
//! answers with its record.
//!
//! A process reads the control topic from its beginning when it starts, so one that
//! joins later, or a restarted one, runs the versions the graph was swapped to, in the
//! order they were asked for, and the changes `flowhost apply` made of the graph, so it
//! runs the graph's current version (it answers old commands too; nobody waits for
//! those).
//! A command travels as one record: the module's bytes are its payload, so a module
//! must fit the brokers' largest message (`message.max.bytes`, 1 MB by default on
//! Apache Kafka; the command's producer allows 64 MB).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::beacon;
use crate::manifest::Graph;
use crate::plan::{KafkaNames, ModuleSource};
use crate::topology::Status;
use crate::topology::apply::ApplyRecord;
use crate::topology::swap::{NodeVersions, Outcome, SwapRecord};
use crate::transport::TransportError;
use crate::transport::kafka::client::{ClientError, Doing, Kafka, Quiet};

/// The header that carries a command (JSON); a swap's module is the payload.
const COMMAND: &str = "flowhost-command";

/// What a command asks of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Command {
    /// Tells its answers apart.
    pub id: String,
    /// The node.
    pub node: String,
    /// Swap in the payload's module (`name` for logs and status), or roll back.
    pub rollback: bool,
    /// The module's file name.
    pub name: String,
    /// A change of the whole graph (`flowhost apply`): the changed manifest's text
    /// (`node` is empty).
    #[serde(default)]
    pub manifest: Option<String>,
    /// The changed graph's modules, which the payload holds one after the other.
    #[serde(default)]
    pub modules: Vec<CarriedModule>,
}

/// A module a change carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CarriedModule {
    /// The nodes that run it.
    pub nodes: Vec<String>,
    /// Its file's name.
    pub name: String,
    /// Its length in the payload.
    pub len: u64,
}

impl Command {
    /// `flowhost apply` of `plan` (the changed graph, resolved where the command is
    /// sent, from `manifest`'s text): the command, and its payload (the modules).
    pub fn change(id: String, manifest: String, plan: &crate::plan::Plan) -> (Command, Vec<u8>) {
        let mut modules: Vec<CarriedModule> = Vec::new();
        let mut payload = Vec::new();
        let mut carried: Vec<&str> = Vec::new();
        for (node, module) in plan.graph.nodes.iter().zip(&plan.modules) {
            match carried.iter().position(|h| *h == module.hash) {
                Some(k) => modules[k].nodes.push(node.id.clone()),
                None => {
                    carried.push(&module.hash);
                    payload.extend_from_slice(&module.bytes);
                    modules.push(CarriedModule {
                        nodes: vec![node.id.clone()],
                        name: module.path.display().to_string(),
                        len: module.bytes.len() as u64,
                    });
                }
            }
        }
        let command = Command {
            id,
            node: String::new(),
            rollback: false,
            name: String::new(),
            manifest: Some(manifest),
            modules,
        };
        (command, payload)
    }
}

/// One process's answer to a command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    /// The command's id.
    pub command: String,
    /// The process ([`beacon::process`]).
    pub process: String,
    /// That process's graph has no such node.
    pub not_here: bool,
    /// How it went there.
    pub record: Option<SwapRecord>,
    /// How a change of the graph went there.
    #[serde(default)]
    pub change: Option<ApplyRecord>,
}

impl Answer {
    /// Whether the process did what was asked.
    pub fn applied(&self) -> bool {
        let swapped = self.record.as_ref().is_some_and(|r| r.outcome == Outcome::Done);
        swapped || self.change.as_ref().is_some_and(|r| r.outcome == Outcome::Done)
    }
}

/// This process's reader of the control topic, until dropped.
pub struct Control {
    _worker: beacon::Worker,
}

fn setup(graph: &Graph) -> impl Fn(ClientError) -> TransportError + '_ {
    move |e| TransportError::setup(format!("the control topic of graph `{}`", graph.name), e)
}

/// Creates the graph's control and answer topics (one partition: one order).
fn topics(kafka: &Kafka, graph: &Graph) -> Result<(String, String), TransportError> {
    let names = KafkaNames::new(graph);
    let (control, acks) = (names.control(), names.acks());
    let one = Kafka {
        spec: crate::manifest::KafkaSpec {
            partitions: 1,
            ..kafka.spec.clone()
        },
        ..kafka.clone()
    };
    one.create_topics(&[(control.clone(), false), (acks.clone(), false)])
        .map_err(setup(graph))?;
    Ok((control, acks))
}

impl Control {
    /// Starts applying the commands of Kafka graph `graph` to the nodes of `status`.
    ///
    /// What the topic held when it started is applied first, in the order it was asked
    /// for, swaps and changes of the whole graph (`flowhost apply`) alike: each refused
    /// or applied here as it was where it was asked for (the checks are the same), so
    /// the process ends up at the graph's current version.
    pub fn start(graph: &Graph, status: Arc<Status>) -> Result<Control, TransportError> {
        let manifest = graph.path.clone();
        let kafka = Kafka::new(&graph.kafka).map_err(setup(graph))?;
        let (control, acks) = topics(&kafka, graph)?;
        let consumer: BaseConsumer<Quiet> = kafka
            .consumer_config(&format!("{}.control-reader", graph.name))
            .set("statistics.interval.ms", "0")
            .create_with_context(Quiet)
            .doing(|| "creating the control reader".into())
            .map_err(setup(graph))?;
        let mut from = TopicPartitionList::new();
        from.add_partition_offset(&control, 0, Offset::Beginning)
            .doing(|| "reading the control topic".into())
            .map_err(setup(graph))?;
        consumer
            .assign(&from)
            .doing(|| format!("reading `{control}`"))
            .map_err(setup(graph))?;
        let producer: BaseProducer<Quiet> = kafka
            .config(&[("linger.ms", "0"), ("statistics.interval.ms", "0")])
            .create_with_context(Quiet)
            .doing(|| "creating the control answers' producer".into())
            .map_err(setup(graph))?;
        let worker = beacon::Worker::spawn("control", move |stopping| {
            while !stopping.load(Ordering::Acquire) {
                producer.poll(Duration::ZERO);
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let command = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == COMMAND).and_then(|h| h.value))
                    .and_then(|v| serde_json::from_slice::<Command>(v).ok());
                let Some(command) = command else {
                    continue;
                };
                let payload = m.payload().unwrap_or_default();
                let answer = match &command.manifest {
                    None => apply(&status, &command, payload),
                    Some(text) => change(&status, &manifest, (&command, text), payload),
                };
                if let Ok(json) = serde_json::to_vec(&answer) {
                    let record = BaseRecord::to(&acks).key(&command.id).payload(&json);
                    if let Err((e, _)) = producer.send(record) {
                        tracing::warn!("control: the answer to `{}` not sent: {e}", command.id);
                    }
                }
            }
            let _ = producer.flush(Duration::from_secs(2));
        })?;
        Ok(Control { _worker: worker })
    }
}

/// Applies `command` here.
fn apply(status: &Status, command: &Command, module: &[u8]) -> Answer {
    let process = beacon::process().to_owned();
    let Some(versions) = status.versions(&command.node) else {
        return Answer {
            command: command.id.clone(),
            process,
            not_here: true,
            record: None,
            change: None,
        };
    };
    let record = run(&versions, command, module);
    tracing::info!("control: {record}");
    Answer {
        command: command.id.clone(),
        process,
        not_here: false,
        record: Some(record),
        change: None,
    }
}

/// Applies the change `command` carries here: its manifest read as if it were where this
/// process's manifest is (relative paths from there), with the modules it carries.
fn change(
    status: &Status,
    manifest: &std::path::Path,
    (command, text): (&Command, &str),
    payload: &[u8],
) -> Answer {
    let asked = crate::clock::now_millis();
    let plan = Graph::parse(manifest, text)
        .map_err(|e| e.to_string())
        .and_then(|graph| {
            let modules = carried(&graph, &command.modules, payload)?;
            crate::topology::apply::plan_change(status, graph, Some(modules))
        });
    let record = match plan {
        Ok(plan) => status.applied.apply(plan),
        Err(why) => status.applied.refusal(asked, Vec::new(), why),
    };
    tracing::info!("control: {record}");
    Answer {
        command: command.id.clone(),
        process: beacon::process().to_owned(),
        not_here: false,
        record: None,
        change: Some(record),
    }
}

/// Per node of `graph`, its module from `payload` as `modules` lays it out (a pinned
/// node's checked against its pin).
fn carried(graph: &Graph, modules: &[CarriedModule], payload: &[u8]) -> Result<Vec<ModuleSource>, String> {
    let mut read = Vec::new();
    let mut at = 0usize;
    for m in modules {
        let end = at.saturating_add(m.len as usize);
        let bytes = payload
            .get(at..end)
            .ok_or_else(|| format!("the change's payload ends before module {}", m.name))?;
        read.push((m, ModuleSource::from_bytes(bytes, std::path::Path::new(&m.name))));
        at = end;
    }
    graph
        .nodes
        .iter()
        .map(|n| {
            let (_, module) = read
                .iter()
                .find(|(m, _)| m.nodes.contains(&n.id))
                .ok_or_else(|| format!("node `{}`: the change carries no module for it", n.id))?;
            match &n.sha256 {
                Some(pin) if !pin.eq_ignore_ascii_case(&module.hash) => Err(format!(
                    "node `{}`: the module carried does not match its pinned sha256 ({pin})",
                    n.id
                )),
                _ => Ok(module.clone()),
            }
        })
        .collect()
}

fn run(versions: &NodeVersions, command: &Command, module: &[u8]) -> SwapRecord {
    if command.rollback {
        versions.rollback(None)
    } else {
        let name = std::path::Path::new(&command.name);
        versions.swap(|engine| Ok(engine.load_bytes(module, name)?), None)
    }
}

/// Publishes `command` (with `module` for a swap) to every process of Kafka graph
/// `graph` and waits at most `wait` for the answer of each process alive that runs the
/// node; the answers, and the processes that did not answer.
pub fn send(
    graph: &Graph,
    command: &Command,
    module: &[u8],
    wait: Duration,
) -> Result<(Vec<Answer>, Vec<String>), TransportError> {
    let kafka = Kafka::new(&graph.kafka).map_err(|e| TransportError::Refused(format!("{e:#}")))?;
    kafka
        .connect()
        .map_err(|e| TransportError::Refused(format!("{e:#}")))?;
    let (control, acks) = topics(&kafka, graph)?;
    // A change of the graph is for every process; a swap for those with the node.
    let change = command.manifest.is_some();
    let expected: Vec<String> = beacon::read(graph)?
        .into_iter()
        .filter(|b| change || b.report.nodes.iter().any(|n| n.id == command.node))
        .map(|b| b.process)
        .collect();
    if expected.is_empty() {
        let what = match change {
            true => String::new(),
            false => format!(" with node `{}`", command.node),
        };
        return Err(TransportError::Refused(format!(
            "no process of graph `{}` runs{what} now (none in `{}`)",
            graph.name,
            KafkaNames::new(graph).status()
        )));
    }
    // Answers from now on: the end of the answers before sending.
    let consumer: BaseConsumer<Quiet> = kafka
        .consumer_config(&format!("{}.control-sender", graph.name))
        .set("statistics.interval.ms", "0")
        .create_with_context(Quiet)
        .doing(|| "creating the answers' reader".into())
        .map_err(setup(graph))?;
    // The end, asked for now (an end left to the consumer to find out could be found
    // after a fast answer). A broker listing less than it holds only makes it read some
    // old answers, which are not this command's.
    let (_, end) = consumer
        .fetch_watermarks(&acks, 0, Duration::from_secs(10))
        .doing(|| format!("reading the end of `{acks}`"))
        .map_err(setup(graph))?;
    let mut from = TopicPartitionList::new();
    from.add_partition_offset(&acks, 0, Offset::Offset(end))
        .doing(|| "reading the answers".into())
        .map_err(setup(graph))?;
    consumer
        .assign(&from)
        .doing(|| format!("reading `{acks}`"))
        .map_err(setup(graph))?;
    let producer: BaseProducer<Quiet> = kafka
        .config(&[
            ("linger.ms", "0"),
            ("statistics.interval.ms", "0"),
            ("message.max.bytes", "67108864"),
        ])
        .create_with_context(Quiet)
        .doing(|| "creating the command's producer".into())
        .map_err(setup(graph))?;
    let header = serde_json::to_vec(command).map_err(|e| TransportError::setup("encoding the command", e))?;
    let record = BaseRecord::to(&control)
        .key(if change { "graph" } else { command.node.as_str() })
        .payload(module)
        .headers(OwnedHeaders::new().insert(Header {
            key: COMMAND,
            value: Some(&header),
        }));
    producer.send(record).map_err(|(e, _)| setup(graph)(e.into()))?;
    producer
        .flush(Duration::from_secs(30))
        .doing(|| format!("sending the command to `{control}`"))
        .map_err(setup(graph))?;
    let mut answers: Vec<Answer> = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && !expected.iter().all(|p| answers.iter().any(|a| &a.process == p)) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Some(a) = m.payload().and_then(|p| serde_json::from_slice::<Answer>(p).ok())
                    && a.command == command.id
                    && !answers.iter().any(|b| b.process == a.process)
                {
                    answers.push(a);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => tracing::debug!("reading the answers: {e}"),
        }
    }
    let missing = expected
        .into_iter()
        .filter(|p| !answers.iter().any(|a| &a.process == p))
        .collect();
    Ok((answers, missing))
}
