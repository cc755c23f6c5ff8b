//! Where this process's consumer groups are: the partitions each holds, its committed and
//! fetched offsets, the partitions' ends and the lag; records read per topic; and how long work has waited to be committed (a stuck transaction shows
//! there, and in the log).
//!
//! Offsets and ends come from librdkafka's statistics (`statistics.interval.ms`, once a
//! second), which every client of the process reports; an end is the furthest known —
//! the last fetch response's high watermark, or what this process's producers wrote
//! there — since some brokers (tansu) under-report it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::Statistics;
use serde::{Deserialize, Serialize};

/// Everything this process's groups report, by vertex.
#[derive(Debug, Default)]
pub struct Progress {
    groups: Mutex<BTreeMap<String, Group>>,
}

#[derive(Debug)]
struct Group {
    partitions: Vec<PartitionReport>,
    read: BTreeMap<String, u64>,
    /// Since when work has waited to be committed (`None`: all committed).
    waiting_since: Option<Instant>,
    /// When waiting that long, it is stuck.
    stuck_after: Duration,
    warned: bool,
}

/// One input partition of a vertex's group, as held by this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReport {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (`-1`: none yet).
    pub committed: i64,
    /// The next offset this process will read (`-1`: not fetching yet).
    pub fetched: i64,
    /// The partition's end (the offset after its last record).
    pub end: i64,
    /// Records after the committed offset (after the start, if nothing is committed).
    pub lag: i64,
}

/// A vertex's group in status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupReport {
    /// The vertex it feeds.
    pub vertex: String,
    /// The partitions this process holds.
    pub partitions: Vec<PartitionReport>,
    /// Their lag together.
    pub lag: i64,
    /// Records read per input topic.
    pub read: BTreeMap<String, u64>,
    /// How long work has waited to be committed (absent: all committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncommitted_ms: Option<u64>,
    /// Waiting longer than a commit could take: a transaction or commit is stuck.
    #[serde(default)]
    pub stuck: bool,
}

impl Progress {
    /// Vertex `vertex` joins, committing within `stuck_after` when healthy.
    pub fn register(&self, vertex: &str, stuck_after: Duration) {
        self.lock().insert(
            vertex.to_owned(),
            Group {
                partitions: Vec::new(),
                read: BTreeMap::new(),
                waiting_since: None,
                stuck_after,
                warned: false,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `vertex` read `n` records of `topic`.
    pub fn read(&self, vertex: &str, topic: &str, n: usize) {
        if let Some(g) = self.lock().get_mut(vertex) {
            match g.read.get_mut(topic) {
                Some(read) => *read += n as u64,
                None => {
                    g.read.insert(topic.to_owned(), n as u64);
                }
            }
        }
    }

    /// Whether `vertex` has work waiting to be committed; warns once when it has waited
    /// past its limit.
    pub fn waiting(&self, vertex: &str, waiting: bool) {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(vertex) else { return };
        if !waiting {
            if g.warned {
                tracing::info!("{vertex}: commits go through again");
            }
            g.waiting_since = None;
            g.warned = false;
            return;
        }
        let since = *g.waiting_since.get_or_insert_with(Instant::now);
        if !g.warned && since.elapsed() > g.stuck_after {
            g.warned = true;
            tracing::warn!(
                "{vertex}: nothing committed for {}s while work waits: its transaction or commit is stuck (see `kafka.inputs` in /status)",
                since.elapsed().as_secs()
            );
        }
    }

    /// Takes a consumer's statistics: the partitions it is assigned now.
    pub fn consumer_stats(&self, vertex: &str, stats: &Statistics, produced: impl Fn(&str, i32) -> i64) {
        let mut partitions: Vec<PartitionReport> = stats
            .topics
            .values()
            .flat_map(|t| t.partitions.values().map(move |p| (t.topic.as_str(), p)))
            .filter(|(_, p)| p.partition >= 0 && p.desired)
            .map(|(topic, p)| {
                let end = p.hi_offset.max(produced(topic, p.partition));
                let from = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    p.lo_offset.max(0)
                };
                PartitionReport {
                    topic: topic.to_owned(),
                    partition: p.partition,
                    committed: p.committed_offset.max(-1),
                    fetched: p.app_offset.max(-1),
                    end,
                    lag: (end - from).max(0),
                }
            })
            .collect();
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        if let Some(g) = self.lock().get_mut(vertex) {
            g.partitions = partitions;
        }
    }

    /// Every group's report.
    pub fn report(&self) -> Vec<GroupReport> {
        self.lock()
            .iter()
            .map(|(vertex, g)| {
                let waited = g.waiting_since.map(|s| s.elapsed());
                GroupReport {
                    vertex: vertex.clone(),
                    lag: g.partitions.iter().map(|p| p.lag).sum(),
                    partitions: g.partitions.clone(),
                    read: g.read.clone(),
                    uncommitted_ms: waited.map(|w| w.as_millis() as u64),
                    stuck: waited.is_some_and(|w| w > g.stuck_after),
                }
            })
            .collect()
    }
}
