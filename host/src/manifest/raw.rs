//! The manifest as written: serde types that mirror `graph.toml`, with spans kept for
//! error messages. Nothing here is checked beyond TOML types and unknown fields; see
//! [`super::validate`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

/// A whole `graph.toml`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGraph {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Record the nodes each message passed in the `flowhost-path` header.
    #[serde(default)]
    pub provenance: bool,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawSource>")]
    pub sources: BTreeMap<Spanned<String>, RawSource>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawNode>")]
    pub nodes: BTreeMap<Spanned<String>, RawNode>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawSink>")]
    pub sinks: BTreeMap<Spanned<String>, RawSink>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawStore>")]
    pub stores: BTreeMap<Spanned<String>, RawStore>,
    /// Where and how often durable stores are checkpointed.
    pub checkpoint: Option<RawCheckpoint>,
    #[serde(default)]
    pub edges: Vec<RawEdge>,
    /// How messages travel between nodes: `in-process` (the default) or `kafka`.
    #[schemars(with = "Option<Transport>")]
    pub transport: Option<Spanned<Transport>>,
    /// `[kafka]`: flowhost's Kafka settings (`brokers`, `partitions`, `replication`,
    /// `delivery`, `commit_interval_ms`); any other key is a librdkafka property, passed
    /// through as it is (`"compression.type" = "lz4"`, `"security.protocol" = "ssl"`, …).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub kafka: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

/// How messages travel between the vertices of a graph.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Bounded channels inside one `flowhost` process.
    #[default]
    InProcess,
    /// A Kafka topic per edge and a consumer group per node: many processes share the work.
    Kafka,
}

/// What a Kafka graph promises about each input message.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Input offsets are committed once every output made from them is acknowledged:
    /// nothing is lost; a crash repeats what was processed since the last commit.
    #[default]
    AtLeastOnce,
    /// Outputs, state changes and input offsets are committed in one Kafka transaction.
    ExactlyOnce,
}

#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    File,
    Jsonl,
    /// JSON lines as `format = "json"` sinks write them (key, payload, timestamp,
    /// headers): a dead-letter file, or another graph's output.
    Messages,
    Stdin,
    Generator,
    /// An existing Kafka topic (with `transport = "kafka"`).
    Kafka,
    /// HTTP requests, each answered by the message that reaches a `reply` sink.
    Http,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    #[schemars(with = "SourceKind")]
    pub kind: Spanned<SourceKind>,
    /// `file`, `jsonl`: the file to read, relative to the manifest. `http`: the URL path
    /// served (default `/`).
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// `jsonl`, `http`: a top-level field (of the JSON body) whose value becomes the
    /// message key.
    #[schemars(with = "Option<String>")]
    pub key_field: Option<Spanned<String>>,
    /// `jsonl`: a top-level field holding the event time (milliseconds since the epoch).
    #[schemars(with = "Option<String>")]
    pub timestamp_field: Option<Spanned<String>>,
    /// `generator`: how many messages (unbounded if absent).
    #[schemars(with = "Option<u64>")]
    pub count: Option<Spanned<u64>>,
    /// `generator`: payload size in bytes (default 16).
    #[schemars(with = "Option<usize>")]
    pub payload_size: Option<Spanned<usize>>,
    /// `generator`: number of distinct keys (no keys if absent).
    #[schemars(with = "Option<u64>")]
    pub keys: Option<Spanned<u64>>,
    /// `kafka`: the topic to read.
    #[schemars(with = "Option<String>")]
    pub topic: Option<Spanned<String>>,
    /// Event time: the watermarks this source produces from its messages' timestamps.
    #[schemars(with = "Option<RawWatermark>")]
    pub watermark: Option<Spanned<RawWatermark>>,
    /// `http`: where to listen (default `127.0.0.1:8080`).
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
    /// `http`: a request header whose value becomes the message key.
    #[schemars(with = "Option<String>")]
    pub key_header: Option<Spanned<String>>,
    /// `http`: request headers copied into the message (as `http-header-<name>`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub headers: Vec<Spanned<String>>,
    /// `http`: the largest request body, in bytes (default 1 MiB); larger is answered 413.
    #[schemars(with = "Option<u64>")]
    pub max_body_bytes: Option<Spanned<u64>>,
    /// `http`: most requests open at once (default 1024); more are answered 503.
    #[schemars(with = "Option<u64>")]
    pub max_in_flight: Option<Spanned<u64>>,
    /// `http`: how long a request waits for its reply (default 5000 ms); then 504.
    #[schemars(with = "Option<u64>")]
    pub timeout_ms: Option<Spanned<u64>>,
    /// `http`: whether a failed message's answer carries the node's error text (default
    /// true; false answers 5xx with a generic text, and still 4xx with the reason).
    #[schemars(with = "Option<bool>")]
    pub expose_errors: Option<Spanned<bool>>,
}

/// How a source's watermark follows the timestamps it reads: the largest timestamp seen,
/// less the out-of-orderness allowed.
#[derive(Debug, Deserialize, JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawWatermark {
    /// How far behind the largest timestamp seen a message may still be on time
    /// (milliseconds, default 0).
    #[serde(default)]
    pub out_of_orderness_ms: u64,
    /// After this long with no message, the source is idle: it holds no node's
    /// watermark back until it reads again (milliseconds; never idle if absent).
    pub idle_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    Stop,
    Skip,
    DeadLetter,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// A built module or component, relative to the manifest.
    #[schemars(with = "Option<String>")]
    pub module: Option<Spanned<String>>,
    /// A node crate to build for wasm32-wasip1 (when missing or stale), relative to the manifest.
    #[serde(rename = "crate")]
    #[schemars(with = "Option<String>")]
    pub krate: Option<Spanned<String>>,
    /// A Python node's app module (`nodes/parse.py`), built into a component with
    /// componentize-py (when missing or stale), relative to the manifest.
    #[schemars(with = "Option<String>")]
    pub python: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub config: toml::Table,
    #[schemars(with = "Option<u32>")]
    pub replicas: Option<Spanned<u32>>,
    #[schemars(with = "Option<u64>")]
    pub timeout_ms: Option<Spanned<u64>>,
    #[schemars(with = "Option<u64>")]
    pub memory_mb: Option<Spanned<u64>>,
    /// Most output one call may return, in MiB (default 64); more fails its messages as
    /// `bad-output`.
    #[schemars(with = "Option<u64>")]
    pub max_output_mb: Option<Spanned<u64>>,
    #[schemars(with = "Option<OnError>")]
    pub on_error: Option<Spanned<OnError>>,
    /// The sink that receives dead letters when `on_error = "dead-letter"`.
    #[schemars(with = "Option<String>")]
    pub dead_letter: Option<Spanned<String>>,
    /// Stores this node may use: `{ counts = "rw", customers = "r" }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Access>")]
    pub state: BTreeMap<Spanned<String>, Access>,
    /// How retryable errors are retried before `on_error` applies.
    pub retry: Option<RawRetry>,
    /// SHA-256 of the module file (hex); a file that does not match is refused before loading.
    #[schemars(with = "Option<String>")]
    pub sha256: Option<Spanned<String>>,
    /// Fuel per call (about one unit per wasm instruction); a call that runs out traps.
    #[schemars(with = "Option<u64>")]
    pub fuel: Option<Spanned<u64>>,
    /// Host environment variables the guest may read, by name (their values on the host).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub env: Vec<Spanned<String>>,
    /// Read-only directories: `{ "/guest/path" = "host/dir" }`, host paths relative to the manifest.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub read_dirs: BTreeMap<Spanned<String>, Spanned<String>>,
    /// HTTP endpoints the guest may POST to, by name (`flowhost_sdk::call`): `{ quotes =
    /// "http://127.0.0.1:8080/quote" }`, such as another graph's API.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub calls: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Swap back to the previous module when a newly swapped-in one fails too often.
    pub auto_rollback: Option<RawAutoRollback>,
}

/// `auto_rollback`: when a hot-swapped module is judged, and what fails it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAutoRollback {
    /// Share of messages (0 to 1) that may fail for good before the swap is rolled back.
    #[schemars(with = "f64")]
    pub error_rate: Spanned<f64>,
    /// Messages the new module processes before it is judged (default 1000).
    #[schemars(with = "Option<u64>")]
    pub messages: Option<Spanned<u64>>,
}

/// `retry`: attempts and backoff for retryable errors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all, the first included (default 3; 1 turns retries off).
    #[schemars(with = "Option<u32>")]
    pub attempts: Option<Spanned<u32>>,
    /// Wait before the second attempt; doubled for each further one (default 10).
    #[schemars(with = "Option<u64>")]
    pub backoff_ms: Option<Spanned<u64>>,
    /// The longest wait between attempts (default 1000).
    #[schemars(with = "Option<u64>")]
    pub max_backoff_ms: Option<Spanned<u64>>,
}

/// A declared store.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `memory` (the default) or `durable`.
    #[serde(default)]
    pub durability: Durability,
    /// Keys expire this long after their last write.
    #[schemars(with = "Option<u64>")]
    pub ttl_ms: Option<Spanned<u64>>,
    /// Largest key a node may write, in bytes (default 4096).
    #[schemars(with = "Option<u64>")]
    pub max_key_bytes: Option<Spanned<u64>>,
    /// Largest value a node may write, in bytes (default 1 MiB).
    #[schemars(with = "Option<u64>")]
    pub max_value_bytes: Option<Spanned<u64>>,
    /// Most keys the store holds (default 10,000,000).
    #[schemars(with = "Option<u64>")]
    pub max_keys: Option<Spanned<u64>>,
    /// Most bytes of keys and values the store holds (default 1 GiB).
    #[schemars(with = "Option<u64>")]
    pub max_bytes: Option<Spanned<u64>>,
}

/// Whether a store outlives the process.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Kept in memory only: gone when `flowhost run` ends.
    #[default]
    Memory,
    /// Checkpointed to disk with the sources' positions; restored on the next run.
    Durable,
}

/// `[checkpoint]`: where durable state is written, and how often.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCheckpoint {
    /// The state directory, relative to the manifest (default `.flowhost/<graph name>`).
    #[schemars(with = "Option<String>")]
    pub dir: Option<Spanned<String>>,
    /// Milliseconds between checkpoints (default 1000).
    #[schemars(with = "Option<u64>")]
    pub interval_ms: Option<Spanned<u64>>,
}

/// What a node may do with a store.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only.
    #[serde(rename = "r")]
    Read,
    /// Read and write.
    #[serde(rename = "rw")]
    ReadWrite,
}

#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    Stdout,
    File,
    Null,
    /// A Kafka topic (with `transport = "kafka"`), created if missing.
    Kafka,
    /// Answers the HTTP request each message carries the return address of.
    Reply,
}

/// How a sink writes each message.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SinkFormat {
    /// The payload, one per line.
    #[default]
    Text,
    /// One JSON object per message: key, payload, timestamp, headers.
    Json,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    #[schemars(with = "SinkKind")]
    pub kind: Spanned<SinkKind>,
    /// `file`: where to write, relative to the manifest.
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub format: SinkFormat,
    /// `kafka`: the topic to write.
    #[schemars(with = "Option<String>")]
    pub topic: Option<Spanned<String>>,
}

/// How an edge spreads messages over the replicas of the node it feeds.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Connection {
    /// Each batch to the next replica in turn.
    #[default]
    RoundRobin,
    /// Each message to the replica its key hashes to (order per key kept).
    KeyHash,
    /// Every message to every replica (in-process only: over Kafka a node's processes share
    /// its input partitions).
    Broadcast,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEdge {
    /// `source`, `node` or `node.port`.
    #[schemars(with = "String")]
    pub from: Spanned<String>,
    /// `node`, `node.port` or `sink`.
    #[schemars(with = "String")]
    pub to: Spanned<String>,
    #[serde(default)]
    pub connection: Connection,
    /// With `transport = "kafka"`: the edge's topic (default `<graph>.<from>.<to>`).
    #[schemars(with = "Option<String>")]
    pub topic: Option<Spanned<String>>,
    /// The edge closes a loop: messages go around again (iterations) until nothing is
    /// left inside it. Every cycle of a graph needs one.
    #[schemars(with = "Option<bool>")]
    pub feedback: Option<Spanned<bool>>,
    /// A feedback edge: how many times a message may go around; past that it is dropped
    /// and counted (default: no limit).
    #[schemars(with = "Option<u32>")]
    pub max_iterations: Option<Spanned<u32>>,
}
