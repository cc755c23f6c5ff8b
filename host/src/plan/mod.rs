//! The plan: a validated manifest with everything resolved that running it needs, so the
//! runtime never reads a manifest, builds a crate or makes up a name.
//!
//! `manifest` parses and validates, and reads no file but the manifest. [`Plan::resolve`]
//! then builds node crates, reads every module and checks its pinned SHA-256, decides
//! which vertices this process runs ([`Placement`]) and names everything the Kafka
//! transport uses ([`KafkaNames`]). The runtime takes a `Plan` (Spin's manifest → locked
//! app → loader is the model).

mod build;
mod kafka;
pub mod sdk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use build::{TARGET, build_crate, build_python, quiet_builds};
pub use kafka::{Input, KafkaNames};

use crate::manifest::{Graph, ModuleRef, Vertex};

/// Why a graph cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A node crate did not build.
    #[error("building the node crate in {}: {why}", dir.display())]
    Build {
        /// The crate.
        dir: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// A module file cannot be read.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// A module file is not the one the manifest pins.
    #[error(
        "{} does not match its pinned sha256: the manifest says {expected}, the file is {actual}; refusing to load it",
        path.display()
    )]
    Pin {
        /// The file.
        path: PathBuf,
        /// The manifest's hash.
        expected: String,
        /// The file's.
        actual: String,
    },
    /// A node's module, with the node named.
    #[error("node `{node}`: {error}")]
    Node {
        /// The node.
        node: String,
        /// What went wrong.
        error: Box<PlanError>,
    },
    /// A module file is not WebAssembly at all.
    #[error("{} is not a WebAssembly module or component (no `\\0asm` header)", path.display())]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// `--nodes` names no vertex of the graph.
    #[error("--nodes: `{name}` is not a source, node or sink of graph `{graph}`")]
    UnknownPlaced {
        /// The name given.
        name: String,
        /// The graph.
        graph: String,
    },
}

/// Checks, without building crates or reading whole files, that every node whose module
/// is a file names one that starts like WebAssembly: what `flowhost validate` adds to the
/// manifest's own checks. Every problem, each naming its node.
pub fn check_module_files(graph: &Graph) -> Vec<PlanError> {
    use std::io::Read;
    let header = |path: &Path| -> Result<(), PlanError> {
        let mut head = Vec::with_capacity(8);
        std::fs::File::open(path)
            .and_then(|f| f.take(8).read_to_end(&mut head))
            .map_err(|error| PlanError::Read {
                path: path.to_owned(),
                error,
            })?;
        if is_wasm(&head) {
            Ok(())
        } else {
            Err(PlanError::NotWasm {
                path: path.to_owned(),
            })
        }
    };
    graph
        .nodes
        .iter()
        .filter_map(|n| match &n.module {
            ModuleRef::File(path) => header(path).err().map(|e| PlanError::Node {
                node: n.id.clone(),
                error: Box::new(e),
            }),
            ModuleRef::Crate(_) | ModuleRef::Python(_) => None,
        })
        .collect()
}

/// Whether `bytes` starts like WebAssembly, a core module or a component (the `\0asm`
/// magic and a version).
pub fn is_wasm(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes.starts_with(b"\0asm")
}

/// A node's module, read: where from, its bytes and their SHA-256.
#[derive(Debug, Clone)]
pub struct ModuleSource {
    /// The file (for a crate, the `.wasm` its build produced).
    pub path: PathBuf,
    /// Its content.
    pub bytes: Arc<[u8]>,
    /// SHA-256 of `bytes`, hex.
    pub hash: String,
}

impl ModuleSource {
    /// Builds the crate if `module` is one, reads the file, and checks `pinned` (a
    /// SHA-256 in hex) if given.
    pub fn resolve(module: &ModuleRef, pinned: Option<&str>) -> Result<ModuleSource, PlanError> {
        let path = match module {
            ModuleRef::File(path) => path.clone(),
            ModuleRef::Crate(dir) => build_crate(dir)?,
            ModuleRef::Python(app) => build_python(app)?,
        };
        let source = ModuleSource::read(&path)?;
        if let Some(expected) = pinned
            && !source.hash.eq_ignore_ascii_case(expected)
        {
            return Err(PlanError::Pin {
                path,
                expected: expected.to_owned(),
                actual: source.hash,
            });
        }
        Ok(source)
    }

    /// Reads a module or component file.
    pub fn read(path: &Path) -> Result<ModuleSource, PlanError> {
        let bytes = std::fs::read(path).map_err(|error| PlanError::Read {
            path: path.to_owned(),
            error,
        })?;
        Ok(ModuleSource::from_bytes(bytes, path))
    }

    /// A module given as bytes (an upload); `path` names it.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>, path: &Path) -> ModuleSource {
        let bytes = bytes.into();
        ModuleSource {
            hash: hex(&Sha256::digest(&bytes).into()),
            path: path.to_owned(),
            bytes,
        }
    }
}

/// SHA-256 digests as the manifest and status write them.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which vertices run in this process (all, unless `--nodes` names some).
#[derive(Debug, Clone)]
pub struct Placement {
    sources: Vec<bool>,
    nodes: Vec<bool>,
    sinks: Vec<bool>,
}

impl Placement {
    /// Every vertex of `graph`, or only those `names` names.
    pub fn new(graph: &Graph, names: Option<&[String]>) -> Result<Placement, PlanError> {
        let Some(names) = names else {
            return Ok(Placement {
                sources: vec![true; graph.sources.len()],
                nodes: vec![true; graph.nodes.len()],
                sinks: vec![true; graph.sinks.len()],
            });
        };
        for n in names {
            let known = graph.sources.iter().any(|s| &s.id == n)
                || graph.nodes.iter().any(|s| &s.id == n)
                || graph.sinks.iter().any(|s| &s.id == n);
            if !known {
                return Err(PlanError::UnknownPlaced {
                    name: n.clone(),
                    graph: graph.name.clone(),
                });
            }
        }
        let here = |id: &String| names.contains(id);
        Ok(Placement {
            sources: graph.sources.iter().map(|s| here(&s.id)).collect(),
            nodes: graph.nodes.iter().map(|n| here(&n.id)).collect(),
            sinks: graph.sinks.iter().map(|s| here(&s.id)).collect(),
        })
    }

    /// Whether `v` runs here.
    pub fn runs(&self, v: Vertex) -> bool {
        match v {
            Vertex::Source(i) => self.sources[i],
            Vertex::Node(i) => self.nodes[i],
            Vertex::Sink(k) => self.sinks[k],
        }
    }

    /// The ids of the vertices that run here; `None` if every one does.
    pub fn names(&self, graph: &Graph) -> Option<Vec<String>> {
        if self.whole() {
            return None;
        }
        Some(
            graph
                .vertices()
                .filter(|&v| self.runs(v))
                .map(|v| graph.id(v).to_owned())
                .collect(),
        )
    }

    /// Whether every vertex runs here.
    pub fn whole(&self) -> bool {
        [&self.sources, &self.nodes, &self.sinks]
            .iter()
            .all(|v| v.iter().all(|&b| b))
    }
}

/// A graph ready to run: the manifest's graph, every node's module read, the vertices
/// this process runs, and the Kafka names.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The validated manifest.
    pub graph: Graph,
    /// Per node (in `graph.nodes` order), its module.
    pub modules: Vec<ModuleSource>,
    /// The vertices this process runs.
    pub placement: Placement,
    /// Topics, groups, transactional ids of the Kafka transport.
    pub kafka: KafkaNames,
}

impl Plan {
    /// Resolves `graph` to run the vertices `placement` names (all if `None`).
    pub fn resolve(graph: Graph, placement: Option<&[String]>) -> Result<Plan, PlanError> {
        let placement = Placement::new(&graph, placement)?;
        let mut read: HashMap<&ModuleRef, ModuleSource> = HashMap::new();
        let mut modules = Vec::with_capacity(graph.nodes.len());
        for n in &graph.nodes {
            let pinned = n.sha256.as_deref();
            let module = match read.get(&n.module) {
                Some(m) if pinned.is_none_or(|h| h.eq_ignore_ascii_case(&m.hash)) => m.clone(),
                _ => {
                    let m = ModuleSource::resolve(&n.module, pinned).map_err(|e| PlanError::Node {
                        node: n.id.clone(),
                        error: Box::new(e),
                    })?;
                    read.entry(&n.module).or_insert(m).clone()
                }
            };
            modules.push(module);
        }
        Ok(Plan::with_modules(graph, modules, placement))
    }

    /// `graph` with its nodes' modules as given (in `graph.nodes` order), run as
    /// `placement` says.
    pub fn with_modules(graph: Graph, modules: Vec<ModuleSource>, placement: Placement) -> Plan {
        let kafka = KafkaNames::new(&graph);
        Plan {
            graph,
            modules,
            placement,
            kafka,
        }
    }
}
