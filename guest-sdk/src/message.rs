//! The input side: a zero-copy view of one message, and typed access to its payload.

use serde::Deserialize;

use crate::NodeError;
use crate::frame::{HeadersRef, RecordRef};

/// One input message, borrowed from the batch buffer: nothing is copied to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub(crate) record: RecordRef<'a>,
    pub(crate) input: &'a str,
}

impl<'a> Message<'a> {
    /// A message with only a payload, for unit tests of node functions.
    pub fn new(payload: &'a [u8]) -> Self {
        Message {
            record: RecordRef {
                port: 0,
                timestamp: None,
                key: None,
                payload,
                headers: HeadersRef::default(),
            },
            input: "in",
        }
    }

    /// The same message with a key, for unit tests.
    pub fn with_key(mut self, key: &'a [u8]) -> Self {
        self.record.key = Some(key);
        self
    }

    /// The same message with a timestamp, for unit tests.
    pub fn with_timestamp(mut self, millis: i64) -> Self {
        self.record.timestamp = Some(millis);
        self
    }

    /// The message body.
    pub fn payload(&self) -> &'a [u8] {
        self.record.payload
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&'a str, NodeError> {
        Ok(std::str::from_utf8(self.record.payload)?)
    }

    /// The body parsed as JSON into `T` (which may borrow from the payload).
    pub fn json<T: Deserialize<'a>>(&self) -> Result<T, NodeError> {
        Ok(serde_json::from_slice(self.record.payload)?)
    }

    /// The body decoded from bincode (standard configuration) into `T`.
    pub fn bincode<T: serde::de::DeserializeOwned>(&self) -> Result<T, NodeError> {
        let (value, _) = bincode::serde::decode_from_slice(self.record.payload, bincode::config::standard())?;
        Ok(value)
    }

    /// The partitioning key, if the message has one.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.record.key
    }

    /// Event time in milliseconds since the Unix epoch, if known.
    pub fn timestamp(&self) -> Option<i64> {
        self.record.timestamp
    }

    /// The message headers.
    pub fn headers(&self) -> HeadersRef<'a> {
        self.record.headers
    }

    /// How many times the message went around a loop (feedback edges; 0 before its
    /// first time around): the header [`ITERATION`].
    pub fn iteration(&self) -> u32 {
        self.record
            .headers
            .get(ITERATION)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0)
    }

    /// The name of the input port the message arrived on (`"in"` unless the graph names one).
    pub fn input(&self) -> &'a str {
        self.input
    }
}

/// The header counting a message's times around a loop (set by the host).
pub const ITERATION: &str = "flowhost-iteration";

/// Typed access to a message: what a `#[node]` function's first parameter may be.
///
/// Implemented for [`Message`], `&[u8]`, `&str`, `Vec<u8>`, `String`, [`Json<T>`] and
/// [`Bincode<T>`].
pub trait FromMessage<'a>: Sized {
    /// Reads `Self` from the message; a decoding failure is an invalid-input error.
    fn from_message(msg: &Message<'a>) -> Result<Self, NodeError>;
}

impl<'a> FromMessage<'a> for Message<'a> {
    fn from_message(msg: &Message<'a>) -> Result<Self, NodeError> {
        Ok(*msg)
    }
}

impl<'a> FromMessage<'a> for &'a [u8] {
    fn from_message(msg: &Message<'a>) -> Result<Self, NodeError> {
        Ok(msg.payload())
    }
}

impl<'a> FromMessage<'a> for &'a str {
    fn from_message(msg: &Message<'a>) -> Result<Self, NodeError> {
        msg.text()
    }
}

impl<'a> FromMessage<'a> for Vec<u8> {
    fn from_message(msg: &Message<'a>) -> Result<Self, NodeError> {
        Ok(msg.payload().to_vec())
    }
}

impl<'a> FromMessage<'a> for String {
    fn from_message(msg: &Message<'a>) -> Result<Self, NodeError> {
        Ok(msg.text()?.to_owned())
    }
}

/// A payload encoded as JSON: as a parameter it is parsed, as a result it is serialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Json<T>(pub T);

/// A payload encoded with bincode's standard configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bincode<T>(pub T);

impl<'a, T: Deserialize<'a>> FromMessage<'a> for Json<T> {
    fn from_message(msg: &Message<'a>) -> Result<Self, NodeError> {
        msg.json().map(Json)
    }
}

impl<'a, T: serde::de::DeserializeOwned> FromMessage<'a> for Bincode<T> {
    fn from_message(msg: &Message<'a>) -> Result<Self, NodeError> {
        msg.bincode().map(Bincode)
    }
}
