//! Sources: text lines, JSON lines, stdin, and a generator. Each reads in batches and
//! hands them to `send`, checking for a stop request between batches.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::manifest::{SourceKind, SourceSpec};
use crate::message::{Msg, batch_from, sequence_payload};
use crate::topology::Shutdown;

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads `spec` to its end (or until a stop is requested, or `send` returns false),
/// returning how many messages were sent. An error names the source and, for files,
/// the line.
pub fn run(
    spec: &SourceSpec,
    batch_size: usize,
    shutdown: &Shutdown,
    mut send: impl FnMut(Vec<Msg>) -> bool,
) -> Result<u64, String> {
    let id = &spec.id;
    let open = |path: &Path| {
        File::open(path)
            .map(BufReader::new)
            .map_err(|e| format!("source `{id}`: cannot open {}: {e}", path.display()))
    };
    match &spec.kind {
        SourceKind::File { path } => lines(
            open(path)?,
            batch_size,
            shutdown,
            false,
            &mut send,
            |_, _, line| Ok(Msg::new(line, None)),
        ),
        SourceKind::Stdin => {
            let stdin = BufReader::new(std::io::stdin().lock());
            lines(stdin, batch_size, shutdown, true, &mut send, |_, _, line| {
                Ok(Msg::new(line, None))
            })
        }
        SourceKind::Jsonl {
            path,
            key_field,
            timestamp_field,
        } => {
            let fields = (key_field.as_deref(), timestamp_field.as_deref());
            lines(
                open(path)?,
                batch_size,
                shutdown,
                false,
                &mut send,
                |n, ts, line| {
                    json_line(&line, fields)
                        .map_err(|e| format!("source `{id}`: {}:{n}: {e}", path.display()))
                        .map(|mut m| {
                            m.timestamp = m.timestamp.or(ts);
                            m
                        })
                },
            )
        }
        SourceKind::Generator {
            count,
            payload_size,
            keys,
        } => {
            generate(*count, *payload_size, *keys, batch_size, shutdown, &mut send);
            Ok(count.unwrap_or(0))
        }
    }
}

/// Reads lines (without `\n` or `\r\n`) in batches. With `eager`, a batch is also sent
/// whenever the reader has nothing more buffered, so interactive input is not held back.
fn lines<R: Read>(
    mut reader: BufReader<R>,
    batch_size: usize,
    shutdown: &Shutdown,
    eager: bool,
    send: &mut dyn FnMut(Vec<Msg>) -> bool,
    mut make: impl FnMut(u64, Option<i64>, Bytes) -> Result<Msg, String>,
) -> Result<u64, String> {
    let mut sent = 0u64;
    let mut line_no = 0u64;
    let mut batch = Vec::with_capacity(batch_size);
    let mut buf = Vec::new();
    loop {
        if shutdown.is_stopping() {
            break;
        }
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("reading line {}: {e}", line_no + 1))?;
        if n > 0 {
            line_no += 1;
            let end = buf.len() - buf.ends_with(b"\n") as usize;
            let end = end - buf[..end].ends_with(b"\r") as usize;
            let ts = Some(now_millis());
            batch.push(make(line_no, ts, Bytes::copy_from_slice(&buf[..end]))?);
        }
        let flush = batch.len() >= batch_size || n == 0 || (eager && reader.buffer().is_empty());
        if flush && !batch.is_empty() {
            sent += batch.len() as u64;
            if !send(std::mem::replace(&mut batch, Vec::with_capacity(batch_size))) {
                break;
            }
        }
        if n == 0 {
            break;
        }
    }
    Ok(sent)
}

/// A JSON line becomes a message with the line as payload; key and timestamp may come
/// from top-level fields.
fn json_line(line: &Bytes, (key_field, ts_field): (Option<&str>, Option<&str>)) -> Result<Msg, String> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut msg = Msg::new(line.clone(), None);
    if let Some(field) = key_field {
        msg.key = match value.get(field) {
            Some(serde_json::Value::String(s)) => Some(Bytes::copy_from_slice(s.as_bytes())),
            Some(serde_json::Value::Null) | None => None,
            Some(other) => Some(Bytes::from(other.to_string())),
        };
    }
    if let Some((field, v)) = ts_field.and_then(|f| Some((f, value.get(f)?))) {
        let millis = v
            .as_i64()
            .ok_or_else(|| format!("`{field}` is not an integer of milliseconds: {v}"))?;
        msg.timestamp = Some(millis);
    }
    Ok(msg)
}

/// Zero-padded sequence numbers as payloads (cut or padded to `payload_size`), optionally
/// keyed `k<n % keys>`.
fn generate(
    count: Option<u64>,
    payload_size: usize,
    keys: Option<u64>,
    batch_size: usize,
    shutdown: &Shutdown,
    send: &mut dyn FnMut(Vec<Msg>) -> bool,
) {
    let mut next = 0u64;
    while count.is_none_or(|c| next < c) && !shutdown.is_stopping() {
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
        if !send(batch) {
            break;
        }
    }
}
