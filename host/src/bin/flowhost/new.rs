//! `flowhost new <name>`: a node crate that builds for wasm32-wasip1 as it is, with a
//! native unit test and a graph that runs it.

use std::path::{Path, PathBuf};

use anyhow::Context;

const FILES: [(&str, &str); 4] = [
    (
        "Cargo.toml",
        include_str!("../../../templates/node/Cargo.toml.tmpl"),
    ),
    ("src/lib.rs", include_str!("../../../templates/node/lib.rs.tmpl")),
    (
        "graph.toml",
        include_str!("../../../templates/node/graph.toml.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../../../templates/node/gitignore.tmpl"),
    ),
];

/// The Rust guest SDK this binary carries (`host/build.rs`): path under its folder,
/// contents.
const SDK_FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// The SDK this binary carries, written once to a folder of its own version and contents
/// (`$FLOWHOST_SDK_DIR`, else `$XDG_DATA_HOME/flowhost/sdk`, else
/// `~/.local/share/flowhost/sdk`, then `<version>-<hash>/flowhost-sdk`), so a crate that
/// `flowhost new` makes builds without the source tree, and two binaries of different
/// SDKs never share one.
pub fn carried_sdk() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("FLOWHOST_SDK_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_DATA_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
                .map(|d| d.join("flowhost/sdk"))
        })
        .context("no folder for the guest SDK: set FLOWHOST_SDK_DIR or HOME")?;
    let folder = base.join(env!("FLOWHOST_SDK_ID"));
    if !folder.is_dir() {
        // Written next to it, then moved in whole: a folder there is complete.
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let written = base.join(format!(
            ".writing-{}-{}",
            env!("FLOWHOST_SDK_ID"),
            std::process::id()
        ));
        for (path, bytes) in SDK_FILES {
            let path = written.join(path);
            std::fs::create_dir_all(path.parent().unwrap_or(&written))?;
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        if std::fs::rename(&written, &folder).is_err() {
            // Another `flowhost new` wrote it first.
            let _ = std::fs::remove_dir_all(&written);
            anyhow::ensure!(
                folder.is_dir(),
                "could not write the guest SDK to {}",
                folder.display()
            );
        }
    }
    Ok(folder.join("flowhost-sdk"))
}

/// Writes a new node crate `name` in `dir/name`, depending on the SDK at `sdk` (the one
/// this binary carries if none); returns its folder. Refuses an invalid name or an
/// existing folder.
pub fn create(dir: &Path, name: &str, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    anyhow::ensure!(
        valid,
        "invalid node name `{name}`: use lower-case letters, digits, `-` and `_`, starting with a letter"
    );
    let root = dir.join(name);
    anyhow::ensure!(!root.exists(), "{} already exists", root.display());
    let sdk = match sdk {
        Some(sdk) => sdk.to_owned(),
        None => carried_sdk()?,
    };
    let sdk =
        std::fs::canonicalize(&sdk).with_context(|| format!("the guest SDK is not at {}", sdk.display()))?;
    let ident = name.replace('-', "_");
    let camel: String = ident
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| w[..1].to_uppercase() + &w[1..])
        .collect();
    for (path, template) in FILES {
        let text = template
            .replace("{{name}}", name)
            .replace("{{ident}}", &ident)
            .replace("{{type}}", &format!("{camel}Node"))
            .replace("{{sdk}}", &sdk.display().to_string());
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(&root))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(root)
}
