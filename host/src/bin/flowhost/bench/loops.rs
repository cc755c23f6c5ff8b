//! A loop: connected components of a generated 100,000-vertex graph by label
//! propagation (`functions/propagate` around a feedback edge, a host store), against
//! union-find in plain Rust on the same edges. Both must find the same labels. With
//! `--brokers`, the same over Kafka too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::{Better, Fixtures, Row, interleaved};
use flowhost::manifest::Graph;
use flowhost::shutdown::Shutdown;
use flowhost::topology::RunOptions;

pub(super) fn run(
    fx: &Fixtures,
    vertices: u32,
    rounds: usize,
    brokers: Option<&str>,
) -> anyhow::Result<Vec<Row>> {
    let dir = std::env::temp_dir().join(format!("flowhost-bench-loops-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let edges = random_edges(vertices, vertices as usize * 4 / 5);
        let text: String = edges.iter().map(|(u, v)| format!("{u} {v}\n")).collect();
        std::fs::write(dir.join("edges.txt"), text)?;
        let labelled = union_find(&edges).len() as u64;
        let mut rows = vec![row(fx, &dir, (vertices, &edges), labelled, rounds, None)?];
        if let Some(brokers) = brokers {
            rows.push(row(
                fx,
                &dir,
                (vertices, &edges),
                labelled,
                rounds,
                Some(brokers),
            )?);
        }
        Ok(rows)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The components of `edges` (in `dir/edges.txt`) in-process, or over Kafka on
/// `brokers` (the feedback edge a topic, the loop's end found across the brokers).
fn row(
    fx: &Fixtures,
    dir: &std::path::Path,
    (vertices, edges): (u32, &[(u32, u32)]),
    labelled: u64,
    rounds: usize,
    brokers: Option<&str>,
) -> anyhow::Result<Row> {
    let round = std::cell::Cell::new(0);
    let graph = || -> anyhow::Result<flowhost::plan::Plan> {
        // Over Kafka a graph of its own per round: fresh topics and groups.
        round.set(round.get() + 1);
        let transport = match brokers {
            Some(b) => format!(
                "transport = \"kafka\"\n[kafka]\nbrokers = \"{b}\"\npartitions = 4\n\
                 \"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n"
            ),
            None => String::new(),
        };
        let manifest = format!(
            "name = \"loops-bench-{}-{}\"\n{transport}[stores.graph]\n[sources.edges]\nkind = \"file\"\npath = \"edges.txt\"\n\
             [nodes.propagate]\nmodule = \"{}\"\nstate = {{ graph = \"rw\" }}\n\
             config = {{ algorithm = \"components\", store = \"graph\" }}\n\
             [sinks.out]\nkind = \"null\"\n\
             [[edges]]\nfrom = \"edges\"\nto = \"propagate.edges\"\n\
             [[edges]]\nfrom = \"propagate\"\nto = \"propagate.updates\"\nfeedback = true\n\
             [[edges]]\nfrom = \"propagate.result\"\nto = \"out\"\n",
            std::process::id(),
            round.get(),
            fx.propagate.path.display()
        );
        Ok(flowhost::plan::Plan::resolve(
            Graph::parse(&dir.join("graph.toml"), &manifest)?,
            None,
        )?)
    };
    let r = interleaved(
        rounds,
        || {
            let plan = graph()?;
            let report = flowhost::run(
                &plan,
                &fx.engine,
                &RunOptions::default(),
                &Arc::new(Shutdown::default()),
            )?;
            anyhow::ensure!(report.failure.is_none(), "{:?}", report.failure);
            let wrote = report.sinks[0].1;
            anyhow::ensure!(
                wrote == labelled,
                "flowhost labelled {wrote} vertices, union-find {labelled}"
            );
            Ok(report.elapsed.as_secs_f64() * 1000.0)
        },
        || {
            let started = Instant::now();
            std::hint::black_box(union_find(edges));
            Ok(started.elapsed().as_secs_f64() * 1000.0)
        },
    )?;
    let over = if brokers.is_some() { ", Kafka" } else { "" };
    Ok(Row::rounds(
        format!("connected components, {}k vertices (loop{over})", vertices / 1000),
        &r,
        "ms",
        Better::Lower,
    ))
}

/// `n` random edges over `vertices` (a fixed seed).
fn random_edges(vertices: u32, n: usize) -> Vec<(u32, u32)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % vertices as u64) as u32
    };
    (0..n).map(|_| (next(), next())).collect()
}

/// Each vertex's least vertex in its component.
fn union_find(edges: &[(u32, u32)]) -> HashMap<u32, u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    fn find(parent: &mut HashMap<u32, u32>, v: u32) -> u32 {
        let p = *parent.entry(v).or_insert(v);
        if p == v {
            return v;
        }
        let root = find(parent, p);
        parent.insert(v, root);
        root
    }
    for &(u, v) in edges {
        let (a, b) = (find(&mut parent, u), find(&mut parent, v));
        if a != b {
            parent.insert(a.max(b), a.min(b));
        }
    }
    let vertices: Vec<u32> = parent.keys().copied().collect();
    vertices.into_iter().map(|v| (v, find(&mut parent, v))).collect()
}
