//! `flowhost bench`: each workload measured next to a baseline in the same run, reported
//! as a ratio (these machines are noisy; absolute numbers drift, ratios less so).
//!
//! | workload | flowhost | baseline |
//! |---|---|---|
//! | boundary | one batch through a wasm passthrough (frame → `process` → decode) | the same node compiled natively, same SDK runtime |
//! | passthrough | generator → wasm passthrough → counting sink | a hand-written pipeline: same threads, channels, batch size |
//! | state | `incr` from a guest, one call per message or one `incr_many` per batch | the same store operation, natively |
//! | wordcount | text file → split → count (wasm), or → tally (host store) | the same logic in plain Rust |
//! | aggregation | JSON sales → aggregate (wasm, 2 replicas, host store); the same in 1 s event-time windows | the same aggregation (and windows) in plain Rust; durable store vs memory |
//! | poison | text → faulty (dead-letter) → null, 1% invalid input or 1% panics | the same graph with 0% poison |
//! | api | HTTP requests through `graphs/api.toml` (validate → enrich → price, wasm), 64 clients | the same work in a plain axum handler |
//! | loops | connected components of a 100k-vertex graph: `propagate` around a feedback edge (in-process; over Kafka too with `--brokers`) | union-find in plain Rust |
//! | start-up | `flowhost run` of a 10-node graph to its first output, cold and warm cache | — |
//! | memory | peak RSS of a 10-node graph whose sink has stalled, over time | — |
//! | swap | output gaps of a running graph while its node is hot-swapped | gaps while no swap runs |
//! | apply | output gaps of a running graph while a branch is added to it or removed (`flowhost apply`) | gaps while no change runs |
//! | kafka | topic → wasm passthrough → topic over the Kafka transport (`--brokers`) | a raw rdkafka consume → produce loop, same broker |

mod aggregate;
mod api;
mod boundary;
mod kafka;
mod loops;
mod pipeline;
mod poison;
mod process;
mod state;
mod swap;
mod wordcount;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use flowhost::engine::{Engine, EngineConfig, LoadedModule};
use flowhost::manifest::ModuleRef;

/// Options of `flowhost bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Messages per passthrough run.
    #[arg(long, default_value_t = 2_000_000)]
    pub messages: u64,
    /// Size of the generated text for wordcount, in MB.
    #[arg(long, default_value_t = 100)]
    pub wordcount_mb: usize,
    /// How long each boundary variant is measured.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub seconds: Duration,
    /// Interleaved rounds (after a warm-up) of each throughput workload against its
    /// baseline; the table gives the median ratio and its min–max.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Small sizes, to check the benchmark itself works (figures are not meaningful).
    #[arg(long)]
    pub quick: bool,
    /// The `functions/` folder with the passthrough, split and count crates.
    #[arg(long, default_value = "functions")]
    pub functions: PathBuf,
    /// Run only these workloads (comma-separated: boundary, passthrough, state, wordcount,
    /// aggregation, poison, api, loops, start-up, memory, swap, apply, kafka).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Kafka brokers for the kafka workload (e.g. from `scripts/kafka start`); without
    /// them it is skipped.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "flowhost-bench.json")]
    pub json: PathBuf,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| e.to_string())
}

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Better {
    /// Throughput-like figures.
    Higher,
    /// Cost-like figures.
    Lower,
}

/// One line of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Workload and variant.
    pub workload: String,
    /// flowhost's figure.
    pub flowhost: f64,
    /// The baseline's figure, measured in the same run.
    pub baseline: Option<f64>,
    /// Unit of both figures.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// flowhost / baseline (with rounds: the median of the rounds' ratios).
    pub ratio: Option<f64>,
    /// With rounds: the least and the greatest of the rounds' ratios.
    pub spread: Option<[f64; 2]>,
    /// Interleaved rounds measured (after one warm-up); 1 for a single measurement.
    pub rounds: usize,
    /// The target, as text.
    pub target: String,
    /// Whether the target was met (`None`: no target).
    pub met: Option<bool>,
}

impl Row {
    fn new(
        workload: impl Into<String>,
        flowhost: f64,
        baseline: Option<f64>,
        unit: &'static str,
        better: Better,
    ) -> Row {
        let ratio = baseline.map(|b| flowhost / b);
        Row {
            workload: workload.into(),
            flowhost,
            baseline,
            unit,
            better,
            ratio,
            spread: None,
            rounds: 1,
            target: String::new(),
            met: None,
        }
    }

    /// A row from interleaved rounds: medians of both figures, the median ratio and its
    /// spread.
    fn rounds(workload: impl Into<String>, r: &Rounds, unit: &'static str, better: Better) -> Row {
        Row {
            ratio: Some(r.ratio),
            spread: Some(r.spread),
            rounds: r.n,
            ..Row::new(workload, r.ours, Some(r.base), unit, better)
        }
    }

    /// A target on the ratio: at least `min` (higher is better) or at most `max`.
    fn ratio_target(mut self, bound: f64) -> Row {
        self.target = match self.better {
            Better::Higher => format!("ratio >= {bound}"),
            Better::Lower => format!("ratio <= {bound}"),
        };
        self.met = self.ratio.map(|r| {
            if self.better == Better::Higher {
                r >= bound
            } else {
                r <= bound
            }
        });
        self
    }

    /// A target on flowhost's own figure.
    fn figure_target(mut self, bound: f64) -> Row {
        let (op, met) = match self.better {
            Better::Higher => (">=", self.flowhost >= bound),
            Better::Lower => ("<=", self.flowhost <= bound),
        };
        self.target = format!("{op} {bound} {}", self.unit);
        self.met = Some(met);
        self
    }
}

/// flowhost and its baseline measured in turns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rounds {
    /// Median of flowhost's figures.
    ours: f64,
    /// Median of the baseline's figures.
    base: f64,
    /// Median of the per-round ratios.
    ratio: f64,
    /// Least and greatest per-round ratio.
    spread: [f64; 2],
    n: usize,
}

/// Measures `ours` and `base` in turns — a warm-up pair, then `rounds` pairs, A B A B …
/// — so that the machine's drifting load falls on both alike; ratios are per round.
pub(crate) fn interleaved(
    rounds: usize,
    mut ours: impl FnMut() -> anyhow::Result<f64>,
    mut base: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<Rounds> {
    ours()?;
    base()?;
    let rounds = rounds.max(1);
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (x, y) = (ours()?, base()?);
        a.push(x);
        b.push(y);
        ratios.push(x / y);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let ratio = median(&mut ratios);
    Ok(Rounds {
        ours: median(&mut a),
        base: median(&mut b),
        ratio,
        spread: [ratios[0], ratios[ratios.len() - 1]],
        n: rounds,
    })
}

/// The whole report, as written to JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Logical cores of this machine.
    pub cores: usize,
    /// flowhost's version.
    pub version: &'static str,
    /// Seconds since the Unix epoch when the run ended.
    pub when: u64,
    /// The rows.
    pub rows: Vec<Row>,
}

/// The nodes the workloads use, built and compiled once.
pub(crate) struct Fixtures {
    engine: Engine,
    passthrough: LoadedModule,
    split: LoadedModule,
    count: LoadedModule,
    tally: LoadedModule,
    aggregate: LoadedModule,
    faulty: LoadedModule,
    stamp: LoadedModule,
    stamp_v2: LoadedModule,
    quoting: LoadedModule,
    propagate: LoadedModule,
}

impl Fixtures {
    fn new(functions: &Path) -> anyhow::Result<Fixtures> {
        let engine = Engine::new(EngineConfig::default())?;
        let load = |name: &str| -> anyhow::Result<LoadedModule> {
            let source =
                flowhost::plan::ModuleSource::resolve(&ModuleRef::Crate(functions.join(name)), None)?;
            Ok(engine.load(&source)?)
        };
        Ok(Fixtures {
            passthrough: load("passthrough")?,
            split: load("split")?,
            count: load("count")?,
            tally: load("tally")?,
            aggregate: load("aggregate")?,
            faulty: load("faulty")?,
            stamp: load("stamp")?,
            stamp_v2: load("stamp-v2")?,
            quoting: load("quoting")?,
            propagate: load("propagate")?,
            engine: engine.clone(),
        })
    }
}

/// Runs every workload, prints the table and writes the JSON.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let fx = Fixtures::new(&args.functions)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (messages, mb, seconds, rounds) = if args.quick {
        (20_000, 1, Duration::from_millis(100), 1)
    } else {
        (args.messages, args.wordcount_mb, args.seconds, args.rounds)
    };
    let mut rows = Vec::new();
    let mut step = |name: &str, run: &dyn Fn() -> anyhow::Result<Vec<Row>>| -> anyhow::Result<()> {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            return Ok(());
        }
        let got = run().map_err(|e| e.context(format!("workload {name}")))?;
        for row in &got {
            eprintln!("  {}", line(row));
        }
        rows.extend(got);
        Ok(())
    };
    eprintln!("flowhost bench on {cores} cores");
    step("boundary", &|| boundary::run(&fx, seconds, rounds))?;
    step("passthrough", &|| pipeline::run(&fx, messages, rounds))?;
    step("state", &|| state::run(&fx, seconds))?;
    step("wordcount", &|| wordcount::run(&fx, mb, rounds))?;
    step("aggregation", &|| aggregate::run(&fx, messages / 4))?;
    step("poison", &|| poison::run(&fx, messages / 4, rounds))?;
    step("api", &|| {
        api::run(&fx, if args.quick { 2_000 } else { 20_000 }, rounds)
    })?;
    step("loops", &|| {
        let vertices = if args.quick { 10_000 } else { 100_000 };
        loops::run(&fx, vertices, rounds, args.brokers.as_deref())
    })?;
    step("start-up", &|| process::startup(&fx))?;
    step("memory", &|| process::memory(&fx, if args.quick { 1 } else { 3 }))?;
    step("swap", &|| swap::run(&fx, if args.quick { 4 } else { 20 }))?;
    step("apply", &|| swap::apply(&fx, if args.quick { 4 } else { 20 }))?;
    step("kafka", &|| match &args.brokers {
        Some(brokers) => kafka::run(&fx, brokers, if args.quick { 20_000 } else { 300_000 }),
        None => {
            eprintln!("  kafka: skipped (give --brokers HOST:PORT, e.g. from scripts/kafka start)");
            Ok(Vec::new())
        }
    })?;

    let report = Report {
        cores,
        version: env!("CARGO_PKG_VERSION"),
        when: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        rows,
    };
    println!("{}", table(&report));
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    eprintln!("results written to {}", args.json.display());
    Ok(())
}

fn fmt_figure(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn line(r: &Row) -> String {
    let baseline = r.baseline.map_or("-".into(), fmt_figure);
    let ratio = match (r.ratio, r.spread) {
        (Some(x), Some([lo, hi])) => format!("{x:.2}x ({lo:.2}–{hi:.2})"),
        (Some(x), None) => format!("{x:.2}x"),
        _ => "-".into(),
    };
    let met = match r.met {
        Some(true) => "yes",
        Some(false) => "MISSED",
        None => "",
    };
    format!(
        "| {:<36} | {:>10} | {:>10} | {:<8} | {:>18} | {:<16} | {:<6} |",
        r.workload,
        fmt_figure(r.flowhost),
        baseline,
        r.unit,
        ratio,
        r.target,
        met
    )
}

/// The results as a Markdown table.
pub fn table(report: &Report) -> String {
    let mut out = format!("flowhost {} bench, {} cores\n\n", report.version, report.cores);
    out += &format!(
        "| {:<36} | {:>10} | {:>10} | {:<8} | {:>18} | {:<16} | {:<6} |\n",
        "workload", "flowhost", "baseline", "unit", "ratio (min–max)", "target", "met"
    );
    out += &format!(
        "|{:-<38}|{:->12}|{:->12}|{:-<10}|{:->20}|{:-<18}|{:-<8}|\n",
        "", "", "", "", "", "", ""
    );
    for r in &report.rows {
        out += &line(r);
        out += "\n";
    }
    out
}
