//! Wordcount: a generated text through file → split → count (wasm, key-hash), against the
//! same logic as a plain single-threaded Rust loop. Both must find the same distinct
//! words. Variants: counts in guest memory, in a host store (`tally`), and with `split`
//! as a combiner (partial counts per batch into `count.partial`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{Better, Fixtures, Row, interleaved};
use flowhost::manifest::Graph;
use flowhost::shutdown::Shutdown;
use flowhost::topology::RunOptions;

/// Where `count` counts.
#[derive(Clone, Copy)]
enum Counter {
    /// `count`, in guest memory.
    Guest,
    /// Two replicas of `count` (key-hash over both).
    GuestReplicas,
    /// `tally`, in a host store.
    HostState,
    /// `count` fed partial counts by `split` as a combiner.
    Combined,
}

pub(super) fn run(fx: &Fixtures, mb: usize, rounds: usize) -> anyhow::Result<Vec<Row>> {
    let dir = std::env::temp_dir().join(format!("flowhost-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let text = dir.join("text.txt");
    generate(&text, mb << 20)?;
    let result = (|| {
        let (_, native_words) = native(&text)?;
        let mbps = |secs: f64| mb as f64 / secs;
        let mut rows = Vec::new();
        let variants = [
            (Counter::Guest, "guest memory"),
            (Counter::GuestReplicas, "guest memory ×2"),
            (Counter::HostState, "host state"),
            (Counter::Combined, "combiner"),
        ];
        for (counter, name) in variants {
            let r = interleaved(
                rounds,
                || {
                    let (secs, words) = flowhost(fx, &dir, &text, counter)?;
                    anyhow::ensure!(
                        words == native_words,
                        "flowhost ({name}) found {words} distinct words, native {native_words}"
                    );
                    Ok(mbps(secs))
                },
                || Ok(mbps(native(&text)?.0)),
            )?;
            let row = Row::rounds(format!("wordcount {mb} MB, {name}"), &r, "MB/s", Better::Higher);
            // Two counters on two cores compete with `split` for them: no target, a
            // figure for the key-hash path over several replicas.
            rows.push(match counter {
                Counter::GuestReplicas => row,
                _ => row.ratio_target(0.6),
            });
        }
        Ok(rows)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Lines of 12 words: a few very common, many rare (a skewed, natural-looking mix), some capitalised.
fn generate(path: &Path, bytes: usize) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let syllables = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "we", "zu", "ber", "dan",
    ];
    let word = |mut n: u64| {
        let mut w = String::new();
        loop {
            w.push_str(syllables[(n % 12) as usize]);
            n /= 12;
            if n == 0 {
                break w;
            }
        }
    };
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut written = 0;
    while written < bytes {
        let mut line = String::new();
        for i in 0..12 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = if state.is_multiple_of(4) {
                state % 50_000
            } else {
                state % 300
            };
            let w = word(n);
            if i == 0 {
                line.push_str(&w.to_uppercase())
            } else {
                line.push_str(&w)
            }
            line.push_str(if i == 11 { ".\n" } else { " " });
        }
        out.write_all(line.as_bytes())?;
        written += line.len();
    }
    out.flush()
}

/// The wordcount graph with `counter`. Returns seconds and distinct words.
fn flowhost(fx: &Fixtures, dir: &Path, text: &Path, counter: Counter) -> anyhow::Result<(f64, u64)> {
    let replicas = if matches!(counter, Counter::GuestReplicas) {
        2
    } else {
        1
    };
    let count = format!(
        "[nodes.count]\nmodule = \"{}\"\nreplicas = {replicas}\n[sinks.null]\nkind = \"null\"\n[[edges]]\nfrom = \"count\"\nto = \"null\"\n",
        fx.count.path.display()
    );
    let (counter, combine, port) = match counter {
        Counter::Guest | Counter::GuestReplicas => (count, false, ""),
        Counter::HostState => (
            format!(
                "[stores.counts]\n[nodes.count]\nmodule = \"{}\"\nstate = {{ counts = \"rw\" }}\n",
                fx.tally.path.display()
            ),
            false,
            "",
        ),
        Counter::Combined => (count, true, ".partial"),
    };
    let manifest = format!(
        "name = \"wordcount-bench\"\n[sources.text]\nkind = \"file\"\npath = \"{}\"\n\
         [nodes.split]\nmodule = \"{}\"\nconfig = {{ combine = {combine} }}\n{counter}\
         [[edges]]\nfrom = \"text\"\nto = \"split\"\n\
         [[edges]]\nfrom = \"split\"\nto = \"count{port}\"\nconnection = \"key-hash\"\n",
        text.display(),
        fx.split.path.display(),
    );
    let graph = Graph::parse(&dir.join("graph.toml"), &manifest)?;
    let opts = RunOptions {
        batch_size: 1024,
        ..RunOptions::default()
    };
    let plan = flowhost::plan::Plan::resolve(graph, None)?;
    let report = flowhost::run(&plan, &fx.engine, &opts, &Arc::new(Shutdown::default()))?;
    anyhow::ensure!(report.failure.is_none(), "{:?}", report.failure);
    let distinct = match report.stores.get("counts") {
        Some(store) => store.len() as u64,
        None => report.sinks[0].1,
    };
    Ok((report.elapsed.as_secs_f64(), distinct))
}

/// `functions/split` and `functions/count` as one plain loop.
fn native(text: &Path) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let mut counts: HashMap<String, u64> = HashMap::new();
    for line in BufReader::new(std::fs::File::open(text)?).lines() {
        let line = line?;
        for w in line.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
            let w = w.trim_matches('\'');
            if !w.is_empty() {
                *counts.entry(w.to_lowercase()).or_default() += 1;
            }
        }
    }
    let mut sorted: Vec<_> = counts.into_iter().collect();
    sorted.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok((start.elapsed().as_secs_f64(), sorted.len() as u64))
}
