//! `graph.toml`: parsed into raw serde types ([`raw`]), then checked into a [`Graph`]
//! ([`validate`]) with every problem reported at once, each at its file:line:col.

mod edges;
mod fields;
pub mod picture;
mod raw;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::{Access, Connection, Delivery, Durability, SinkFormat, Transport};

/// A manifest that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not a valid graph.
    #[error("{}", render(path, diagnostics))]
    Invalid {
        /// The manifest path.
        path: PathBuf,
        /// Every problem found, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong, naming the node, edge or field.
    pub message: String,
}

fn render(path: &Path, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out += &format!("{}:{}:{}: {}\n", path.display(), d.line, d.col, d.message);
    }
    let n = diagnostics.len();
    out += &format!("{n} error{} in {}", if n == 1 { "" } else { "s" }, path.display());
    out
}

/// A validated graph, ready to build.
#[derive(Debug, Clone)]
pub struct Graph {
    /// What validation found suspicious but runnable (a likely typo), with line:col.
    pub warnings: Vec<Diagnostic>,
    /// The graph's name (used in logs, and later in topic and group names).
    pub name: String,
    /// Where the manifest was read from; relative paths in it are relative to its folder.
    pub path: PathBuf,
    /// Whether to record the nodes each message passed in the `flowhost-path` header.
    pub provenance: bool,
    /// Sources, in id order.
    pub sources: Vec<SourceSpec>,
    /// Nodes, in id order.
    pub nodes: Vec<NodeSpec>,
    /// Sinks, in id order.
    pub sinks: Vec<SinkSpec>,
    /// Edges, in manifest order.
    pub edges: Vec<Edge>,
    /// Declared stores, by name.
    pub stores: Vec<StoreSpec>,
    /// Where and how often durable stores are checkpointed.
    pub checkpoint: CheckpointSpec,
    /// How messages travel between vertices.
    pub transport: Transport,
    /// Kafka settings (used with `transport = "kafka"`).
    pub kafka: KafkaSpec,
}

/// `[kafka]`: where the brokers are, how topics are made, what delivery promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSpec {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: Option<String>,
    /// Partitions of the topics flowhost creates.
    pub partitions: i32,
    /// Replication factor of the topics flowhost creates.
    pub replication: i32,
    /// At-least-once or exactly-once.
    pub delivery: Delivery,
    /// Time between offset commits (at-least-once) or transactions (exactly-once).
    pub commit_interval: Duration,
    /// librdkafka properties, passed through.
    pub properties: Vec<(String, String)>,
}

impl Default for KafkaSpec {
    fn default() -> Self {
        KafkaSpec {
            brokers: None,
            partitions: 4,
            replication: 1,
            delivery: Delivery::AtLeastOnce,
            commit_interval: Duration::from_millis(100),
            properties: Vec::new(),
        }
    }
}

impl Graph {
    /// Whether any source makes watermarks (the graph runs on event time).
    pub fn has_event_time(&self) -> bool {
        self.sources.iter().any(|s| s.watermark.is_some())
    }

    /// Whether any store is durable (and the run is checkpointed).
    pub fn is_durable(&self) -> bool {
        self.stores.iter().any(|s| s.durability == Durability::Durable)
    }

    /// Why this graph cannot run over Kafka, if it cannot: what works in-process only
    /// (`validate` says the same with the line, for a manifest that asks for Kafka).
    pub fn kafka_refusal(&self) -> Option<String> {
        self.edges.iter().find_map(|e| {
            (e.connection == Connection::Broadcast).then(|| {
                format!(
                    "edge from `{}` to `{}`: {BROADCAST_IN_PROCESS_ONLY}",
                    self.id(e.from),
                    self.id(e.to)
                )
            })
        })
    }

    /// The loops of the graph: per loop, the nodes inside it (those a feedback edge's
    /// message can come back to), in index order. Loops that share a node are one.
    pub fn loops(&self) -> Vec<Vec<usize>> {
        let n = self.nodes.len();
        let reach = |from: usize, forward: bool| {
            let mut seen = vec![false; n];
            let mut stack = vec![from];
            seen[from] = true;
            while let Some(i) = stack.pop() {
                for e in &self.edges {
                    let (a, b) = if forward { (e.from, e.to) } else { (e.to, e.from) };
                    if let (Vertex::Node(a), Vertex::Node(b)) = (a, b)
                        && a == i
                        && !seen[b]
                    {
                        seen[b] = true;
                        stack.push(b);
                    }
                }
            }
            seen
        };
        let mut loops: Vec<Vec<bool>> = Vec::new();
        for e in self.edges.iter().filter(|e| e.feedback.is_some()) {
            let (Vertex::Node(u), Vertex::Node(v)) = (e.from, e.to) else {
                continue;
            };
            let (down, up) = (reach(v, true), reach(u, false));
            let mut inside: Vec<bool> = (0..n).map(|i| down[i] && up[i]).collect();
            // Merged with every loop it shares a node with.
            loops.retain(|l| {
                let shared = (0..n).any(|i| l[i] && inside[i]);
                if shared {
                    for i in 0..n {
                        inside[i] |= l[i];
                    }
                }
                !shared
            });
            loops.push(inside);
        }
        loops
            .into_iter()
            .map(|l| (0..n).filter(|&i| l[i]).collect())
            .collect()
    }
}

/// Why a broadcast edge is refused over Kafka.
pub(crate) const BROADCAST_IN_PROCESS_ONLY: &str = "`connection = \"broadcast\"` works in-process only: \
     over Kafka the processes of a node share its input topic's partitions, so each replica \
     would see only its process's share (use key-hash or round-robin, or run in-process)";

/// A declared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// Its name.
    pub name: String,
    /// In memory, or checkpointed to disk.
    pub durability: Durability,
    /// Keys expire this long after their last write.
    pub ttl: Option<Duration>,
    /// What nodes may put in it.
    pub limits: StoreLimits,
}

impl StoreSpec {
    /// An in-memory store without expiry, with the default limits.
    pub fn memory(name: impl Into<String>) -> Self {
        StoreSpec {
            name: name.into(),
            durability: Durability::Memory,
            ttl: None,
            limits: StoreLimits::default(),
        }
    }
}

/// How much a store holds at most: a write past a limit fails the node's call (an
/// `invalid-input` error, which goes through the node's error policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Largest key, in bytes.
    pub max_key_bytes: u64,
    /// Largest value, in bytes.
    pub max_value_bytes: u64,
    /// Most keys.
    pub max_keys: u64,
    /// Most bytes of keys and values together.
    pub max_bytes: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            max_keys: 10_000_000,
            max_bytes: 1 << 30,
        }
    }
}

/// Checkpointing of durable stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSpec {
    /// The state directory.
    pub dir: PathBuf,
    /// Time between checkpoints.
    pub interval: Duration,
}

/// `path` made absolute (against the working directory) without touching the file.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

impl SourceKind {
    /// Whether `other` reads the same as this one (its files compared as absolute paths:
    /// manifests read from other folders say the same files differently).
    pub fn same_as(&self, other: &SourceKind) -> bool {
        let placed = |k: &SourceKind| {
            let mut k = k.clone();
            if let SourceKind::File { path }
            | SourceKind::Jsonl { path, .. }
            | SourceKind::Messages { path } = &mut k
            {
                *path = absolute(path);
            }
            format!("{k:?}")
        };
        placed(self) == placed(other)
    }
}

impl SinkKind {
    /// Whether `other` writes where this one does (files compared as absolute paths).
    pub fn same_as(&self, other: &SinkKind) -> bool {
        let placed = |k: &SinkKind| match k {
            SinkKind::File(path) => format!("{:?}", SinkKind::File(absolute(path))),
            k => format!("{k:?}"),
        };
        placed(self) == placed(other)
    }
}

/// A source of messages.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Its id.
    pub id: String,
    /// What it reads.
    pub kind: SourceKind,
    /// The watermarks it produces, if it has event time.
    pub watermark: Option<WatermarkSpec>,
}

/// How a source's watermark follows the timestamps it reads (see `flow::watermark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// How far behind the largest timestamp seen a message may still be on time.
    pub out_of_orderness: Duration,
    /// After this long with no message, the source is idle.
    pub idle: Option<Duration>,
}

/// What a source reads.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// A text file, one message per line.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A JSON-lines file; each line must be a JSON value.
    Jsonl {
        /// The file.
        path: PathBuf,
        /// A top-level field whose value becomes the key.
        key_field: Option<String>,
        /// A top-level field holding the event time in milliseconds.
        timestamp_field: Option<String>,
    },
    /// JSON lines as JSON sinks write them, read back into messages with their key,
    /// timestamp and headers.
    Messages {
        /// The file.
        path: PathBuf,
    },
    /// Standard input, one message per line.
    Stdin,
    /// Synthetic messages, for benchmarks and tests.
    Generator {
        /// How many (unbounded if `None`).
        count: Option<u64>,
        /// Payload size in bytes.
        payload_size: usize,
        /// Number of distinct keys (`None`: no keys).
        keys: Option<u64>,
    },
    /// An existing Kafka topic (Kafka transport only).
    Kafka {
        /// The topic.
        topic: String,
    },
    /// HTTP requests (see `io::http`).
    Http(HttpSpec),
}

/// An HTTP source: where it listens and what a request becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// The URL path it serves.
    pub path: String,
    /// A request header whose value becomes the key.
    pub key_header: Option<String>,
    /// A top-level field of a JSON body whose value becomes the key.
    pub key_field: Option<String>,
    /// Request headers copied into the message (lower case).
    pub headers: Vec<String>,
    /// The largest body.
    pub max_body: usize,
    /// Most requests open at once.
    pub max_in_flight: usize,
    /// How long a request waits for its reply.
    pub timeout: Duration,
    /// Whether 5xx answers carry the node's error text.
    pub expose_errors: bool,
}

/// A wasm node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its id.
    pub id: String,
    /// Where its code comes from.
    pub module: ModuleRef,
    /// Its `config` table, as JSON (what the guest's `init` receives).
    pub config_json: String,
    /// Parallel instances, each on its own thread with its own store.
    pub replicas: u32,
    /// Longest a single `process` call may run.
    pub timeout: Duration,
    /// Linear-memory cap per instance, in MiB.
    pub memory_mb: u64,
    /// Most output one call may return, in bytes.
    pub max_output: usize,
    /// What happens to a message the node fails on.
    pub on_error: ErrorPolicy,
    /// Connected input ports (a record's port index points here).
    pub inputs: Vec<String>,
    /// Connected output ports.
    pub outputs: Vec<String>,
    /// Stores granted to the node.
    pub state: Vec<(String, Access)>,
    /// How retryable errors are retried.
    pub retry: RetryPolicy,
    /// The module file's expected SHA-256 (hex), if pinned.
    pub sha256: Option<String>,
    /// Fuel per call, if metered.
    pub fuel: Option<u64>,
    /// What the guest may see of the host besides its stores.
    pub sandbox: Sandbox,
    /// When a hot-swapped module is rolled back on its own.
    pub auto_rollback: Option<AutoRollback>,
}

impl NodeSpec {
    /// Whether `other` makes other instances than this (besides their module and ports):
    /// another config, deadline, memory, fuel, sandbox or grants.
    pub fn makes_other_instances(&self, other: &NodeSpec) -> bool {
        self.config_json != other.config_json
            || self.timeout != other.timeout
            || self.memory_mb != other.memory_mb
            || self.fuel != other.fuel
            || self.sandbox != other.sandbox
            || self.state != other.state
    }
}

/// Roll a hot swap back when the new module's first `messages` messages fail at more than
/// `error_rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoRollback {
    /// Share of messages (0 to 1) that may fail for good.
    pub error_rate: f64,
    /// Messages the new module processes before it is judged.
    pub messages: u64,
}

impl AutoRollback {
    /// Messages judged when none is given.
    pub const DEFAULT_MESSAGES: u64 = 1000;
}

/// Attempts and backoff for retryable errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the second attempt, doubled for each further one.
    pub backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (2 or more).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(30);
        self.backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// Host resources granted to a guest. Empty by default: no files, no environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// Host environment variables the guest may read.
    pub env: Vec<String>,
    /// Read-only directories: (guest path, host directory).
    pub read_dirs: Vec<(String, PathBuf)>,
    /// HTTP endpoints it may POST to: (name, `http://` URL).
    pub calls: Vec<(String, String)>,
}

/// Where a node's code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModuleRef {
    /// A core module or component file.
    File(PathBuf),
    /// A node crate, built for wasm32-wasip1 when its module is missing or stale.
    Crate(PathBuf),
    /// A Python node's app module, built into a component (componentize-py) when it is
    /// missing or stale.
    Python(PathBuf),
}

/// What happens to a message a node fails on (after retries, for retryable errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Stop the graph: the batch holding the message completes (a batch is atomic), no
    /// later batch is processed, the graph drains, and the run fails naming the node and error.
    Stop,
    /// Count it, log it, go on.
    Skip,
    /// Send the original message, with the error in headers, to this sink (index).
    DeadLetter(usize),
}

/// A sink.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// Its id.
    pub id: String,
    /// Where it writes.
    pub kind: SinkKind,
    /// How each message is written.
    pub format: SinkFormat,
}

impl SinkSpec {
    /// The file a file sink writes.
    pub fn file_path(&self) -> Option<&std::path::Path> {
        match &self.kind {
            SinkKind::File(path) => Some(path),
            _ => None,
        }
    }

    /// The length of the file a file sink writes, if it exists.
    pub fn file_len(&self) -> Option<u64> {
        std::fs::metadata(self.file_path()?).ok().map(|m| m.len())
    }
}

/// Where a sink writes.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// Standard output.
    Stdout,
    /// A file (created or truncated).
    File(PathBuf),
    /// Nowhere (benchmarks).
    Null,
    /// A Kafka topic (Kafka transport only).
    Kafka(String),
    /// Answers the HTTP request each message carries the return address of.
    Reply,
}

/// A feedback edge's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Feedback {
    /// How many times a message may go around (`None`: no limit).
    pub max_iterations: Option<u32>,
}

/// Why a feedback edge is refused over Kafka.
/// A vertex of the graph, by kind and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vertex {
    /// `graph.sources[i]`.
    Source(usize),
    /// `graph.nodes[i]`.
    Node(usize),
    /// `graph.sinks[i]`.
    Sink(usize),
}

/// A connection from an output port to an input port.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Producer.
    pub from: Vertex,
    /// Index into the producer's outputs (0 for a source).
    pub from_port: u16,
    /// Consumer.
    pub to: Vertex,
    /// Index into the consumer's inputs (0 for a sink).
    pub to_port: u16,
    /// It closes a loop (iterations); with the most times a message may go around.
    pub feedback: Option<Feedback>,
    /// How messages are spread over the consumer's replicas.
    pub connection: Connection,
    /// Its topic with the Kafka transport, where the manifest names one (the edge's
    /// `topic`, or its Kafka source's or sink's); else the plan names it.
    pub topic: Option<String>,
}

/// The JSON Schema of `graph.toml`, generated from the types the manifest is parsed
/// into (editors with TOML schema support complete and check manifests with it).
pub fn schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(raw::RawGraph)).unwrap_or_default();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), "flowhost graph manifest (graph.toml)".into());
    }
    schema
}

impl Graph {
    /// Reads and validates a manifest.
    pub fn load(path: impl AsRef<Path>) -> Result<Graph, ManifestError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|error| ManifestError::Read {
            path: path.to_owned(),
            error,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            // Point at the first byte that is not UTF-8.
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let col = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
            ManifestError::Invalid {
                path: path.to_owned(),
                diagnostics: vec![Diagnostic {
                    line,
                    col,
                    message: "not UTF-8 text (TOML files are UTF-8)".to_owned(),
                }],
            }
        })?;
        Self::parse(path, &text)
    }

    /// Validates manifest text as if read from `path` (relative paths resolve against its folder).
    pub fn parse(path: &Path, text: &str) -> Result<Graph, ManifestError> {
        validate::parse(path, text).map_err(|mut diagnostics| {
            diagnostics.sort();
            diagnostics.dedup();
            ManifestError::Invalid {
                path: path.to_owned(),
                diagnostics,
            }
        })
    }

    /// Each warning as `path:line:col: warning: message`.
    pub fn warning_lines(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|d| {
                format!(
                    "{}:{}:{}: warning: {}",
                    self.path.display(),
                    d.line,
                    d.col,
                    d.message
                )
            })
            .collect()
    }

    /// Every vertex: the sources, the nodes, the sinks.
    pub fn vertices(&self) -> impl Iterator<Item = Vertex> + '_ {
        let sources = (0..self.sources.len()).map(Vertex::Source);
        let nodes = (0..self.nodes.len()).map(Vertex::Node);
        sources
            .chain(nodes)
            .chain((0..self.sinks.len()).map(Vertex::Sink))
    }

    /// The id of a vertex.
    pub fn id(&self, v: Vertex) -> &str {
        match v {
            Vertex::Source(i) => &self.sources[i].id,
            Vertex::Node(i) => &self.nodes[i].id,
            Vertex::Sink(i) => &self.sinks[i].id,
        }
    }
}

impl fmt::Display for Vertex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Vertex::Source(_) => f.write_str("source"),
            Vertex::Node(_) => f.write_str("node"),
            Vertex::Sink(_) => f.write_str("sink"),
        }
    }
}
