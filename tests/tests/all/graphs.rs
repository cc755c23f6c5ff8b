//! The bundled graphs end to end, on both transports where the check is the graph's and
//! not the transport's: real node crates built for wasm32-wasip1, real files, exact
//! output. Over Kafka each run has a broker of its own (tansu, `scripts/kafka install`);
//! records of different partitions have no order between them, so those checks compare
//! by id, not by position.

use std::collections::BTreeMap;

use anyhow::Result;
use flowhost::manifest::Graph;
use flowhost_tests::{BOTH, On, chain, graph_in, repo, run_captured_on};

#[test]
fn wordcount_prints_the_top_ten_words_of_the_bundled_text() -> Result<()> {
    for on in BOTH {
        wordcount_on(on)?;
    }
    Ok(())
}

fn wordcount_on(on: On) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let graph = Graph::load(repo().join("graphs/wordcount.toml"))?;
    let out = run_captured_on(graph, dir.path(), on)?;
    let mut top = [
        "the\t22", "of\t19", "was\t13", "it\t12", "a\t9", "were\t7", "and\t6", "in\t5", "for\t4", "had\t4",
    ];
    let mut got = out.lines("out").to_vec();
    if on == On::Kafka {
        // count's records are keyed by word, so they reach the sink over 4 partitions:
        // Kafka keeps order per key only, and the ranking's order is not kept.
        top.sort();
        got.sort();
    }
    assert_eq!(got, top, "on {on:?}");
    assert_eq!(
        out.node("split").received,
        22,
        "every line of the text reaches split"
    );
    // `split` is a combiner: per batch, one partial count per distinct word. The 22 lines
    // are one batch in-process (126 distinct words of 252); over Kafka polls may cut
    // them into several.
    let partials = out.node("count").received;
    match on {
        On::Memory => assert_eq!(partials, 126, "one partial per distinct word"),
        On::Kafka => assert!((126..252).contains(&partials), "{partials} partials"),
    }
    assert_eq!(out.report.failure, None);
    Ok(())
}

#[test]
fn orders_fan_out_fan_in_ports_and_dead_letters() -> Result<()> {
    for on in BOTH {
        orders_on(on)?;
    }
    Ok(())
}

fn orders_on(on: On) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let graph = Graph::load(repo().join("graphs/orders.toml"))?;
    let out = run_captured_on(graph, dir.path(), on)?;
    let ids = |sink: &str| -> Vec<u64> {
        let mut ids: Vec<u64> = out
            .lines(sink)
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                v.get("payload").unwrap_or(&v)["id"].as_u64().expect("an id")
            })
            .collect();
        ids.sort();
        ids
    };
    // review = foreign orders (2, 3, 6, 7, 8) + big orders (1, 3, 6, 7): fan-in of two edges.
    assert_eq!(ids("review"), [1, 2, 3, 3, 6, 6, 7, 7, 8]);
    assert_eq!(ids("domestic"), [1, 4]);
    let domestic = out.json("domestic");
    let first = domestic
        .iter()
        .find(|d| d["payload"]["id"] == 1)
        .expect("order 1 is domestic");
    assert_eq!(
        first["headers"]["flowhost-path"], "price,classify",
        "provenance = true records the path"
    );
    assert_eq!(first["key"], "ann", "the key from key_field survives two nodes");
    assert_eq!(first["payload"]["total_cents"], 14280);

    let rejected = out.json("rejected");
    assert_eq!(rejected.len(), 1);
    let dead = &rejected[0];
    assert_eq!(
        dead["payload"],
        serde_json::json!({ "id": 5, "customer": "dee", "country": "DE" }),
        "the original message"
    );
    assert_eq!(dead["headers"]["flowhost-error-node"], "price");
    assert_eq!(dead["headers"]["flowhost-error-kind"], "invalid-input");
    assert!(
        dead["headers"]["flowhost-error"]
            .as_str()
            .unwrap()
            .contains("missing field `amount_cents`")
    );
    assert_eq!(out.node("price").dead_lettered, 1);
    assert_eq!(out.report.failure, None);
    Ok(())
}

#[test]
fn key_hash_replicas_each_own_their_keys() -> Result<()> {
    for on in BOTH {
        key_hash_on(on)?;
    }
    Ok(())
}

fn key_hash_on(on: On) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let words: String = (0..6_000).map(|i| format!("w{}\n", i % 37)).collect();
    std::fs::write(dir.path().join("words.txt"), words)?;
    let graph = graph_in(
        dir.path(),
        r#"
name = "keyed"
[sources.words]
kind = "file"
path = "words.txt"
[nodes.key]
crate = "{functions}/split"
replicas = 2
[nodes.count]
crate = "{functions}/count"
replicas = 3
[sinks.out]
kind = "stdout"
[[edges]]
from = "words"
to = "key"
[[edges]]
from = "key"
to = "count"
connection = "key-hash"
[[edges]]
from = "count"
to = "out"
"#,
    )?;
    let out = run_captured_on(graph, dir.path(), on)?;
    // Were a word split across replicas, it would show up twice with partial counts.
    let counts: BTreeMap<String, String> = out
        .lines("out")
        .iter()
        .map(|l| {
            l.split_once('\t')
                .map(|(w, n)| (w.to_owned(), n.to_owned()))
                .expect("word<TAB>count")
        })
        .collect();
    assert_eq!(
        out.lines("out").len(),
        37,
        "each word counted by exactly one replica"
    );
    for i in 0..37 {
        let expected = if i < 6_000 % 37 {
            6_000 / 37 + 1
        } else {
            6_000 / 37
        };
        assert_eq!(counts[&format!("w{i}")], expected.to_string(), "count of w{i}");
    }
    Ok(())
}

#[test]
fn broadcast_gives_every_replica_every_message_and_is_refused_over_kafka() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("in.txt"), "a\nb\nc\n")?;
    let node = "crate = \"{functions}/passthrough\"\nreplicas = 3";
    let graph = graph_in(
        dir.path(),
        &chain("kind = \"file\"\npath = \"in.txt\"", "copy", node, "broadcast"),
    )?;
    let out = run_captured_on(graph.clone(), dir.path(), On::Memory)?;
    assert_eq!(out.sorted("out"), ["a", "a", "a", "b", "b", "b", "c", "c", "c"]);
    // Over Kafka each process would see only its share of the partitions: refused.
    let refused = run_captured_on(graph, dir.path(), On::Kafka)
        .err()
        .expect("refused");
    assert!(
        format!("{refused:#}").contains("`connection = \"broadcast\"` works in-process only"),
        "{refused:#}"
    );
    Ok(())
}

#[test]
fn a_large_generated_stream_arrives_complete_and_in_order() -> Result<()> {
    for on in BOTH {
        let dir = tempfile::tempdir()?;
        let source = "kind = \"generator\"\ncount = 100000\npayload_size = 8";
        let node = "crate = \"{functions}/passthrough\"";
        let graph = graph_in(dir.path(), &chain(source, "pass", node, "round-robin"))?;
        let out = run_captured_on(graph, dir.path(), on)?;
        let expected: Vec<String> = (0..100_000).map(|i| format!("{i:08}")).collect();
        match on {
            On::Memory => assert_eq!(
                out.lines("out"),
                expected,
                "one replica, one path: every message, in order"
            ),
            // Unkeyed records spread over the topics' 4 partitions: order holds per
            // partition only, so the check is every message exactly once.
            On::Kafka => assert_eq!(out.sorted("out"), expected, "every message exactly once"),
        }
    }
    Ok(())
}

#[test]
fn records_written_to_a_port_no_edge_leaves_are_counted_as_dropped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("in.txt"), "a\nb\nc\n")?;
    // The edge leaves `copy.errors`; the node writes to `out`, which nothing reads.
    let toml = chain(
        "kind = \"file\"\npath = \"in.txt\"",
        "copy",
        "crate = \"{functions}/passthrough\"",
        "round-robin",
    )
    .replace("from = \"copy\"", "from = \"copy.errors\"");
    let graph = graph_in(dir.path(), &toml)?;
    assert_eq!(graph.warnings.len(), 1, "{:?}", graph.warning_lines());
    assert!(graph.warning_lines()[0].contains("no edge leaves its default port `out`, only `copy.errors`"));
    let out = run_captured_on(graph, dir.path(), On::Memory)?;
    let copy = out.node("copy");
    assert_eq!((copy.emitted, copy.dropped), (3, 3), "{copy:?}");
    assert_eq!(copy.dropped_by_port, [("out".to_owned(), 3)].into(), "per port");
    let summary = out.report.to_string();
    assert!(summary.contains("dropped 3 (port `out` 3)"), "{summary}");
    assert!(out.lines("out").is_empty());
    Ok(())
}
