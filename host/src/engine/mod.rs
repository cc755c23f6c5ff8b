//! Running wasm: one wasmtime [`Engine`] per process, modules componentized and compiled
//! once (cached by content hash), instances pre-linked ([`InstancePre`]) and drawn from
//! the pooling allocator, each call bounded by an epoch deadline and a memory cap.

mod cache;
mod componentize;
mod deadline;
mod error;
mod instance;
mod stdio;
mod stores;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::default_dir as default_cache_dir;
pub use componentize::{componentize, is_component};
pub use error::EngineError;
pub(crate) use instance::HostState;
pub use instance::{CallError, GUEST_LOG_LINES_PER_SECOND, NodeInstance, NodeSetup, NodeTemplate};

use crate::plan::{ModuleSource, hex};

/// Host-side bindings of the WIT world in `guest-sdk/wit`.
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "node",
        path: "../guest-sdk/wit",
    });
}

/// How often the epoch advances; per-call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How to set up the engine: the size of its instance pool, and its compile cache.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest `memory_mb` of any node.
    pub max_memory_mb: u64,
    /// Most instances alive at once (replicas, plus room for replacing trapped ones).
    pub max_instances: u32,
    /// Where compiled modules are cached across runs (`None`: in memory only).
    pub cache_dir: Option<PathBuf>,
    /// Meter fuel (needed by any node with a `fuel` limit; costs every call some speed).
    pub fuel: bool,
}

impl EngineConfig {
    /// The engine `graph` needs: a pool with room for every replica, fuel if any node meters it.
    pub fn for_graph(graph: &crate::manifest::Graph) -> Self {
        let replicas: u32 = graph.nodes.iter().map(|n| n.replicas).sum();
        EngineConfig {
            max_memory_mb: graph.nodes.iter().map(|n| n.memory_mb).max().unwrap_or(64),
            // Room to replace every instance once without waiting for the old one to drop.
            max_instances: replicas * 2 + 8,
            cache_dir: default_cache_dir(),
            fuel: graph.nodes.iter().any(|n| n.fuel.is_some()),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_memory_mb: 1024,
            max_instances: 64,
            cache_dir: None,
            fuel: false,
        }
    }
}

/// A compiled node module, identified by the hash of the bytes it was loaded from.
#[derive(Clone)]
pub struct LoadedModule {
    /// The compiled component.
    pub component: Component,
    /// SHA-256 of the module file, hex.
    pub hash: String,
    /// Where it came from.
    pub path: PathBuf,
}

struct Inner {
    engine: wasmtime::Engine,
    linker: Linker<instance::HostState>,
    cache: Mutex<HashMap<[u8; 32], Component>>,
    disk: Option<cache::DiskCache>,
    fuel: bool,
    cut: Arc<AtomicBool>,
}

/// At most this much of a linear memory stays resident when its slot is reused, where
/// PAGEMAP_SCAN finds its dirty pages (without it this many bytes would be `memset` per
/// reuse, dearer than the `madvise`, so none is kept).
const KEEP_RESIDENT: usize = 16 << 20;

/// The process's wasm engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Creates the engine and starts its epoch ticker (which ends when the engine is dropped).
    pub fn new(setup: EngineConfig) -> Result<Engine, EngineError> {
        let setup_error = |e: wasmtime::Error| EngineError::Setup(format!("{e:#}"));
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(setup.fuel);
        // A trap is reported by its kind and the guest's panic message; capturing a wasm
        // backtrace on every trap made poison messages several times dearer.
        config.wasm_backtrace_max_frames(None);
        // No async components here; wasmtime's async bookkeeping costs ~17% per host call.
        config.concurrency_support(false);
        let mut pool = PoolingAllocationConfig::default();
        let n = setup.max_instances.max(8);
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size((setup.max_memory_mb as usize) << 20);
        // An instance replaced after a trap reuses its slot. With PAGEMAP_SCAN (Linux
        // 6.7+) only the pages it dirtied are reset, by `memset`, and they stay mapped:
        // no `madvise` (a TLB shootdown on every core) and no page faults for the next
        // instance. 1% panicking messages ran at 0.11x of none before, 0.2x after.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT / 16);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = match wasmtime::Engine::new(&config) {
            Ok(engine) => engine,
            Err(e) => {
                // Some machines restrict virtual memory; the on-demand allocator still works.
                tracing::warn!("pooling allocator unavailable ({e}); using on-demand allocation");
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                wasmtime::Engine::new(&config).map_err(setup_error)?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(setup_error)?;
        deadline::bound_sleeps(&mut linker).map_err(setup_error)?;
        bindings::Node::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(setup_error)?;
        let disk = setup.cache_dir.map(|dir| cache::DiskCache::new(dir, &engine));
        let inner = Arc::new(Inner {
            engine,
            linker,
            cache: Mutex::default(),
            disk,
            fuel: setup.fuel,
            cut: Arc::default(),
        });
        spawn_ticker(Arc::downgrade(&inner))?;
        Ok(Engine { inner })
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    /// The flag that, raised, cuts every call into this engine's instances short (and
    /// every later one): for a graph that must stop now
    /// ([`crate::shutdown::Shutdown::raise_on_abort`]).
    pub fn cut_flag(&self) -> Arc<AtomicBool> {
        self.inner.cut.clone()
    }

    /// Whether calls are metered with fuel.
    pub fn meters_fuel(&self) -> bool {
        self.inner.fuel
    }

    /// Loads a node's module (read by the plan): componentizes and compiles it, once per
    /// content hash.
    pub fn load(&self, source: &ModuleSource) -> Result<LoadedModule, EngineError> {
        self.load_bytes(&source.bytes, &source.path)
    }

    /// Loads a module or component file.
    pub fn load_file(&self, path: &Path) -> Result<LoadedModule, EngineError> {
        let bytes = std::fs::read(path).map_err(|error| EngineError::Read {
            path: path.to_owned(),
            error,
        })?;
        self.load_bytes(&bytes, path)
    }

    /// Loads a module or component from memory; `path` names it in errors and status.
    /// Whatever the bytes are — truncated, hostile, a panic deep inside the component
    /// tooling — the answer is an error naming `path`, never a panic.
    pub fn load_bytes(&self, bytes: &[u8], path: &Path) -> Result<LoadedModule, EngineError> {
        let (component, digest) = self.compile(bytes, path)?;
        let hash = hex(&digest);
        Ok(LoadedModule {
            component,
            hash,
            path: path.to_owned(),
        })
    }

    /// Componentizes and compiles `bytes`, or returns the component cached in memory or on disk.
    fn compile(&self, bytes: &[u8], path: &Path) -> Result<(Component, [u8; 32]), EngineError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let cache = || self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache().get(&digest) {
            return Ok((c.clone(), digest));
        }
        let disk = self.inner.disk.as_ref();
        let component = match disk.and_then(|d| d.load(&self.inner.engine, &digest)) {
            Some(component) => component,
            None => {
                let component = guarded(path, || {
                    let component_bytes = componentize(bytes, path)?;
                    Component::new(&self.inner.engine, &component_bytes)
                        .map_err(|e| EngineError::module(path, "compiling the component", e))
                })?;
                if let Some(d) = disk {
                    d.store(&digest, &component);
                }
                component
            }
        };
        cache().insert(digest, component.clone());
        Ok((component, digest))
    }

    pub(crate) fn linker(&self) -> &Linker<instance::HostState> {
        &self.inner.linker
    }
}

/// Runs `load`, turning a panic inside the component tooling (a malformed module has
/// reached one in `wit-component` before) into an error naming `path`.
fn guarded<T>(path: &Path, load: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(EngineError::module(
            path,
            "reading the module",
            format_args!("malformed ({why})"),
        ))
    })
}

fn spawn_ticker(inner: Weak<Inner>) -> Result<(), EngineError> {
    std::thread::Builder::new()
        .name("flowhost-epoch".into())
        .spawn(move || {
            while let Some(inner) = inner.upgrade() {
                inner.engine.increment_epoch();
                drop(inner);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(|e| EngineError::Setup(format!("starting the epoch ticker: {e}")))?;
    Ok(())
}
