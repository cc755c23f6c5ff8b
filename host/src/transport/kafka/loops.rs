//! When a loop of a Kafka graph has ended, whichever processes run its nodes: the
//! distributed termination detection the process that ends the run asks before it lets a
//! loop's nodes drain.
//!
//! The brokers keep the counters. For every input topic of every node in the loop — the
//! feedback topics, the topics between the loop's nodes and the topics entering it — a
//! record is *sent* once it is in the partition, and *received* once the reading node's
//! group has committed past it; a group commits an input only after the outputs made
//! from it were acknowledged (or, exactly once, in the same transaction). So a loop is
//! quiet when no partition holds a record at or past its group's committed offset.
//!
//! One look (a *wave*) reads each partition's committed offset, then reads the
//! partition from there: finding a record, or not reaching the partition's end, is
//! "busy". Reading, not the listed end, decides, since some brokers (tansu) list less
//! than they hold. A single quiet wave is not enough: a node may take a record from a
//! partition the wave has not looked at yet and write into one it already passed. So a
//! loop has ended after two quiet waves in a row that read the same committed offsets
//! (the four-counter method): anything written into the loop between or after them
//! would have been made from a record committed between them, which would have moved an
//! offset. The routes entering the loop must have ended before the first wave (the
//! caller checks), so nothing comes from outside after.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{ClientError, Doing, Kafka, Link};

/// How long a wave waits for the end of a partition before calling the loop busy.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a committed-offsets or metadata call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One input topic of a loop's node, read as that node's group sees it.
struct Probe {
    topic: String,
    /// Not a member of the group (it never subscribes): it reads the group's committed
    /// offsets and assigns itself the partitions from there.
    consumer: BaseConsumer<Link>,
}

/// The termination detector of one loop.
pub struct LoopEnd {
    /// Names the loop in errors and the log.
    pub name: String,
    probes: Vec<Probe>,
    /// The committed offsets of the last quiet wave.
    quiet: Option<Vec<Vec<i64>>>,
    /// Waves looked, for the log.
    pub waves: u64,
}

impl LoopEnd {
    /// A detector for the loop whose nodes read `inputs`: per input, the topic and the
    /// consumer group of the node reading it.
    pub fn new(kafka: &Kafka, name: String, inputs: &[(String, String)]) -> Result<LoopEnd, ClientError> {
        let probes = inputs
            .iter()
            .map(|(topic, group)| {
                let consumer = kafka
                    .consumer_config(group)
                    .set("enable.partition.eof", "true")
                    .create_with_context(kafka.link.clone())
                    .doing(|| format!("{name}: a reader of `{topic}` for group `{group}`"))?;
                Ok(Probe {
                    topic: topic.clone(),
                    consumer,
                })
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(LoopEnd {
            name,
            probes,
            quiet: None,
            waves: 0,
        })
    }

    /// Looks once more: whether the loop has ended (this quiet wave confirms the last).
    pub fn ended(&mut self) -> Result<bool, ClientError> {
        self.waves += 1;
        let mut committed = Vec::with_capacity(self.probes.len());
        for probe in &self.probes {
            match probe.wave()? {
                Some(offsets) => committed.push(offsets),
                None => {
                    self.quiet = None;
                    return Ok(false);
                }
            }
        }
        let confirmed = self.quiet.as_ref() == Some(&committed);
        self.quiet = Some(committed);
        Ok(confirmed)
    }
}

impl Probe {
    /// The group's committed offsets per partition if no partition holds a record at or
    /// past them; `None` if one does (or its end was not reached in time).
    fn wave(&self) -> Result<Option<Vec<i64>>, ClientError> {
        let topic = self.topic.as_str();
        let meta = self
            .consumer
            .fetch_metadata(Some(topic), CALL_TIMEOUT)
            .doing(|| format!("reading the partitions of `{topic}`"))?;
        let partitions = meta.topics().first().map_or(0, |t| t.partitions().len() as i32);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, CALL_TIMEOUT)
            .doing(|| format!("reading the committed offsets of `{topic}`"))?;
        let mut from = TopicPartitionList::new();
        let mut offsets = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            offsets.push(at);
            from.add_partition_offset(topic, p, Offset::Offset(at))
                .doing(|| format!("reading `{topic}` from {at}"))?;
        }
        self.consumer
            .assign(&from)
            .doing(|| format!("reading `{topic}` from its committed offsets"))?;
        let mut at_end = vec![false; partitions as usize];
        let deadline = Instant::now() + READ_TIMEOUT;
        let quiet = loop {
            if at_end.iter().all(|e| *e) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            match self.consumer.poll(Duration::from_millis(50)) {
                // A record past what the group committed: the loop is busy.
                Some(Ok(_)) => break false,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(e) = at_end.get_mut(p as usize) {
                        *e = true;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("{topic}: reading past the committed offsets: {e}");
                    break false;
                }
                None => {}
            }
        };
        self.consumer
            .unassign()
            .doing(|| format!("letting go of `{topic}`"))?;
        Ok(quiet.then_some(offsets))
    }
}
