//! A guest gets nothing of the host it was not granted: no files, environment, sockets or
//! arguments, no ungranted store; a read-only directory and named environment variables
//! only when the manifest grants them. And a guest that breaks the batch contract, runs
//! out of fuel or keeps asking for retries is handled by its node's policy.

use anyhow::Result;
use flowhost_tests::{chain, graph_in, run_captured};

const FILE_SOURCE: &str = "kind = \"file\"\npath = \"in.txt\"";

/// What a run of one node produced.
struct Ran {
    out: Vec<String>,
    /// `(payload, error)` of each dead letter.
    dead: Vec<(String, String)>,
    counts: flowhost::topology::NodeCounts,
}

/// Runs `commands` (one per line) through `functions/<function>` configured with `node`
/// lines.
fn run(function: &str, node: &str, commands: &[&str]) -> Result<Ran> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("in.txt"), commands.join("\n") + "\n")?;
    std::fs::create_dir_all(dir.path().join("ref/sub"))?;
    std::fs::write(dir.path().join("ref/sub/note.txt"), "granted text")?;
    std::fs::write(dir.path().join("secret.txt"), "not granted")?;
    let body = format!(
        "crate = \"{{functions}}/{function}\"\non_error = \"dead-letter\"\ndead_letter = \"dead\"\n{node}"
    );
    let mut toml = chain(FILE_SOURCE, function, &body, "round-robin");
    toml += "[sinks.dead]\nkind = \"stdout\"\nformat = \"json\"\n[stores.secret]\n[stores.mine]\n";
    let out = run_captured(graph_in(dir.path(), &toml)?, dir.path())?;
    let dead = out
        .json("dead")
        .iter()
        .map(|d| {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (s(&d["payload"]), s(&d["headers"]["flowhost-error"]))
        })
        .collect();
    Ok(Ran {
        out: out.lines("out").to_vec(),
        dead,
        counts: out.node(function),
    })
}

fn denied(out: &[String], command: &str) -> bool {
    out.iter().any(|l| l.starts_with(&format!("denied: {command}: ")))
}

#[test]
fn by_default_a_guest_reaches_nothing() -> Result<()> {
    let secret = std::env::temp_dir().join("flowhost-secret-probe.txt");
    std::fs::write(&secret, "host file")?;
    let read_secret = format!("read {}", secret.display());
    let write_tmp = format!("write {}", std::env::temp_dir().join("pwned.txt").display());
    let commands = [
        read_secret.as_str(),
        "read /etc/passwd",
        "read secret.txt",
        write_tmp.as_str(),
        "list /",
        "list .",
        "env HOME",
        "env PATH",
        "env-all",
        "args",
        "connect 127.0.0.1:22",
        "connect 1.1.1.1:80",
        "store secret",
    ];
    let Ran { out, dead, .. } = run("hostile", "", &commands)?;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(out.len(), commands.len(), "{out:?}");
    for command in commands {
        assert!(denied(&out, command), "`{command}` must be denied: {out:#?}");
    }
    assert!(!std::env::temp_dir().join("pwned.txt").exists());
    Ok(())
}

#[test]
fn grants_open_exactly_what_they_name_read_only() -> Result<()> {
    let node = "env = [\"CARGO_MANIFEST_DIR\"]\nread_dirs = { \"/ref\" = \"ref\" }\nstate = { mine = \"r\" }";
    let commands = [
        "read /ref/sub/note.txt",
        "list /ref",
        "env CARGO_MANIFEST_DIR",
        "store mine",
        // Still refused: writing to the granted folder, climbing out of it, other
        // variables, other stores.
        "write /ref/sub/new.txt",
        "read /ref/../secret.txt",
        "read secret.txt",
        "env HOME",
        "store secret",
    ];
    let Ran { out, dead, .. } = run("hostile", node, &commands)?;
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(out[0], "allowed: read /ref/sub/note.txt: granted text");
    assert_eq!(out[1], "allowed: list /ref: 1 entries");
    assert_eq!(
        out[2],
        format!("allowed: env CARGO_MANIFEST_DIR: {}", env!("CARGO_MANIFEST_DIR"))
    );
    assert_eq!(out[3], "allowed: store mine: None");
    for command in &commands[4..] {
        assert!(denied(&out, command), "`{command}` must be denied: {out:#?}");
    }
    Ok(())
}

#[test]
fn a_guest_breaking_the_batch_contract_fails_only_its_message() -> Result<()> {
    // One breaker spoils its whole batch's output: the host finds the batch malformed,
    // re-runs messages alone until one fails, batches the rest again; only breakers fail.
    let commands = [
        "garbage",
        "ok1",
        "truncated",
        "bad-port",
        "ok2",
        "bad-index",
        "huge-length",
        "ok3",
    ];
    let Ran { out, dead, counts } = run("corrupt", "", &commands)?;
    assert_eq!(out, ["ok1", "ok2", "ok3"]);
    let failed: Vec<&str> = dead.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        failed,
        ["garbage", "truncated", "bad-port", "bad-index", "huge-length"]
    );
    for (payload, error) in &dead {
        assert!(
            error.starts_with("returned a malformed batch"),
            "{payload}: {error}"
        );
    }
    assert!(dead[3].1.contains("message 1000 of a batch of 1"), "{dead:?}");
    assert_eq!((counts.errors, counts.dead_lettered, counts.traps), (5, 5, 0));
    Ok(())
}

#[test]
fn each_input_message_ends_exactly_one_way_whatever_the_guest_returns() -> Result<()> {
    // Two errors for one message, in a batch: malformed, so run alone; alone still two:
    // dead-lettered once, as bad output.
    let Ran { out, dead, counts } = run("corrupt", "", &["ok1", "failed-twice", "ok2"])?;
    assert_eq!(out, ["ok1", "ok2"]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "failed-twice");
    assert!(
        dead[0].1.contains("two errors for message 0 of a batch of 1"),
        "{dead:?}"
    );
    assert_eq!((counts.errors, counts.dead_lettered), (1, 1));

    // A record and an error for the one message of a call: the error wins.
    let Ran { out, dead, counts } = run("corrupt", "", &["record-and-error"])?;
    assert!(
        out.is_empty(),
        "the record of a failed message was delivered: {out:?}"
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1, "failed, records kept");
    assert_eq!((counts.errors, counts.dead_lettered, counts.emitted), (1, 1, 0));
    Ok(())
}

#[test]
fn output_past_max_output_mb_fails_only_the_message_that_made_it() -> Result<()> {
    let Ran { out, dead, counts } = run("corrupt", "max_output_mb = 1", &["ok1", "two-mib", "ok2"])?;
    assert_eq!(out, ["ok1", "ok2"]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "two-mib");
    assert!(
        dead[0]
            .1
            .contains("bytes of output for a batch of 1, over max_output_mb = 1"),
        "{dead:?}"
    );
    assert_eq!((counts.errors, counts.dead_lettered), (1, 1));
    Ok(())
}

#[test]
fn fuel_stops_a_runaway_call_and_the_node_serves_the_next_message() -> Result<()> {
    // A generous timeout: fuel, not the clock, must stop the loop.
    let node = "fuel = 5_000_000\ntimeout_ms = 60_000";
    let Ran { out, dead, counts } = run("faulty", node, &["before", "loop", "after"])?;
    assert_eq!(out, ["before", "after"]);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "loop");
    assert!(
        dead[0].1.contains("out of fuel") && dead[0].1.contains("5000000"),
        "{dead:?}"
    );
    assert_eq!(counts.traps, 2, "once in the batch, once alone");
    Ok(())
}

#[test]
fn retries_follow_the_nodes_retry_table() -> Result<()> {
    let node = "retry = { attempts = 5, backoff_ms = 1, max_backoff_ms = 2 }";
    let Ran { out, dead, counts } = run("faulty", node, &["a", "retry", "b"])?;
    assert_eq!(out, ["a", "b"]);
    assert_eq!(dead.len(), 1);
    assert_eq!(counts.retries, 4, "5 attempts in all");

    let Ran { dead, counts, .. } = run("faulty", "retry = { attempts = 1 }", &["retry"])?;
    assert_eq!(counts.retries, 0, "attempts = 1 turns retries off");
    assert_eq!(dead.len(), 1);
    Ok(())
}
