//! Building node crates for wasm32-wasip1 (like `spin up --build`): cargo decides what is
//! stale, and its JSON messages say where the module landed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::PlanError;

/// The target node crates are built for.
pub const TARGET: &str = "wasm32-wasip1";

/// Whether builds keep cargo's output to themselves (`flowhost -q`): shown only when one
/// fails, as part of its error.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Builds from now on keep cargo's output to themselves (`true`) or show it as it comes.
pub fn quiet_builds(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// Builds the crate in `dir` (release, wasm32-wasip1) and returns its `.wasm`.
pub fn build_crate(dir: &Path) -> Result<PathBuf, PlanError> {
    let failed = |why: String| PlanError::Build {
        dir: dir.to_owned(),
        why,
    };
    let manifest = dir.join("Cargo.toml");
    let manifest = manifest
        .canonicalize()
        .map_err(|e| failed(format!("no crate there ({e})")))?;
    tracing::info!(krate = %dir.display(), "building node crate for {TARGET}");
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(match QUIET.load(std::sync::atomic::Ordering::Relaxed) {
            true => Stdio::piped(),
            false => Stdio::inherit(),
        })
        .output()
        .map_err(|e| failed(format!("running cargo (is it on PATH?): {e}")))?;
    if !output.status.success() {
        // What cargo said, if it was kept back: its last lines.
        let said = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = said.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        return Err(failed(format!(
            "cargo build --target {TARGET} failed for {} ({}){}{tail}",
            manifest.display(),
            output.status,
            if tail.is_empty() { "" } else { ":\n" }
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let module = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter(|msg| msg["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .flat_map(|msg| {
            msg["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .find(|f| f.extension().is_some_and(|e| e == "wasm"));
    module.ok_or_else(|| {
        failed(format!(
            "{} built no .wasm: is its crate-type \"cdylib\"?",
            manifest.display()
        ))
    })
}
