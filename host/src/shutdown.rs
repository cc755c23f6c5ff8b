//! The stop signal a running graph and everything it runs share: a stop request (the
//! sources stop reading, everything in flight drains), an interrupt (Ctrl-C), an abort
//! (the drain took too long: calls in flight are cut short, what is left is abandoned
//! unacknowledged), and the first failure, which is what the run reports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Asks a running graph to stop, and records why it stopped.
#[derive(Debug, Default)]
pub struct Shutdown {
    stopping: AtomicBool,
    interrupted: AtomicBool,
    aborting: AtomicBool,
    /// How long an interrupted graph may drain before it is aborted.
    grace: Mutex<Option<std::time::Duration>>,
    /// Raised on abort (the engine's, so guest calls in flight end at once).
    on_abort: Mutex<Vec<Arc<AtomicBool>>>,
    failure: Mutex<Option<String>>,
    /// Failures reported after the first (usually its consequences).
    later: std::sync::atomic::AtomicU64,
}

impl Shutdown {
    /// Stop reading sources; everything in flight drains (e.g. on Ctrl-C).
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Stop on the user's request (Ctrl-C, SIGTERM): like [`Shutdown::request_stop`],
    /// remembered, and if the graph has not drained within its grace period
    /// ([`Shutdown::set_grace`]) it is aborted.
    pub fn interrupt(self: &Arc<Self>) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.request_stop();
        let grace = *self.grace.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(grace) = grace {
            let weak = Arc::downgrade(self);
            let timer = std::thread::Builder::new().name("grace".into()).spawn(move || {
                std::thread::sleep(grace);
                if let Some(shutdown) = weak.upgrade() {
                    tracing::warn!("the graph did not drain within {grace:?}: stopping now");
                    shutdown.abort();
                }
            });
            if let Err(e) = timer {
                tracing::warn!("no grace timer ({e}): stopping now");
                self.abort();
            }
        }
    }

    /// How long [`Shutdown::interrupt`] lets the graph drain (the runner sets its
    /// longest call deadline: a drain that takes longer is stuck on calls).
    pub fn set_grace(&self, grace: std::time::Duration) {
        *self.grace.lock().unwrap_or_else(|e| e.into_inner()) = Some(grace);
    }

    /// Stop now: like [`Shutdown::request_stop`], and every flag given to
    /// [`Shutdown::raise_on_abort`] is raised, so calls in flight are cut short; batches
    /// not processed yet are abandoned without an acknowledgement (a Kafka or durable run
    /// reads them again next time).
    pub fn abort(&self) {
        self.aborting.store(true, Ordering::SeqCst);
        self.request_stop();
        for flag in self.on_abort.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Raises `flag` on [`Shutdown::abort`] (at once if it was aborted already).
    pub fn raise_on_abort(&self, flag: Arc<AtomicBool>) {
        if self.is_aborting() {
            flag.store(true, Ordering::SeqCst);
        }
        self.on_abort.lock().unwrap_or_else(|e| e.into_inner()).push(flag);
    }

    /// Whether [`Shutdown::abort`] was called.
    pub fn is_aborting(&self) -> bool {
        self.aborting.load(Ordering::Relaxed)
    }

    /// Whether [`Shutdown::interrupt`] was called.
    pub fn was_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Stop because of `reason`; the first failure is the one reported.
    ///
    /// The first failure is logged as an error; later ones (a message each of thousands
    /// queued behind the same cause) are counted and logged at debug level only.
    pub fn fail(&self, reason: String) {
        {
            let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            if failure.is_none() {
                tracing::error!("{reason}");
                *failure = Some(reason);
            } else {
                self.later.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("also failed: {reason}");
            }
        }
        self.request_stop();
    }

    /// Failures reported after the first.
    pub fn later_failures(&self) -> u64 {
        self.later.load(Ordering::Relaxed)
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
