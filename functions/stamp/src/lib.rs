//! Version 1 of `stamp`: emits `v1 r<replica> <payload>` (key kept), and with
//! `count_in = "<store>"` counts what it stamped under `v1` in that store.

/// This module's version, as it appears in its output.
pub const VERSION: &str = "v1";

include!("stamp.rs");
