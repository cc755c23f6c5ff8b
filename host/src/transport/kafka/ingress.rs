//! Reading a vertex's input topics as a member of its consumer group, and committing
//! what it read only once it is done with.
//!
//! Every polled batch is handed to the vertex with an [`Ack`]; the batch is done when the
//! last thing made from it lets go (its outputs acknowledged by the brokers, or written by
//! a sink). Offsets are committed in poll order, up to the first batch not yet done: never
//! ahead of processing. At least once: a commit every `commit_interval`, after the
//! changes of the vertex's durable stores reached their changelog. Exactly once: every
//! `commit_interval` the vertex's transaction takes its outputs, its store changes and the
//! input offsets, and commits them together. Partitions taken away by a rebalance are
//! settled first (their batches finished and committed), so a graceful hand-over repeats
//! nothing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers as _;
use rdkafka::producer::Producer as _;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::changelog::Changelog;
use super::client::{ClientError, Doing, Health, Link, Producer, flush, to_msg};
use super::marks::{Marker, ReaderMarks};
use crate::flow::{Ack, AckStatus, Acknowledged, Route};
use crate::message::Msg;
use crate::shutdown::Shutdown;

/// How long Kafka calls of a commit may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How input offsets are committed.
pub enum Commits {
    /// By the consumer, after the outputs were acknowledged.
    AtLeastOnce {
        /// The vertex's producer, flushed before the last commit (`None`: a sink).
        producer: Option<Arc<Producer>>,
    },
    /// In the vertex's transaction, with its outputs.
    ExactlyOnce(Arc<Producer>),
}

/// The next offset to read per (topic index, partition) a polled batch covers.
type Offsets = Vec<(usize, i32, i64)>;

/// Which batches are done, and what may be committed.
pub struct Committer {
    name: String,
    topics: Arc<[String]>,
    /// Polled batches in poll order: their status, next offset per (topic, partition) read.
    pending: VecDeque<(Arc<Acknowledged>, Offsets)>,
    /// Next offset to read per (topic, partition), of everything done so far.
    ready: BTreeMap<(usize, i32), i64>,
    /// Whether `ready` moved since the last commit.
    moved: bool,
    last: Instant,
    interval: Duration,
    mode: Commits,
    /// Where status learns how long work has waited to be committed.
    health: Arc<Health>,
    /// Durable stores this vertex writes, and their changelog.
    changelog: Option<(Arc<Changelog>, Vec<usize>)>,
    /// No transaction is begun after the last one.
    closed: bool,
    shutdown: Arc<Shutdown>,
}

impl Committer {
    /// A committer for a vertex reading `topics`.
    pub fn new(
        name: String,
        topics: Arc<[String]>,
        interval: Duration,
        mode: Commits,
        changelog: Option<(Arc<Changelog>, Vec<usize>)>,
        (health, shutdown): (Arc<Health>, Arc<Shutdown>),
    ) -> Result<Committer, ClientError> {
        // Healthy, work waits at most an interval plus a commit; a call may take
        // CALL_TIMEOUT before it fails.
        health.progress.register(&name, (interval * 3).max(CALL_TIMEOUT));
        if let Commits::ExactlyOnce(p) = &mode {
            p.init_transactions(CALL_TIMEOUT)
                .doing(|| format!("{name}: initialising Kafka transactions"))?;
            p.begin_transaction()
                .doing(|| format!("{name}: beginning a transaction"))?;
        }
        Ok(Committer {
            name,
            topics,
            pending: VecDeque::new(),
            ready: BTreeMap::new(),
            moved: false,
            last: Instant::now(),
            interval,
            mode,
            health,
            changelog,
            closed: false,
            shutdown,
        })
    }

    /// The vertex, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn push(&mut self, acked: Arc<Acknowledged>, offsets: Offsets) {
        self.pending.push_back((acked, offsets));
    }

    /// Tells status whether work waits to be committed.
    fn report_waiting(&self) {
        let waiting = self.moved || !self.pending.is_empty();
        self.health.progress.waiting(&self.name, waiting);
    }

    /// Moves the batches done, in poll order, into what may be committed.
    fn collect(&mut self) {
        // A failed batch is never done: nothing after it is committed either.
        while let Some((acked, _)) = self.pending.front() {
            if acked.status() != AckStatus::Done {
                break;
            }
            let (_, offsets) = self.pending.pop_front().expect("front exists");
            for (t, p, next) in offsets {
                self.ready.insert((t, p), next);
            }
            self.moved = true;
        }
    }

    fn offsets(&self) -> KafkaResultList {
        let mut tpl = TopicPartitionList::new();
        for (&(t, p), &next) in &self.ready {
            tpl.add_partition_offset(&self.topics[t], p, Offset::Offset(next))?;
        }
        Ok(tpl)
    }

    /// Commits when the interval has passed (at least once: what is done so far;
    /// exactly once: waits for everything polled, then commits the transaction).
    fn tick<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), ClientError> {
        self.collect();
        self.report_waiting();
        if self.last.elapsed() < self.interval {
            return Ok(());
        }
        match self.mode {
            Commits::AtLeastOnce { .. } => self.commit(consumer, CommitMode::Async),
            Commits::ExactlyOnce(_) => self.settle(consumer),
        }
    }

    /// Waits until every polled batch is done (or the graph fails), then commits.
    pub fn settle<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), ClientError> {
        loop {
            self.collect();
            self.report_waiting();
            if self.pending.is_empty() || self.shutdown.failure().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.commit(consumer, CommitMode::Sync)
    }

    fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        mode: CommitMode,
    ) -> Result<(), ClientError> {
        self.last = Instant::now();
        let name = &self.name;
        match &self.mode {
            Commits::AtLeastOnce { .. } => {
                if !self.moved || self.ready.is_empty() {
                    return Ok(());
                }
                // State first: a commit must never be ahead of the changes it caused.
                if let Some((log, stores)) = &self.changelog {
                    log.write(stores, None)?;
                    log.flush(&self.shutdown)?;
                }
                consumer
                    .commit(&self.offsets()?, mode)
                    .doing(|| format!("{name}: committing offsets"))?;
            }
            Commits::ExactlyOnce(producer) => {
                if self.closed || !self.pending.is_empty() {
                    return Ok(());
                }
                let changes = match &self.changelog {
                    Some((log, stores)) => log.write(stores, Some(producer))?,
                    None => 0,
                };
                if !self.moved && changes == 0 {
                    return Ok(());
                }
                let group = consumer
                    .group_metadata()
                    .ok_or_else(|| ClientError::Refused(format!("{name}: no consumer group metadata")))?;
                if !self.ready.is_empty() {
                    producer
                        .send_offsets_to_transaction(&self.offsets()?, &group, CALL_TIMEOUT)
                        .doing(|| format!("{name}: adding offsets to the transaction"))?;
                }
                producer
                    .commit_transaction(CALL_TIMEOUT)
                    .doing(|| format!("{name}: committing the transaction"))?;
                producer
                    .begin_transaction()
                    .doing(|| format!("{name}: beginning a transaction"))?;
            }
        }
        self.moved = false;
        self.report_waiting();
        Ok(())
    }

    /// After the vertex has ended: everything it produced (its `finish` outputs too)
    /// delivered, the last offsets committed.
    pub fn close<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), ClientError> {
        // The last commit goes out even if nothing moved since an asynchronous one that
        // may have failed.
        self.moved = true;
        self.settle(consumer)?;
        match &self.mode {
            Commits::AtLeastOnce { producer } => {
                if let Some(p) = producer {
                    flush(p, &self.shutdown)?;
                }
            }
            Commits::ExactlyOnce(producer) => {
                self.moved = true;
                let producer = producer.clone();
                self.commit(consumer, CommitMode::Sync)?;
                self.closed = true;
                producer
                    .commit_transaction(CALL_TIMEOUT)
                    .doing(|| format!("{}: committing the last transaction", self.name))?;
            }
        }
        Ok(())
    }

    /// Partitions taken away: forget them after settling.
    fn revoked(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            if let Some(t) = self.topics.iter().position(|t| t == e.topic()) {
                self.ready.remove(&(t, e.partition()));
            }
        }
    }
}

type KafkaResultList = Result<TopicPartitionList, KafkaError>;

/// The consumer's context: link health, and settling partitions before they are revoked.
pub struct Rebalancing {
    /// Link health.
    pub link: Link,
    /// The vertex (its name in status).
    pub vertex: String,
    /// The vertex's commits.
    pub committer: Mutex<Committer>,
}

impl Rebalancing {
    /// The committer.
    pub fn committer(&self) -> MutexGuard<'_, Committer> {
        self.committer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Rebalancing {
    fn error(&self, error: KafkaError, reason: &str) {
        self.link.error(error, reason);
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        let health = &self.link.health;
        health
            .progress
            .consumer_stats(&self.vertex, &stats, |t, p| health.produced(t, p));
        self.link.stats(stats);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.link.log(level, fac, log_message);
    }
}

impl ConsumerContext for Rebalancing {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let mut c = self.committer();
                tracing::info!("{}: {} partition(s) revoked; settling them", c.name, tpl.count());
                if let Err(e) = c.settle(consumer) {
                    tracing::warn!("{}: settling revoked partitions: {e:#}", c.name);
                }
                c.revoked(tpl);
            }
            Rebalance::Assign(tpl) => {
                let c = self.committer();
                tracing::info!("{}: {} partition(s) assigned", c.name, tpl.count());
            }
            Rebalance::Error(e) => tracing::warn!("rebalance failed: {e}"),
        }
    }
}

/// A vertex's reader.
pub struct Ingress {
    /// The vertex, for logs.
    pub name: String,
    /// Member of the vertex's group, subscribed to its input topics.
    pub consumer: BaseConsumer<Rebalancing>,
    /// Per input topic (same order as the committer's), the route into the vertex.
    pub routes: Vec<Route>,
    /// The input topics.
    pub topics: Arc<[String]>,
    /// Whether each topic is written in transactions (its end is a commit marker).
    pub transactional: Vec<bool>,
    /// Messages per polled batch.
    pub batch_size: usize,
    /// Stop (drain what was polled, commit, end).
    pub shutdown: Arc<Shutdown>,
    /// Set once everything upstream has ended: end when caught up with every input.
    pub drain: Arc<AtomicBool>,
    /// Set when the graph changes: stop at the next batch, committing what was read.
    pub stop: Arc<AtomicBool>,
    /// In an event-time graph: the watermarks of the partitions read (see `marks`).
    pub marks: Option<ReaderMarks>,
    /// The partitions assigned when last looked (for watermarks).
    pub assigned: Vec<(usize, i32)>,
}

/// The reader, as a producer of watermarks for its vertex's replicas (their only one).
pub const READER: u32 = u32::MAX - 1;

/// The end of a partition as the last fetch response said (librdkafka keeps it per
/// partition it fetches; rdkafka does not wrap the call).
fn fetched_end<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32) -> i64 {
    let Ok(topic) = std::ffi::CString::new(topic) else {
        return -1;
    };
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: a live client, a NUL-terminated topic name, and two out-pointers to i64s.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    if err == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
        high
    } else {
        -1
    }
}

impl Ingress {
    /// Reads until stopped (or drained), then settles and closes the routes; returns the
    /// consumer, whose committer still has to [`Committer::close`] once the vertex ended.
    pub fn run(mut self) -> Result<BaseConsumer<Rebalancing>, ClientError> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        // (A member the graph before handed on may be subscribed already: subscribing
        // again would rebalance its group.)
        let subscribed = self.consumer.subscription().ok().map(|tpl| {
            let mut now: Vec<String> = tpl.elements().iter().map(|e| e.topic().to_owned()).collect();
            now.sort();
            now
        });
        let mut wanted: Vec<String> = self.topics.to_vec();
        wanted.sort();
        if subscribed.as_ref() != Some(&wanted) {
            self.consumer
                .subscribe(&topics)
                .doing(|| format!("{}: subscribing to {}", self.name, topics.join(", ")))?;
        }
        // Caught up twice in a row, far enough apart for a fresh fetch response between
        // (fetch.wait.max.ms is 500 by default): the ends it knows are current.
        let (mut checked, mut caught_up) = (Instant::now(), false);
        while !self.shutdown.is_stopping() && !self.stop.load(Ordering::Acquire) {
            let polled = self.poll()?;
            self.consumer.context().committer().tick(&self.consumer)?;
            if polled > 0 {
                caught_up = false;
            } else if self.drain.load(Ordering::Acquire) && checked.elapsed() > Duration::from_millis(600) {
                checked = Instant::now();
                self.consumer.context().committer().settle(&self.consumer)?;
                let now = self.caught_up()?;
                if now && caught_up {
                    break;
                }
                caught_up = now;
            }
        }
        self.consumer.context().committer().settle(&self.consumer)?;
        // Closing the routes lets the vertex drain and end.
        self.routes.clear();
        Ok(self.consumer)
    }

    /// Polls up to a batch and hands it on (markers kept out of it, for the watermark);
    /// the number of messages.
    fn poll(&mut self) -> Result<usize, ClientError> {
        let mut batches: Vec<Vec<Msg>> = vec![Vec::new(); self.routes.len()];
        let mut offsets: Offsets = Vec::new();
        let mut n = 0;
        let mut wait = Duration::from_millis(100);
        while n < self.batch_size {
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => {
                    let Some(t) = self.topics.iter().position(|t| t == m.topic()) else {
                        continue;
                    };
                    let (p, next) = (m.partition(), m.offset() + 1);
                    match offsets.iter_mut().find(|(ot, op, _)| *ot == t && *op == p) {
                        Some(o) => o.2 = next,
                        None => offsets.push((t, p, next)),
                    }
                    wait = Duration::ZERO;
                    if let Some(marks) = &mut self.marks {
                        let headers = m
                            .headers()
                            .map(|h| Marker::parse(h.iter().map(|h| (h.key, h.value.unwrap_or_default()))));
                        if let Some(Some(marker)) = headers {
                            marks.marker(t, p, marker);
                            continue;
                        }
                        let msg = to_msg(&m);
                        marks.record(t, p, msg.timestamp);
                        batches[t].push(msg);
                    } else {
                        batches[t].push(to_msg(&m));
                    }
                    n += 1;
                }
                Some(Err(e)) => {
                    tracing::debug!("{}: poll: {e}", self.name);
                    break;
                }
            }
        }
        if offsets.is_empty() {
            self.tell_marks()?;
            return Ok(0);
        }
        let health = &self.consumer.context().link.health;
        health.ok();
        for (topic, msgs) in self.topics.iter().zip(&batches) {
            if !msgs.is_empty() {
                health.progress.read(&self.name, topic, msgs.len());
            }
        }
        let (ack, acked) = Ack::tracked();
        for (route, msgs) in self.routes.iter_mut().zip(batches) {
            if !msgs.is_empty() {
                route.send(msgs, &ack, None);
            }
        }
        drop(ack);
        self.consumer.context().committer().push(acked, offsets);
        self.tell_marks()?;
        Ok(n)
    }

    /// Tells the vertex the watermark over the partitions assigned now, if it moved.
    fn tell_marks(&mut self) -> Result<(), ClientError> {
        let Some(marks) = &mut self.marks else {
            return Ok(());
        };
        let assigned: Vec<(usize, i32)> = self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .filter_map(|e| Some((self.topics.iter().position(|t| t == e.topic())?, e.partition())))
            .collect();
        if assigned != self.assigned {
            let gone: Vec<(usize, i32)> = self
                .assigned
                .iter()
                .filter(|p| !assigned.contains(p))
                .copied()
                .collect();
            let added: Vec<(usize, i32)> = assigned
                .iter()
                .filter(|p| !self.assigned.contains(p))
                .copied()
                .collect();
            marks.revoked(&gone);
            marks.assigned(&added);
            self.assigned = assigned;
        }
        if let Some(mark) = marks.changed(&self.assigned, READER) {
            for route in &mut self.routes {
                route.mark(mark);
            }
        }
        Ok(())
    }

    /// Whether this vertex's group has read and committed every input partition to its
    /// end: the furthest of what the brokers list as the end (which some brokers, tansu
    /// among them, under-report), what the last fetch response said, and what this
    /// process's own producers wrote there. A transactional topic ends in a commit
    /// marker, which is never read.
    fn caught_up(&self) -> Result<bool, ClientError> {
        // One request of each kind for every partition: a broker that answers a
        // connection's requests in turn (tansu) has each wait behind the consumer's
        // long-polling fetch.
        let positions = self.consumer.position()?;
        let meta = self.consumer.fetch_metadata(None, CALL_TIMEOUT)?;
        let mut all = TopicPartitionList::new();
        let mut latest = TopicPartitionList::new();
        for topic in self.topics.iter() {
            let partitions = meta
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len() as i32);
            for p in 0..partitions {
                all.add_partition(topic, p);
                latest.add_partition_offset(topic, p, Offset::End)?;
            }
        }
        let committed = self.consumer.committed_offsets(all.clone(), CALL_TIMEOUT)?;
        // (Timestamp -1 asks for the latest offset.)
        let listed = self.consumer.offsets_for_times(latest, CALL_TIMEOUT)?;
        for e in all.elements() {
            let (topic, p) = (e.topic(), e.partition());
            let offset = |l: &TopicPartitionList| match l.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            let high = offset(&listed).max(fetched_end(&self.consumer, topic, p));
            let at = offset(&committed).max(offset(&positions));
            let t = self.topics.iter().position(|t| t == topic).unwrap_or(0);
            let marker = self.transactional[t] as i64;
            let end = (high - marker).max(self.consumer.context().link.health.produced(topic, p));
            if at < end {
                tracing::trace!("{}: {topic}/{p} at {at} of {high}", self.name);
                return Ok(false);
            }
        }
        Ok(true)
    }
}
