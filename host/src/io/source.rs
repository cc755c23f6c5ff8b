//! Sources: text lines, JSON lines, stdin, and a generator. Each reads in batches and
//! hands them to `send`, checking `stop` between batches.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use bytes::Bytes;

use super::IoError;
use crate::clock::now_millis;
use crate::manifest::{SourceKind, SourceSpec};
use crate::message::{Msg, batch_from, sequence_payload};
use crate::state::durable::Position;

/// Reads `spec` from `start` to its end (or until `stop` says so, or `send` returns
/// false), handing each batch to `send` with the position after it; returns the position
/// reached. An error names the source and, for files, the line.
pub fn run(
    spec: &SourceSpec,
    batch_size: usize,
    start: Position,
    stop: &dyn Fn() -> bool,
    mut send: impl FnMut(Vec<Msg>, Position) -> bool,
) -> Result<Position, IoError> {
    let vertex = || format!("source `{}`", spec.id);
    let open = |path: &Path| {
        let failed = |what: String| {
            move |error| IoError::File {
                vertex: vertex(),
                what,
                path: path.to_owned(),
                error,
            }
        };
        let mut file = File::open(path).map_err(failed("open".into()))?;
        // A named pipe is read on a thread of its own (a stop is not held up by a read
        // that waits for a writer); it cannot seek.
        let pipe = file.metadata().is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt as _;
            m.file_type().is_fifo()
        });
        if pipe {
            return Ok(Opened::Pipe(ChunkedLines::start(file)));
        }
        if start.offset > 0 {
            file.seek(SeekFrom::Start(start.offset))
                .map_err(failed(format!("resume at byte {}", start.offset)))?;
        }
        Ok::<_, IoError>(Opened::File(BufReader::new(file)))
    };
    let named = |path: &Path| {
        let path = path.to_owned();
        move |fault| match fault {
            LineFault::Read(line, error) => IoError::File {
                vertex: vertex(),
                what: format!("read line {line} of"),
                path,
                error,
            },
            LineFault::Bad(line, why) => IoError::Line {
                vertex: vertex(),
                path,
                line,
                why,
            },
        }
    };
    let mut read = |path: &Path, make: &mut dyn FnMut(Option<i64>, Bytes) -> Result<Msg, String>| {
        let opened = match Parked::take(&spec.id, path) {
            Some(opened) => opened,
            None => open(path)?,
        };
        let (reached, opened) = match opened {
            Opened::File(mut file) => {
                let reached = lines(&mut file, batch_size, start, stop, false, &mut send, make);
                (reached, Opened::File(file))
            }
            Opened::Pipe(pipe) => {
                let mut pipe = Piped { lines: pipe, stop };
                let reached = lines(&mut pipe, batch_size, start, stop, true, &mut send, make);
                (reached, Opened::Pipe(pipe.lines))
            }
        };
        if stop() {
            Parked::keep(&spec.id, path, opened);
        }
        reached.map_err(named(path))
    };
    match &spec.kind {
        SourceKind::File { path } => read(path, &mut text_line),
        SourceKind::Messages { path } => read(path, &mut |_, line| {
            crate::io::sink::from_json(&line).map_err(|e| e.to_string())
        }),
        SourceKind::Stdin => {
            // (Counted on from `start`: what was read before a restart is gone, and the
            // runner says so; a changed graph reads on where the one before stopped.)
            let kept = STDIN.lock().unwrap_or_else(|e| e.into_inner()).take();
            let lines_in = kept.unwrap_or_else(|| ChunkedLines::start(std::io::stdin()));
            let mut stdin = Piped {
                lines: lines_in,
                stop,
            };
            let reached = lines(
                &mut stdin,
                batch_size,
                start,
                stop,
                true,
                &mut send,
                &mut text_line,
            );
            // What this run did not take stays for the next one.
            *STDIN.lock().unwrap_or_else(|e| e.into_inner()) = Some(stdin.lines);
            reached.map_err(named(Path::new("<stdin>")))
        }
        SourceKind::Jsonl {
            path,
            key_field,
            timestamp_field,
        } => {
            let fields = (key_field.as_deref(), timestamp_field.as_deref());
            read(path, &mut |ts, line| {
                json_line(&line, fields).map(|mut m| {
                    m.timestamp = m.timestamp.or(ts);
                    m
                })
            })
        }
        SourceKind::Kafka { topic } => Err(IoError::NeedsKafka {
            vertex: vertex(),
            topic: topic.clone(),
        }),
        // (Run by its `http::HttpServer`, which the runner binds before anything runs.)
        SourceKind::Http(_) => Ok(start),
        SourceKind::Generator {
            count,
            payload_size,
            keys,
        } => {
            let end = generate(
                *count,
                *payload_size,
                *keys,
                batch_size,
                start.records,
                stop,
                &mut send,
            );
            Ok(Position {
                offset: 0,
                records: end,
            })
        }
    }
}

/// A file source's open file: a file, or a named pipe read on a thread of its own.
enum Opened {
    File(BufReader<File>),
    Pipe(ChunkedLines),
}

/// Files sources stopped reading before their end, kept open for the changed graph of a
/// running one (see `topology::apply`), which reads on from them: a named pipe cannot be
/// opened again where it was, and what was read ahead stays read.
struct Parked;

static PARKED: Mutex<Vec<(String, std::path::PathBuf, Opened)>> = Mutex::new(Vec::new());

impl Parked {
    fn take(source: &str, path: &Path) -> Option<Opened> {
        let path = &std::path::absolute(path).ok()?;
        let mut parked = PARKED.lock().unwrap_or_else(|e| e.into_inner());
        let at = parked.iter().position(|(s, p, _)| s == source && p == path)?;
        Some(parked.swap_remove(at).2)
    }

    fn keep(source: &str, path: &Path, file: Opened) {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let mut parked = PARKED.lock().unwrap_or_else(|e| e.into_inner());
        parked.retain(|(s, _, _)| s != source);
        parked.push((source.to_owned(), path, file));
    }
}

/// An input that may wait for its writer (standard input, a named pipe), read on a
/// thread of its own so that a stop is not held up by a read that waits for input which
/// never comes. Kept between the runs of one graph (a changed graph reads on where the
/// graph before it stopped, see `topology::apply`): what a run did not take stays for
/// the next one, a line cut in two by a stop included. Standard input has one per
/// process.
struct ChunkedLines {
    chunks: Receiver<std::io::Result<Vec<u8>>>,
    /// Read and not taken yet, from `at`.
    pending: Vec<u8>,
    at: usize,
    ended: bool,
}

static STDIN: Mutex<Option<ChunkedLines>> = Mutex::new(None);

impl ChunkedLines {
    fn start(mut input: impl Read + Send + 'static) -> Self {
        let (tx, chunks) = std::sync::mpsc::sync_channel(16);
        // Not joined: while it waits on an idle input, the process may end.
        std::thread::spawn(move || {
            loop {
                let mut buf = vec![0; 64 << 10];
                let read = loop {
                    match input.read(&mut buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        read => break read,
                    }
                }
                .map(|n| {
                    buf.truncate(n);
                    buf
                });
                let end = matches!(&read, Ok(b) if b.is_empty()) || read.is_err();
                if tx.send(read).is_err() || end {
                    return;
                }
            }
        });
        ChunkedLines {
            chunks,
            pending: Vec::new(),
            at: 0,
            ended: false,
        }
    }

    /// The next line (with its `\n`; the last one maybe without) appended to `buf`, or 0
    /// bytes at the end of the input or once `stop` says so.
    fn line(&mut self, buf: &mut Vec<u8>, stop: &dyn Fn() -> bool) -> std::io::Result<usize> {
        loop {
            let rest = &self.pending[self.at..];
            let take = match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => nl + 1,
                None if self.ended => rest.len(),
                None => 0,
            };
            if take > 0 || self.ended {
                buf.extend_from_slice(&rest[..take]);
                self.at += take;
                return Ok(take);
            }
            match self.chunks.recv_timeout(Duration::from_millis(10)) {
                Ok(Ok(chunk)) if !chunk.is_empty() => {
                    self.pending.drain(..self.at);
                    self.at = 0;
                    self.pending.extend_from_slice(&chunk);
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Ok(Ok(_)) | Err(RecvTimeoutError::Disconnected) => self.ended = true,
                Err(RecvTimeoutError::Timeout) if stop() => return Ok(0),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn has_line(&self) -> bool {
        self.pending[self.at..].contains(&b'\n')
    }
}

/// A [`ChunkedLines`] read by one source until its `stop`.
struct Piped<'s> {
    lines: ChunkedLines,
    stop: &'s dyn Fn() -> bool,
}

/// Where [`lines`] reads lines from.
trait LineReader {
    /// The next line (with its line end) appended to `buf`; 0 at the end.
    fn line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize>;
    /// Whether a whole line is ready without waiting.
    fn has_line(&self) -> bool;
}

impl<R: Read> LineReader for BufReader<R> {
    fn line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        self.read_until(b'\n', buf)
    }

    fn has_line(&self) -> bool {
        !self.buffer().is_empty()
    }
}

impl LineReader for Piped<'_> {
    fn line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        self.lines.line(buf, self.stop)
    }

    fn has_line(&self) -> bool {
        self.lines.has_line()
    }
}

/// Why [`lines`] stopped early: at which line (from 1).
enum LineFault {
    Read(u64, std::io::Error),
    Bad(u64, String),
}

/// A text line as it is: the payload of a message.
fn text_line(_read_at: Option<i64>, line: Bytes) -> Result<Msg, String> {
    Ok(Msg::new(line, None))
}

/// Reads lines (without `\n` or `\r\n`) in batches. With `eager`, a batch is also sent
/// whenever the reader has nothing more buffered, so interactive input is not held back.
#[allow(clippy::too_many_arguments)]
fn lines(
    reader: &mut dyn LineReader,
    batch_size: usize,
    start: Position,
    stop: &dyn Fn() -> bool,
    eager: bool,
    send: &mut dyn FnMut(Vec<Msg>, Position) -> bool,
    make: &mut dyn FnMut(Option<i64>, Bytes) -> Result<Msg, String>,
) -> Result<Position, LineFault> {
    let mut at = start;
    let mut batch = Vec::with_capacity(batch_size);
    let mut buf = Vec::new();
    loop {
        if stop() {
            // What was read goes on: its position is counted as read.
            if !batch.is_empty() {
                send(std::mem::take(&mut batch), at);
            }
            break;
        }
        buf.clear();
        let n = reader
            .line(&mut buf)
            .map_err(|e| LineFault::Read(at.records + 1, e))?;
        if n > 0 {
            at.offset += n as u64;
            at.records += 1;
            let end = buf.len() - buf.ends_with(b"\n") as usize;
            let end = end - buf[..end].ends_with(b"\r") as usize;
            let ts = Some(now_millis());
            let msg = make(ts, Bytes::copy_from_slice(&buf[..end]))
                .map_err(|why| LineFault::Bad(at.records, why))?;
            batch.push(msg);
        }
        let flush = batch.len() >= batch_size || n == 0 || (eager && !reader.has_line());
        if flush
            && !batch.is_empty()
            && !send(std::mem::replace(&mut batch, Vec::with_capacity(batch_size)), at)
        {
            break;
        }
        if n == 0 {
            break;
        }
    }
    Ok(at)
}

/// A JSON line becomes a message with the line as payload; key and timestamp may come
/// from top-level fields.
fn json_line(line: &Bytes, (key_field, ts_field): (Option<&str>, Option<&str>)) -> Result<Msg, String> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut msg = Msg::new(line.clone(), None);
    if let Some(field) = key_field {
        msg.key = json_key(&value, field);
    }
    if let Some((field, v)) = ts_field.and_then(|f| Some((f, value.get(f)?))) {
        let millis = v
            .as_i64()
            .ok_or_else(|| format!("`{field}` is not an integer of milliseconds: {v}"))?;
        msg.timestamp = Some(millis);
    }
    Ok(msg)
}

/// The key a JSON object's top-level `field` gives: a string as it is, any other value
/// as JSON text, none if absent or null.
pub(super) fn json_key(value: &serde_json::Value, field: &str) -> Option<Bytes> {
    match value.get(field)? {
        serde_json::Value::String(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        serde_json::Value::Null => None,
        other => Some(Bytes::from(other.to_string())),
    }
}

/// Zero-padded sequence numbers from `first` as payloads (cut or padded to
/// `payload_size`), optionally keyed `k<n % keys>`; returns the next number.
fn generate(
    count: Option<u64>,
    payload_size: usize,
    keys: Option<u64>,
    batch_size: usize,
    first: u64,
    stop: &dyn Fn() -> bool,
    send: &mut dyn FnMut(Vec<Msg>, Position) -> bool,
) -> u64 {
    let mut next = first;
    while count.is_none_or(|c| next < c) && !stop() {
        let n = count.map_or(batch_size as u64, |c| (c - next).min(batch_size as u64)) as usize;
        let first = next;
        let mut batch = batch_from(n, Some(now_millis()), |i, buf| {
            sequence_payload(first + i as u64, payload_size, buf)
        });
        if let Some(keys) = keys {
            for (i, m) in batch.iter_mut().enumerate() {
                m.key = Some(Bytes::from(format!("k{}", (first + i as u64) % keys)));
            }
        }
        next += n as u64;
        let at = Position {
            offset: 0,
            records: next,
        };
        if !send(batch, at) {
            break;
        }
    }
    next
}
