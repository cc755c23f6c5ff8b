//! Node errors: a kind that decides the host's policy, and a message for people.

use std::fmt;

pub use crate::frame::ErrorKind;

/// An error returned by a node for one message or for the whole node.
///
/// [`ErrorKind::InvalidInput`] sends the message to the node's `on_error` policy
/// (dead-letter, skip or stop); [`ErrorKind::Retryable`] is retried by the host first;
/// [`ErrorKind::Fatal`] means the node cannot go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// What went wrong, for the log and the dead-letter headers.
    pub message: String,
}

impl NodeError {
    /// The message is bad data.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidInput,
            message: message.into(),
        }
    }

    /// A passing failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            message: message.into(),
        }
    }

    /// The node cannot go on.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Fatal,
            message: message.into(),
        }
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for NodeError {}

impl From<serde_json::Error> for NodeError {
    fn from(e: serde_json::Error) -> Self {
        NodeError::invalid_input(format!("JSON: {e}"))
    }
}

impl From<bincode::error::DecodeError> for NodeError {
    fn from(e: bincode::error::DecodeError) -> Self {
        NodeError::invalid_input(format!("bincode: {e}"))
    }
}

impl From<bincode::error::EncodeError> for NodeError {
    fn from(e: bincode::error::EncodeError) -> Self {
        NodeError::fatal(format!("bincode: {e}"))
    }
}

impl From<std::str::Utf8Error> for NodeError {
    fn from(e: std::str::Utf8Error) -> Self {
        NodeError::invalid_input(format!("payload is not UTF-8: {e}"))
    }
}

impl From<std::string::FromUtf8Error> for NodeError {
    fn from(e: std::string::FromUtf8Error) -> Self {
        NodeError::invalid_input(format!("payload is not UTF-8: {e}"))
    }
}

impl From<crate::frame::FrameError> for NodeError {
    fn from(e: crate::frame::FrameError) -> Self {
        NodeError::fatal(e.to_string())
    }
}
