//! Durable stores across a `kill -9`: the restarted run resumes from the last checkpoint,
//! and its state and outputs are exactly those of a run that was never interrupted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowhost::state::durable;

const LINES: usize = 600_000;

/// text -> split -> { tally (durable `counts`), words (file) }, checkpointed every 20 ms.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let words = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
    ];
    let mut text = String::new();
    for i in 0..LINES {
        for j in 0..4 {
            text.push_str(words[(i * 7 + j * 3 + i / 13) % words.len()]);
            text.push(' ');
        }
        text.push_str(&format!("w{}\n", i % 997));
    }
    std::fs::write(dir.path().join("in.txt"), text).unwrap();
    let functions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions");
    let manifest = format!(
        r#"name = "crash"
[checkpoint]
interval_ms = 20
[stores.counts]
durability = "durable"
[sources.text]
kind = "file"
path = "in.txt"
[nodes.split]
crate = "{f}/split"
[nodes.tally]
crate = "{f}/tally"
state = {{ counts = "rw" }}
[sinks.words]
kind = "file"
path = "out/words.txt"
[[edges]]
from = "text"
to = "split"
[[edges]]
from = "split"
to = "tally"
[[edges]]
from = "split"
to = "words"
"#,
        f = functions.display()
    );
    let path = dir.path().join("graph.toml");
    std::fs::write(&path, manifest).unwrap();
    (dir, path)
}

fn flowhost(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowhost"));
    cmd.args(args).env("RUST_LOG", "info");
    cmd
}

fn run(args: &[&str]) -> Output {
    let out = flowhost(args).output().expect("flowhost runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The sink's output and the store, as `flowhost state` dumps it.
fn results(dir: &Path, manifest: &str) -> (String, String) {
    let words = std::fs::read_to_string(dir.join("out/words.txt")).unwrap();
    let state = run(&["state", manifest, "dump", "counts"]);
    (words, String::from_utf8(state.stdout).unwrap())
}

#[test]
fn kill_9_mid_run_then_restart_matches_a_run_without_the_crash() {
    let (dir, manifest) = setup();
    let manifest = manifest.to_str().unwrap();
    let state_dir = dir.path().join(".flowhost/crash");

    run(&["run", manifest, "--fresh"]);
    let (words, counts) = results(dir.path(), manifest);
    assert_eq!(words.lines().count(), LINES * 5);
    assert!(counts.starts_with("alpha\t"), "{counts}");
    assert!(counts.contains("\nw0\t602\n"), "{counts}");

    // Again from scratch, killed once a few checkpoints are on disk.
    let mut child = flowhost(&["run", manifest, "--fresh"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let log = durable::read(&state_dir).unwrap();
        if log.records >= 4 && log.resumable().is_some() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint was written"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let saved = durable::read(&state_dir).unwrap();
    let at = saved.resumable().expect("killed mid-run").sources["text"];
    assert!(
        at.records > 0 && at.records < LINES as u64,
        "killed mid-run: {at:?}"
    );

    let out = run(&["run", manifest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resuming from the last checkpoint: `text` at record"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "source text             read {}",
            LINES as u64 - at.records
        )),
        "the rest of the input, from the checkpoint: {stderr}"
    );
    let (words_after, counts_after) = results(dir.path(), manifest);
    assert!(
        words_after == words,
        "the sink's output differs from the uninterrupted run"
    );
    assert_eq!(counts_after, counts);

    // The finished run's checkpoint is complete: the next run starts the sources afresh
    // and the durable store keeps counting (every count doubles).
    run(&["run", manifest]);
    let (words_again, counts_again) = results(dir.path(), manifest);
    assert!(words_again == words);
    let doubled: String = counts
        .lines()
        .map(|l| {
            let (k, n) = l.split_once('\t').unwrap();
            format!("{k}\t{}\n", n.parse::<i64>().unwrap() * 2)
        })
        .collect();
    assert_eq!(counts_again, doubled);
}

#[test]
fn a_second_run_on_the_same_state_directory_is_refused() {
    let (dir, manifest) = setup();
    let manifest = manifest.to_str().unwrap();
    let state_dir = dir.path().join(".flowhost/crash");
    let mut first = flowhost(&["run", manifest])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !state_dir.join("state.log").exists() {
        assert!(first.try_wait().unwrap().is_none(), "the first run ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = flowhost(&["run", manifest]).output().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "state directory {} is in use by another `flowhost run` of this graph",
            state_dir.display()
        )),
        "{stderr}"
    );
}

/// A durable run stopped by one Ctrl-C while a guest naps through its calls: the drain
/// gives up after the grace period and abandons what it had not processed; no checkpoint
/// may then claim those messages, so the next run processes them, each once.
#[test]
fn an_aborted_drain_leaves_no_checkpoint_past_what_it_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (0..50).map(|i| format!("ok:{i}")).collect();
    // Five naps of a 1 s deadline each: 6 s of draining, far past the 1 s grace.
    lines.extend((0..5).map(|_| "nap".to_owned()));
    lines.extend((50..100).map(|i| format!("ok:{i}")));
    std::fs::write(dir.path().join("in.txt"), lines.join("\n") + "\n").unwrap();
    let functions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions");
    let manifest = format!(
        "name = \"napping\"\n[checkpoint]\ninterval_ms = 20\n[stores.counts]\ndurability = \"durable\"\n\
         [sources.in]\nkind = \"file\"\npath = \"in.txt\"\n\
         [nodes.faulty]\ncrate = \"{}/faulty\"\nconfig = {{ count_in = \"counts\" }}\nstate = {{ counts = \"rw\" }}\n\
         timeout_ms = 1000\non_error = \"skip\"\n[sinks.out]\nkind = \"null\"\n\
         [[edges]]\nfrom = \"in\"\nto = \"faulty\"\n[[edges]]\nfrom = \"faulty\"\nto = \"out\"\n",
        functions.display()
    );
    std::fs::write(dir.path().join("graph.toml"), &manifest).unwrap();
    let first = flowhost(&["run", "graph.toml", "--batch-size", "8"])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The nap's batch is in its call once the first batches were checkpointed.
    std::thread::sleep(Duration::from_millis(1500));
    let kill = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("stopping now"),
        "the drain was cut short: {stderr}"
    );

    let second = flowhost(&["run", "graph.toml", "--batch-size", "8"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let state = durable::read(&dir.path().join(".flowhost/napping")).unwrap();
    let counts = &state.stores["counts"];
    for i in 0..100 {
        let key = format!("ok:{i}");
        let n = counts
            .get(key.as_bytes())
            .map(|(v, _)| i64::from_le_bytes(v[..8].try_into().unwrap()));
        assert_eq!(n, Some(1), "{key}: counted once over the two runs");
    }
}
