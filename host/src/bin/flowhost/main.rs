//! The `flowhost` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod bench;
mod client;
mod new;
mod state;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flowhost::admin;
use flowhost::engine::{Engine, EngineConfig};
use flowhost::manifest::{Graph, picture};
use flowhost::plan::Plan;
use flowhost::shutdown::Shutdown;
use flowhost::topology::RunOptions;
use flowhost::topology::status::Phase;
use state::Saved;

#[derive(Parser)]
#[command(
    name = "flowhost",
    version,
    about = "Run dataflow graphs of sandboxed WebAssembly functions"
)]
struct Cli {
    /// Only warnings and errors on stderr; no summary.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a graph until its sources end (Ctrl-C stops it gracefully).
    Run {
        /// The graph manifest.
        manifest: PathBuf,
        /// Messages per batch read from a source.
        #[arg(long, default_value_t = RunOptions::default().batch_size)]
        batch_size: usize,
        /// Batches a channel holds before its producer waits.
        #[arg(long, default_value_t = RunOptions::default().channel_capacity)]
        channel_capacity: usize,
        /// Discard the saved state of durable stores and read the sources from the start
        /// (by default an interrupted run resumes, and durable stores keep their data).
        #[arg(long)]
        fresh: bool,
        /// Serve /status, /metrics and sink tails on this loopback address while running
        /// (`--admin` alone: 127.0.0.1:9464).
        #[arg(long, num_args = 0..=1, default_missing_value = admin::DEFAULT_ADDR)]
        admin: Option<std::net::SocketAddr>,
        /// How often each node replica reports it is alive; three missed beats mark it stale.
        #[arg(long, default_value_t = 1000)]
        heartbeat_ms: u64,
        /// Hot-swap a node when its module file (or its crate's sources) change, and
        /// reconfigure nodes (or change the graph, as `flowhost apply` does) when the
        /// manifest changes, without restarting the graph.
        #[arg(long)]
        watch: bool,
        /// How messages travel between vertices (overrides the manifest's `transport`).
        #[arg(long, value_enum)]
        transport: Option<TransportArg>,
        /// Kafka bootstrap brokers, HOST:PORT[,HOST:PORT…] (overrides `[kafka] brokers`).
        #[arg(long)]
        brokers: Option<String>,
        /// Kafka transport: run only these nodes, sources and sinks in this process
        /// (comma-separated); other processes run the rest and share the work.
        #[arg(long, value_delimiter = ',')]
        nodes: Option<Vec<String>>,
    },
    /// Feed the messages a node dead-lettered back into it (after a fix), and through
    /// everything downstream; exits 1 if some fail again.
    Replay {
        /// The graph manifest.
        manifest: PathBuf,
        /// The dead-letter sink to replay (a file sink with format = "json").
        dead_letter: String,
        /// The node to feed.
        #[arg(long)]
        into: String,
        /// Run the node with this module instead of the manifest's.
        #[arg(long)]
        module: Option<PathBuf>,
        /// Replay every message in the file, whichever node dead-lettered it.
        #[arg(long)]
        all: bool,
    },
    /// Print the JSON Schema of graph.toml (shipped as graphs/graph.schema.json).
    Schema,
    /// Show the status of a running graph: from its admin endpoint, or, given a Kafka
    /// graph's manifest, of every process running it (from the graph's status topic).
    Status {
        /// A Kafka graph's manifest: show every process that runs it.
        manifest: Option<PathBuf>,
        /// Kafka bootstrap brokers (overrides `[kafka] brokers`), with a manifest.
        #[arg(long)]
        brokers: Option<String>,
        /// The admin endpoint of `flowhost run --admin`.
        #[arg(long, default_value = admin::DEFAULT_ADDR)]
        admin: String,
        /// The full status as JSON.
        #[arg(long)]
        json: bool,
        /// Refresh every second until the graph ends.
        #[arg(long)]
        watch: bool,
    },
    /// Replace a node's module in a running graph (through its admin endpoint) without
    /// stopping it; exits 1 if the new module is refused (the old one keeps running).
    Swap {
        /// The node.
        node: String,
        /// The new module (`.wasm`, a core module or a component).
        #[arg(required_unless_present = "rollback", conflicts_with = "rollback")]
        module: Option<PathBuf>,
        /// Return to the node's previous version instead.
        #[arg(long)]
        rollback: bool,
        /// Roll back on its own if more than this share (0 to 1) of the new module's first
        /// `--within` messages fail (default: the node's `auto_rollback` in the manifest).
        #[arg(long, value_name = "RATE")]
        auto_rollback: Option<f64>,
        /// Messages the new module is judged on.
        #[arg(long, value_name = "MESSAGES", requires = "auto_rollback",
              default_value_t = flowhost::manifest::AutoRollback::DEFAULT_MESSAGES)]
        within: u64,
        /// The admin endpoint of `flowhost run --admin`.
        #[arg(long, default_value = admin::DEFAULT_ADDR)]
        admin: String,
        /// A Kafka graph's manifest: swap the node in every process that runs it,
        /// through the graph's control topic (each process answers).
        #[arg(long, conflicts_with = "auto_rollback")]
        graph: Option<PathBuf>,
        /// Kafka bootstrap brokers (overrides `[kafka] brokers`), with `--graph`.
        #[arg(long, requires = "graph")]
        brokers: Option<String>,
        /// The swap's record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a running graph to what its changed manifest says, without a restart (nodes,
    /// sources, sinks and edges added or removed, replicas, ports, config, modules, error
    /// policies): nothing in flight is lost or repeated. Exits 1 if the change is refused
    /// (the graph runs on untouched). A Kafka graph's change goes to every process of it
    /// through its control topic, each answering.
    Apply {
        /// The changed manifest.
        manifest: PathBuf,
        /// The admin endpoint of `flowhost run --admin` (an in-process graph's; the
        /// default for one).
        #[arg(long, conflicts_with = "brokers")]
        admin: Option<String>,
        /// Kafka bootstrap brokers (overrides `[kafka] brokers`) of a Kafka graph.
        #[arg(long)]
        brokers: Option<String>,
        /// Keep watching the manifest: apply it again whenever it changes.
        #[arg(long)]
        watch: bool,
        /// The change's record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print what a sink of a running graph writes, as it writes it.
    Tail {
        /// The sink.
        sink: String,
        /// The admin endpoint of `flowhost run --admin`.
        #[arg(long, default_value = admin::DEFAULT_ADDR)]
        admin: String,
        /// Whole messages as JSON (key, payload, timestamp, headers), not just payloads.
        #[arg(long)]
        json: bool,
    },
    /// Create a node crate: builds for wasm32-wasip1, has a unit test and a graph to run it.
    New {
        /// The crate's name (and folder).
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The flowhost guest SDK to depend on (a `guest-sdk` folder); by default the one
        /// this binary carries, written to a versioned folder of its own.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Show what a graph's durable stores hold (from its last checkpoint).
    State {
        /// The graph manifest.
        manifest: PathBuf,
        #[command(subcommand)]
        query: Option<StateQuery>,
    },
    /// Check a graph manifest and report every problem in it.
    Validate {
        /// The graph manifest.
        manifest: PathBuf,
    },
    /// Draw a graph (validated first): sources, nodes, sinks, stores; ports and connections.
    Graph {
        /// The graph manifest.
        manifest: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "dot")]
        format: picture::Format,
    },
    /// Measure messages/s through a wasm node and the boundary cost against native code.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum StateQuery {
    /// Print the value of one key (exit 1 if it is absent).
    Get {
        /// The store.
        store: String,
        /// The key (as text).
        key: String,
    },
    /// Print every entry of a store, in key order.
    Dump {
        /// The store.
        store: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// One JSON object per line: key, value, expires.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    flowhost::plan::quiet_builds(cli.quiet);
    let default_level = if cli.quiet { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { manifest } => {
            let graph = Graph::load(&manifest)?;
            for w in graph.warning_lines() {
                eprintln!("{w}");
            }
            let bad_modules = flowhost::plan::check_module_files(&graph);
            if !bad_modules.is_empty() {
                for e in &bad_modules {
                    eprintln!("error: {}: {e}", manifest.display());
                }
                return Ok(ExitCode::from(2));
            }
            println!(
                "{}: graph `{}` is valid: {} sources, {} nodes, {} sinks, {} edges",
                manifest.display(),
                graph.name,
                graph.sources.len(),
                graph.nodes.len(),
                graph.sinks.len(),
                graph.edges.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::New { name, dir, sdk } => {
            let root = new::create(&dir, &name, sdk.as_deref())?;
            println!("created node crate `{name}` in {}", root.display());
            println!("  cd {} && cargo test", root.display());
            println!("  cargo build --target wasm32-wasip1 --release");
            println!("  echo hello | flowhost run graph.toml");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            manifest: Some(manifest),
            brokers,
            json,
            watch,
            ..
        } => {
            let graph = kafka_graph(&manifest, brokers)?;
            loop {
                let processes = flowhost::beacon::read(&graph)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&processes)?);
                } else {
                    let table = client::processes_table(&graph.name, &processes);
                    if watch {
                        print!("\x1b[2J\x1b[H{table}");
                    } else {
                        print!("{table}");
                    }
                }
                if !watch {
                    return Ok(ExitCode::SUCCESS);
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        Command::Status {
            admin, json, watch, ..
        } => loop {
            let report = client::fetch_status(&admin);
            match (&report, watch) {
                (Ok(r), _) if json => println!("{}", serde_json::to_string_pretty(r)?),
                (Ok(r), true) => print!("\x1b[2J\x1b[H{}", client::table(r)),
                (Ok(r), false) => print!("{}", client::table(r)),
                (Err(_), true) => return Ok(ExitCode::SUCCESS),
                (Err(_), false) => {}
            }
            let report = report?;
            let ended = matches!(report.state, Phase::Stopped | Phase::Failed);
            if !watch || ended {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        },
        Command::Tail { sink, admin, json } => {
            let mut after = 0;
            while let Some(msgs) = client::fetch_tail(&admin, &sink, after)? {
                for (n, m) in msgs {
                    after = n;
                    match (&m["payload"], json) {
                        (_, true) => println!("{m}"),
                        (serde_json::Value::String(text), false) => println!("{text}"),
                        (other, false) => println!("{other}"),
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Swap {
            node,
            module,
            rollback,
            graph: Some(manifest),
            brokers,
            json,
            ..
        } => {
            let graph = kafka_graph(&manifest, brokers)?;
            anyhow::ensure!(
                graph.nodes.iter().any(|n| n.id == node),
                "{}: graph `{}` has no node `{node}`",
                manifest.display(),
                graph.name
            );
            let (bytes, name) = match &module {
                Some(path) if !rollback => (
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                    path.display().to_string(),
                ),
                _ => (Vec::new(), String::new()),
            };
            let command = flowhost::control::Command {
                id: command_id(),
                node,
                rollback,
                name,
                manifest: None,
                modules: Vec::new(),
            };
            let done = send_to_all(&graph, &command, &bytes, json)?;
            Ok(if done {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Swap {
            node,
            module,
            rollback,
            auto_rollback,
            within,
            admin,
            json,
            ..
        } => {
            let trial = auto_rollback.map(|error_rate| flowhost::manifest::AutoRollback {
                error_rate,
                messages: within.max(1),
            });
            let req = match &module {
                Some(path) if !rollback => client::SwapRequest::Module(path, trial),
                _ => client::SwapRequest::Rollback,
            };
            let record = client::request_swap(&admin, &node, req)?;
            let done = record.outcome == flowhost::topology::swap::Outcome::Done;
            match (json, done) {
                (true, _) => println!("{}", serde_json::to_string_pretty(&record)?),
                (false, true) => println!("{record}"),
                (false, false) => eprintln!("error: {record}"),
            }
            Ok(if done {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Apply {
            manifest,
            admin,
            brokers,
            watch,
            json,
        } => {
            // A Kafka graph's change goes to all its processes, unless one is named.
            let kafka = admin.is_none()
                && (brokers.is_some()
                    || Graph::load(&manifest)
                        .is_ok_and(|g| g.transport == flowhost::manifest::Transport::Kafka));
            let admin = admin.unwrap_or_else(|| admin::DEFAULT_ADDR.to_owned());
            let apply = || match kafka {
                true => apply_to_all(&manifest, brokers.clone(), json),
                false => client::apply(&admin, &manifest, json),
            };
            let mut applied = apply()?;
            if watch {
                client::on_change(&manifest, || {
                    applied = apply()?;
                    Ok(())
                })?;
            }
            Ok(if applied {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&flowhost::manifest::schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { manifest, format } => {
            let graph = Graph::load(&manifest)?;
            print!("{}", picture::render(&graph, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::State { manifest, query } => {
            let graph = Graph::load(&manifest)?;
            let saved = Saved::read(&graph)?;
            match query {
                None => print!("{}", saved.summary()),
                Some(StateQuery::Dump { store, prefix, json }) => {
                    print!("{}", saved.dump(&store, &prefix, json)?)
                }
                Some(StateQuery::Get { store, key }) => match saved.get(&store, &key)? {
                    Some(value) => println!("{value}"),
                    None => {
                        eprintln!("store `{store}` has no key `{key}`");
                        return Ok(ExitCode::FAILURE);
                    }
                },
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            manifest,
            batch_size,
            channel_capacity,
            fresh,
            admin,
            heartbeat_ms,
            watch,
            transport,
            brokers,
            nodes,
        } => {
            let mut graph = Graph::load(&manifest)?;
            for w in graph.warning_lines() {
                tracing::warn!("{w}");
            }
            match transport {
                Some(TransportArg::Kafka) => graph.transport = flowhost::manifest::Transport::Kafka,
                Some(TransportArg::InProcess) => graph.transport = flowhost::manifest::Transport::InProcess,
                None => {}
            }
            if brokers.is_some() {
                graph.kafka.brokers = brokers;
            }
            let engine = Engine::new(EngineConfig::for_graph(&graph))?;
            let shutdown = stop_on_ctrl_c()?;
            let opts = RunOptions {
                batch_size: batch_size.max(1),
                channel_capacity: channel_capacity.max(1),
                fresh,
                heartbeat: std::time::Duration::from_millis(heartbeat_ms.max(1)),
                tails: admin.is_some(),
                append: false,
            };
            let plan = Plan::resolve(graph, nodes.as_deref())?;
            let _graph = tracing::info_span!("graph", graph = %plan.graph.name).entered();
            // The observers: started from the running graph's status, stopped when it ends.
            let kafka = plan.graph.transport == flowhost::manifest::Transport::Kafka;
            let graph = plan.graph.clone();
            let observe = |status: &Arc<flowhost::topology::Status>, stores: &flowhost::state::Stores| {
                let admin = admin
                    .map(|addr| flowhost::admin::serve(addr, status.clone(), &graph))
                    .transpose()?;
                let watch = watch
                    .then(|| flowhost::watch::start(&manifest, &graph, status.clone(), stores.clone()))
                    .transpose()?;
                // Over Kafka, heartbeats on the graph's status topic (every process in one
                // view), and the commands of the control topic.
                let beacon = kafka
                    .then(|| flowhost::beacon::Beacon::start(&graph, status.clone()))
                    .transpose()?;
                let control = kafka
                    .then(|| flowhost::control::Control::start(&graph, status.clone()))
                    .transpose()?;
                let progress = !cli.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
                let progress = progress.then(|| flowhost::progress::Progress::start(status.clone()));
                anyhow::Ok((admin, watch, beacon, control, progress))
            };
            let (report, _observers) =
                flowhost::topology::apply::run_live(plan, &engine, &opts, &shutdown, observe)?;
            if !cli.quiet {
                eprint!("{report}");
            }
            Ok(match report.failure {
                Some(failure) => {
                    eprintln!("error: {failure}");
                    match shutdown.later_failures() {
                        0 => {}
                        n => eprintln!("  ({n} more failure(s) after it, logged at debug level)"),
                    }
                    ExitCode::FAILURE
                }
                None if shutdown.was_interrupted() => ExitCode::from(130),
                None => ExitCode::SUCCESS,
            })
        }
        Command::Replay {
            manifest,
            dead_letter,
            into,
            module,
            all,
        } => {
            let graph = Graph::load(&manifest)?;
            let engine = Engine::new(EngineConfig::for_graph(&graph))?;
            let shutdown = stop_on_ctrl_c()?;
            let req = flowhost::replay::Replay {
                from: dead_letter,
                into,
                module,
                all,
            };
            let report = flowhost::replay::replay(&graph, &req, &engine, &RunOptions::default(), &shutdown)?;
            if let (Some(run), false) = (&report.run, cli.quiet) {
                eprint!("{run}");
            }
            print!("{report}");
            Ok(if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench(args) => bench::run(&args).map(|()| ExitCode::SUCCESS),
    }
}

/// The Kafka graph of `manifest` (its brokers overridden by `brokers`), for a command
/// that reaches every process of it.
/// A control command's id: this process and now.
fn command_id() -> String {
    format!("{}-{}", std::process::id(), flowhost::clock::now_millis())
}

/// Sends `command` (and `payload`) to every process of Kafka graph `graph` and says how
/// it went in each; whether every one did it.
fn send_to_all(
    graph: &Graph,
    command: &flowhost::control::Command,
    payload: &[u8],
    json: bool,
) -> anyhow::Result<bool> {
    // A change may wait for its graph to drain what it removes.
    let wait = std::time::Duration::from_secs(if command.manifest.is_some() { 180 } else { 60 });
    let (answers, missing) = flowhost::control::send(graph, command, payload, wait)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answers)?);
    }
    for a in answers.iter().filter(|_| !json) {
        let said = match (&a.record, &a.change) {
            (Some(r), _) => r.to_string(),
            (_, Some(c)) => c.to_string(),
            (None, None) => "its graph has no such node".into(),
        };
        match a.applied() {
            true => println!("{}: {said}", a.process),
            false => eprintln!("error: {}: {said}", a.process),
        }
    }
    for p in &missing {
        eprintln!("error: {p}: no answer within {}s", wait.as_secs());
    }
    Ok(missing.is_empty() && answers.iter().all(|a| a.applied()))
}

/// `flowhost apply` of a Kafka graph: validated and its modules built and read here, the
/// change goes to every process through the control topic.
fn apply_to_all(manifest: &std::path::Path, brokers: Option<String>, json: bool) -> anyhow::Result<bool> {
    let graph = kafka_graph(manifest, brokers)?;
    let text =
        std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let plan = flowhost::plan::Plan::resolve(graph.clone(), None)?;
    let (command, payload) = flowhost::control::Command::change(command_id(), text, &plan);
    send_to_all(&graph, &command, &payload, json)
}

fn kafka_graph(manifest: &std::path::Path, brokers: Option<String>) -> anyhow::Result<Graph> {
    let mut graph = Graph::load(manifest)?;
    if brokers.is_some() {
        graph.kafka.brokers = brokers;
    }
    anyhow::ensure!(
        graph.transport == flowhost::manifest::Transport::Kafka,
        "{}: graph `{}` runs in-process: it has one process, reached through its admin endpoint (--admin ADDR)",
        manifest.display(),
        graph.name
    );
    Ok(graph)
}

/// `--transport`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    /// Channels inside this process.
    InProcess,
    /// A topic per edge, a consumer group per node.
    Kafka,
}

/// The first Ctrl-C (or SIGTERM, as systemd and Kubernetes stop a process, or SIGHUP)
/// asks the graph to drain, for at most its longest call deadline; a second one quits at
/// once.
fn stop_on_ctrl_c() -> anyhow::Result<Arc<Shutdown>> {
    let shutdown = Arc::new(Shutdown::default());
    let on_signal = shutdown.clone();
    ctrlc::set_handler(move || {
        if on_signal.is_stopping() {
            std::process::exit(130);
        }
        on_signal.interrupt();
        eprintln!("stopping: draining the graph (Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C and SIGTERM handler")?;
    Ok(shutdown)
}
