//! The flat batch framing that crosses the host/guest boundary.
//!
//! One `list<u8>` carries a whole batch; the layout is specified in `FRAMING.md` beside
//! this crate so that nodes can be written in any language. All integers little-endian:
//!
//! ```text
//! batch  := count:u32 item*
//! item   := data | error | timer
//! data   := flags:u8 port:u16 [timestamp:i64] [key_len:u32 key] payload_len:u32 payload
//!           header_count:u16 (name_len:u16 name value_len:u32 value)*
//! error  := flags:u8(=0x80) kind:u8 input_index:u32 message_len:u32 message
//! timer  := flags:u8(=0x40) op:u8 domain:u8 time:i64 key_len:u32 key
//! ```
//!
//! `flags` bit 0: a key follows; bit 1: a timestamp follows; bit 6: a timer item; bit 7:
//! an error item.
//! Decoding borrows from the buffer: no payload, key or header is copied.

use std::fmt;

/// Flag: the record carries a key.
pub const HAS_KEY: u8 = 0x01;
/// Flag: the record carries a timestamp.
pub const HAS_TIMESTAMP: u8 = 0x02;
/// Flag: the item is a per-message error, not a data record.
pub const ERROR: u8 = 0x80;
/// Flag: the item is a timer: set or deleted (output batches), or fired (input batches).
pub const TIMER: u8 = 0x40;

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Fires once the node's watermark reaches its time.
    EventTime,
    /// Fires once the wall clock reaches its time.
    ProcessingTime,
}

/// What a timer item says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerOp {
    /// Output: set this timer (a timer already set for the same domain, time and key is
    /// not set twice).
    Set,
    /// Output: delete it, if set.
    Delete,
    /// Input: it fired.
    Fired,
}

/// A timer item: a node's timer set, deleted or fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerRef<'a> {
    /// Set, deleted or fired.
    pub op: TimerOp,
    /// Its clock.
    pub domain: TimeDomain,
    /// When it fires, in milliseconds since the Unix epoch.
    pub time: i64,
    /// What the node set it for.
    pub key: &'a [u8],
}

/// The kind of a node error, as in the WIT `error-kind` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bad data: the node's `on_error` policy applies.
    InvalidInput,
    /// A passing failure: the host retries before applying the policy.
    Retryable,
    /// The node cannot go on.
    Fatal,
}

impl ErrorKind {
    fn code(self) -> u8 {
        match self {
            ErrorKind::InvalidInput => 0,
            ErrorKind::Retryable => 1,
            ErrorKind::Fatal => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => ErrorKind::InvalidInput,
            1 => ErrorKind::Retryable,
            2 => ErrorKind::Fatal,
            _ => return None,
        })
    }

    /// The kebab-case name used in WIT, logs and dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Retryable => "retryable",
            ErrorKind::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A buffer that does not follow the framing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    /// Byte offset where decoding failed.
    pub offset: usize,
    /// What was expected there.
    pub what: &'static str,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed batch at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for FrameError {}

/// One data record, borrowed from a batch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Input port (in an input batch) or output port (in an output batch), as an index.
    pub port: u16,
    /// Event time in milliseconds since the Unix epoch, if known.
    pub timestamp: Option<i64>,
    /// The record key, used for partitioning.
    pub key: Option<&'a [u8]>,
    /// The record body.
    pub payload: &'a [u8],
    /// The encoded header block; iterate it with [`HeadersRef::iter`].
    pub headers: HeadersRef<'a>,
}

/// A per-message error item of an output batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorRef<'a> {
    /// What kind of error.
    pub kind: ErrorKind,
    /// Index of the input message (in its batch) that failed.
    pub input_index: u32,
    /// The error text.
    pub message: &'a str,
}

/// One item of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A data record.
    Record(RecordRef<'a>),
    /// A per-message error (output batches only).
    Error(ErrorRef<'a>),
    /// A timer set or deleted (output batches), or fired (input batches).
    Timer(TimerRef<'a>),
}

/// The header block of a record: `count` pairs, decoded lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HeadersRef<'a> {
    count: u16,
    raw: &'a [u8],
}

impl<'a> HeadersRef<'a> {
    /// Checks an encoded block of `count` headers (as [`HeadersRef::raw`] returns it).
    pub fn parse(count: u16, raw: &'a [u8]) -> Result<Self, FrameError> {
        let mut cursor = Cursor { buf: raw, pos: 0 };
        for _ in 0..count {
            cursor.header()?;
        }
        if cursor.pos != raw.len() {
            return Err(FrameError {
                offset: cursor.pos,
                what: "end of header block",
            });
        }
        Ok(HeadersRef { count, raw })
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded block (without its count), to copy headers through unchanged.
    pub fn raw(&self) -> (u16, &'a [u8]) {
        (self.count, self.raw)
    }

    /// The `(name, value)` pairs in order. The block was validated when the record was
    /// decoded, so iteration cannot fail.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + use<'a> {
        let mut cursor = Cursor {
            buf: self.raw,
            pos: 0,
        };
        (0..self.count).map(move |_| {
            cursor
                .header()
                .expect("header block validated when the record was decoded")
        })
    }

    /// The value of the last header called `name` (a later header overrides an earlier one).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().filter(|(n, _)| *n == name).map(|(_, v)| v).last()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(FrameError {
                offset: self.pos,
                what,
            }),
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, FrameError> {
        let b = self.take(8, what)?;
        Ok(i64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn bytes32(&mut self, what: &'static str) -> Result<&'a [u8], FrameError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    fn str(&mut self, n: usize, what: &'static str) -> Result<&'a str, FrameError> {
        let offset = self.pos;
        let b = self.take(n, what)?;
        std::str::from_utf8(b).map_err(|_| FrameError {
            offset,
            what: "UTF-8 text",
        })
    }

    fn header(&mut self) -> Result<(&'a str, &'a [u8]), FrameError> {
        let n = self.u16("header name length")? as usize;
        let name = self.str(n, "header name")?;
        let value = self.bytes32("header value")?;
        Ok((name, value))
    }

    fn item(&mut self) -> Result<Item<'a>, FrameError> {
        let flags = self.u8("item flags")?;
        if flags & ERROR != 0 {
            let at = self.pos;
            let kind = ErrorKind::from_code(self.u8("error kind")?).ok_or(FrameError {
                offset: at,
                what: "a known error kind",
            })?;
            let input_index = self.u32("error input index")?;
            let n = self.u32("error message length")? as usize;
            let message = self.str(n, "error message")?;
            return Ok(Item::Error(ErrorRef {
                kind,
                input_index,
                message,
            }));
        }
        if flags & TIMER != 0 {
            let at = self.pos;
            let op = match self.u8("timer op")? {
                0 => TimerOp::Set,
                1 => TimerOp::Delete,
                2 => TimerOp::Fired,
                _ => {
                    return Err(FrameError {
                        offset: at,
                        what: "a known timer op",
                    });
                }
            };
            let at = self.pos;
            let domain = match self.u8("timer domain")? {
                0 => TimeDomain::EventTime,
                1 => TimeDomain::ProcessingTime,
                _ => {
                    return Err(FrameError {
                        offset: at,
                        what: "a known time domain",
                    });
                }
            };
            let time = self.i64("timer time")?;
            let key = self.bytes32("timer key")?;
            return Ok(Item::Timer(TimerRef {
                op,
                domain,
                time,
                key,
            }));
        }
        let port = self.u16("port")?;
        let timestamp = if flags & HAS_TIMESTAMP != 0 {
            Some(self.i64("timestamp")?)
        } else {
            None
        };
        let key = if flags & HAS_KEY != 0 {
            Some(self.bytes32("key")?)
        } else {
            None
        };
        let payload = self.bytes32("payload")?;
        let count = self.u16("header count")?;
        let start = self.pos;
        for _ in 0..count {
            self.header()?;
        }
        let headers = HeadersRef {
            count,
            raw: &self.buf[start..self.pos],
        };
        Ok(Item::Record(RecordRef {
            port,
            timestamp,
            key,
            payload,
            headers,
        }))
    }
}

/// Iterates the items of a batch buffer without copying.
pub struct BatchReader<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
}

impl<'a> BatchReader<'a> {
    /// Starts reading `buf`; fails if it is too short to hold the item count.
    pub fn new(buf: &'a [u8]) -> Result<Self, FrameError> {
        let mut cursor = Cursor { buf, pos: 0 };
        let remaining = cursor.u32("item count")?;
        Ok(BatchReader { cursor, remaining })
    }

    /// Items not yet read.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }
}

impl<'a> Iterator for BatchReader<'a> {
    type Item = Result<Item<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if self.cursor.pos != self.cursor.buf.len() {
                let offset = self.cursor.pos;
                self.cursor.pos = self.cursor.buf.len();
                return Some(Err(FrameError {
                    offset,
                    what: "end of batch (trailing bytes)",
                }));
            }
            return None;
        }
        self.remaining -= 1;
        let item = self.cursor.item();
        if item.is_err() {
            self.remaining = 0;
            self.cursor.pos = self.cursor.buf.len();
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize + 1))
    }
}

/// Appends items to a batch buffer. The item count is patched in by [`BatchWriter::finish`].
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BatchWriter {
    /// A writer whose buffer starts with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(64));
        buf.extend_from_slice(&0u32.to_le_bytes());
        BatchWriter { buf, count: 0 }
    }

    /// Items written so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether no item was written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a record whose payload is written by `payload` straight into the buffer.
    /// `headers` is an encoded header block (see [`HeadersRef::raw`]).
    pub fn record_with<E>(
        &mut self,
        port: u16,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        headers: (u16, &[u8]),
        payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mark = self.buf.len();
        let flags = key.map_or(0, |_| HAS_KEY) | timestamp.map_or(0, |_| HAS_TIMESTAMP);
        self.buf.push(flags);
        self.buf.extend_from_slice(&port.to_le_bytes());
        if let Some(ts) = timestamp {
            self.buf.extend_from_slice(&ts.to_le_bytes());
        }
        if let Some(key) = key {
            put_bytes32(&mut self.buf, key);
        }
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        if let Err(e) = payload(&mut self.buf) {
            self.buf.truncate(mark);
            return Err(e);
        }
        let len = (self.buf.len() - len_at - 4) as u32;
        self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&headers.0.to_le_bytes());
        self.buf.extend_from_slice(headers.1);
        self.count += 1;
        Ok(())
    }

    /// Appends a timer item.
    pub fn timer(&mut self, timer: &TimerRef<'_>) {
        self.buf.push(TIMER);
        self.buf.push(match timer.op {
            TimerOp::Set => 0,
            TimerOp::Delete => 1,
            TimerOp::Fired => 2,
        });
        self.buf.push(match timer.domain {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        });
        self.buf.extend_from_slice(&timer.time.to_le_bytes());
        put_bytes32(&mut self.buf, timer.key);
        self.count += 1;
    }

    /// Appends a record with a ready payload.
    pub fn record(
        &mut self,
        port: u16,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: (u16, &[u8]),
    ) {
        let ok: Result<(), std::convert::Infallible> =
            self.record_with(port, timestamp, key, headers, |buf| {
                buf.extend_from_slice(payload);
                Ok(())
            });
        let Ok(()) = ok;
    }

    /// Appends a per-message error item.
    pub fn error(&mut self, kind: ErrorKind, input_index: u32, message: &str) {
        self.buf.push(ERROR);
        self.buf.push(kind.code());
        self.buf.extend_from_slice(&input_index.to_le_bytes());
        put_bytes32(&mut self.buf, message.as_bytes());
        self.count += 1;
    }

    /// A point to come back to with [`BatchWriter::rollback`].
    pub fn mark(&self) -> (usize, u32) {
        (self.buf.len(), self.count)
    }

    /// Drops every item written since `mark`.
    pub fn rollback(&mut self, mark: (usize, u32)) {
        self.buf.truncate(mark.0);
        self.count = mark.1;
    }

    /// Patches the count in and returns the finished buffer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// Encodes `(name, value)` pairs as a header block for [`BatchWriter::record`].
pub fn encode_headers<'h>(headers: impl IntoIterator<Item = (&'h str, &'h [u8])>) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let mut count = 0u16;
    for (name, value) in headers {
        raw.extend_from_slice(&(name.len() as u16).to_le_bytes());
        raw.extend_from_slice(name.as_bytes());
        put_bytes32(&mut raw, value);
        count += 1;
    }
    (count, raw)
}

fn put_bytes32(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_errors_round_trip() {
        let (hc, hraw) = encode_headers([("trace", &b"abc"[..]), ("x", &b""[..])]);
        let mut w = BatchWriter::default();
        w.record(3, Some(-5), Some(b"k1"), b"hello", (hc, &hraw));
        w.record(0, None, None, b"", (0, &[]));
        w.error(ErrorKind::Retryable, 7, "try later");
        let buf = w.finish();

        let items: Vec<_> = BatchReader::new(&buf).unwrap().map(Result::unwrap).collect();
        assert_eq!(items.len(), 3);
        let Item::Record(r) = items[0] else {
            panic!("record expected")
        };
        assert_eq!(
            (r.port, r.timestamp, r.key, r.payload),
            (3, Some(-5), Some(&b"k1"[..]), &b"hello"[..])
        );
        assert_eq!(
            r.headers.iter().collect::<Vec<_>>(),
            vec![("trace", &b"abc"[..]), ("x", &b""[..])]
        );
        assert_eq!(r.headers.get("x"), Some(&b""[..]));
        let Item::Record(r) = items[1] else {
            panic!("record expected")
        };
        assert_eq!(
            (r.key, r.timestamp, r.payload, r.headers.len()),
            (None, None, &b""[..], 0)
        );
        assert_eq!(
            items[2],
            Item::Error(ErrorRef {
                kind: ErrorKind::Retryable,
                input_index: 7,
                message: "try later"
            })
        );
    }

    #[test]
    fn truncated_and_trailing_bytes_are_errors_not_panics() {
        let mut w = BatchWriter::default();
        w.record(0, Some(1), Some(b"key"), b"payload", (0, &[]));
        let buf = w.finish();
        for cut in 0..buf.len() {
            let res: Result<Vec<_>, _> = match BatchReader::new(&buf[..cut]) {
                Ok(r) => r.collect(),
                Err(e) => Err(e),
            };
            assert!(res.is_err(), "a batch cut at {cut} bytes must not decode");
        }
        let mut long = buf.clone();
        long.push(0);
        let err = BatchReader::new(&long).unwrap().last().unwrap().unwrap_err();
        assert_eq!(err.what, "end of batch (trailing bytes)");
    }

    #[test]
    fn a_failed_payload_writer_leaves_no_partial_record() {
        let mut w = BatchWriter::default();
        let res = w.record_with(0, None, None, (0, &[]), |buf| {
            buf.extend_from_slice(b"partial");
            Err("boom")
        });
        assert_eq!(res, Err("boom"));
        assert!(w.is_empty());
        assert_eq!(w.finish(), 0u32.to_le_bytes());
    }
}
