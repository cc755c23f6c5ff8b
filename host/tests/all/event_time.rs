//! Event time through the binary: windows that close while their input still flows (a
//! named pipe stays open), an idle source that stops holding them back, a processing-time
//! timer on a quiet stream, open windows across `kill -9` and a hot swap.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::Running;

fn functions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions")
}

/// A named pipe at `path`.
fn fifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success(), "mkfifo {}", path.display());
}

/// The lines of `path` once `ok` holds for them (a bounded wait, not a timing check).
fn wait_lines(path: &Path, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if ok(&lines) {
            return lines;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn click(ts: i64) -> String {
    format!("{{\"ts\":{ts}}}\n")
}

/// Named-pipe sources `(id, watermark)` -> per-second (1 s tumbling count) -> out.jsonl,
/// in `dir`.
fn streaming_windows(dir: &Path, sources: &[(&str, &str)], head: &str) {
    let mut manifest = format!(
        r#"name = "streaming"
{head}
[stores.win]
[nodes.per-second]
crate = "{f}/aggregate"
state = {{ win = "rw" }}
config = {{ store = "win", group_by = [], aggregates = [{{ fn = "count" }}], window = {{ kind = "tumbling", size_ms = 1000 }} }}
[sinks.out]
kind = "file"
path = "out.jsonl"
[[edges]]
from = "per-second"
to = "out"
"#,
        f = functions().display()
    );
    for (id, watermark) in sources {
        fifo(&dir.join(format!("{id}.jsonl")));
        manifest.push_str(&format!(
            "[sources.{id}]\nkind = \"jsonl\"\npath = \"{id}.jsonl\"\ntimestamp_field = \"ts\"\nwatermark = {watermark}\n[[edges]]\nfrom = \"{id}\"\nto = \"per-second\"\n"
        ));
    }
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
}

/// Opens the pipe of source `id` for writing (waiting for the source to open it).
fn writer(dir: &Path, id: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(format!("{id}.jsonl")))
        .unwrap()
}

/// Feeds the `busy` and `quiet` pipes of [`streaming_windows`]: `quiet` says 500 and
/// then nothing; once it is idle it holds the watermark no longer, and [0, 1 s) closes at
/// `busy`'s 1200 — checked, both pipes still open. The pipes, to close.
fn feed_busy_and_quiet(dir: &Path) -> (std::fs::File, std::fs::File) {
    // Opening a pipe for writing waits for its reader: the sources are reading.
    let mut busy = writer(dir, "busy");
    let mut quiet = writer(dir, "quiet");
    quiet.write_all(click(500).as_bytes()).unwrap();
    quiet.flush().unwrap();
    for ts in [100, 600, 1200] {
        busy.write_all(click(ts).as_bytes()).unwrap();
    }
    busy.flush().unwrap();
    let lines = wait_lines(&dir.join("out.jsonl"), "the first window", |l| !l.is_empty());
    assert_eq!(
        row(&lines[0]),
        serde_json::json!({"window_start": 0, "window_end": 1000, "count": 3})
    );
    assert_eq!(lines.len(), 1);
    (busy, quiet)
}

/// Once both pipes are closed, the end of input closes [1 s, 2 s).
fn the_end_closes_the_last_window(dir: &Path) {
    let lines = wait_lines(&dir.join("out.jsonl"), "the last window", |l| l.len() == 2);
    assert_eq!(
        row(&lines[1]),
        serde_json::json!({"window_start": 1000, "window_end": 2000, "count": 1})
    );
}

fn row(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap()
}

#[test]
fn windows_close_while_the_input_flows_and_an_idle_source_stops_holding_them_back() {
    let dir = tempfile::tempdir().unwrap();
    streaming_windows(
        dir.path(),
        &[
            ("busy", "{ out_of_orderness_ms = 0 }"),
            ("quiet", "{ idle_ms = 300 }"),
        ],
        "",
    );
    let run = Running::start(dir.path(), &["--batch-size", "1"]);
    let pipes = feed_busy_and_quiet(dir.path());
    let status = run.wait_for("the watermark at 1200", |s| {
        s.nodes[0].replicas[0].watermark == Some(1200)
    });
    let replica = &status.nodes[0].replicas[0];
    assert_eq!(replica.event_timers, 1, "[1 s, 2 s) is open: {replica:?}");
    assert!(!replica.idle, "`busy` is not idle");
    let table = super::common::bin()
        .args(["status", "--admin", &run.addr])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains(
            "time   per-second       #0 watermark 1970-01-01T00:00:01.200Z, timers 1 event 0 processing"
        ),
        "{table}"
    );
    let metrics = ureq::get(&format!("http://{}/metrics", run.addr))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let sample = "{graph=\"streaming\",node=\"per-second\",replica=\"0\"}";
    for line in [
        format!("flowhost_replica_watermark_seconds{sample} 1.2"),
        format!("flowhost_replica_event_timers{sample} 1"),
        format!("flowhost_replica_idle{sample} 0"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in:\n{metrics}");
    }
    drop(pipes);
    let mut run = run;
    assert!(run.child.wait().unwrap().success());
    the_end_closes_the_last_window(dir.path());
}

#[test]
fn a_hot_swap_with_a_window_open_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    streaming_windows(dir.path(), &[("clicks", "{ out_of_orderness_ms = 0 }")], "");
    let run = Running::start(dir.path(), &["--batch-size", "1"]);
    let mut clicks = writer(dir.path(), "clicks");
    for ts in [100, 600, 1200] {
        clicks.write_all(click(ts).as_bytes()).unwrap();
    }
    clicks.flush().unwrap();
    let out = dir.path().join("out.jsonl");
    wait_lines(&out, "the first window", |l| !l.is_empty());
    // [1 s, 2 s) holds one click; a new instance takes over (the same module, built again).
    let module = flowhost::plan::build_crate(&functions().join("aggregate")).unwrap();
    let swapped = super::common::bin()
        .args([
            "swap",
            "per-second",
            module.to_str().unwrap(),
            "--admin",
            &run.addr,
        ])
        .output()
        .unwrap();
    assert!(swapped.status.success(), "{}", super::common::text(&swapped));
    run.wait_for("the swap", |s| s.nodes[0].replicas[0].version == 2);
    for ts in [1500, 2100] {
        clicks.write_all(click(ts).as_bytes()).unwrap();
    }
    clicks.flush().unwrap();
    let lines = wait_lines(&out, "the second window", |l| l.len() == 2);
    assert_eq!(
        row(&lines[1]),
        serde_json::json!({"window_start": 1000, "window_end": 2000, "count": 2}),
        "the click before the swap and the one after"
    );
    drop(clicks);
    let mut run = run;
    assert!(run.child.wait().unwrap().success());
}

#[test]
fn a_processing_time_timer_fires_on_a_stream_with_no_input() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "name = \"ticks\"\n[sources.in]\nkind = \"stdin\"\n[nodes.ticker]\ncrate = \"{}/ticker\"\nconfig = {{ every_ms = 200 }}\n[sinks.out]\nkind = \"stdout\"\n[[edges]]\nfrom = \"in\"\nto = \"ticker\"\n[[edges]]\nfrom = \"ticker\"\nto = \"out\"\n",
        functions().display()
    );
    std::fs::write(dir.path().join("graph.toml"), manifest).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowhost"))
        .args(["run", "graph.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(rx.recv_timeout(Duration::from_secs(120)).expect("a tick"));
    }
    // Nothing came after `hello`, and the ticks go on.
    assert_eq!(
        seen,
        [
            "hello",
            "tick 1 after 1 messages",
            "tick 2 after 1 messages",
            "tick 3 after 1 messages"
        ]
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

const CLICKS: i64 = 300_000;

/// clicks (300,000, up to 49 ms out of order) -> per-key (1 s windows, durable store, 2
/// replicas by key) -> out, checkpointed every 20 ms.
fn durable_windows() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..CLICKS {
        let ts = i * 10 - (i * 7919) % 50;
        text.push_str(&format!("{{\"k\":\"k{}\",\"ts\":{ts}}}\n", i % 7));
    }
    std::fs::write(dir.path().join("clicks.jsonl"), text).unwrap();
    let manifest = format!(
        r#"name = "crash-windows"
[checkpoint]
interval_ms = 20
[stores.win]
durability = "durable"
[sources.clicks]
kind = "jsonl"
path = "clicks.jsonl"
key_field = "k"
timestamp_field = "ts"
watermark = {{ out_of_orderness_ms = 100 }}
[nodes.per-key]
crate = "{f}/aggregate"
replicas = 2
state = {{ win = "rw" }}
config = {{ store = "win", group_by = ["k"], aggregates = [{{ fn = "count" }}], window = {{ kind = "tumbling", size_ms = 1000 }} }}
[sinks.out]
kind = "file"
path = "out.jsonl"
[[edges]]
from = "clicks"
to = "per-key"
connection = "key-hash"
[[edges]]
from = "per-key"
to = "out"
"#,
        f = functions().display()
    );
    let path = dir.path().join("graph.toml");
    std::fs::write(&path, manifest).unwrap();
    (dir, path)
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn kill_9_with_open_windows_then_restart_emits_every_window_once_as_without_the_crash() {
    let (dir, manifest) = durable_windows();
    let manifest = manifest.to_str().unwrap();
    let flowhost = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowhost"));
        cmd.args(args).env("RUST_LOG", "info");
        cmd
    };
    let run = |args: &[&str]| {
        let out = flowhost(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    run(&["run", manifest, "--fresh"]);
    let out = dir.path().join("out.jsonl");
    let reference = sorted_lines(&out);
    // 3,000 s of clicks over 7 keys: a row per key and second, every click in one.
    assert!(reference.len() >= 3_000 * 7, "{}", reference.len());
    let counted: i64 = reference
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["count"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(counted, CLICKS);

    let state_dir = dir.path().join(".flowhost/crash-windows");
    let mut child = flowhost(&["run", manifest, "--fresh"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let log = flowhost::state::durable::read(&state_dir).unwrap();
        if log.records >= 4 && log.resumable().is_some() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint was written"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL, windows open
    child.wait().unwrap();
    let at = flowhost::state::durable::read(&state_dir)
        .unwrap()
        .resumable()
        .unwrap()
        .sources["clicks"];
    assert!(
        at.records > 0 && at.records < CLICKS as u64,
        "killed mid-run: {at:?}"
    );

    let stderr = run(&["run", manifest]);
    assert!(stderr.contains("resuming from the last checkpoint"), "{stderr}");
    let after = sorted_lines(&out);
    assert_eq!(after.len(), reference.len(), "every window once");
    assert!(
        after == reference,
        "the windows differ from the run without the crash"
    );
}

/// A Kafka graph on `broker`: a named-pipe source keyed by `k` -> per-key (1 s windows
/// per key, store `win` of `durability`) -> out.jsonl, in `dir`.
fn kafka_windows(dir: &Path, broker: &super::common::Broker, durability: &str) {
    fifo(&dir.join("clicks.jsonl"));
    let manifest = format!(
        r#"name = "kafka-windows"
transport = "kafka"
[kafka]
brokers = "{brokers}"
partitions = 4
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500
[stores.win]
durability = "{durability}"
[sources.clicks]
kind = "jsonl"
path = "clicks.jsonl"
key_field = "k"
timestamp_field = "ts"
watermark = {{ out_of_orderness_ms = 0 }}
[nodes.per-key]
crate = "{f}/aggregate"
state = {{ win = "rw" }}
config = {{ store = "win", group_by = ["k"], aggregates = [{{ fn = "count" }}], window = {{ kind = "tumbling", size_ms = 1000 }}, allowed_lateness_ms = 1000 }}
[sinks.out]
kind = "file"
path = "out.jsonl"
[sinks.late]
kind = "file"
path = "late.jsonl"
[[edges]]
from = "clicks"
to = "per-key"
connection = "key-hash"
[[edges]]
from = "per-key"
to = "out"
[[edges]]
from = "per-key.late"
to = "late"
"#,
        brokers = broker.addr,
        durability = durability,
        f = functions().display()
    );
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
}

#[test]
fn over_kafka_an_idle_source_stops_holding_windows_back_after_its_timeout() {
    let broker = super::common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let kafka = format!(
        "transport = \"kafka\"\n[kafka]\nbrokers = \"{}\"\npartitions = 4\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500",
        broker.addr
    );
    streaming_windows(
        dir.path(),
        &[
            ("busy", "{ out_of_orderness_ms = 0 }"),
            ("quiet", "{ idle_ms = 300 }"),
        ],
        &kafka,
    );
    let run = Running::start(dir.path(), &["--batch-size", "1"]);
    run.wait_log("node `per-second`: 8 partition(s) assigned"); // two topics of 4
    // (Over Kafka `quiet`'s markers carry its 300 ms timeout.)
    drop(feed_busy_and_quiet(dir.path()));
    the_end_closes_the_last_window(dir.path());
    drop(run);
}

fn keyed(k: &str, ts: i64) -> String {
    format!("{{\"k\":\"{k}\",\"ts\":{ts}}}\n")
}

#[test]
fn over_kafka_two_processes_close_each_window_once_while_the_input_flows() {
    let broker = super::common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    kafka_windows(dir.path(), &broker, "memory");
    // B runs only the node; A the whole graph: the node's partitions are shared.
    let b = Running::start(dir.path(), &["--nodes", "per-key", "--batch-size", "1"]);
    b.wait_log("node `per-key`: 4 partition(s) assigned");
    let a = Running::start(dir.path(), &["--batch-size", "1"]);
    a.wait_log("sink `out`: 4 partition(s) assigned");
    b.wait_log("partition(s) assigned");
    let mut clicks = writer(dir.path(), "clicks");
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
    for ts in [100, 600, 1200] {
        for k in keys {
            clicks.write_all(keyed(k, ts).as_bytes()).unwrap();
        }
    }
    clicks.flush().unwrap();
    let out = dir.path().join("out.jsonl");
    let first = wait_lines(&out, "every key's first window", |l| l.len() >= keys.len());
    let rows = |lines: &[String]| -> std::collections::BTreeSet<(String, i64, i64)> {
        lines
            .iter()
            .map(|l| {
                let r = row(l);
                let k = r["k"].as_str().unwrap().to_owned();
                (
                    k,
                    r["window_start"].as_i64().unwrap(),
                    r["count"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let expect = |start: i64, count: i64| -> std::collections::BTreeSet<(String, i64, i64)> {
        keys.iter().map(|k| (k.to_string(), start, count)).collect()
    };
    assert_eq!(rows(&first), expect(0, 2), "the pipe is still open");
    let shared = [&a, &b]
        .iter()
        .filter(|r| {
            r.status()
                .nodes
                .iter()
                .any(|n| n.id == "per-key" && n.counts.received > 0)
        })
        .count();
    assert_eq!(shared, 2, "both processes took part");
    let send = |clicks: &mut std::fs::File, ts: i64| {
        for k in keys {
            clicks.write_all(keyed(k, ts).as_bytes()).unwrap();
        }
        clicks.flush().unwrap();
    };
    // Every replica's watermark has passed 1 s (each key's row is out): a click at 0.5 s
    // is late by less than the lateness: each key's [0, 1 s) again, with 3.
    send(&mut clicks, 500);
    let lines = wait_lines(&out, "the late updates", |l| l.len() >= 2 * keys.len());
    assert_eq!(rows(&lines[keys.len()..]), expect(0, 3));
    // 2.1 s closes [1 s, 2 s) everywhere; then a click at 0.7 s is past the lateness.
    send(&mut clicks, 2100);
    let lines = wait_lines(&out, "the second windows", |l| l.len() >= 3 * keys.len());
    assert_eq!(rows(&lines[2 * keys.len()..]), expect(1000, 1));
    send(&mut clicks, 700);
    let late = wait_lines(&dir.path().join("late.jsonl"), "the late clicks", |l| {
        l.len() >= keys.len()
    });
    assert!(late.iter().all(|l| row(l)["ts"] == 700), "{late:?}");
    drop(clicks);
    // The end of the input closes [2 s, 3 s) for every key, once.
    let all = wait_lines(&out, "the last windows", |l| l.len() >= 4 * keys.len());
    assert_eq!(rows(&all[3 * keys.len()..]), expect(2000, 1));
    assert_eq!(
        all.len(),
        4 * keys.len(),
        "each window once, and once per update: {all:?}"
    );
    assert_eq!(late.len(), keys.len());
}

#[test]
fn over_kafka_an_open_window_comes_back_from_the_changelog_after_kill_9() {
    let broker = super::common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    kafka_windows(dir.path(), &broker, "durable");
    let out = dir.path().join("out.jsonl");
    let keys = ["k0", "k1", "k2", "k3"];
    let run = Running::start(dir.path(), &["--batch-size", "1"]);
    run.wait_log("node `per-key`: 4 partition(s) assigned");
    let mut clicks = writer(dir.path(), "clicks");
    for ts in [100, 600, 1200] {
        for k in keys {
            clicks.write_all(keyed(k, ts).as_bytes()).unwrap();
        }
    }
    clicks.flush().unwrap();
    wait_lines(&out, "the first windows", |l| l.len() >= keys.len());
    // [1 s, 2 s) is open, its clicks and timers committed with the changelog: kill -9.
    run.wait_for("everything committed", |s| {
        s.nodes[0].counts.received == 12
            && s.kafka.as_ref().is_some_and(|k| {
                k.inputs.iter().all(|g| g.uncommitted_ms.is_none())
                    && k.inputs
                        .iter()
                        .any(|g| g.vertex == "node `per-key`" && g.read.values().sum::<u64>() == 12)
            })
    });
    let mut run = run;
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    drop(clicks);
    drop(run);
    std::fs::remove_file(dir.path().join("clicks.jsonl")).unwrap();

    // The next run reads only later clicks: [1 s, 2 s) closes from what the changelog
    // brought back (its count and its timer), once.
    fifo(&dir.path().join("clicks.jsonl"));
    let run = Running::start(dir.path(), &["--batch-size", "1"]);
    let mut clicks = writer(dir.path(), "clicks");
    for k in keys {
        clicks.write_all(keyed(k, 2600).as_bytes()).unwrap();
    }
    clicks.flush().unwrap();
    let lines = wait_lines(&out, "the windows left open", |l| l.len() >= 2 * keys.len());
    let second: std::collections::BTreeSet<(String, i64, i64)> = lines[keys.len()..]
        .iter()
        .map(|l| {
            let r = row(l);
            (
                r["k"].as_str().unwrap().to_owned(),
                r["window_start"].as_i64().unwrap(),
                r["count"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: std::collections::BTreeSet<(String, i64, i64)> =
        keys.iter().map(|k| (k.to_string(), 1000, 1)).collect();
    assert_eq!(second, want);
    drop(clicks);
    drop(run);
}

#[test]
fn over_kafka_a_kafka_source_makes_watermarks_from_its_record_timestamps() {
    let broker = super::common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let kafka = format!(
        "transport = \"kafka\"\n[kafka]\nbrokers = \"{}\"\npartitions = 4\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n",
        broker.addr
    );
    // One graph writes timestamped clicks to a topic (40 keys: every partition gets some)...
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let mut text = String::new();
    for ts in [100, 600, 1200] {
        for k in &keys {
            text.push_str(&keyed(k, ts));
        }
    }
    std::fs::write(dir.path().join("clicks.jsonl"), text).unwrap();
    let feeder = format!(
        "name = \"feeder\"\n{kafka}[sources.file]\nkind = \"jsonl\"\npath = \"clicks.jsonl\"\nkey_field = \"k\"\ntimestamp_field = \"ts\"\n[nodes.pass]\ncrate = \"{f}/passthrough\"\n[sinks.topic]\nkind = \"kafka\"\ntopic = \"raw-clicks\"\n[[edges]]\nfrom = \"file\"\nto = \"pass\"\n[[edges]]\nfrom = \"pass\"\nto = \"topic\"\n",
        f = functions().display()
    );
    std::fs::write(dir.path().join("feeder.toml"), feeder).unwrap();
    let fed = super::common::bin()
        .args(["run", "feeder.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(fed.status.success(), "{}", super::common::text(&fed));
    // ... and a graph reading that topic closes windows by its records' timestamps.
    let reader = format!(
        "name = \"reader\"\n{kafka}[stores.win]\n[sources.clicks]\nkind = \"kafka\"\ntopic = \"raw-clicks\"\nwatermark = {{ out_of_orderness_ms = 0 }}\n[nodes.per-key]\ncrate = \"{f}/aggregate\"\nstate = {{ win = \"rw\" }}\nconfig = {{ store = \"win\", group_by = [\"k\"], aggregates = [{{ fn = \"count\" }}], window = {{ kind = \"tumbling\", size_ms = 1000 }} }}\n[sinks.out]\nkind = \"file\"\npath = \"out.jsonl\"\n[[edges]]\nfrom = \"clicks\"\nto = \"per-key\"\n[[edges]]\nfrom = \"per-key\"\nto = \"out\"\n",
        f = functions().display()
    );
    std::fs::write(dir.path().join("graph.toml"), reader).unwrap();
    let run = Running::start(dir.path(), &[]);
    let lines = wait_lines(&dir.path().join("out.jsonl"), "the first windows", |l| {
        l.len() >= keys.len()
    });
    let rows: std::collections::BTreeSet<(String, i64, i64)> = lines
        .iter()
        .map(|l| {
            let r = row(l);
            (
                r["k"].as_str().unwrap().to_owned(),
                r["window_start"].as_i64().unwrap(),
                r["count"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: std::collections::BTreeSet<(String, i64, i64)> =
        keys.iter().map(|k| (k.clone(), 0, 2)).collect();
    assert_eq!(
        rows, want,
        "[0, 1 s) closed by the 1.2 s records; [1 s, 2 s) stays open"
    );
    let status = run.status();
    assert_eq!(status.nodes[0].replicas[0].watermark, Some(1200));
    drop(run);
}
