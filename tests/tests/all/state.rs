//! Host-side stores through real wasm nodes: exact under concurrency, reachable only as granted.

use anyhow::Result;
use flowhost::state::Store;
use flowhost_tests::{BOTH, On, graph_in, run_captured, run_captured_on};

fn tally_graph(replicas: u32, grant: &str) -> String {
    format!(
        r#"
name = "tally"
[stores.counts]
[sources.gen]
kind = "generator"
count = 200000
payload_size = 8
keys = 10
[nodes.tally]
crate = "{{functions}}/tally"
replicas = {replicas}
{grant}
[[edges]]
from = "gen"
to = "tally"
"#
    )
}

fn counter(store: &Store, key: &str) -> Option<i64> {
    store
        .get(key.as_bytes())
        .map(|v| i64::from_le_bytes(v.try_into().expect("an 8-byte counter")))
}

#[test]
fn replicas_incrementing_the_same_keys_end_with_exact_totals() -> Result<()> {
    for on in BOTH {
        totals_on(on)?;
    }
    Ok(())
}

fn totals_on(on: On) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let graph = graph_in(dir.path(), &tally_graph(4, "state = { counts = \"rw\" }"))?;
    let out = run_captured_on(graph, dir.path(), on)?;
    assert_eq!(out.report.failure, None);
    let counts = out.report.stores.get("counts").expect("the declared store");
    assert_eq!(counts.len(), 10);
    for k in 0..10 {
        assert_eq!(counter(counts, &format!("k{k}")), Some(20_000), "k{k}");
    }
    assert_eq!(out.node("tally").received, 200_000);
    Ok(())
}

#[test]
fn a_full_store_refuses_new_keys_through_the_nodes_error_policy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let toml = tally_graph(2, "state = { counts = \"rw\" }\non_error = \"skip\"")
        .replace("count = 200000", "count = 100")
        .replace("[stores.counts]", "[stores.counts]\nmax_keys = 5");
    let graph = graph_in(dir.path(), &toml)?;
    let out = run_captured(graph, dir.path())?;
    assert_eq!(out.report.failure, None);
    let counts = out.report.stores.get("counts").expect("the declared store");
    assert_eq!(counts.len(), 5, "no key past max_keys");
    let total: i64 = (0..10).filter_map(|k| counter(counts, &format!("k{k}"))).sum();
    assert_eq!(total, 50, "the messages of 5 keys counted, each once");
    let node = out.node("tally");
    assert_eq!((node.errors, node.skipped), (50, 50), "{node:?}");
    Ok(())
}

#[test]
fn a_read_only_grant_cannot_write() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let graph = graph_in(dir.path(), &tally_graph(1, "state = { counts = \"r\" }"))?;
    let out = run_captured(graph, dir.path())?;
    assert_eq!(
        out.report.failure.as_deref(),
        Some("node `tally` stopped the graph: fatal: node `tally` may only read store `counts`")
    );
    assert!(
        out.report.stores.get("counts").unwrap().is_empty(),
        "nothing was written"
    );
    Ok(())
}

#[test]
fn a_node_without_a_grant_cannot_open_the_store() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let graph = graph_in(dir.path(), &tally_graph(1, ""))?;
    let err = format!(
        "{:#}",
        run_captured(graph, dir.path()).err().expect("init must fail")
    );
    assert!(err.contains("node `tally`: init: fatal: "), "{err}");
    assert!(
        err.contains("node `tally` is not granted store `counts`"),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_sales_graph_aggregates_per_country_exactly() -> Result<()> {
    for on in BOTH {
        sales_on(on)?;
    }
    Ok(())
}

fn sales_on(on: On) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let graph = flowhost::manifest::Graph::load(flowhost_tests::repo().join("graphs/sales.toml"))?;
    let out = run_captured_on(graph, dir.path(), on)?;
    assert_eq!(out.report.failure, None);
    let mut rows: Vec<serde_json::Value> = out
        .lines("out")
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    rows.sort_by_key(|r| r["country"].as_str().unwrap_or_default().to_owned());
    let row = |c: &str, n: i64, sum: i64, avg: f64, min: i64, max: i64, distinct: i64| {
        serde_json::json!({
            "country": c, "count": n, "sum_amount_cents": sum, "avg_amount_cents": avg,
            "min_amount_cents": min, "max_amount_cents": max, "count_distinct_customer": distinct,
        })
    };
    assert_eq!(
        rows,
        [
            row("DE", 3, 2700, 900.0, 600, 1200, 2),
            row("FR", 2, 1000, 500.0, 300, 700, 2),
            row("IT", 4, 1000, 250.0, 100, 400, 2),
            row("US", 1, 5000, 5000.0, 5000, 5000, 1),
        ],
        "one row per country, each from the replica that owns it"
    );
    let rejected = out.json("rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["payload"]["id"], 10);
    assert_eq!(
        rejected[0]["headers"]["flowhost-error"],
        "no field `amount_cents`"
    );
    Ok(())
}

#[test]
fn the_dedup_graph_passes_each_event_once_in_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let graph = flowhost::manifest::Graph::load(flowhost_tests::repo().join("graphs/dedup.toml"))?;
    let out = run_captured(graph, dir.path())?;
    let ids: Vec<String> = out
        .lines("out")
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON")["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4", "e5"]);
    assert_eq!(out.report.stores.get("seen").unwrap().len(), 5);
    Ok(())
}

#[test]
fn dedup_replicas_agree_through_compare_and_swap() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let lines: String = (0..30_000)
        .map(|i| format!("id{}\n", (i * 7919) % 1_000))
        .collect();
    std::fs::write(dir.path().join("ids.txt"), lines)?;
    let node = "crate = \"{functions}/dedup\"\nreplicas = 3\nstate = { seen = \"rw\" }\nconfig = { store = \"seen\" }";
    let toml = flowhost_tests::chain(
        "kind = \"file\"\npath = \"ids.txt\"",
        "dedup",
        node,
        "round-robin",
    ) + "[stores.seen]\n";
    let out = run_captured(graph_in(dir.path(), &toml)?, dir.path())?;
    let got = out.sorted("out");
    let mut expected: Vec<String> = (0..1_000).map(|i| format!("id{i}")).collect();
    expected.sort();
    assert_eq!(
        got, expected,
        "every identity exactly once, though its copies went to different replicas"
    );
    Ok(())
}

#[test]
fn the_join_graph_joins_customers_and_purchases_left() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let graph = flowhost::manifest::Graph::load(flowhost_tests::repo().join("graphs/join.toml"))?;
    let out = run_captured(graph, dir.path())?;
    assert_eq!(out.report.failure, None);
    let mut rows: Vec<(u64, serde_json::Value)> = out
        .lines("out")
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .map(|v| (v["order"].as_u64().unwrap(), v["customer"]["name"].clone()))
        .collect();
    rows.sort_by_key(|r| r.0);
    let name = |n: &str| serde_json::Value::from(n);
    assert_eq!(
        rows,
        [
            (1, name("Ann")),
            (2, name("Bob")),
            (3, serde_json::Value::Null),
            (4, name("Ann")),
            (5, name("Cy"))
        ],
        "every purchase once, with its customer whichever source came first"
    );
    let store = out.report.stores.get("join").unwrap();
    assert_eq!(store.scan(b"p\0", 100), vec![], "no purchase left waiting");
    Ok(())
}

#[test]
fn writes_of_a_call_that_traps_are_undone_so_each_message_counts_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("in.txt"), "a\nb\ntrap\nc\npanic\nbad\na\n")?;
    let node = "crate = \"{functions}/faulty\"\nstate = { counts = \"rw\" }\non_error = \"skip\"\n\
                config = { count_in = \"counts\" }";
    let toml = flowhost_tests::chain(
        "kind = \"file\"\npath = \"in.txt\"",
        "faulty",
        node,
        "round-robin",
    ) + "[stores.counts]\n";
    let out = run_captured(graph_in(dir.path(), &toml)?, dir.path())?;
    assert_eq!(out.report.failure, None);
    assert_eq!(out.lines("out"), ["a", "b", "c", "a"]);
    let counts = out.report.stores.get("counts").unwrap();
    // The batch trapped at `trap` (an abort: it names no culprit) and was re-run message
    // by message up to it, then the rest as a batch, which panicked naming `panic` as its
    // culprit: `c` before it ran again as a batch, `bad` and `a` after it. `a` and `b`
    // were counted before the first trap and again in the re-run, `c` twice, yet each
    // message counts once.
    assert_eq!(counter(counts, "a"), Some(2));
    assert_eq!(counter(counts, "b"), Some(1));
    assert_eq!(counter(counts, "c"), Some(1));
    // Calls that trapped left nothing; an error returned for one message of a call that
    // succeeded keeps that message's writes (the call is what is all-or-nothing).
    assert_eq!(counter(counts, "trap"), None);
    assert_eq!(counter(counts, "panic"), None);
    assert_eq!(counter(counts, "bad"), Some(1));
    assert_eq!(
        out.node("faulty").traps,
        3,
        "the batch, `trap` alone, the rest of the batch (`panic` named itself: not run alone)"
    );
    Ok(())
}

#[test]
fn the_clicks_graph_counts_unique_events_per_customer_per_hour_day_and_month() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let graph = flowhost::manifest::Graph::load(flowhost_tests::repo().join("graphs/clicks.toml"))?;
    let out = run_captured(graph, dir.path())?;
    assert_eq!(out.report.failure, None);
    assert_eq!(
        (out.node("dedup").received, out.node("dedup").emitted),
        (20, 15),
        "5 re-sent events dropped"
    );
    let mut rows: Vec<(String, String, String, i64)> = out
        .json("out")
        .iter()
        .map(|r| {
            let text = |f: &str| r[f].as_str().unwrap_or_default().to_owned();
            (
                text("customer"),
                text("bucket"),
                text("start"),
                r["count"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    rows.sort();
    let expected = [
        ("ann", "day", "2026-10-31", 3),
        ("ann", "day", "2026-11-01", 3),
        ("ann", "day", "2026-11-03", 1),
        ("ann", "hour", "2026-10-31T22", 2),
        ("ann", "hour", "2026-10-31T23", 1),
        ("ann", "hour", "2026-11-01T00", 1),
        ("ann", "hour", "2026-11-01T22", 2),
        ("ann", "hour", "2026-11-03T22", 1),
        ("ann", "month", "2026-10", 3),
        ("ann", "month", "2026-11", 4),
        ("bob", "day", "2026-10-31", 2),
        ("bob", "day", "2026-11-01", 2),
        ("bob", "day", "2026-11-03", 1),
        ("bob", "hour", "2026-10-31T22", 1),
        ("bob", "hour", "2026-10-31T23", 1),
        ("bob", "hour", "2026-11-01T00", 1),
        ("bob", "hour", "2026-11-01T22", 1),
        ("bob", "hour", "2026-11-03T22", 1),
        ("bob", "month", "2026-10", 2),
        ("bob", "month", "2026-11", 3),
        ("cy", "day", "2026-10-31", 1),
        ("cy", "day", "2026-11-01", 1),
        ("cy", "day", "2026-11-03", 1),
        ("cy", "hour", "2026-10-31T23", 1),
        ("cy", "hour", "2026-11-01T00", 1),
        ("cy", "hour", "2026-11-03T22", 1),
        ("cy", "month", "2026-10", 1),
        ("cy", "month", "2026-11", 2),
    ];
    let expected: Vec<(String, String, String, i64)> = expected
        .iter()
        .map(|&(c, b, s, n)| (c.into(), b.into(), s.into(), n))
        .collect();
    assert_eq!(rows, expected);
    Ok(())
}
