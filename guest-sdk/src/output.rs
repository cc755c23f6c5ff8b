//! The output side: emitting records to named ports, and the values a node may return.

use std::borrow::Cow;
use std::cell::RefCell;

use serde::Serialize;

use crate::frame::{BatchWriter, encode_headers};
use crate::{Bincode, Json, Message, NodeError};

/// The default output port.
pub const DEFAULT_OUTPUT: &str = "out";

/// The connected ports of a node, as the host announced them in `init`.
#[derive(Debug, Default)]
pub struct Ports {
    pub(crate) inputs: Vec<String>,
    pub(crate) outputs: Vec<String>,
    default_output: Option<u16>,
    warned: RefCell<Vec<String>>,
}

impl Ports {
    pub(crate) fn new(inputs: Vec<String>, outputs: Vec<String>) -> Self {
        let default_output = outputs.iter().position(|p| p == DEFAULT_OUTPUT).map(|i| i as u16);
        Ports {
            inputs,
            outputs,
            default_output,
            warned: RefCell::default(),
        }
    }

    pub(crate) fn input_name(&self, port: u16) -> &str {
        self.inputs.get(port as usize).map_or("in", String::as_str)
    }

    fn output_index(&self, name: &str) -> Option<u16> {
        if name == DEFAULT_OUTPUT {
            return self.default_output;
        }
        let index = self.outputs.iter().position(|p| p == name).map(|i| i as u16);
        if index.is_none() && !self.warned.borrow().iter().any(|w| w == name) {
            // A port the graph does not connect is a sink to nowhere; say so once.
            crate::log::warn(&format!(
                "output port `{name}` is not connected; its records are dropped"
            ));
            self.warned.borrow_mut().push(name.to_owned());
        }
        index
    }
}

/// What an emitted record inherits from the message being processed.
#[derive(Clone, Copy, Default)]
struct Inherit<'a> {
    key: Option<&'a [u8]>,
    timestamp: Option<i64>,
    headers: (u16, &'a [u8]),
}

/// The handle a node emits records through.
///
/// Records emitted while processing a message inherit its key, timestamp and headers
/// unless the [`Record`] says otherwise; if the node returns an error for the message,
/// everything it emitted for that message is withdrawn.
pub struct Output<'a> {
    writer: BatchWriter,
    ports: &'a Ports,
    inherit: Inherit<'a>,
}

impl<'a> Output<'a> {
    pub(crate) fn new(ports: &'a Ports, capacity: usize) -> Self {
        Output {
            writer: BatchWriter::with_capacity(capacity),
            ports,
            inherit: Inherit::default(),
        }
    }

    pub(crate) fn begin(&mut self, msg: &Message<'a>) -> (usize, u32) {
        self.inherit = Inherit {
            key: msg.record.key,
            timestamp: msg.record.timestamp,
            headers: msg.record.headers.raw(),
        };
        self.writer.mark()
    }

    pub(crate) fn fail(&mut self, mark: (usize, u32), index: u32, error: &NodeError) {
        self.writer.rollback(mark);
        self.writer.error(error.kind, index, &error.message);
    }

    pub(crate) fn end_of_input(&mut self) {
        self.inherit = Inherit::default();
    }

    pub(crate) fn into_batch(self) -> Vec<u8> {
        self.writer.finish()
    }

    pub(crate) fn writer_mut(&mut self) -> &mut BatchWriter {
        &mut self.writer
    }

    /// Records emitted from now on inherit `timestamp` and nothing else (a fired timer's).
    pub(crate) fn begin_timer(&mut self, timestamp: Option<i64>) -> (usize, u32) {
        self.inherit = Inherit {
            timestamp,
            ..Inherit::default()
        };
        self.writer.mark()
    }

    /// Emits `payload` on the default port `out`.
    pub fn emit(&mut self, payload: impl IntoPayload) -> Result<(), NodeError> {
        self.emit_at(self.ports.default_output, payload)
    }

    /// Emits `payload` on the named output port.
    pub fn emit_to(&mut self, port: &str, payload: impl IntoPayload) -> Result<(), NodeError> {
        self.emit_at(self.ports.output_index(port), payload)
    }

    fn emit_at(&mut self, port: Option<u16>, payload: impl IntoPayload) -> Result<(), NodeError> {
        let Some(port) = port else {
            return Ok(());
        };
        let Inherit {
            key,
            timestamp,
            headers,
        } = self.inherit;
        self.writer
            .record_with(port, timestamp, key, headers, |buf| payload.write_payload(buf))
    }

    /// Emits `payload` on the default port under `key`, both borrowed: nothing is
    /// allocated per record (a [`Record`] owns its key). Timestamp and headers are
    /// inherited.
    pub fn emit_keyed(&mut self, key: &[u8], payload: impl IntoPayload) -> Result<(), NodeError> {
        self.emit_keyed_at(self.ports.default_output, key, payload)
    }

    /// [`Output::emit_keyed`] on the named output port.
    pub fn emit_keyed_to(
        &mut self,
        port: &str,
        key: &[u8],
        payload: impl IntoPayload,
    ) -> Result<(), NodeError> {
        self.emit_keyed_at(self.ports.output_index(port), key, payload)
    }

    fn emit_keyed_at(
        &mut self,
        port: Option<u16>,
        key: &[u8],
        payload: impl IntoPayload,
    ) -> Result<(), NodeError> {
        let Some(port) = port else {
            return Ok(());
        };
        let Inherit {
            timestamp, headers, ..
        } = self.inherit;
        self.writer
            .record_with(port, timestamp, Some(key), headers, |buf| {
                payload.write_payload(buf)
            })
    }

    /// Passes the input message on unchanged to the default port.
    pub fn forward(&mut self, msg: &Message<'_>) -> Result<(), NodeError> {
        self.forward_to(DEFAULT_OUTPUT, msg)
    }

    /// Passes the input message on unchanged to the named port.
    pub fn forward_to(&mut self, port: &str, msg: &Message<'_>) -> Result<(), NodeError> {
        let Some(port) = self.ports.output_index(port) else {
            return Ok(());
        };
        let r = msg.record;
        self.writer
            .record(port, r.timestamp, r.key, r.payload, r.headers.raw());
        Ok(())
    }

    /// Emits a record with its own port, key, timestamp or extra headers.
    pub fn send<P: IntoPayload>(&mut self, record: Record<P>) -> Result<(), NodeError> {
        let Some(port) = self
            .ports
            .output_index(record.port.as_deref().unwrap_or(DEFAULT_OUTPUT))
        else {
            return Ok(());
        };
        let key = match &record.key {
            KeyChoice::Inherit => self.inherit.key,
            KeyChoice::Set(k) => Some(k.as_slice()),
            KeyChoice::None => None,
        };
        let timestamp = record.timestamp.or(self.inherit.timestamp);
        let (count, raw) = if record.headers.is_empty() {
            (self.inherit.headers.0, Cow::Borrowed(self.inherit.headers.1))
        } else {
            let (n, mut extra) =
                encode_headers(record.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
            let mut raw = self.inherit.headers.1.to_vec();
            raw.append(&mut extra);
            (self.inherit.headers.0 + n, Cow::Owned(raw))
        };
        let payload = record.payload;
        self.writer
            .record_with(port, timestamp, key, (count, &raw), |buf| {
                payload.write_payload(buf)
            })
    }
}

#[derive(Clone, Debug, Default)]
enum KeyChoice {
    #[default]
    Inherit,
    Set(Vec<u8>),
    None,
}

/// A record with explicit routing and metadata, for [`Output::send`] or as a map result.
#[derive(Clone, Debug)]
pub struct Record<P> {
    payload: P,
    port: Option<Cow<'static, str>>,
    key: KeyChoice,
    timestamp: Option<i64>,
    headers: Vec<(String, Vec<u8>)>,
}

impl<P: IntoPayload> Record<P> {
    /// A record for the default port, inheriting key, timestamp and headers.
    pub fn new(payload: P) -> Self {
        Record {
            payload,
            port: None,
            key: KeyChoice::Inherit,
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// Sends the record to the named output port.
    pub fn port(mut self, port: impl Into<Cow<'static, str>>) -> Self {
        self.port = Some(port.into());
        self
    }

    /// Gives the record this key (it decides the partition downstream).
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = KeyChoice::Set(key.into());
        self
    }

    /// Drops the inherited key.
    pub fn no_key(mut self) -> Self {
        self.key = KeyChoice::None;
        self
    }

    /// Sets the event time, in milliseconds since the Unix epoch.
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    /// The HTTP status this record answers with when it reaches a `reply` sink (default
    /// 200): the header [`crate::http::STATUS`].
    pub fn status(self, status: u16) -> Self {
        self.header(crate::http::STATUS, status.to_string())
    }

    /// The content type this record answers with when it reaches a `reply` sink: the
    /// header [`crate::http::CONTENT_TYPE`].
    pub fn content_type(self, content_type: &str) -> Self {
        self.header(crate::http::CONTENT_TYPE, content_type)
    }

    /// Adds a header (after the inherited ones; a later header with the same name wins).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A value that can become a record payload, written straight into the output buffer.
pub trait IntoPayload {
    /// Appends the encoded payload to `buf`.
    fn write_payload(self, buf: &mut Vec<u8>) -> Result<(), NodeError>;
}

macro_rules! bytes_payload {
    ($($t:ty),*) => {$(
        impl IntoPayload for $t {
            fn write_payload(self, buf: &mut Vec<u8>) -> Result<(), NodeError> {
                buf.extend_from_slice(AsRef::<[u8]>::as_ref(&self));
                Ok(())
            }
        }
    )*};
}
bytes_payload!(Vec<u8>, &[u8], String, &str, &String, &Vec<u8>, Cow<'_, [u8]>);

impl IntoPayload for Cow<'_, str> {
    fn write_payload(self, buf: &mut Vec<u8>) -> Result<(), NodeError> {
        buf.extend_from_slice(self.as_bytes());
        Ok(())
    }
}

impl<const N: usize> IntoPayload for [u8; N] {
    fn write_payload(self, buf: &mut Vec<u8>) -> Result<(), NodeError> {
        buf.extend_from_slice(&self);
        Ok(())
    }
}

impl<T: Serialize> IntoPayload for Json<T> {
    fn write_payload(self, buf: &mut Vec<u8>) -> Result<(), NodeError> {
        serde_json::to_writer(buf, &self.0).map_err(|e| NodeError::fatal(format!("JSON: {e}")))
    }
}

impl<T: Serialize> IntoPayload for Bincode<T> {
    fn write_payload(self, buf: &mut Vec<u8>) -> Result<(), NodeError> {
        bincode::serde::encode_into_std_write(&self.0, buf, bincode::config::standard())?;
        Ok(())
    }
}

/// What a map, filter-map or flat-map function may return for one message: a payload,
/// a [`Record`], or an `Option` / `Result` of those. `None` emits nothing; `Err` fails
/// the message.
pub trait Emit {
    /// Emits `self` through `out`.
    fn emit_into(self, out: &mut Output<'_>) -> Result<(), NodeError>;
}

macro_rules! emit_payload {
    ($($t:ty),*) => {$(
        impl Emit for $t {
            fn emit_into(self, out: &mut Output<'_>) -> Result<(), NodeError> { out.emit(self) }
        }
    )*};
}
emit_payload!(
    Vec<u8>,
    &[u8],
    String,
    &str,
    &String,
    &Vec<u8>,
    Cow<'_, str>,
    Cow<'_, [u8]>
);

impl<const N: usize> Emit for [u8; N] {
    fn emit_into(self, out: &mut Output<'_>) -> Result<(), NodeError> {
        out.emit(self)
    }
}

impl<T: Serialize> Emit for Json<T> {
    fn emit_into(self, out: &mut Output<'_>) -> Result<(), NodeError> {
        out.emit(self)
    }
}

impl<T: Serialize> Emit for Bincode<T> {
    fn emit_into(self, out: &mut Output<'_>) -> Result<(), NodeError> {
        out.emit(self)
    }
}

impl<P: IntoPayload> Emit for Record<P> {
    fn emit_into(self, out: &mut Output<'_>) -> Result<(), NodeError> {
        out.send(self)
    }
}

impl<T: Emit> Emit for Option<T> {
    fn emit_into(self, out: &mut Output<'_>) -> Result<(), NodeError> {
        self.map_or(Ok(()), |v| v.emit_into(out))
    }
}

impl<T: Emit, E: Into<NodeError>> Emit for Result<T, E> {
    fn emit_into(self, out: &mut Output<'_>) -> Result<(), NodeError> {
        self.map_err(Into::into)?.emit_into(out)
    }
}

/// What a filter function may return: `bool` or `Result<bool, E>`.
pub trait Verdict {
    /// Whether the message passes.
    fn passes(self) -> Result<bool, NodeError>;
}

impl Verdict for bool {
    fn passes(self) -> Result<bool, NodeError> {
        Ok(self)
    }
}

impl<E: Into<NodeError>> Verdict for Result<bool, E> {
    fn passes(self) -> Result<bool, NodeError> {
        self.map_err(Into::into)
    }
}

/// What a general node function may return: `()` or `Result<(), E>`.
pub trait Completion {
    /// The outcome for the message.
    fn into_result(self) -> Result<(), NodeError>;
}

impl Completion for () {
    fn into_result(self) -> Result<(), NodeError> {
        Ok(())
    }
}

impl<E: Into<NodeError>> Completion for Result<(), E> {
    fn into_result(self) -> Result<(), NodeError> {
        self.map_err(Into::into)
    }
}
