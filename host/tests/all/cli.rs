//! The `flowhost` binary as a user runs it: output on stdout, summary and errors on
//! stderr, exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn flowhost(args: &[&str]) -> Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the repo");
    Command::new(env!("CARGO_BIN_EXE_flowhost"))
        .args(args)
        .current_dir(repo)
        .env("RUST_LOG", "warn")
        .output()
        .expect("flowhost runs")
}

#[test]
fn run_prints_results_on_stdout_and_a_summary_on_stderr() {
    let out = flowhost(&["run", "graphs/wordcount.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().take(3).collect::<Vec<_>>(),
        ["the\t22", "of\t19", "was\t13"]
    );
    assert_eq!(stdout.lines().count(), 10);
    assert!(
        stderr.contains("node   count            in 126 out 10 errors 0"),
        "{stderr}"
    );
}

#[test]
fn validate_reports_every_error_and_exits_2() {
    let out = flowhost(&["validate", "tests/ui/edges.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tests/ui/edges.toml:26:6: edge from `split` to `cnt`: `cnt` is not a node or sink"),
        "{stderr}"
    );
    assert!(stderr.contains("9 errors in tests/ui/edges.toml"), "{stderr}");

    let ok = flowhost(&["validate", "graphs/orders.toml"]);
    assert!(ok.status.success());
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "graphs/orders.toml: graph `orders` is valid: 1 sources, 3 nodes, 3 sinks, 6 edges"
    );
}

#[test]
fn a_broadcast_edge_is_refused_over_kafka_even_when_the_command_line_asks_for_it() {
    // The manifest asks for Kafka: `validate` names the line (tests/ui/kafka_broadcast.err).
    let out = flowhost(&["validate", "tests/ui/kafka_broadcast.toml"]);
    assert_eq!(out.status.code(), Some(2));
    // The in-process manifest run with `--transport kafka`: refused before any broker is tried.
    let dir = std::env::temp_dir().join(format!("flowhost-cli-bc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let manifest = std::fs::read_to_string(repo.join("tests/ui/kafka_broadcast.toml"))
        .unwrap()
        .replace("transport = \"kafka\"\n", "")
        .replace("../../functions", &repo.join("functions").display().to_string());
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
    let graph = dir.join("graph.toml");
    let args = [
        "run",
        graph.to_str().unwrap(),
        "--transport",
        "kafka",
        "--brokers",
        "127.0.0.1:1",
    ];
    let out = flowhost(&args);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("error: edge from `in` to `pass`: `connection = \"broadcast\"` works in-process only"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_node_that_stops_the_graph_exits_1_naming_it() {
    let dir = std::env::temp_dir().join(format!("flowhost-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in.txt"), "fine\nbad\n").unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let manifest = format!(
        "name = \"stops\"\n[sources.in]\nkind = \"file\"\npath = \"in.txt\"\n[nodes.faulty]\ncrate = \"{}\"\n[sinks.out]\nkind = \"stdout\"\n[[edges]]\nfrom = \"in\"\nto = \"faulty\"\n[[edges]]\nfrom = \"faulty\"\nto = \"out\"\n",
        repo.join("functions/faulty").display()
    );
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
    let out = flowhost(&["run", dir.join("graph.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: node `faulty` stopped the graph: invalid-input: asked for bad input"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fine\n");
    std::fs::remove_dir_all(&dir).ok();
}

/// A graph reading stdin through the `faulty` node, in a fresh folder.
fn stdin_graph(policy: &str) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("flowhost-cli-{}-{policy}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!(
        "name = \"stdin\"\n[sources.in]\nkind = \"stdin\"\n[nodes.faulty]\ncrate = \"{}\"\non_error = \"{policy}\"\n[sinks.out]\nkind = \"stdout\"\n[[edges]]\nfrom = \"in\"\nto = \"faulty\"\n[[edges]]\nfrom = \"faulty\"\nto = \"out\"\n",
        repo.join("functions/faulty").display()
    );
    std::fs::write(dir.join("graph.toml"), manifest).unwrap();
    dir.join("graph.toml")
}

/// `flowhost run manifest` with piped stdio and `RUST_LOG=log`.
fn spawn_run(manifest: &Path, log: &str) -> std::process::Child {
    use std::process::Stdio;
    Command::new(env!("CARGO_BIN_EXE_flowhost"))
        .args(["run", manifest.to_str().unwrap()])
        .env("RUST_LOG", log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn guest_panics_and_prints_reach_the_host_log_with_the_node_name() {
    use std::io::Write;
    let manifest = stdin_graph("skip");
    let mut child = spawn_run(&manifest, "info");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a\npanic\nprint\nb\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\nprint\nb\n");
    let line = |needle: &str| {
        stderr
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in:\n{stderr}"))
    };
    // The panic message travels with the trap: it is in the line that reports the failure.
    assert!(line("asked to panic").contains("node=faulty"), "{stderr}");
    assert!(
        line("the guest panicked").contains("skipped a message after 1 attempt(s): trap"),
        "{stderr}"
    );
    assert!(
        line("hello from stdout").contains("stream=\"stdout\""),
        "{stderr}"
    );
    assert!(line("hello from stderr").contains("node=faulty"), "{stderr}");
}

#[test]
fn ctrl_c_drains_flushes_and_exits_130() {
    stop_signal_drains_flushes_and_exits_130("-INT");
}

#[test]
fn sigterm_drains_flushes_and_exits_130_like_ctrl_c() {
    stop_signal_drains_flushes_and_exits_130("-TERM");
}

fn stop_signal_drains_flushes_and_exits_130(signal: &str) {
    use std::io::{BufRead, BufReader, Read, Write};
    let manifest = stdin_graph("stop");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowhost"))
        .args(["run", manifest.to_str().unwrap(), "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "warn,flowhost::admin=info")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut read_until = |needle: &str| {
        while !seen.contains(needle) {
            let n = stderr.read_line(&mut seen).unwrap();
            assert!(n > 0, "flowhost ended before logging {needle:?}:\n{seen}");
        }
        seen.clone()
    };
    let logged = read_until("admin endpoint on http://");
    let addr = logged.split("admin endpoint on http://").nth(1).unwrap();
    let status = format!("http://{}/status", addr.split_whitespace().next().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    stdin.flush().unwrap();
    // Stdin batches are sent as soon as nothing more is buffered: the line comes through.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    // In flight when the signal comes: read by the source, 2 s inside the node's call.
    stdin.write_all(b"pause:second\n").unwrap();
    stdin.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let body = ureq::get(&status)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap();
        let report: flowhost::topology::status::StatusReport = serde_json::from_str(&body).unwrap();
        if report.sources[0].read == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never read: {report:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let kill = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    read_until("stopping: draining the graph");
    // The input stays open: the signal, not its end, stops the run, and what was in
    // flight is written before it exits. (A bounded wait: a run that ignores the signal
    // fails the test instead of hanging it.)
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
        let _ = tx.send(rest);
    });
    let rest = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the signal did not stop the run:\n{seen}"));
    let status = child.wait().unwrap();
    drop(stdin);
    assert_eq!(
        status.code(),
        Some(130),
        "exit status {status:?}; stderr:\n{seen}"
    );
    assert_eq!(
        rest, "pause:second\n",
        "in-flight messages are flushed, not dropped"
    );
}

#[test]
fn validate_refuses_a_module_file_that_is_not_webassembly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.wasm"), "just some text").unwrap();
    std::fs::write(
        dir.path().join("graph.toml"),
        "name = \"g\"\n[sources.in]\nkind = \"stdin\"\n[nodes.parse]\nmodule = \"notes.wasm\"\n[sinks.out]\nkind = \"stdout\"\n[[edges]]\nfrom = \"in\"\nto = \"parse\"\n[[edges]]\nfrom = \"parse\"\nto = \"out\"\n",
    )
    .unwrap();
    let manifest = dir.path().join("graph.toml");
    let out = flowhost(&["validate", manifest.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("node `parse`: ")
            && stderr.contains("notes.wasm is not a WebAssembly module or component"),
        "{stderr}"
    );
}

#[test]
fn a_guest_that_floods_the_log_is_held_to_its_budget() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Each `print` writes two lines (stdout and stderr): 20,000 lines asked for.
    std::fs::write(dir.path().join("in.txt"), "print\n".repeat(10_000)).unwrap();
    let manifest = format!(
        "name = \"loud\"\n[sources.in]\nkind = \"file\"\npath = \"in.txt\"\n[nodes.faulty]\ncrate = \"{}\"\n[sinks.out]\nkind = \"null\"\n[[edges]]\nfrom = \"in\"\nto = \"faulty\"\n[[edges]]\nfrom = \"faulty\"\nto = \"out\"\n",
        repo.join("functions/faulty").display()
    );
    std::fs::write(dir.path().join("graph.toml"), manifest).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_flowhost"))
        .args(["run", dir.path().join("graph.toml").to_str().unwrap()])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("in 10000 out 10000"),
        "every message still processed"
    );
    let logged = stderr.lines().filter(|l| l.contains("hello from std")).count() as u64;
    let budget = flowhost::engine::GUEST_LOG_LINES_PER_SECOND as u64 * (seconds + 1);
    assert!(
        logged >= 1 && logged <= budget,
        "{logged} guest lines in {seconds}s, budget {budget}"
    );
}

#[test]
fn one_ctrl_c_stops_a_graph_whose_guest_naps_through_every_call() {
    use std::io::{BufRead, BufReader};
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 500 calls of 1 s each: draining them all would take over 8 minutes.
    std::fs::write(dir.path().join("in.txt"), "nap\n".repeat(500)).unwrap();
    let manifest = format!(
        "name = \"naps\"\n[sources.in]\nkind = \"file\"\npath = \"in.txt\"\n[nodes.faulty]\ncrate = \"{}\"\ntimeout_ms = 1000\non_error = \"skip\"\n[sinks.out]\nkind = \"stdout\"\n[[edges]]\nfrom = \"in\"\nto = \"faulty\"\n[[edges]]\nfrom = \"faulty\"\nto = \"out\"\n",
        repo.join("functions/faulty").display()
    );
    std::fs::write(dir.path().join("graph.toml"), manifest).unwrap();
    let mut child = spawn_run(&dir.path().join("graph.toml"), "info");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // The first nap has run into its deadline: the graph is busy with them.
    while !seen.contains("skipped a message") {
        let n = stderr.read_line(&mut seen).unwrap();
        assert!(n > 0, "flowhost ended early:\n{seen}");
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // A bounded wait for the exit (not a timing target): the run drains for at most its
    // longest deadline, then cuts the call in flight and abandons the rest.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        let _ = tx.send(rest);
    });
    let rest = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("one Ctrl-C did not stop the graph:\n{seen}"));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains("the graph did not drain within 1s: stopping now"),
        "{rest}"
    );
    let summary = rest
        .lines()
        .find(|l| l.contains("node   faulty"))
        .unwrap_or_default();
    let abandoned: u64 = summary
        .split(" abandoned ")
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no abandoned count in {summary:?}"));
    assert!(abandoned > 400, "{summary}");
}

#[test]
fn bench_measures_every_workload_against_its_baseline() {
    let json = std::env::temp_dir().join(format!("flowhost-bench-{}.json", std::process::id()));
    let out = flowhost(&["bench", "--quick", "--json", json.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("cores"), "{table}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).ok();
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["workload"].as_str().unwrap()).collect();
    for workload in [
        "boundary, batch 1,",
        "boundary, batch 64,",
        "boundary, batch 1024,",
        "passthrough, 16 B",
        "passthrough, 1024 B",
        "wordcount",
        "start-up, 10 nodes, cold",
        "start-up, 10 nodes, warm",
        "memory, stalled sink",
        "swap: p99 output gap",
        "swap: request to new-version output",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(workload)),
            "no `{workload}` row in {names:?}"
        );
    }
    for row in rows {
        assert!(row["flowhost"].as_f64().unwrap() > 0.0, "{row}");
        if let Some(baseline) = row["baseline"].as_f64() {
            let ratio = row["ratio"].as_f64().unwrap();
            assert!(
                (ratio - row["flowhost"].as_f64().unwrap() / baseline).abs() < 1e-9,
                "{row}"
            );
        }
    }
    assert!(report["cores"].as_u64().unwrap() >= 1);
}

/// `flowhost graph` of every example graph, in both formats, against `tests/pictures/`
/// (`BLESS=1` rewrites them).
#[test]
fn graph_pictures_of_the_example_graphs_match_their_snapshots() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo.join("graphs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        for (format, ext) in [("dot", "dot"), ("mermaid", "mmd"), ("svg", "svg")] {
            let manifest = format!("graphs/{name}.toml");
            let out = flowhost(&["graph", &manifest, "--format", format]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let got = String::from_utf8(out.stdout).unwrap();
            let snapshot = repo.join(format!("tests/pictures/{name}.{ext}"));
            if std::env::var_os("BLESS").is_some() {
                std::fs::write(&snapshot, &got).unwrap();
            }
            let want = std::fs::read_to_string(&snapshot)
                .unwrap_or_else(|e| panic!("{}: {e} (BLESS=1 writes it)", snapshot.display()));
            assert_eq!(got, want, "{}", snapshot.display());
            checked += 1;
        }
    }
    assert!(checked >= 18, "{checked} pictures");
}

#[test]
fn graph_refuses_an_invalid_manifest_with_its_errors() {
    let out = flowhost(&["graph", "tests/ui/edges.toml", "--format", "mermaid"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("9 errors in tests/ui/edges.toml"));
}

/// `flowhost new` makes a crate whose own tests pass natively, and which `flowhost run`
/// builds for wasm32-wasip1 and runs from its generated graph: with the binary alone,
/// copied out of this source tree (it carries the SDK), and `-q` silent.
#[test]
fn new_makes_a_node_crate_that_tests_builds_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let elsewhere = dir.path().join("bin/flowhost");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_flowhost"), &elsewhere).unwrap();
    let sdk_home = dir.path().join("data");
    let flowhost = |args: &[&str]| {
        Command::new(&elsewhere)
            .args(args)
            .current_dir(dir.path())
            .env("FLOWHOST_SDK_DIR", &sdk_home)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = flowhost(&["new", "shout-node"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = dir.path().join("shout-node");
    // It depends on the SDK the binary wrote, not on this tree.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let sdk_home = sdk_home.canonicalize().unwrap();
    assert!(manifest.contains(&*sdk_home.to_string_lossy()), "{manifest}");
    assert!(
        !manifest.contains(&*repo.canonicalize().unwrap().to_string_lossy()),
        "{manifest}"
    );
    // Share compiled dependencies with the example nodes.
    let target = repo.join("functions/target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let test = Command::new(&cargo)
        .args(["test", "--quiet"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(stdout.contains("2 passed"), "{stdout}");

    let mut run = Command::new(&elsewhere)
        .args(["-q", "run", "graph.toml"])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    run.stdin.take().unwrap().write_all(b"hello\nwasm\n").unwrap();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "> HELLO\n> WASM\n");
    assert_eq!(
        stderr, "",
        "-q: nothing but warnings and errors (the build's output too)"
    );

    let again = flowhost(&["new", "shout-node"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = flowhost(&["new", "Bad Name"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid node name `Bad Name`"));
}

/// The shipped schema is what `flowhost schema` generates from the parser's types
/// (`BLESS=1` rewrites it), and every example graph points editors at it.
#[test]
fn the_shipped_schema_is_current_and_the_examples_use_it() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = flowhost(&["schema"]);
    assert!(out.status.success());
    let got = String::from_utf8(out.stdout).unwrap();
    let shipped = repo.join("graphs/graph.schema.json");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&shipped, &got).unwrap();
    }
    assert_eq!(
        got,
        std::fs::read_to_string(&shipped).unwrap(),
        "BLESS=1 to update it"
    );
    let schema: serde_json::Value = serde_json::from_str(&got).unwrap();
    let props = &schema["properties"];
    for key in [
        "name",
        "sources",
        "nodes",
        "sinks",
        "stores",
        "edges",
        "checkpoint",
    ] {
        assert!(props.get(key).is_some(), "no `{key}` in the schema");
    }
    assert_eq!(schema["additionalProperties"], false, "unknown fields are errors");
    for entry in std::fs::read_dir(repo.join("graphs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("#:schema ./graph.schema.json\n"),
                "{}",
                path.display()
            );
        }
    }
}
