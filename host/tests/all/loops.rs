//! Loops (feedback edges), through the real binary: connected components and shortest
//! paths on a generated 100,000-vertex graph against native computations, a loop that
//! would never end stopped by `max_iterations`, small channels with fan-out inside the
//! loop, a trapping node inside a loop; over Kafka both examples again, a loop spread
//! over two processes, and a slow node that must hold a loop open.

use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{Broker, Running, bin, text};

fn functions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions")
}

/// `flowhost run graph.toml <args>` in `dir`, failing the test (not hanging it) if it
/// takes more than two minutes.
fn run(dir: &Path, args: &[&str]) -> Output {
    let mut child = bin()
        .args(["run", "graph.toml"])
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the loop never ended (killed after 120 s):\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A random graph of `vertices` (a fixed seed): `edges` edges, weights 1..=20.
fn random_graph(vertices: u32, edges: usize) -> Vec<(u32, u32, u64)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..edges)
        .map(|_| {
            let u = (next() % vertices as u64) as u32;
            let v = (next() % vertices as u64) as u32;
            (u, v, next() % 20 + 1)
        })
        .collect()
}

/// A graph of the `propagate` node in a loop over `edges.txt`.
fn propagate_graph(dir: &Path, config: &str) {
    let manifest = format!(
        r#"name = "loop"
[stores.graph]
[sources.edges]
kind = "file"
path = "edges.txt"
[nodes.propagate]
crate = "{}/propagate"
state = {{ graph = "rw" }}
config = {config}
[sinks.out]
kind = "file"
path = "out.txt"
[[edges]]
from = "edges"
to = "propagate.edges"
[[edges]]
from = "propagate"
to = "propagate.updates"
feedback = true
[[edges]]
from = "propagate.result"
to = "out"
"#,
        functions().display()
    );
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
}

fn results(dir: &Path) -> BTreeMap<u32, u64> {
    std::fs::read_to_string(dir.join("out.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            let (v, x) = l.split_once(' ').unwrap();
            (v.parse().unwrap(), x.parse().unwrap())
        })
        .collect()
}

/// Each vertex's least vertex in its component, by union-find.
fn native_components(edges: &[(u32, u32, u64)]) -> BTreeMap<u32, u64> {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    fn find(parent: &mut BTreeMap<u32, u32>, v: u32) -> u32 {
        let p = *parent.entry(v).or_insert(v);
        if p == v {
            return v;
        }
        let root = find(parent, p);
        parent.insert(v, root);
        root
    }
    for &(u, v, _) in edges {
        let (a, b) = (find(&mut parent, u), find(&mut parent, v));
        // The least vertex is the root, so the root is the label.
        if a != b {
            parent.insert(a.max(b), a.min(b));
        }
    }
    let vertices: Vec<u32> = parent.keys().copied().collect();
    vertices
        .into_iter()
        .map(|v| (v, find(&mut parent, v) as u64))
        .collect()
}

/// Distances from `from` over directed edges, by Dijkstra.
fn native_paths(edges: &[(u32, u32, u64)], from: u32) -> BTreeMap<u32, u64> {
    let mut adj: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
    for &(u, v, w) in edges {
        adj.entry(u).or_default().push((v, w));
    }
    let mut dist = BTreeMap::new();
    let mut heap = BinaryHeap::new();
    heap.push(std::cmp::Reverse((0u64, from)));
    while let Some(std::cmp::Reverse((d, v))) = heap.pop() {
        if dist.contains_key(&v) {
            continue;
        }
        dist.insert(v, d);
        for &(n, w) in adj.get(&v).into_iter().flatten() {
            if !dist.contains_key(&n) {
                heap.push(std::cmp::Reverse((d + w, n)));
            }
        }
    }
    dist
}

fn write_edges(dir: &Path, edges: &[(u32, u32, u64)], weighted: bool) {
    let text: String = edges
        .iter()
        .map(|(u, v, w)| {
            if weighted {
                format!("{u} {v} {w}\n")
            } else {
                format!("{u} {v}\n")
            }
        })
        .collect();
    std::fs::write(dir.join("edges.txt"), text).unwrap();
}

#[test]
fn connected_components_of_a_100k_vertex_graph_match_union_find() {
    let dir = tempfile::tempdir().unwrap();
    // Fewer edges than vertices: many components, some large.
    let edges = random_graph(100_000, 80_000);
    write_edges(dir.path(), &edges, false);
    propagate_graph(dir.path(), r#"{ algorithm = "components", store = "graph" }"#);
    let out = run(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(results(dir.path()), native_components(&edges));
    let said = text(&out);
    assert!(said.contains("loop of propagate: "), "{said}");
}

#[test]
fn shortest_paths_of_a_100k_vertex_graph_match_dijkstra_even_through_tiny_channels() {
    let dir = tempfile::tempdir().unwrap();
    let edges = random_graph(100_000, 300_000);
    write_edges(dir.path(), &edges, true);
    propagate_graph(
        dir.path(),
        r#"{ algorithm = "shortest-paths", store = "graph", from = 7 }"#,
    );
    // Channels of one batch of at most 4 messages, while every improvement fans out to
    // all its vertex's neighbours inside the loop: it must still end.
    let out = run(dir.path(), &["--channel-capacity", "1", "--batch-size", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    let want = native_paths(&edges, 7);
    assert!(want.len() > 90_000, "most vertices reachable: {}", want.len());
    assert_eq!(results(dir.path()), want);
}

/// A passthrough that feeds everything back to itself would loop forever.
fn endless_loop(dir: &Path, module: &str, extra: &str) {
    let manifest = format!(
        r#"name = "endless"
[sources.in]
kind = "file"
path = "in.txt"
[nodes.again]
crate = "{}/{module}"
{extra}
[sinks.out]
kind = "file"
path = "out.txt"
[[edges]]
from = "in"
to = "again"
[[edges]]
from = "again"
to = "again"
feedback = true
max_iterations = 5
[[edges]]
from = "again"
to = "out"
"#,
        functions().display()
    );
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
}

#[test]
fn max_iterations_stops_a_loop_that_would_never_end_and_counts_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let input: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    std::fs::write(dir.path().join("in.txt"), input.join("\n") + "\n").unwrap();
    endless_loop(dir.path(), "passthrough", "");
    let out = run(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    // Each message passes 6 times (iterations 0 to 5), then the sixth time around is dropped.
    let lines = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in lines.lines() {
        *counts.entry(l).or_default() += 1;
    }
    assert_eq!(counts.len(), 100);
    assert!(counts.values().all(|&n| n == 6), "{counts:?}");
    let said = text(&out);
    assert!(
        said.contains("loop of again: 5 time(s) around at most, 500 message(s) sent around, 100 dropped at max_iterations"),
        "{said}"
    );
}

#[test]
fn a_trapping_node_inside_a_loop_follows_its_policy_and_the_loop_still_ends() {
    let dir = tempfile::tempdir().unwrap();
    let input: Vec<String> = (0..50)
        .map(|i| {
            if i % 10 == 3 {
                format!("panic:{i}")
            } else {
                format!("m{i}")
            }
        })
        .collect();
    std::fs::write(dir.path().join("in.txt"), input.join("\n") + "\n").unwrap();
    endless_loop(dir.path(), "faulty", "on_error = \"skip\"");
    let out = run(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(lines.lines().count(), 45 * 6, "the 45 good ones, 6 times each");
    assert!(!lines.contains("panic"));
    assert!(text(&out).contains("skipped 5"), "{}", text(&out));
}

#[test]
fn a_cycle_without_a_feedback_edge_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "a\n").unwrap();
    endless_loop(dir.path(), "passthrough", "");
    let manifest = std::fs::read_to_string(dir.path().join("graph.toml")).unwrap();
    let plain = manifest.replace("feedback = true\nmax_iterations = 5\n", "");
    std::fs::write(dir.path().join("graph.toml"), plain).unwrap();
    let out = bin()
        .args(["validate", "graph.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out)
            .contains("cycle between nodes: again -> again (mark the edge that closes it `feedback = true`"),
        "{}",
        text(&out)
    );
}

/// The `[kafka]` lines of a graph over `broker` with `partitions` per topic.
fn over_kafka(dir: &Path, broker: &Broker, partitions: u32) {
    let manifest = std::fs::read_to_string(dir.join("graph.toml")).unwrap();
    let (name, rest) = manifest.split_once('\n').unwrap();
    let kafka = format!(
        "{name}\ntransport = \"kafka\"\n[kafka]\nbrokers = \"{}\"\npartitions = {partitions}\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n{rest}",
        broker.addr
    );
    std::fs::write(dir.join("graph.toml"), kafka).unwrap();
}

// Over Kafka every edge is a topic, the feedback edge too, and the loop ends when the
// process ending the run has seen every input partition of the loop's nodes committed
// to its end twice with the same offsets (what tansu lets this prove: commits and reads;
// at-least-once delivery, so no broker-side transaction filtering is relied on).

#[test]
fn over_kafka_connected_components_match_union_find() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let edges = random_graph(100_000, 80_000);
    write_edges(dir.path(), &edges, false);
    propagate_graph(dir.path(), r#"{ algorithm = "components", store = "graph" }"#);
    over_kafka(dir.path(), &broker, 4);
    let out = run(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(results(dir.path()), native_components(&edges));
    let said = text(&out);
    assert!(
        said.contains("loop of propagate: ended (seen quiet twice"),
        "{said}"
    );
}

#[test]
fn over_kafka_shortest_paths_match_dijkstra() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let edges = random_graph(100_000, 300_000);
    write_edges(dir.path(), &edges, true);
    propagate_graph(
        dir.path(),
        r#"{ algorithm = "shortest-paths", store = "graph", from = 7 }"#,
    );
    over_kafka(dir.path(), &broker, 4);
    let out = run(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(results(dir.path()), native_paths(&edges, 7));
}

/// The endless loop over Kafka with its node in two processes: the loop's records go
/// back and forth between them, and the process that ends the run waits for the other's
/// commits too. max_iterations holds across processes (the count travels in a header).
#[test]
fn over_kafka_a_loop_spread_over_two_processes_ends_exactly_and_max_iterations_holds() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let input: Vec<String> = (0..400).map(|i| format!("m{i}")).collect();
    std::fs::write(dir.path().join("in.txt"), input.join("\n") + "\n").unwrap();
    endless_loop(dir.path(), "passthrough", "");
    over_kafka(dir.path(), &broker, 2);
    // The helper joins first, so the whole-graph process's arrival is the group's only
    // rebalance and happens before any record is read (at-least-once: a later one could
    // repeat records).
    let helper = Running::start(dir.path(), &["--nodes", "again"]);
    helper.wait_log("partition(s) assigned");
    let out = run(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in lines.lines() {
        *counts.entry(l).or_default() += 1;
    }
    assert_eq!(counts.len(), 400);
    assert!(counts.values().all(|&n| n == 6), "{counts:?}");
    // (Lag comes from librdkafka's statistics, once a second.)
    let status = helper.wait_for("nothing left in the loop's partitions", |s| {
        s.loops.first().is_some_and(|l| l.lag == 0)
    });
    let around = &status.loops[0];
    assert_eq!(around.nodes, ["again"]);
    assert!(
        around.fed_back > 0 && around.iteration >= 1,
        "the helper sent some around: {around:?}"
    );
    let helped = status
        .nodes
        .iter()
        .find(|n| n.id == "again")
        .unwrap()
        .counts
        .received;
    assert!(
        helped > 0 && helped < 400 * 6,
        "both processes took part: the helper took {helped} of 2400"
    );
    let said = text(&out);
    assert!(said.contains("loop of again: ended (seen quiet twice"), "{said}");
}

/// Over Kafka, a loop of two nodes whose second one is slow on one message: while it
/// works, the first node's inputs are all read and committed and nothing arrives for
/// seconds. The loop is not over — the slow node's outputs still come around — and the
/// run waits for them (each of its inputs uncommitted until they are out).
#[test]
fn over_kafka_a_slow_node_inside_a_loop_holds_the_loop_open() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let mut input: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    input.push("pause:slow".into());
    std::fs::write(dir.path().join("in.txt"), input.join("\n") + "\n").unwrap();
    let manifest = format!(
        r#"name = "slow"
[sources.in]
kind = "file"
path = "in.txt"
[nodes.first]
crate = "{0}/passthrough"
[nodes.second]
crate = "{0}/faulty"
[sinks.out]
kind = "file"
path = "out.txt"
[[edges]]
from = "in"
to = "first"
[[edges]]
from = "first"
to = "second"
[[edges]]
from = "second"
to = "first"
feedback = true
max_iterations = 3
[[edges]]
from = "first"
to = "out"
"#,
        functions().display()
    );
    std::fs::write(dir.path().join("graph.toml"), manifest).unwrap();
    over_kafka(dir.path(), &broker, 2);
    let out = run(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in lines.lines() {
        *counts.entry(l).or_default() += 1;
    }
    assert_eq!(counts.len(), 21, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 4),
        "every message out 4 times (iterations 0 to 3), the slow one too: {counts:?}"
    );
}
