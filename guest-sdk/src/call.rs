//! Requests to the HTTP endpoints the manifest grants this node by name, such as another
//! graph's API (`calls = { quotes = "http://127.0.0.1:8080/quote" }` on the node): a
//! graph calling a graph, its answer going on as this node's output.
//!
//! ```ignore
//! let quote = flowhost_sdk::call::post("quotes", msg.payload())?;
//! if quote.status != 200 {
//!     return Err(NodeError::invalid_input(quote.text()?.to_owned()));
//! }
//! out.emit(quote.body)
//! ```
//!
//! The host makes the request within the call's deadline (`timeout_ms`): a call is
//! synchronous, so a node makes its requests one after another. An endpoint that is not
//! granted fails the call as fatal; one that cannot be reached or does not answer in
//! time, as retryable (the node's `retry` applies). In native tests,
//! [`respond_with`] stands in for the endpoints.

use crate::NodeError;

/// An endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Its content type, if it said.
    pub content_type: Option<String>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, NodeError> {
        std::str::from_utf8(&self.body)
            .map_err(|e| NodeError::invalid_input(format!("the answer is not UTF-8: {e}")))
    }

    /// The body as JSON.
    pub fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, NodeError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| NodeError::invalid_input(format!("the answer is not the JSON expected: {e}")))
    }
}

/// POSTs `body` to the endpoint granted as `endpoint`.
pub fn post(endpoint: &str, body: &[u8]) -> Result<Response, NodeError> {
    post_with(endpoint, body, &[])
}

/// [`post`] with request headers.
pub fn post_with(endpoint: &str, body: &[u8], headers: &[(&str, &str)]) -> Result<Response, NodeError> {
    imp::post(endpoint, body, headers)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Response;
    use crate::__private::bindings::flowhost::node::call as wit;
    use crate::NodeError;

    pub(super) fn post(endpoint: &str, body: &[u8], headers: &[(&str, &str)]) -> Result<Response, NodeError> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = wit::post(endpoint, body, &headers).map_err(crate::state::from_wit)?;
        Ok(Response {
            status: r.status,
            content_type: r.content_type,
            body: r.body,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;

    use super::Response;
    use crate::NodeError;

    type Responder = Box<dyn FnMut(&str, &[u8]) -> Result<Response, NodeError>>;

    thread_local! {
        static RESPONDER: RefCell<Option<Responder>> = RefCell::new(None);
    }

    pub(super) fn set(f: Responder) {
        RESPONDER.with_borrow_mut(|r| *r = Some(f));
    }

    pub(super) fn post(
        endpoint: &str,
        body: &[u8],
        _headers: &[(&str, &str)],
    ) -> Result<Response, NodeError> {
        RESPONDER.with_borrow_mut(|r| match r {
            Some(f) => f(endpoint, body),
            None => Err(NodeError::fatal(format!(
                "endpoint `{endpoint}` is not granted (in a native test, set one with flowhost_sdk::call::respond_with)"
            ))),
        })
    }
}

/// In native tests: answers every [`post`] of this thread with `f(endpoint, body)`.
#[cfg(not(target_arch = "wasm32"))]
pub fn respond_with(f: impl FnMut(&str, &[u8]) -> Result<Response, NodeError> + 'static) {
    imp::set(Box::new(f));
}
