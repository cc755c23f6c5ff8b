//! Building node crates for wasm32-wasip1 (like `spin up --build`): cargo decides what is
//! stale, and its JSON messages say where the module landed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::PlanError;

/// The target node crates are built for.
pub const TARGET: &str = "wasm32-wasip1";

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
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| failed(format!("running cargo (is it on PATH?): {e}")))?;
    if !output.status.success() {
        return Err(failed(format!(
            "cargo build --target {TARGET} failed for {} ({})",
            manifest.display(),
            output.status
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
