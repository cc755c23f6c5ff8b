//! Replays every input the fuzzers (`scripts/fuzz`) ever crashed on, plus the shipped
//! manifests cut at every length: each must be handled without a panic.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn manifest_crashes_stay_fixed() {
    for path in inputs("manifest") {
        let data = std::fs::read(&path).unwrap();
        flowhost::fuzzing::manifest(&data);
    }
}

#[test]
fn batch_crashes_stay_fixed() {
    for path in inputs("batch") {
        let data = std::fs::read(&path).unwrap();
        flowhost::fuzzing::batch(&data);
    }
}

#[test]
fn every_prefix_of_a_shipped_manifest_gets_an_answer() {
    let text = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs/orders.toml")).unwrap();
    for len in 0..text.len() {
        flowhost::fuzzing::manifest(&text[..len]);
    }
}
