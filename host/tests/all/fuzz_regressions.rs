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
fn module_crashes_stay_fixed() {
    for path in inputs("module") {
        let data = std::fs::read(&path).unwrap();
        flowhost::fuzzing::module(&data);
    }
}

#[test]
fn a_truncated_module_is_refused_with_an_error_at_every_length() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/passthrough");
    let wasm = std::fs::read(flowhost::plan::build_crate(&dir).unwrap()).unwrap();
    let engine = flowhost::engine::Engine::new(flowhost::engine::EngineConfig::default()).unwrap();
    let name = Path::new("cut.wasm");
    // 200 cuts spread over the file, the header's own bytes included.
    let step = (wasm.len() / 200).max(1);
    for len in (0..wasm.len()).step_by(step).chain(0..16) {
        // (Cut at 8 bytes it is an empty module: it loads, and does not fit the world.)
        let loaded = engine.load_bytes(&wasm[..len], name).and_then(|m| {
            let setup = flowhost::engine::NodeSetup::new("cut");
            flowhost::engine::NodeTemplate::new(&engine, m, setup).map(drop)
        });
        let err = loaded
            .err()
            .unwrap_or_else(|| panic!("a module cut at {len} bytes loaded"));
        assert!(err.to_string().starts_with("cut.wasm"), "{len}: {err}");
    }
    assert!(engine.load_bytes(&wasm, name).is_ok(), "the whole module loads");
}

#[test]
fn every_prefix_of_a_shipped_manifest_gets_an_answer() {
    let text = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs/orders.toml")).unwrap();
    for len in 0..text.len() {
        flowhost::fuzzing::manifest(&text[..len]);
    }
}
