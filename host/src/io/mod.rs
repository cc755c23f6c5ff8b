//! Where messages enter and leave a graph: [`source`] readers and [`sink`] writers.

pub mod http;
pub mod sink;
pub mod source;

use std::path::PathBuf;

/// A source or sink that cannot be opened, read or written, naming it (and the file and
/// line where there is one).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A file operation failed.
    #[error("{vertex}: cannot {what} {}: {error}", path.display())]
    File {
        /// `source \`id\`` or `sink \`id\``.
        vertex: String,
        /// What was being done (`open`, `create`, `resume … at byte n`, `read`).
        what: String,
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// A line of input is not what the source reads.
    #[error("{vertex}: {}:{line}: {why}", path.display())]
    Line {
        /// `source \`id\``.
        vertex: String,
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What is wrong with it.
        why: String,
    },
    /// A server socket cannot be opened.
    #[error("{vertex}: cannot {what}: {error}")]
    Listen {
        /// `source \`id\``.
        vertex: String,
        /// What was being done (`listen on 127.0.0.1:8080`).
        what: String,
        /// The error.
        error: std::io::Error,
    },
    /// A sink only the runner can open (a `reply` sink answers through the run's exchange).
    #[error("{vertex} is opened by the runner")]
    Unopened {
        /// `sink \`id\``.
        vertex: String,
    },
    /// A Kafka source or sink, in a run without the Kafka transport.
    #[error("{vertex} uses Kafka topic `{topic}`: run it with transport = \"kafka\"")]
    NeedsKafka {
        /// `source \`id\`` or `sink \`id\``.
        vertex: String,
        /// The topic.
        topic: String,
    },
}

/// A record that is not a message a JSON sink wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message written by a JSON sink: {0}")]
pub struct NotAMessage(String);
