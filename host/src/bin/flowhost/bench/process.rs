//! Workloads that run `flowhost` as users do, as a separate process: start-up to the first
//! output, and memory while the sink is stalled.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Better, Fixtures, Row};

/// A chain of ten passthrough nodes from `source` (the body of its table) to stdout.
fn ten_nodes(fx: &Fixtures, source: &str) -> String {
    let mut m = format!("name = \"ten\"\n[sources.in]\n{source}\n[sinks.out]\nkind = \"stdout\"\n");
    for i in 0..10 {
        m += &format!("[nodes.n{i}]\nmodule = \"{}\"\n", fx.passthrough.path.display());
        let from = if i == 0 {
            "in".to_owned()
        } else {
            format!("n{}", i - 1)
        };
        m += &format!("[[edges]]\nfrom = \"{from}\"\nto = \"n{i}\"\n");
    }
    m + "[[edges]]\nfrom = \"n9\"\nto = \"out\"\n"
}

fn spawn(manifest: &Path, cache: &Path) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["run", "--quiet"])
        .arg(manifest)
        .env("FLOWHOST_CACHE_DIR", cache)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?)
}

pub(super) fn scratch(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("flowhost-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Time from `flowhost run` to the first output line: an empty compile cache, then a warm one.
pub(super) fn startup(fx: &Fixtures) -> anyhow::Result<Vec<Row>> {
    let dir = scratch("startup")?;
    std::fs::write(dir.join("in.txt"), "hello\n")?;
    let manifest = dir.join("graph.toml");
    std::fs::write(&manifest, ten_nodes(fx, "kind = \"file\"\npath = \"in.txt\""))?;
    let first_output = || -> anyhow::Result<f64> {
        let start = Instant::now();
        let mut child = spawn(&manifest, &dir.join("cache"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(
            child.wait()?.success() && line == "hello\n",
            "the start-up graph failed (got {line:?})"
        );
        Ok(ms)
    };
    let cold = first_output()?;
    let warm = first_output()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![
        Row::new("start-up, 10 nodes, cold cache", cold, None, "ms", Better::Lower),
        Row::new("start-up, 10 nodes, warm cache", warm, None, "ms", Better::Lower).figure_target(1000.0),
    ])
}

/// Peak RSS of a 10-node graph fed without end while nothing reads its output: after the
/// first second, and after `seconds`. Bounded memory means the two stay close.
pub(super) fn memory(fx: &Fixtures, seconds: u64) -> anyhow::Result<Vec<Row>> {
    let dir = scratch("memory")?;
    let manifest = dir.join("graph.toml");
    std::fs::write(
        &manifest,
        ten_nodes(fx, "kind = \"generator\"\npayload_size = 64"),
    )?;
    let mut child = spawn(&manifest, &dir.join("cache"))?;
    let peak = |child: &Child| -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{}/status", child.id()))?;
        Ok(kb / 1024.0)
    };
    std::thread::sleep(Duration::from_secs(1));
    let early = peak(&child);
    std::thread::sleep(Duration::from_secs(seconds.max(2) - 1));
    let late = peak(&child);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (early, late) = (early?, late?);
    Ok(vec![
        Row::new(
            format!("memory, stalled sink, RSS {}s/1s", seconds.max(2)),
            late,
            Some(early),
            "MiB",
            Better::Lower,
        )
        .ratio_target(1.1),
    ])
}
