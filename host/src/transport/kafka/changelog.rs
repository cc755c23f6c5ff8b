//! Durable stores on Kafka: each is backed by a compacted changelog topic
//! (`<graph>.<store>.changelog`) keyed by the store's key, the value as payload, a
//! tombstone for a deleted key, the expiry in a header.
//!
//! On start every changelog is read to its end into the store; afterwards the process
//! keeps applying what other processes write (read committed, so changes of an aborted
//! transaction never arrive), so a process that takes over a partition holds its keys as
//! their last owner committed them. A vertex writes the changes of the stores it may
//! write before it commits its input offsets (at least once), or in the same transaction
//! (exactly once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::client::{ClientError, Doing, Kafka, Link, Producer, flush, send};
use crate::flow::Ack;
use crate::plan::KafkaNames;
use crate::shutdown::Shutdown;
use crate::state::{Store, Stores};

/// Who wrote a changelog record.
const WRITER: &str = "flowhost-writer";
/// When the key expires (milliseconds since the epoch), for stores with `ttl_ms`.
const EXPIRES: &str = "flowhost-expires";
/// The longest a restore may wait for a changelog's end.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// The changelogs of a graph's durable stores.
pub struct Changelog {
    stores: Vec<(Arc<Store>, String)>,
    producer: Arc<Producer>,
    process: String,
}

impl Changelog {
    /// The durable stores of `stores` and their topics.
    pub fn new(
        kafka: &Kafka,
        names: &KafkaNames,
        stores: &Stores,
        shutdown: &Arc<Shutdown>,
    ) -> Result<Self, ClientError> {
        Ok(Changelog {
            stores: stores
                .iter()
                .filter_map(|s| Some((s.clone(), names.changelog(s.name())?.to_owned())))
                .collect(),
            producer: kafka.producer("changelog", None, shutdown)?,
            process: kafka.process.clone(),
        })
    }

    /// Indexes of the durable stores among `names`.
    pub fn indexes<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> Vec<usize> {
        let names: Vec<&str> = names.into_iter().collect();
        (0..self.stores.len())
            .filter(|&i| names.contains(&self.stores[i].0.name()))
            .collect()
    }

    /// Sends what changed in stores `which` since the last call, through `via` (a
    /// transaction) or the changelog's own producer; returns how many keys.
    pub fn write(&self, which: &[usize], via: Option<&Arc<Producer>>) -> Result<usize, ClientError> {
        let producer = via.unwrap_or(&self.producer);
        let mut n = 0;
        for &i in which {
            let (store, topic) = &self.stores[i];
            for (key, now) in store.take_changes() {
                let mut headers = OwnedHeaders::new().insert(Header {
                    key: WRITER,
                    value: Some(&self.process),
                });
                let expires = now.as_ref().map_or(i64::MAX, |(_, e)| *e).to_string();
                if now.as_ref().is_some_and(|(_, e)| *e != i64::MAX) {
                    headers = headers.insert(Header {
                        key: EXPIRES,
                        value: Some(&expires),
                    });
                }
                let mut record = BaseRecord::with_opaque_to(topic, Ack::none())
                    .key(&key[..])
                    .headers(headers);
                if let Some((value, _)) = &now {
                    record = record.payload(&value[..]);
                }
                send(producer, record).doing(|| format!("writing changelog `{topic}`"))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Waits until what [`Changelog::write`] sent without a transaction is acknowledged.
    pub fn flush(&self, shutdown: &Shutdown) -> Result<(), ClientError> {
        flush(&self.producer, shutdown)
    }

    /// Reads every changelog to its end into its store, then (with `shutdown`) keeps
    /// applying, on a thread per store, what other processes write until it stops.
    pub fn restore(&self, kafka: &Kafka, shutdown: Option<&Arc<Shutdown>>) -> Result<(), ClientError> {
        for (store, topic) in &self.stores {
            let partitions = kafka
                .partitions(topic)?
                .ok_or_else(|| ClientError::Refused(format!("changelog topic `{topic}` does not exist")))?;
            let mut config = kafka.consumer_config(&format!("{topic}.{}", self.process));
            config.set("enable.partition.eof", "true");
            let consumer: BaseConsumer<Link> = config
                .create_with_context(kafka.link.clone())
                .doing(|| format!("reading changelog `{topic}`"))?;
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
            consumer.assign(&tpl)?;
            let started = Instant::now();
            let mut ended = vec![false; partitions as usize];
            let mut keys = 0usize;
            while ended.iter().any(|e| !e) {
                if started.elapsed() > RESTORE_TIMEOUT {
                    return Err(ClientError::Refused(format!(
                        "restoring store `{}`: changelog `{topic}` not read to its end within {}s",
                        store.name(),
                        RESTORE_TIMEOUT.as_secs()
                    )));
                }
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        apply(store, &m, None);
                        keys += 1;
                    }
                    Some(Err(KafkaError::PartitionEOF(p))) => ended[p as usize] = true,
                    Some(Err(e)) => tracing::debug!("changelog `{topic}`: {e}"),
                    None => {}
                }
            }
            tracing::info!(
                "restored store `{}`: {} keys from {keys} changelog records",
                store.name(),
                store.len()
            );
            let Some(shutdown) = shutdown.cloned() else {
                continue;
            };
            let (store, process) = (store.clone(), self.process.clone());
            let name = format!("changelog-{}", store.name());
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    while !shutdown.is_stopping() {
                        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                            apply(&store, &m, Some(&process));
                        }
                    }
                })
                .map_err(|e| {
                    ClientError::Refused(format!("starting the changelog reader of `{topic}`: {e}"))
                })?;
        }
        Ok(())
    }
}

/// Applies a changelog record to `store`, unless `mine` wrote it.
fn apply(store: &Store, m: &rdkafka::message::BorrowedMessage<'_>, mine: Option<&str>) {
    let header = |name: &str| {
        m.headers()
            .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
    };
    if mine.is_some_and(|me| header(WRITER) == Some(me.as_bytes())) {
        return;
    }
    let Some(key) = m.key() else { return };
    match m.payload() {
        None => store.forget(key),
        Some(value) => {
            let expires = header(EXPIRES)
                .and_then(|e| std::str::from_utf8(e).ok()?.parse().ok())
                .unwrap_or(i64::MAX);
            store.restore(key.to_vec(), value.to_vec(), expires);
        }
    }
}
