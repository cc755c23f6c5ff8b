//! Consistent checkpoints of a running graph with durable stores.
//!
//! Every `interval`, the checkpointer asks the sources to pause at their next batch
//! boundary and waits until nothing is in flight: every batch a source sent has been
//! processed by every node downstream and written by the sinks. At that moment the
//! durable stores hold exactly the effects of the input up to the sources' positions, so
//! one log record (state changes, positions, file sink lengths) is a consistent cut; it
//! is synced, and the sources go on. The pause lasts as long as the pipeline takes to
//! drain what its channels hold — a few milliseconds — once per interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::flow::InFlight;
use crate::io::sink::SinkWriter;
use crate::manifest::Graph;
use crate::shutdown::Shutdown;
use crate::state::Stores;
use crate::state::durable::{Checkpoint, Position, StateLog, StateLogError};

/// A checkpoint that could not be taken: the run stops with it.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A sink's output could not be made durable.
    #[error("sink `{sink}`: {error}")]
    Sink {
        /// The sink.
        sink: String,
        /// The error.
        error: std::io::Error,
    },
    /// The state log could not be written.
    #[error(transparent)]
    Log(#[from] StateLogError),
}

/// Where sources pause for a checkpoint.
#[derive(Debug)]
pub struct Gate {
    pausing: AtomicBool,
    in_flight: InFlight,
    inner: Mutex<Sources>,
    changed: Condvar,
}

#[derive(Debug)]
struct Sources {
    /// Bumped when a pause ends.
    epoch: u64,
    parked: usize,
    finished: usize,
    /// Each source's position when it last parked or finished.
    positions: Vec<Position>,
}

impl Gate {
    /// A gate for sources starting at `positions`, counting batches with `in_flight`.
    pub fn new(positions: Vec<Position>, in_flight: InFlight) -> Self {
        Gate {
            pausing: AtomicBool::new(false),
            in_flight,
            inner: Mutex::new(Sources {
                epoch: 0,
                parked: 0,
                finished: 0,
                positions,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sources> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by source `i` after sending each batch, `at` the position after it: parks
    /// while a checkpoint is being taken.
    pub fn boundary(&self, i: usize, at: Position) {
        if !self.pausing.load(Ordering::SeqCst) {
            return;
        }
        let mut s = self.lock();
        if !self.pausing.load(Ordering::SeqCst) {
            return;
        }
        s.positions[i] = at;
        s.parked += 1;
        let epoch = s.epoch;
        self.changed.notify_all();
        while s.epoch == epoch {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Source `i` ended at `at`.
    pub fn finished(&self, i: usize, at: Position) {
        let mut s = self.lock();
        s.positions[i] = at;
        s.finished += 1;
        self.changed.notify_all();
    }

    /// The sources' latest positions.
    pub fn positions(&self) -> Vec<Position> {
        self.lock().positions.clone()
    }

    /// Waits up to `timeout`; whether every source has finished.
    fn wait_finished(&self, timeout: Duration) -> bool {
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.finished < s.positions.len())
            .unwrap_or_else(|e| e.into_inner());
        s.finished == s.positions.len()
    }

    /// Pauses the sources and waits until nothing is in flight; `false` (and resumed) if
    /// the graph is stopping meanwhile.
    fn pause(&self, shutdown: &Shutdown) -> bool {
        self.pausing.store(true, Ordering::SeqCst);
        self.in_flight.freeze(true);
        let mut s = self.lock();
        while s.parked + s.finished < s.positions.len() {
            if shutdown.is_stopping() {
                drop(s);
                self.resume();
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(s);
        while !self.in_flight.is_idle() {
            if shutdown.is_stopping() {
                self.resume();
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        true
    }

    fn resume(&self) {
        let mut s = self.lock();
        self.pausing.store(false, Ordering::SeqCst);
        self.in_flight.freeze(false);
        s.epoch += 1;
        s.parked = 0;
        self.changed.notify_all();
    }
}

/// What a run's checkpoints need: the log, the stores, the sinks and the graph's ids.
/// Without a log (no durable store), it only sweeps expired keys every interval.
pub struct Checkpointer<'g> {
    pub graph: &'g Graph,
    pub log: Option<StateLog>,
    pub stores: Stores,
    pub sinks: Vec<Arc<Mutex<SinkWriter>>>,
    /// Checkpoints taken and the longest pause.
    pub taken: u64,
    pub longest_pause: Duration,
}

impl Checkpointer<'_> {
    /// Takes a checkpoint every `interval` until the sources finish or a stop is requested.
    pub fn run(&mut self, gate: &Gate, interval: Duration, shutdown: &Shutdown) {
        loop {
            if gate.wait_finished(interval) || shutdown.is_stopping() {
                return;
            }
            if self.log.is_none() {
                self.stores.iter().for_each(|s| s.sweep());
                continue;
            }
            let started = Instant::now();
            if !gate.pause(shutdown) {
                return;
            }
            if shutdown.is_aborting() {
                // Abandoned batches count as drained: these positions would skip them.
                gate.resume();
                return;
            }
            let committed = self.commit(gate.positions(), false);
            gate.resume();
            match committed {
                Ok(epoch) => {
                    let pause = started.elapsed();
                    self.longest_pause = self.longest_pause.max(pause);
                    tracing::debug!(epoch, ?pause, "checkpoint committed");
                }
                Err(e) => {
                    shutdown.fail(format!("checkpoint failed: {e:#}"));
                    return;
                }
            }
        }
    }

    /// Commits the state as it is now with these source positions (nothing may be in
    /// flight); `complete` when the sources ended.
    pub fn commit(&mut self, positions: Vec<Position>, complete: bool) -> Result<u64, CheckpointError> {
        let Some(log) = &mut self.log else {
            return Ok(0);
        };
        let mut meta = Checkpoint {
            complete,
            ..Checkpoint::default()
        };
        meta.sources = self
            .graph
            .sources
            .iter()
            .map(|s| s.id.clone())
            .zip(positions)
            .collect();
        for (spec, sink) in self.graph.sinks.iter().zip(&self.sinks) {
            let mut w = sink.lock().unwrap_or_else(|e| e.into_inner());
            let committed = w.commit().map_err(|error| CheckpointError::Sink {
                sink: spec.id.clone(),
                error,
            })?;
            if let Some(len) = committed {
                meta.sinks.insert(spec.id.clone(), len);
            }
        }
        for store in self.stores.iter() {
            store.sweep();
        }
        let epoch = log.commit(meta, &self.stores)?;
        self.taken += 1;
        Ok(epoch)
    }
}
