//! One node replica: its own thread, store and instance. Batches in, routed output out;
//! failures go through the node's error policy, never up the stack.
//!
//! A batch either completes or is re-run in parts, so one bad message fails alone: a trap
//! replaces the instance and re-runs the batch message by message up to the one that
//! traps, then the rest as a batch again (nothing of the trapped call was emitted, and its
//! state writes were undone), retryable
//! errors are retried with backoff, and what still fails is skipped, dead-lettered or
//! stops the graph.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use flowhost_sdk::{ErrorKind, NodeError};

use super::NodeStats;
use super::finish::FinishGate;
use super::status::{Phase, ReplicaStatus};
use super::swap::{NodeVersions, Version};
use super::timers::NodeTimers;
use crate::clock::now_millis;
use crate::engine::{CallError, NodeInstance};
use crate::flow::feedback::LoopGate;
use crate::flow::watermark::{Mark, Marked, Time, Watermarks};
use crate::flow::{Ack, Envelope, InFlight, Mailbox, Received, Router, Sender};
use crate::io::http::{self, Answer, Answers};
use crate::manifest::{ErrorPolicy, RetryPolicy};
use crate::message::{self, Batch, Msg, headers};
use crate::shutdown::Shutdown;
use flowhost_sdk::frame::TimeDomain;

/// Messages per call when a failed batch runs again in parts (about the square root of
/// a usual batch: as many chunk calls as single calls in the failed chunk).
const CHUNK: usize = 16;

/// Batches of fired timers one tick runs at most.
const FIRINGS_PER_TICK: usize = 64;

/// Why a replica stops the graph.
type Stop = String;

pub(super) struct Replica {
    pub id: Arc<str>,
    pub instance: NodeInstance,
    /// Output port names (for counting what is written to one no edge leaves).
    pub outputs: Arc<[String]>,
    /// The most output one call may return (`max_output_mb`).
    pub max_output: usize,
    /// Input port names (for dead letters).
    pub inputs: Arc<[String]>,
    pub router: Router,
    pub dead_letter: Option<Sender>,
    /// Where a failed request's answer goes (graphs with an `http` source).
    pub answers: Option<Arc<dyn Answers>>,
    /// The acknowledgement of the batch being processed: what it sends holds it.
    pub ack: Ack,
    pub policy: ErrorPolicy,
    pub retry: RetryPolicy,
    pub stats: Arc<NodeStats>,
    pub shutdown: Arc<Shutdown>,
    pub provenance: bool,
    pub in_flight: InFlight,
    /// Every replica of the node waits here before `finish`: a replica's `finish` sees
    /// the state writes of all of them.
    pub finish_barrier: Arc<Barrier>,
    /// Where every node waits before `finish` for the sources' messages to be through.
    pub finish_gate: Arc<FinishGate>,
    pub status: Arc<ReplicaStatus>,
    pub heartbeat: Duration,
    /// This replica's index among the node's.
    pub index: usize,
    /// The node's versions, for hot swap.
    pub versions: Arc<NodeVersions>,
    /// The version `instance` is of.
    pub version: Arc<Version>,
    /// The swap generation it came with.
    pub generation: u64,
    /// Messages of the current batch that failed for good.
    pub failures: u64,
    /// Whether dropped records were reported already.
    pub warned_drop: bool,
    /// While a failed batch runs message by message: its outputs per port so far, sent
    /// together after it (one envelope per port, not one per message).
    pub held: Option<Vec<Vec<Msg>>>,
    /// This replica as a producer of watermarks (see [`crate::flow::watermark`]).
    pub producer: u32,
    /// Its inputs' watermarks.
    pub watermarks: Watermarks,
    /// What it says about event time: its watermark (it never moves back), or idle.
    pub mark: Option<Mark>,
    /// Its watermark as the node sees it (stays put while the inputs are idle).
    pub event_time: Option<Time>,
    /// Its timers.
    pub timers: NodeTimers,
    /// The loop whose feedback edges it sends on, until that loop has ended.
    pub loop_gate: Option<Arc<LoopGate>>,
    /// How it ends if its input closes because the graph is being changed.
    pub pause: Arc<Pause>,
}

/// Why a replica's input closes: the graph ends (it finishes), or a change is being
/// applied (see `topology::apply`): then a node the changed graph keeps as it is ends
/// without `finish`, handing its instance on, and a node it removes or rebuilds finishes.
#[derive(Debug, Default)]
pub(super) struct Pause(std::sync::atomic::AtomicU8);

impl Pause {
    const RUNNING: u8 = 0;
    const KEEP: u8 = 1;
    const END: u8 = 2;

    /// The graph is changing: the node goes on in the next graph (`keep`) or not.
    pub fn set(&self, keep: bool) {
        let to = if keep { Self::KEEP } else { Self::END };
        self.0.store(to, std::sync::atomic::Ordering::SeqCst);
    }

    fn get(&self) -> u8 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A replica's instance as it goes on into the next graph.
pub(crate) struct Running {
    pub instance: NodeInstance,
    /// The version it is of, and the swap generation it came with.
    pub version: Arc<Version>,
    pub generation: u64,
}

impl Replica {
    /// Processes `input` until it closes, then finishes; if it closed because the graph
    /// is changing and the node goes on, returns its instance instead.
    pub fn run(mut self, input: Mailbox) -> Option<Running> {
        let mut stopped = false;
        self.versions.resumed(self.index);
        self.status.phase.set(Phase::Running);
        let beat = self.heartbeat;
        // Waiting at most a heartbeat interval, so an idle replica still beats.
        loop {
            let received = input.recv(self.wait(beat));
            // Between batches: where a swapped-in version takes over.
            if self.versions.published() != self.generation {
                self.switch();
            }
            let mut env = match received {
                Received::Batch(env) => env,
                Received::Idle => {
                    self.status.beat();
                    // Its loop has ended: letting go of the feedback edges closes the
                    // loop's channels, front to back.
                    if let Some(gate) = &self.loop_gate
                        && gate.ended(&self.in_flight)
                    {
                        self.router.drop_feedback();
                        self.loop_gate = None;
                    }
                    // Time moves without input (idleness, the wall clock): not while a
                    // checkpoint waits for a still graph.
                    if !stopped && !self.shutdown.is_aborting() && self.in_flight.start_own() {
                        if let Err(reason) = self.tick() {
                            stopped = self.stop(reason);
                        }
                        self.in_flight.done();
                    }
                    continue;
                }
                Received::Closed => break,
            };
            self.status.beat();
            // After a stop, keep draining so producers never block on us; after an abort
            // nothing more is processed: what is left is abandoned, unacknowledged.
            if self.shutdown.is_aborting() {
                self.abandon(env.batch.len(), &env.ack);
            } else if !stopped {
                self.ack = env.ack.clone();
                let received = env.batch.len();
                if received > 0 {
                    NodeStats::add(&self.stats.received, received);
                    let started = Instant::now();
                    if let Err(reason) = self.batch(&mut env) {
                        stopped = self.stop(reason);
                    }
                    self.status.processed(started.elapsed());
                    let failed = std::mem::take(&mut self.failures);
                    if let Some(why) = self.version.processed(received, failed) {
                        self.versions.roll_back_later(self.version.number, why);
                    }
                }
                if let Some(mark) = &env.mark {
                    self.watermarks.observe(mark, Instant::now());
                }
                if !stopped && let Err(reason) = self.tick() {
                    stopped = self.stop(reason);
                }
                self.ack = Ack::none();
            }
            self.in_flight.done();
        }
        let changing = self.pause.get();
        if changing == Pause::KEEP && !stopped && !self.shutdown.is_aborting() {
            self.versions.ended(self.index);
            return Some(Running {
                instance: self.instance,
                version: self.version,
                generation: self.generation,
            });
        }
        // The end of event time: every event-time timer fires before `finish` (a tick at
        // a time, so a node that keeps setting due ones is cut off, not waited on).
        let mut ticks = 0;
        while !stopped
            && !self.shutdown.is_aborting()
            && self.mark == Some(Mark::At(Time::MAX))
            && self.timers.next(TimeDomain::EventTime).is_some()
            && ticks < 1_000
        {
            ticks += 1;
            if let Err(reason) = self.fire(TimeDomain::EventTime, Time::MAX) {
                stopped = self.stop(reason);
            }
        }
        self.versions.ended(self.index);
        self.status.phase.set(Phase::Draining);
        self.status.beat();
        self.finish_barrier.wait();
        // (A node the changed graph drops finishes once its own inputs have ended.)
        if changing == Pause::RUNNING {
            self.finish_gate.wait(&self.shutdown);
        }
        if !stopped && !self.shutdown.is_aborting() {
            let finished = self.instance.finish().map_err(|e| format!("finish failed: {e}"));
            let output = finished.and_then(|out| self.decode_output(out, 0));
            if let Ok(out) = &output {
                NodeStats::add(&self.stats.at_finish, out.records());
            }
            let mut none = Batch::default();
            if let Err(reason) = output.and_then(|out| self.deliver(out, &mut none, 0)) {
                stopped = self.stop(reason);
            }
        }
        // Its inputs ended: after what `finish` emitted, the end of event time.
        if !stopped && self.mark == Some(Mark::At(Time::MAX)) {
            self.router.mark(self.marked(Mark::At(Time::MAX)));
        }
        self.status
            .phase
            .set(if stopped { Phase::Failed } else { Phase::Stopped });
        None
    }

    /// How long to wait for input: a heartbeat interval, or less if a timer or an
    /// input's idleness is due sooner.
    fn wait(&self, beat: Duration) -> Duration {
        let now = Instant::now();
        // In a loop, soon: its end is seen when idle.
        let mut wait = if self.loop_gate.is_some() {
            beat.min(Duration::from_millis(5))
        } else {
            beat
        };
        if let Some(at) = self.watermarks.next_idle(now) {
            wait = wait.min(at.saturating_duration_since(now));
        }
        if let Some(t) = self.timers.next(TimeDomain::ProcessingTime) {
            let ms = t.saturating_sub(now_millis()).max(0) as u64;
            wait = wait.min(Duration::from_millis(ms));
        }
        // Timers left due by the last tick: at once.
        if let (Some(t), Some(now)) = (self.timers.next(TimeDomain::EventTime), self.event_time)
            && t <= now
        {
            wait = Duration::ZERO;
        }
        wait.max(Duration::from_millis(1))
    }

    fn marked(&self, mark: Mark) -> Marked {
        Marked {
            from: self.producer,
            mark,
            idle_after: None,
        }
    }

    /// Time moves on: the watermark from the inputs (and the end of their idleness),
    /// the timers it and the wall clock reach fire, and the new mark goes downstream
    /// (the end of event time only after `finish`).
    fn tick(&mut self) -> Result<(), Stop> {
        let mark = match self.watermarks.current(Instant::now()) {
            // A watermark never moves back (an idle input that reads again is behind).
            Some(Mark::At(t)) => Some(Mark::At(t.max(self.event_time.unwrap_or(Time::MIN)))),
            other => other,
        };
        if let Some(Mark::At(t)) = mark {
            self.event_time = Some(t);
        }
        if let Some(t) = self.event_time {
            self.fire(TimeDomain::EventTime, t)?;
        }
        self.fire(TimeDomain::ProcessingTime, now_millis())?;
        if let Some(m) = mark
            && mark != self.mark
        {
            self.mark = mark;
            if m != Mark::At(Time::MAX) {
                self.router.mark(self.marked(m));
            }
        } else if let Some(m) = self.mark
            && m != Mark::At(Time::MAX)
        {
            // Unchanged: told again only where that keeps it alive (topics).
            self.router.mark(self.marked(m));
        }
        self.status.event_time(
            self.event_time,
            self.mark == Some(Mark::Idle),
            self.timers.counts(),
        );
        Ok(())
    }

    /// Fires the timers of `domain` due at `now`, a batch of at most 256 at a time,
    /// until none is due (a timer may set another that is due already) — at most
    /// [`FIRINGS_PER_TICK`] batches: a node that keeps setting due timers does not hold
    /// its replica here; the rest fire at the next tick.
    fn fire(&mut self, domain: TimeDomain, now: Time) -> Result<(), Stop> {
        for _ in 0..FIRINGS_PER_TICK {
            let due = self.timers.take_due(domain, now, 256);
            if due.is_empty() {
                return Ok(());
            }
            let input = message::encode_fired(domain, &due);
            let out = match self.call(&input) {
                Ok(out) => self.decode_output(out, due.len()),
                Err(CallError::Cut) => return Ok(()),
                Err(CallError::Node(e)) if e.kind == ErrorKind::Fatal => {
                    return Err(format!("on_timer: {e}"));
                }
                Err(e) => Err(e.to_string()),
            };
            match out {
                Ok(out) => {
                    self.timers.apply(&out.timers);
                    self.route(out.ports);
                    for (_, e) in out.errors {
                        if e.kind == ErrorKind::Fatal {
                            return Err(format!("on_timer: {e}"));
                        }
                        self.timer_failed(&e.to_string());
                    }
                }
                Err(why) => self.timer_failed(&why),
            }
        }
        Ok(())
    }

    /// A fired timer's call failed: counted and said (rate-limited); its timers are gone.
    fn timer_failed(&mut self, why: &str) {
        NodeStats::add(&self.stats.errors, 1);
        if let Some(dropped) = self.stats.warnings.admit() {
            let note = crate::throttle::dropped_note(dropped);
            tracing::warn!("a fired timer failed: {why}{note}");
        }
    }

    /// Goes on with the version published last (its instance was started off this thread).
    fn switch(&mut self) {
        let Some(next) = self.versions.take(self.index) else {
            return;
        };
        let old = std::mem::replace(&mut self.instance, next.instance);
        tracing::debug!(
            from = self.version.number,
            to = next.version.number,
            "switched version"
        );
        self.version = next.version;
        self.generation = next.generation;
        self.versions
            .switched(self.index, next.generation, self.version.number, old);
    }

    fn stop(&mut self, reason: Stop) -> bool {
        self.shutdown
            .fail(format!("node `{}` stopped the graph: {reason}", self.id));
        // Dropping our senders lets everything downstream drain and end.
        self.router = Router::default();
        self.dead_letter = None;
        true
    }

    fn batch(&mut self, env: &mut Envelope) -> Result<(), Stop> {
        self.part(&mut env.batch, env.port)
    }

    /// Runs `msgs` as one call. A trap whose guest named the message it trapped on (the
    /// SDK's panic hook does) settles that message at once ([`Self::named_culprit`]).
    /// If the call fails as a whole otherwise (a trap, a malformed output
    /// batch, an error for the whole batch), it runs again in chunks of [`CHUNK`]; a
    /// chunk that fails runs one message at a time until one fails, which is taken as
    /// the culprit, and the rest of the chunk goes back to running as a batch. One poison
    /// message in a batch of 256 then costs 16 chunk calls, about half a chunk in single
    /// calls and three instance resets (cheap: see the engine's pooling). A runaway
    /// message (its call ran into the time or fuel limit) skips the chunks and costs its
    /// limit twice, not three times. The outputs of the calls after the first failure are
    /// sent together at the end (one envelope per port, not one per message).
    ///
    /// A batch that is still its producer's frame for this port is the input as it is.
    fn part(&mut self, batch: &mut Batch, port: u16) -> Result<(), Stop> {
        if batch.len() == 1 {
            // Its own culprit: a trap is not worth running again alone.
            let msgs = batch.msgs();
            return self.single(&msgs[0], port, 1).map(drop);
        }
        let input = match batch.framed(port) {
            Some(frame) => frame.clone(),
            None => message::encode(batch.msgs(), port).into(),
        };
        let inputs = batch.len();
        let (mut attempt, mut costly) = (1, false);
        loop {
            match self.call(&input).map(|out| self.decode_output(out, inputs)) {
                Ok(Ok(out)) => return self.deliver(out, batch, port),
                Ok(Err(why)) => {
                    tracing::warn!("{why}; re-running the batch in smaller calls");
                    break;
                }
                Err(CallError::Cut) => {
                    self.abandon(inputs, &self.ack.clone());
                    return Ok(());
                }
                Err(CallError::Node(e)) if e.kind == ErrorKind::Fatal => return Err(e.to_string()),
                Err(CallError::Node(e))
                    if e.kind == ErrorKind::Retryable && attempt < self.retry.attempts =>
                {
                    attempt += 1;
                    self.backoff(attempt, &e);
                }
                Err(CallError::Trap {
                    culprit: Some(i),
                    reason,
                    ..
                }) if (i as usize) < inputs => {
                    let msgs = std::mem::take(batch.msgs());
                    return self.holding(|this| this.named_culprit(&msgs, i as usize, port, &reason));
                }
                Err(CallError::Trap { costly: true, .. }) => {
                    costly = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let msgs = std::mem::take(batch.msgs());
        self.holding(|this| {
            if !costly && msgs.len() > CHUNK {
                msgs.chunks(CHUNK)
                    .try_for_each(|chunk| this.part(&mut chunk.to_vec().into(), port))
            } else {
                this.one_by_one(&msgs, port)
            }
        })
    }

    /// Runs `work` with the outputs it routes held back, then sends them together (one
    /// envelope per port); nested, the outermost sends.
    fn holding(&mut self, work: impl FnOnce(&mut Self) -> Result<(), Stop>) -> Result<(), Stop> {
        let outermost = self.held.is_none();
        if outermost {
            self.held = Some(vec![Vec::new(); self.outputs.len()]);
        }
        let result = work(self);
        if outermost && let Some(held) = self.held.take() {
            for (port, msgs) in held.into_iter().enumerate() {
                self.send(port, msgs);
            }
        }
        result
    }

    /// The guest trapped on message `i` and said so (its panic named the input): the
    /// messages before it run again as a batch (their outputs went with the trap), it
    /// goes through the error policy without running again, the rest runs as a batch.
    /// A poison message then costs one trap and a call more, not a search.
    fn named_culprit(&mut self, msgs: &[Msg], i: usize, port: u16, reason: &str) -> Result<(), Stop> {
        if i > 0 {
            self.part(&mut msgs[..i].to_vec().into(), port)?;
        }
        self.failed(&msgs[i], port, "trap", reason, 1)?;
        match &msgs[i + 1..] {
            [] => Ok(()),
            rest => self.part(&mut rest.to_vec().into(), port),
        }
    }

    /// Runs messages one at a time until one fails; the rest go back to [`Self::part`].
    fn one_by_one(&mut self, msgs: &[Msg], port: u16) -> Result<(), Stop> {
        for (i, msg) in msgs.iter().enumerate() {
            if !self.single(msg, port, 1)? {
                return match &msgs[i + 1..] {
                    [] => Ok(()),
                    rest => self.part(&mut rest.to_vec().into(), port),
                };
            }
        }
        Ok(())
    }

    /// Runs one message (retrying a retryable error); `false` if it failed for good and
    /// went through the error policy.
    fn single(&mut self, msg: &Msg, port: u16, mut attempt: u32) -> Result<bool, Stop> {
        let input = message::encode(std::slice::from_ref(msg), port);
        loop {
            let error = match self.call(&input) {
                Ok(out) => match self.decode_output(out, 1) {
                    Err(why) => {
                        return self
                            .failed(msg, port, "bad-output", &why, attempt)
                            .map(|()| false);
                    }
                    Ok(out) => match out.errors.into_iter().next() {
                        None => {
                            self.timers.apply(&out.timers);
                            self.route(out.ports);
                            return Ok(true);
                        }
                        Some((_, e)) => CallError::Node(e),
                    },
                },
                Err(e) => e,
            };
            match error {
                CallError::Node(e) if e.kind == ErrorKind::Retryable && attempt < self.retry.attempts => {
                    attempt += 1;
                    self.backoff(attempt, &e);
                }
                CallError::Node(e) => {
                    return self
                        .failed(msg, port, e.kind.as_str(), &e.message, attempt)
                        .map(|()| false);
                }
                CallError::Trap { reason, .. } => {
                    return self.failed(msg, port, "trap", &reason, attempt).map(|()| false);
                }
                CallError::Cut => {
                    self.abandon(1, &self.ack.clone());
                    return Ok(false);
                }
            }
        }
    }

    /// `n` messages of the batch acknowledged by `ack` were not processed (the graph is
    /// stopping now): the batch is never acknowledged, so a Kafka or durable run reads
    /// them again.
    fn abandon(&mut self, n: usize, ack: &Ack) {
        NodeStats::add(&self.stats.abandoned, n);
        ack.clone().fail();
    }

    /// Calls `process`; a trapped instance is replaced before returning the trap. Once
    /// the graph aborts, no call is made.
    fn call(&mut self, input: &[u8]) -> Result<Vec<u8>, CallError> {
        if self.shutdown.is_aborting() {
            return Err(CallError::Cut);
        }
        self.instance.set_watermark(self.event_time);
        let result = self.instance.process(input);
        if let Err(CallError::Trap { reason: trap, .. }) = &result {
            NodeStats::add(&self.stats.traps, 1);
            // Logged once per message that fails for good (dead letters are debug: the
            // dead-letter sink and the counters record them; 1% poison must not flood logs).
            tracing::debug!("instance trapped ({trap}); replacing it");
            if let Err(e) = self.instance.reset() {
                let why = format!("could not replace the trapped instance: {e:#}");
                return Err(CallError::Node(NodeError::fatal(why)));
            }
        }
        result
    }

    fn backoff(&self, attempt: u32, e: &NodeError) {
        NodeStats::add(&self.stats.retries, 1);
        tracing::debug!(attempt, "retrying: {e}");
        std::thread::sleep(self.retry.backoff(attempt));
    }

    /// A guest's output batch, checked: it decodes, sends only to the node's ports, and
    /// its errors name messages of the input. A guest that breaks this is not trusted
    /// with the batch; the caller treats it as a failure.
    fn decode_output(&self, out: Vec<u8>, inputs: usize) -> Result<message::Output, String> {
        if out.len() > self.max_output {
            return Err(format!(
                "returned {} bytes of output for a batch of {inputs}, over max_output_mb = {}",
                out.len(),
                self.max_output >> 20
            ));
        }
        let out = message::decode(out, self.outputs.len())
            .map_err(|e| format!("returned a malformed batch: {e}"))?;
        if let Some((index, _)) = out.errors.iter().find(|(i, _)| *i as usize >= inputs) {
            return Err(format!(
                "returned a malformed batch: an error for message {index} of a batch of {inputs}"
            ));
        }
        // Each input message ends one way: a second error for one message is not trusted.
        let mut failed: Vec<u32> = out.errors.iter().map(|(i, _)| *i).collect();
        failed.sort_unstable();
        if let Some(w) = failed.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "returned a malformed batch: two errors for message {} of a batch of {inputs}",
                w[0]
            ));
        }
        Ok(out)
    }

    /// Routes a checked output batch; per-message errors go to retry or the policy.
    fn deliver(&mut self, out: message::Output, inputs: &mut Batch, port: u16) -> Result<(), Stop> {
        self.timers.apply(&out.timers);
        self.route(out.ports);
        if out.errors.is_empty() {
            return Ok(());
        }
        let inputs = std::mem::take(inputs.msgs());
        for (index, e) in out.errors {
            let msg = &inputs[index as usize];
            if e.kind == ErrorKind::Retryable && self.retry.attempts > 1 {
                self.backoff(2, &e);
                self.single(msg, port, 2).map(drop)?;
            } else {
                self.failed(msg, port, e.kind.as_str(), &e.message, 1)?;
            }
        }
        Ok(())
    }

    fn route(&mut self, mut ports: Vec<Batch>) {
        NodeStats::add(&self.stats.emitted, ports.iter().map(Batch::len).sum());
        if self.provenance {
            for m in ports.iter_mut().flat_map(Batch::msgs) {
                let path = match m.headers.get(headers::PATH) {
                    Some(p) => format!("{},{}", String::from_utf8_lossy(p), self.id),
                    None => self.id.to_string(),
                };
                m.headers.set(headers::PATH, path.as_bytes());
            }
        }
        match &mut self.held {
            Some(held) => {
                for (port, batch) in ports.into_iter().enumerate() {
                    if !batch.is_empty() {
                        held[port].append(&mut batch.into_msgs());
                    }
                }
            }
            None => {
                for (port, batch) in ports.into_iter().enumerate() {
                    self.send(port, batch);
                }
            }
        }
    }

    fn send(&mut self, port: usize, batch: impl Into<Batch>) {
        let batch = batch.into();
        let n = batch.len();
        if n > 0 && !self.router.send(port as u16, batch, &self.ack) {
            self.dropped(port, n);
        }
    }

    /// `n` records written to `port`, which no edge leaves: counted, and said once.
    fn dropped(&mut self, port: usize, n: usize) {
        NodeStats::add(&self.stats.dropped, n);
        let name = self.outputs.get(port).map_or("?", String::as_str);
        self.stats.dropped_at(name, n);
        if std::mem::replace(&mut self.warned_drop, true) {
            return;
        }
        tracing::warn!(
            "records written to port `{name}` are dropped: no edge leaves `{}.{name}` (counted as `dropped`; this is said once)",
            self.id
        );
    }

    /// Applies the error policy to a message that failed for good.
    fn failed(&mut self, msg: &Msg, port: u16, kind: &str, error: &str, attempts: u32) -> Result<(), Stop> {
        NodeStats::add(&self.stats.errors, 1);
        self.failures += 1;
        // A request's message that fails for good answers its request, whatever else
        // the policy does with it: its caller is not left to time out.
        if let (Some(answers), Some(to)) = (&self.answers, msg.headers.get(http::REPLY_TO)) {
            let answer = Answer::Failed {
                node: self.id.to_string(),
                kind: kind.to_owned(),
                error: error.to_owned(),
            };
            answers.answer(to, answer);
        }
        let policy = if kind == ErrorKind::Fatal.as_str() {
            ErrorPolicy::Stop
        } else {
            self.policy
        };
        match policy {
            ErrorPolicy::Stop => Err(format!("{kind}: {error}")),
            ErrorPolicy::Skip => {
                NodeStats::add(&self.stats.skipped, 1);
                if let Some(dropped) = self.stats.warnings.admit() {
                    let note = crate::throttle::dropped_note(dropped);
                    tracing::warn!("skipped a message after {attempts} attempt(s): {kind}: {error}{note}");
                }
                Ok(())
            }
            ErrorPolicy::DeadLetter(_) => {
                let mut dead = msg.clone();
                dead.headers.set(headers::NODE, self.id.as_bytes());
                let port = self.inputs.get(port as usize).map_or("", String::as_str);
                dead.headers.set(headers::PORT, port.as_bytes());
                dead.headers.set(headers::KIND, kind.as_bytes());
                dead.headers.set(headers::ERROR, error.as_bytes());
                dead.headers
                    .set(headers::ATTEMPTS, attempts.to_string().as_bytes());
                dead.headers
                    .set(headers::TIME, now_millis().to_string().as_bytes());
                if let Some(dlq) = &self.dead_letter {
                    let env = Envelope {
                        port: 0,
                        batch: vec![dead].into(),
                        ack: self.ack.clone(),
                        mark: None,
                    };
                    dlq.deliver(env, &self.in_flight);
                }
                NodeStats::add(&self.stats.dead_lettered, 1);
                tracing::debug!("dead-lettered a message: {kind}: {error}");
                Ok(())
            }
        }
    }
}
