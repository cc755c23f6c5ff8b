//! Guest stdout/stderr: captured line by line into the host log, tagged with the node.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::throttle::Throttle;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A WASI output stream that logs each line the guest writes.
#[derive(Clone)]
pub struct GuestOutput {
    node: Arc<str>,
    stream: &'static str,
    pending: Arc<Mutex<Vec<u8>>>,
    logs: Arc<Throttle>,
}

impl GuestOutput {
    /// Lines count against `logs`, the node's budget.
    pub fn new(node: Arc<str>, stream: &'static str, logs: Arc<Throttle>) -> Self {
        GuestOutput {
            node,
            stream,
            pending: Arc::default(),
            logs,
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            self.emit(&line[..end]);
        }
        // Bound what a guest that never writes a newline can make us hold.
        if pending.len() > 64 * 1024 {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn flush_partial(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        let Some(dropped) = self.logs.admit() else { return };
        let line = String::from_utf8_lossy(line);
        let note = crate::throttle::dropped_note(dropped);
        tracing::info!(target: "flowhost::guest", node = %self.node, stream = self.stream, "{}{note}", line.trim_end_matches('\r'));
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.flush_partial();
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }
}
