//! Version 2 of `stamp` (the same code as `stamp`): emits `v2 r<replica> <payload>`.

/// This module's version, as it appears in its output.
pub const VERSION: &str = "v2";

include!("../../stamp/src/stamp.rs");
