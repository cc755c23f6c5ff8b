//! Watermarks through topics. A producer that writes an edge into a node also writes a
//! *marker* into every partition of its topic whenever its mark changes, and at least
//! once a second while it lives: an empty record with headers `flowhost-watermark` (ms,
//! or `idle`), `flowhost-producer` (its id, unique across processes: this process's
//! place and the producer's number) and, for a source with an idleness timeout,
//! `flowhost-idle-after` (ms). Within a partition a marker follows the records it covers,
//! as on a channel.
//!
//! The consumer's reader (`ingress`) takes markers out of what it polls and keeps, per
//! assigned partition, the least mark of the producers it has heard there; a producer not
//! heard for its idleness timeout (or, with none, for [`PRODUCER_GONE`]: a process that
//! died and did not come back) no longer holds the partition back. A Kafka source's
//! partitions get their watermark from record timestamps instead, as a source would. The
//! reader's mark, the least over its partitions, goes to the vertex like any producer's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;

use super::client::{Producer, send};
use crate::flow::watermark::{Generator, Mark, Marked, Time};
use crate::flow::{Ack, Envelope};
use crate::manifest::WatermarkSpec;

/// Header of a marker: the watermark (ms) or `idle`.
pub const WATERMARK: &str = "flowhost-watermark";
/// Header of a marker: who wrote it.
pub const PRODUCER: &str = "flowhost-producer";
/// Header of a marker: the producer is idle once not heard for this long (ms).
pub const IDLE_AFTER: &str = "flowhost-idle-after";

/// A live producer writes a marker at least this often.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A producer not heard for this long (and with no idleness timeout of its own) is gone.
pub const PRODUCER_GONE: Duration = Duration::from_secs(60);

/// The markers one topic gets from the producers of this process.
pub struct MarkOut {
    /// This process's place (`transport::kafka::instance`), for producer ids.
    pub process: String,
    /// The topic's partitions.
    pub partitions: i32,
    /// Per local producer, the mark it wrote last and when.
    pub written: Mutex<HashMap<u32, (Mark, Instant)>>,
}

impl MarkOut {
    /// Writes `env`'s mark into every partition of `topic` if it changed, or if the last
    /// was written a heartbeat ago.
    pub fn send(
        &self,
        producer: &Producer,
        topic: &str,
        env: &Envelope,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let Some(marked) = env.mark else {
            return Ok(());
        };
        {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if let Some((mark, at)) = written.get(&marked.from)
                && *mark == marked.mark
                && now.duration_since(*at) < HEARTBEAT
            {
                return Ok(());
            }
            written.insert(marked.from, (marked.mark, now));
        }
        let id = format!("{}/{}", self.process, marked.from);
        let value = match marked.mark {
            Mark::At(t) => t.to_string(),
            Mark::Idle => "idle".to_owned(),
        };
        let idle_after = marked.idle_after.map(|d| d.as_millis().to_string());
        for partition in 0..self.partitions {
            let mut headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: WATERMARK,
                    value: Some(value.as_bytes()),
                })
                .insert(Header {
                    key: PRODUCER,
                    value: Some(id.as_bytes()),
                });
            if let Some(after) = &idle_after {
                headers = headers.insert(Header {
                    key: IDLE_AFTER,
                    value: Some(after.as_bytes()),
                });
            }
            let record = BaseRecord::<[u8], [u8], Ack>::with_opaque_to(topic, Ack::none())
                .partition(partition)
                .payload(&[][..])
                .headers(headers);
            send(producer, record)?;
        }
        Ok(())
    }
}

/// A marker read back: who, what, and how long until it counts as idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The producer's id.
    pub producer: String,
    /// Its mark.
    pub mark: Mark,
    /// Idle once not heard for this long.
    pub idle_after: Duration,
}

impl Marker {
    /// The marker in a record's headers, if it is one.
    pub fn parse<'h>(mut headers: impl Iterator<Item = (&'h str, &'h [u8])>) -> Option<Marker> {
        let (mut mark, mut producer, mut idle_after) = (None, None, PRODUCER_GONE);
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        headers.try_for_each(|(k, v)| {
            match k {
                WATERMARK => {
                    let v = text(v);
                    mark = Some(if v == "idle" {
                        Mark::Idle
                    } else {
                        Mark::At(v.parse().ok()?)
                    });
                }
                PRODUCER => producer = Some(text(v)),
                IDLE_AFTER => idle_after = Duration::from_millis(text(v).parse().ok()?),
                _ => {}
            }
            Some(())
        })?;
        Some(Marker {
            producer: producer?,
            mark: mark?,
            idle_after,
        })
    }
}

/// One partition's event time.
#[derive(Debug, Clone)]
enum Partition {
    /// Written by flowhost producers: per producer, its mark and when it was heard.
    Marked(HashMap<String, (Mark, Instant, Duration)>),
    /// A Kafka source's: from the timestamps of its records.
    Timed {
        generator: Generator,
        heard: Instant,
        idle: Option<Duration>,
    },
}

impl Partition {
    fn mark(&self, now: Instant) -> Option<Mark> {
        match self {
            Partition::Marked(producers) => {
                if producers.is_empty() {
                    return None;
                }
                let least = producers
                    .values()
                    .filter(|(m, heard, after)| {
                        *m == Mark::At(Time::MAX) || now.duration_since(*heard) < *after
                    })
                    .filter_map(|(m, _, _)| match m {
                        Mark::At(t) => Some(*t),
                        Mark::Idle => None,
                    })
                    .min();
                Some(least.map_or(Mark::Idle, Mark::At))
            }
            Partition::Timed {
                generator,
                heard,
                idle,
            } => match idle {
                Some(after) if now.duration_since(*heard) >= *after => Some(Mark::Idle),
                _ => generator.current().map(Mark::At),
            },
        }
    }
}

/// A reader's event time over its assigned partitions.
#[derive(Debug, Default)]
pub struct ReaderMarks {
    /// Per input topic (by index): the Kafka source's watermark settings, if it is one.
    sources: Vec<Option<WatermarkSpec>>,
    /// Per input topic: a feedback edge's, which carries no marks (its records come
    /// around from marked ones).
    unmarked: Vec<bool>,
    partitions: HashMap<(usize, i32), Partition>,
    /// The mark told to the vertex last.
    told: Option<Mark>,
}

impl ReaderMarks {
    /// Marks for a reader of these topics; a Kafka source's topic has its settings, and
    /// the `unmarked` ones (feedback edges') do not count.
    pub fn new(sources: Vec<Option<WatermarkSpec>>, unmarked: Vec<bool>) -> Self {
        ReaderMarks {
            sources,
            unmarked,
            ..ReaderMarks::default()
        }
    }

    /// A marker read from `partition` of topic `t`.
    pub fn marker(&mut self, t: usize, partition: i32, marker: Marker) {
        let now = Instant::now();
        let entry = self
            .partitions
            .entry((t, partition))
            .or_insert_with(|| Partition::Marked(HashMap::new()));
        if let Partition::Marked(producers) = entry {
            producers.insert(marker.producer, (marker.mark, now, marker.idle_after));
        }
    }

    /// A record read from `partition` of topic `t` (a Kafka source's feeds its watermark).
    pub fn record(&mut self, t: usize, partition: i32, timestamp: Option<Time>) {
        let Some(Some(spec)) = self.sources.get(t) else {
            return;
        };
        let now = Instant::now();
        let entry = self
            .partitions
            .entry((t, partition))
            .or_insert_with(|| Partition::Timed {
                generator: Generator::new(spec.out_of_orderness),
                heard: now,
                idle: spec.idle,
            });
        if let Partition::Timed { generator, heard, .. } = entry {
            generator.observe([timestamp]);
            *heard = now;
        }
    }

    /// Partitions newly assigned: a Kafka source's that has no record yet counts as
    /// heard now (so its idleness timeout can pass); others wait for a marker.
    pub fn assigned(&mut self, added: &[(usize, i32)]) {
        let now = Instant::now();
        for &(t, p) in added {
            if let Some(Some(spec)) = self.sources.get(t) {
                self.partitions.entry((t, p)).or_insert_with(|| Partition::Timed {
                    generator: Generator::new(spec.out_of_orderness),
                    heard: now,
                    idle: spec.idle,
                });
            }
        }
    }

    /// Partitions no longer assigned are forgotten.
    pub fn revoked(&mut self, gone: &[(usize, i32)]) {
        for p in gone {
            self.partitions.remove(p);
        }
    }

    /// The reader's mark over `assigned` if it changed since last told (none while an
    /// assigned partition has none). A watermark never moves back.
    pub fn changed(&mut self, assigned: &[(usize, i32)], from: u32) -> Option<Marked> {
        if assigned.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut least: Option<Time> = None;
        let marked = |p: &&(usize, i32)| !self.unmarked.get(p.0).copied().unwrap_or(false);
        for p in assigned.iter().filter(marked) {
            match self.partitions.get(p)?.mark(now)? {
                Mark::At(t) => least = Some(least.map_or(t, |l| l.min(t))),
                Mark::Idle => {}
            }
        }
        let mark = match (least, self.told) {
            (None, _) => Mark::Idle,
            (Some(t), Some(Mark::At(before))) => Mark::At(t.max(before)),
            (Some(t), _) => Mark::At(t),
        };
        if self.told == Some(mark) {
            return None;
        }
        self.told = Some(mark);
        Some(Marked {
            from,
            mark,
            idle_after: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(producer: &str, t: Time) -> Marker {
        Marker {
            producer: producer.into(),
            mark: Mark::At(t),
            idle_after: PRODUCER_GONE,
        }
    }

    #[test]
    fn a_reader_says_the_least_over_its_partitions_and_their_producers() {
        let mut r = ReaderMarks::new(vec![None], vec![false]);
        let assigned = [(0, 0), (0, 1)];
        r.marker(0, 0, marker("a/0", 100));
        assert_eq!(r.changed(&assigned, 7), None, "partition 1 has no marker yet");
        r.marker(0, 1, marker("a/0", 300));
        r.marker(0, 1, marker("b/0", 200));
        assert_eq!(r.changed(&assigned, 7).map(|m| m.mark), Some(Mark::At(100)));
        assert_eq!(r.changed(&assigned, 7), None, "told already");
        r.marker(0, 0, marker("a/0", 400));
        assert_eq!(r.changed(&assigned, 7).map(|m| m.mark), Some(Mark::At(200)));
        // Partition 0 moves to another member: only partition 1 counts.
        r.revoked(&[(0, 0)]);
        r.marker(0, 1, marker("b/0", 250));
        assert_eq!(r.changed(&[(0, 1)], 7).map(|m| m.mark), Some(Mark::At(250)));
    }

    #[test]
    fn a_feedback_topic_does_not_hold_the_watermark_back() {
        // Topic 0 comes from outside the loop, topic 1 around it (no markers ever).
        let mut r = ReaderMarks::new(vec![None, None], vec![false, true]);
        let assigned = [(0, 0), (1, 0), (1, 1)];
        r.marker(0, 0, marker("a/0", 100));
        assert_eq!(r.changed(&assigned, 7).map(|m| m.mark), Some(Mark::At(100)));
        // Only feedback partitions held: idle, holding nobody back.
        assert_eq!(r.changed(&[(1, 0)], 7).map(|m| m.mark), Some(Mark::Idle));
    }

    #[test]
    fn a_kafka_source_partition_follows_its_timestamps_and_goes_idle() {
        let spec = WatermarkSpec {
            out_of_orderness: Duration::from_millis(10),
            idle: Some(Duration::ZERO),
        };
        let mut r = ReaderMarks::new(vec![Some(spec)], vec![false]);
        r.record(0, 0, Some(500));
        // Idle at once (a zero timeout): it holds nobody back.
        assert_eq!(r.changed(&[(0, 0)], 1).map(|m| m.mark), Some(Mark::Idle));
        let busy = WatermarkSpec { idle: None, ..spec };
        let mut r = ReaderMarks::new(vec![Some(busy)], vec![false]);
        r.record(0, 0, Some(500));
        r.record(0, 0, Some(450));
        assert_eq!(r.changed(&[(0, 0)], 1).map(|m| m.mark), Some(Mark::At(490)));
    }

    #[test]
    fn markers_round_trip_through_headers() {
        let headers = [
            (WATERMARK, &b"1200"[..]),
            (PRODUCER, &b"host-0/3"[..]),
            (IDLE_AFTER, &b"300"[..]),
        ];
        assert_eq!(
            Marker::parse(headers.into_iter()),
            Some(Marker {
                producer: "host-0/3".into(),
                mark: Mark::At(1200),
                idle_after: Duration::from_millis(300)
            })
        );
        assert_eq!(Marker::parse([("other", &b"x"[..])].into_iter()), None);
    }
}
