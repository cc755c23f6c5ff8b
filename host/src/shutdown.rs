//! The stop signal a running graph and everything it runs share: a stop request (the
//! sources stop reading, everything in flight drains), an interrupt (Ctrl-C), and the
//! first failure, which is what the run reports.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Asks a running graph to stop, and records why it stopped.
#[derive(Debug, Default)]
pub struct Shutdown {
    stopping: AtomicBool,
    interrupted: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Shutdown {
    /// Stop reading sources; everything in flight drains (e.g. on Ctrl-C).
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Stop on the user's request (Ctrl-C): like [`Shutdown::request_stop`], remembered.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.request_stop();
    }

    /// Whether [`Shutdown::interrupt`] was called.
    pub fn was_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Stop because of `reason`; the first failure is the one reported.
    pub fn fail(&self, reason: String) {
        tracing::error!("{reason}");
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.request_stop();
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Why the graph failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
