//! Wordcount: a generated text through file → split → count (wasm, key-hash), against the
//! same logic in plain Rust. Both must find the same distinct words.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{Better, Fixtures, Row};
use flowhost::manifest::Graph;
use flowhost::shutdown::Shutdown;
use flowhost::topology::RunOptions;

pub(super) fn run(fx: &Fixtures, mb: usize) -> anyhow::Result<Vec<Row>> {
    let dir = std::env::temp_dir().join(format!("flowhost-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let text = dir.join("text.txt");
    generate(&text, mb << 20)?;
    let result = (|| {
        let (native, native_words) = native(&text)?;
        let mbps = |secs: f64| mb as f64 / secs;
        let mut rows = Vec::new();
        for (host_state, name) in [(false, "guest memory"), (true, "host state")] {
            let (ours, ours_words) = flowhost(fx, &dir, &text, host_state)?;
            anyhow::ensure!(
                ours_words == native_words,
                "flowhost ({name}) found {ours_words} distinct words, native {native_words}"
            );
            let row = Row::new(
                format!("wordcount {mb} MB, {name}"),
                mbps(ours),
                Some(mbps(native)),
                "MB/s",
                Better::Higher,
            );
            rows.push(row.ratio_target(0.5));
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

/// The wordcount graph; with `host_state`, words are counted by `tally` in a host store
/// instead of by `count` in guest memory. Returns seconds and distinct words.
fn flowhost(fx: &Fixtures, dir: &Path, text: &Path, host_state: bool) -> anyhow::Result<(f64, u64)> {
    let counter = if host_state {
        format!(
            "[stores.counts]\n[nodes.count]\nmodule = \"{}\"\nstate = {{ counts = \"rw\" }}\n",
            fx.tally.path.display()
        )
    } else {
        format!(
            "[nodes.count]\nmodule = \"{}\"\n[sinks.null]\nkind = \"null\"\n[[edges]]\nfrom = \"count\"\nto = \"null\"\n",
            fx.count.path.display()
        )
    };
    let manifest = format!(
        "name = \"wordcount-bench\"\n[sources.text]\nkind = \"file\"\npath = \"{}\"\n\
         [nodes.split]\nmodule = \"{}\"\n{counter}\
         [[edges]]\nfrom = \"text\"\nto = \"split\"\n\
         [[edges]]\nfrom = \"split\"\nto = \"count\"\nconnection = \"key-hash\"\n",
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
