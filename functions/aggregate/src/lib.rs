//! Group-by aggregation configured from the manifest, kept in a host store so it survives
//! traps and is shared by replicas. Input: JSON objects. At the end of input, one JSON
//! object per group: the group-by fields, then each aggregate (`count`, `sum_<field>`,
//! `min_<field>`, `max_<field>`, `avg_<field>`, `count_distinct_<field>`).
//!
//! With `time_buckets` (any of `hour`, `day`, `month`), groups are also split by event
//! time — the message timestamp, in UTC — once per granularity: a message counts in its
//! hour, its day and its month, and each row says which with `bucket` (`hour`, …) and
//! `start` (`2026-11-22T10`, `2026-11-22`, `2026-11`).
//!
//! Store layout (integers as 8-byte counters): `<group>\0count`, `<group>\0sum\0<field>`,
//! `<group>\0min\0<field>`, `<group>\0max\0<field>`, `<group>\0distinct\0<field>`, and one
//! marker per distinct value, `<group>\0seen\0<field>\0<value>`, and `group\0<group>` for
//! every group. `<group>` is the JSON array of the group-by values.
//!
//! Results come from the store, not from guest memory: at `finish` (when every replica has
//! written all it will), each replica emits the groups the store holds that fall to it by
//! a hash of the group, so every group is emitted once, by one replica, with its totals
//! from all of them — also after a restart that resumed from a checkpoint, and
//! cumulatively over runs when the store is durable.
use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, Timelike};
use flowhost_sdk::prelude::*;
use flowhost_sdk::state::{IncrBatch, counter};
use serde::Deserialize;
use serde_json::{Map, Value};

/// An aggregate function.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Messages in the group.
    Count,
    /// Sum of an integer field.
    Sum,
    /// Smallest value of an integer field.
    Min,
    /// Largest value of an integer field.
    Max,
    /// Mean of an integer field.
    Avg,
    /// Number of different values of a field.
    CountDistinct,
}

/// One aggregate of the config.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// The function.
    #[serde(rename = "fn")]
    pub function: Function,
    /// The field it reads (all but `count`).
    pub field: Option<String>,
}

/// `config` of the node.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The store to aggregate in (granted `rw`).
    pub store: String,
    /// Fields whose values form the group.
    pub group_by: Vec<String>,
    /// What to compute per group.
    pub aggregates: Vec<Aggregate>,
    /// Event-time buckets to split every group by.
    #[serde(default)]
    pub time_buckets: Vec<Bucket>,
}

/// An event-time bucket, in UTC.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// `2026-11-22T10`.
    Hour,
    /// `2026-11-22`.
    Day,
    /// `2026-11`.
    Month,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Month => "month",
        }
    }

    /// The bucket holding `millis` since the epoch.
    fn start(self, millis: i64) -> Result<String, NodeError> {
        let t = chrono::DateTime::from_timestamp_millis(millis)
            .ok_or_else(|| NodeError::invalid_input(format!("timestamp {millis} is out of range")))?;
        let (y, m, d, h) = (t.year(), t.month(), t.day(), t.hour());
        Ok(match self {
            Bucket::Hour => format!("{y:04}-{m:02}-{d:02}T{h:02}"),
            Bucket::Day => format!("{y:04}-{m:02}-{d:02}"),
            Bucket::Month => format!("{y:04}-{m:02}"),
        })
    }
}

/// The node: a batch's updates are gathered, then written in `end_batch`.
pub struct Aggregator {
    store: Store,
    config: AggregateConfig,
    /// Groups this instance has recorded under `group\0<group>`.
    groups: BTreeSet<String>,
    /// Groups to record at the end of the batch.
    new_groups: Vec<String>,
    increments: IncrBatch,
    extremes: BTreeMap<(String, &'static str, String), i64>,
    distinct: BTreeSet<(String, String, String)>,
}

/// A hash that is the same in every replica and every build (FNV-1a, 64 bits).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

impl Aggregator {
    fn field<'v>(msg: &'v Map<String, Value>, field: &str) -> Result<&'v Value, NodeError> {
        msg.get(field)
            .ok_or_else(|| NodeError::invalid_input(format!("no field `{field}`")))
    }

    fn int(msg: &Map<String, Value>, field: &str) -> Result<i64, NodeError> {
        let v = Self::field(msg, field)?;
        v.as_i64()
            .ok_or_else(|| NodeError::invalid_input(format!("`{field}` is not an integer: {v}")))
    }

    /// The groups a message with these group-by values counts in: one, or one per time bucket.
    fn groups_of(&self, values: Vec<Value>, timestamp: Option<i64>) -> Result<Vec<String>, NodeError> {
        let json = |v: &Vec<Value>| serde_json::to_string(v).map_err(|e| NodeError::fatal(e.to_string()));
        if self.config.time_buckets.is_empty() {
            return Ok(vec![json(&values)?]);
        }
        let at =
            timestamp.ok_or_else(|| NodeError::invalid_input("time buckets need a message timestamp"))?;
        self.config
            .time_buckets
            .iter()
            .map(|b| {
                let mut v = values.clone();
                v.extend([Value::from(b.name()), Value::from(b.start(at)?)]);
                json(&v)
            })
            .collect()
    }

    /// The names of a group's values in an output row.
    fn group_fields(&self) -> impl Iterator<Item = String> + '_ {
        let buckets = (!self.config.time_buckets.is_empty()).then_some(["bucket", "start"]);
        self.config
            .group_by
            .iter()
            .cloned()
            .chain(buckets.into_iter().flatten().map(str::to_owned))
    }

    fn counter(&self, parts: &[&str]) -> Result<Option<i64>, NodeError> {
        Ok(self.store.get(&key(parts))?.as_deref().and_then(counter))
    }
}

#[node]
impl Node for Aggregator {
    type Config = AggregateConfig;

    fn init(config: AggregateConfig) -> Result<Self, NodeError> {
        if let Some(a) = config
            .aggregates
            .iter()
            .find(|a| a.function != Function::Count && a.field.is_none())
        {
            return Err(NodeError::fatal(format!(
                "aggregate {:?} needs a `field`",
                a.function
            )));
        }
        Ok(Aggregator {
            store: Store::open(&config.store)?,
            config,
            groups: BTreeSet::new(),
            new_groups: Vec::new(),
            increments: IncrBatch::default(),
            extremes: BTreeMap::new(),
            distinct: BTreeSet::new(),
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, _out: &mut Output<'a>) -> Result<(), NodeError> {
        let Value::Object(obj) = msg.json::<Value>()? else {
            return Err(NodeError::invalid_input("not a JSON object"));
        };
        let values: Vec<Value> = self
            .config
            .group_by
            .iter()
            .map(|f| Self::field(&obj, f).cloned())
            .collect::<Result<_, _>>()?;
        let groups = self.groups_of(values, msg.timestamp())?;
        // Read every field before changing anything, so a bad message changes nothing.
        let mut sums = Vec::new();
        let mut extremes = Vec::new();
        let mut distinct = Vec::new();
        for a in &self.config.aggregates {
            let field = a.field.clone().unwrap_or_default();
            match a.function {
                Function::Count => {}
                Function::Sum | Function::Avg => sums.push((Self::int(&obj, &field)?, field)),
                Function::Min => extremes.push(("min", Self::int(&obj, &field)?, field)),
                Function::Max => extremes.push(("max", Self::int(&obj, &field)?, field)),
                Function::CountDistinct => distinct.push((Self::field(&obj, &field)?.to_string(), field)),
            }
        }
        // `sum` and `avg` of one field share one sum; `avg` needs the count.
        sums.sort_by(|a, b| a.1.cmp(&b.1));
        sums.dedup_by(|a, b| a.1 == b.1);
        let counts = self
            .config
            .aggregates
            .iter()
            .any(|a| matches!(a.function, Function::Count | Function::Avg));
        for group in groups {
            if counts {
                self.increments.add(&key(&[&group, "count"]), 1);
            }
            for (value, field) in &sums {
                self.increments.add(&key(&[&group, "sum", field]), *value);
            }
            for (which, value, field) in &extremes {
                let slot = self
                    .extremes
                    .entry((group.clone(), which, field.clone()))
                    .or_insert(*value);
                *slot = if *which == "min" {
                    (*slot).min(*value)
                } else {
                    (*slot).max(*value)
                };
            }
            for (value, field) in &distinct {
                self.distinct
                    .insert((group.clone(), field.clone(), value.clone()));
            }
            if self.groups.insert(group.clone()) {
                self.new_groups.push(group);
            }
        }
        Ok(())
    }

    fn end_batch(&mut self, _out: &mut Output<'_>) -> Result<(), NodeError> {
        for group in std::mem::take(&mut self.new_groups) {
            self.store.set(&key(&["group", &group]), b"")?;
        }
        self.increments.flush(&self.store)?;
        for ((group, which, field), value) in std::mem::take(&mut self.extremes) {
            let k = key(&[&group, which, &field]);
            // Compare-and-swap until ours is not better, whatever other replicas do.
            loop {
                let current = self.store.get(&k)?;
                let better = match current.as_deref().and_then(counter) {
                    None => true,
                    Some(c) => {
                        if which == "min" {
                            value < c
                        } else {
                            value > c
                        }
                    }
                };
                if !better
                    || self
                        .store
                        .compare_and_swap(&k, current.as_deref(), Some(&value.to_le_bytes()))?
                {
                    break;
                }
            }
        }
        for (group, field, value) in std::mem::take(&mut self.distinct) {
            if self
                .store
                .compare_and_swap(&key(&[&group, "seen", &field, &value]), None, Some(b"1"))?
            {
                self.increments.add(&key(&[&group, "distinct", &field]), 1);
            }
        }
        self.increments.flush(&self.store)?;
        Ok(())
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        let me = flowhost_sdk::replica();
        let mine = |group: &str| fnv1a(group.as_bytes()) % u64::from(me.count.max(1)) == u64::from(me.index);
        let marked = self.store.scan(b"group\0", u32::MAX)?;
        let groups = marked
            .iter()
            .filter_map(|(k, _)| std::str::from_utf8(&k[6..]).ok());
        for group in groups.filter(|g| mine(g)) {
            let values: Vec<Value> =
                serde_json::from_str(group).map_err(|e| NodeError::fatal(e.to_string()))?;
            let mut row: Map<String, Value> = self.group_fields().zip(values).collect();
            let count = self.counter(&[group, "count"])?.unwrap_or(0);
            for a in &self.config.aggregates {
                let field = a.field.as_deref().unwrap_or("");
                let (name, value) = match a.function {
                    Function::Count => ("count".to_owned(), Value::from(count)),
                    Function::Sum => (
                        format!("sum_{field}"),
                        Value::from(self.counter(&[group, "sum", field])?.unwrap_or(0)),
                    ),
                    Function::Min => (
                        format!("min_{field}"),
                        self.counter(&[group, "min", field])?
                            .map_or(Value::Null, Value::from),
                    ),
                    Function::Max => (
                        format!("max_{field}"),
                        self.counter(&[group, "max", field])?
                            .map_or(Value::Null, Value::from),
                    ),
                    Function::Avg => {
                        let sum = self.counter(&[group, "sum", field])?.unwrap_or(0);
                        let avg = if count > 0 {
                            Value::from(sum as f64 / count as f64)
                        } else {
                            Value::Null
                        };
                        (format!("avg_{field}"), avg)
                    }
                    Function::CountDistinct => (
                        format!("count_distinct_{field}"),
                        Value::from(self.counter(&[group, "distinct", field])?.unwrap_or(0)),
                    ),
                };
                row.insert(name, value);
            }
            out.send(Record::new(Json(Value::Object(row))).key(group.as_bytes().to_vec()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::testing::{Harness, TestMessage, json};

    /// What `finish` emits, parsed.
    fn finish_rows(node: &mut Harness<Aggregator>) -> Vec<Value> {
        let texts = node.finish().unwrap().texts();
        texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect()
    }

    fn config(store: &str) -> serde_json::Value {
        json!({
            "store": store,
            "group_by": ["country"],
            "aggregates": [
                { "fn": "count" },
                { "fn": "sum", "field": "cents" },
                { "fn": "avg", "field": "cents" },
                { "fn": "min", "field": "cents" },
                { "fn": "max", "field": "cents" },
                { "fn": "count_distinct", "field": "who" },
            ],
        })
    }

    #[test]
    fn aggregates_per_group_across_batches() {
        let mut node = Harness::<Aggregator>::new(config("agg1")).unwrap();
        node.process([
            r#"{"country":"DE","who":"ann","cents":100}"#,
            r#"{"country":"FR","who":"bob","cents":50}"#,
            r#"{"country":"DE","who":"ann","cents":300}"#,
        ])
        .unwrap();
        let out = node
            .process([
                r#"{"country":"DE","who":"cy","cents":-10}"#,
                r#"{"country":"DE"}"#,
            ])
            .unwrap();
        assert_eq!(
            out.errors.len(),
            1,
            "a message without the fields is invalid input"
        );
        let rows = finish_rows(&mut node);
        assert_eq!(
            rows,
            [
                json!({"country":"DE","count":3,"sum_cents":390,"avg_cents":130.0,"min_cents":-10,"max_cents":300,"count_distinct_who":2}),
                json!({"country":"FR","count":1,"sum_cents":50,"avg_cents":50.0,"min_cents":50,"max_cents":50,"count_distinct_who":1}),
            ]
        );
    }

    #[test]
    fn time_buckets_split_each_group_by_hour_day_and_month() {
        let mut node = Harness::<Aggregator>::new(json!({
            "store": "agg-time",
            "group_by": ["who"],
            "aggregates": [{ "fn": "count" }],
            "time_buckets": ["hour", "day", "month"],
        }))
        .unwrap();
        let at = |ms: i64| TestMessage::new(r#"{"who":"ann"}"#).timestamp(ms);
        // 2026-11-22T10:59:59.999Z, 2026-11-22T11:00:00Z, 2026-11-23T00:30:00Z
        let out = node
            .process([
                at(1_795_345_199_999),
                at(1_795_345_200_000),
                at(1_795_393_800_000),
            ])
            .unwrap();
        assert!(out.errors.is_empty());
        let untimed = node.process([r#"{"who":"ann"}"#]).unwrap();
        assert_eq!(
            untimed.errors[0].1.message,
            "time buckets need a message timestamp"
        );
        let rows = finish_rows(&mut node);
        let row = |bucket: &str, start: &str, count: i64| json!({"who": "ann", "bucket": bucket, "start": start, "count": count});
        assert_eq!(
            rows,
            [
                row("day", "2026-11-22", 2),
                row("day", "2026-11-23", 1),
                row("hour", "2026-11-22T10", 1),
                row("hour", "2026-11-22T11", 1),
                row("hour", "2026-11-23T00", 1),
                row("month", "2026-11", 3),
            ]
        );
    }

    #[test]
    fn replicas_emit_every_group_once_with_totals_from_all() {
        let config = json!({ "store": "agg-rep", "group_by": ["k"], "aggregates": [{ "fn": "count" }] });
        let mut a = Harness::<Aggregator>::replica(config.clone(), 0, 2).unwrap();
        let mut b = Harness::<Aggregator>::replica(config, 1, 2).unwrap();
        let keys = ["p", "q", "r", "s", "t", "u"];
        a.process(keys.map(|k| format!(r#"{{"k":"{k}"}}"#))).unwrap();
        b.process(keys.map(|k| format!(r#"{{"k":"{k}"}}"#))).unwrap();
        let (from_a, from_b) = (a.finish().unwrap().texts(), b.finish().unwrap().texts());
        assert!(
            !from_a.is_empty() && !from_b.is_empty(),
            "both replicas emit a share"
        );
        let mut all: Vec<String> = from_a.into_iter().chain(from_b).collect();
        all.sort();
        let expected: Vec<String> = keys
            .iter()
            .map(|k| format!(r#"{{"count":2,"k":"{k}"}}"#))
            .collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn a_function_without_its_field_is_refused() {
        let err = Harness::<Aggregator>::new(
            json!({ "store": "x", "group_by": [], "aggregates": [{ "fn": "sum" }] }),
        )
        .err()
        .unwrap();
        assert_eq!(err.message, "aggregate Sum needs a `field`");
    }
}
