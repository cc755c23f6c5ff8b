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
//!
//! With `window` (`{ kind = "tumbling", size_ms }`, `{ kind = "hopping", size_ms,
//! slide_ms }` or `{ kind = "session", gap_ms }`), groups are split by event-time window
//! instead, and each window's rows
//! are emitted once the node's watermark passes the window's end, while the input still
//! flows: one row per group, with `window_start` and `window_end` (milliseconds), its
//! timestamp the window's last millisecond. A record for a window the watermark has
//! passed by less than `allowed_lateness_ms` updates that window's row (the row is
//! emitted again, with the new totals); one later than that for every window it falls in
//! goes to the output port `late`, unchanged. A window's state is deleted once it can
//! change no more (at its end plus the lateness). Each replica aggregates and emits what
//! reached it, under keys of its own: route by `key-hash` on the group-by fields for one
//! row per group and window (round-robin gives a row per replica that saw the group).
//! Window keys: `w\0<start>\0<end>\0<replica>\0<group>…`, markers under `group\0w\0…`.
//!
//! A session is one group's: a record at `t` opens `[t, t + gap_ms)`, and sessions it
//! overlaps merge into one (their state moves into it: counts and sums add, minima and
//! maxima combine, distinct values are counted once); a session closes when the
//! watermark passes its end, i.e. `gap_ms` after its last record. A late record within
//! the lateness that extends an emitted session reopens it: it is emitted again when the
//! watermark passes its new end. Each group's open sessions: `sessions\0<replica>\0<group>`.
use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, Timelike};
use flowhost_sdk::combine::Combiner;
use flowhost_sdk::prelude::*;
use flowhost_sdk::state::{IncrBatch, counter};
use flowhost_sdk::time::{TimeDomain, Timer, Window, Windows, watermark};
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
    /// Event-time windows to emit each group's results per, as the watermark passes them.
    pub window: Option<WindowConfig>,
    /// How long after a window's end a record still updates it (milliseconds).
    #[serde(default)]
    pub allowed_lateness_ms: i64,
}

/// `window` of the config.
#[derive(Deserialize, Clone, Copy, Debug)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowConfig {
    /// Back-to-back windows of `size_ms`.
    Tumbling {
        /// Length, in milliseconds.
        size_ms: i64,
    },
    /// Windows of `size_ms` every `slide_ms`.
    Hopping {
        /// Length, in milliseconds.
        size_ms: i64,
        /// Distance between starts, in milliseconds.
        slide_ms: i64,
    },
    /// A window per group and burst of records less than `gap_ms` apart.
    Session {
        /// The quiet time that ends a session, in milliseconds.
        gap_ms: i64,
    },
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
    /// This batch's counts and sums per store key, folded before they reach the store
    /// (one increment per key and batch, however many records share it).
    partials: Combiner<i64>,
    extremes: BTreeMap<(String, &'static str, String), i64>,
    distinct: BTreeSet<(String, String, String)>,
    /// With `window`: how records fall into windows.
    windows: Option<Windows>,
    /// Windows this instance has set a closing timer for.
    timed: BTreeSet<Window>,
    /// Groups of windows already emitted that this batch changed: emitted again.
    updates: BTreeSet<(Window, String)>,
    /// Session windows: each group's open sessions, as read from and written back to
    /// the store (`sessions\0<replica>\0<group>`), and those this batch changed.
    sessions: BTreeMap<String, Vec<Window>>,
    touched: BTreeSet<String>,
    /// Sessions merged into others this batch (old group, new group), moved in order
    /// once the batch's writes are flushed.
    moves: Vec<(String, String)>,
}

/// The prefix of window `w`'s keys written by this replica.
fn window_prefix(w: Window) -> String {
    format!("w\0{}\0{}\0{}\0", w.start, w.end, flowhost_sdk::replica().index)
}

/// Timer keys: `close\0<start>\0<end>` emits the window, `free\0…` deletes its state;
/// a session's add `\0<group>` (a session is one group's).
fn window_timer(what: &str, w: Window) -> Vec<u8> {
    format!("{what}\0{}\0{}", w.start, w.end).into_bytes()
}

fn session_timer(what: &str, w: Window, group: &str) -> Vec<u8> {
    format!("{what}\0{}\0{}\0{group}", w.start, w.end).into_bytes()
}

fn parse_window_timer(key: &[u8]) -> Option<(&str, Window, Option<&str>)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.splitn(4, '\0');
    let what = parts.next()?;
    let start = parts.next()?.parse().ok()?;
    let end = parts.next()?.parse().ok()?;
    Some((what, Window { start, end }, parts.next()))
}

fn sessions_key(group: &str) -> Vec<u8> {
    format!("sessions\0{}\0{group}", flowhost_sdk::replica().index).into_bytes()
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

    /// With session windows: the session group a record of `group` at `at` counts in
    /// (none: too late), merging the sessions it bridges. The merged session's close
    /// timer replaces theirs; their state moves into it at the end of the batch.
    fn session_group(
        &mut self,
        gap: i64,
        group: &str,
        at: i64,
        out: &mut Output<'_>,
    ) -> Result<Option<String>, NodeError> {
        let wm = watermark();
        let lateness = self.config.allowed_lateness_ms;
        if !self.sessions.contains_key(group) {
            let held: Vec<(i64, i64)> = match self.store.get(&sessions_key(group))? {
                Some(v) => serde_json::from_slice(&v).map_err(|e| NodeError::fatal(e.to_string()))?,
                None => Vec::new(),
            };
            let held = held
                .into_iter()
                .map(|(start, end)| Window { start, end })
                .collect();
            self.sessions.insert(group.to_owned(), held);
        }
        let open = self.sessions.get_mut(group).expect("loaded");
        let mine = Window {
            start: at,
            end: at.saturating_add(gap),
        };
        let (bridged, rest): (Vec<Window>, Vec<Window>) = open
            .iter()
            .partition(|s| mine.start < s.end && s.start < mine.end);
        let merged = bridged.iter().fold(mine, |m, s| Window {
            start: m.start.min(s.start),
            end: m.end.max(s.end),
        });
        if wm.is_some_and(|wm| wm >= merged.end.saturating_add(lateness)) {
            return Ok(None);
        }
        let name = |w: Window| format!("{}{group}", window_prefix(w));
        for old in &bridged {
            out.delete_timer(
                TimeDomain::EventTime,
                old.end,
                &session_timer("close", *old, group),
            );
            out.delete_timer(
                TimeDomain::EventTime,
                old.end.saturating_add(lateness),
                &session_timer("free", *old, group),
            );
            if *old != merged {
                self.moves.push((name(*old), name(merged)));
            }
        }
        if wm.is_some_and(|wm| wm >= merged.end) {
            // Emitted already: emitted again, freed later.
            self.updates.insert((merged, name(merged)));
            let until = merged.end.saturating_add(lateness);
            out.set_timer(
                TimeDomain::EventTime,
                until,
                &session_timer("free", merged, group),
            );
        } else {
            out.set_timer(
                TimeDomain::EventTime,
                merged.end,
                &session_timer("close", merged, group),
            );
        }
        *open = rest;
        open.push(merged);
        open.sort();
        self.touched.insert(group.to_owned());
        Ok(Some(name(merged)))
    }

    /// Moves session `from`'s state into session `to` (both full group names).
    fn move_session(&mut self, from: &str, to: &str) -> Result<(), NodeError> {
        let prefix = format!("{from}\0");
        for (k, v) in self.store.scan(prefix.as_bytes(), u32::MAX)? {
            let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let target = key(&[to, &rest]);
            let value = counter(&v);
            match rest.split('\0').next() {
                Some("count" | "sum") => {
                    self.store.incr(&target, value.unwrap_or(0))?;
                }
                Some(which @ ("min" | "max")) => {
                    let mine = self.store.get(&target)?.as_deref().and_then(counter);
                    let best = match (mine, value) {
                        (Some(a), Some(b)) if which == "min" => a.min(b),
                        (Some(a), Some(b)) => a.max(b),
                        (a, b) => a.or(b).unwrap_or(0),
                    };
                    self.store.set(&target, &best.to_le_bytes())?;
                }
                // A distinct value new to the target counts there once.
                Some("seen") if self.store.compare_and_swap(&target, None, Some(b"1"))? => {
                    let field = rest.split('\0').nth(1).unwrap_or("");
                    self.store.incr(&key(&[to, "distinct", field]), 1)?;
                }
                // `distinct` counts are recounted from the markers; a marker the target
                // had already adds nothing.
                _ => {}
            }
            self.store.delete(&k)?;
        }
        self.store.delete(&key(&["group", from]))?;
        self.store.set(&key(&["group", to]), b"")?;
        self.groups.remove(from);
        self.groups.insert(to.to_owned());
        Ok(())
    }

    /// Deletes session `w` of `group`: its state and its place in the group's sessions.
    fn free_session(&mut self, w: Window, group: &str) -> Result<(), NodeError> {
        let name = format!("{}{group}", window_prefix(w));
        let prefix = format!("{name}\0");
        for (k, _) in self.store.scan(prefix.as_bytes(), u32::MAX)? {
            self.store.delete(&k)?;
        }
        self.store.delete(&key(&["group", &name]))?;
        self.groups.remove(&name);
        let held: Vec<(i64, i64)> = match self.store.get(&sessions_key(group))? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| NodeError::fatal(e.to_string()))?,
            None => Vec::new(),
        };
        let left: Vec<(i64, i64)> = held
            .into_iter()
            .filter(|&(s, e)| (s, e) != (w.start, w.end))
            .collect();
        if left.is_empty() {
            self.store.delete(&sessions_key(group))?;
        } else {
            let json = serde_json::to_vec(&left).map_err(|e| NodeError::fatal(e.to_string()))?;
            self.store.set(&sessions_key(group), &json)?;
        }
        self.sessions.remove(group);
        Ok(())
    }

    /// With `window`: the window groups a record at `at` counts in (none: it is too late
    /// for all of them); sets the closing timer of each new window, and notes the groups
    /// of windows already emitted, to emit again.
    fn window_groups(&mut self, windows: Windows, group: &str, at: i64, out: &mut Output<'_>) -> Vec<String> {
        let wm = watermark();
        let lateness = self.config.allowed_lateness_ms;
        let mut groups = Vec::new();
        for w in windows.assign(at) {
            if wm.is_some_and(|wm| wm >= w.end.saturating_add(lateness)) {
                continue;
            }
            let g = format!("{}{group}", window_prefix(w));
            if wm.is_some_and(|wm| wm >= w.end) {
                // Emitted already (or never opened): emitted again, freed later.
                self.updates.insert((w, g.clone()));
                out.set_timer(
                    TimeDomain::EventTime,
                    w.end.saturating_add(lateness),
                    &window_timer("free", w),
                );
            } else if self.timed.insert(w) {
                out.set_timer(TimeDomain::EventTime, w.end, &window_timer("close", w));
            }
            groups.push(g);
        }
        groups
    }

    /// The output row of `group` (as stored: a window's prefix, then the JSON values).
    fn row(&self, group: &str) -> Result<Map<String, Value>, NodeError> {
        let (window, json) = match group.strip_prefix("w\0") {
            Some(rest) => {
                let mut parts = rest.splitn(4, '\0');
                let mut num = || parts.next().and_then(|p| p.parse::<i64>().ok());
                let (start, end) = (num(), num());
                let _replica = parts.next();
                (start.zip(end), parts.next().unwrap_or("[]"))
            }
            None => (None, group),
        };
        let values: Vec<Value> = serde_json::from_str(json).map_err(|e| NodeError::fatal(e.to_string()))?;
        let mut row: Map<String, Value> = self.group_fields().zip(values).collect();
        if let Some((start, end)) = window {
            row.insert("window_start".into(), Value::from(start));
            row.insert("window_end".into(), Value::from(end));
        }
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
        Ok(row)
    }

    /// Emits `group`'s row of window `w`.
    fn emit_window_row(&self, w: Window, group: &str, out: &mut Output<'_>) -> Result<(), NodeError> {
        let row = self.row(group)?;
        let record = Record::new(Json(Value::Object(row)))
            .key(group.as_bytes().to_vec())
            .timestamp(w.end.saturating_sub(1));
        out.send(record)
    }

    /// The groups this replica holds for window `w`.
    fn window_groups_held(&self, w: Window) -> Result<Vec<String>, NodeError> {
        let marker = format!("group\0{}", window_prefix(w));
        Ok(self
            .store
            .scan(marker.as_bytes(), u32::MAX)?
            .into_iter()
            .filter_map(|(k, _)| String::from_utf8(k[6..].to_vec()).ok())
            .collect())
    }

    /// Deletes everything this replica holds for window `w`.
    fn free_window(&mut self, w: Window) -> Result<(), NodeError> {
        let prefix = window_prefix(w);
        let marker = format!("group\0{prefix}");
        for p in [prefix.as_bytes(), marker.as_bytes()] {
            for (k, _) in self.store.scan(p, u32::MAX)? {
                self.store.delete(&k)?;
            }
        }
        self.timed.remove(&w);
        for group in self
            .groups
            .iter()
            .filter(|g| g.starts_with(&prefix))
            .cloned()
            .collect::<Vec<_>>()
        {
            self.groups.remove(&group);
        }
        Ok(())
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
        if config.window.is_some() && !config.time_buckets.is_empty() {
            return Err(NodeError::fatal(
                "`window` and `time_buckets` do not go together: pick one",
            ));
        }
        let windows = match config.window {
            Some(WindowConfig::Tumbling { size_ms }) if size_ms > 0 => Some(Windows::tumbling(size_ms)),
            Some(WindowConfig::Hopping { size_ms, slide_ms })
                if size_ms > 0 && slide_ms > 0 && slide_ms <= size_ms =>
            {
                Some(Windows::hopping(size_ms, slide_ms))
            }
            Some(WindowConfig::Session { gap_ms }) if gap_ms > 0 => Some(Windows::session(gap_ms)),
            Some(w) => {
                return Err(NodeError::fatal(format!(
                    "window {w:?}: sizes must be positive, and a slide at most the size"
                )));
            }
            None => None,
        };
        if config.allowed_lateness_ms < 0 {
            return Err(NodeError::fatal("allowed_lateness_ms must not be negative"));
        }
        Ok(Aggregator {
            windows,
            timed: BTreeSet::new(),
            updates: BTreeSet::new(),
            sessions: BTreeMap::new(),
            touched: BTreeSet::new(),
            moves: Vec::new(),
            store: Store::open(&config.store)?,
            config,
            groups: BTreeSet::new(),
            new_groups: Vec::new(),
            increments: IncrBatch::default(),
            partials: Combiner::new(),
            extremes: BTreeMap::new(),
            distinct: BTreeSet::new(),
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        let Value::Object(obj) = msg.json::<Value>()? else {
            return Err(NodeError::invalid_input("not a JSON object"));
        };
        let values: Vec<Value> = self
            .config
            .group_by
            .iter()
            .map(|f| Self::field(&obj, f).cloned())
            .collect::<Result<_, _>>()?;
        let at = match self.windows {
            Some(_) => Some(
                msg.timestamp()
                    .ok_or_else(|| NodeError::invalid_input("windows need a message timestamp"))?,
            ),
            None => None,
        };
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
        let groups = match (self.windows, at) {
            (Some(windows), Some(at)) => {
                let group = serde_json::to_string(&values).map_err(|e| NodeError::fatal(e.to_string()))?;
                let groups = match windows {
                    Windows::Session { gap } => {
                        self.session_group(gap, &group, at, out)?.into_iter().collect()
                    }
                    _ => self.window_groups(windows, &group, at, out),
                };
                if groups.is_empty() {
                    // Too late for every window it falls in.
                    return out.forward_to("late", msg);
                }
                groups
            }
            _ => self.groups_of(values, msg.timestamp())?,
        };
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
                self.partials.add(&key(&[&group, "count"]), 1);
            }
            for (value, field) in &sums {
                self.partials.add(&key(&[&group, "sum", field]), *value);
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

    fn end_batch(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        for group in std::mem::take(&mut self.new_groups) {
            self.store.set(&key(&["group", &group]), b"")?;
        }
        for (k, delta) in self.partials.drain() {
            self.increments.add(&k, delta);
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
        // Sessions merged this batch: their state moves into the merged one, in order.
        for (from, to) in std::mem::take(&mut self.moves) {
            self.move_session(&from, &to)?;
        }
        for group in std::mem::take(&mut self.touched) {
            let held: Vec<(i64, i64)> = self.sessions[&group].iter().map(|w| (w.start, w.end)).collect();
            let json = serde_json::to_vec(&held).map_err(|e| NodeError::fatal(e.to_string()))?;
            self.store.set(&sessions_key(&group), &json)?;
        }
        for (w, group) in std::mem::take(&mut self.updates) {
            // (A session merged into a later one later in the batch is emitted as that.)
            let merged_away = matches!(self.windows, Some(Windows::Session { .. }))
                && !self.sessions.values().flatten().any(|s| *s == w);
            if !merged_away {
                self.emit_window_row(w, &group, out)?;
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, timer: &Timer<'_>, out: &mut Output<'_>) -> Result<(), NodeError> {
        let Some((what, w, session)) = parse_window_timer(timer.key) else {
            return Ok(());
        };
        if let Some(group) = session {
            if what == "close" {
                self.emit_window_row(w, &format!("{}{group}", window_prefix(w)), out)?;
                if self.config.allowed_lateness_ms > 0 {
                    let until = w.end.saturating_add(self.config.allowed_lateness_ms);
                    out.set_timer(TimeDomain::EventTime, until, &session_timer("free", w, group));
                    return Ok(());
                }
            }
            return self.free_session(w, group);
        }
        if what == "close" {
            for group in self.window_groups_held(w)? {
                self.emit_window_row(w, &group, out)?;
            }
            if self.config.allowed_lateness_ms > 0 {
                let until = w.end.saturating_add(self.config.allowed_lateness_ms);
                out.set_timer(TimeDomain::EventTime, until, &window_timer("free", w));
                return Ok(());
            }
        }
        self.free_window(w)
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), NodeError> {
        if self.windows.is_some() {
            // Every window closed when the input ended (the watermark reached its end).
            return Ok(());
        }
        let me = flowhost_sdk::replica();
        let mine = |group: &str| fnv1a(group.as_bytes()) % u64::from(me.count.max(1)) == u64::from(me.index);
        let marked = self.store.scan(b"group\0", u32::MAX)?;
        let groups = marked
            .iter()
            .filter_map(|(k, _)| std::str::from_utf8(&k[6..]).ok())
            .filter(|g| !g.starts_with("w\0"));
        for group in groups.filter(|g| mine(g)) {
            let row = self.row(group)?;
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
    fn windows_emit_once_the_watermark_passes_update_within_lateness_and_free_their_state() {
        let mut node = Harness::<Aggregator>::with_ports(
            json!({
                "store": "agg-win",
                "group_by": ["who"],
                "aggregates": [{ "fn": "count" }, { "fn": "sum", "field": "n" }],
                "window": { "kind": "tumbling", "size_ms": 10 },
                "allowed_lateness_ms": 5,
            }),
            &["in"],
            &["out", "late"],
        )
        .unwrap();
        let at = |who: &str, n: i64, ms: i64| {
            TestMessage::new(format!(r#"{{"who":"{who}","n":{n}}}"#)).timestamp(ms)
        };
        let rows = |out: &flowhost_sdk::testing::Outcome| -> Vec<Value> {
            out.on("out")
                .iter()
                .map(|r| serde_json::from_slice(&r.payload).unwrap())
                .collect()
        };
        let row = |who: &str, start: i64, count: i64, sum: i64| json!({"who": who, "window_start": start, "window_end": start + 10, "count": count, "sum_n": sum});
        let out = node
            .process([
                at("ann", 1, 1),
                at("ann", 2, 3),
                at("bob", 5, 4),
                at("ann", 7, 12),
            ])
            .unwrap();
        assert!(out.records.is_empty(), "no window has closed");
        assert_eq!(node.timers().len(), 2, "one closing timer per window");

        let closed = node.advance_watermark(10).unwrap();
        assert_eq!(rows(&closed), [row("ann", 0, 2, 3), row("bob", 0, 1, 5)]);
        assert!(
            closed.records.iter().all(|r| r.timestamp == Some(9)),
            "a row's time is its window's last ms"
        );

        // Late, within the lateness: the window's row again, updated.
        let update = node.process([at("ann", 10, 8)]).unwrap();
        assert_eq!(rows(&update), [row("ann", 0, 3, 13)]);

        // The lateness is over: the window's state is gone, and later records go to `late`.
        assert!(node.advance_watermark(15).unwrap().records.is_empty());
        let leftover: Vec<String> = flowhost_sdk::testing::store("agg-win")
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .filter(|k| k.contains("w\u{0}0\u{0}10\u{0}"))
            .collect();
        assert!(leftover.is_empty(), "{leftover:?}");
        let late = node.process([at("ann", 100, 9)]).unwrap();
        assert_eq!(late.on("late").len(), 1);
        assert!(late.on("out").is_empty());

        // The end of input closes the rest.
        assert_eq!(rows(&node.finish().unwrap()), [row("ann", 10, 1, 7)]);
    }

    #[test]
    fn hopping_windows_count_a_record_in_each_window_it_falls_in() {
        let mut node = Harness::<Aggregator>::new(json!({
            "store": "agg-hop",
            "group_by": [],
            "aggregates": [{ "fn": "count" }],
            "window": { "kind": "hopping", "size_ms": 10, "slide_ms": 5 },
        }))
        .unwrap();
        node.process([
            TestMessage::new("{}").timestamp(7),
            TestMessage::new("{}").timestamp(12),
        ])
        .unwrap();
        let rows: Vec<Value> = node
            .finish()
            .unwrap()
            .texts()
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let row =
            |start: i64, count: i64| json!({"window_start": start, "window_end": start + 10, "count": count});
        assert_eq!(rows, [row(0, 1), row(5, 2), row(10, 1)]);
    }

    #[test]
    fn session_windows_grow_merge_close_after_the_gap_and_take_late_records_within_the_lateness() {
        let mut node = Harness::<Aggregator>::with_ports(
            json!({
                "store": "agg-sess",
                "group_by": ["who"],
                "aggregates": [{ "fn": "count" }, { "fn": "max", "field": "n" }, { "fn": "count_distinct", "field": "n" }],
                "window": { "kind": "session", "gap_ms": 10 },
                "allowed_lateness_ms": 5,
            }),
            &["in"],
            &["out", "late"],
        )
        .unwrap();
        let at = |who: &str, n: i64, ms: i64| {
            TestMessage::new(format!(r#"{{"who":"{who}","n":{n}}}"#)).timestamp(ms)
        };
        let rows = |out: &flowhost_sdk::testing::Outcome| -> Vec<Value> {
            out.on("out")
                .iter()
                .map(|r| serde_json::from_slice(&r.payload).unwrap())
                .collect()
        };
        let row = |who: &str, start: i64, end: i64, count: i64, max: i64, distinct: i64| json!({"who": who, "window_start": start, "window_end": end, "count": count, "max_n": max, "count_distinct_n": distinct});
        // ann: [0, 10) and [25, 35); 8 grows the first to [0, 18); 16 bridges both into
        // [0, 35). bob: one session.
        node.process([at("ann", 1, 0), at("ann", 2, 25), at("bob", 7, 3)])
            .unwrap();
        assert_eq!(node.timers().len(), 3, "a closing timer per session");
        node.process([at("ann", 2, 8)]).unwrap();
        node.process([at("ann", 3, 16)]).unwrap();
        assert_eq!(
            node.timers().len(),
            2,
            "ann's sessions merged into one, one timer"
        );
        let closed = node.advance_watermark(20).unwrap();
        assert_eq!(rows(&closed), [row("bob", 3, 13, 1, 7, 1)]);
        let closed = node.advance_watermark(35).unwrap();
        assert_eq!(
            rows(&closed),
            [row("ann", 0, 35, 4, 3, 3)],
            "merged state: count 4, n in {{1, 2, 3}}"
        );
        // Late by less than the lateness, it extends the emitted session to [0, 40),
        // which is emitted again when the watermark gets there.
        assert!(node.process([at("ann", 9, 30)]).unwrap().records.is_empty());
        let again = node.advance_watermark(40).unwrap();
        assert_eq!(rows(&again), [row("ann", 0, 40, 5, 9, 4)]);
        // Past the lateness: to `late`; and the sessions' state is gone once they are done.
        node.advance_watermark(100).unwrap();
        let late = node.process([at("ann", 1, 20)]).unwrap();
        assert_eq!(late.on("late").len(), 1);
        let left: Vec<String> = flowhost_sdk::testing::store("agg-sess")
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(node.finish().unwrap().records.is_empty());
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
