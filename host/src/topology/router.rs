//! Routing a producer's output to the replicas of every edge leaving each port:
//! fan-out copies (reference counts) to every edge; an edge spreads messages over its
//! consumer's replicas round-robin (per batch), by key hash, or to all (broadcast).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use super::checkpoint::InFlight;
use crate::manifest::Connection;
use crate::message::Msg;

/// What travels on a channel: a batch for one input port of one consumer replica.
pub struct Envelope {
    /// The consumer's input port index.
    pub port: u16,
    /// The messages, in order.
    pub msgs: Vec<Msg>,
    /// Batches read from Kafka: held by everything made from the batch until it is
    /// delivered (see [`Ack`]).
    pub ack: Option<Ack>,
}

impl Envelope {
    /// A batch for `port` that nothing waits on.
    pub fn new(port: u16, msgs: Vec<Msg>) -> Self {
        Envelope {
            port,
            msgs,
            ack: None,
        }
    }
}

/// A batch read from Kafka, held by every batch made from it on its way out: its outputs
/// until the broker acknowledged them, a sink's batch until it is written. When the last
/// holder lets go, the batch is done and its input offsets may be committed. A batch
/// whose output could not be delivered is never let go of (see [`Ack::forget`]).
#[derive(Clone)]
pub struct Ack(Arc<AckInner>);

/// The shared part of an [`Ack`]; dropping it marks the batch done.
pub struct AckInner(Arc<AtomicBool>);

impl Drop for AckInner {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Ack {
    /// An ack that sets `done` once the batch and everything made from it are done.
    pub fn new(done: Arc<AtomicBool>) -> Self {
        Ack(Arc::new(AckInner(done)))
    }

    /// The batch must never count as done (an output of it was lost): its offsets are
    /// not committed and it is read again after a restart.
    pub fn forget(self) {
        std::mem::forget(self);
    }

    /// As a raw pointer (for a Kafka delivery opaque); [`Ack::from_raw`] takes it back.
    pub fn into_raw(self) -> *const AckInner {
        Arc::into_raw(self.0)
    }

    /// # Safety
    /// `ptr` must come from [`Ack::into_raw`], and be taken back once.
    pub unsafe fn from_raw(ptr: *const AckInner) -> Self {
        // SAFETY: as the caller promises, the pointer is an `Arc` given up by `into_raw`.
        Ack(unsafe { Arc::from_raw(ptr) })
    }
}

/// Where a producer's batches go other than a channel: a Kafka topic.
pub trait Outlet: Send + Sync {
    /// Sends the batch on (blocking while the outlet is full).
    fn send(&self, env: Envelope);
}

/// The sending side of a consumer: its channel, counting what waits in it, or an outlet.
#[derive(Clone)]
pub enum Inbox {
    /// A consumer in this process.
    Channel {
        /// The channel.
        tx: SyncSender<Envelope>,
        /// Batches waiting in it.
        depth: Arc<AtomicUsize>,
    },
    /// A topic.
    Outlet(Arc<dyn Outlet>),
}

/// The receiving side of a consumer's channel.
pub struct Mailbox {
    rx: Receiver<Envelope>,
    depth: Arc<AtomicUsize>,
}

/// A bounded channel of `capacity` batches whose depth is counted in `depth`.
pub fn channel(capacity: usize, depth: Arc<AtomicUsize>) -> (Inbox, Mailbox) {
    let (tx, rx) = sync_channel(capacity);
    let inbox = Inbox::Channel {
        tx,
        depth: depth.clone(),
    };
    (inbox, Mailbox { rx, depth })
}

impl Inbox {
    /// Sends a batch, blocking while the consumer is full. A batch for a channel is
    /// counted in `in_flight` until its consumer is done with it; one for a consumer that
    /// is gone (it stopped the graph) is dropped.
    pub fn deliver(&self, env: Envelope, in_flight: &InFlight) {
        match self {
            Inbox::Channel { tx, depth } => {
                in_flight.sent();
                depth.fetch_add(1, Ordering::Relaxed);
                if tx.send(env).is_err() {
                    depth.fetch_sub(1, Ordering::Relaxed);
                    in_flight.done();
                }
            }
            Inbox::Outlet(out) => out.send(env),
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
                self.depth.fetch_sub(1, Ordering::Relaxed);
                Received::Batch(env)
            }
            Err(RecvTimeoutError::Timeout) => Received::Idle,
            Err(RecvTimeoutError::Disconnected) => Received::Closed,
        }
    }
}

impl Iterator for Mailbox {
    type Item = Envelope;

    fn next(&mut self) -> Option<Envelope> {
        let env = self.rx.recv().ok()?;
        self.depth.fetch_sub(1, Ordering::Relaxed);
        Some(env)
    }
}

/// One edge, as seen by a producer.
pub struct Route {
    targets: Vec<Inbox>,
    in_port: u16,
    connection: Connection,
    next: usize,
    pending: Vec<Vec<Msg>>,
    in_flight: InFlight,
}

impl Route {
    /// An edge to `targets` (one sender per consumer replica), arriving on `in_port`;
    /// each batch sent is counted in `in_flight`.
    pub fn new(targets: Vec<Inbox>, in_port: u16, connection: Connection, in_flight: InFlight) -> Self {
        let pending = targets.iter().map(|_| Vec::new()).collect();
        Route {
            targets,
            in_port,
            connection,
            next: 0,
            pending,
            in_flight,
        }
    }

    fn send_to(&self, i: usize, msgs: Vec<Msg>, ack: &Option<Ack>) {
        let env = Envelope {
            port: self.in_port,
            msgs,
            ack: ack.clone(),
        };
        self.targets[i].deliver(env, &self.in_flight);
    }

    /// Sends a batch along this edge; everything sent holds `ack`.
    pub fn send(&mut self, msgs: Vec<Msg>, ack: &Option<Ack>) {
        // One consumer replica, or round-robin: the batch goes as it is, uncopied.
        if self.targets.len() == 1 || self.connection == Connection::RoundRobin {
            let i = self.next % self.targets.len();
            self.next = self.next.wrapping_add(1);
            self.send_to(i, msgs, ack);
            return;
        }
        for msg in msgs {
            self.push(msg);
        }
        self.flush(ack);
    }

    fn push(&mut self, msg: Msg) {
        let n = self.targets.len();
        match self.connection {
            Connection::KeyHash => {
                let i = match &msg.key {
                    Some(key) => {
                        let mut h = DefaultHasher::new();
                        key.hash(&mut h);
                        (h.finish() % n as u64) as usize
                    }
                    None => self.next % n,
                };
                self.pending[i].push(msg);
            }
            Connection::RoundRobin => self.pending[self.next % n].push(msg),
            Connection::Broadcast => {
                for p in &mut self.pending {
                    p.push(msg.clone());
                }
            }
        }
    }

    fn flush(&mut self, ack: &Option<Ack>) {
        for i in 0..self.pending.len() {
            if !self.pending[i].is_empty() {
                let msgs = std::mem::take(&mut self.pending[i]);
                self.send_to(i, msgs, ack);
            }
        }
        self.next = self.next.wrapping_add(1);
    }
}

/// All edges leaving a producer, by output port.
#[derive(Default)]
pub struct Router {
    ports: Vec<Vec<Route>>,
    /// The [`Ack`] of the batch being processed: what it sends holds it.
    pub ack: Option<Ack>,
}

impl Router {
    /// A router for a producer with `ports` output ports.
    pub fn new(ports: usize) -> Self {
        Router {
            ports: (0..ports).map(|_| Vec::new()).collect(),
            ack: None,
        }
    }

    /// Adds an edge leaving `port`.
    pub fn add(&mut self, port: u16, route: Route) {
        self.ports[port as usize].push(route);
    }

    /// Sends `msgs` from `port` along every edge, keeping their order per edge and
    /// replica; blocks while a consumer is full.
    pub fn send(&mut self, port: u16, msgs: Vec<Msg>) {
        let Some(routes) = self.ports.get_mut(port as usize) else {
            return;
        };
        let Some((last, rest)) = routes.split_last_mut() else {
            return;
        };
        for route in rest {
            route.send(msgs.clone(), &self.ack);
        }
        last.send(msgs, &self.ack);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn replicas(n: usize) -> (Vec<Inbox>, Vec<Mailbox>) {
        (0..n).map(|_| channel(16, Arc::default())).unzip()
    }

    fn drain(rx: &Mailbox) -> Vec<String> {
        rx.rx
            .try_iter()
            .flat_map(|e| e.msgs)
            .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
            .collect()
    }

    fn keyed(key: &str, payload: &str) -> Msg {
        Msg {
            key: Some(Bytes::from(key.to_owned())),
            ..Msg::new(payload.to_owned(), None)
        }
    }

    #[test]
    fn key_hash_keeps_each_key_on_one_replica_in_order() {
        let (tx, rx) = replicas(3);
        let mut router = Router::new(1);
        router.add(0, Route::new(tx, 0, Connection::KeyHash, InFlight::default()));
        for round in 0..4 {
            router.send(
                0,
                (0..10)
                    .map(|k| keyed(&format!("k{k}"), &format!("k{k}-{round}")))
                    .collect(),
            );
        }
        let got: Vec<Vec<String>> = rx.iter().map(drain).collect();
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 40);
        for k in 0..10 {
            let holders: Vec<&Vec<String>> = got
                .iter()
                .filter(|msgs| msgs.iter().any(|m| m.starts_with(&format!("k{k}-"))))
                .collect();
            assert_eq!(holders.len(), 1, "key k{k} went to more than one replica");
            let seq: Vec<&String> = holders[0]
                .iter()
                .filter(|m| m.starts_with(&format!("k{k}-")))
                .collect();
            assert_eq!(
                seq,
                (0..4)
                    .map(|r| format!("k{k}-{r}"))
                    .collect::<Vec<_>>()
                    .iter()
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn fan_out_copies_broadcast_reaches_all_round_robin_alternates() {
        let (rr_tx, rr_rx) = replicas(2);
        let (bc_tx, bc_rx) = replicas(2);
        let mut router = Router::new(1);
        router.add(
            0,
            Route::new(rr_tx, 0, Connection::RoundRobin, InFlight::default()),
        );
        router.add(
            0,
            Route::new(bc_tx, 1, Connection::Broadcast, InFlight::default()),
        );
        router.send(0, vec![Msg::new("a", None)]);
        router.send(0, vec![Msg::new("b", None)]);
        assert_eq!(drain(&rr_rx[0]), ["a"]);
        assert_eq!(drain(&rr_rx[1]), ["b"]);
        for rx in &bc_rx {
            let envs: Vec<Envelope> = rx.rx.try_iter().collect();
            assert!(envs.iter().all(|e| e.port == 1));
            assert_eq!(
                envs.iter()
                    .flat_map(|e| &e.msgs)
                    .map(|m| &m.payload[..])
                    .collect::<Vec<_>>(),
                [&b"a"[..], b"b"]
            );
        }
    }
}
