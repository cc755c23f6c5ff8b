//! Logging to the host: each line is tagged with the node's name in the host log.
//!
//! Natively (in unit tests) lines go to stderr.

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// For debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// Writes `message` to the host log at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::__private::bindings::flowhost::node::log as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Logs at trace level.
pub fn trace(message: &str) {
    log(Level::Trace, message)
}
/// Logs at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}
/// Logs at info level.
pub fn info(message: &str) {
    log(Level::Info, message)
}
/// Logs at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}
/// Logs at error level.
pub fn error(message: &str) {
    log(Level::Error, message)
}
