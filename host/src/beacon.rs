//! One view of every process running a Kafka graph: each publishes a heartbeat on the
//! graph's status topic (`<graph>.status`, [`crate::plan::KafkaNames::status`]) once a
//! second — who it is (host, pid, start) and its whole status report: the vertices it
//! runs, their counters and versions, the partitions its groups hold with their
//! committed offsets, ends and lag — and a last one, marked stopped, when it stops.
//!
//! [`read`] gathers the processes alive now from the heartbeats of the last
//! [`GONE_AFTER`] (found by timestamp, so the topic's length does not matter): a
//! process is listed while its latest heartbeat is that young and not its last, so a
//! killed process drops out after [`GONE_AFTER`], a stopped one at once.
//! `flowhost status graph.toml` shows them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::clock::now_millis;
use crate::manifest::Graph;
use crate::plan::KafkaNames;
use crate::topology::Status;
use crate::topology::status::StatusReport;
use crate::transport::TransportError;
use crate::transport::kafka::client::{ClientError, Doing, Kafka, Quiet};

/// How often a process publishes its heartbeat.
pub const EVERY: Duration = Duration::from_secs(1);

/// A process whose latest heartbeat is older than this is gone (three missed beats).
pub const GONE_AFTER: Duration = Duration::from_secs(4);

/// This process among all that run the graph: `<host>-<pid>-<start ms>`, in its
/// heartbeats and its answers to commands.
pub fn process() -> &'static str {
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PROCESS.get_or_init(|| format!("{}-{}-{}", host(), std::process::id(), now_millis()))
}

/// This machine's name.
fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// One heartbeat of one process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The process: `<host>-<pid>-<start ms>`.
    pub process: String,
    /// Its host.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// When it was sent (ms since the epoch).
    pub at_ms: i64,
    /// Its last: the process stopped.
    pub stopped: bool,
    /// Its status then.
    pub report: StatusReport,
}

/// The publisher of this process's heartbeats, until dropped (which sends the last).
pub struct Beacon {
    _worker: Worker,
}

/// A thread of its own that runs until told to stop: on drop, told and joined.
pub(crate) struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Runs `work` on thread `name`; `work` returns once its flag is set.
    pub(crate) fn spawn(
        name: &str,
        work: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> Result<Worker, TransportError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(&stopping))
            .map_err(|e| TransportError::setup(format!("starting thread `{name}`"), e))?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Beacon {
    /// Starts publishing `status` for the Kafka graph `graph`.
    pub fn start(graph: &Graph, status: Arc<Status>) -> Result<Beacon, TransportError> {
        let setup =
            |e: ClientError| TransportError::setup(format!("the status topic of graph `{}`", graph.name), e);
        let kafka = Kafka::new(&graph.kafka).map_err(setup)?;
        let topic = KafkaNames::new(graph).status();
        kafka.create_topics(&[(topic.clone(), false)]).map_err(setup)?;
        let producer: BaseProducer<Quiet> = kafka
            .config(&[("linger.ms", "0"), ("statistics.interval.ms", "0")])
            .create_with_context(Quiet)
            .doing(|| "creating the heartbeat producer".into())
            .map_err(setup)?;
        let host = host();
        let process = process().to_owned();
        let worker = Worker::spawn("heartbeat", move |stopping| {
            let beat = |stopped: bool| {
                let heartbeat = Heartbeat {
                    process: process.clone(),
                    host: host.clone(),
                    pid: std::process::id(),
                    at_ms: now_millis(),
                    stopped,
                    report: status.report(),
                };
                let Ok(payload) = serde_json::to_vec(&heartbeat) else {
                    return;
                };
                let record = BaseRecord::to(&topic)
                    .key(process.as_bytes())
                    .payload(&payload)
                    .timestamp(heartbeat.at_ms);
                if let Err((e, _)) = producer.send(record) {
                    tracing::debug!("heartbeat not sent: {e}");
                }
            };
            while !stopping.load(Ordering::Acquire) {
                beat(false);
                let next = Instant::now() + EVERY;
                while Instant::now() < next && !stopping.load(Ordering::Acquire) {
                    producer.poll(Duration::from_millis(100));
                }
            }
            beat(true);
            let _ = producer.flush(Duration::from_secs(2));
        })?;
        Ok(Beacon { _worker: worker })
    }
}

/// The processes of Kafka graph `graph` alive now, by name: each one's latest
/// heartbeat.
pub fn read(graph: &Graph) -> Result<Vec<Heartbeat>, TransportError> {
    let setup = |e: ClientError| {
        TransportError::setup(format!("reading the status topic of graph `{}`", graph.name), e)
    };
    let kafka = Kafka::new(&graph.kafka).map_err(|e| TransportError::Refused(format!("{e:#}")))?;
    kafka
        .connect()
        .map_err(|e| TransportError::Refused(format!("{e:#}")))?;
    let topic = KafkaNames::new(graph).status();
    let Some(partitions) = kafka.partitions(&topic).map_err(setup)? else {
        return Err(TransportError::Refused(format!(
            "graph `{}` has no status on {} (no topic `{topic}`): no process of it has run there",
            graph.name, kafka.brokers
        )));
    };
    let consumer: BaseConsumer<Quiet> = kafka
        .consumer_config(&format!("{}.status-reader", graph.name))
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "0")
        .create_with_context(Quiet)
        .doing(|| "creating the status reader".into())
        .map_err(setup)?;
    let since = now_millis() - GONE_AFTER.as_millis() as i64;
    let mut times = TopicPartitionList::new();
    for p in 0..partitions {
        times
            .add_partition_offset(&topic, p, Offset::Offset(since))
            .doing(|| "asking for recent heartbeats".into())
            .map_err(setup)?;
    }
    let from = consumer
        .offsets_for_times(times, Duration::from_secs(10))
        .doing(|| format!("finding the heartbeats since {since} in `{topic}`"))
        .map_err(setup)?;
    // A partition with nothing that recent has nobody alive in it.
    let mut read = TopicPartitionList::new();
    for e in from.elements() {
        if let Offset::Offset(o) = e.offset() {
            read.add_partition_offset(&topic, e.partition(), Offset::Offset(o))
                .doing(|| "reading the heartbeats".into())
                .map_err(setup)?;
        }
    }
    let mut latest: BTreeMap<String, Heartbeat> = BTreeMap::new();
    if read.count() > 0 {
        consumer
            .assign(&read)
            .doing(|| format!("reading `{topic}`"))
            .map_err(setup)?;
        let mut open = read.count();
        let deadline = Instant::now() + Duration::from_secs(10);
        while open > 0 && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let Some(beat) = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<Heartbeat>(p).ok())
                    else {
                        continue;
                    };
                    if latest.get(&beat.process).is_none_or(|b| b.at_ms <= beat.at_ms) {
                        latest.insert(beat.process.clone(), beat);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
                Some(Err(e)) => return Err(setup(e.into())),
                None => {}
            }
        }
    }
    Ok(latest
        .into_values()
        .filter(|b| !b.stopped && b.at_ms >= since)
        .collect())
}
