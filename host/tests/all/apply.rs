//! Live graph changes through the binary: `flowhost apply` against a running graph under
//! a stream — a branch added and removed, replicas 1 → 3 → 2 on a key-hash edge, changes
//! refused with the graph untouched, and `apply --watch`.
//!
//! The `stamp` fixture writes `<version> r<replica> b<batch> c<count> <payload>`: the
//! batch number counts its instance's `process` calls, so an instance handed on to the
//! changed graph goes on counting, and a new one starts at 1.

use crate::common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Running, bin, module, stream, text};
use flowhost::topology::swap::Outcome;

fn apply(run: &Running, dir: &Path, manifest: &str) -> Output {
    bin()
        .arg("apply")
        .arg(dir.join(manifest))
        .args(["--admin", &run.addr])
        .output()
        .unwrap()
}

/// One line the `stamp` fixture wrote: replica, batch, payload.
fn stamped(line: &str) -> (u32, u64, String) {
    let mut parts = line.splitn(5, ' ');
    let mut field = |prefix: &str| {
        let part = parts.next().unwrap_or_else(|| panic!("short line {line:?}"));
        part.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_owned()
    };
    let (_, replica, batch, _) = (field("v"), field("r"), field("b"), field("c"));
    let payload = parts.next().unwrap().to_owned();
    (replica.parse().unwrap(), batch.parse().unwrap(), payload)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// stdin → stamp (1 replica) → out.txt; with `tap`, also stdin → tap (passthrough) →
/// tapped.txt.
fn branch_graph(dir: &Path, name: &str, tap: bool) {
    branch_graph_over(dir, name, tap, "");
}

/// [`branch_graph`] with `transport` (a `transport = …` line and its table) after the name.
fn branch_graph_over(dir: &Path, name: &str, tap: bool, transport: &str) {
    let (stamp, pass) = (module("stamp"), module("passthrough"));
    let mut manifest = format!(
        r#"name = "live"
{transport}
[sources.in]
kind = "stdin"
[nodes.stamp]
module = "{}"
[sinks.out]
kind = "file"
path = "out.txt"
[[edges]]
from = "in"
to = "stamp"
[[edges]]
from = "stamp"
to = "out"
"#,
        stamp.display()
    );
    if tap {
        manifest += &format!(
            r#"[nodes.tap]
module = "{}"
[sinks.tapped]
kind = "file"
path = "tapped.txt"
[[edges]]
from = "in"
to = "tap"
[[edges]]
from = "tap"
to = "tapped"
"#,
            pass.display()
        );
    }
    std::fs::write(dir.join(name), manifest).unwrap();
}

#[test]
fn a_branch_added_mid_stream_starts_its_output_and_removed_drains_while_the_rest_goes_on_exactly_once() {
    branch_added_and_removed(60_000, "");
}

/// The branch test over Kafka, one process running the whole graph: the kept node stops
/// at a batch and goes on with its instance from its group's committed offsets, the
/// branch's groups start on new topics and, removed, read them to their end first. (One
/// partition per topic: the output's order is the input's.)
#[test]
fn over_kafka_a_branch_added_mid_stream_starts_and_removed_drains_while_the_rest_goes_on_exactly_once() {
    let broker = common::Broker::start();
    let kafka = format!(
        "transport = \"kafka\"\n[kafka]\nbrokers = \"{}\"\npartitions = 1\n",
        broker.addr
    );
    branch_added_and_removed(6_000, &kafka);
}

fn branch_added_and_removed(messages: usize, transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    branch_graph_over(dir.path(), "graph.toml", false, transport);
    branch_graph_over(dir.path(), "tapped.toml", true, transport);
    let mut run = Running::start(dir.path(), &["--batch-size", "64"]);
    let third = messages / 3;
    let allowed = Arc::new(AtomicUsize::new(third + third / 2));
    let writer = stream(run.stdin.take().unwrap(), messages, allowed.clone(), |n| {
        format!("m{n:06}\n")
    });

    // Mid-stream (half a third still to be written): the branch is added…
    run.wait_for("a third written", |s| s.sinks[0].written as usize >= third);
    let added = apply(&run, dir.path(), "tapped.toml");
    assert!(added.status.success(), "{}", text(&added));
    let said = text(&added);
    assert!(said.contains("graph version 2 applied"), "{said}");
    for change in ["node `tap` added", "sink `tapped` added", "edge in -> tap.in"] {
        assert!(said.contains(change), "{change}: {said}");
    }
    allowed.store(2 * third + third / 2, Ordering::Release);
    // …and removed again, with the stream still flowing.
    run.wait_for("two thirds written", |s| s.sinks[0].written as usize >= 2 * third);
    let removed = apply(&run, dir.path(), "graph.toml");
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(
        text(&removed).contains("node `tap` removed"),
        "{}",
        text(&removed)
    );
    allowed.store(messages, Ordering::Release);
    // The input held open, so the graph cannot end before its status is read.
    let input = writer.join().unwrap();
    let status = run.wait_for("everything through", |s| s.sinks[0].written as usize == messages);
    assert_eq!(status.graph_version, 3);
    let versions: Vec<(u32, Outcome)> = status.applied.iter().map(|r| (r.version, r.outcome)).collect();
    assert_eq!(versions, [(2, Outcome::Done), (3, Outcome::Done)]);
    // The counters of the node kept went on across both changes.
    assert_eq!(status.nodes.len(), 1);
    assert_eq!(status.nodes[0].counts.received as usize, messages);
    drop(input);
    assert!(run.finish().success());

    // The graph kept: every input once, in order, by one instance that went on through
    // both changes (its batches numbered 1, 2, 3, … with none starting again).
    let out = lines(&dir.path().join("out.txt"));
    assert_eq!(out.len(), messages, "{:?}", &out[..3]);
    let mut batch = 0;
    for (n, line) in out.iter().enumerate() {
        let (replica, b, payload) = stamped(line);
        assert_eq!((replica, payload.as_str()), (0, format!("m{n:06}").as_str()));
        assert!(b == batch || b == batch + 1, "line {n}: batch {b} after {batch}");
        batch = b;
    }
    // The branch: what the source read while it was there, every message once, in order,
    // from the first batch after it was added to the last before it was removed.
    let tapped = lines(&dir.path().join("tapped.txt"));
    let first: usize = tapped.first().expect("the branch wrote")[1..].parse().unwrap();
    assert!(first >= third, "the branch started mid-stream, at {first}");
    for (k, line) in tapped.iter().enumerate() {
        assert_eq!(line, &format!("m{:06}", first + k), "tapped.txt line {k}");
    }
    let last = first + tapped.len();
    assert!(last >= 2 * third && last < messages, "the branch ended at {last}");
}

/// A FIFO the graph reads JSON lines from: `{"k":"k<n % 13>","n":<n>}`, keyed by `k`.
fn keyed_graph(dir: &Path, name: &str, replicas: u32) {
    keyed_graph_over(dir, name, replicas, "");
}

/// [`keyed_graph`] with `transport` after the name.
fn keyed_graph_over(dir: &Path, name: &str, replicas: u32, transport: &str) {
    let stamp = module("stamp");
    let manifest = format!(
        r#"name = "keyed"
{transport}
[sources.in]
kind = "jsonl"
path = "in.fifo"
key_field = "k"
[nodes.stamp]
module = "{}"
replicas = {replicas}
[sinks.out]
kind = "file"
path = "out.txt"
[[edges]]
from = "in"
to = "stamp"
connection = "key-hash"
[[edges]]
from = "stamp"
to = "out"
"#,
        stamp.display()
    );
    std::fs::write(dir.join(name), manifest).unwrap();
}

#[test]
fn replicas_go_from_1_to_3_to_2_on_a_key_hash_edge_and_each_key_keeps_its_order() {
    const MESSAGES: usize = 45_000;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for (name, replicas) in [("graph.toml", 1), ("three.toml", 3), ("two.toml", 2)] {
        keyed_graph(dir.path(), name, replicas);
    }
    let run = Running::start(dir.path(), &["--batch-size", "64"]);
    let third = MESSAGES / 3;
    let allowed = Arc::new(AtomicUsize::new(third + third / 2));
    let pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let writer = stream(pipe, MESSAGES, allowed.clone(), |n| {
        format!("{{\"k\":\"k{}\",\"n\":{n}}}\n", n % 13)
    });
    for (k, manifest) in ["three.toml", "two.toml"].iter().enumerate() {
        let reached = (k + 1) * third;
        run.wait_for("the third written", |s| s.sinks[0].written as usize >= reached);
        let out = apply(&run, dir.path(), manifest);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("node `stamp`: replicas"), "{}", text(&out));
        // Asked while the writer still holds the pipe open: the graph cannot have ended.
        let status = run.status();
        assert_eq!(status.graph_version as usize, k + 2);
        assert_eq!(status.nodes[0].replicas.len(), [3, 2][k]);
        allowed.store((reached + third + third / 2).min(MESSAGES), Ordering::Release);
    }
    allowed.store(MESSAGES, Ordering::Release);
    // The pipe's end ends the graph once everything is through.
    drop(writer.join().unwrap());
    assert!(run.finish().success());

    // Every message once.
    let out: Vec<(u32, u64, serde_json::Value)> = lines(&dir.path().join("out.txt"))
        .iter()
        .map(|l| {
            let (r, b, payload) = stamped(l);
            (r, b, serde_json::from_str(&payload).unwrap())
        })
        .collect();
    let mut seen: Vec<u64> = out.iter().map(|(_, _, m)| m["n"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    assert!(seen.iter().copied().eq(0..MESSAGES as u64), "every message once");
    // The three graphs one after the other in the output: one replica, then three, then
    // two. A graph's first line is the first whose replica has a lower batch number than
    // it had (a new instance counts from 1 again), or the first of another replica than
    // the one the first graph ran.
    let generation: Vec<usize> = {
        let mut g = 0;
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        out.iter()
            .map(|(r, b, _)| {
                if last.get(r).is_some_and(|before| b < before) || (g == 0 && *r != 0) {
                    g += 1;
                    last.clear();
                }
                last.insert(*r, *b);
                g
            })
            .collect()
    };
    let replicas_of = |g: usize| -> std::collections::BTreeSet<u32> {
        out.iter()
            .zip(&generation)
            .filter(|(_, x)| **x == g)
            .map(|((r, _, _), _)| *r)
            .collect()
    };
    assert_eq!(generation.last(), Some(&2), "three graphs");
    assert_eq!(replicas_of(0), [0].into());
    assert_eq!(replicas_of(1), [0, 1, 2].into());
    assert_eq!(replicas_of(2), [0, 1].into());
    // Per key: in order, and in each graph at one replica only.
    let mut per_key: BTreeMap<String, Vec<(usize, u32, u64)>> = BTreeMap::new();
    for ((r, _, m), g) in out.iter().zip(&generation) {
        let key = m["k"].as_str().unwrap().to_owned();
        per_key
            .entry(key)
            .or_default()
            .push((*g, *r, m["n"].as_u64().unwrap()));
    }
    assert_eq!(per_key.len(), 13);
    for (key, seen) in &per_key {
        assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "key {key} reordered");
        assert!(
            seen.windows(2).all(|w| w[0].0 <= w[1].0),
            "key {key} went back a graph"
        );
        for g in 0..3 {
            let at: std::collections::BTreeSet<u32> = seen.iter().filter(|s| s.0 == g).map(|s| s.1).collect();
            assert!(at.len() <= 1, "key {key} at replicas {at:?} in graph {g}");
        }
    }
}

#[test]
fn a_refused_change_leaves_the_graph_running_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    branch_graph(d, "graph.toml", false);
    let mut run = Running::start(d, &["--batch-size", "64"]);
    let stdin = run.stdin.as_mut().unwrap();
    stdin.write_all(b"a\nb\n").unwrap();
    stdin.flush().unwrap();
    run.wait_for("two through", |s| s.sinks[0].written == 2);

    // Invalid: named where it is wrong, and nothing asked of the graph.
    std::fs::write(
        d.join("broken.toml"),
        "name = \"live\"\n[nodes.x]\nreplicas = \"two\"\n",
    )
    .unwrap();
    let out = apply(&run, d, "broken.toml");
    assert!(!out.status.success());
    assert!(text(&out).contains("broken.toml:3:"), "{}", text(&out));
    // A module that is no module: refused before anything stops, naming the node.
    branch_graph(d, "bad-module.toml", true);
    std::fs::write(d.join("junk.wasm"), b"not wasm").unwrap();
    let manifest = std::fs::read_to_string(d.join("bad-module.toml")).unwrap();
    let pass = module("passthrough").display().to_string();
    let junk = d.join("junk.wasm").display().to_string();
    std::fs::write(d.join("bad-module.toml"), manifest.replace(&pass, &junk)).unwrap();
    let out = apply(&run, d, "bad-module.toml");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("change refused, version 1 keeps running: node `tap`"),
        "{}",
        text(&out)
    );
    // A sink that cannot be written: refused, not found out once the graph has stopped.
    branch_graph(d, "bad-sink.toml", true);
    let manifest = std::fs::read_to_string(d.join("bad-sink.toml")).unwrap();
    std::fs::write(
        d.join("bad-sink.toml"),
        manifest.replace("tapped.txt", "no/such/dir/t.txt"),
    )
    .unwrap();
    let out = apply(&run, d, "bad-sink.toml");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("sink `tapped`: cannot write"),
        "{}",
        text(&out)
    );
    // What cannot change live: said why.
    let manifest = std::fs::read_to_string(d.join("graph.toml")).unwrap();
    std::fs::write(
        d.join("renamed.toml"),
        manifest.replace("name = \"live\"", "name = \"other\""),
    )
    .unwrap();
    let out = apply(&run, d, "renamed.toml");
    assert!(!out.status.success());
    assert!(text(&out).contains("the graph's name changed"), "{}", text(&out));

    // The graph as it was: version 1, the refusals listed, the same instance going on.
    let status = run.status();
    assert_eq!(status.graph_version, 1);
    let refused: Vec<Outcome> = status.applied.iter().map(|r| r.outcome).collect();
    // (The invalid manifest was refused by `flowhost apply` itself: never asked.)
    assert_eq!(refused, [Outcome::Refused; 3]);
    assert!(
        status.applied[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("node `tap`")
    );
    let stdin = run.stdin.as_mut().unwrap();
    stdin.write_all(b"c\n").unwrap();
    stdin.flush().unwrap();
    run.wait_for("the third through", |s| s.sinks[0].written == 3);
    drop(run.stdin.take());
    assert!(run.finish().success());
    let out: Vec<(u32, u64, String)> = lines(&d.join("out.txt")).iter().map(|l| stamped(l)).collect();
    let payloads: Vec<&str> = out.iter().map(|(_, _, p)| p.as_str()).collect();
    assert_eq!(payloads, ["a", "b", "c"]);
    assert!(out[2].1 >= 2, "the instance went on: {out:?}");
    assert!(!d.join("tapped.txt").exists());
}

#[test]
fn apply_watch_applies_the_manifest_whenever_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    branch_graph(d, "graph.toml", false);
    let mut run = Running::start(d, &[]);
    let mut watcher = bin()
        .args(["apply", "graph.toml", "--watch", "--admin", &run.addr])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first apply finds nothing to change; then the file changes under it.
    std::thread::sleep(Duration::from_secs(1));
    branch_graph(d, "graph.toml", true);
    let status = run.wait_for("the change applied", |s| s.graph_version == 2);
    assert_eq!(status.nodes.len(), 2);
    let stdin = run.stdin.as_mut().unwrap();
    stdin.write_all(b"x\n").unwrap();
    drop(run.stdin.take());
    assert!(run.finish().success());
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(lines(&d.join("tapped.txt")), ["x"]);
}

#[test]
fn run_watch_applies_a_manifest_that_changes_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    branch_graph(d, "graph.toml", false);
    let mut run = Running::start(d, &["--watch"]);
    let stdin = run.stdin.as_mut().unwrap();
    stdin.write_all(b"a\n").unwrap();
    stdin.flush().unwrap();
    run.wait_for("the first through", |s| s.sinks[0].written == 1);
    branch_graph(d, "graph.toml", true);
    let status = run.wait_for("the change applied", |s| s.graph_version == 2);
    assert_eq!(status.nodes.len(), 2);
    assert!(status.applied[0].changes.iter().any(|c| c == "node `tap` added"));
    let stdin = run.stdin.as_mut().unwrap();
    stdin.write_all(b"b\n").unwrap();
    drop(run.stdin.take());
    assert!(run.finish().success());
    assert_eq!(lines(&d.join("tapped.txt")), ["b"]);
    let out: Vec<String> = lines(&d.join("out.txt")).iter().map(|l| stamped(l).2).collect();
    assert_eq!(out, ["a", "b"]);
}

/// words.jsonl (`{"k":"w<n % 10>","n":<n>}` per line, keyed by `k`) → tally (durable
/// `counts`, per key) → null, checkpointed every 20 ms; with `tap`, also → tap → tapped.txt.
fn durable_graph(dir: &Path, name: &str, tap: bool) {
    let (tally, pass) = (module("tally"), module("passthrough"));
    let mut manifest = format!(
        r#"name = "durable-live"
[checkpoint]
interval_ms = 20
[stores.counts]
durability = "durable"
[sources.words]
kind = "jsonl"
path = "words.jsonl"
key_field = "k"
[nodes.tally]
module = "{}"
state = {{ counts = "rw" }}
[sinks.none]
kind = "null"
[[edges]]
from = "words"
to = "tally"
[[edges]]
from = "tally"
to = "none"
"#,
        tally.display()
    );
    if tap {
        manifest += &format!(
            "[nodes.tap]\nmodule = \"{}\"\n[sinks.tapped]\nkind = \"file\"\npath = \"tapped.txt\"\n\
             [[edges]]\nfrom = \"words\"\nto = \"tap\"\n[[edges]]\nfrom = \"tap\"\nto = \"tapped\"\n",
            pass.display()
        );
    }
    std::fs::write(dir.join(name), manifest).unwrap();
}

#[test]
fn a_durable_graph_changed_mid_run_then_killed_resumes_from_a_checkpoint_of_the_changed_graph() {
    const LINES: usize = 1_500_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input: String = (0..LINES)
        .map(|n| format!("{{\"k\":\"w{}\",\"n\":{n}}}\n", n % 10))
        .collect();
    std::fs::write(d.join("words.jsonl"), input).unwrap();
    durable_graph(d, "graph.toml", false);
    durable_graph(d, "tapped.toml", true);
    let state_dir = d.join(".flowhost/durable-live");

    // Small batches, so the run lasts while it is changed and killed.
    let mut run = Running::start(d, &["--batch-size", "4"]);
    run.wait_for("a tenth read", |s| s.sources[0].read as usize >= LINES / 10);
    let out = apply(&run, d, "tapped.toml");
    assert!(out.status.success(), "{}", text(&out));
    // A checkpoint of the changed graph (it has the new file sink's length), then kill -9.
    let started = std::time::Instant::now();
    loop {
        let log = flowhost::state::durable::read(&state_dir).unwrap();
        if log
            .resumable()
            .is_some_and(|cp| cp.sinks.get("tapped").is_some_and(|&n| n > 0))
        {
            break;
        }
        assert!(
            run.child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint of the changed graph"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    let at = flowhost::state::durable::read(&state_dir)
        .unwrap()
        .resumable()
        .unwrap()
        .sources["words"];
    assert!(
        at.records > 0 && (at.records as usize) < LINES,
        "killed mid-run at {at:?}"
    );

    // Restarted with the changed manifest: on from the changed graph's checkpoint.
    let rerun = bin()
        .args(["run", "tapped.toml"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(rerun.status.success(), "{}", text(&rerun));
    assert!(
        text(&rerun).contains("resuming from the last checkpoint"),
        "{}",
        text(&rerun)
    );
    // Every line counted once, across the change, the crash and the restart.
    let state = bin()
        .args(["state", "tapped.toml", "dump", "counts"])
        .current_dir(d)
        .output()
        .unwrap();
    let counts: Vec<String> = String::from_utf8(state.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = (0..10).map(|k| format!("w{k}\t{}", LINES / 10)).collect();
    assert_eq!(counts, want);
    // The branch: every line from where it was added to the end, once, in order.
    let tapped = lines(&d.join("tapped.txt"));
    let first = LINES - tapped.len();
    assert!(first >= LINES / 10, "the branch started mid-run, at {first}");
    for (k, line) in tapped.iter().enumerate() {
        let n = first + k;
        assert_eq!(
            line,
            &format!("{{\"k\":\"w{}\",\"n\":{n}}}", n % 10),
            "tapped.txt line {k}"
        );
    }
}

/// `flowhost apply` through the control topic of a Kafka graph (no `--admin`).
fn apply_to_all(dir: &Path, manifest: &str) -> Output {
    bin()
        .arg("apply")
        .arg(manifest)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Over Kafka, three processes — one reading a named pipe and writing the sink, two
/// running `stamp` — changed by one `flowhost apply` each time through the graph's control
/// topic: replicas 1 → 3 → 2 per process on a key-hash edge (Kafka partitions by key).
/// Every process answers; every message comes out once, each key in order; a change
/// refused (a module that is none) is refused by every process and nothing changes; a
/// process started after them catches up.
#[test]
fn over_kafka_one_apply_reaches_every_process_and_replicas_go_1_3_2_with_each_key_in_order() {
    const MESSAGES: usize = 9_000;
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kafka = format!(
        "transport = \"kafka\"\n[kafka]\nbrokers = \"{}\"\npartitions = 8\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n",
        broker.addr
    );
    let fifo = d.join("in.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for (name, replicas) in [("graph.toml", 1), ("three.toml", 3), ("two.toml", 2)] {
        keyed_graph_over(d, name, replicas, &kafka);
    }
    let workers: Vec<Running> = (0..2)
        .map(|_| {
            let run = Running::start(d, &["--batch-size", "64", "--nodes", "stamp"]);
            run.wait_log("partition(s) assigned");
            run
        })
        .collect();
    let edge = Running::start(d, &["--batch-size", "64", "--nodes", "in,out"]);
    let third = MESSAGES / 3;
    let allowed = Arc::new(AtomicUsize::new(third + third / 2));
    let pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let writer = stream(pipe, MESSAGES, allowed.clone(), |n| {
        format!("{{\"k\":\"k{}\",\"n\":{n}}}\n", n % 13)
    });
    for (k, (manifest, replicas)) in [("three.toml", 3), ("two.toml", 2)].into_iter().enumerate() {
        let reached = (k + 1) * third;
        edge.wait_for("the third written", |s| s.sinks[0].written as usize >= reached);
        let out = apply_to_all(d, manifest);
        let said = text(&out);
        assert!(out.status.success(), "{said}");
        let version = format!("graph version {} applied", k + 2);
        assert_eq!(said.matches(&version).count(), 3, "three answers: {said}");
        assert!(said.contains("node `stamp`: replicas"), "{said}");
        for run in &workers {
            let status = run.status();
            assert_eq!(status.graph_version as usize, k + 2);
            assert_eq!(status.nodes[0].replicas.len(), replicas);
        }
        allowed.store((reached + third + third / 2).min(MESSAGES), Ordering::Release);
    }
    allowed.store(MESSAGES, Ordering::Release);
    // Held open: the pipe's end is not what this test is about.
    let _input = writer.join().unwrap();
    edge.wait_for("everything through", |s| s.sinks[0].written as usize == MESSAGES);

    // Refused everywhere: a module that is none. Version 3 runs on in every process.
    let manifest = std::fs::read_to_string(d.join("two.toml")).unwrap();
    std::fs::write(d.join("junk.wasm"), b"\0asm\x01\0\0\0junk").unwrap();
    let stamp = module("stamp").display().to_string();
    let junk = d.join("junk.wasm").display().to_string();
    std::fs::write(d.join("junk.toml"), manifest.replace(&stamp, &junk)).unwrap();
    let out = apply_to_all(d, "junk.toml");
    assert!(!out.status.success());
    assert_eq!(
        text(&out)
            .matches("change refused, version 3 keeps running")
            .count(),
        3,
        "{}",
        text(&out)
    );
    for run in workers.iter().chain([&edge]) {
        assert_eq!(run.status().graph_version, 3);
    }
    // A process started now, from the manifest the graph started with, catches up with
    // the control topic: both changes applied and the third refused, as everywhere.
    let late = Running::start(d, &["--batch-size", "64", "--nodes", "stamp"]);
    let status = late.wait_for("the changes caught up with", |s| s.applied.len() == 3);
    let outcomes: Vec<(u32, Outcome)> = status.applied.iter().map(|r| (r.version, r.outcome)).collect();
    assert_eq!(
        outcomes,
        [(2, Outcome::Done), (3, Outcome::Done), (4, Outcome::Refused)]
    );
    assert_eq!(status.graph_version, 3);
    assert_eq!(status.nodes[0].replicas.len(), 2);
    drop(late);

    // Every message once; per key in order.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &edge.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(edge.finish().code(), Some(130), "stopped by SIGTERM");
    let out: Vec<(u32, serde_json::Value)> = lines(&d.join("out.txt"))
        .iter()
        .map(|l| {
            let (r, _, payload) = stamped(l);
            (r, serde_json::from_str(&payload).unwrap())
        })
        .collect();
    let mut seen: Vec<u64> = out.iter().map(|(_, m)| m["n"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    assert!(seen.iter().copied().eq(0..MESSAGES as u64), "every message once");
    let replicas: std::collections::BTreeSet<u32> = out.iter().map(|(r, _)| *r).collect();
    assert_eq!(replicas, [0, 1, 2].into(), "three replicas per process at most");
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (_, m) in &out {
        let key = m["k"].as_str().unwrap().to_owned();
        per_key.entry(key).or_default().push(m["n"].as_u64().unwrap());
    }
    assert_eq!(per_key.len(), 13);
    for (key, seen) in &per_key {
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "key {key} reordered");
    }
}
