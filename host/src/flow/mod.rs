//! How batches move between the vertices of a graph, whatever the transport: the
//! [`Envelope`] a batch travels in, its [`Ack`], bounded counted channels, and the
//! [`Router`] that spreads a producer's output over the edges leaving it.
//!
//! Both transports use these: in-process every [`Sender`] is a channel to a consumer in
//! this process; over Kafka a producer's senders are topics ([`Outlet`]s) and a
//! consumer's channels are fed by the transport's reader of its group.

mod ack;
mod channel;
pub mod feedback;
mod route;
pub mod watermark;

pub use ack::{Ack, AckStatus, Acknowledged, Token};
pub use channel::{Envelope, InFlight, Mailbox, Outlet, Received, Sender, channel};
pub use route::{Route, Router};
