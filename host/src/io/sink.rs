//! Sinks: stdout, a file, or nowhere; text (payload lines) or JSON lines with metadata.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::http::{self, Answer, Answers};
use super::{IoError, NotAMessage};
use crate::manifest::{SinkFormat, SinkKind, SinkSpec};
use crate::message::{Headers, Msg};

/// Writes messages for one sink.
pub struct SinkWriter {
    out: Out,
    format: SinkFormat,
    /// Bytes in the file so far (file sinks).
    len: u64,
    /// Whether a reply sink said it dropped a message without a return address.
    warned: bool,
}

enum Out {
    Stdout(BufWriter<std::io::Stdout>),
    File(BufWriter<File>),
    Null,
    Reply(Arc<dyn Answers>),
}

impl SinkWriter {
    /// Opens the sink's destination. A file is created or truncated, or with `resume`
    /// (the length a checkpoint recorded) cut back to that length and appended to.
    pub fn open(spec: &SinkSpec, resume: Option<u64>) -> Result<SinkWriter, IoError> {
        let vertex = || format!("sink `{}`", spec.id);
        let failed = |what: String, path: &Path| {
            let path = path.to_owned();
            move |error| IoError::File {
                vertex: vertex(),
                what,
                path,
                error,
            }
        };
        let (out, len) = match &spec.kind {
            SinkKind::Stdout => (Out::Stdout(BufWriter::new(std::io::stdout())), 0),
            SinkKind::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(failed("create".into(), dir))?;
                }
                let file = match resume {
                    None => File::create(path).map_err(failed("create".into(), path))?,
                    Some(len) => {
                        resume_file(path, len).map_err(failed(format!("resume at byte {len}"), path))?
                    }
                };
                (Out::File(BufWriter::new(file)), resume.unwrap_or(0))
            }
            SinkKind::Null => (Out::Null, 0),
            // (The runner makes it, with this process's answers: `SinkWriter::reply`.)
            SinkKind::Reply => return Err(IoError::Unopened { vertex: vertex() }),
            SinkKind::Kafka(topic) => {
                return Err(IoError::NeedsKafka {
                    vertex: vertex(),
                    topic: topic.clone(),
                });
            }
        };
        Ok(SinkWriter {
            out,
            format: spec.format,
            len,
            warned: false,
        })
    }

    /// A `reply` sink: each message answers the request whose return address it carries.
    pub fn reply(answers: Arc<dyn Answers>) -> SinkWriter {
        SinkWriter {
            out: Out::Reply(answers),
            format: SinkFormat::Text,
            len: 0,
            warned: false,
        }
    }

    fn writer(&mut self) -> Option<&mut dyn Write> {
        match &mut self.out {
            Out::Stdout(w) => Some(w),
            Out::File(w) => Some(w),
            Out::Null | Out::Reply(_) => None,
        }
    }

    /// Writes a batch and flushes it, so results show as they arrive.
    pub fn write(&mut self, msgs: &[Msg]) -> std::io::Result<()> {
        if let Out::Reply(answers) = &self.out {
            for m in msgs {
                match m.headers.get(http::REPLY_TO) {
                    Some(to) => answers.answer(to, Answer::reply(m)),
                    None if !std::mem::replace(&mut self.warned, true) => tracing::warn!(
                        "a message reached a reply sink without a return address (`{}` header): it answers nothing and is dropped (said once)",
                        http::REPLY_TO
                    ),
                    None => {}
                }
            }
            return Ok(());
        }
        let format = self.format;
        let Some(out) = self.writer() else { return Ok(()) };
        let mut counted = Counted { inner: out, n: 0 };
        for m in msgs {
            match format {
                SinkFormat::Text => {
                    counted.write_all(&m.payload)?;
                    counted.write_all(b"\n")?;
                }
                SinkFormat::Json => {
                    serde_json::to_writer(&mut counted, &as_json(m))?;
                    counted.write_all(b"\n")?;
                }
            }
        }
        let n = counted.n;
        self.len += n;
        self.writer().map_or(Ok(()), |w| w.flush())
    }

    /// A file sink's length so far (what it held when opened, plus what was written).
    pub fn file_len(&self) -> Option<u64> {
        matches!(self.out, Out::File(_)).then_some(self.len)
    }

    /// Makes what was written durable; returns a file sink's length (what a checkpoint
    /// records), `None` for sinks that cannot be cut back.
    pub fn commit(&mut self) -> std::io::Result<Option<u64>> {
        match &mut self.out {
            Out::File(w) => {
                w.flush()?;
                w.get_ref().sync_data()?;
                Ok(Some(self.len))
            }
            Out::Stdout(w) => w.flush().map(|()| None),
            Out::Null | Out::Reply(_) => Ok(None),
        }
    }
}

/// Opens `path` for appending after cutting it back to `len` bytes.
fn resume_file(path: &Path, len: u64) -> std::io::Result<File> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    let actual = file.metadata()?.len();
    if actual < len {
        return Err(std::io::Error::other(format!(
            "the file has {actual} bytes, fewer than were committed"
        )));
    }
    file.set_len(len)?;
    file.seek(SeekFrom::End(0))?;
    Ok(file)
}

/// Counts the bytes written through it.
struct Counted<'w> {
    inner: &'w mut dyn Write,
    n: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn text(b: &[u8]) -> serde_json::Value {
    serde_json::Value::String(String::from_utf8_lossy(b).into_owned())
}

/// A message back from a line [`as_json`] wrote. A text payload comes back as it was; a
/// JSON payload as the same JSON value, compactly written.
pub fn from_json(line: &[u8]) -> Result<Msg, NotAMessage> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        payload: serde_json::Value,
        #[serde(default)]
        key: Option<String>,
        #[serde(default)]
        timestamp: Option<i64>,
        #[serde(default)]
        headers: std::collections::BTreeMap<String, String>,
    }
    let line: Line = serde_json::from_slice(line).map_err(|e| NotAMessage(e.to_string()))?;
    let payload = match line.payload {
        serde_json::Value::String(s) => Bytes::from(s),
        other => Bytes::from(other.to_string()),
    };
    Ok(Msg {
        key: line.key.map(Bytes::from),
        payload,
        timestamp: line.timestamp,
        headers: Headers::from_pairs(line.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))),
    })
}

/// A message as a JSON object: payload, key, timestamp and headers (bytes shown as UTF-8, lossily).
pub fn as_json(m: &Msg) -> serde_json::Value {
    let payload =
        serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap_or_else(|_| text(&m.payload));
    let headers: serde_json::Map<String, serde_json::Value> =
        m.headers.iter().map(|(k, v)| (k.to_owned(), text(v))).collect();
    serde_json::json!({
        "key": m.key.as_deref().map(text),
        "payload": payload,
        "timestamp": m.timestamp,
        "headers": headers,
    })
}
