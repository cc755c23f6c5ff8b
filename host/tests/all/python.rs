//! Python nodes through the binary: a node written with the Python SDK
//! (`guest-sdk/python`), named by `python = "app.py"` in the manifest, built from source
//! with componentize-py by `flowhost run` (on PATH: `scripts/python-tools install`),
//! run with exact output; its exceptions dead-lettered with their text; the sandbox
//! holding for it (no files, no environment, no sockets, no store it is not granted).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Upper-cases text; `count:<k>` counts k in its store; `boom` raises; `file`, `env` and
/// `socket` try what the sandbox denies (the socket to a port the test listens on).
const PROBE: &str = r#"
import os
import socket

from flowhost_node import Store, WitWorld, node


@node
class Probe:
    def __init__(self, config):
        self.counts = Store(config.get("store", "counts"))
        self.port = config.get("port", 9)

    def process(self, msg, out):
        text = msg.text()
        if text == "boom":
            raise RuntimeError("asked to fail")
        if text == "file":
            with open("/etc/hostname") as f:
                out.emit("read " + f.read())
        elif text == "env":
            out.emit(f"env HOME={os.environ.get('HOME')}")
        elif text == "socket":
            socket.create_connection(("127.0.0.1", self.port), timeout=1)
            out.emit("connected")
        elif text.startswith("count:"):
            out.emit(f"{text[6:]}={self.counts.incr(text[6:])}")
        else:
            out.emit(text.upper())
"#;

/// stdin → probe (Python, granted `counts`, config `config`) → stdout; its dead letters
/// to dead.jsonl.
fn probe_graph(dir: &Path, config: &str) {
    std::fs::write(dir.join("probe.py"), PROBE).unwrap();
    std::fs::write(
        dir.join("graph.toml"),
        format!(
            r#"name = "py"
[sources.in]
kind = "stdin"
[nodes.probe]
python = "probe.py"
config = {config}
on_error = "dead-letter"
dead_letter = "dead"
state = {{ counts = "rw" }}
[stores.counts]
[sinks.out]
kind = "stdout"
[sinks.dead]
kind = "file"
path = "dead.jsonl"
format = "json"
[[edges]]
from = "in"
to = "probe"
[[edges]]
from = "probe"
to = "out"
"#
        ),
    )
    .unwrap();
}

/// `flowhost -q run graph.toml` in `dir` with `input` on stdin; the SDK written to a
/// folder of the test's.
fn run(dir: &Path, input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowhost"))
        .args(["-q", "run", "graph.toml"])
        .current_dir(dir)
        .env("FLOWHOST_SDK_DIR", dir.join("sdk"))
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_python_node_builds_from_source_runs_and_the_sandbox_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Something to connect to, were sockets allowed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    probe_graph(d, &format!("{{ port = {port} }}"));

    let out = run(d, "hello\ncount:a\nboom\nfile\nenv\nsocket\ncount:a\nwasm\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Its host store counted; the environment it sees is empty (HOME is set here).
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HELLO\na=1\nenv HOME=None\na=2\nWASM\n",
        "{stderr}"
    );
    assert!(
        d.join(".flowhost/python/probe.wasm").is_file(),
        "built beside the app"
    );

    // Each exception dead-letters its message with the exception's text and line.
    let dead: Vec<(String, String)> = std::fs::read_to_string(d.join("dead.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let error = v["headers"]["flowhost-error"].as_str().unwrap().to_owned();
            (v["payload"].as_str().unwrap().to_owned(), error)
        })
        .collect();
    let payloads: Vec<&str> = dead.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(payloads, ["boom", "file", "socket"]);
    assert!(
        dead[0].1.starts_with("RuntimeError: asked to fail at probe.py:"),
        "{dead:?}"
    );
    assert!(
        dead[1].1.starts_with("FileNotFoundError: "),
        "no file outside the sandbox: {dead:?}"
    );
    assert!(dead[2].1.contains("Error"), "no socket: {dead:?}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing connected to the test's port");

    // A second run reuses the component built (nothing changed); a store it is not
    // granted is refused when it starts, naming the node and the store.
    let built = std::fs::metadata(d.join(".flowhost/python/probe.wasm"))
        .unwrap()
        .modified()
        .unwrap();
    probe_graph(d, r#"{ store = "secrets" }"#);
    let refused = run(d, "hello\n");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("node `probe`") && stderr.contains("secrets"),
        "{stderr}"
    );
    let again = std::fs::metadata(d.join(".flowhost/python/probe.wasm"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(built, again, "not rebuilt");
}
