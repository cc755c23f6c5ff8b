//! Compiled components on disk, so a restart skips compilation (~40 ms a module).
//!
//! Deserialising a compiled component is `unsafe` (it is machine code), so only files
//! this host wrote are loaded: they live in flowhost's own cache folder, are written
//! atomically (temp file + rename), and their names carry the module's SHA-256 and the
//! engine's compatibility hash (wasmtime version and configuration).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;

/// The on-disk cache of one engine.
pub struct DiskCache {
    dir: PathBuf,
    engine_tag: String,
}

impl DiskCache {
    /// A cache in `dir` for components compiled by `engine`.
    pub fn new(dir: PathBuf, engine: &wasmtime::Engine) -> Self {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        DiskCache {
            dir,
            engine_tag: format!("{:016x}", h.finish()),
        }
    }

    fn path(&self, digest: &[u8; 32]) -> PathBuf {
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}-{}.cwasm", self.engine_tag))
    }

    /// The cached component for `digest`, if this host compiled it before.
    pub fn load(&self, engine: &wasmtime::Engine, digest: &[u8; 32]) -> Option<Component> {
        let path = self.path(digest);
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file is in flowhost's cache folder, written by `store` below for this
        // exact engine configuration (the name says so); wasmtime still checks its header.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring an unusable cache entry: {e}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Saves `component` under `digest`; a failure only costs a later recompile.
    pub fn store(&self, digest: &[u8; 32], component: &Component) {
        let path = self.path(digest);
        let result = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|bytes| {
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::create_dir_all(&self.dir)
                    .and_then(|()| std::fs::write(&tmp, bytes))
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), "could not cache a compiled module: {e}");
        }
    }
}

/// Where `flowhost` caches compiled modules: `$FLOWHOST_CACHE_DIR` (`off` disables it),
/// else `$XDG_CACHE_HOME/flowhost`, else `~/.cache/flowhost`.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os("FLOWHOST_CACHE_DIR") {
        Some(dir) if dir == "off" || dir.is_empty() => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|d| d.join("flowhost")),
    }
}
