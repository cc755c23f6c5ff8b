//! The admin endpoint of a running graph, through the binary: `/status` and `/metrics`
//! count exactly what went through, a replica stuck in a long call turns stale, and
//! `flowhost status` / `flowhost tail` read them.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Running, bin};
use flowhost::topology::status::Phase;

/// `flowhost run` of stdin → faulty (skip on error, 2 s timeout) → stdout, with the admin
/// endpoint on a free port and a 50 ms heartbeat.
pub(crate) fn start(dir: &Path) -> Running {
    let faulty = Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/faulty");
    let manifest = format!(
        "name = \"watched\"\n[sources.in]\nkind = \"stdin\"\n[nodes.faulty]\ncrate = \"{}\"\n\
         timeout_ms = 2000\non_error = \"skip\"\n[sinks.out]\nkind = \"stdout\"\n\
         [[edges]]\nfrom = \"in\"\nto = \"faulty\"\n[[edges]]\nfrom = \"faulty\"\nto = \"out\"\n",
        faulty.display()
    );
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
    Running::start(dir, &["--heartbeat-ms", "50"])
}

#[test]
fn status_and_metrics_count_what_went_through_and_a_stuck_replica_turns_stale() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(dir.path());
    let addr = run.addr.clone();
    let mut stdin = run.stdin.take().unwrap();
    let tail = bin()
        .args(["tail", "out", "--admin", &addr])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let lines: String = (0..100).map(|i| format!("m{i}\n")).collect();
    stdin.write_all(lines.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let s = run.wait_for("100 messages written", |s| s.sinks[0].written == 100);
    assert_eq!(s.state, Phase::Running);
    assert_eq!(s.sources[0].read, 100);
    let node = &s.nodes[0];
    assert_eq!(
        (node.counts.received, node.counts.emitted, node.counts.errors),
        (100, 100, 0)
    );
    assert_eq!(node.module_hash.len(), 64);
    assert_eq!(node.replicas[0].state, Phase::Running);
    assert!(node.latency_us.batches >= 1);

    let metrics = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    for line in [
        "flowhost_node_received_total{graph=\"watched\",node=\"faulty\"} 100",
        "flowhost_node_emitted_total{graph=\"watched\",node=\"faulty\"} 100",
        "flowhost_source_read_total{graph=\"watched\",source=\"in\"} 100",
        "flowhost_sink_written_total{graph=\"watched\",sink=\"out\"} 100",
        "flowhost_replica_up{graph=\"watched\",node=\"faulty\",replica=\"0\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in:\n{metrics}");
    }

    // A runaway call: the replica cannot beat until its timeout stops it.
    stdin.write_all(b"loop\n").unwrap();
    stdin.flush().unwrap();
    let stuck = run.wait_for("the replica stale", |s| s.nodes[0].replicas[0].stale);
    assert!(stuck.nodes[0].replicas[0].heartbeat_ms_ago > 150);
    let table = String::from_utf8(bin().args(["status", "--admin", &addr]).output().unwrap().stdout).unwrap();
    assert!(table.contains("#0 running v1 q0 STALE"), "{table}");
    // The timeout traps the call, the message is skipped, the replica beats again.
    let back = run.wait_for("the replica back", |s| {
        s.nodes[0].counts.skipped == 1 && !s.nodes[0].replicas[0].stale
    });
    assert_eq!(back.nodes[0].counts.traps, 1);

    std::thread::sleep(Duration::from_millis(500)); // let `tail` poll once more
    drop(stdin);
    assert!(run.finish().success());
    let tail = tail.wait_with_output().unwrap();
    let tailed = String::from_utf8(tail.stdout).unwrap();
    assert_eq!(tailed, lines, "tail printed what the sink wrote");
}

#[test]
fn the_admin_endpoint_listens_on_loopback_only_and_status_without_one_says_so() {
    let out = bin()
        .args(["run", "graphs/wordcount.toml", "--admin", "0.0.0.0:9464"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listens on loopback only; 0.0.0.0:9464 is not"));

    let out = bin().args(["status", "--admin", "127.0.0.1:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no flowhost admin endpoint at 127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn module_uploads_are_taken_one_at_a_time() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let run = start(dir.path());
    // An upload that announces 100 MB and sends only its first bytes: it holds the slot.
    let mut slow = std::net::TcpStream::connect(&run.addr).unwrap();
    let head = "POST /nodes/faulty/swap HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n";
    slow.write_all(head.as_bytes()).unwrap();
    slow.write_all(b"\0asm").unwrap();
    slow.flush().unwrap();
    // A second upload meanwhile is turned away, not buffered.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let mut second = std::net::TcpStream::connect(&run.addr).unwrap();
        let req = "POST /nodes/faulty/swap HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd";
        second.write_all(req.as_bytes()).unwrap();
        let mut answer = String::new();
        second.read_to_string(&mut answer).unwrap();
        if answer.starts_with("HTTP/1.1 503") || std::time::Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("another module upload is in progress"),
        "{answer}"
    );
    drop(slow);
    // The slot frees when the first upload ends: the next one is judged on its merits.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut third = std::net::TcpStream::connect(&run.addr).unwrap();
        let req = "POST /nodes/faulty/swap HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd";
        third.write_all(req.as_bytes()).unwrap();
        let mut answer = String::new();
        third.read_to_string(&mut answer).unwrap();
        if !answer.starts_with("HTTP/1.1 503") {
            assert!(answer.contains("not a WebAssembly module"), "{answer}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upload slot never freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
