//! Helpers for flowhost's end-to-end tests: paths into the repository, node modules
//! built from `functions/` on demand (cargo decides what is stale), and running a graph
//! with its sinks captured in files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowhost::engine::{Engine, EngineConfig};
use flowhost::manifest::{Graph, SinkKind};
use flowhost::plan::Plan;
use flowhost::shutdown::Shutdown;
use flowhost::topology::{RunOptions, RunReport};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repo")
        .to_owned()
}

/// A node crate in `functions/`.
pub fn function(name: &str) -> PathBuf {
    repo().join("functions").join(name)
}

/// The `.wasm` of a node crate in `functions/`, built if missing or stale.
pub fn module(name: &str) -> anyhow::Result<PathBuf> {
    Ok(flowhost::plan::build_crate(&function(name))?)
}

/// Writes `toml` as `graph.toml` in `dir` and loads it. `{functions}` in the text is
/// replaced by the path of `functions/`.
pub fn graph_in(dir: &Path, toml: &str) -> anyhow::Result<Graph> {
    let path = dir.join("graph.toml");
    let text = toml.replace("{functions}", &repo().join("functions").display().to_string());
    std::fs::write(&path, text)?;
    Ok(Graph::load(&path)?)
}

/// The manifest of `in -> <node> -> out`: `source` is the body of `[sources.in]`, `node`
/// the body of `[nodes.<id>]`, `connection` the kind of the edge into the node. More
/// tables (another sink, say) can be appended to the text.
pub fn chain(source: &str, id: &str, node: &str, connection: &str) -> String {
    format!(
        r#"name = "chain"
[sources.in]
{source}
[nodes.{id}]
{node}
[sinks.out]
kind = "stdout"
[[edges]]
from = "in"
to = "{id}"
connection = "{connection}"
[[edges]]
from = "{id}"
to = "out"
"#
    )
}

/// What a captured run produced.
pub struct Captured {
    /// The run's report.
    pub report: RunReport,
    /// Each sink's output lines, by sink id.
    pub sinks: BTreeMap<String, Vec<String>>,
}

impl Captured {
    /// The lines a sink wrote.
    pub fn lines(&self, sink: &str) -> &[String] {
        self.sinks.get(sink).map_or(&[], Vec::as_slice)
    }

    /// The lines a sink wrote, sorted (for sinks fed by several replicas).
    pub fn sorted(&self, sink: &str) -> Vec<String> {
        let mut lines = self.lines(sink).to_vec();
        lines.sort();
        lines
    }

    /// A sink's JSON lines, parsed.
    pub fn json(&self, sink: &str) -> Vec<serde_json::Value> {
        self.lines(sink)
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// The counts of a node.
    pub fn node(&self, id: &str) -> flowhost::topology::NodeCounts {
        self.report
            .nodes
            .iter()
            .find(|(n, _, _)| n == id)
            .map(|(_, _, c)| c.clone())
            .expect("a node of the graph")
    }
}

/// Where a graph test runs: in this process, or over Kafka against a broker of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// `transport = "in-process"`.
    Memory,
    /// `transport = "kafka"`, a fresh tansu broker (4 partitions per topic).
    Kafka,
}

/// Both transports, for checks that must hold on each.
pub const BOTH: [On; 2] = [On::Memory, On::Kafka];

/// [`run_captured`] on transport `on`; over Kafka the broker lives as long as the run.
pub fn run_captured_on(graph: Graph, dir: &Path, on: On) -> anyhow::Result<Captured> {
    run_captured_on_with(graph, dir, on, &RunOptions::default())
}

/// [`run_captured_on`] with these run options.
pub fn run_captured_on_with(
    mut graph: Graph,
    dir: &Path,
    on: On,
    opts: &RunOptions,
) -> anyhow::Result<Captured> {
    let _broker = match on {
        On::Memory => None,
        On::Kafka => {
            let broker = Broker::start();
            graph.transport = flowhost::manifest::Transport::Kafka;
            graph.kafka.brokers = Some(broker.addr.clone());
            // Short sessions: the first group join waits about half of it.
            graph
                .kafka
                .properties
                .push(("session.timeout.ms".into(), "6000".into()));
            Some(broker)
        }
    };
    run_captured_with(graph, dir, opts).with_context(|| format!("on {on:?}"))
}

/// Runs `graph` with every sink redirected to a file in `dir`, and reads them back.
pub fn run_captured(graph: Graph, dir: &Path) -> anyhow::Result<Captured> {
    run_captured_with(graph, dir, &RunOptions::default())
}

/// [`run_captured`] with these run options (a batch size, say).
pub fn run_captured_with(mut graph: Graph, dir: &Path, opts: &RunOptions) -> anyhow::Result<Captured> {
    for sink in &mut graph.sinks {
        if !matches!(sink.kind, SinkKind::Null) {
            sink.kind = SinkKind::File(dir.join(format!("{}.out", sink.id)));
        }
    }
    let engine = Engine::new(EngineConfig {
        max_memory_mb: 256,
        max_instances: 32,
        cache_dir: None,
        fuel: graph.nodes.iter().any(|n| n.fuel.is_some()),
    })?;
    let plan = Plan::resolve(graph, None)?;
    let report = flowhost::run(&plan, &engine, opts, &Arc::new(Shutdown::default()))?;
    let mut sinks = BTreeMap::new();
    for sink in &plan.graph.sinks {
        if let SinkKind::File(path) = &sink.kind {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            sinks.insert(sink.id.clone(), text.lines().map(str::to_owned).collect());
        }
    }
    Ok(Captured { report, sinks })
}

/// A tansu broker (Kafka-compatible, in memory) on a free loopback port, stopped when
/// dropped. tansu comes from `scripts/kafka install`; `TANSU` may name another binary.
pub struct Broker {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
}

impl Broker {
    /// Starts one and waits until it accepts connections.
    pub fn start() -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        Broker {
            child: Broker::spawn(None, &addr),
            addr,
        }
    }

    /// Starts one inside network namespace `netns` (`ip netns exec`), listening on and
    /// advertising `addr` (an address of that namespace), and waits until it accepts
    /// connections there.
    pub fn start_in(netns: &str, addr: &str) -> Broker {
        Broker {
            child: Broker::spawn(Some(netns), addr),
            addr: addr.to_owned(),
        }
    }

    /// Stops it (kill -9), which loses everything it held (it keeps data in memory).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same address, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Broker::spawn(None, &self.addr);
    }

    fn spawn(netns: Option<&str>, addr: &str) -> Child {
        let tansu = std::env::var_os("TANSU")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let home = std::env::var_os("CARGO_HOME")
                    .map(std::path::PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
                Some(home.join("bin/tansu")).filter(|p| p.exists())
            })
            .unwrap_or_else(|| "tansu".into());
        let url = format!("tcp://{addr}");
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&tansu);
                c
            }
            None => Command::new(&tansu),
        };
        let child = command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start tansu ({}): {e}; install it with scripts/kafka install",
                    tansu.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        let listening = || match netns {
            // The test runs outside the namespace: ask from inside it.
            Some(ns) => {
                let (host, port) = addr.rsplit_once(':').expect("host:port");
                Command::new("ip")
                    .args(["netns", "exec", ns, "bash", "-c"])
                    .arg(format!("exec 3<>/dev/tcp/{host}/{port}"))
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            }
            None => std::net::TcpStream::connect(addr).is_ok(),
        };
        while !listening() {
            assert!(Instant::now() < deadline, "tansu never listened on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
