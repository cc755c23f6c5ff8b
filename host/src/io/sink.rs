//! Sinks: stdout, a file, or nowhere; text (payload lines) or JSON lines with metadata.

use std::fs::File;
use std::io::{BufWriter, Write};

use crate::manifest::{SinkFormat, SinkKind, SinkSpec};
use crate::message::Msg;

/// Writes messages for one sink.
pub struct SinkWriter {
    out: Option<Box<dyn Write + Send>>,
    format: SinkFormat,
}

impl SinkWriter {
    /// Opens the sink's destination (a file is created or truncated).
    pub fn open(spec: &SinkSpec) -> anyhow::Result<SinkWriter> {
        let out: Option<Box<dyn Write + Send>> = match &spec.kind {
            SinkKind::Stdout => Some(Box::new(BufWriter::new(std::io::stdout()))),
            SinkKind::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        anyhow::anyhow!("sink `{}`: cannot create {}: {e}", spec.id, dir.display())
                    })?;
                }
                let file = File::create(path).map_err(|e| {
                    anyhow::anyhow!("sink `{}`: cannot create {}: {e}", spec.id, path.display())
                })?;
                Some(Box::new(BufWriter::new(file)))
            }
            SinkKind::Null => None,
        };
        Ok(SinkWriter {
            out,
            format: spec.format,
        })
    }

    /// Writes a batch and flushes it, so results show as they arrive.
    pub fn write(&mut self, msgs: &[Msg]) -> std::io::Result<()> {
        let Some(out) = &mut self.out else { return Ok(()) };
        for m in msgs {
            match self.format {
                SinkFormat::Text => {
                    out.write_all(&m.payload)?;
                    out.write_all(b"\n")?;
                }
                SinkFormat::Json => {
                    serde_json::to_writer(&mut *out, &as_json(m))?;
                    out.write_all(b"\n")?;
                }
            }
        }
        out.flush()
    }
}

fn text(b: &[u8]) -> serde_json::Value {
    serde_json::Value::String(String::from_utf8_lossy(b).into_owned())
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
