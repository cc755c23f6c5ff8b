//! Write [flowhost](https://github.com/flowhost) dataflow nodes in Rust.
//!
//! A node is a function (or a type implementing [`Node`]) compiled to
//! `wasm32-wasip1`; the flowhost host turns it into a component, feeds it batches of
//! messages and routes what it emits. A complete node:
//!
//! ```
//! use flowhost_sdk::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Order { id: u64, amount_cents: u64 }
//!
//! #[derive(Serialize)]
//! struct Priced { id: u64, total: f64 }
//!
//! #[derive(Deserialize)]
//! struct Config { vat: f64 }
//!
//! /// Adds VAT to each order.
//! #[node(map)]
//! fn price(order: Json<Order>, config: &Config) -> Json<Priced> {
//!     let total = order.0.amount_cents as f64 / 100.0 * (1.0 + config.vat);
//!     Json(Priced { id: order.0.id, total })
//! }
//!
//! // The function stays an ordinary function for unit tests ...
//! let out = price(Json(Order { id: 1, amount_cents: 1000 }), &Config { vat: 0.2 });
//! assert_eq!(out.0.total, 12.0);
//!
//! // ... and `PriceNode` runs it through the real batch runtime, natively.
//! let mut node = flowhost_sdk::testing::Harness::<PriceNode>::new(serde_json::json!({ "vat": 0.5 })).unwrap();
//! let out = node.process([r#"{"id":7,"amount_cents":200}"#, "not json"]).unwrap();
//! assert_eq!(out.texts(), [r#"{"id":7,"total":3.0}"#]);
//! assert_eq!(out.errors[0].0, 1); // the second message failed: the host dead-letters it
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip1 --release` (crate type `cdylib`)
//! and reference the `.wasm` (or the crate) from a graph manifest.
//!
//! # Shapes of `#[node]`
//!
//! | attribute | function | emits |
//! |---|---|---|
//! | `#[node(map)]` | `fn(In) -> Out` | one record per message ([`Emit`]) |
//! | `#[node(filter)]` | `fn(&In) -> bool` | the message, unchanged, when `true` |
//! | `#[node(filter_map)]` | `fn(In) -> Option<Out>` | zero or one record |
//! | `#[node(flat_map)]` | `fn(In) -> impl IntoIterator<Item = Out>` | any number |
//! | `#[node]` | `fn(Message, &mut Output) -> Result<(), E>` | whatever it sends |
//! | `#[node]` on `impl Node for T` | [`Node`] methods | state across messages, `finish` |
//!
//! `In` is anything [`FromMessage`] (`&str`, `&[u8]`, [`Message`], [`Json<T>`],
//! [`Bincode<T>`], …). A last parameter `&C` receives the node's manifest `config`, parsed
//! into `C: Deserialize`. Each function node gets a type `<CamelName>Node` that
//! [`testing::Harness`] can run. Returning `Err` (any `E: Into<NodeError>`) fails only
//! that message. One node per crate.
//!
//! The batch framing is specified in [`frame`] and `FRAMING.md`.
#![deny(missing_docs)]

pub mod call;
pub mod combine;
mod error;
pub mod frame;
pub mod http;
pub mod log;
mod message;
mod node;
mod output;
pub mod state;
pub mod testing;
pub mod time;

pub use error::{ErrorKind, NodeError};
#[cfg(feature = "macros")]
pub use flowhost_macros::node;
pub use message::{Bincode, FromMessage, ITERATION, Json, Message};
pub use node::{NoConfig, Node, Replica, replica};
pub use output::{Completion, DEFAULT_OUTPUT, Emit, IntoPayload, Output, Record, Verdict};

/// Hash maps and sets with a fast hash (foldhash) in place of std's SipHash, which is
/// built to resist keys chosen by an attacker and costs several times more per key.
/// Inside a node that cost buys little: a node is sandboxed and time-limited, so a
/// flood of colliding keys slows only that node. Create them with `HashMap::default()`
/// or `HashMapExt::new()`.
pub mod collections {
    pub use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
}

/// The default input port.
pub const DEFAULT_INPUT: &str = "in";

/// Everything a node crate usually needs.
pub mod prelude {
    #[cfg(feature = "macros")]
    pub use crate::node;
    pub use crate::state::Store;
    pub use crate::{Bincode, Json, Message, NoConfig, Node, NodeError, Output, Record};
}

/// Support code for `#[node]`; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::node::Runtime;
    pub use serde;

    #[cfg(target_arch = "wasm32")]
    #[allow(missing_docs)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "node",
            path: "wit",
            pub_export_macro: true,
            default_bindings_module: "::flowhost_sdk::__private::bindings",
        });
    }

    #[cfg(target_arch = "wasm32")]
    mod guest {
        use std::any::Any;
        use std::cell::RefCell;

        use super::bindings::flowhost::node::types as wit;
        use crate::node::Runtime;
        use crate::{ErrorKind, Node, NodeError};

        thread_local! {
            static RUNTIME: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
        }

        fn to_wit(e: NodeError) -> wit::NodeError {
            let kind = match e.kind {
                ErrorKind::InvalidInput => wit::ErrorKind::InvalidInput,
                ErrorKind::Retryable => wit::ErrorKind::Retryable,
                ErrorKind::Fatal => wit::ErrorKind::Fatal,
            };
            wit::NodeError {
                kind,
                message: e.message,
            }
        }

        fn with_runtime<N: Node, R>(
            f: impl FnOnce(&mut Runtime<N>) -> Result<R, NodeError>,
        ) -> Result<R, wit::NodeError> {
            RUNTIME
                .with_borrow_mut(|slot| {
                    let rt = slot
                        .as_mut()
                        .and_then(|b| b.downcast_mut::<Runtime<N>>())
                        .ok_or_else(|| NodeError::fatal("node called before init"))?;
                    f(rt)
                })
                .map_err(to_wit)
        }

        pub fn init<N: Node>(info: wit::NodeInfo) -> Result<(), wit::NodeError> {
            // A panic aborts the instance; make its message reach the host log first.
            std::panic::set_hook(Box::new(|p| {
                let payload = p.payload();
                let msg = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(a non-text panic payload)");
                let at = p
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                // Naming the input lets the host take this message as the culprit at
                // once, instead of re-running the batch to find it (FRAMING.md, Traps).
                let on = crate::node::current_input()
                    .map(|i| format!(" on input {i}"))
                    .unwrap_or_default();
                crate::log::error(&format!("panicked{on}{at}: {msg}"));
            }));
            let replica = crate::node::Replica {
                index: info.replica,
                count: info.replicas,
            };
            let ports = (info.inputs, info.outputs);
            let rt = Runtime::<N>::new(&info.name, &info.config, ports, replica).map_err(to_wit)?;
            RUNTIME.with_borrow_mut(|slot| *slot = Some(Box::new(rt)));
            Ok(())
        }

        pub fn process<N: Node>(input: Vec<u8>) -> Result<Vec<u8>, wit::NodeError> {
            with_runtime::<N, _>(|rt| rt.process(&input))
        }

        pub fn finish<N: Node>() -> Result<Vec<u8>, wit::NodeError> {
            with_runtime::<N, _>(|rt| rt.finish())
        }
    }
    #[cfg(target_arch = "wasm32")]
    pub use guest::{finish, init, process};
}

/// Exports a [`Node`] type as the crate's component; `#[node]` calls this for you.
#[macro_export]
macro_rules! export_node {
    ($node:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private::bindings::flowhost::node::types as __wit;
            struct __FlowhostGuest;
            impl $crate::__private::bindings::Guest for __FlowhostGuest {
                fn init(info: __wit::NodeInfo) -> ::core::result::Result<(), __wit::NodeError> {
                    $crate::__private::init::<$node>(info)
                }
                fn process(
                    input: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, __wit::NodeError> {
                    $crate::__private::process::<$node>(input)
                }
                fn finish() -> ::core::result::Result<::std::vec::Vec<u8>, __wit::NodeError> {
                    $crate::__private::finish::<$node>()
                }
            }
    $crate::__private::bindings::export!(__FlowhostGuest with_types_in $crate::__private::bindings);
        };
    };
}
