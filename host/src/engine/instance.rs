//! One node instance: a `Store` with its limits and WASI context, and the typed exports.
//! A trapped instance cannot be re-entered, so [`NodeInstance::reset`] replaces it from
//! the template; host-side state is untouched by that.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flowhost_sdk::{ErrorKind, NodeError};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::flowhost::node::{call, log, time, types};
use super::bindings::{Node, NodePre};
use super::stdio::GuestOutput;
use super::{Engine, EngineError, LoadedModule};
use crate::manifest::{NodeSpec, Sandbox};
use crate::state::{Grant, Stores, UndoLog};
use crate::throttle::Throttle;

/// Log lines (`log`, stdout, stderr) a node may write per second, all replicas together;
/// the rest are dropped and counted.
pub const GUEST_LOG_LINES_PER_SECOND: u32 = 200;

/// What a store holds for its instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    pub(crate) node: Arc<str>,
    /// The stores this node was granted; a state handle is an index here.
    pub(crate) grants: Arc<[Grant]>,
    /// How to take back the current call's state writes if it fails.
    pub(crate) undo: UndoLog,
    /// What the guest said when it panicked in the current call (the SDK's panic hook
    /// logs `panicked at …` just before the trap), to name the cause of the trap.
    panic: Option<String>,
    /// When the current call must have ended (a sleeping guest wakes by then).
    pub(super) deadline: Instant,
    /// How long the guest asked to sleep when that would have outlasted the deadline.
    pub(super) overslept: Option<Duration>,
    /// The node's budget of log lines (its logs and prints, all replicas together).
    logs: Arc<Throttle>,
    /// The engine's cut flag ([`super::Engine::cut_flag`]), and whether it ended this call.
    cut: Arc<AtomicBool>,
    was_cut: bool,
    /// The node's watermark for the current call (`time.watermark`).
    pub(crate) watermark: Option<i64>,
    /// The endpoints it may call, and the client that calls them (made on first use).
    calls: Arc<[(String, String)]>,
    agent: Option<ureq::Agent>,
}

/// What the host saw of a call that trapped, to say why.
struct Notes {
    panic: Option<String>,
    overslept: Option<Duration>,
    cut: bool,
}

impl HostState {
    fn take_notes(&mut self) -> Notes {
        Notes {
            panic: self.panic.take(),
            overslept: self.overslept.take(),
            cut: std::mem::take(&mut self.was_cut),
        }
    }

    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl time::Host for HostState {
    fn watermark(&mut self) -> Option<i64> {
        self.watermark
    }
}

impl call::Host for HostState {
    fn post(
        &mut self,
        endpoint: String,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<call::Response, types::NodeError> {
        let fail = |kind, message: String| types::NodeError { kind, message };
        let Some((_, url)) = self.calls.iter().find(|(name, _)| *name == endpoint) else {
            return Err(fail(
                types::ErrorKind::Fatal,
                format!(
                    "endpoint `{endpoint}` is not granted to node `{}` (add it to `calls`)",
                    self.node
                ),
            ));
        };
        // Within the call's deadline: what is left of it bounds the whole request.
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(
                types::ErrorKind::Retryable,
                format!("calling `{endpoint}`: no time left in this call"),
            ));
        }
        let agent = self.agent.get_or_insert_with(|| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into()
        });
        let mut request = agent
            .post(url.as_str())
            .config()
            .timeout_global(Some(left))
            .build();
        for (k, v) in &headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let mut answer = request.send(&body[..]).map_err(|e| {
            fail(
                types::ErrorKind::Retryable,
                format!("calling `{endpoint}` ({url}): {e}"),
            )
        })?;
        let status = answer.status().as_u16();
        let content_type = answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = answer
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| {
                fail(
                    types::ErrorKind::Retryable,
                    format!("calling `{endpoint}` ({url}): reading the answer: {e}"),
                )
            })?;
        Ok(call::Response {
            status,
            content_type,
            body,
        })
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let node = &*self.node;
        if matches!(level, log::Level::Error) && message.starts_with("panicked") && self.panic.is_none() {
            // Reported with the trap (and in the dead letter), not logged on its own.
            tracing::debug!(target: "flowhost::guest", node, "{message}");
            self.panic = Some(message.chars().take(1024).collect());
            return;
        }
        let Some(dropped) = self.logs.admit() else { return };
        let note = crate::throttle::dropped_note(dropped);
        match level {
            log::Level::Trace => tracing::trace!(target: "flowhost::guest", node, "{message}{note}"),
            log::Level::Debug => tracing::debug!(target: "flowhost::guest", node, "{message}{note}"),
            log::Level::Info => tracing::info!(target: "flowhost::guest", node, "{message}{note}"),
            log::Level::Warn => tracing::warn!(target: "flowhost::guest", node, "{message}{note}"),
            log::Level::Error => tracing::error!(target: "flowhost::guest", node, "{message}{note}"),
        }
    }
}

/// Why a call into a node did not return output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The node returned an error for the whole call.
    Node(NodeError),
    /// The call was cut short because the graph must stop now; the instance must be
    /// reset before another call, and the input was not processed.
    Cut,
    /// The instance trapped (panic, timeout, memory limit, bad code); it must be reset.
    Trap {
        /// What happened, for people.
        reason: String,
        /// The call ran into its time or fuel limit: running it again costs that much again.
        costly: bool,
        /// The input item the guest said it trapped on (its panic message begins
        /// `panicked on input <index>`, see FRAMING.md), if it said so.
        culprit: Option<u32>,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Node(e) => write!(f, "{e}"),
            CallError::Trap { reason, .. } => write!(f, "trap: {reason}"),
            CallError::Cut => write!(f, "cut short: the graph is stopping"),
        }
    }
}

/// What a node's instances are made with, besides the module.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// The node's id.
    pub name: String,
    /// Its config, as JSON.
    pub config_json: String,
    /// Connected input ports.
    pub inputs: Vec<String>,
    /// Connected output ports.
    pub outputs: Vec<String>,
    /// Longest a call may run.
    pub timeout: Duration,
    /// Linear-memory cap in MiB.
    pub memory_mb: u64,
    /// Stores it may use.
    pub grants: Vec<Grant>,
    /// How many replicas it has.
    pub replicas: u32,
    /// Fuel per call, if metered.
    pub fuel: Option<u64>,
    /// Host environment and directories it may read.
    pub sandbox: Sandbox,
}

impl NodeSetup {
    /// A node with ports `in` → `out`, no config, no grants, 5 s and 128 MiB.
    pub fn new(name: &str) -> Self {
        NodeSetup {
            name: name.to_owned(),
            config_json: "{}".to_owned(),
            inputs: vec![crate::DEFAULT_INPUT.to_owned()],
            outputs: vec![crate::DEFAULT_OUTPUT.to_owned()],
            timeout: Duration::from_secs(5),
            memory_mb: 128,
            grants: Vec::new(),
            replicas: 1,
            fuel: None,
            sandbox: Sandbox::default(),
        }
    }

    /// The setup of a manifest node, its grants resolved against `stores`.
    pub fn from_spec(spec: &NodeSpec, stores: &Stores) -> Self {
        NodeSetup {
            name: spec.id.clone(),
            config_json: spec.config_json.clone(),
            inputs: spec.inputs.clone(),
            outputs: spec.outputs.clone(),
            timeout: spec.timeout,
            memory_mb: spec.memory_mb,
            grants: stores.grants(&spec.state),
            replicas: spec.replicas,
            fuel: spec.fuel,
            sandbox: spec.sandbox.clone(),
        }
    }
}

/// Everything needed to (re)create instances of one node: pre-linked and type-checked.
pub struct NodeTemplate {
    engine: Engine,
    pre: NodePre<HostState>,
    info: types::NodeInfo,
    module: LoadedModule,
    timeout: Duration,
    memory_bytes: usize,
    grants: Arc<[Grant]>,
    fuel: Option<u64>,
    env: Vec<(String, String)>,
    read_dirs: Vec<(String, PathBuf)>,
    calls: Arc<[(String, String)]>,
    logs: Arc<Throttle>,
}

impl NodeTemplate {
    /// Links `module` against the host and checks it implements the `flowhost:node` world.
    pub fn new(
        engine: &Engine,
        module: LoadedModule,
        setup: NodeSetup,
    ) -> Result<Arc<NodeTemplate>, EngineError> {
        let pre = engine
            .linker()
            .instantiate_pre(&module.component)
            .and_then(NodePre::new)
            .map_err(|e| EngineError::World {
                path: module.path.clone(),
                why: format!("{e:#}"),
            })?;
        if setup.fuel.is_some() && !engine.meters_fuel() {
            return Err(EngineError::start(
                &setup.name,
                "metering fuel",
                "the node has a fuel limit, but the engine was made without fuel metering",
            ));
        }
        let env = setup
            .sandbox
            .env
            .iter()
            .filter_map(|name| match std::env::var(name) {
                Ok(value) => Some((name.clone(), value)),
                Err(_) => {
                    tracing::warn!(node = %setup.name, "granted environment variable {name} is not set on the host");
                    None
                }
            })
            .collect();
        let info = types::NodeInfo {
            name: setup.name,
            config: setup.config_json,
            inputs: setup.inputs,
            outputs: setup.outputs,
            replica: 0,
            replicas: setup.replicas,
        };
        Ok(Arc::new(NodeTemplate {
            engine: engine.clone(),
            pre,
            info,
            module,
            timeout: setup.timeout,
            memory_bytes: (setup.memory_mb as usize) << 20,
            grants: setup.grants.into(),
            fuel: setup.fuel,
            env,
            read_dirs: setup.sandbox.read_dirs,
            calls: setup.sandbox.calls.into(),
            logs: Arc::new(Throttle::new(GUEST_LOG_LINES_PER_SECOND)),
        }))
    }

    /// The loaded module this template instantiates.
    pub fn module(&self) -> &LoadedModule {
        &self.module
    }

    /// A fresh, initialised instance (the first replica).
    pub fn instantiate(self: &Arc<Self>) -> Result<NodeInstance, EngineError> {
        self.instantiate_replica(0)
    }

    /// A fresh, initialised instance of replica `replica`.
    pub fn instantiate_replica(self: &Arc<Self>, replica: u32) -> Result<NodeInstance, EngineError> {
        let (store, node) = self.fresh(replica)?;
        Ok(NodeInstance {
            template: self.clone(),
            store,
            node,
            replica,
        })
    }

    fn fresh(&self, replica: u32) -> Result<(Store<HostState>, Node), EngineError> {
        let name: Arc<str> = self.info.name.as_str().into();
        // Only what the manifest grants: no files, env, args, sockets (WASI's default
        // socket check denies every address) or stdin; output goes to the log.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(GuestOutput::new(name.clone(), "stdout", self.logs.clone()))
            .stderr(GuestOutput::new(name.clone(), "stderr", self.logs.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .envs(&self.env);
        for (guest, host) in &self.read_dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly).map_err(|e| {
                let why = format!("{}: {e:#}", host.display());
                EngineError::start(&self.info.name, "granting a read-only directory", why)
            })?;
        }
        let wasi = wasi.build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits,
            node: name,
            grants: self.grants.clone(),
            undo: UndoLog::default(),
            panic: None,
            deadline: Instant::now(),
            overslept: None,
            logs: self.logs.clone(),
            cut: self.engine.cut_flag(),
            was_cut: false,
            watermark: None,
            calls: self.calls.clone(),
            agent: None,
        };
        let mut store = Store::new(self.engine.wasmtime(), state);
        store.limiter(|s| &mut s.limits);
        // Every tick a running call is checked against its deadline (wall clock) and the
        // engine's cut flag; `deadline` handles calls parked in the host.
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if state.cut.load(Ordering::Relaxed) {
                state.was_cut = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            if state.overslept.is_some() || Instant::now() >= state.deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(1))
        });
        self.arm(&mut store);
        let node = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| EngineError::start(&self.info.name, "instantiating", e))?;
        let info = types::NodeInfo {
            replica,
            ..self.info.clone()
        };
        let init = node.call_init(&mut store, &info);
        let notes = store.data_mut().take_notes();
        let init_error = |error| EngineError::Init {
            node: self.info.name.clone(),
            error,
        };
        match init.map_err(|t| init_error(describe_trap(&t, self, notes)))? {
            Ok(()) => Ok((store, node)),
            Err(e) => Err(init_error(CallError::Node(from_wit(e)))),
        }
    }

    /// Sets the next call's limits: its deadline (checked every epoch tick while wasm
    /// runs, and by `deadline` for host calls that wait) and a full tank of fuel.
    fn arm(&self, store: &mut Store<HostState>) {
        store.set_epoch_deadline(1);
        store.data_mut().deadline = Instant::now() + self.timeout;
        if self.engine.meters_fuel() {
            // Cannot fail: the engine meters fuel.
            let _ = store.set_fuel(self.fuel.unwrap_or(u64::MAX));
        }
    }
}

impl std::error::Error for CallError {}

/// A live instance of a node.
pub struct NodeInstance {
    template: Arc<NodeTemplate>,
    store: Store<HostState>,
    node: Node,
    replica: u32,
}

impl NodeInstance {
    /// The node's watermark for the calls from now on (a reset instance starts with none).
    pub fn set_watermark(&mut self, watermark: Option<i64>) {
        self.store.data_mut().watermark = watermark;
    }

    /// Processes one framed batch.
    pub fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, CallError> {
        self.template.arm(&mut self.store);
        let result = self.node.call_process(&mut self.store, batch);
        self.settle(result)
    }

    /// Runs the node's `finish` (end of input).
    pub fn finish(&mut self) -> Result<Vec<u8>, CallError> {
        self.template.arm(&mut self.store);
        let result = self.node.call_finish(&mut self.store);
        self.settle(result)
    }

    /// Replaces this instance with a fresh one (after a trap).
    pub fn reset(&mut self) -> Result<(), EngineError> {
        let (store, node) = self.template.fresh(self.replica)?;
        self.store = store;
        self.node = node;
        Ok(())
    }

    /// The template this instance came from.
    pub fn template(&self) -> &Arc<NodeTemplate> {
        &self.template
    }

    /// The call's outcome; the state writes of a call that failed as a whole are undone.
    fn settle(
        &mut self,
        result: wasmtime::Result<Result<Vec<u8>, types::NodeError>>,
    ) -> Result<Vec<u8>, CallError> {
        let state = self.store.data_mut();
        let notes = state.take_notes();
        if matches!(result, Ok(Ok(_))) {
            state.undo.clear();
        } else {
            state.undo.rollback();
        }
        match result {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(CallError::Node(from_wit(e))),
            Err(trap) => Err(describe_trap(&trap, &self.template, notes)),
        }
    }
}

fn from_wit(e: types::NodeError) -> NodeError {
    let kind = match e.kind {
        types::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
        types::ErrorKind::Retryable => ErrorKind::Retryable,
        types::ErrorKind::Fatal => ErrorKind::Fatal,
    };
    NodeError {
        kind,
        message: e.message,
    }
}

fn describe_trap(err: &wasmtime::Error, t: &NodeTemplate, notes: Notes) -> CallError {
    let trap = err.downcast_ref::<Trap>();
    let culprit = match trap {
        Some(Trap::UnreachableCodeReached) => notes.panic.as_deref().and_then(culprit_of),
        _ => None,
    };
    let reason = match trap {
        Some(Trap::Interrupt) if notes.cut => return CallError::Cut,
        Some(Trap::Interrupt) if let Some(sleep) = notes.overslept => format!(
            "timed out: the guest asked to sleep {sleep:?}, past its timeout_ms = {}",
            t.timeout.as_millis()
        ),
        Some(Trap::Interrupt) => format!(
            "timed out: a call ran longer than timeout_ms = {}",
            t.timeout.as_millis()
        ),
        Some(Trap::OutOfFuel) => format!(
            "out of fuel: a call used more than fuel = {}",
            t.fuel.unwrap_or(u64::MAX)
        ),
        Some(Trap::UnreachableCodeReached) => match &notes.panic {
            Some(panic) => format!("the guest {panic}"),
            None => "the guest aborted (a panic, or `unreachable`)".to_owned(),
        },
        _ => {
            let text = format!("{err:#}");
            if text.contains("forcing trap when growing memory") {
                format!("memory limit exceeded: memory_mb = {}", t.memory_bytes >> 20)
            } else {
                text.lines().next().unwrap_or("trap").to_owned()
            }
        }
    };
    CallError::Trap {
        reason,
        costly: matches!(trap, Some(Trap::Interrupt | Trap::OutOfFuel)),
        culprit,
    }
}

/// The input index a panic message names: `panicked on input <index>…`.
fn culprit_of(panic: &str) -> Option<u32> {
    let rest = panic.strip_prefix("panicked on input ")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::culprit_of;

    #[test]
    fn a_panic_names_its_input_only_in_the_sdks_words() {
        assert_eq!(culprit_of("panicked on input 17 at src/lib.rs:3: boom"), Some(17));
        assert_eq!(culprit_of("panicked on input 0: boom"), Some(0));
        assert_eq!(culprit_of("panicked at src/lib.rs:3: boom"), None);
        assert_eq!(culprit_of("panicked on input x: boom"), None);
        assert_eq!(culprit_of("panicked on input 99999999999: boom"), None);
    }
}
