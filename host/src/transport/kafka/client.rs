//! Talking to the brokers: client configuration (flowhost's defaults, then the manifest's
//! librdkafka properties), the bounded connection check, topic creation, the producer
//! that carries batches to topics, and the link health every client reports into.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::util::IntoOpaque;
use rdkafka::{Message, Timestamp};

use crate::flow::{Ack, Envelope, Outlet};
use crate::manifest::KafkaSpec;
use crate::message::{Headers, Msg};
use crate::shutdown::Shutdown;

/// A Kafka client call that failed (what was being done, and librdkafka's error), or a
/// state of the brokers flowhost cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A call failed while doing `what`.
    #[error("{what}: {error}")]
    Call {
        /// What was being done.
        what: String,
        /// librdkafka's error.
        error: KafkaError,
    },
    /// A transactional call was refused because a newer producer took this process's
    /// transactional ids: this process is a zombie (it was frozen or cut off while its
    /// replacement started) and must stop writing.
    #[error("{what}: {FENCED} ({error})")]
    Fenced {
        /// What was being done.
        what: String,
        /// librdkafka's error.
        error: KafkaError,
    },
    /// A call failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The brokers or the graph are not what this run needs (the reason).
    #[error("{0}")]
    Refused(String),
}

/// What a zombie is told.
const FENCED: &str = "fenced: a newer process took this process's place (its transactional \
                      ids), so this one stops without writing more";

/// Whether `error` says a newer producer with this producer's transactional id exists.
fn fenced(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
}

/// Names what a failed client call was doing.
pub trait Doing<T> {
    /// The error, with `what` was being done.
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, ClientError>;
}

impl<T> Doing<T> for Result<T, KafkaError> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, ClientError> {
        self.map_err(|error| {
            let what = what();
            if fenced(&error) {
                ClientError::Fenced { what, error }
            } else {
                ClientError::Call { what, error }
            }
        })
    }
}

/// How long the first contact with the brokers may take before the run gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the brokers are reachable, as every client of this process last saw it.
#[derive(Debug, Default)]
pub struct Health {
    down: AtomicBool,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Per topic: records this process's producers had acknowledged there, and per
    /// partition the offset after the last of them.
    produced: Mutex<std::collections::HashMap<String, (u64, Vec<i64>)>>,
    /// Where the groups of this process are, what it read and wrote.
    pub progress: super::progress::Progress,
}

impl Health {
    fn delivered(&self, topic: &str, partition: i32, offset: i64) {
        let Ok(p) = usize::try_from(partition) else { return };
        let mut produced = self.produced.lock().unwrap_or_else(|e| e.into_inner());
        let (count, ends) = match produced.get_mut(topic) {
            Some(t) => t,
            None => produced.entry(topic.to_owned()).or_default(),
        };
        *count += 1;
        if ends.len() <= p {
            ends.resize(p + 1, 0);
        }
        ends[p] = ends[p].max(offset + 1);
    }

    /// The offset after the last record this process wrote to `topic`/`partition`.
    pub fn produced(&self, topic: &str, partition: i32) -> i64 {
        let produced = self.produced.lock().unwrap_or_else(|e| e.into_inner());
        let ends = produced.get(topic).map_or(&[][..], |(_, ends)| ends.as_slice());
        usize::try_from(partition)
            .ok()
            .and_then(|p| ends.get(p))
            .copied()
            .unwrap_or(0)
    }

    /// Records this process's producers had acknowledged on `topic`.
    pub fn written_to(&self, topic: &str) -> u64 {
        let produced = self.produced.lock().unwrap_or_else(|e| e.into_inner());
        produced.get(topic).map_or(0, |(count, _)| *count)
    }

    fn failed(&self, error: &KafkaError, reason: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
        let all_down = matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::AllBrokersDown));
        if all_down && !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "lost every Kafka broker ({reason}); retrying with backoff, nothing is committed until they are back"
            );
        } else {
            tracing::debug!("kafka: {reason}");
        }
    }

    /// A client's statistics (once a second): a broker it is connected to means the
    /// link works, whether or not records flow.
    fn seen(&self, stats: &rdkafka::Statistics) {
        if stats.brokers.values().any(|b| b.state == "UP") {
            self.ok();
        }
    }

    /// A broker answered: the link works.
    pub fn ok(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Kafka brokers reachable again; resuming");
        }
    }

    /// Whether every broker is unreachable.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Notes a fault for status (and the log, once per fault).
    pub fn fault(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
    }

    /// For status: whether the brokers are down, errors seen, the last one.
    pub fn report(&self) -> (bool, u64, Option<String>) {
        (
            self.down.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        )
    }
}

/// The context of every client: errors into [`Health`], librdkafka's log into tracing.
#[derive(Clone)]
pub struct Link {
    /// Shared by all clients of the process.
    pub health: Arc<Health>,
}

impl ClientContext for Link {
    fn error(&self, error: KafkaError, reason: &str) {
        self.health.failed(&error, reason);
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        self.health.seen(&stats);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        Link::log_at(level, fac, log_message);
    }
}

impl Link {
    /// librdkafka's log into tracing (its errors and warnings at debug: the failures
    /// that matter come back as errors).
    fn log_at(level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!("librdkafka {fac}: {log_message}")
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::debug!("librdkafka {fac}: {log_message}")
            }
            _ => tracing::trace!("librdkafka {fac}: {log_message}"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Link {}

/// The context of a side client (heartbeats, commands): its errors are its caller's to
/// judge, not the link's health, and its statistics are not logged.
pub struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("kafka (side reader): {error}: {reason}");
    }

    fn stats(&self, _: rdkafka::Statistics) {}

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        Link::log_at(level, fac, log_message);
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

impl ProducerContext for Quiet {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// The brokers and how to talk to them.
#[derive(Clone)]
pub struct Kafka {
    /// Bootstrap brokers.
    pub brokers: String,
    /// The manifest's `[kafka]`.
    pub spec: KafkaSpec,
    /// Link health, shared by every client.
    pub link: Link,
    /// This process among all that run the graph (`host-pid-start`), for telling its own
    /// changelog records from others'.
    pub process: String,
}

impl Kafka {
    /// The brokers of `spec` (`--brokers` already applied).
    pub fn new(spec: &KafkaSpec) -> Result<Kafka, ClientError> {
        let Some(brokers) = spec.brokers.clone() else {
            return Err(ClientError::Refused(
                "transport = \"kafka\" needs brokers: `brokers` in [kafka], or --brokers HOST:PORT".into(),
            ));
        };
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let process = format!(
            "{}-{}-{}",
            host.trim()
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
            std::process::id(),
            crate::clock::now_millis()
        );
        Ok(Kafka {
            brokers,
            spec: spec.clone(),
            link: Link {
                health: Arc::default(),
            },
            process,
        })
    }

    /// flowhost's settings for a client, then the manifest's properties over them.
    pub(crate) fn config(&self, own: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // Health, offsets and lag for status (see `progress`).
        c.set("statistics.interval.ms", "1000");
        // flowhost creates the topics it writes, with their partitions.
        c.set("allow.auto.create.topics", "false");
        for (k, v) in own {
            c.set(*k, *v);
        }
        for (k, v) in &self.spec.properties {
            c.set(k, v);
        }
        c
    }

    /// A producer: idempotent, acknowledged by all in-sync replicas, retrying without
    /// a deadline while the brokers are away (its queue fills and holds its producers
    /// back); transactional with `transactional_id`.
    pub fn producer(
        &self,
        name: &str,
        transactional_id: Option<&str>,
        shutdown: &Arc<Shutdown>,
    ) -> Result<Arc<Producer>, ClientError> {
        let mut own = vec![
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", "0"),
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "200000"),
        ];
        if let Some(id) = transactional_id {
            own.push(("transactional.id", id));
            // A transaction left open by a process that died on another host (its place
            // is not taken again here) holds readers back at most this long.
            own.push(("transaction.timeout.ms", "10000"));
        }
        let ctx = Deliveries {
            link: self.link.clone(),
            shutdown: shutdown.clone(),
            name: name.to_owned(),
        };
        let producer: Producer = self
            .config(&own)
            .create_with_context(ctx)
            .doing(|| format!("{name}: creating a Kafka producer"))?;
        Ok(Arc::new(producer))
    }

    /// A consumer's configuration: in `group`, committing only what flowhost commits,
    /// reading committed transactions only.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        self.config(&[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "false"),
        ])
    }

    /// An admin client.
    fn admin(&self) -> Result<AdminClient<Link>, ClientError> {
        self.config(&[])
            .create_with_context(self.link.clone())
            .doing(|| "creating a Kafka admin client".into())
    }

    /// Waits (at most [`CONNECT_TIMEOUT`]) until the brokers answer.
    pub fn connect(&self) -> Result<(), ClientError> {
        let admin = self.admin()?;
        admin
            .inner()
            .fetch_metadata(None, CONNECT_TIMEOUT)
            .map(drop)
            .map_err(|e| {
                ClientError::Refused(format!(
                    "cannot reach the Kafka brokers {} within {}s: {e}",
                    self.brokers,
                    CONNECT_TIMEOUT.as_secs()
                ))
            })
    }

    /// Which of `topics` the brokers have (with partitions). Asked topic by topic: a
    /// listing of all topics is not complete on every broker (tansu).
    pub fn existing<'t>(
        &self,
        topics: impl IntoIterator<Item = &'t str>,
    ) -> Result<Vec<&'t str>, ClientError> {
        let admin = self.admin()?;
        let mut have = Vec::new();
        for topic in topics {
            let meta = admin
                .inner()
                .fetch_metadata(Some(topic), CONNECT_TIMEOUT)
                .doing(|| format!("reading the metadata of topic `{topic}`"))?;
            let found = meta
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            if found {
                have.push(topic);
            }
        }
        Ok(have)
    }

    /// Partitions of `topic`, if it exists.
    pub fn partitions(&self, topic: &str) -> Result<Option<i32>, ClientError> {
        let admin = self.admin()?;
        let meta = admin
            .inner()
            .fetch_metadata(Some(topic), CONNECT_TIMEOUT)
            .doing(|| format!("reading the metadata of topic `{topic}`"))?;
        Ok(meta
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as i32))
    }

    /// Creates the topics that are missing (`compact`: a compacted changelog), with the
    /// configured partitions and replication.
    pub fn create_topics(&self, topics: &[(String, bool)]) -> Result<(), ClientError> {
        let mut missing = Vec::new();
        for (t, compact) in topics {
            if self.partitions(t)?.is_none() {
                missing.push((t, *compact));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|(t, compact)| {
                let topic = NewTopic::new(
                    t,
                    self.spec.partitions,
                    TopicReplication::Fixed(self.spec.replication),
                );
                if *compact {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                }
            })
            .collect();
        let admin = self.admin()?;
        let opts = AdminOptions::new().operation_timeout(Some(CONNECT_TIMEOUT));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Refused(format!("creating topics: starting a runtime: {e}")))?;
        let results = rt
            .block_on(admin.create_topics(&new, &opts))
            .doing(|| "creating topics".into())?;
        for r in results {
            match r {
                Ok(t) => tracing::info!("created topic `{t}`"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => return Err(ClientError::Refused(format!("cannot create topic `{t}`: {e}"))),
            }
        }
        // Wait until the new topics show in the metadata every client reads.
        for (t, _) in &missing {
            let mut waited = Duration::ZERO;
            while self.partitions(t)?.is_none() {
                if waited > CONNECT_TIMEOUT {
                    return Err(ClientError::Refused(format!(
                        "topic `{t}` was created but does not show in the brokers' metadata"
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
            }
        }
        Ok(())
    }
}

// Each produced message carries its batch's [`Ack`] to its delivery report.
impl IntoOpaque for Ack {
    fn into_ptr(self) -> *mut std::ffi::c_void {
        self.into_raw() as *mut _
    }

    unsafe fn from_ptr(ptr: *mut std::ffi::c_void) -> Self {
        // SAFETY: librdkafka hands back, once, the pointer `into_ptr` made.
        unsafe { Ack::from_raw(ptr as *const _) }
    }
}

/// Delivery reports: an acknowledged message lets go of its batch's [`Ack`]; one that
/// cannot be delivered stops the graph and keeps its batch from ever being committed.
pub struct Deliveries {
    link: Link,
    shutdown: Arc<Shutdown>,
    name: String,
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        self.link.error(error, reason);
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        self.link.stats(stats);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.link.log(level, fac, log_message);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Ack;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Ack) {
        match result {
            Ok(m) => {
                self.link.health.delivered(m.topic(), m.partition(), m.offset());
                drop(ack)
            }
            Err((e, m)) => {
                let what = format!("{}: a message to topic `{}`", self.name, m.topic());
                self.shutdown.fail(if fenced(e) {
                    format!("{what}: {FENCED} ({e})")
                } else {
                    format!("{what} could not be delivered: {e}")
                });
                ack.fail();
            }
        }
    }
}

/// A producer whose messages hold their batch's [`Ack`] until delivered.
pub type Producer = ThreadedProducer<Deliveries>;

/// Sends `m` to `topic` (its key, timestamp and headers with it), waiting while the
/// producer's queue is full.
pub fn produce(producer: &Producer, topic: &str, m: &Msg, ack: Ack) -> Result<(), KafkaError> {
    let mut record = BaseRecord::with_opaque_to(topic, ack).payload(&m.payload[..]);
    if let Some(key) = &m.key {
        record = record.key(&key[..]);
    }
    if let Some(ts) = m.timestamp {
        record = record.timestamp(ts);
    }
    if !m.headers.is_empty() {
        let headers = m.headers.iter().fold(
            OwnedHeaders::new_with_capacity(m.headers.len()),
            |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        );
        record = record.headers(headers);
    }
    send(producer, record)
}

/// Sends a record, waiting while the producer's queue is full; a record that cannot be
/// sent keeps its batch from being committed.
pub fn send<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &Producer,
    mut record: BaseRecord<'_, K, P, Ack>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                // The producer's own thread serves delivery reports meanwhile.
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, back)) => {
                back.delivery_opaque.fail();
                return Err(e);
            }
        }
    }
}

/// An edge's topic, as a place a router sends batches to.
pub struct TopicOut {
    /// The topic.
    pub topic: String,
    /// The producer that writes it.
    pub producer: Arc<Producer>,
    /// Told when a message cannot be sent.
    pub shutdown: Arc<Shutdown>,
    /// Where the producers' watermarks go, for a topic into a node of an event-time graph.
    pub marks: Option<super::marks::MarkOut>,
}

impl Outlet for TopicOut {
    fn send(&self, mut env: Envelope) {
        for m in env.batch.msgs().iter() {
            if let Err(e) = produce(&self.producer, &self.topic, m, env.ack.clone()) {
                self.shutdown
                    .fail(format!("cannot send a message to topic `{}`: {e}", self.topic));
                env.ack.fail();
                return;
            }
        }
        if let Some(marks) = &self.marks
            && let Err(e) = marks.send(&self.producer, &self.topic, &env)
        {
            self.shutdown
                .fail(format!("cannot send a watermark to topic `{}`: {e}", self.topic));
        }
    }
}

/// A consumed record as a message: payload, key, timestamp and headers.
pub fn to_msg(m: &BorrowedMessage<'_>) -> Msg {
    let headers = m.headers().map_or_else(Headers::default, |h| {
        Headers::from_pairs(h.iter().map(|h| (h.key, h.value.unwrap_or_default())))
    });
    Msg {
        key: m.key().map(Bytes::copy_from_slice),
        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        timestamp: match m.timestamp() {
            Timestamp::NotAvailable => None,
            t => t.to_millis(),
        },
        headers,
    }
}

/// Waits for everything `producer` has in flight, checking for a failure every second.
pub fn flush(producer: &Producer, shutdown: &Shutdown) -> Result<(), ClientError> {
    loop {
        match producer.flush(Duration::from_secs(1)) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) if shutdown.failure().is_none() => {}
            Err(error) => {
                return Err(ClientError::Call {
                    what: "flushing the producer".into(),
                    error,
                });
            }
        }
    }
}
