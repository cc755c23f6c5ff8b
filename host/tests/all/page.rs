//! The admin endpoint's page in a real browser: Debian's headless Chromium, driven over
//! WebDriver (chromedriver), loads `/` of a running graph and the test reads what the
//! page shows — the graph's boxes and arrows, and in each box the numbers — and checks
//! them against `/status` (over Kafka, against every process's status), then again after
//! more input, without reloading: the page refreshes itself.
//!
//! Needs `chromium` and `chromium-driver` (scripts/test installs them; `CHROMIUM` and
//! `CHROMEDRIVER` may name others).

use crate::common;
use crate::kafka::feed;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, Running};
use serde_json::{Value, json};

/// A headless Chromium under chromedriver, one WebDriver session; both stop when dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

fn tool(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: the page tests need Debian's chromium and chromium-driver \
         (scripts/test installs them; {var} may name another)"
    );
    path
}

impl Browser {
    fn start() -> Browser {
        let chromium = tool("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver never answered on {base}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        // The flags this machine needs: no sandbox as root, and no background
        // connections (its network is closed).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "goog:chromeOptions": { "binary": chromium, "args": args }
        }}});
        let session = browser.post("/session", caps);
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
            .to_owned();
        browser
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let answer = ureq::post(&url)
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_else(|e| panic!("WebDriver {url}: {e}"));
        let answer: Value = serde_json::from_str(&answer).unwrap();
        answer["value"].clone()
    }

    fn open(&self, url: &str) {
        self.post(&format!("/session/{}/url", self.session), json!({ "url": url }));
    }

    /// The value of `script` (a function body) run in the page.
    fn eval(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.post(&path, json!({ "script": script, "args": [] }))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What the page shows now: every box's fields (`<kind>:<id>` → field → text), its
/// arrows (from, to), how often it has refreshed, and the rows of its process table
/// (pid → field → text).
#[derive(Debug, Default, serde::Deserialize)]
struct Shown {
    boxes: BTreeMap<String, BTreeMap<String, String>>,
    arrows: Vec<(String, String)>,
    refreshes: u64,
    processes: BTreeMap<String, BTreeMap<String, String>>,
    error: String,
}

const READ_PAGE: &str = r##"
const boxes = {};
for (const g of document.querySelectorAll("g.box[data-vertex]")) {
  const fields = {};
  for (const f of g.querySelectorAll("[data-field]")) fields[f.dataset.field] = f.textContent;
  boxes[g.dataset.vertex] = fields;
}
const arrows = [...document.querySelectorAll("g.arrow")].map((a) => [a.dataset.from, a.dataset.to]);
const processes = {};
for (const tr of document.querySelectorAll("#processes tr[data-pid]")) {
  const fields = {};
  for (const td of tr.querySelectorAll("[data-field]")) fields[td.dataset.field] = td.textContent;
  processes[tr.dataset.pid] = fields;
}
return JSON.stringify({ boxes, arrows, processes,
  refreshes: Number(document.body.dataset.refreshes ?? 0),
  error: document.getElementById("error")?.textContent ?? "" });
"##;

impl Browser {
    fn shown(&self) -> Shown {
        let text = self.eval(READ_PAGE);
        serde_json::from_str(text.as_str().unwrap_or("{}")).unwrap()
    }

    /// Reads the page until `ok` holds for what it shows (at most a minute).
    fn until(&self, what: &str, ok: impl Fn(&Shown) -> bool) -> Shown {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let shown = self.shown();
            if ok(&shown) {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}: {shown:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn field<'a>(shown: &'a Shown, vertex: &str, field: &str) -> &'a str {
    shown
        .boxes
        .get(vertex)
        .and_then(|f| f.get(field))
        .map_or("(none)", String::as_str)
}

#[test]
fn the_page_draws_the_graph_and_shows_what_status_says_and_keeps_up_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = crate::admin::start(dir.path());
    let mut stdin = run.stdin.take().unwrap();
    let lines: String = (0..300)
        .map(|i| match i % 30 {
            0 => format!("bad:{i}\n"),
            _ => format!("m{i}\n"),
        })
        .collect();
    stdin.write_all(lines.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let status = run.wait_for("300 in, 290 out", |s| {
        s.nodes[0].counts.received == 300 && s.sinks[0].written == 290
    });

    let browser = Browser::start();
    browser.open(&format!("http://{}/", run.addr));
    let shown = browser.until("the numbers of /status", |p| {
        p.refreshes >= 2 && field(p, "node:faulty", "received") == "300"
    });
    // The picture: every vertex a box, every edge an arrow.
    let vertices: Vec<&str> = shown.boxes.keys().map(String::as_str).collect();
    assert_eq!(vertices, ["node:faulty", "sink:out", "source:in"]);
    let mut arrows = shown.arrows.clone();
    arrows.sort();
    let want = [("node:faulty", "sink:out"), ("source:in", "node:faulty")];
    assert_eq!(arrows, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    // The numbers, as /status has them.
    let node = &status.nodes[0];
    assert_eq!(node.counts.errors, 10, "{node:?}");
    for (vertex, name, want) in [
        ("source:in", "read", status.sources[0].read.to_string()),
        ("node:faulty", "received", "300".into()),
        ("node:faulty", "errors", node.counts.errors.to_string()),
        ("node:faulty", "queue", "0".into()),
        ("node:faulty", "version", node.version.to_string()),
        ("node:faulty", "lag", "–".into()),
        ("sink:out", "written", status.sinks[0].written.to_string()),
    ] {
        assert_eq!(field(&shown, vertex, name), want, "{vertex} {name}: {shown:#?}");
    }
    assert!(
        field(&shown, "node:faulty", "rate").parse::<i64>().is_ok(),
        "{shown:#?}"
    );
    assert_eq!(shown.error, "");

    // More input: the same page, not reloaded, follows.
    stdin.write_all(b"more\n".repeat(200).as_slice()).unwrap();
    stdin.flush().unwrap();
    // (Waited for at the sink too: the node counts a batch before the sink writes it.)
    let status = run.wait_for("500 in, 490 out", |s| {
        s.nodes[0].counts.received == 500 && s.sinks[0].written == 490
    });
    let shown = browser.until("the new counts", |p| {
        field(p, "node:faulty", "received") == "500" && field(p, "sink:out", "written") == "490"
    });
    assert_eq!(
        field(&shown, "sink:out", "written"),
        status.sinks[0].written.to_string()
    );
    assert_eq!(field(&shown, "source:in", "read"), "500");
}

#[test]
fn the_page_of_a_kafka_graph_shows_every_process_from_the_status_topic() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    crate::kafka::pass_graph(dir.path(), &broker, "");
    let helper = Running::start(dir.path(), &["--nodes", "pass"]);
    helper.wait_log("node `pass`: 4 partition(s) assigned");
    let mut a = Running::start(dir.path(), &[]);
    a.wait_log("sink `out`: 4 partition(s) assigned");
    let mut stdin = a.stdin.take().unwrap();
    feed(&mut stdin, 0, 2_000);
    a.wait_for("every message written", |s| s.sinks[0].written == 2_000);

    let browser = Browser::start();
    browser.open(&format!("http://{}/", a.addr));
    let (pa, ph) = (a.child.id().to_string(), helper.child.id().to_string());
    // Both processes' heartbeats: the node's count is the sum of theirs.
    let shown = browser.until("both processes, 2,000 through the node", |p| {
        p.processes.contains_key(&pa)
            && p.processes.contains_key(&ph)
            && field(p, "node:pass", "received") == "2000"
    });
    let (sa, sh) = (a.status(), helper.status());
    let received = |s: &flowhost::topology::status::StatusReport| s.nodes[0].counts.received;
    assert_eq!(received(&sa) + received(&sh), 2_000);
    assert!(received(&sh) > 0, "the helper took a share");
    assert_eq!(field(&shown, "sink:out", "written"), "2000");
    assert_eq!(field(&shown, "node:pass", "lag"), "0", "{shown:#?}");
    for (pid, status) in [(&pa, &sa), (&ph, &sh)] {
        let row = &shown.processes[pid];
        let held: Vec<String> = status
            .kafka
            .iter()
            .flat_map(|k| &k.inputs)
            .filter(|g| g.vertex == "node `pass`" && !g.partitions.is_empty())
            .map(|g| {
                let p: Vec<String> = g.partitions.iter().map(|p| p.partition.to_string()).collect();
                format!("node `pass` {}", p.join(","))
            })
            .collect();
        for h in &held {
            assert!(row["partitions"].contains(h.as_str()), "{pid}: {row:?} lacks {h}");
        }
        assert_eq!(row["lag"], "0");
    }
    assert_eq!(
        shown.processes[&ph]["runs"], "node:pass",
        "the helper runs only the node"
    );
    assert_eq!(shown.processes[&pa]["runs"], "source:in, node:pass, sink:out");
    drop(stdin);
    assert!(a.finish().success());
}
