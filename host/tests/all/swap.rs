//! Hot swap through the binary: `flowhost swap` against a running graph under a stream,
//! refused modules, rollback (asked for and automatic), and `flowhost run --watch`.
//!
//! The `stamp` fixture (versions `stamp` and `stamp-v2`) writes
//! `<version> r<replica> b<batch> c<count> <payload>`: which module, replica and batch of
//! that instance processed each message, and the store counter of that version after it.

use crate::common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Running, bin, module, stream, text};
use flowhost::topology::swap::{Action, Outcome};

const MESSAGES: usize = 210_000;

/// stdin → stamp (`module`, 2 replicas, counting in `stamps`, skipping failures) → out.txt.
fn stamp_graph(dir: &Path, module: &str, config: &str) {
    let manifest = format!(
        r#"name = "swapped"
[sources.in]
kind = "stdin"
[nodes.stamp]
module = "{module}"
replicas = 2
config = {config}
state = {{ stamps = "rw" }}
on_error = "skip"
[stores.stamps]
[sinks.out]
kind = "file"
path = "out.txt"
[[edges]]
from = "in"
to = "stamp"
[[edges]]
from = "stamp"
to = "out"
"#
    );
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
}

fn swap(run: &Running, args: &[&str]) -> Output {
    bin()
        .arg("swap")
        .args(args)
        .args(["--admin", &run.addr])
        .output()
        .unwrap()
}

/// One line of `out.txt`.
#[derive(Debug, Clone, PartialEq)]
struct Stamped {
    version: String,
    replica: u32,
    batch: u64,
    count: i64,
    payload: String,
}

fn parse(line: &str) -> Stamped {
    let mut parts = line.splitn(5, ' ');
    let mut next = |prefix: &str| {
        let part = parts.next().unwrap_or_else(|| panic!("short line {line:?}"));
        part.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{line:?}: no {prefix}"))
            .to_owned()
    };
    Stamped {
        version: next(""),
        replica: next("r").parse().unwrap(),
        batch: next("b").parse().unwrap(),
        count: next("c").parse().unwrap(),
        payload: next(""),
    }
}

fn output(dir: &Path) -> Vec<Stamped> {
    std::fs::read_to_string(dir.join("out.txt"))
        .unwrap()
        .lines()
        .map(parse)
        .collect()
}

/// Writes `lines` to the graph and waits until the node has dealt with them all.
fn feed(run: &mut Running, lines: &[String]) {
    let before = run.status().nodes[0].counts.received;
    let stdin = run.stdin.as_mut().unwrap();
    stdin.write_all(lines.concat().as_bytes()).unwrap();
    stdin.flush().unwrap();
    let want = before + lines.len() as u64;
    run.wait_for("the batch through", |s| {
        let n = &s.nodes[0].counts;
        n.received == want && s.sinks[0].written + n.errors == n.received
    });
}

#[test]
fn swaps_under_a_stream_lose_repeat_and_reorder_nothing_and_keep_state() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (module("stamp"), module("stamp-v2"));
    stamp_graph(
        dir.path(),
        &v1.display().to_string(),
        r#"{ count_in = "stamps" }"#,
    );
    let mut run = Running::start(dir.path(), &["--heartbeat-ms", "50", "--batch-size", "64"]);

    // The writer streams lines at a steady pace, up to what the swapper allows: each
    // swap starts with half a segment still to be written, so messages are flowing.
    let segment = MESSAGES / 7;
    let allowed = Arc::new(AtomicUsize::new(segment + segment / 2));
    let writer = stream(run.stdin.take().unwrap(), MESSAGES, allowed.clone(), |i| {
        format!("m{i:06}\n")
    });
    let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());
    let steps: [&[&str]; 6] = [
        &["stamp", v2],
        &["stamp", v1],
        &["stamp", v2],
        &["--rollback", "stamp"],
        &["stamp", v2],
        &["--rollback", "stamp"],
    ];
    for (k, step) in steps.iter().enumerate() {
        let reached = (k + 1) * segment;
        run.wait_for("the segment written", |s| s.sinks[0].written as usize >= reached);
        let out = swap(&run, step);
        assert!(out.status.success(), "{step:?}: {}", text(&out));
        assert!(text(&out).contains(" done in "), "{}", text(&out));
        allowed.store((reached + segment + segment / 2).min(MESSAGES), Ordering::Release);
    }
    allowed.store(MESSAGES, Ordering::Release);

    // Versions: 1, 2 (v2), 3 (v1), 4 (v2), back to 3, 5 (v2), back to 3.
    let status = run.status();
    let node = &status.nodes[0];
    assert_eq!(node.version, 3);
    let walk: Vec<(Action, u32, u32)> = node
        .swaps
        .iter()
        .map(|r| {
            assert_eq!(r.outcome, Outcome::Done, "{r}");
            (r.action, r.from.number, r.to.as_ref().unwrap().number)
        })
        .collect();
    assert_eq!(
        walk,
        [
            (Action::Swap, 1, 2),
            (Action::Swap, 2, 3),
            (Action::Swap, 3, 4),
            (Action::Rollback, 4, 3),
            (Action::Swap, 3, 5),
            (Action::Rollback, 5, 3),
        ]
    );
    assert_eq!(node.module_hash, node.swaps[1].to.as_ref().unwrap().hash);
    assert!(
        node.replicas.iter().all(|r| r.version == 3),
        "{:?}",
        node.replicas
    );
    // The input ends only now: the graph cannot have ended before its status was read.
    drop(writer.join().unwrap());
    assert!(run.finish().success());

    let out = output(dir.path());
    // Exactly the inputs, once each.
    let mut seen: Vec<usize> = out.iter().map(|s| s.payload[1..].parse().unwrap()).collect();
    assert_eq!(seen.len(), MESSAGES, "as many outputs as inputs");
    seen.sort_unstable();
    assert!(seen.iter().copied().eq(0..MESSAGES), "every input once");

    let expected = ["v1", "v2", "v1", "v2", "v1", "v2", "v1"];
    for replica in 0..2 {
        let mine: Vec<&Stamped> = out.iter().filter(|s| s.replica == replica).collect();
        // In order, per replica.
        assert!(
            mine.windows(2).all(|w| w[0].payload < w[1].payload),
            "replica {replica} reordered"
        );
        // It went through every version, in the order of the swaps, switching once per swap.
        let mut runs: Vec<(&str, Vec<u64>)> = Vec::new();
        for s in &mine {
            match runs.last_mut() {
                Some((v, batches)) if *v == s.version && batches.last() <= Some(&s.batch) => {
                    if batches.last() != Some(&s.batch) {
                        batches.push(s.batch);
                    }
                }
                _ => runs.push((&s.version, vec![s.batch])),
            }
        }
        let versions: Vec<&str> = runs.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, expected, "replica {replica}");
        // Each version's instance started with its first batch and then took every batch
        // whole: batch numbers 1, 2, 3, … with no batch seen twice or split.
        for (v, batches) in &runs {
            assert!(
                batches.iter().copied().eq(1..=batches.len() as u64),
                "replica {replica} on {v}: batches {batches:?}"
            );
        }
    }
    // The store counter of each version counted each of its messages exactly once,
    // across instances, swaps and replicas.
    for version in ["v1", "v2"] {
        let mut counts: Vec<i64> = out
            .iter()
            .filter(|s| s.version == version)
            .map(|s| s.count)
            .collect();
        counts.sort_unstable();
        assert!(
            counts.iter().copied().eq(1..=counts.len() as i64),
            "{version} counts"
        );
    }
}

#[test]
fn a_module_that_cannot_run_is_refused_and_the_old_one_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = module("stamp");
    // `faulty` rejects this config (unknown field): its `init` fails.
    stamp_graph(
        dir.path(),
        &v1.display().to_string(),
        r#"{ count_in = "stamps", label = "x" }"#,
    );
    let mut run = Running::start(dir.path(), &["--heartbeat-ms", "50"]);
    let lines = |from: usize| (from..from + 10).map(|i| format!("m{i}\n")).collect::<Vec<_>>();
    feed(&mut run, &lines(0));

    std::fs::write(dir.path().join("garbage.wasm"), b"not wasm at all").unwrap();
    // A valid core module that exports nothing: not the flowhost:node world.
    std::fs::write(dir.path().join("empty.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let garbage = dir.path().join("garbage.wasm");
    let empty = dir.path().join("empty.wasm");
    let faulty = module("faulty");
    // A real module cut in half (it once panicked inside componentization).
    let whole = std::fs::read(module("stamp-v2")).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    for (file, cause) in [
        (&garbage, "not a WebAssembly module or component"),
        (&truncated, "truncated.wasm: reading the core module: "),
        (&empty, "empty.wasm does not fit the flowhost:node world"),
        (&faulty, "unknown field `label`"),
    ] {
        let out = swap(&run, &["stamp", file.to_str().unwrap()]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(
            said.contains("error: node `stamp`: swap refused, v1 (") && said.contains("keeps running"),
            "{said}"
        );
        assert!(said.contains(cause), "{said}");
    }
    let out = swap(&run, &["--rollback", "stamp"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no earlier version to roll back to"),
        "{}",
        text(&out)
    );
    let out = swap(&run, &["nope", faulty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("no node `nope` in this graph"),
        "{}",
        text(&out)
    );

    let status = run.status();
    let node = &status.nodes[0];
    assert_eq!(node.version, 1);
    assert_eq!(node.swaps.len(), 5);
    assert!(node.swaps.iter().all(|r| r.outcome == Outcome::Refused));
    let table = String::from_utf8(
        bin()
            .args(["status", "--admin", &run.addr])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        table.contains("swap   node `stamp`: rollback refused, v1"),
        "{table}"
    );

    feed(&mut run, &lines(10));
    assert!(run.finish().success());
    let out = output(dir.path());
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(|s| s.version == "v1"), "{out:?}");
    let payloads: Vec<&str> = out.iter().map(|s| s.payload.as_str()).collect();
    let mut sorted = payloads.clone();
    sorted.sort_by_key(|p| p[1..].parse::<u32>().unwrap());
    assert_eq!(sorted, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

#[test]
fn a_module_whose_init_sleeps_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // `stamp` ignores `sleep_in`; `faulty` sleeps an hour in `init` with it.
    let config = r#"{ count_in = "stamps", sleep_in = "init" }"#;
    stamp_graph(dir.path(), &module("stamp").display().to_string(), config);
    let mut run = Running::start(dir.path(), &["--heartbeat-ms", "50"]);
    feed(&mut run, &["a\n".to_owned()]);
    let out = swap(&run, &["stamp", module("faulty").to_str().unwrap()]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("swap refused, v1 ("), "{said}");
    assert!(
        said.contains("init: trap: timed out: the guest asked to sleep 3600s, past its timeout_ms = 5000"),
        "{said}"
    );
    feed(&mut run, &["b\n".to_owned()]);
    assert!(run.finish().success());
    let out = output(dir.path());
    assert!(out.iter().all(|s| s.version == "v1"), "{out:?}");
    assert_eq!(out.len(), 2);
}

#[test]
fn a_new_module_that_fails_too_often_is_rolled_back_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    stamp_graph(dir.path(), &module("stamp").display().to_string(), "{}");
    let mut run = Running::start(dir.path(), &["--heartbeat-ms", "50"]);
    let ok = |from: usize| (from..from + 50).map(|i| format!("ok{i}\n")).collect::<Vec<_>>();
    feed(&mut run, &ok(0));

    // `faulty` fails every `bad:…` message (invalid input: skipped).
    let faulty = module("faulty");
    let out = swap(
        &run,
        &[
            "stamp",
            faulty.to_str().unwrap(),
            "--auto-rollback",
            "0.5",
            "--within",
            "100",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let bad: Vec<String> = (0..500).map(|i| format!("bad:{i}\n")).collect();
    feed(&mut run, &bad);
    let status = run.wait_for("the automatic rollback", |s| {
        s.nodes[0].swaps.iter().any(|r| r.action == Action::AutoRollback)
    });
    let node = &status.nodes[0];
    assert_eq!(node.version, 1);
    let rollback = node.swaps.last().unwrap();
    assert_eq!(rollback.outcome, Outcome::Done);
    assert_eq!(
        (rollback.from.number, rollback.to.as_ref().unwrap().number),
        (2, 1)
    );
    let reason = rollback.reason.as_deref().unwrap();
    assert!(
        reason.contains("of its first") && reason.contains("% > error_rate 0.5)"),
        "{reason}"
    );
    feed(&mut run, &ok(50));
    let status = run.status();
    let errors = status.nodes[0].counts.errors as usize;
    assert!(run.finish().success());

    // Every message was stamped by v1 or failed on the new module: none lost.
    let out = output(dir.path());
    assert!(out.iter().all(|s| s.version == "v1"));
    assert!(errors >= 100, "judged after 100 messages: {errors} failed");
    assert_eq!(out.len() + errors, 600);
    assert_eq!(out.iter().filter(|s| s.payload.starts_with("ok")).count(), 100);
}

#[test]
fn watch_swaps_a_changed_module_and_applies_a_changed_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(module("stamp"), dir.path().join("node.wasm")).unwrap();
    stamp_graph(dir.path(), "node.wasm", r#"{ count_in = "stamps" }"#);
    let mut run = Running::start(dir.path(), &["--heartbeat-ms", "50", "--watch"]);
    let lines = |from: usize| (from..from + 10).map(|i| format!("m{i}\n")).collect::<Vec<_>>();
    feed(&mut run, &lines(0));

    // Replaced the way build tools do: written aside, renamed over.
    std::fs::copy(module("stamp-v2"), dir.path().join("node.wasm.new")).unwrap();
    std::fs::rename(dir.path().join("node.wasm.new"), dir.path().join("node.wasm")).unwrap();
    run.wait_for("the swap to v2", |s| s.nodes[0].version == 2);
    feed(&mut run, &lines(10));

    // A config change with a replica count change: applied as a change of the graph (the
    // node rebuilt, a reconfiguration in its history; it stops counting).
    let manifest = std::fs::read_to_string(dir.path().join("graph.toml")).unwrap();
    let manifest = manifest
        .replace(r#"config = { count_in = "stamps" }"#, "config = {}")
        .replace("replicas = 2", "replicas = 3");
    std::fs::write(dir.path().join("graph.toml"), manifest).unwrap();
    let status = run.wait_for("the change", |s| {
        s.graph_version == 2 && s.nodes[0].swaps.len() == 2
    });
    assert_eq!(status.nodes[0].version, 3);
    let last = status.nodes[0].swaps.last().unwrap();
    assert_eq!(
        (last.action, last.outcome),
        (Action::Reconfigure, Outcome::Done),
        "{:#?}",
        status.nodes[0].swaps
    );
    assert_eq!(status.graph_version, 2);
    feed(&mut run, &lines(20));
    assert_eq!(run.status().nodes[0].replicas.len(), 3);
    assert!(run.finish().success());

    let out = output(dir.path());
    let by_payload: BTreeMap<u32, &Stamped> =
        out.iter().map(|s| (s.payload[1..].parse().unwrap(), s)).collect();
    assert_eq!(by_payload.len(), 30);
    for (i, s) in by_payload {
        let (version, counted) = match i {
            0..10 => ("v1", true),
            10..20 => ("v2", true),
            _ => ("v2", false),
        };
        assert_eq!(
            (s.version.as_str(), s.count > 0),
            (version, counted),
            "m{i}: {s:?}"
        );
    }
}
