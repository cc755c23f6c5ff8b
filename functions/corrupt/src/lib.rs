//! A node that breaks the batch contract instead of using the SDK's runtime: a batch
//! holding one of these payloads gets a broken output batch, as the first of them says
//! (other batches are echoed). A test fixture for the host's checks of guest output.
//!
//! - `garbage`: bytes that are not a batch.
//! - `truncated`: a valid record cut short.
//! - `bad-port`: a record for an output port the node was not given.
//! - `bad-index`: an error for input message 1000.
//! - `huge-length`: a record whose length field claims 4 GiB.
//! - `failed-twice`: the echo, and two errors for the same input message.
//! - `record-and-error`: the echo, and an error for the message that asked for it.
//! - `two-mib`: the echo, and a record of 2 MiB.
//! - anything else: echoed, correctly framed.
use flowhost_sdk::frame::{BatchReader, BatchWriter, Item};

#[cfg(target_arch = "wasm32")]
mod export {
    use flowhost_sdk::__private::bindings::{self, flowhost::node::types as wit};

    struct Corrupt;

    impl bindings::Guest for Corrupt {
        fn init(_: wit::NodeInfo) -> Result<(), wit::NodeError> {
            Ok(())
        }
        fn process(input: Vec<u8>) -> Result<Vec<u8>, wit::NodeError> {
            Ok(super::respond(&input))
        }
        fn finish() -> Result<Vec<u8>, wit::NodeError> {
            Ok(super::respond(&[]))
        }
    }

    bindings::export!(Corrupt with_types_in bindings);
}

/// The output batch for `input`, broken as its first breaking payload asks.
pub fn respond(input: &[u8]) -> Vec<u8> {
    let mut echo = BatchWriter::default();
    const BREAKERS: [&[u8]; 8] = [
        b"garbage",
        b"truncated",
        b"bad-port",
        b"bad-index",
        b"huge-length",
        b"failed-twice",
        b"record-and-error",
        b"two-mib",
    ];
    let mut breaker: Option<(Vec<u8>, u32)> = None;
    let records = BatchReader::new(input).into_iter().flatten().flatten();
    for (index, item) in records.enumerate() {
        if let Item::Record(r) = item {
            if breaker.is_none() && BREAKERS.contains(&r.payload) {
                breaker = Some((r.payload.to_vec(), index as u32));
            }
            echo.record(0, r.timestamp, r.key, r.payload, r.headers.raw());
        }
    }
    let (breaker, index) = breaker.map_or((None, 0), |(b, i)| (Some(b), i));
    match breaker.as_deref() {
        Some(b"failed-twice") => {
            echo.error(flowhost_sdk::ErrorKind::InvalidInput, index, "first failure");
            echo.error(flowhost_sdk::ErrorKind::InvalidInput, index, "second failure");
        }
        Some(b"record-and-error") => {
            echo.error(
                flowhost_sdk::ErrorKind::InvalidInput,
                index,
                "failed, records kept",
            );
        }
        Some(b"two-mib") => echo.record(0, None, None, &vec![b'x'; 2 << 20], (0, &[])),
        _ => {}
    }
    let good = echo.finish();
    match breaker.as_deref() {
        Some(b"garbage") => b"\xde\xad\xbe\xef not a batch at all".to_vec(),
        Some(b"truncated") => good[..good.len() - 3].to_vec(),
        Some(b"bad-port") => {
            let mut w = BatchWriter::default();
            w.record(7, None, None, b"to nowhere", (0, &[]));
            w.finish()
        }
        Some(b"bad-index") => {
            let mut w = BatchWriter::default();
            w.error(flowhost_sdk::ErrorKind::InvalidInput, 1000, "no such message");
            w.finish()
        }
        Some(b"huge-length") => {
            // One record, no key or timestamp, whose payload length claims 4 GiB.
            let mut bytes = 1u32.to_le_bytes().to_vec();
            bytes.extend_from_slice(&[0, 0, 0]); // flags, port
            bytes.extend_from_slice(&u32::MAX.to_le_bytes());
            bytes.extend_from_slice(b"short");
            bytes
        }
        _ => good,
    }
}
