//! Event time in-process: watermarks from a source's timestamps, windows closed by them,
//! late records, exact outputs on out-of-order input.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use flowhost::topology::RunOptions;
use flowhost_tests::{function, graph_in, run_captured_with};
use serde_json::{Value, json};

/// clicks (jsonl, `ts`, 2 s out of order) -> per-who (10 s tumbling windows, 5 s
/// lateness, 2 replicas by key) -> out, late.
fn windows_graph(
    dir: &std::path::Path,
    clicks: &[(&str, i64)],
    window: &str,
) -> Result<flowhost::manifest::Graph> {
    let lines: String = clicks
        .iter()
        .map(|(who, ts)| format!("{{\"who\":\"{who}\",\"ts\":{ts}}}\n"))
        .collect();
    std::fs::write(dir.join("clicks.jsonl"), lines)?;
    graph_in(
        dir,
        &format!(
            r#"name = "windows"
[stores.win]
[sources.clicks]
kind = "jsonl"
path = "clicks.jsonl"
key_field = "who"
timestamp_field = "ts"
watermark = {{ out_of_orderness_ms = 2000 }}
[nodes.per-who]
crate = "{aggregate}"
replicas = 2
state = {{ win = "rw" }}
[nodes.per-who.config]
store = "win"
group_by = ["who"]
aggregates = [{{ fn = "count" }}]
window = {window}
allowed_lateness_ms = 5000
[sinks.out]
kind = "file"
path = "out.jsonl"
[sinks.late]
kind = "file"
path = "late.jsonl"
[[edges]]
from = "clicks"
to = "per-who"
connection = "key-hash"
[[edges]]
from = "per-who"
to = "out"
[[edges]]
from = "per-who.late"
to = "late"
"#,
            aggregate = function("aggregate").display()
        ),
    )
}

#[test]
fn out_of_order_clicks_give_each_window_once_then_its_late_updates_and_the_late_port() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Watermark after each record (one record per batch): the largest ts so far - 2 s.
    let clicks = [
        ("ann", 1_000),  // wm -1 s
        ("bob", 3_000),  // wm 1 s
        ("ann", 12_000), // wm 10 s: [0, 10 s) closes: ann 1, bob 1
        ("ann", 9_000),  // late by less than 5 s: [0, 10 s) again, ann 2
        ("bob", 25_000), // wm 23 s: [10 s, 20 s) closes: ann 1; [0, 10 s) is freed
        ("ann", 14_000), // late by less than 5 s: [10 s, 20 s) again, ann 2
        ("bob", 8_000),  // [0, 10 s) is past its lateness: to `late`
    ];
    let graph = windows_graph(dir.path(), &clicks, r#"{ kind = "tumbling", size_ms = 10000 }"#)?;
    let opts = RunOptions {
        batch_size: 1,
        ..RunOptions::default()
    };
    let out = run_captured_with(graph, dir.path(), &opts)?;
    assert_eq!(out.report.failure, None);
    // Replicas write to the sink side by side: each key's rows are in order.
    let mut by_who: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for row in out.json("out") {
        let who = row["who"].as_str().unwrap().to_owned();
        assert_eq!(
            row["window_end"].as_i64().unwrap() - row["window_start"].as_i64().unwrap(),
            10_000
        );
        by_who.entry(who).or_default().push((
            row["window_start"].as_i64().unwrap(),
            row["count"].as_i64().unwrap(),
        ));
    }
    assert_eq!(
        by_who,
        BTreeMap::from([
            ("ann".to_owned(), vec![(0, 1), (0, 2), (10_000, 1), (10_000, 2)]),
            // bob's [20 s, 30 s) closes at the end of input.
            ("bob".to_owned(), vec![(0, 1), (20_000, 1)]),
        ])
    );
    let late: Vec<Value> = out.json("late");
    assert_eq!(late, [json!({"who": "bob", "ts": 8_000})]);
    assert_eq!(out.node("per-who").errors, 0);
    Ok(())
}

#[test]
fn the_hourly_stream_example_counts_what_the_batch_example_counts_per_hour() -> Result<()> {
    for on in flowhost_tests::BOTH {
        hourly_on(on).with_context(|| format!("on {on:?}"))?;
    }
    Ok(())
}

fn hourly_on(on: flowhost_tests::On) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let load = |name: &str| flowhost::manifest::Graph::load(flowhost_tests::repo().join("graphs").join(name));
    let opts = RunOptions {
        batch_size: 1,
        ..RunOptions::default()
    };
    let stream = flowhost_tests::run_captured_on_with(load("clicks-hourly.toml")?, dir.path(), on, &opts)?;
    assert_eq!(stream.report.failure, None);
    assert!(
        stream.lines("late").is_empty(),
        "nothing is later than the lateness"
    );
    let hours: std::collections::BTreeSet<(String, i64, i64)> = stream
        .json("out")
        .iter()
        .map(|r| {
            let start = r["window_start"].as_i64().unwrap();
            assert_eq!(r["window_end"].as_i64().unwrap() - start, 3_600_000);
            (
                r["customer"].as_str().unwrap().to_owned(),
                start,
                r["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(hours.len(), stream.lines("out").len(), "each hour once");
    // graphs/clicks.toml counts the same clicks per hour at the end of its input.
    let batch_dir = tempfile::tempdir()?;
    let batch = flowhost_tests::run_captured(load("clicks.toml")?, batch_dir.path())?;
    let expected: std::collections::BTreeSet<(String, i64, i64)> = batch
        .json("out")
        .iter()
        .filter(|r| r["bucket"] == "hour")
        .map(|r| {
            let start = format!("{}:00:00Z", r["start"].as_str().unwrap());
            let start = start.parse::<humantime::Timestamp>().unwrap();
            let ms = std::time::SystemTime::from(start)
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            (
                r["customer"].as_str().unwrap().to_owned(),
                ms,
                r["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(hours, expected);
    assert_eq!(hours.len(), 13);
    Ok(())
}

#[test]
fn sessions_merge_across_out_of_order_clicks_and_close_a_gap_after_their_last() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // 3 s gaps; the watermark trails the largest ts by 2 s.
    let clicks = [
        ("ann", 1_000),
        ("ann", 2_500),  // ann [1 s, 5.5 s)
        ("bob", 3_000),  // bob [3 s, 6 s)
        ("ann", 9_000),  // wm 7 s: ann [1 s, 5.5 s) and bob close; ann [9 s, 12 s) opens
        ("ann", 7_000),  // on time (wm 7 s): [7 s, 10 s) merges with [9 s, 12 s) into [7 s, 12 s)
        ("bob", 20_000), // wm 18 s: ann [7 s, 12 s) closes
    ];
    let graph = windows_graph(dir.path(), &clicks, r#"{ kind = "session", gap_ms = 3000 }"#)?;
    let opts = RunOptions {
        batch_size: 1,
        ..RunOptions::default()
    };
    let out = run_captured_with(graph, dir.path(), &opts)?;
    assert_eq!(out.report.failure, None);
    let mut by_who: BTreeMap<String, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for row in out.json("out") {
        by_who
            .entry(row["who"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                row["window_start"].as_i64().unwrap(),
                row["window_end"].as_i64().unwrap(),
                row["count"].as_i64().unwrap(),
            ));
    }
    assert_eq!(
        by_who,
        BTreeMap::from([
            ("ann".to_owned(), vec![(1_000, 5_500, 2), (7_000, 12_000, 2)]),
            ("bob".to_owned(), vec![(3_000, 6_000, 1), (20_000, 23_000, 1)]),
        ])
    );
    assert!(out.lines("late").is_empty());
    Ok(())
}
