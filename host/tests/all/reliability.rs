//! Poison messages, dead letters and replay through the real binary, and module pinning.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::text;

const MESSAGES: usize = 100_000;

fn functions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions")
}

fn flowhost(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowhost"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

/// in (file) -> faulty (2 replicas, dead-letter) -> out (file); dead letters to dlq.jsonl.
fn poison_graph(dir: &Path, module: &str) -> PathBuf {
    let manifest = format!(
        r#"name = "poison"
[sources.in]
kind = "file"
path = "in.txt"
[nodes.faulty]
{module}
replicas = 2
on_error = "dead-letter"
dead_letter = "dlq"
[sinks.out]
kind = "file"
path = "out.txt"
[sinks.dlq]
kind = "file"
path = "dlq.jsonl"
format = "json"
[[edges]]
from = "in"
to = "faulty"
[[edges]]
from = "faulty"
to = "out"
"#
    );
    let path = dir.join("graph.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn one_percent_poison_is_dead_lettered_and_replayed_after_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    // Every 100th message panics the guest or aborts it (in turn), each one unique.
    let input: Vec<String> = (1..=MESSAGES)
        .map(|i| match (i % 100, i % 200) {
            (0, 0) => format!("panic:{i}"),
            (0, _) => format!("trap:{i}"),
            _ => format!("m{i:06}"),
        })
        .collect();
    std::fs::write(dir.path().join("in.txt"), input.join("\n") + "\n").unwrap();
    let crate_line = format!("crate = \"{}/faulty\"", functions().display());
    poison_graph(dir.path(), &crate_line);

    let run = flowhost(dir.path(), &["run", "graph.toml"]);
    assert!(run.status.success(), "{}", text(&run));
    let good: BTreeSet<&String> = input.iter().filter(|m| m.starts_with('m')).collect();
    let poison: BTreeSet<&String> = input.iter().filter(|m| !m.starts_with('m')).collect();
    assert_eq!(poison.len(), MESSAGES / 100);

    // Every good message exactly once.
    let out = lines(&dir.path().join("out.txt"));
    assert_eq!(out.len(), good.len(), "no good message lost or repeated");
    assert_eq!(out.iter().collect::<BTreeSet<_>>(), good);

    // Every poison message in the dead-letter file, with the error that killed it.
    let dead = lines(&dir.path().join("dlq.jsonl"));
    assert_eq!(dead.len(), poison.len());
    let mut seen = BTreeSet::new();
    for line in &dead {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let payload = v["payload"].as_str().unwrap().to_owned();
        let h = &v["headers"];
        assert_eq!(h["flowhost-error-node"], "faulty", "{line}");
        assert_eq!(h["flowhost-error-kind"], "trap", "{line}");
        assert_eq!(h["flowhost-error-port"], "in", "{line}");
        assert_eq!(h["flowhost-error-attempts"], "1", "{line}");
        assert!(h["flowhost-error-time"].as_str().unwrap().parse::<u64>().unwrap() > 0);
        let error = h["flowhost-error"].as_str().unwrap();
        if payload.starts_with("panic") {
            // The SDK's panic hook names the input it trapped on: the host takes that
            // message as the culprit without searching the batch for it.
            assert!(
                error.contains("panicked on input ") && error.contains("asked to panic"),
                "{line}"
            );
        } else {
            assert!(error.contains("aborted"), "{line}");
        }
        seen.insert(payload);
    }
    assert_eq!(seen.iter().collect::<BTreeSet<_>>(), poison);

    // Replaying with the same module: everything fails again, nothing is lost.
    let again = flowhost(dir.path(), &["replay", "graph.toml", "dlq", "--into", "faulty"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains("replayed 1000: 0 succeeded, 1000 failed again"),
        "{}",
        text(&again)
    );
    assert_eq!(lines(&dir.path().join("dlq.jsonl")).len(), poison.len());

    // The fix: a module that passes everything through. The rest gets delivered.
    let fixed = flowhost::plan::build_crate(&functions().join("passthrough")).unwrap();
    let fixed = fixed.to_str().unwrap();
    let replay = flowhost(
        dir.path(),
        &[
            "replay",
            "graph.toml",
            "dlq",
            "--into",
            "faulty",
            "--module",
            fixed,
        ],
    );
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("replayed 1000: 1000 succeeded, 0 failed again"),
        "{}",
        text(&replay)
    );
    let out = lines(&dir.path().join("out.txt"));
    assert_eq!(
        out.len(),
        MESSAGES,
        "every message delivered exactly once in the end"
    );
    assert_eq!(out.iter().collect::<BTreeSet<_>>(), input.iter().collect());
    assert!(lines(&dir.path().join("dlq.jsonl")).is_empty());
    assert!(!dir.path().join("dlq.jsonl.replaying").exists());
}

#[test]
fn replay_keeps_other_nodes_dead_letters_and_names_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "").unwrap();
    let crate_line = format!("crate = \"{}/faulty\"", functions().display());
    poison_graph(dir.path(), &crate_line);
    let other = r#"{"headers":{"flowhost-error":"x","flowhost-error-node":"elsewhere"},"key":"k","payload":{"a":1},"timestamp":5}"#;
    let ours = r#"{"headers":{"flowhost-error":"x","flowhost-error-node":"faulty","trace":"t1"},"key":"k2","payload":"ok","timestamp":7}"#;
    std::fs::write(dir.path().join("dlq.jsonl"), format!("{other}\n{ours}\n")).unwrap();

    let replay = flowhost(dir.path(), &["replay", "graph.toml", "dlq", "--into", "faulty"]);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(text(&replay).contains("replayed 1: 1 succeeded, 0 failed again; 1 other message(s) left"));
    assert_eq!(lines(&dir.path().join("dlq.jsonl")), [other]);
    assert_eq!(lines(&dir.path().join("out.txt")), ["ok"]);

    let bad = flowhost(dir.path(), &["replay", "graph.toml", "nope", "--into", "faulty"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).contains("no sink `nope`") && text(&bad).contains("sinks: dlq, out"),
        "{}",
        text(&bad)
    );
    let bad = flowhost(dir.path(), &["replay", "graph.toml", "dlq", "--into", "nope"]);
    assert!(text(&bad).contains("no node `nope`"), "{}", text(&bad));

    // A damaged dead-letter file is refused, naming the line, and left as it is.
    std::fs::write(dir.path().join("dlq.jsonl"), format!("{other}\nnot json\n")).unwrap();
    let bad = flowhost(dir.path(), &["replay", "graph.toml", "dlq", "--into", "faulty"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("dlq.jsonl:2:"), "{}", text(&bad));
    assert_eq!(lines(&dir.path().join("dlq.jsonl")), [other, "not json"]);
}

#[test]
fn replay_of_a_kafka_graph_runs_in_this_process() {
    // A dead-letter file of a graph that runs over Kafka: replay reads it and runs the
    // node here, never asking the brokers (these ones do not exist).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "").unwrap();
    let crate_line = format!("crate = \"{}/faulty\"", functions().display());
    let path = poison_graph(dir.path(), &crate_line);
    let manifest = std::fs::read_to_string(&path).unwrap().replacen(
        "name = \"poison\"\n",
        "name = \"poison\"\ntransport = \"kafka\"\n",
        1,
    ) + "[kafka]\nbrokers = \"127.0.0.1:1\"\n";
    std::fs::write(&path, manifest).unwrap();
    let ours = r#"{"headers":{"flowhost-error":"x","flowhost-error-node":"faulty"},"key":"k","payload":"ok","timestamp":7}"#;
    std::fs::write(dir.path().join("dlq.jsonl"), format!("{ours}\n")).unwrap();

    let replay = flowhost(dir.path(), &["replay", "graph.toml", "dlq", "--into", "faulty"]);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("replayed 1: 1 succeeded, 0 failed again"),
        "{}",
        text(&replay)
    );
    assert_eq!(lines(&dir.path().join("out.txt")), ["ok"]);
    assert!(lines(&dir.path().join("dlq.jsonl")).is_empty());
}

#[test]
fn a_pinned_module_that_does_not_match_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "a\nb\n").unwrap();
    let module = flowhost::plan::build_crate(&functions().join("faulty")).unwrap();
    let bytes = std::fs::read(&module).unwrap();
    let actual = sha256_hex(&bytes);
    let wrong = "0".repeat(64);

    poison_graph(
        dir.path(),
        &format!("module = \"{}\"\nsha256 = \"{wrong}\"", module.display()),
    );
    let run = flowhost(dir.path(), &["run", "graph.toml"]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    let said = text(&run);
    assert!(
        said.contains("node `faulty`") && said.contains("does not match its pinned sha256"),
        "{said}"
    );
    assert!(said.contains(&actual), "names the file's real hash: {said}");
    assert!(!dir.path().join("out.txt").exists(), "nothing ran");

    poison_graph(
        dir.path(),
        &format!("module = \"{}\"\nsha256 = \"{actual}\"", module.display()),
    );
    let run = flowhost(dir.path(), &["run", "graph.toml"]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(lines(&dir.path().join("out.txt")).len(), 2);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn replay_restores_durable_stores_applies_the_fix_and_saves_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = "ok1\npanic:1\nok2\npanic:2\nok3\n";
    std::fs::write(dir.path().join("in.txt"), input).unwrap();
    let faulty = format!("crate = \"{}/faulty\"", functions().display());
    let manifest = format!(
        "name = \"counted\"\n[stores.counts]\ndurability = \"durable\"\n[sources.in]\nkind = \"file\"\npath = \"in.txt\"\n\
         [nodes.faulty]\n{faulty}\nconfig = {{ count_in = \"counts\" }}\nstate = {{ counts = \"rw\" }}\non_error = \"dead-letter\"\ndead_letter = \"dlq\"\n\
         [sinks.out]\nkind = \"file\"\npath = \"out.txt\"\n[sinks.dlq]\nkind = \"file\"\npath = \"dlq.jsonl\"\nformat = \"json\"\n\
         [[edges]]\nfrom = \"in\"\nto = \"faulty\"\n[[edges]]\nfrom = \"faulty\"\nto = \"out\"\n"
    );
    std::fs::write(dir.path().join("graph.toml"), manifest).unwrap();
    let run = flowhost(dir.path(), &["run", "graph.toml"]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(lines(&dir.path().join("dlq.jsonl")).len(), 2);

    // The fix: `stamp` passes everything and counts what it stamps under `v1`, in the
    // same store (the node's config is kept: `count_in = "counts"`).
    let fixed = flowhost::plan::build_crate(&functions().join("stamp")).unwrap();
    let args = [
        "replay",
        "graph.toml",
        "dlq",
        "--into",
        "faulty",
        "--module",
        fixed.to_str().unwrap(),
    ];
    let replay = flowhost(dir.path(), &args);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("replayed 2: 2 succeeded, 0 failed again"),
        "{}",
        text(&replay)
    );

    let state = flowhost::state::durable::read(&dir.path().join(".flowhost/counted")).unwrap();
    let counts = &state.stores["counts"];
    let counter = |k: &str| {
        counts
            .get(k.as_bytes())
            .map(|(v, _)| i64::from_le_bytes(v[..8].try_into().unwrap()))
    };
    for ok in ["ok1", "ok2", "ok3"] {
        assert_eq!(
            counter(ok),
            Some(1),
            "{ok}: restored from the run, kept by the replay"
        );
    }
    assert_eq!(counter("panic:1"), None, "a trapped call's writes were undone");
    assert_eq!(counter("v1"), Some(2), "the replay's writes were saved");
    assert!(!state.last.expect("a checkpoint").sources.is_empty());
}

/// `in → faulty → tally (report) → totals`, with `faulty`'s output also in `seen`: the
/// totals are emitted at finish, the rest message by message.
fn totals_graph(dir: &Path, durability: &str) {
    let faulty = format!("crate = \"{}/faulty\"", functions().display());
    let tally = format!("crate = \"{}/tally\"", functions().display());
    let manifest = format!(
        "name = \"totals\"\n[stores.counts]\ndurability = \"{durability}\"\n[sources.in]\nkind = \"file\"\npath = \"in.txt\"\n\
         [nodes.faulty]\n{faulty}\non_error = \"dead-letter\"\ndead_letter = \"dlq\"\n\
         [nodes.tally]\n{tally}\nconfig = {{ report = true }}\nstate = {{ counts = \"rw\" }}\n\
         [sinks.totals]\nkind = \"file\"\npath = \"totals.txt\"\n[sinks.seen]\nkind = \"file\"\npath = \"seen.txt\"\n\
         [sinks.dlq]\nkind = \"file\"\npath = \"dlq.jsonl\"\nformat = \"json\"\n\
         [[edges]]\nfrom = \"in\"\nto = \"faulty\"\n[[edges]]\nfrom = \"faulty\"\nto = \"tally\"\n\
         [[edges]]\nfrom = \"faulty\"\nto = \"seen\"\n[[edges]]\nfrom = \"tally\"\nto = \"totals\"\n"
    );
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
    std::fs::write(dir.join("in.txt"), "a\nb\npanic:1\na\npanic:2\n").unwrap();
}

#[test]
fn replay_into_an_aggregate_writes_its_corrected_totals_once() {
    let dir = tempfile::tempdir().unwrap();
    totals_graph(dir.path(), "durable");
    let run = flowhost(dir.path(), &["run", "graph.toml"]);
    assert!(run.status.success(), "{}", text(&run));
    let totals = dir.path().join("totals.txt");
    assert_eq!(lines(&totals), ["a\t2", "b\t1"]);
    assert_eq!(lines(&dir.path().join("dlq.jsonl")).len(), 2);

    let fixed = flowhost::plan::build_crate(&functions().join("passthrough")).unwrap();
    let replay_args = [
        "replay",
        "graph.toml",
        "dlq",
        "--into",
        "faulty",
        "--module",
        fixed.to_str().unwrap(),
    ];
    // A totals file changed since the run: the replay cannot tell where the totals are.
    let before = std::fs::read(&totals).unwrap();
    std::fs::write(&totals, [&before[..], b"edited\n"].concat()).unwrap();
    let refused = flowhost(dir.path(), &replay_args);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("the file changed since"),
        "{}",
        text(&refused)
    );
    assert_eq!(lines(&dir.path().join("dlq.jsonl")).len(), 2, "nothing moved");
    std::fs::write(&totals, &before).unwrap();

    let replay = flowhost(dir.path(), &replay_args);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("replayed 2: 2 succeeded"),
        "{}",
        text(&replay)
    );
    // The totals over everything, once, in place of the partial ones.
    assert_eq!(lines(&totals), ["a\t2", "b\t1", "panic:1\t1", "panic:2\t1"]);
    // What went out message by message is kept, and the replayed messages follow it.
    assert_eq!(
        lines(&dir.path().join("seen.txt")),
        ["a", "b", "a", "panic:1", "panic:2"]
    );
    assert!(lines(&dir.path().join("dlq.jsonl")).is_empty());

    // A replay with nothing to replay changes nothing.
    let replay = flowhost(dir.path(), &replay_args);
    assert!(replay.status.success(), "{}", text(&replay));
    assert_eq!(lines(&totals), ["a\t2", "b\t1", "panic:1\t1", "panic:2\t1"]);
}

#[test]
fn replay_into_an_aggregate_without_durable_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    totals_graph(dir.path(), "memory");
    let run = flowhost(dir.path(), &["run", "graph.toml"]);
    assert!(run.status.success(), "{}", text(&run));
    let refused = flowhost(dir.path(), &["replay", "graph.toml", "dlq", "--into", "faulty"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let said = text(&refused);
    assert!(
        said.contains("node `tally` emitted its results at finish into sink `totals`")
            && said.contains("its state is not durable"),
        "{said}"
    );
    assert_eq!(
        lines(&dir.path().join("totals.txt")),
        ["a\t2", "b\t1"],
        "untouched"
    );
    assert_eq!(lines(&dir.path().join("dlq.jsonl")).len(), 2, "nothing moved");
}
