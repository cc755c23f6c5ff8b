//! A guest is untrusted: whatever it does, the host survives, loses nothing, and applies
//! the node's error policy to exactly the message that failed.

use anyhow::Result;
use flowhost::engine::{Engine, EngineConfig, NodeSetup, NodeTemplate};
use flowhost::manifest::ModuleRef;
use flowhost_tests::{BOTH, Captured, On, chain, function, graph_in, module, run_captured, run_captured_on};

/// in.txt -> faulty -> out, with `policy` lines added to the node (and a `dead` JSON sink
/// when the policy names it).
fn faulty_graph(policy: &str) -> String {
    let node = format!("crate = \"{{functions}}/faulty\"\ntimeout_ms = 300\nmemory_mb = 32\n{policy}");
    let mut toml = chain(FILE_SOURCE, "faulty", &node, "round-robin");
    if policy.contains("dead_letter") {
        toml += "[sinks.dead]\nkind = \"stdout\"\nformat = \"json\"\n";
    }
    toml
}

const FILE_SOURCE: &str = "kind = \"file\"\npath = \"in.txt\"";

#[test]
fn traps_timeouts_memory_and_errors_are_dead_lettered_and_the_rest_flows() -> Result<()> {
    for on in BOTH {
        faults_on(on)?;
    }
    Ok(())
}

fn faults_on(on: On) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let inputs = "ok1\npanic\nok2\ntrap\nbad\nloop\ngrow\nretry\nprint\nok3\n";
    std::fs::write(dir.path().join("in.txt"), inputs)?;
    let graph = graph_in(
        dir.path(),
        &faulty_graph("on_error = \"dead-letter\"\ndead_letter = \"dead\""),
    )?;
    let out = run_captured_on(graph, dir.path(), on)?;

    let passed = match on {
        On::Memory => out.lines("out").to_vec(),
        // Unkeyed records spread over 4 partitions: order holds per partition only.
        On::Kafka => out.sorted("out"),
    };
    let expected = match on {
        On::Memory => ["ok1", "ok2", "print", "ok3"],
        On::Kafka => ["ok1", "ok2", "ok3", "print"],
    };
    assert_eq!(passed, expected, "good messages pass, in order");
    let dead: Vec<(String, String, String, String)> = out
        .json("dead")
        .iter()
        .map(|d| {
            let h = &d["headers"];
            let s = |k: &str| h[k].as_str().unwrap_or_default().to_owned();
            (
                d["payload"].as_str().unwrap_or_default().to_owned(),
                s("flowhost-error-kind"),
                s("flowhost-error"),
                s("flowhost-error-attempts"),
            )
        })
        .collect();
    let find = |p: &str| {
        dead.iter()
            .find(|d| d.0 == p)
            .unwrap_or_else(|| panic!("{p} was not dead-lettered: {dead:?}"))
    };
    assert_eq!(dead.len(), 6, "{dead:?}");
    assert_eq!(find("panic").1, "trap");
    assert!(
        find("panic").2.contains("panicked on input ")
            && find("panic").2.contains(" at faulty/src/lib.rs:")
            && find("panic").2.contains("asked to panic"),
        "the guest's panic message: {:?}",
        find("panic")
    );
    assert_eq!(find("trap").1, "trap");
    assert!(find("loop").2.contains("timed out"), "{:?}", find("loop"));
    assert!(
        find("grow").2.contains("memory limit exceeded: memory_mb = 32"),
        "{:?}",
        find("grow")
    );
    assert_eq!(
        (find("bad").1.as_str(), find("bad").2.as_str()),
        ("invalid-input", "asked for bad input")
    );
    assert_eq!(
        (find("retry").1.as_str(), find("retry").3.as_str()),
        ("retryable", "3"),
        "retried, then dead-lettered"
    );

    let counts = out.node("faulty");
    assert_eq!(
        (
            counts.received,
            counts.emitted,
            counts.errors,
            counts.dead_lettered
        ),
        (10, 4, 6, 6)
    );
    assert!(
        counts.traps >= 4,
        "panic, trap, loop and grow each trap at least once: {counts:?}"
    );
    assert_eq!(counts.retries, 2);
    assert_eq!(out.report.failure, None);
    Ok(())
}

/// Runs `graph`, failing the test if it has not ended within a minute (a guest that
/// outsleeps its deadline would hold it for an hour).
fn run_within_a_minute(graph: flowhost::manifest::Graph, dir: &std::path::Path) -> Result<Captured> {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(run_captured(graph, &dir));
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the run did not end: a guest call outlived its deadline")
}

#[test]
fn a_guest_sleeping_in_a_host_call_is_stopped_at_its_deadline_in_process_init_and_finish() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("in.txt"), "ok1\nsleep\nok2\n")?;
    let policy = "on_error = \"dead-letter\"\ndead_letter = \"dead\"";
    let graph = graph_in(dir.path(), &faulty_graph(policy))?;
    let out = run_within_a_minute(graph, dir.path())?;
    assert_eq!(out.lines("out"), ["ok1", "ok2"]);
    let dead = out.json("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["payload"], "sleep");
    let error = dead[0]["headers"]["flowhost-error"].as_str().unwrap_or_default();
    assert!(
        error.contains("timed out: the guest asked to sleep 3600s, past its timeout_ms = 300"),
        "{error}"
    );

    for call in ["init", "finish"] {
        let policy = format!("config = {{ sleep_in = \"{call}\" }}");
        let graph = graph_in(dir.path(), &faulty_graph(&policy))?;
        let failure = match run_within_a_minute(graph, dir.path()) {
            Ok(out) => out.report.failure.unwrap_or_default(),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            failure.contains("timed out: the guest asked to sleep 3600s, past its timeout_ms = 300"),
            "{call}: {failure}"
        );
        assert!(failure.contains("node `faulty`"), "{call}: {failure}");
    }
    Ok(())
}

#[test]
fn skip_counts_and_goes_on() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("in.txt"), "a\nbad\nb\npanic\nc\n")?;
    let graph = graph_in(dir.path(), &faulty_graph("on_error = \"skip\""))?;
    let out = run_captured(graph, dir.path())?;
    assert_eq!(out.lines("out"), ["a", "b", "c"]);
    assert_eq!(out.node("faulty").skipped, 2);
    assert_eq!(out.report.failure, None);
    Ok(())
}

#[test]
fn stop_ends_the_graph_after_the_failing_batch_naming_the_node_and_the_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // 1,000 lines in batches of 256; the bad one is in the first batch.
    let lines: Vec<String> = (0..1_000)
        .map(|i| if i == 100 { "bad".into() } else { format!("m{i}") })
        .collect();
    std::fs::write(dir.path().join("in.txt"), lines.join("\n"))?;
    let graph = graph_in(dir.path(), &faulty_graph("on_error = \"stop\""))?;
    let out = run_captured(graph, dir.path())?;
    assert_eq!(
        out.report.failure.as_deref(),
        Some("node `faulty` stopped the graph: invalid-input: asked for bad input")
    );
    let first_batch: Vec<&String> = lines[..256].iter().filter(|l| *l != "bad").collect();
    assert_eq!(
        out.lines("out").iter().collect::<Vec<_>>(),
        first_batch,
        "the failing batch completes; no later batch runs"
    );
    Ok(())
}

#[test]
fn broken_modules_are_refused_with_the_reason() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::new(EngineConfig::default())?;
    let load = |bytes: &[u8]| -> String {
        let path = dir.path().join("broken.wasm");
        std::fs::write(&path, bytes).unwrap();
        let err = engine.load_file(&path).and_then(|m| {
            let setup = NodeSetup {
                inputs: vec![],
                outputs: vec![],
                ..NodeSetup::new("n")
            };
            NodeTemplate::new(&engine, m, setup)
        });
        format!("{:#}", err.err().expect("a broken module must be refused"))
    };
    assert!(
        load(b"definitely not wasm").contains("not a WebAssembly module"),
        "{}",
        load(b"definitely not wasm")
    );
    // A valid, empty core module: it implements nothing of the world.
    let empty = load(b"\0asm\x01\0\0\0");
    assert!(empty.contains("does not fit the flowhost:node world"), "{empty}");
    Ok(())
}

#[test]
fn a_bad_config_fails_init_naming_the_node_and_field() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("in.txt"), "x\n")?;
    let node = "crate = \"{functions}/split\"\nconfig = { lowercase = \"yes\" }";
    let graph = graph_in(dir.path(), &chain(FILE_SOURCE, "split", node, "round-robin"))?;
    let err = format!(
        "{:#}",
        run_captured(graph, dir.path()).err().expect("init must fail")
    );
    assert!(err.contains("node `split`: init: fatal: "), "{err}");
    assert!(
        err.contains("invalid config for node `split`: invalid type: string \"yes\", expected a boolean"),
        "{err}"
    );
    Ok(())
}

#[test]
fn modules_compile_once_per_content_hash() -> Result<()> {
    let engine = Engine::new(EngineConfig::default())?;
    let path = module("passthrough")?;
    let a = engine.load_file(&path)?;
    let b = engine.load(&flowhost::plan::ModuleSource::resolve(
        &ModuleRef::Crate(function("passthrough")),
        None,
    )?)?;
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.hash.len(), 64);
    Ok(())
}

#[test]
fn the_disk_cache_serves_a_fresh_engine_and_survives_corruption() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let config = || EngineConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..EngineConfig::default()
    };
    let path = module("passthrough")?;
    let entries = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };

    let first = Engine::new(config())?.load_file(&path)?;
    let files = entries();
    assert_eq!(files.len(), 1, "one compiled module cached: {files:?}");
    assert!(
        files[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&first.hash)
    );

    // A new engine (a new process, in effect) runs the cached code.
    let run = |engine: &Engine| -> Result<Vec<u8>> {
        let module = engine.load_file(&path)?;
        let template = NodeTemplate::new(engine, module, NodeSetup::new("p"))?;
        let msgs = [flowhost::message::Msg::new("cached", None)];
        let out = template
            .instantiate()?
            .process(&flowhost::message::encode(&msgs, 0))?;
        Ok(flowhost::message::decode(out, 1)?.ports[0].msgs()[0]
            .payload
            .to_vec())
    };
    assert_eq!(run(&Engine::new(config())?)?, b"cached");

    // A damaged entry is not trusted: it is dropped and the module compiled again.
    std::fs::write(&files[0], b"garbage")?;
    assert_eq!(run(&Engine::new(config())?)?, b"cached");
    assert_ne!(std::fs::read(&files[0])?, b"garbage", "the entry was rewritten");
    Ok(())
}
