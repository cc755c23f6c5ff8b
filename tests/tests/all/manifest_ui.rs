//! Manifest errors and warnings, locked in: each `tests/ui/*.toml` next to the exact
//! `*.err` a user sees. `BLESS=1 cargo test` rewrites the `.err` files.

use std::path::Path;

use flowhost::manifest::Graph;

#[test]
fn manifest_errors_match_their_snapshots() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).expect("tests/ exists");
    let mut cases: Vec<_> = std::fs::read_dir("ui")
        .expect("tests/ui exists")
        .map(|e| e.expect("a dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 50, "the ui cases went missing");
    let mut failures = Vec::new();
    for case in cases {
        let actual = match Graph::load(&case) {
            Ok(graph) => {
                let warnings: String = graph.warning_lines().iter().map(|w| format!("{w}\n")).collect();
                warnings + "(valid)\n"
            }
            Err(e) => format!("{e}\n"),
        };
        let snapshot = case.with_extension("err");
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&snapshot, &actual).expect("writing a snapshot");
            continue;
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
