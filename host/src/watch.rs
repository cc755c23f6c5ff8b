//! `flowhost run --watch`: a node is hot-swapped when its module file changes, or, for a
//! node given as a crate, when its sources change (rebuilt first, like `spin watch`); a
//! changed manifest reconfigures existing nodes (config, limits, sandbox, module), and
//! one that changes the graph's shape (nodes, sources, sinks, edges, replicas, error
//! policies) is applied as `flowhost apply` applies it (`topology::apply`). The graph
//! never restarts.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::engine::NodeSetup;
use crate::manifest::{Graph, ModuleRef, NodeSpec};
use crate::plan::ModuleSource;
use crate::state::Stores;
use crate::topology::Status;
use crate::topology::swap::{Outcome, SwapError};

/// Quiet time after the last change before acting on it (editors and `cargo` write in bursts).
const SETTLE: Duration = Duration::from_millis(200);

/// A running watcher; dropping it stops it.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a changed path means.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Touched {
    Manifest,
    Node(String),
}

/// Why watching did not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A watched path cannot be resolved or watched.
    #[error("watching {}: {why}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The watcher (or its thread) cannot be started.
    #[error("starting the file watcher: {0}")]
    Start(String),
}

/// Starts watching `manifest` (the graph `graph` was loaded from) and its nodes' modules.
pub fn start(
    manifest: &Path,
    graph: &Graph,
    status: Arc<Status>,
    stores: Stores,
) -> Result<Watch, WatchError> {
    let stop = Arc::new(AtomicBool::new(false));
    let state = Watched {
        path: manifest.to_owned(),
        manifest: manifest.canonicalize().map_err(|e| WatchError::Path {
            path: manifest.to_owned(),
            why: e.to_string(),
        })?,
        specs: graph.nodes.iter().map(|n| (n.id.clone(), n.clone())).collect(),
        graph: graph.clone(),
        status,
        stores,
    };
    let (tx, events) = channel();
    let mut watcher = notify::recommended_watcher(tx).map_err(|e| WatchError::Start(e.to_string()))?;
    state.register(&mut watcher)?;
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || state.run(watcher, events, &stopping))
        .map_err(|e| WatchError::Start(e.to_string()))?;
    Ok(Watch {
        stop,
        thread: Some(thread),
    })
}

struct Watched {
    /// The manifest as the graph was loaded from it (its paths resolve the same way).
    path: PathBuf,
    /// The manifest, resolved (to recognise its events).
    manifest: PathBuf,
    graph: Graph,
    /// Each node as it runs now.
    specs: HashMap<String, NodeSpec>,
    status: Arc<Status>,
    stores: Stores,
}

impl Watched {
    /// Watches the folders of the manifest and module files (editors and `cp` replace
    /// files, which a watch on the file itself would lose) and crates' sources.
    fn register(&self, watcher: &mut RecommendedWatcher) -> Result<(), WatchError> {
        let mut dirs = BTreeSet::new();
        dirs.insert((parent(&self.manifest), RecursiveMode::NonRecursive));
        for spec in self.specs.values() {
            match &spec.module {
                ModuleRef::File(path) => dirs.insert((parent(path), RecursiveMode::NonRecursive)),
                ModuleRef::Crate(dir) => {
                    dirs.insert((dir.clone(), RecursiveMode::NonRecursive));
                    dirs.insert((dir.join("src"), RecursiveMode::Recursive))
                }
                // Its folder's `.py` files, as its build reads them.
                ModuleRef::Python(app) => dirs.insert((parent(app), RecursiveMode::Recursive)),
            };
        }
        for (dir, mode) in dirs {
            watcher.watch(&dir, mode).map_err(|e| WatchError::Path {
                path: dir.clone(),
                why: e.to_string(),
            })?;
        }
        let watched: Vec<&str> = self.specs.keys().map(String::as_str).collect();
        tracing::info!(
            "watching {} and the modules of {} for changes",
            self.manifest.display(),
            watched.join(", ")
        );
        Ok(())
    }

    /// What a changed `path` concerns, if anything.
    fn classify(&self, path: &Path) -> Option<Touched> {
        if same_file(path, &self.manifest) {
            return Some(Touched::Manifest);
        }
        self.specs.values().find_map(|spec| {
            let hit = match &spec.module {
                ModuleRef::File(module) => same_file(path, module),
                ModuleRef::Crate(dir) => {
                    let src = real(&dir.join("src"));
                    real(path).starts_with(src) || same_file(path, &dir.join("Cargo.toml"))
                }
                ModuleRef::Python(app) => {
                    path.extension().is_some_and(|e| e == "py") && real(path).starts_with(real(&parent(app)))
                }
            };
            hit.then(|| Touched::Node(spec.id.clone()))
        })
    }

    fn run(
        mut self,
        mut watcher: RecommendedWatcher,
        events: Receiver<notify::Result<notify::Event>>,
        stop: &AtomicBool,
    ) {
        let mut events = events;
        let mut changed = BTreeSet::new();
        // When the changes seen so far are acted on (other files' events do not delay it).
        let mut settled = None;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = settled.map_or(Duration::from_millis(100), |at: Instant| {
                at.saturating_duration_since(now)
            });
            match events.recv_timeout(wait) {
                Ok(Ok(event)) if !matches!(event.kind, EventKind::Access(_)) => {
                    let relevant: Vec<Touched> =
                        event.paths.iter().filter_map(|p| self.classify(p)).collect();
                    if !relevant.is_empty() {
                        changed.extend(relevant);
                        settled = Some(Instant::now() + SETTLE);
                    }
                }
                Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Err(e)) => tracing::warn!("file watcher: {e}"),
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if settled.is_some_and(|at| Instant::now() >= at) {
                settled = None;
                if self.apply(std::mem::take(&mut changed)) {
                    // A module moved: watch afresh.
                    let (tx, rx) = channel();
                    let fresh = notify::recommended_watcher(tx)
                        .map_err(|e| WatchError::Start(e.to_string()))
                        .and_then(|mut w| self.register(&mut w).map(|()| w));
                    match fresh {
                        Ok(w) => (watcher, events) = (w, rx),
                        Err(e) => tracing::warn!("file watcher: {e}"),
                    }
                }
            }
        }
        drop(watcher);
    }

    /// Acts on what changed; true if the set of watched paths changed.
    fn apply(&mut self, changed: BTreeSet<Touched>) -> bool {
        let mut reconfigured = BTreeSet::new();
        let mut moved = false;
        if changed.contains(&Touched::Manifest) {
            (reconfigured, moved) = self.reload(&changed);
        }
        for change in changed {
            let Touched::Node(id) = change else { continue };
            if reconfigured.contains(&id) {
                continue;
            }
            let (Some(spec), Some(versions)) = (self.specs.get(&id), self.status.versions(&id)) else {
                continue;
            };
            let loaded = ModuleSource::resolve(&spec.module, spec.sha256.as_deref())
                .map_err(SwapError::from)
                .and_then(|source| Ok(versions.engine().load(&source)?));
            if let Ok(module) = &loaded
                && module.hash == versions.current().hash()
            {
                tracing::debug!(node = %id, "its module was touched but is unchanged");
                continue;
            }
            tracing::info!(node = %id, "its module changed: swapping it in");
            let _ = versions.swap(|_| loaded, None);
        }
        moved
    }

    /// Reloads the manifest and reconfigures the nodes whose setup changed (with their
    /// module anew if it changed too); returns them, and whether a module moved.
    fn reload(&mut self, changed: &BTreeSet<Touched>) -> (BTreeSet<String>, bool) {
        let mut done = BTreeSet::new();
        let graph = match Graph::load(&self.path) {
            Ok(graph) => graph,
            Err(e) => {
                tracing::error!("the changed manifest is not applied:\n{e}");
                return (done, false);
            }
        };
        let mut moved = false;
        let reshaped = reshaped(&self.graph, &graph);
        if !reshaped.is_empty() {
            tracing::info!(
                "the manifest changes the graph ({}): applying it",
                reshaped.join("; ")
            );
            let record = match crate::topology::apply::plan_change(&self.status, graph.clone(), None) {
                Ok(plan) => self.status.applied.apply(plan),
                Err(why) => self
                    .status
                    .applied
                    .refusal(crate::clock::now_millis(), Vec::new(), why),
            };
            if record.outcome != Outcome::Done {
                return (done, false);
            }
            // Every node is as the manifest says now; its modules are the ones watched.
            self.specs = graph.nodes.iter().map(|n| (n.id.clone(), n.clone())).collect();
            done.extend(self.specs.keys().cloned());
            self.graph = graph;
            return (done, true);
        }
        for new in &graph.nodes {
            let (Some(old), Some(versions)) = (self.specs.get(&new.id), self.status.versions(&new.id)) else {
                continue;
            };
            let module_changed = old.module != new.module
                || old.sha256 != new.sha256
                || changed.contains(&Touched::Node(new.id.clone()));
            if !module_changed && !old.makes_other_instances(new) {
                continue;
            }
            let setup = NodeSetup::from_spec(new, &self.stores);
            tracing::info!(node = %new.id, "its manifest entry changed: reconfiguring it");
            let load = module_changed.then_some(|engine: &crate::engine::Engine| {
                Ok(engine.load(&ModuleSource::resolve(&new.module, new.sha256.as_deref())?)?)
            });
            if versions.reconfigure(setup, load).outcome == Outcome::Done {
                moved |= old.module != new.module;
                let mut applied = new.clone();
                // What is not applied live stays as it runs.
                applied.replicas = old.replicas;
                applied.on_error = old.on_error;
                applied.retry = old.retry;
                self.specs.insert(new.id.clone(), applied);
            }
            done.insert(new.id.clone());
        }
        self.graph = graph;
        (done, moved)
    }
}

/// The changes between `old` and `new` that change the graph's shape (applied as a
/// change of the graph, not by reconfiguring nodes).
fn reshaped(old: &Graph, new: &Graph) -> Vec<String> {
    let mut notes = Vec::new();
    let ids = |g: &Graph| -> BTreeSet<String> {
        let nodes = g.nodes.iter().map(|n| format!("node `{}`", n.id));
        let sources = g.sources.iter().map(|s| format!("source `{}`", s.id));
        let sinks = g.sinks.iter().map(|s| format!("sink `{}`", s.id));
        nodes.chain(sources).chain(sinks).collect()
    };
    let (before, after) = (ids(old), ids(new));
    notes.extend(after.difference(&before).map(|v| format!("{v} added")));
    notes.extend(before.difference(&after).map(|v| format!("{v} removed")));
    let edges = |g: &Graph| g.edges.iter().map(|e| format!("{e:?}")).collect::<BTreeSet<_>>();
    if before == after && edges(old) != edges(new) {
        notes.push("edges changed".to_owned());
    }
    for n in &new.nodes {
        let Some(o) = old.nodes.iter().find(|o| o.id == n.id) else {
            continue;
        };
        if o.replicas != n.replicas {
            notes.push(format!(
                "node `{}`: replicas {} -> {}",
                n.id, o.replicas, n.replicas
            ));
        }
        if o.on_error != n.on_error || o.retry != n.retry {
            notes.push(format!("node `{}`: on_error / retry changed", n.id));
        }
    }
    notes
}

fn parent(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned()
}

/// `path` with its folder resolved (the file itself may not exist right now, mid-replace).
fn real(path: &Path) -> PathBuf {
    match (parent(path).canonicalize(), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_owned(),
    }
}

/// Whether `a` and `b` name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || real(a) == real(b)
}
