//! Carries the guest SDKs inside the binary — the Rust crates `flowhost-sdk` and
//! `flowhost-macros` (sources and WIT) and the Python package `flowhost_node` — so
//! `flowhost new` makes a crate that builds, and a Python node builds, on a machine
//! without this source tree (see `src/plan/sdk.rs`). Their `Cargo.toml`s are
//! made standalone here: the workspace's package fields written out, the macros crate
//! a path dependency next to the SDK, the SDK's own test dependencies left out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The SDKs: folder in the repository, name of the folder written, what of it is carried.
const CARRIED: [(&str, &str, &[&str]); 3] = [
    (
        "guest-sdk",
        "flowhost-sdk",
        &["Cargo.toml", "FRAMING.md", "src", "wit"],
    ),
    ("macros", "flowhost-macros", &["Cargo.toml", "src"]),
    ("guest-sdk/python", "python", &["pyproject.toml", "flowhost_node"]),
];

fn main() {
    let repo = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let root = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    println!("cargo:rerun-if-changed={}", repo.join("Cargo.toml").display());
    let package = workspace_package(&root);
    let version = package
        .iter()
        .find(|(k, _)| k == "version")
        .map(|(_, v)| v.clone())
        .expect("[workspace.package] has a version");

    let mut files = Vec::new();
    for (folder, name, carried) in CARRIED {
        let from = repo.join(folder);
        for carried in carried {
            let path = from.join(carried);
            println!("cargo:rerun-if-changed={}", path.display());
            walk(&path, &mut |file| {
                let rel = file.strip_prefix(&from).unwrap();
                files.push((format!("{name}/{}", rel.display()), file.to_owned()));
            });
        }
    }
    files.sort();

    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut code = String::from("&[\n");
    for (rel, file) in &files {
        let mut bytes = std::fs::read(file).unwrap();
        if rel.ends_with("/Cargo.toml") {
            bytes = standalone(&String::from_utf8(bytes).unwrap(), &package, &version).into_bytes();
        }
        for b in rel.bytes().chain(bytes.iter().copied()) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        let written = out.join("sdk").join(rel);
        std::fs::create_dir_all(written.parent().unwrap()).unwrap();
        std::fs::write(&written, &bytes).unwrap();
        writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?})),",
            written.display().to_string()
        )
        .unwrap();
    }
    code.push_str("]\n");
    std::fs::write(out.join("sdk_files.rs"), code).unwrap();
    let version = version.trim_matches('"');
    println!("cargo:rustc-env=FLOWHOST_SDK_ID={version}-{hash:016x}");
}

/// Every file under `path` (or `path` itself), if it exists.
fn walk(path: &Path, found: &mut dyn FnMut(&Path)) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            walk(&entry.unwrap().path(), found);
        }
    } else if path.is_file() && path.extension().is_none_or(|e| e != "pyc") {
        found(path);
    }
}

/// The `key = value` lines of `[workspace.package]` in the workspace's manifest.
fn workspace_package(root: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut fields = Vec::new();
    for line in root.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[workspace.package]";
        } else if let (true, Some((k, v))) = (inside, line.split_once('=')) {
            fields.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    fields
}

/// A crate manifest of the workspace as one standing on its own next to the other SDK
/// crate.
fn standalone(manifest: &str, package: &[(String, String)], version: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            skipping = line == "[dev-dependencies]";
        }
        if skipping {
            continue;
        }
        let field = line.strip_suffix(".workspace = true");
        match field.and_then(|k| package.iter().find(|(key, _)| key == k)) {
            Some((k, v)) => writeln!(out, "{k} = {v}").unwrap(),
            None if line.starts_with("flowhost-macros = { workspace = true") => writeln!(
                out,
                "{}",
                line.replace(
                    "workspace = true",
                    &format!("path = \"../flowhost-macros\", version = {version}")
                )
            )
            .unwrap(),
            None => writeln!(out, "{line}").unwrap(),
        }
    }
    out
}
