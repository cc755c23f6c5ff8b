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

/// Runs a build tool (`name`, for the error when it is not there), its stderr shown as it
/// comes or, with [`quiet_builds`], kept back and shown only if it fails; its output, or
/// `failed` and what it said.
fn run_tool(tool: &mut Command, name: &str, failed: &str) -> Result<std::process::Output, String> {
    let quiet = QUIET.load(std::sync::atomic::Ordering::Relaxed);
    let output = tool
        .stdin(Stdio::null())
        .stderr(if quiet { Stdio::piped() } else { Stdio::inherit() })
        .output()
        .map_err(|e| format!("running {name} (is it on PATH?): {e}"))?;
    if output.status.success() {
        return Ok(output);
    }
    // What it said, if it was kept back: its last lines.
    let said = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = said.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    Err(format!(
        "{failed} ({}){}{tail}",
        output.status,
        if tail.is_empty() { "" } else { ":\n" }
    ))
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
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .current_dir(dir);
    let what = format!("cargo build --target {TARGET} failed for {}", manifest.display());
    let output = run_tool(&mut cargo, "cargo", &what).map_err(failed)?;
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

/// Builds Python node `app` (its app module, a `.py` file) into a component with
/// componentize-py (`$FLOWHOST_COMPONENTIZE_PY`, else `componentize-py` on PATH), against
/// the WIT world and the `flowhost_node` package this binary carries; returns it. The
/// component lands in `.flowhost/python/` beside the app, rebuilt only when a `.py` file
/// of the app's folder (or the SDK) changed since.
pub fn build_python(app: &Path) -> Result<PathBuf, PlanError> {
    let failed = |why: String| PlanError::Build {
        dir: app.to_owned(),
        why,
    };
    let app = app
        .canonicalize()
        .map_err(|e| failed(format!("no Python app module there ({e})")))?;
    let dir = app.parent().unwrap_or(Path::new("/")).to_owned();
    let module = app.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    if !module.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        || !module.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(failed(format!(
            "`{module}` is not a Python module name (letters, digits and `_`)"
        )));
    }
    let sdk = super::sdk::carried().map_err(|e| failed(e.to_string()))?;
    let inputs = python_inputs(&dir).map_err(|e| failed(format!("reading {}: {e}", dir.display())))?;
    let out_dir = dir.join(".flowhost/python");
    let out = out_dir.join(format!("{module}.wasm"));
    let stamp = out_dir.join(format!("{module}.inputs"));
    let fresh = std::fs::read_to_string(&stamp).is_ok_and(|s| s == inputs) && out.is_file();
    if fresh {
        return Ok(out);
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| failed(format!("creating {}: {e}", out_dir.display())))?;
    tracing::info!(app = %app.display(), "building Python node with componentize-py");
    let part = out_dir.join(format!("{module}.wasm.part"));
    let mut tool = Command::new(
        std::env::var_os("FLOWHOST_COMPONENTIZE_PY").unwrap_or_else(|| "componentize-py".into()),
    );
    tool.arg("-d")
        .arg(sdk.join("flowhost-sdk/wit"))
        .args(["-w", "node", "componentize", module, "-p"])
        .arg(&dir)
        .arg("-p")
        .arg(sdk.join("python"))
        .arg("-o")
        .arg(&part)
        .current_dir(&dir);
    run_tool(
        &mut tool,
        "componentize-py",
        &format!("componentize-py failed for {}", app.display()),
    )
    .map_err(failed)?;
    std::fs::rename(&part, &out)
        .and_then(|()| std::fs::write(&stamp, &inputs))
        .map_err(|e| failed(format!("writing {}: {e}", out.display())))?;
    Ok(out)
}

/// What a Python node's component is built from, as one digest: the SDK's version and
/// contents, and every `.py` file under the app's folder (its own build output and
/// hidden folders aside).
fn python_inputs(dir: &Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if path.is_dir() && !name.starts_with('.') && name != "__pycache__" {
                walk(&path, files)?;
            } else if path.extension().is_some_and(|e| e == "py") {
                files.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let mut digest = sha2::Sha256::new();
    digest.update(env!("FLOWHOST_SDK_ID"));
    for file in files {
        digest.update(
            file.strip_prefix(dir)
                .unwrap_or(&file)
                .to_string_lossy()
                .as_bytes(),
        );
        digest.update([0]);
        digest.update(std::fs::read(&file)?);
        digest.update([0]);
    }
    Ok(format!("{:x}", digest.finalize()))
}
