//! Nodes behind an `http` source: the headers a request's message carries, and the
//! headers a reply sets (see `Record::status` and `Record::content_type`).
//!
//! A request's message has the body as its payload and these headers; every record a
//! node emits for it inherits them, the return address included, so the record that
//! reaches a `reply` sink answers the request. A message that fails for good answers it
//! with its error: `NodeError::invalid_input` as 400, `retryable` as 503, anything else
//! as 500.

/// The request's return address (set by the host; pass it on, do not change it).
pub const REPLY_TO: &str = "flowhost-reply-to";
/// The request's method (`GET`, `POST`, …).
pub const METHOD: &str = "http-method";
/// The request's URL path.
pub const PATH: &str = "http-path";
/// The request's query string, when it has one.
pub const QUERY: &str = "http-query";
/// Prefix of the request headers the source copies: `http-header-x-user`.
pub const HEADER_PREFIX: &str = "http-header-";
/// The status a reply answers with, in decimal (default 200).
pub const STATUS: &str = "http-status";
/// The content type a reply answers with.
pub const CONTENT_TYPE: &str = "http-content-type";
