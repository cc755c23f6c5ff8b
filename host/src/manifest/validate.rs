//! Raw manifest → [`Graph`]: ids, sources, nodes and sinks checked (edges in [`super::edges`]),
//! every error collected, each at its span.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::edges;
use super::raw::{self, OnError, RawAutoRollback, RawGraph, RawNode, RawRetry, RawSink, RawSource};
use super::{
    AutoRollback, CheckpointSpec, Delivery, Diagnostic, ErrorPolicy, Graph, HttpSpec, KafkaSpec, ModuleRef,
    NodeSpec, RetryPolicy, Sandbox, SinkFormat, SinkKind, SinkSpec, SourceKind, SourceSpec, StoreLimits,
    StoreSpec, Vertex, WatermarkSpec,
};

const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_MAX_OUTPUT_MB: u64 = 64;
const DEFAULT_MEMORY_MB: u64 = 128;
const MAX_MEMORY_MB: u64 = 4_096;
const DEFAULT_PAYLOAD_SIZE: usize = 16;
/// A generated batch holds `batch_size` payloads at once.
const MAX_PAYLOAD_SIZE: usize = 1 << 20;

/// Collects diagnostics with line:col computed from byte spans.
pub(super) struct Report<'t> {
    text: &'t str,
    diagnostics: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Report<'_> {
    /// An error at `span`: the manifest is refused.
    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.diagnostic(span, message);
        self.diagnostics.push(d);
    }

    /// A warning at `span`: likely a mistake, but the graph can run.
    pub(super) fn warn_at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.diagnostic(span, message);
        self.warnings.push(d);
    }

    fn diagnostic(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Diagnostic {
            line,
            col,
            message: message.into(),
        }
    }
}

pub(super) fn parse(path: &Path, text: &str) -> Result<Graph, Vec<Diagnostic>> {
    let mut report = Report {
        text,
        diagnostics: Vec::new(),
        warnings: Vec::new(),
    };
    if super::fields::check(&mut report, text) {
        // Everything else waits until every field is one flowhost knows: a typo's
        // knock-on errors (an edge that "does not exist") would only confuse.
        return Err(report.diagnostics);
    }
    let raw: RawGraph = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            report.at(e.span().unwrap_or(0..0), e.message().trim_end());
            return Err(report.diagnostics);
        }
    };
    let dir = path.parent().unwrap_or(Path::new("")).to_owned();
    let graph = check(&raw, &dir, &mut report);
    if report.diagnostics.is_empty() {
        Ok(Graph {
            path: path.to_owned(),
            warnings: {
                let mut w = report.warnings;
                w.sort();
                w
            },
            ..graph
        })
    } else {
        Err(report.diagnostics)
    }
}

fn check(raw: &RawGraph, dir: &Path, r: &mut Report) -> Graph {
    check_id(r, &raw.name, "graph name");
    let mut ids: BTreeMap<&str, Vertex> = BTreeMap::new();
    let declared = (raw
        .sources
        .keys()
        .enumerate()
        .map(|(i, id)| (id, Vertex::Source(i))))
    .chain(raw.nodes.keys().enumerate().map(|(i, id)| (id, Vertex::Node(i))))
    .chain(raw.sinks.keys().enumerate().map(|(i, id)| (id, Vertex::Sink(i))));
    for (id, v) in declared {
        check_id(r, id, &format!("{v} id"));
        if let Some(prev) = ids.insert(id.get_ref(), v) {
            r.at(
                id.span(),
                format!("`{}` is declared as both a {prev} and a {v}", id.get_ref()),
            );
        }
    }

    let sink_index = |name: &str| raw.sinks.keys().position(|k| k.get_ref() == name);
    let transport = raw.transport.as_ref().map(|t| *t.get_ref()).unwrap_or_default();
    let sources: Vec<SourceSpec> = raw.sources.iter().map(|(id, s)| source(r, dir, id, s)).collect();
    let mut nodes: Vec<NodeSpec> = raw
        .nodes
        .iter()
        .map(|(id, n)| node(r, dir, id, n, &sink_index))
        .collect();
    let sinks: Vec<SinkSpec> = raw.sinks.iter().map(|(id, s)| sink(r, dir, id, s)).collect();
    check_grants(r, raw);
    check_dead_letter_formats(r, raw, &nodes, &sinks);
    check_replies(r, raw, &sources, &sinks);
    let edges = edges::edges(r, raw, &ids, &mut nodes);
    edges::check_connected(r, raw, &edges, &nodes);
    edges::check_cycles(r, raw, &edges);
    edges::check_default_outputs(r, raw, &edges, &nodes);

    Graph {
        name: raw.name.get_ref().clone(),
        path: PathBuf::new(),
        warnings: Vec::new(),
        provenance: raw.provenance,
        sources,
        nodes,
        sinks,
        edges,
        stores: raw
            .stores
            .iter()
            .map(|(name, st)| StoreSpec {
                name: name.get_ref().clone(),
                durability: st.durability,
                ttl: st.ttl_ms.as_ref().map(|_| {
                    let what = format!("store `{}`: ttl_ms", name.get_ref());
                    Duration::from_millis(positive(r, &st.ttl_ms, 1, None, &what))
                }),
                limits: {
                    let d = StoreLimits::default();
                    let mut limit = |v: &Option<Spanned<u64>>, default: u64, field: &str| {
                        let what = format!("store `{}`: {field}", name.get_ref());
                        positive(r, v, default, None, &what)
                    };
                    StoreLimits {
                        max_key_bytes: limit(&st.max_key_bytes, d.max_key_bytes, "max_key_bytes"),
                        max_value_bytes: limit(&st.max_value_bytes, d.max_value_bytes, "max_value_bytes"),
                        max_keys: limit(&st.max_keys, d.max_keys, "max_keys"),
                        max_bytes: limit(&st.max_bytes, d.max_bytes, "max_bytes"),
                    }
                },
            })
            .collect(),
        checkpoint: checkpoint(r, dir, raw),
        transport,
        kafka: kafka(r, raw),
    }
}

/// `[kafka]`: flowhost's own keys checked; every other key is a librdkafka property.
fn kafka(r: &mut Report, raw: &RawGraph) -> KafkaSpec {
    let mut spec = KafkaSpec::default();
    for (key, value) in &raw.kafka {
        let (name, v) = (key.get_ref().as_str(), value.get_ref());
        let whole = |r: &mut Report, what: &str, min: i64, max: i64| match v.as_integer() {
            Some(n) if (min..=max).contains(&n) => n,
            _ => {
                r.at(
                    value.span(),
                    format!("kafka: `{name}` must be {what} between {min} and {max}, not {v}"),
                );
                min
            }
        };
        match name {
            "brokers" => match v.as_str() {
                Some(b) if !b.trim().is_empty() => spec.brokers = Some(b.to_owned()),
                _ => r.at(
                    value.span(),
                    "kafka: `brokers` must be a non-empty string of host:port[,host:port…]",
                ),
            },
            "partitions" => spec.partitions = whole(r, "a number of partitions", 1, 10_000) as i32,
            "replication" => spec.replication = whole(r, "a replication factor", 1, 100) as i32,
            "commit_interval_ms" => {
                spec.commit_interval = Duration::from_millis(whole(r, "milliseconds", 1, 600_000) as u64)
            }
            "delivery" => {
                spec.delivery = match v.as_str() {
                    Some("at-least-once") => Delivery::AtLeastOnce,
                    Some("exactly-once") => Delivery::ExactlyOnce,
                    _ => {
                        r.at(
                            value.span(),
                            format!(
                                "kafka: `delivery` must be \"at-least-once\" or \"exactly-once\", not {v}"
                            ),
                        );
                        Delivery::AtLeastOnce
                    }
                }
            }
            "bootstrap.servers" => r.at(
                key.span(),
                "kafka: give the brokers as `brokers` (or --brokers), not `bootstrap.servers`",
            ),
            _ => match v {
                toml::Value::String(s) => spec.properties.push((name.to_owned(), s.clone())),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    spec.properties.push((name.to_owned(), v.to_string()))
                }
                _ => r.at(
                    value.span(),
                    format!("kafka: librdkafka property `{name}` must be a string, number or boolean"),
                ),
            },
        }
    }
    spec
}

/// Default time between checkpoints of durable stores.
pub const DEFAULT_CHECKPOINT_MS: u64 = 1000;

fn checkpoint(r: &mut Report, dir: &Path, raw: &RawGraph) -> CheckpointSpec {
    let cp = raw.checkpoint.as_ref();
    let state_dir = match cp.and_then(|c| c.dir.as_ref()) {
        Some(d) => resolve(dir, d),
        None => dir.join(".flowhost").join(raw.name.get_ref()),
    };
    let interval_ms = positive(
        r,
        &cp.and_then(|c| c.interval_ms.clone()),
        DEFAULT_CHECKPOINT_MS,
        None,
        "checkpoint: interval_ms",
    );
    CheckpointSpec {
        dir: state_dir,
        interval: Duration::from_millis(interval_ms),
    }
}

fn check_id(r: &mut Report, id: &Spanned<String>, what: &str) {
    let s = id.get_ref();
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        r.at(
            id.span(),
            format!(
                "invalid {what} `{s}`: use letters, digits, `-` and `_`, starting with a letter or digit"
            ),
        );
    }
}

fn resolve(dir: &Path, p: &Spanned<String>) -> PathBuf {
    dir.join(p.get_ref())
}

fn not_for(r: &mut Report, field: Option<Range<usize>>, name: &str, what: &str) {
    if let Some(span) = field {
        r.at(span, format!("`{name}` does not apply to {what}"));
    }
}

/// A `reply` sink answers requests, so the graph has an `http` source, and an `http`
/// source's requests are answered, so the graph has a `reply` sink.
fn check_replies(r: &mut Report, raw: &RawGraph, sources: &[SourceSpec], sinks: &[SinkSpec]) {
    let http = sources.iter().position(|s| matches!(s.kind, SourceKind::Http(_)));
    let reply = sinks.iter().position(|s| matches!(s.kind, SinkKind::Reply));
    match (http, reply) {
        (None, Some(k)) => {
            let (id, sink) = raw.sinks.iter().nth(k).expect("one raw sink per sink");
            r.at(
                sink.kind.span(),
                format!(
                    "sink `{}` (kind reply) answers HTTP requests, and no source has kind = \"http\"",
                    id.get_ref()
                ),
            );
        }
        (Some(i), None) => {
            let (id, source) = raw.sources.iter().nth(i).expect("one raw source per source");
            r.at(
                source.kind.span(),
                format!(
                    "source `{}` (kind http) needs a sink with kind = \"reply\" to answer its requests",
                    id.get_ref()
                ),
            );
        }
        _ => {}
    }
}

/// An `http` source's settings, with their defaults.
fn http(r: &mut Report, name: &str, s: &RawSource) -> HttpSpec {
    let listen = match &s.listen {
        Some(l) => {
            match l.get_ref().parse::<std::net::SocketAddr>() {
                Ok(addr) => addr,
                Err(e) => {
                    r.at(
                    l.span(),
                    format!("source `{name}`: `listen` must be an address and port such as 127.0.0.1:8080: {e}"),
                );
                    DEFAULT_HTTP_LISTEN
                }
            }
        }
        None => DEFAULT_HTTP_LISTEN,
    };
    let path = match &s.path {
        Some(p) if !p.get_ref().starts_with('/') => {
            r.at(
                p.span(),
                format!("source `{name}`: `path` is the URL path served and starts with `/`"),
            );
            "/".to_owned()
        }
        Some(p) => p.get_ref().clone(),
        None => "/".to_owned(),
    };
    let positive = |r: &mut Report, field: &Option<Spanned<u64>>, what: &str, default: u64| match field {
        Some(v) if *v.get_ref() == 0 => {
            r.at(v.span(), format!("source `{name}`: `{what}` must be at least 1"));
            default
        }
        Some(v) => *v.get_ref(),
        None => default,
    };
    let mut headers = Vec::new();
    for h in &s.headers {
        let lower = h.get_ref().to_ascii_lowercase();
        if axum::http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            r.at(
                h.span(),
                format!("source `{name}`: `{}` is not an HTTP header name", h.get_ref()),
            );
        }
        headers.push(lower);
    }
    if let (Some(h), Some(f)) = (&s.key_header, &s.key_field) {
        let both = h.span().start.min(f.span().start)..h.span().end.max(f.span().end);
        r.at(
            both,
            format!("source `{name}`: the key comes from `key_header` or `key_field`, not both"),
        );
    }
    HttpSpec {
        listen,
        path,
        key_header: s.key_header.as_ref().map(|h| h.get_ref().to_ascii_lowercase()),
        key_field: s.key_field.as_ref().map(|f| f.get_ref().clone()),
        headers,
        max_body: positive(r, &s.max_body_bytes, "max_body_bytes", 1 << 20) as usize,
        max_in_flight: positive(r, &s.max_in_flight, "max_in_flight", 1024) as usize,
        timeout: Duration::from_millis(positive(r, &s.timeout_ms, "timeout_ms", 5000)),
        expose_errors: s.expose_errors.as_ref().is_none_or(|e| *e.get_ref()),
    }
}

/// Where an `http` source listens when the manifest does not say.
const DEFAULT_HTTP_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

fn source(r: &mut Report, dir: &Path, id: &Spanned<String>, s: &RawSource) -> SourceSpec {
    let name = id.get_ref();
    let kind = *s.kind.get_ref();
    let what = format!("source `{name}` (kind {})", format!("{kind:?}").to_lowercase());
    let file = |r: &mut Report| match &s.path {
        Some(p) => {
            let path = resolve(dir, p);
            // A file, or a named pipe a writer streams into (not a folder).
            if !path.exists() || path.is_dir() {
                r.at(
                    p.span(),
                    format!("source `{name}`: file not found: {}", path.display()),
                );
            }
            path
        }
        None => {
            r.at(s.kind.span(), format!("source `{name}` needs a `path`"));
            PathBuf::new()
        }
    };
    if kind != raw::SourceKind::Jsonl {
        if kind != raw::SourceKind::Http {
            not_for(r, span(&s.key_field), "key_field", &what);
        }
        not_for(r, span(&s.timestamp_field), "timestamp_field", &what);
    }
    if kind != raw::SourceKind::Http {
        not_for(r, span(&s.listen), "listen", &what);
        not_for(r, span(&s.key_header), "key_header", &what);
        not_for(r, s.headers.first().map(|h| h.span()), "headers", &what);
        not_for(r, span(&s.max_body_bytes), "max_body_bytes", &what);
        not_for(r, span(&s.max_in_flight), "max_in_flight", &what);
        not_for(r, span(&s.timeout_ms), "timeout_ms", &what);
        not_for(r, span(&s.expose_errors), "expose_errors", &what);
    }
    if kind != raw::SourceKind::Generator {
        not_for(r, span(&s.count), "count", &what);
        not_for(r, span(&s.payload_size), "payload_size", &what);
        not_for(r, span(&s.keys), "keys", &what);
    }
    if kind != raw::SourceKind::Kafka {
        not_for(r, span(&s.topic), "topic", &what);
    }
    let kind = match kind {
        raw::SourceKind::File => SourceKind::File { path: file(r) },
        raw::SourceKind::Messages => SourceKind::Messages { path: file(r) },
        raw::SourceKind::Jsonl => SourceKind::Jsonl {
            path: file(r),
            key_field: s.key_field.as_ref().map(|f| f.get_ref().clone()),
            timestamp_field: s.timestamp_field.as_ref().map(|f| f.get_ref().clone()),
        },
        raw::SourceKind::Kafka => {
            not_for(r, span(&s.path), "path", &what);
            SourceKind::Kafka {
                topic: kafka_topic(r, &s.kind, &s.topic, &format!("source `{name}`")),
            }
        }
        raw::SourceKind::Http => SourceKind::Http(http(r, name, s)),
        raw::SourceKind::Stdin | raw::SourceKind::Generator => {
            not_for(r, span(&s.path), "path", &what);
            if kind == raw::SourceKind::Stdin {
                SourceKind::Stdin
            } else {
                SourceKind::Generator {
                    count: s.count.as_ref().map(|c| *c.get_ref()),
                    payload_size: match &s.payload_size {
                        Some(p) if *p.get_ref() > MAX_PAYLOAD_SIZE => {
                            let size = *p.get_ref();
                            r.at(
                                p.span(),
                                format!("source `{name}`: payload_size must be at most {MAX_PAYLOAD_SIZE} (1 MiB), not {size}"),
                            );
                            DEFAULT_PAYLOAD_SIZE
                        }
                        Some(p) => *p.get_ref(),
                        None => DEFAULT_PAYLOAD_SIZE,
                    },
                    keys: s.keys.as_ref().map(|k| *k.get_ref()).filter(|&k| k > 0),
                }
            }
        }
    };
    let watermark = s.watermark.as_ref().map(|w| {
        let timed = match &kind {
            SourceKind::Jsonl { timestamp_field, .. } => timestamp_field.is_some(),
            SourceKind::Messages { .. } | SourceKind::Generator { .. } | SourceKind::Kafka { .. } => true,
            SourceKind::Http(_) => true,
            SourceKind::File { .. } | SourceKind::Stdin => false,
        };
        if !timed {
            r.at(
                w.span(),
                format!(
                    "source `{name}`: `watermark` needs event time, and its messages have no timestamp{}",
                    if matches!(kind, SourceKind::Jsonl { .. }) {
                        " (set `timestamp_field`)"
                    } else {
                        " (read them as `jsonl` with a `timestamp_field`, or as `messages`)"
                    }
                ),
            );
        }
        let w = w.get_ref();
        let ms = Duration::from_millis;
        WatermarkSpec {
            out_of_orderness: ms(w.out_of_orderness_ms),
            idle: w.idle_ms.map(ms),
        }
    });
    SourceSpec {
        id: name.clone(),
        kind,
        watermark,
    }
}

/// The `topic` a Kafka source or sink needs, checked.
fn kafka_topic<K>(r: &mut Report, kind: &Spanned<K>, topic: &Option<Spanned<String>>, what: &str) -> String {
    match topic {
        Some(t) => {
            edges::check_topic(r, t, what);
            t.get_ref().clone()
        }
        None => {
            r.at(kind.span(), format!("{what} needs a `topic`"));
            String::new()
        }
    }
}

fn span<T>(field: &Option<Spanned<T>>) -> Option<Range<usize>> {
    field.as_ref().map(Spanned::span)
}

fn positive<T: Copy + PartialOrd + Default + std::fmt::Display>(
    r: &mut Report,
    v: &Option<Spanned<T>>,
    default: T,
    max: Option<T>,
    what: &str,
) -> T {
    let Some(v) = v else { return default };
    let x = *v.get_ref();
    if x <= T::default() || max.is_some_and(|m| x > m) {
        let range = max.map_or(String::from("greater than 0"), |m| format!("between 1 and {m}"));
        r.at(v.span(), format!("{what} must be {range}, not {x}"));
    }
    x
}

fn node(
    r: &mut Report,
    dir: &Path,
    id: &Spanned<String>,
    n: &RawNode,
    sink_index: &dyn Fn(&str) -> Option<usize>,
) -> NodeSpec {
    let name = id.get_ref();
    let given: Vec<(&str, &Spanned<String>)> =
        [("module", &n.module), ("crate", &n.krate), ("python", &n.python)]
            .into_iter()
            .filter_map(|(key, v)| Some((key, v.as_ref()?)))
            .collect();
    let module = match given[..] {
        [("module", m)] => {
            let path = resolve(dir, m);
            if !path.is_file() {
                r.at(m.span(), format!("node `{name}`: module not found: {} (build it with `cargo build --target wasm32-wasip1 --release`, or give `crate = \"...\"` to have flowhost build it)", path.display()));
            }
            ModuleRef::File(path)
        }
        [("crate", c)] => {
            let path = resolve(dir, c);
            if !path.join("Cargo.toml").is_file() {
                r.at(
                    c.span(),
                    format!("node `{name}`: no Cargo.toml in crate folder {}", path.display()),
                );
            }
            ModuleRef::Crate(path)
        }
        [(_, p)] => {
            let path = resolve(dir, p);
            if !path.is_file() || path.extension().is_none_or(|e| e != "py") {
                r.at(
                    p.span(),
                    format!(
                        "node `{name}`: no Python app module (a `.py` file) at {}",
                        path.display()
                    ),
                );
            }
            ModuleRef::Python(path)
        }
        [] => {
            r.at(
                id.span(),
                format!("node `{name}` needs `module = \"path.wasm\"`, `crate = \"path/to/crate\"` or `python = \"app.py\"`"),
            );
            ModuleRef::File(PathBuf::new())
        }
        [_, (second, v), ..] => {
            let keys: Vec<String> = given.iter().map(|(k, _)| format!("`{k}`")).collect();
            r.at(
                v.span(),
                format!(
                    "node `{name}` gives {} (`{second}` here); keep one",
                    keys.join(" and ")
                ),
            );
            ModuleRef::File(PathBuf::new())
        }
    };
    let replicas = positive(r, &n.replicas, 1, Some(256), &format!("node `{name}`: replicas"));
    let timeout_ms = positive(
        r,
        &n.timeout_ms,
        DEFAULT_TIMEOUT_MS,
        None,
        &format!("node `{name}`: timeout_ms"),
    );
    let memory_mb = positive(
        r,
        &n.memory_mb,
        DEFAULT_MEMORY_MB,
        Some(MAX_MEMORY_MB),
        &format!("node `{name}`: memory_mb"),
    );
    let max_output_mb = positive(
        r,
        &n.max_output_mb,
        DEFAULT_MAX_OUTPUT_MB,
        Some(MAX_MEMORY_MB),
        &format!("node `{name}`: max_output_mb"),
    );
    let policy = n.on_error.as_ref().map_or(OnError::Stop, |p| *p.get_ref());
    let on_error = match (policy, &n.dead_letter) {
        (OnError::DeadLetter, Some(sink)) => match sink_index(sink.get_ref()) {
            Some(i) => ErrorPolicy::DeadLetter(i),
            None => {
                r.at(
                    sink.span(),
                    format!("node `{name}`: dead_letter `{}` is not a sink", sink.get_ref()),
                );
                ErrorPolicy::Stop
            }
        },
        (OnError::DeadLetter, None) => {
            let span = n.on_error.as_ref().map_or(id.span(), |p| p.span());
            r.at(
                span,
                format!("node `{name}`: on_error = \"dead-letter\" needs `dead_letter = \"<sink>\"`"),
            );
            ErrorPolicy::Stop
        }
        (_, Some(sink)) => {
            r.at(
                sink.span(),
                format!("node `{name}`: dead_letter is set but on_error is not \"dead-letter\""),
            );
            ErrorPolicy::Stop
        }
        (OnError::Stop, None) => ErrorPolicy::Stop,
        (OnError::Skip, None) => ErrorPolicy::Skip,
    };
    let config_json = serde_json::to_string(&n.config).unwrap_or_else(|e| {
        r.at(
            id.span(),
            format!("node `{name}`: config cannot be passed as JSON: {e}"),
        );
        String::from("{}")
    });
    NodeSpec {
        id: name.clone(),
        module,
        config_json,
        replicas,
        timeout: Duration::from_millis(timeout_ms),
        memory_mb,
        max_output: (max_output_mb as usize) << 20,
        on_error,
        inputs: Vec::new(),
        outputs: Vec::new(),
        state: n
            .state
            .iter()
            .map(|(store, access)| (store.get_ref().clone(), *access))
            .collect(),
        retry: retry(r, name, n.retry.as_ref()),
        sha256: sha256(r, name, n),
        fuel: n
            .fuel
            .as_ref()
            .map(|_| positive(r, &n.fuel, 1, None, &format!("node `{name}`: fuel"))),
        sandbox: sandbox(r, dir, name, n),
        auto_rollback: n.auto_rollback.as_ref().map(|a| auto_rollback(r, name, a)),
    }
}

fn auto_rollback(r: &mut Report, name: &str, raw: &RawAutoRollback) -> AutoRollback {
    let rate = *raw.error_rate.get_ref();
    if !(0.0..=1.0).contains(&rate) {
        r.at(
            raw.error_rate.span(),
            format!("node `{name}`: auto_rollback.error_rate must be between 0 and 1, not {rate}"),
        );
    }
    AutoRollback {
        error_rate: rate,
        messages: positive(
            r,
            &raw.messages,
            AutoRollback::DEFAULT_MESSAGES,
            Some(1_000_000_000),
            &format!("node `{name}`: auto_rollback.messages"),
        ),
    }
}

fn retry(r: &mut Report, name: &str, raw: Option<&RawRetry>) -> RetryPolicy {
    let default = RetryPolicy::default();
    let Some(raw) = raw else { return default };
    let what = |field: &str| format!("node `{name}`: retry.{field}");
    let attempts = positive(r, &raw.attempts, default.attempts, Some(100), &what("attempts"));
    let ms = |v: &Option<Spanned<u64>>, d: Duration, field: &str, r: &mut Report| {
        Duration::from_millis(positive(
            r,
            v,
            d.as_millis() as u64,
            Some(3_600_000),
            &what(field),
        ))
    };
    let backoff = ms(&raw.backoff_ms, default.backoff, "backoff_ms", r);
    let max_backoff = ms(
        &raw.max_backoff_ms,
        default.max_backoff.max(backoff),
        "max_backoff_ms",
        r,
    );
    if let Some(m) = &raw.max_backoff_ms
        && max_backoff < backoff
    {
        r.at(
            m.span(),
            format!(
                "{} ({}) is less than backoff_ms ({})",
                what("max_backoff_ms"),
                m.get_ref(),
                backoff.as_millis()
            ),
        );
    }
    RetryPolicy {
        attempts,
        backoff,
        max_backoff,
    }
}

fn sha256(r: &mut Report, name: &str, n: &RawNode) -> Option<String> {
    let sha = n.sha256.as_ref()?;
    let hex = sha.get_ref().to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        r.at(
            sha.span(),
            format!("node `{name}`: sha256 must be 64 hex digits (`sha256sum module.wasm`)"),
        );
    } else if n.krate.is_some() || n.python.is_some() {
        r.at(
            sha.span(),
            format!(
                "node `{name}`: sha256 pins a built module; use `module = \"...\"`, not `crate` or `python`"
            ),
        );
    }
    Some(hex)
}

fn sandbox(r: &mut Report, dir: &Path, name: &str, n: &RawNode) -> Sandbox {
    let mut env = Vec::new();
    for var in &n.env {
        let v = var.get_ref();
        if v.is_empty() || v.contains('=') || v.contains('\0') {
            r.at(
                var.span(),
                format!("node `{name}`: `{v}` is not an environment variable name"),
            );
        } else if env.contains(v) {
            r.at(
                var.span(),
                format!("node `{name}`: environment variable `{v}` is granted twice"),
            );
        } else {
            env.push(v.clone());
        }
    }
    let mut read_dirs = Vec::new();
    for (guest, host) in &n.read_dirs {
        let g = guest.get_ref();
        if !g.starts_with('/') || g.split('/').any(|part| part == "..") {
            r.at(
                guest.span(),
                format!("node `{name}`: read_dirs key `{g}` must be an absolute guest path like \"/data\""),
            );
        }
        let path = resolve(dir, host);
        if !path.is_dir() {
            r.at(
                host.span(),
                format!("node `{name}`: read_dirs `{g}`: no directory {}", path.display()),
            );
        }
        read_dirs.push((g.clone(), path));
    }
    let mut calls = Vec::new();
    for (endpoint, url) in &n.calls {
        let (e, u) = (endpoint.get_ref(), url.get_ref());
        let ok = u
            .parse::<axum::http::Uri>()
            .ok()
            .filter(|uri| uri.scheme_str() == Some("http") && uri.authority().is_some());
        if ok.is_none() {
            r.at(
                url.span(),
                format!("node `{name}`: calls `{e}`: `{u}` is not an http:// URL with a host (such as http://127.0.0.1:8080/quote)"),
            );
        }
        calls.push((e.clone(), u.clone()));
    }
    Sandbox {
        env,
        read_dirs,
        calls,
    }
}

/// Store names are ids too, and every store a node is granted must be declared.
/// A dead-letter sink must keep what replay needs: the error, node and port headers.
fn check_dead_letter_formats(r: &mut Report, raw: &RawGraph, nodes: &[NodeSpec], sinks: &[SinkSpec]) {
    for (n, (id, raw_node)) in nodes.iter().zip(&raw.nodes) {
        let ErrorPolicy::DeadLetter(k) = n.on_error else {
            continue;
        };
        let sink = &sinks[k];
        // (A Kafka sink keeps the headers whatever its format; a null sink keeps nothing.)
        if sink.format == SinkFormat::Text && matches!(sink.kind, SinkKind::File(_) | SinkKind::Stdout) {
            let span = raw_node.dead_letter.as_ref().map_or(id.span(), Spanned::span);
            r.at(
                span,
                format!(
                    "node `{}`: dead-letter sink `{}` writes format = \"text\", which keeps only the payload: the error, node and port are lost and `flowhost replay` cannot read it (set `format = \"json\"` on sink `{}`)",
                    id.get_ref(),
                    sink.id,
                    sink.id
                ),
            );
        }
    }
}

fn check_grants(r: &mut Report, raw: &RawGraph) {
    for id in raw.stores.keys() {
        check_id(r, id, "store name");
        if !raw
            .nodes
            .values()
            .any(|n| n.state.keys().any(|s| s.get_ref() == id.get_ref()))
        {
            r.warn_at(
                id.span(),
                format!("store `{}` is declared but no node is granted it", id.get_ref()),
            );
        }
    }
    for (id, n) in &raw.nodes {
        for store in n.state.keys() {
            if !raw.stores.keys().any(|s| s.get_ref() == store.get_ref()) {
                r.at(
                    store.span(),
                    format!(
                        "node `{}` is granted store `{}`, which is not declared (add `[stores.{}]`)",
                        id.get_ref(),
                        store.get_ref(),
                        store.get_ref()
                    ),
                );
            }
        }
    }
}

fn sink(r: &mut Report, dir: &Path, id: &Spanned<String>, s: &RawSink) -> SinkSpec {
    let name = id.get_ref();
    let kind = *s.kind.get_ref();
    if kind != raw::SinkKind::Kafka {
        let what = format!("sink `{name}` (kind {})", format!("{kind:?}").to_lowercase());
        not_for(r, span(&s.topic), "topic", &what);
    }
    let kind = match (kind, &s.path) {
        (raw::SinkKind::Kafka, None) => {
            SinkKind::Kafka(kafka_topic(r, &s.kind, &s.topic, &format!("sink `{name}`")))
        }
        (raw::SinkKind::File, Some(p)) => SinkKind::File(resolve(dir, p)),
        (raw::SinkKind::File, None) => {
            r.at(s.kind.span(), format!("sink `{name}` needs a `path`"));
            SinkKind::Null
        }
        (kind, Some(p)) => {
            r.at(
                p.span(),
                format!(
                    "`path` does not apply to sink `{name}` (kind {})",
                    format!("{kind:?}").to_lowercase()
                ),
            );
            SinkKind::Null
        }
        (raw::SinkKind::Stdout, None) => SinkKind::Stdout,
        (raw::SinkKind::Reply, None) => SinkKind::Reply,
        (raw::SinkKind::Null, None) => SinkKind::Null,
    };
    SinkSpec {
        id: name.clone(),
        kind,
        format: s.format,
    }
}
