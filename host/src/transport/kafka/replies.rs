//! Answers to HTTP requests across processes. A request's return address names the
//! process holding its connection by that process's place (`<host>-<n>`, see
//! `instance`); an answer made anywhere else travels on that place's reply topic
//! (`<graph>.replies.<place>`, [`crate::plan::KafkaNames::replies`]), keyed by the
//! address, and the process there reads its topic from the end it had at start into its
//! [`Exchange`].
//!
//! An answer is sent once, not in a transaction: if the answering process dies before
//! the broker has it, the request is answered 504 when its timeout passes, and if the
//! answering message is processed again after a crash, the second answer is `unmatched`.
//! A restarted process gets a new nonce, so answers meant for its predecessor's requests
//! (whose connections died with it) are dropped as unmatched, never given to a new request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{ClientError, Doing, Kafka, Producer, send, to_msg};
use crate::flow::Ack;
use crate::io::http::{self, Address, Answer, Answers, Exchange};
use crate::message::headers;
use crate::plan::KafkaNames;

/// Answers through Kafka for requests of other processes, locally for this one's.
pub struct KafkaAnswers {
    local: Arc<Exchange>,
    producer: Arc<Producer>,
    names: KafkaNames,
}

impl KafkaAnswers {
    /// Answers made here, sent with `producer`.
    pub fn new(local: Arc<Exchange>, producer: Arc<Producer>, names: KafkaNames) -> Self {
        KafkaAnswers {
            local,
            producer,
            names,
        }
    }
}

impl Answers for KafkaAnswers {
    fn answer(&self, to: &[u8], answer: Answer) {
        let Some(address) = Address::parse(to) else {
            return self.local.answer(to, answer);
        };
        if self.local.complete(&address, answer.clone()) {
            return;
        }
        let topic = self.names.replies(address.instance);
        let (payload, pairs): (Vec<u8>, Vec<(&str, Vec<u8>)>) = match &answer {
            Answer::Reply {
                status,
                content_type,
                body,
            } => {
                let mut pairs = vec![(http::STATUS, status.to_string().into_bytes())];
                if let Some(c) = content_type {
                    pairs.push((http::CONTENT_TYPE, c.clone().into_bytes()));
                }
                (body.to_vec(), pairs)
            }
            Answer::Failed { node, kind, error } => (
                error.clone().into_bytes(),
                vec![
                    (headers::NODE, node.clone().into_bytes()),
                    (headers::KIND, kind.clone().into_bytes()),
                ],
            ),
            // (Only the process holding a request closes it.)
            Answer::Stopped => return,
        };
        let headers = pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        });
        let record = BaseRecord::with_opaque_to(&topic, Ack::none())
            .key(to)
            .payload(&payload)
            .headers(headers);
        if let Err(e) = send(&self.producer, record) {
            tracing::warn!("cannot send an answer to topic `{topic}`: {e}; its request will time out");
        }
    }
}

/// The reader of this process's reply topic, until dropped.
pub struct ReplyReader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReplyReader {
    /// Reads `topic` (made if missing) from its current end into `local`.
    pub fn start(kafka: &Kafka, topic: &str, local: Arc<Exchange>) -> Result<ReplyReader, ClientError> {
        kafka.create_topics(&[(topic.to_owned(), false)])?;
        let partitions = kafka
            .partitions(topic)?
            .ok_or_else(|| ClientError::Refused(format!("reply topic `{topic}` was not made")))?;
        let consumer: BaseConsumer = kafka
            .consumer_config(topic)
            .create()
            .doing(|| format!("reading reply topic `{topic}`: creating a consumer"))?;
        // From the ends as they are now, resolved here: an answer sent after this
        // process started is never skipped by an `end` resolved later.
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, super::CONNECT_TIMEOUT)
                .doing(|| format!("reading the end of reply topic `{topic}`"))?;
            assignment
                .add_partition_offset(topic, p, Offset::Offset(high))
                .doing(|| format!("assigning reply topic `{topic}`"))?;
        }
        consumer
            .assign(&assignment)
            .doing(|| format!("assigning reply topic `{topic}`"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let name = topic.to_owned();
        let thread = std::thread::Builder::new()
            .name("replies".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(record)) => {
                            let Some(to) = record.key() else { continue };
                            let msg = to_msg(&record);
                            let answer = match msg.headers.get(headers::KIND) {
                                Some(kind) => Answer::Failed {
                                    node: String::from_utf8_lossy(
                                        msg.headers.get(headers::NODE).unwrap_or_default(),
                                    )
                                    .into_owned(),
                                    kind: String::from_utf8_lossy(kind).into_owned(),
                                    error: String::from_utf8_lossy(&msg.payload).into_owned(),
                                },
                                None => Answer::reply(&msg),
                            };
                            local.answer(to, answer);
                        }
                        Some(Err(e)) => tracing::debug!("reading reply topic `{name}`: {e}"),
                        None => {}
                    }
                }
            })
            .map_err(|e| ClientError::Refused(format!("reading reply topic `{topic}`: {e}")))?;
        Ok(ReplyReader {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ReplyReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
