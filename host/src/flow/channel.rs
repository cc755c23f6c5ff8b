//! Channels between the vertices of one process: bounded (a slow consumer holds its
//! producers back), counted (queue depth for status, batches in flight for
//! checkpoints), and one sending type whether the consumer is a channel in this
//! process or an [`Outlet`] such as a Kafka topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::Ack;
use super::watermark::Marked;
use crate::message::{Batch, Msg};

/// What travels on a channel: a batch for one input port of one consumer replica.
pub struct Envelope {
    /// The consumer's input port index.
    pub port: u16,
    /// The messages, in order.
    pub batch: Batch,
    /// The acknowledgement of the input batch it was made from.
    pub ack: Ack,
    /// What its producer says about event time after it (see [`super::watermark`]);
    /// an envelope with no messages carries only this.
    pub mark: Option<Marked>,
}

impl Envelope {
    /// A batch for `port` that nothing waits on.
    pub fn new(port: u16, msgs: Vec<Msg>) -> Self {
        Envelope {
            port,
            batch: msgs.into(),
            ack: Ack::none(),
            mark: None,
        }
    }
}

/// Where a producer's batches go other than a channel (e.g. a Kafka topic).
pub trait Outlet: Send + Sync {
    /// Sends the batch on (blocking while the outlet is full).
    fn send(&self, env: Envelope);
}

/// The sending side of a consumer: its channel, counting what waits in it, or an outlet.
#[derive(Clone)]
pub enum Sender {
    /// A consumer in this process.
    Channel {
        /// The channel.
        tx: SyncSender<Envelope>,
        /// Batches waiting in it.
        depth: Arc<AtomicUsize>,
    },
    /// Another place (a topic).
    Outlet(Arc<dyn Outlet>),
    /// A loop node's channel ([`looped_channel`]): a feedback edge's sender never waits.
    Looped {
        /// The channel (unbounded: `room` bounds the senders that wait).
        tx: std::sync::mpsc::Sender<Envelope>,
        /// Batches waiting in it.
        depth: Arc<AtomicUsize>,
        /// Room left for the senders that wait.
        room: Arc<Room>,
        /// Whether this sender waits for room (every input but a feedback edge).
        waits: bool,
    },
}

/// The room in a loop node's channel: its capacity, for the senders that wait.
pub struct Room {
    capacity: usize,
    lock: Mutex<()>,
    freed: Condvar,
    /// The consumer is gone: nobody waits any more.
    closed: AtomicBool,
}

impl Room {
    fn wait_below(&self, depth: &AtomicUsize) {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while depth.load(Ordering::SeqCst) >= self.capacity && !self.closed.load(Ordering::SeqCst) {
            guard = self
                .freed
                .wait_timeout(guard, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn free(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.freed.notify_all();
    }
}

/// The receiving side of a consumer's channel.
pub struct Mailbox {
    rx: Receiver<Envelope>,
    depth: Arc<AtomicUsize>,
    /// A loop node's room, freed as it takes batches.
    room: Option<Arc<Room>>,
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        if let Some(room) = &self.room {
            room.closed.store(true, Ordering::SeqCst);
            room.free();
        }
    }
}

/// A bounded channel of `capacity` batches whose depth is counted in `depth`.
pub fn channel(capacity: usize, depth: Arc<AtomicUsize>) -> (Sender, Mailbox) {
    let (tx, rx) = sync_channel(capacity);
    let sender = Sender::Channel {
        tx,
        depth: depth.clone(),
    };
    (
        sender,
        Mailbox {
            rx,
            depth,
            room: None,
        },
    )
}

/// A loop node's channel of `capacity` batches: the first sender waits for room like a
/// [`channel`]'s, the second (for feedback edges) never waits (see `feedback`).
pub fn looped_channel(capacity: usize, depth: Arc<AtomicUsize>) -> (Sender, Sender, Mailbox) {
    let (tx, rx) = std::sync::mpsc::channel();
    let room = Arc::new(Room {
        capacity: capacity.max(1),
        lock: Mutex::new(()),
        freed: Condvar::new(),
        closed: AtomicBool::new(false),
    });
    let sender = |waits| Sender::Looped {
        tx: tx.clone(),
        depth: depth.clone(),
        room: room.clone(),
        waits,
    };
    (
        sender(true),
        sender(false),
        Mailbox {
            rx,
            depth,
            room: Some(room),
        },
    )
}

impl Sender {
    /// Sends a batch, blocking while the consumer is full. A batch for a channel is
    /// counted in `in_flight` until its consumer is done with it; one for a consumer that
    /// is gone (it stopped the graph) is dropped.
    pub fn deliver(&self, env: Envelope, in_flight: &InFlight) {
        match self {
            Sender::Channel { tx, depth } => {
                in_flight.sent();
                depth.fetch_add(1, Ordering::Relaxed);
                if tx.send(env).is_err() {
                    depth.fetch_sub(1, Ordering::Relaxed);
                    in_flight.done();
                }
            }
            Sender::Outlet(out) => out.send(env),
            Sender::Looped {
                tx,
                depth,
                room,
                waits,
            } => {
                in_flight.sent();
                if *waits {
                    room.wait_below(depth);
                }
                depth.fetch_add(1, Ordering::SeqCst);
                if tx.send(env).is_err() {
                    depth.fetch_sub(1, Ordering::SeqCst);
                    in_flight.done();
                }
            }
        }
    }
}

/// What waiting on a [`Mailbox`] gave.
pub enum Received {
    /// The next batch.
    Batch(Envelope),
    /// Nothing came in time.
    Idle,
    /// Every producer is gone and the channel is empty.
    Closed,
}

impl Mailbox {
    /// The next batch, waiting at most `timeout`.
    pub fn recv(&self, timeout: Duration) -> Received {
        match self.rx.recv_timeout(timeout) {
            Ok(env) => {
                self.took();
                Received::Batch(env)
            }
            Err(RecvTimeoutError::Timeout) => Received::Idle,
            Err(RecvTimeoutError::Disconnected) => Received::Closed,
        }
    }
}

impl Mailbox {
    /// A batch was taken out: one less waiting, room for a sender that waits.
    fn took(&self) {
        self.depth.fetch_sub(1, Ordering::SeqCst);
        if let Some(room) = &self.room {
            room.free();
        }
    }

    /// What the channel holds now, without waiting (for tests).
    #[cfg(test)]
    pub fn drain_now(&self) -> impl Iterator<Item = Envelope> + '_ {
        self.rx.try_iter().inspect(|_| self.took())
    }
}

impl Iterator for Mailbox {
    type Item = Envelope;

    fn next(&mut self) -> Option<Envelope> {
        let env = self.rx.recv().ok()?;
        self.took();
        Some(env)
    }
}

/// Batches sent into channels and not yet fully handled by their consumer: when it is
/// zero, nothing is in flight between the vertices of this process. Work that starts on
/// its own (a timer the wall clock fires) counts here too, and is held off while the
/// count is frozen for a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>, Arc<std::sync::atomic::AtomicBool>);

impl InFlight {
    /// Work that starts on its own may start: counted in flight until `done`; `false`
    /// (nothing counted) while frozen.
    pub fn start_own(&self) -> bool {
        self.sent();
        if self.1.load(Ordering::SeqCst) {
            self.done();
            return false;
        }
        true
    }

    /// Freezes (a checkpoint is waiting for nothing in flight) or thaws: while frozen,
    /// `start_own` starts nothing.
    pub fn freeze(&self, frozen: bool) {
        self.1.store(frozen, Ordering::SeqCst);
    }

    /// A batch is about to enter a channel.
    pub fn sent(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// A batch was handled (its outputs, if any, already counted as sent).
    pub fn done(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }
}
