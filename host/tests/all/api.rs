//! A graph served as an HTTP API, through the real binary: the example price quote
//! service (`graphs/api.toml`) answering concurrent clients, and the bounds every
//! request has (timeout 504, body 413, busy 503, Ctrl-C answers what is open).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::Running;
use flowhost::topology::status::{HttpReport, StatusReport};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `graphs/api.toml` in `dir` as `graph.toml`, listening on a free port, its crate and
/// price list where the repository has them; `edit` changes the text.
pub fn api_graph(dir: &Path, edit: impl Fn(String) -> String) {
    let graphs = repo().join("graphs");
    let text = std::fs::read_to_string(graphs.join("api.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("../functions/", &format!("{}/functions/", repo().display()))
        .replace(
            "data/prices.jsonl",
            &graphs.join("data/prices.jsonl").display().to_string(),
        );
    std::fs::write(dir.join("graph.toml"), edit(text)).unwrap();
}

/// The price list, as the test computes quotes from it natively.
pub fn price_list() -> Vec<(String, String, u64)> {
    let text = std::fs::read_to_string(repo().join("graphs/data/prices.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |f: &str| v[f].as_str().unwrap().to_owned();
            (s("sku"), s("name"), v["unit_cents"].as_u64().unwrap())
        })
        .collect()
}

/// The quote the service must give, computed here.
pub fn expected_quote((sku, name, unit): &(String, String, u64), qty: u64) -> serde_json::Value {
    let discount = match qty {
        100.. => 10,
        10.. => 5,
        _ => 0,
    };
    serde_json::json!({
        "sku": sku, "name": name, "qty": qty, "unit_cents": unit,
        "discount_pct": discount, "total_cents": unit * qty * (100 - discount) / 100,
    })
}

/// The HTTP source's counters.
pub fn http_of(s: &StatusReport, id: &str) -> HttpReport {
    let source = s
        .sources
        .iter()
        .find(|x| x.id == id)
        .expect("the source is in status");
    source.http.clone().expect("an http source reports its requests")
}

/// POSTs `body` to `url`: status and body (any status; no retries).
pub fn post(agent: &ureq::Agent, url: &str, body: &str) -> (u16, String) {
    let mut r = agent
        .post(url)
        .config()
        .http_status_as_error(false)
        .build()
        .send(body)
        .unwrap_or_else(|e| panic!("POST {url} {body}: {e}"));
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

/// A keep-alive client with a generous bound, so nothing a test does can hang it.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Waits until the price list is in the store; the service's URL.
pub fn ready(run: &Running) -> String {
    let s = run.wait_for("the price list loaded", |s| {
        s.nodes.iter().any(|n| n.id == "load" && n.counts.received == 100)
    });
    format!("http://{}/quote", http_of(&s, "api").listen)
}

/// Request `i` of the load test: a valid quote, or (every tenth) an invalid one.
pub fn request(i: usize, items: &[(String, String, u64)]) -> (String, u16, serde_json::Value) {
    let item = &items[i % items.len()];
    let qty = (i / items.len()) as u64 % 150 + 1;
    match i % 10 {
        3 => (
            format!(r#"{{"sku":"{}","qty":0}}"#, item.0),
            400,
            serde_json::json!({"error": "`qty` must be a whole number from 1 to 10000, not 0", "kind": "invalid-input", "node": "validate"}),
        ),
        7 => (
            format!(r#"{{"sku":"NO-{i}","qty":{qty}}}"#),
            400,
            serde_json::json!({"error": format!("unknown sku `NO-{i}`"), "kind": "invalid-input", "node": "enrich"}),
        ),
        _ => (
            format!(r#"{{"sku":"{}","qty":{qty}}}"#, item.0),
            200,
            expected_quote(item, qty),
        ),
    }
}

/// Sends requests `0..n` from `clients` threads, each on its own keep-alive connection;
/// panics on the first answer that is not its request's own.
pub fn load_test(url: &str, n: usize, clients: usize) {
    let items = Arc::new(price_list());
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (url, items, next) = (url.to_owned(), items.clone(), next.clone());
            std::thread::spawn(move || {
                let agent = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let (body, status, want) = request(i, &items);
                    let (got_status, got) = post(&agent, &url, &body);
                    let got: serde_json::Value = serde_json::from_str(&got)
                        .unwrap_or_else(|e| panic!("request {i} {body}: not JSON ({e}): {got}"));
                    assert_eq!((got_status, &got), (status, &want), "request {i}: {body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("every answer was its request's own");
    }
}

#[test]
fn ten_thousand_concurrent_requests_are_each_answered_once_with_their_own_quote() {
    let dir = tempfile::tempdir().unwrap();
    api_graph(dir.path(), |t| t);
    let run = Running::start(dir.path(), &[]);
    let url = ready(&run);
    load_test(&url, 10_000, 16);
    let s = run.status();
    let h = http_of(&s, "api");
    assert_eq!(
        (
            h.requests,
            h.answered,
            h.errors,
            h.timed_out,
            h.unmatched,
            h.in_flight
        ),
        (10_000, 10_000, 2_000, 0, 0, 0),
        "{h:?}"
    );
    assert_eq!(h.latency_us.batches, 10_000);
    let reply = s.sinks.iter().find(|k| k.id == "reply").unwrap();
    assert_eq!(reply.written, 8_000, "one reply per valid request");
    // Other requests never enter the graph: a body over the limit, a path not served.
    let agent = agent();
    let (status, body) = post(&agent, &url, &"x".repeat(16_385));
    assert_eq!(
        (status, body.as_str()),
        (
            413,
            r#"{"error":"the body is larger than max_body_bytes = 16384"}"#
        )
    );
    let (status, _) = post(&agent, &url.replace("/quote", "/other"), "{}");
    assert_eq!(status, 404);
    let h = http_of(&run.status(), "api");
    assert_eq!((h.requests, h.too_large), (10_000, 1));
    // What status and metrics show of it.
    let table = crate::common::bin()
        .args(["status", "--admin", &run.addr])
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains(&format!(
            "http {}: 0 open, 10000 answered (2000 errors), 0 timed out, 0 rejected, 1 too large, 0 unmatched;",
            h.listen
        )),
        "{table}"
    );
    let metrics = self::agent()
        .get(format!("http://{}/metrics", run.addr))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("flowhost_http_answered_total{graph=\"api\",source=\"api\"} 10000\n"),
        "{metrics}"
    );
}

/// A graph of one `faulty` node behind an HTTP source: `nap` never returns (the node's
/// `timeout_ms` traps it), anything else is echoed back.
fn faulty_api(dir: &Path, source: &str, node_timeout_ms: u64) {
    let manifest = format!(
        r#"name = "faulty-api"
[sources.api]
kind = "http"
listen = "127.0.0.1:0"
{source}

[nodes.faulty]
crate = "{}/functions/faulty"
on_error = "skip"
timeout_ms = {node_timeout_ms}

[sinks.reply]
kind = "reply"

[[edges]]
from = "api"
to = "faulty"

[[edges]]
from = "faulty"
to = "reply"
"#,
        repo().display()
    );
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
}

fn url_of(run: &Running) -> String {
    let s = run.wait_for("the HTTP source listening", |s| {
        s.sources.iter().any(|x| x.http.is_some())
    });
    format!("http://{}/", http_of(&s, "api").listen)
}

#[test]
fn a_request_without_a_reply_in_time_is_answered_504_and_its_late_answer_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    faulty_api(dir.path(), "timeout_ms = 300", 1500);
    let run = Running::start(dir.path(), &[]);
    let url = url_of(&run);
    let agent = agent();
    assert_eq!(post(&agent, &url, "hello"), (200, "hello".to_owned()));
    let (status, body) = post(&agent, &url, "nap:1");
    assert_eq!(
        (status, body.as_str()),
        (504, r#"{"error":"no reply within timeout_ms = 300"}"#)
    );
    // The trap answers the request once the node's own deadline passes: too late, counted.
    let s = run.wait_for("the late answer", |s| http_of(s, "api").unmatched == 1);
    let h = http_of(&s, "api");
    assert_eq!((h.requests, h.answered, h.timed_out, h.in_flight), (2, 1, 1, 0));
    // The node's failure answers a request in time when the request waits long enough.
    assert_eq!(post(&agent, &url, "hello again"), (200, "hello again".to_owned()));
}

#[test]
fn a_failed_message_answers_its_request_with_the_error_and_a_full_source_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    faulty_api(dir.path(), "timeout_ms = 10000\nmax_in_flight = 2", 600);
    let run = Running::start(dir.path(), &[]);
    let url = url_of(&run);
    let agent = agent();
    let (status, body) = post(&agent, &url, "bad:1");
    assert_eq!(status, 400, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "asked for bad input", "kind": "invalid-input", "node": "faulty"})
    );
    let (status, body) = post(&agent, &url, "panic:2");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("asked to panic"), "{body}");
    // Two requests open (napping) fill the source; a third is turned away at once.
    let naps: Vec<_> = (0..2)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || post(&self::agent(), &url, &format!("nap:{i}")))
        })
        .collect();
    run.wait_for("two requests open", |s| http_of(s, "api").in_flight == 2);
    let (status, body) = post(&agent, &url, "hello");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_in_flight"), "{body}");
    for nap in naps {
        let (status, body) = nap.join().unwrap();
        assert_eq!(status, 500, "the node's deadline traps the call: {body}");
        assert!(body.contains("timed out"), "{body}");
    }
    assert_eq!(http_of(&run.status(), "api").rejected, 1);
}

#[test]
fn ctrl_c_answers_every_open_request_and_takes_no_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    faulty_api(dir.path(), "timeout_ms = 60000", 3000);
    let mut run = Running::start(dir.path(), &[]);
    let url = url_of(&run);
    assert_eq!(post(&agent(), &url, "before"), (200, "before".to_owned()));
    // Eight requests that never finish on their own are open when Ctrl-C comes.
    let open: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || post(&agent(), &url, &format!("nap:{i}")))
        })
        .collect();
    run.wait_for("eight requests open", |s| http_of(s, "api").in_flight == 8);
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    for t in open {
        let (status, body) = t.join().unwrap();
        // The call in flight is cut after the grace period (500); the rest were never
        // run (503). Not 504: answered at shutdown, not by the 60 s timeout.
        assert!(
            status == 503 || status == 500,
            "every open request is answered: {status} {body}"
        );
    }
    let exit = run.child.wait().unwrap();
    assert!(exit.code().is_some(), "the process ended by itself: {exit:?}");
    // Nothing listens any more: a new request is refused, not left waiting.
    let refused = agent().post(&url).send("after");
    assert!(refused.is_err(), "{refused:?}");
}

/// `graphs/api.toml` over `broker`, the HTTP source in one process and everything else in
/// another: every answer is made in the process that did not take the request, and
/// travels back on the first one's reply topic.
#[test]
fn over_kafka_the_request_enters_one_process_and_is_answered_from_another() {
    let broker = crate::common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let kafka = format!(
        "transport = \"kafka\"\n[kafka]\nbrokers = \"{}\"\npartitions = 2\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n",
        broker.addr
    );
    api_graph(dir.path(), |t| {
        t.replace("name = \"api\"\n", &format!("name = \"api\"\n{kafka}"))
            .replace("timeout_ms = 2000", "timeout_ms = 30000")
    });
    let front = Running::start(dir.path(), &["--nodes", "api"]);
    let back = Running::start(
        dir.path(),
        &["--nodes", "prices,load,validate,enrich,price,reply"],
    );
    back.wait_for("the price list loaded", |s| {
        s.nodes.iter().any(|n| n.id == "load" && n.counts.received == 100)
    });
    let s = front.wait_for("the HTTP source listening", |s| {
        s.sources.iter().any(|x| x.http.is_some())
    });
    let url = format!("http://{}/quote", http_of(&s, "api").listen);
    load_test(&url, 2_000, 16);
    let h = http_of(&front.status(), "api");
    assert_eq!(
        (h.requests, h.answered, h.errors, h.timed_out, h.unmatched),
        (2_000, 2_000, 400, 0, 0),
        "{h:?}"
    );
    let written = |run: &Running| {
        run.status()
            .sinks
            .iter()
            .find(|k| k.id == "reply")
            .unwrap()
            .written
    };
    assert_eq!(
        (written(&front), written(&back)),
        (0, 1_600),
        "every reply made in the back process"
    );

    // The front process dies with requests open: its callers see the connection fail at
    // once. Its replacement has a new nonce: the answers the back process then makes for
    // those requests reach it, and are dropped as unmatched, never crossed with its own.
    let signal = |sig: &str, run: &Running| {
        let ok = std::process::Command::new("kill")
            .args([sig, &run.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-STOP", &back);
    let open: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                agent()
                    .post(&url)
                    .send(format!(r#"{{"sku":"P-00{i}","qty":1}}"#))
                    .map(|_| ())
            })
        })
        .collect();
    front.wait_for("four requests open", |s| http_of(s, "api").in_flight == 4);
    drop(front);
    for t in open {
        assert!(
            t.join().unwrap().is_err(),
            "a dead process's request fails, it does not hang"
        );
    }
    let again = Running::start(dir.path(), &["--nodes", "api"]);
    signal("-CONT", &back);
    // (At least the four: after its pause the back process may process again what it
    // had not committed yet, at least once, and those answers are unmatched too.)
    let s = again.wait_for("the old answers", |s| {
        s.sources
            .iter()
            .any(|x| x.http.as_ref().is_some_and(|h| h.unmatched >= 4))
    });
    assert_eq!(
        http_of(&s, "api").answered,
        0,
        "no old answer completed a new request"
    );
    let url = format!("http://{}/quote", http_of(&s, "api").listen);
    let items = price_list();
    let (status, body) = post(&agent(), &url, r#"{"sku":"P-001","qty":20}"#);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, body), (200, expected_quote(&items[1], 20)));
}

/// `graphs/api-client.toml` asking the running `graphs/api.toml` for quotes: each
/// request's quote is the calling node's output, in order; a refused request is
/// dead-lettered with the service's reason.
#[test]
fn a_graph_calls_a_graph_and_its_answers_go_on_as_the_nodes_output() {
    let server_dir = tempfile::tempdir().unwrap();
    api_graph(server_dir.path(), |t| t);
    let server = Running::start(server_dir.path(), &[]);
    let url = ready(&server);
    let dir = tempfile::tempdir().unwrap();
    let graphs = repo().join("graphs");
    let client = std::fs::read_to_string(graphs.join("api-client.toml"))
        .unwrap()
        .replace("http://127.0.0.1:8080/quote", &url)
        .replace("../functions/", &format!("{}/functions/", repo().display()))
        .replace(
            "data/quote-requests.jsonl",
            &graphs.join("data/quote-requests.jsonl").display().to_string(),
        );
    std::fs::write(dir.path().join("graph.toml"), client).unwrap();
    let out = crate::common::bin()
        .args(["run", "graph.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::common::text(&out));

    let items = price_list();
    let requests = std::fs::read_to_string(graphs.join("data/quote-requests.jsonl")).unwrap();
    let (mut quotes, mut refused) = (Vec::new(), Vec::new());
    for line in requests.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let (sku, qty) = (r["sku"].as_str().unwrap(), r["qty"].as_u64().unwrap());
        match items.iter().find(|i| i.0 == sku) {
            Some(item) => quotes.push(expected_quote(item, qty)),
            None => refused.push((r.clone(), format!("unknown sku `{sku}`"))),
        }
    }
    let read = |name: &str| std::fs::read_to_string(dir.path().join("out").join(name)).unwrap();
    let got: Vec<serde_json::Value> = read("quotes.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, quotes, "one quote per request, in order");
    let dead: Vec<(serde_json::Value, String)> = read("refused.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let payload = v["payload"].clone();
            (
                payload,
                v["headers"]["flowhost-error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(dead, refused);
    assert!(!refused.is_empty() && quotes.len() > refused.len());
}

#[test]
fn a_node_may_call_only_the_endpoints_it_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "{\"sku\":\"P-001\",\"qty\":1}\n").unwrap();
    let manifest = |calls: &str| {
        format!(
            r#"name = "ungranted"
[sources.in]
kind = "file"
path = "in.txt"
[nodes.ask]
crate = "{}/functions/quoting"
config = {{ step = "ask" }}
{calls}
[sinks.out]
kind = "stdout"
[[edges]]
from = "in"
to = "ask"
[[edges]]
from = "ask"
to = "out"
"#,
            repo().display()
        )
    };
    std::fs::write(dir.path().join("graph.toml"), manifest("")).unwrap();
    let run = |dir: &Path| {
        crate::common::bin()
            .args(["run", "graph.toml"])
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let out = run(dir.path());
    assert!(!out.status.success());
    let said = crate::common::text(&out);
    assert!(
        said.contains("endpoint `quotes` is not granted to node `ask` (add it to `calls`)"),
        "{said}"
    );
    // Not a URL flowhost can call: refused before anything runs, with where.
    std::fs::write(
        dir.path().join("graph.toml"),
        manifest(r#"calls = { quotes = "https://example.com/quote" }"#),
    )
    .unwrap();
    let out = run(dir.path());
    let said = crate::common::text(&out);
    assert!(
        said.contains("graph.toml:8:20:")
            && said.contains("calls `quotes`: `https://example.com/quote` is not an http:// URL"),
        "{said}"
    );
}
