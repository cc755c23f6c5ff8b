//! The host's message envelope and its conversion to and from the batch framing.
//!
//! Payloads, keys and header blocks are [`Bytes`] slices of the buffer they arrived in:
//! decoding a node's output copies nothing, fan-out clones are reference counts.

use bytes::{Bytes, BytesMut};
use flowhost_sdk::NodeError;
use flowhost_sdk::frame::{
    BatchReader, BatchWriter, FrameError, HeadersRef, Item, RecordRef, TimeDomain, TimerOp, TimerRef,
    encode_headers,
};

/// Header names on dead-lettered messages.
pub mod headers {
    /// The node that failed.
    pub const NODE: &str = "flowhost-error-node";
    /// `invalid-input`, `retryable`, `fatal` or `trap`.
    pub const KIND: &str = "flowhost-error-kind";
    /// The node's input port the message arrived on.
    pub const PORT: &str = "flowhost-error-port";
    /// The error text.
    pub const ERROR: &str = "flowhost-error";
    /// How many times the message was tried.
    pub const ATTEMPTS: &str = "flowhost-error-attempts";
    /// When it was given up on, milliseconds since the epoch.
    pub const TIME: &str = "flowhost-error-time";
    /// The nodes a message passed, comma-separated (with `provenance = true`).
    pub const PATH: &str = "flowhost-path";
}

/// One message moving through the graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Msg {
    /// Partitioning key.
    pub key: Option<Bytes>,
    /// Body.
    pub payload: Bytes,
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
    /// Headers, kept in their encoded form.
    pub headers: Headers,
}

impl Msg {
    /// A message with a payload and a timestamp.
    pub fn new(payload: impl Into<Bytes>, timestamp: Option<i64>) -> Self {
        Msg {
            payload: payload.into(),
            timestamp,
            ..Msg::default()
        }
    }
}

/// Headers as an encoded block (see `guest-sdk/FRAMING.md`), so they pass through nodes
/// without being decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    count: u16,
    raw: Bytes,
}

impl Headers {
    /// Headers from `(name, value)` pairs.
    pub fn from_pairs<'h>(pairs: impl IntoIterator<Item = (&'h str, &'h [u8])>) -> Self {
        let (count, raw) = encode_headers(pairs);
        Headers {
            count,
            raw: raw.into(),
        }
    }

    /// These headers without the ones `drop` picks.
    pub fn without(&self, drop: impl Fn(&str) -> bool) -> Self {
        Headers::from_pairs(self.iter().filter(|(n, _)| !drop(n)))
    }

    /// The `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.view().into_iter().flat_map(|h| h.iter())
    }

    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.view().and_then(|h| h.get(name))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sets `name` to `value`, replacing any earlier values.
    pub fn set(&mut self, name: &str, value: &[u8]) {
        let kept: Vec<(&str, &[u8])> = self.iter().filter(|(n, _)| *n != name).collect();
        *self = Headers::from_pairs(kept.into_iter().chain([(name, value)]));
    }

    fn view(&self) -> Option<HeadersRef<'_>> {
        // Blocks are validated when decoded from a guest, and encoded by the host otherwise.
        HeadersRef::parse(self.count, &self.raw).ok()
    }
}

/// Frames `msgs` as one input batch arriving on input port `port`.
pub fn encode(msgs: &[Msg], port: u16) -> Vec<u8> {
    let bytes: usize = msgs
        .iter()
        .map(|m| m.payload.len() + m.headers.raw.len() + 24)
        .sum();
    let mut w = BatchWriter::with_capacity(bytes);
    for m in msgs {
        w.record(
            port,
            m.timestamp,
            m.key.as_deref(),
            &m.payload,
            (m.headers.count, &m.headers.raw),
        );
    }
    w.finish()
}

/// Frames fired timers of `domain` (time, key) as one input batch.
pub fn encode_fired(domain: TimeDomain, fired: &[(i64, Vec<u8>)]) -> Vec<u8> {
    let bytes: usize = fired.iter().map(|(_, k)| k.len() + 16).sum();
    let mut w = BatchWriter::with_capacity(bytes);
    for (time, key) in fired {
        w.timer(&TimerRef {
            op: TimerOp::Fired,
            domain,
            time: *time,
            key,
        });
    }
    w.finish()
}

/// A timer a node set or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerChange {
    /// Set or deleted.
    pub op: TimerOp,
    /// Its clock.
    pub domain: TimeDomain,
    /// When it fires.
    pub time: i64,
    /// Its key.
    pub key: Vec<u8>,
}

impl TimerChange {
    /// As a frame item.
    pub fn as_ref(&self) -> TimerRef<'_> {
        TimerRef {
            op: self.op,
            domain: self.domain,
            time: self.time,
            key: &self.key,
        }
    }
}

/// Messages on their way between vertices: decoded, or still the frame a guest wrote.
///
/// A guest's output whose items are all records of one port travels as that frame: a
/// consumer node whose input port is the same takes it as its input batch whole (no
/// decode into messages, no re-encode, one reference count for the batch); whoever needs
/// the messages themselves (a sink, a topic, key-hash routing over several replicas, a
/// failed call run message by message) decodes them then, zero-copy.
#[derive(Clone, Debug)]
pub enum Batch {
    /// Decoded messages.
    Msgs(Vec<Msg>),
    /// A checked output frame of `count` records, all on port `port` (see [`decode`]).
    Frame {
        /// The frame: a valid input batch of records on port `port`.
        bytes: Bytes,
        /// Its records.
        count: usize,
        /// The port in its records.
        port: u16,
    },
}

impl Default for Batch {
    fn default() -> Self {
        Batch::Msgs(Vec::new())
    }
}

impl From<Vec<Msg>> for Batch {
    fn from(msgs: Vec<Msg>) -> Self {
        Batch::Msgs(msgs)
    }
}

impl Batch {
    /// Messages in the batch.
    pub fn len(&self) -> usize {
        match self {
            Batch::Msgs(m) => m.len(),
            Batch::Frame { count, .. } => *count,
        }
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages, decoded here if they were still a frame.
    pub fn msgs(&mut self) -> &mut Vec<Msg> {
        if let Batch::Frame { bytes, .. } = self {
            *self = Batch::Msgs(records(bytes));
        }
        match self {
            Batch::Msgs(m) => m,
            Batch::Frame { .. } => unreachable!("decoded just above"),
        }
    }

    /// The messages, decoded if they were still a frame.
    pub fn into_msgs(mut self) -> Vec<Msg> {
        std::mem::take(self.msgs())
    }

    /// The batch as an input frame for input port `port`, if it is one already.
    pub fn framed(&self, port: u16) -> Option<&Bytes> {
        match self {
            Batch::Frame { bytes, port: p, .. } if *p == port => Some(bytes),
            _ => None,
        }
    }
}

/// The records of a frame [`decode`] checked, as messages slicing it.
fn records(buf: &Bytes) -> Vec<Msg> {
    let mut msgs = Vec::new();
    // Checked once already: nothing here fails.
    for item in BatchReader::new(buf).into_iter().flatten().flatten() {
        if let Item::Record(r) = item {
            msgs.push(record_msg(buf, &r));
        }
    }
    msgs
}

fn record_msg(buf: &Bytes, r: &RecordRef<'_>) -> Msg {
    let (count, raw) = r.headers.raw();
    Msg {
        key: r.key.map(|k| buf.slice_ref(k)),
        payload: buf.slice_ref(r.payload),
        timestamp: r.timestamp,
        headers: Headers {
            count,
            raw: buf.slice_ref(raw),
        },
    }
}

/// A node's output batch, checked.
#[derive(Debug, Default)]
pub struct Output {
    /// The messages of each output port, in emission order (order across ports does not
    /// matter: each port feeds its own edges).
    pub ports: Vec<Batch>,
    /// `(input index, error)` for each message the node failed on.
    pub errors: Vec<(u32, NodeError)>,
    /// Timers it set or deleted, in order.
    pub timers: Vec<TimerChange>,
}

impl Output {
    /// Records on all ports.
    pub fn records(&self) -> usize {
        self.ports.iter().map(Batch::len).sum()
    }
}

/// Checks an output batch whole; `ports` is the number of connected output ports. A
/// batch of records on one port only stays a frame ([`Batch::Frame`]); otherwise its
/// records are decoded per port, zero-copy.
pub fn decode(buf: Vec<u8>, ports: usize) -> Result<Output, FrameError> {
    let buf = Bytes::from(buf);
    let mut out = Output {
        ports: vec![Batch::default(); ports],
        errors: Vec::new(),
        timers: Vec::new(),
    };
    // The port of every record so far, while there is one; `mixed` once there is not
    // (two ports, or items other than records).
    let (mut only, mut mixed, mut records) = (None, false, 0);
    for item in BatchReader::new(&buf)? {
        match item? {
            Item::Record(r) => {
                if r.port as usize >= ports {
                    return Err(FrameError {
                        offset: 0,
                        what: "an output port the node was given",
                    });
                }
                records += 1;
                mixed |= only.is_some_and(|p| p != r.port);
                only = Some(r.port);
            }
            Item::Error(e) => {
                mixed = true;
                out.errors.push((
                    e.input_index,
                    NodeError {
                        kind: e.kind,
                        message: e.message.to_owned(),
                    },
                ));
            }
            Item::Timer(t) if t.op == TimerOp::Fired => {
                return Err(FrameError {
                    offset: 0,
                    what: "a timer set or deleted, not fired, in an output batch",
                });
            }
            Item::Timer(t) => {
                mixed = true;
                out.timers.push(TimerChange {
                    op: t.op,
                    domain: t.domain,
                    time: t.time,
                    key: t.key.to_vec(),
                });
            }
        }
    }
    match only {
        None => {}
        Some(port) if !mixed => {
            out.ports[port as usize] = Batch::Frame {
                bytes: buf,
                count: records,
                port,
            };
        }
        Some(_) => {
            for item in BatchReader::new(&buf)? {
                if let Item::Record(r) = item? {
                    out.ports[r.port as usize].msgs().push(record_msg(&buf, &r));
                }
            }
        }
    }
    Ok(out)
}

/// Builds `count` messages over one shared buffer: `fill(i, buf)` appends message `i`'s payload.
pub fn batch_from(
    count: usize,
    timestamp: Option<i64>,
    mut fill: impl FnMut(usize, &mut BytesMut),
) -> Vec<Msg> {
    let mut buf = BytesMut::new();
    let mut ends = Vec::with_capacity(count);
    for i in 0..count {
        fill(i, &mut buf);
        ends.push(buf.len());
    }
    let buf = buf.freeze();
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let m = Msg::new(buf.slice(start..end), timestamp);
            start = end;
            m
        })
        .collect()
}

/// Appends `n` as zero-padded decimal, exactly `size` bytes (the lowest digits if longer).
pub fn sequence_payload(mut n: u64, size: usize, buf: &mut BytesMut) {
    // No `format!`: this runs once per generated message.
    let mut digits = [b'0'; 20];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let tail = &digits[digits.len().saturating_sub(size)..];
    buf.resize(buf.len() + size - tail.len(), b'0');
    buf.extend_from_slice(tail);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_keeps_everything() {
        let mut m = Msg::new(&b"payload"[..], Some(42));
        m.key = Some(Bytes::from_static(b"k"));
        m.headers.set("a", b"1");
        m.headers.set("b", b"2");
        m.headers.set("a", b"3");
        assert_eq!(
            m.headers.iter().collect::<Vec<_>>(),
            [("b", &b"2"[..]), ("a", &b"3"[..])]
        );
        let out = decode(encode(&[m.clone(), Msg::default()], 1), 2).unwrap();
        let ports: Vec<Vec<Msg>> = out.ports.into_iter().map(Batch::into_msgs).collect();
        assert_eq!(ports, [vec![], vec![m, Msg::default()]]);
    }

    #[test]
    fn records_of_one_port_stay_a_frame_that_is_an_input_batch_as_it_is() {
        let msgs = [Msg::new(&b"a"[..], Some(1)), Msg::new(&b"b"[..], None)];
        let frame = encode(&msgs, 1);
        let out = decode(frame.clone(), 2).unwrap();
        let batch = &out.ports[1];
        assert_eq!(batch.framed(1).map(|b| &b[..]), Some(&frame[..]));
        assert_eq!(
            batch.framed(0),
            None,
            "records of port 1 are not an input for port 0"
        );
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.clone().into_msgs(), msgs);
        // Records on two ports, or an error with them: decoded per port.
        let mut two = BatchWriter::default();
        two.record(0, None, None, b"x", (0, &[]));
        two.record(1, None, None, b"y", (0, &[]));
        let out = decode(two.finish(), 2).unwrap();
        assert!(
            out.ports
                .iter()
                .all(|b| b.framed(0).is_none() && b.framed(1).is_none())
        );
        assert_eq!(out.records(), 2);
    }

    #[test]
    fn a_port_the_node_was_not_given_is_an_error() {
        let buf = encode(&[Msg::default()], 3);
        assert!(decode(buf, 2).is_err());
    }

    #[test]
    fn sequence_payloads_have_the_exact_size() {
        let mut b = BytesMut::new();
        sequence_payload(42, 4, &mut b);
        sequence_payload(123_456, 3, &mut b);
        sequence_payload(7, 24, &mut b);
        assert_eq!(&b[..], format!("0042456{:024}", 7).as_bytes());
    }

    #[test]
    fn batch_from_slices_one_buffer() {
        let msgs = batch_from(3, None, |i, b| b.extend_from_slice(format!("m{i}").as_bytes()));
        let payloads: Vec<&[u8]> = msgs.iter().map(|m| &m.payload[..]).collect();
        assert_eq!(payloads, [&b"m0"[..], b"m1", b"m2"]);
    }
}
