//! Hot swap: a node's module (or its config) replaced while the graph runs.
//!
//! The new version is loaded, componentized, compiled, linked against the world and
//! instantiated, one initialised instance per replica, on the caller's thread while the
//! old version keeps processing. Then it is published: each replica, between two batches,
//! takes its prepared instance and goes on with it. Every batch is processed by one
//! version; nothing in the channels moves, so no message is lost, repeated or reordered;
//! host state lives in the stores both versions share. A version that fails to load, to
//! fit the world or to `init` is refused, and the old one never stopped.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::now_millis;
use crate::engine::{Engine, EngineError, LoadedModule, NodeInstance, NodeSetup, NodeTemplate};
use crate::manifest::AutoRollback;
use crate::plan::PlanError;

/// Why a swap, reconfiguration or rollback was refused (the old version keeps running).
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// A rollback with nothing to return to.
    #[error("there is no earlier version to roll back to")]
    NoEarlierVersion,
    /// The new module cannot be found, read or trusted.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The new module cannot be loaded, linked or started.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Swaps kept in a node's history.
const HISTORY: usize = 64;

/// One version of a node: its template, the setup it was made with and, while it is on
/// trial, how it is doing.
pub struct Version {
    /// 1 for the module the graph started with, then one more for each swap.
    pub number: u32,
    template: Arc<NodeTemplate>,
    setup: NodeSetup,
    trial: Option<AutoRollback>,
    /// Messages processed and failed while on trial.
    tally: Mutex<(u64, u64)>,
    judged: AtomicBool,
}

impl Version {
    fn new(
        number: u32,
        template: Arc<NodeTemplate>,
        setup: NodeSetup,
        trial: Option<AutoRollback>,
    ) -> Arc<Self> {
        Arc::new(Version {
            number,
            template,
            setup,
            trial,
            tally: Mutex::default(),
            judged: AtomicBool::new(false),
        })
    }

    /// SHA-256 of its module.
    pub fn hash(&self) -> &str {
        &self.template.module().hash
    }

    /// The module it runs.
    pub(super) fn module(&self) -> &LoadedModule {
        self.template.module()
    }

    /// A fresh instance of it for replica `replica`.
    pub(super) fn instantiate_replica(&self, replica: u32) -> Result<NodeInstance, EngineError> {
        self.template.instantiate_replica(replica)
    }

    fn named(&self) -> VersionRef {
        VersionRef {
            number: self.number,
            hash: self.hash().to_owned(),
        }
    }

    /// A batch of `n` messages, `failed` of which failed for good, was processed on this
    /// version. While on trial, the first batch that completes its first `messages`
    /// judges it: `Some(why)` if too many of them failed.
    pub(super) fn processed(&self, n: usize, failed: u64) -> Option<String> {
        let trial = self.trial.as_ref()?;
        // Both counts move together, so the rate is never of half a batch.
        let (received, failed) = {
            let mut tally = lock(&self.tally);
            if self.judged.load(Ordering::Relaxed) {
                return None;
            }
            tally.0 += n as u64;
            tally.1 += failed;
            if tally.0 < trial.messages {
                return None;
            }
            self.judged.store(true, Ordering::Relaxed);
            *tally
        };
        let rate = failed as f64 / received as f64;
        (rate > trial.error_rate).then(|| {
            format!(
                "{failed} of its first {received} messages failed ({:.1}% > error_rate {})",
                rate * 100.0,
                trial.error_rate
            )
        })
    }
}

/// A version, by number and module hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRef {
    /// Its number.
    pub number: u32,
    /// SHA-256 of its module.
    pub hash: String,
}

/// What was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A new module.
    Swap,
    /// Back to the version before.
    Rollback,
    /// Back to the version before, because the new one failed its trial.
    AutoRollback,
    /// New config or limits (a reloaded manifest), maybe with a new module.
    Reconfigure,
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The new version is published (see `pending` for replicas still to switch).
    Done,
    /// It could not be loaded or started; the old version keeps running.
    Refused,
}

/// One swap of a node, as status shows it and `flowhost swap` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapRecord {
    /// The node.
    pub node: String,
    /// When it was asked for, milliseconds since the epoch.
    pub at_ms: i64,
    /// What was asked.
    pub action: Action,
    /// The version running when it was asked.
    pub from: VersionRef,
    /// The version it switched to (none if refused before the module was loaded).
    pub to: Option<VersionRef>,
    /// How it went.
    pub outcome: Outcome,
    /// Why it was refused, or why a rollback was made.
    pub reason: Option<String>,
    /// Loading, compiling and starting the new version, in milliseconds.
    pub prepare_ms: f64,
    /// From publishing it to every replica running it, in milliseconds.
    pub switch_ms: f64,
    /// Replicas that had not switched when the wait for them ended (they switch before
    /// their next batch).
    #[serde(default)]
    pub pending: Vec<usize>,
}

impl std::fmt::Display for SwapRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |v: &VersionRef| format!("v{} ({})", v.number, &v.hash[..v.hash.len().min(12)]);
        let what = match self.action {
            Action::Swap => "swap",
            Action::Rollback => "rollback",
            Action::AutoRollback => "automatic rollback",
            Action::Reconfigure => "reconfiguration",
        };
        match (&self.outcome, &self.to) {
            (Outcome::Done, Some(to)) => {
                write!(
                    f,
                    "node `{}`: {what} {} -> {} done in {:.1} ms (prepared in {:.1} ms, every replica switched {:.1} ms later)",
                    self.node,
                    short(&self.from),
                    short(to),
                    self.prepare_ms + self.switch_ms,
                    self.prepare_ms,
                    self.switch_ms
                )?;
                if !self.pending.is_empty() {
                    write!(f, "; replicas {:?} switch before their next batch", self.pending)?;
                }
            }
            _ => write!(
                f,
                "node `{}`: {what} refused, {} keeps running",
                self.node,
                short(&self.from)
            )?,
        }
        match &self.reason {
            Some(reason) => write!(f, ": {reason}"),
            None => Ok(()),
        }
    }
}

/// What a replica takes when it switches.
pub(super) struct Handover {
    pub generation: u64,
    pub version: Arc<Version>,
    pub instance: NodeInstance,
}

/// A replica as the swapper sees it.
#[derive(Default)]
struct ReplicaSwap {
    handover: Mutex<Option<Handover>>,
    /// The generation it runs.
    generation: AtomicU64,
    /// The version number it runs.
    version: AtomicU32,
    /// Still taking batches (a replica that has ended never switches).
    live: AtomicBool,
}

/// What only one swap at a time may touch.
struct Control {
    /// Versions to roll back to, latest last.
    previous: Vec<Arc<Version>>,
    /// The highest version number given out.
    numbers: u32,
}

/// The versions of one node: the one running, the ones to roll back to, and the swaps
/// so far. Shared by the node's replicas, the admin endpoint and the watcher.
pub struct NodeVersions {
    node: String,
    engine: Engine,
    published: AtomicU64,
    current: Mutex<Arc<Version>>,
    slots: Vec<ReplicaSwap>,
    /// Instances replicas switched away from, dropped off their threads.
    retired: Mutex<Vec<NodeInstance>>,
    control: Mutex<Control>,
    history: Mutex<Vec<SwapRecord>>,
    /// The longest wait for a replica to switch: it switches between batches, and an idle
    /// one wakes once a heartbeat.
    patience: Duration,
    /// Judges swapped-in modules unless a swap says otherwise.
    trial: Option<AutoRollback>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl NodeVersions {
    /// Version 1 of a node, made from `template` with `setup`, for `replicas` replicas
    /// that wake at least every `heartbeat`.
    pub fn new(
        engine: &Engine,
        template: Arc<NodeTemplate>,
        setup: NodeSetup,
        trial: Option<AutoRollback>,
        heartbeat: Duration,
    ) -> Arc<Self> {
        let slots = (0..setup.replicas)
            .map(|_| ReplicaSwap {
                version: AtomicU32::new(1),
                live: AtomicBool::new(true),
                ..ReplicaSwap::default()
            })
            .collect();
        Arc::new(NodeVersions {
            node: setup.name.clone(),
            engine: engine.clone(),
            published: AtomicU64::new(0),
            slots,
            retired: Mutex::default(),
            patience: heartbeat * 3 + setup.timeout + Duration::from_secs(1),
            current: Mutex::new(Version::new(1, template, setup, None)),
            control: Mutex::new(Control {
                previous: Vec::new(),
                numbers: 1,
            }),
            history: Mutex::default(),
            trial,
        })
    }

    /// The node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The engine its versions are compiled with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The version published last.
    pub fn current(&self) -> Arc<Version> {
        lock(&self.current).clone()
    }

    /// The version number replica `r` runs.
    pub fn running(&self, r: usize) -> u32 {
        self.slots[r].version.load(Ordering::Relaxed)
    }

    /// Swaps so far, oldest first (the latest 64).
    pub fn history(&self) -> Vec<SwapRecord> {
        lock(&self.history).clone()
    }

    /// The generation published last: a replica whose own differs has a version waiting.
    #[inline]
    pub(super) fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Replica `r`'s prepared instance of the latest version, if there is one.
    pub(super) fn take(&self, r: usize) -> Option<Handover> {
        lock(&self.slots[r].handover).take()
    }

    /// Replica `r` runs `generation` (version `number`) now; `old` is what it ran before.
    pub(super) fn switched(&self, r: usize, generation: u64, number: u32, old: NodeInstance) {
        lock(&self.retired).push(old);
        let slot = &self.slots[r];
        slot.version.store(number, Ordering::Relaxed);
        slot.generation.store(generation, Ordering::Release);
    }

    /// Replica `r` takes batches (again, in a changed graph).
    pub(super) fn resumed(&self, r: usize) {
        self.slots[r].live.store(true, Ordering::Release);
    }

    /// The node as a changed graph makes it (`flowhost apply`: new ports, replicas, config
    /// or module): a version from `template` with `setup`, numbered after the versions so
    /// far and recorded with them. The versions before cannot be rolled back to: they
    /// were made for the node as it was.
    pub fn rebuilt(
        &self,
        template: Arc<NodeTemplate>,
        setup: NodeSetup,
        heartbeat: Duration,
        started: Instant,
    ) -> Arc<NodeVersions> {
        let control = lock(&self.control);
        let from = self.current();
        let version = Version::new(control.numbers + 1, template, setup.clone(), None);
        let mut record = Self::record(
            &self.node,
            Action::Reconfigure,
            &from,
            Some(version.named()),
            Some("the graph changed".into()),
        );
        record.outcome = Outcome::Done;
        record.prepare_ms = ms(started.elapsed());
        tracing::info!("{record}");
        let versions = NodeVersions::new(
            &self.engine,
            version.template.clone(),
            setup,
            self.trial,
            heartbeat,
        );
        *lock(&versions.current) = version.clone();
        lock(&versions.control).numbers = version.number;
        for slot in &versions.slots {
            slot.version.store(version.number, Ordering::Relaxed);
        }
        *lock(&versions.history) = self.history();
        versions.remember(&record);
        versions
    }

    /// Replica `r` takes no more batches.
    pub(super) fn ended(&self, r: usize) {
        self.slots[r].live.store(false, Ordering::Release);
    }

    /// Swaps in the module `load` gives, judged by `trial` (or the node's `auto_rollback`).
    pub fn swap(
        &self,
        load: impl FnOnce(&Engine) -> Result<LoadedModule, SwapError>,
        trial: Option<AutoRollback>,
    ) -> SwapRecord {
        self.replace(Action::Swap, None, load, trial.or(self.trial))
    }

    /// Returns to the version before the current one (`reason`: why, for an automatic one).
    pub fn rollback(&self, reason: Option<String>) -> SwapRecord {
        self.rollback_from(None, reason)
    }

    fn rollback_from(&self, number: Option<u32>, reason: Option<String>) -> SwapRecord {
        let mut control = lock(&self.control);
        let current = self.current();
        if let Some(n) = number.filter(|&n| n != current.number) {
            tracing::info!(node = %self.node, "not rolling back v{n}: v{} has replaced it", current.number);
            return Self::record(
                &self.node,
                Action::AutoRollback,
                &current,
                None,
                Some(format!("v{n} was replaced already")),
            );
        }
        let action = if reason.is_some() {
            Action::AutoRollback
        } else {
            Action::Rollback
        };
        let started = self.start(action);
        let prepared = match control.previous.last() {
            // Not on trial again: it ran before.
            Some(v) => Ok(Version::new(v.number, v.template.clone(), v.setup.clone(), None)),
            None => Err(SwapError::NoEarlierVersion),
        };
        self.apply(&mut control, action, started, prepared, reason)
    }

    /// New config and limits (from a reloaded manifest), and a new module if `load` gives one.
    pub fn reconfigure(
        &self,
        setup: NodeSetup,
        load: Option<impl FnOnce(&Engine) -> Result<LoadedModule, SwapError>>,
    ) -> SwapRecord {
        match load {
            Some(load) => self.replace(Action::Reconfigure, Some(setup), load, self.trial),
            None => {
                let same = self.current().template.module().clone();
                self.replace(Action::Reconfigure, Some(setup), |_| Ok(same), self.trial)
            }
        }
    }

    /// A new version from the module `load` gives, made with `setup` (`None`: the current
    /// version's).
    fn replace(
        &self,
        action: Action,
        setup: Option<NodeSetup>,
        load: impl FnOnce(&Engine) -> Result<LoadedModule, SwapError>,
        trial: Option<AutoRollback>,
    ) -> SwapRecord {
        let mut control = lock(&self.control);
        let started = self.start(action);
        let setup = setup.unwrap_or_else(|| self.current().setup.clone());
        let prepared = load(&self.engine).and_then(|module| {
            let template = NodeTemplate::new(&self.engine, module, setup.clone())?;
            Ok(Version::new(control.numbers + 1, template, setup, trial))
        });
        self.apply(&mut control, action, started, prepared, None)
    }

    /// Rolls version `number` back on a thread of its own (a replica found it failing its
    /// trial), unless another swap has replaced it by then.
    pub(super) fn roll_back_later(self: &Arc<Self>, number: u32, why: String) {
        let versions = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("rollback-{}", self.node))
            .spawn(move || {
                let _ = versions.rollback_from(Some(number), Some(why));
            });
        if let Err(e) = spawned {
            tracing::error!(node = %self.node, "could not start the automatic rollback: {e}");
        }
    }

    /// Logs the start of a swap; when it started.
    fn start(&self, action: Action) -> Instant {
        let from = self.current().number;
        tracing::info!(node = %self.node, from, "{action:?} started: preparing the new version");
        Instant::now()
    }

    /// Starts every replica's instance of `prepared`, publishes it and waits for the
    /// replicas to switch; records the outcome either way.
    fn apply(
        &self,
        control: &mut Control,
        action: Action,
        started: Instant,
        prepared: Result<Arc<Version>, SwapError>,
        reason: Option<String>,
    ) -> SwapRecord {
        let from = self.current();
        let to = prepared.as_ref().ok().map(|v| v.named());
        let mut record = Self::record(&self.node, action, &from, to, reason);
        let instances = prepared.and_then(|version| {
            let instances = (0..self.slots.len() as u32)
                .map(|r| version.template.instantiate_replica(r))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((version, instances))
        });
        record.prepare_ms = ms(started.elapsed());
        let (version, instances) = match instances {
            Ok(ready) => ready,
            Err(e) => {
                record.reason = Some(e.to_string());
                tracing::warn!("{record}");
                self.remember(&record);
                return record;
            }
        };

        let switching = Instant::now();
        let generation = self.published.load(Ordering::Relaxed) + 1;
        for (slot, instance) in self.slots.iter().zip(instances) {
            *lock(&slot.handover) = Some(Handover {
                generation,
                version: version.clone(),
                instance,
            });
        }
        self.published.store(generation, Ordering::Release);
        // After publishing: whoever sees the new version in status sees replicas switch
        // before their next batch.
        *lock(&self.current) = version.clone();
        match action {
            Action::Rollback | Action::AutoRollback => {
                control.previous.pop();
            }
            Action::Swap | Action::Reconfigure => {
                control.previous.push(from);
                control.numbers = version.number;
            }
        }

        let deadline = switching + self.patience;
        record.pending = loop {
            let waiting: Vec<usize> = (0..self.slots.len())
                .filter(|&r| {
                    let slot = &self.slots[r];
                    slot.live.load(Ordering::Acquire) && slot.generation.load(Ordering::Acquire) < generation
                })
                .collect();
            if waiting.is_empty() || Instant::now() >= deadline {
                break waiting;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        record.switch_ms = ms(switching.elapsed());
        record.outcome = Outcome::Done;
        // The old instances go here, off the replicas' threads.
        drop(std::mem::take(&mut *lock(&self.retired)));
        match action {
            Action::AutoRollback => tracing::warn!("{record}"),
            _ => tracing::info!("{record}"),
        }
        self.remember(&record);
        record
    }

    /// A refused swap of `node` away from `from`, to be filled in.
    fn record(
        node: &str,
        action: Action,
        from: &Version,
        to: Option<VersionRef>,
        reason: Option<String>,
    ) -> SwapRecord {
        SwapRecord {
            node: node.to_owned(),
            at_ms: now_millis(),
            action,
            from: from.named(),
            to,
            outcome: Outcome::Refused,
            reason,
            prepare_ms: 0.0,
            switch_ms: 0.0,
            pending: Vec::new(),
        }
    }

    fn remember(&self, record: &SwapRecord) {
        let mut history = lock(&self.history);
        if history.len() == HISTORY {
            history.remove(0);
        }
        history.push(record.clone());
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
