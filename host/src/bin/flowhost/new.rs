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
        None => flowhost::plan::sdk::carried()?.join("flowhost-sdk"),
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
