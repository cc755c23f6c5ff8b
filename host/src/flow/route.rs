//! Routing a producer's output to the consumers of every edge leaving each port:
//! fan-out copies (reference counts) to every edge; an edge spreads messages over its
//! consumer's replicas round-robin (per batch), by key hash, or to all (broadcast).

use std::hash::BuildHasher;

use bytes::Bytes;
use flowhost_sdk::frame::{BatchReader, BatchWriter, Item};

use std::sync::Arc;

use super::feedback::{LoopGate, Looping};
use super::watermark::{Mark, Marked};
use super::{Ack, Envelope, InFlight, Sender};
use crate::manifest::Connection;
use crate::message::{Batch, Msg};

/// The hash that picks a key's replica: foldhash with a fixed seed, so a key goes to the
/// same replica in every run (replicas' state is keyed by index), several times cheaper
/// than std's SipHash. Over Kafka, Kafka's partitioner decides instead.
fn replica_of(key: &[u8], replicas: usize) -> usize {
    (foldhash::fast::FixedState::with_seed(0x666c_6f77_686f_7374).hash_one(key) % replicas as u64) as usize
}

/// One edge, as seen by a producer.
pub struct Route {
    targets: Vec<Sender>,
    in_port: u16,
    connection: Connection,
    next: usize,
    pending: Vec<Vec<Msg>>,
    in_flight: InFlight,
    /// Per consumer replica, the mark it was sent last.
    marked: Vec<Option<Mark>>,
    /// Its part in a loop, if any.
    looping: Option<Looping>,
}

impl Drop for Route {
    fn drop(&mut self) {
        if let Some(Looping::Enters(gate)) = &self.looping {
            gate.leave();
        }
    }
}

impl Route {
    /// An edge to `targets` (one sender per consumer replica), arriving on `in_port`;
    /// each batch sent is counted in `in_flight`.
    pub fn new(targets: Vec<Sender>, in_port: u16, connection: Connection, in_flight: InFlight) -> Self {
        let pending = targets.iter().map(|_| Vec::new()).collect();
        let marked = targets.iter().map(|_| None).collect();
        Route {
            targets,
            in_port,
            connection,
            next: 0,
            pending,
            in_flight,
            marked,
            looping: None,
        }
    }

    /// This edge enters `gate`'s loop from outside: the loop cannot end while it lives.
    pub fn entering(mut self, gate: Arc<LoopGate>) -> Self {
        gate.enter();
        self.looping = Some(Looping::Enters(gate));
        self
    }

    /// This edge is a feedback edge of `gate`'s loop, letting messages around at most
    /// `max` times.
    pub fn feeding(mut self, gate: Arc<LoopGate>, max: Option<u32>) -> Self {
        self.looping = Some(Looping::Feeds(gate, max));
        self
    }

    fn feeds(&self) -> bool {
        matches!(self.looping, Some(Looping::Feeds(..)))
    }

    fn send_to(&mut self, i: usize, batch: Batch, ack: &Ack, mark: Option<Marked>) {
        if let Some(m) = mark {
            self.marked[i] = Some(m.mark);
        }
        let env = Envelope {
            port: self.in_port,
            batch,
            ack: ack.clone(),
            mark,
        };
        self.targets[i].deliver(env, &self.in_flight);
    }

    /// Sends a batch along this edge, with the producer's current mark; everything sent
    /// holds `ack`.
    pub fn send(&mut self, batch: impl Into<Batch>, ack: &Ack, mark: Option<Marked>) {
        let mut batch = batch.into();
        if let Some(Looping::Feeds(gate, max)) = &self.looping {
            let around = gate.around(batch.into_msgs(), *max);
            if around.is_empty() {
                return;
            }
            batch = around.into();
        }
        // One consumer replica, or round-robin: the batch goes as it is (a frame stays
        // a frame), uncopied.
        if self.targets.len() == 1 || self.connection == Connection::RoundRobin {
            let i = self.next % self.targets.len();
            self.next = self.next.wrapping_add(1);
            self.send_to(i, batch, ack, mark);
            return;
        }
        if self.connection == Connection::KeyHash
            && let Batch::Frame { bytes, .. } = &batch
        {
            self.split_frame(bytes, ack, mark);
            return;
        }
        for msg in batch.into_msgs() {
            self.push(msg);
        }
        self.flush(ack, mark);
    }

    /// A frame by key hash over several replicas: each record is copied once, straight
    /// into its replica's frame (with this edge's input port), and each replica gets a
    /// frame; no message is made of it. Records without a key go where `push` would
    /// send them.
    fn split_frame(&mut self, bytes: &Bytes, ack: &Ack, mark: Option<Marked>) {
        let n = self.targets.len();
        let mut frames: Vec<(BatchWriter, usize)> = (0..n)
            .map(|_| (BatchWriter::with_capacity(bytes.len() / n + 64), 0))
            .collect();
        // The frame was checked whole when it was made: nothing here fails.
        for item in BatchReader::new(bytes).into_iter().flatten().flatten() {
            if let Item::Record(r) = item {
                let i = r.key.map_or(self.next % n, |key| replica_of(key, n));
                let (frame, count) = &mut frames[i];
                frame.record(self.in_port, r.timestamp, r.key, r.payload, r.headers.raw());
                *count += 1;
            }
        }
        for (i, (frame, count)) in frames.into_iter().enumerate() {
            if count > 0 {
                let batch = Batch::Frame {
                    bytes: frame.finish().into(),
                    count,
                    port: self.in_port,
                };
                self.send_to(i, batch, ack, mark);
            }
        }
        self.next = self.next.wrapping_add(1);
    }

    /// Tells every consumer replica the producer's new mark (those told it already are
    /// not told again, but an outlet is: it keeps its readers' watermark alive, see
    /// `transport::kafka::marks`): watermarks reach every replica, whatever the connection.
    pub fn mark(&mut self, mark: Marked) {
        // (A loop's watermark is its inputs' from outside: none travels around it.)
        if self.feeds() {
            return;
        }
        for i in 0..self.targets.len() {
            if self.marked[i] != Some(mark.mark) || matches!(self.targets[i], Sender::Outlet(_)) {
                self.send_to(i, Batch::default(), &Ack::none(), Some(mark));
            }
        }
    }

    fn push(&mut self, msg: Msg) {
        let n = self.targets.len();
        match self.connection {
            Connection::KeyHash => {
                let i = match &msg.key {
                    Some(key) => replica_of(key, n),
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

    fn flush(&mut self, ack: &Ack, mark: Option<Marked>) {
        for i in 0..self.pending.len() {
            if !self.pending[i].is_empty() {
                let msgs = std::mem::take(&mut self.pending[i]);
                self.send_to(i, msgs.into(), ack, mark);
            }
        }
        self.next = self.next.wrapping_add(1);
    }
}

/// All edges leaving a producer, by output port.
#[derive(Default)]
pub struct Router {
    ports: Vec<Vec<Route>>,
    /// The producer's current mark, sent with every batch (none before its first).
    mark: Option<Marked>,
}

impl Router {
    /// A router for a producer with `ports` output ports.
    pub fn new(ports: usize) -> Self {
        Router {
            ports: (0..ports).map(|_| Vec::new()).collect(),
            mark: None,
        }
    }

    /// The producer says `mark` from now on: every consumer replica of every edge is
    /// told (after what was sent before), unless it was told already.
    pub fn mark(&mut self, mark: Marked) {
        self.mark = Some(mark);
        for route in self.ports.iter_mut().flatten() {
            route.mark(mark);
        }
    }

    /// The producer's current mark.
    pub fn current_mark(&self) -> Option<Marked> {
        self.mark
    }

    /// Whether it holds feedback edges.
    pub fn feeds_back(&self) -> bool {
        self.ports.iter().flatten().any(Route::feeds)
    }

    /// Lets go of its feedback edges (their loop has ended).
    pub fn drop_feedback(&mut self) {
        for routes in &mut self.ports {
            routes.retain(|r| !r.feeds());
        }
    }

    /// Adds an edge leaving `port`.
    pub fn add(&mut self, port: u16, route: Route) {
        self.ports[port as usize].push(route);
    }

    /// Sends `msgs` from `port` along every edge, keeping their order per edge and
    /// replica; blocks while a consumer is full. Everything sent holds `ack`. `false` if
    /// no edge leaves `port`: the messages are dropped (the caller counts them).
    pub fn send(&mut self, port: u16, msgs: impl Into<Batch>, ack: &Ack) -> bool {
        let msgs = msgs.into();
        let Some(routes) = self.ports.get_mut(port as usize) else {
            return false;
        };
        let Some((last, rest)) = routes.split_last_mut() else {
            return false;
        };
        for route in rest {
            route.send(msgs.clone(), ack, self.mark);
        }
        last.send(msgs, ack, self.mark);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Mailbox, channel};
    use std::sync::Arc;

    fn replicas(n: usize) -> (Vec<Sender>, Vec<Mailbox>) {
        (0..n).map(|_| channel(16, Arc::default())).unzip()
    }

    fn drain(rx: &Mailbox) -> Vec<String> {
        rx.drain_now()
            .flat_map(|e| e.batch.into_msgs())
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
                    .collect::<Vec<_>>(),
                &Ack::none(),
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
    fn key_hash_splits_a_frame_into_frames_as_it_splits_messages() {
        let msgs: Vec<Msg> = (0..50)
            .map(|i| keyed(&format!("k{}", i % 7), &format!("m{i}")))
            .collect();
        let spread = |batch: Batch| {
            let (tx, rx) = replicas(3);
            let mut router = Router::new(1);
            router.add(0, Route::new(tx, 2, Connection::KeyHash, InFlight::default()));
            router.send(0, batch, &Ack::none());
            rx.iter()
                .map(|r| r.drain_now().map(|e| (e.port, e.batch)).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let frame = crate::message::decode(crate::message::encode(&msgs, 0), 1)
            .unwrap()
            .ports
            .remove(0);
        assert!(frame.framed(0).is_some());
        let from_frame = spread(frame);
        let from_msgs = spread(msgs.into());
        assert_eq!(from_frame.len(), from_msgs.len());
        for (framed, plain) in from_frame.into_iter().zip(from_msgs) {
            // Each replica gets one frame, for the edge's input port, holding exactly the
            // messages the message path gives it, in order.
            assert!(framed.iter().all(|(port, b)| *port == 2 && b.framed(2).is_some()));
            let got: Vec<Msg> = framed.into_iter().flat_map(|(_, b)| b.into_msgs()).collect();
            let want: Vec<Msg> = plain.into_iter().flat_map(|(_, b)| b.into_msgs()).collect();
            assert!(!want.is_empty());
            assert_eq!(got, want);
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
        router.send(0, vec![Msg::new("a", None)], &Ack::none());
        router.send(0, vec![Msg::new("b", None)], &Ack::none());
        assert_eq!(drain(&rr_rx[0]), ["a"]);
        assert_eq!(drain(&rr_rx[1]), ["b"]);
        for rx in &bc_rx {
            let envs: Vec<Envelope> = rx.drain_now().collect();
            assert!(envs.iter().all(|e| e.port == 1));
            assert_eq!(
                envs.into_iter()
                    .flat_map(|e| e.batch.into_msgs())
                    .map(|m| m.payload)
                    .collect::<Vec<_>>(),
                [&b"a"[..], b"b"]
            );
        }
    }
}
