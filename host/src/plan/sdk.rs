//! The guest SDKs this binary carries (`host/build.rs` embeds them): the Rust crates
//! `flowhost-sdk` and `flowhost-macros` with the WIT world, and the Python package
//! `flowhost_node`. Written once to a folder of their version and contents, from which
//! `flowhost new` crates depend on them and Python nodes are built, so neither needs
//! this source tree.

use std::path::{Path, PathBuf};

/// Path under the SDK folder, contents.
const FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// The SDKs' folder: `$FLOWHOST_SDK_DIR`, else `$XDG_DATA_HOME/flowhost/sdk`, else
/// `~/.local/share/flowhost/sdk`, then `<version>-<hash>/` (two binaries of different
/// SDKs never share one), written if missing. It holds `flowhost-sdk/` (with `wit/`),
/// `flowhost-macros/` and `python/`.
pub fn carried() -> std::io::Result<PathBuf> {
    let base = std::env::var_os("FLOWHOST_SDK_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_DATA_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
                .map(|d| d.join("flowhost/sdk"))
        })
        .ok_or_else(|| std::io::Error::other("no folder for the guest SDK: set FLOWHOST_SDK_DIR or HOME"))?;
    let folder = base.join(env!("FLOWHOST_SDK_ID"));
    if folder.is_dir() {
        return Ok(folder);
    }
    // Written next to it, then moved in whole: a folder there is complete.
    let written = base.join(format!(
        ".writing-{}-{}",
        env!("FLOWHOST_SDK_ID"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        for (path, bytes) in FILES {
            let path = written.join(path);
            std::fs::create_dir_all(path.parent().unwrap_or(&written))?;
            std::fs::write(&path, bytes)?;
        }
        Ok(())
    };
    write()
        .map_err(|e| std::io::Error::other(format!("writing the guest SDK to {}: {e}", written.display())))?;
    if std::fs::rename(&written, &folder).is_err() {
        // Another process wrote it first.
        let _ = std::fs::remove_dir_all(&written);
        if !folder.is_dir() {
            return Err(std::io::Error::other(format!(
                "could not write the guest SDK to {}",
                folder.display()
            )));
        }
    }
    Ok(folder)
}
