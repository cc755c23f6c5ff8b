//! Acknowledgements: when an input batch counts as done.
//!
//! Over Kafka a polled batch is done once everything made from it is safe — its outputs
//! acknowledged by the brokers, a sink's batch written — and only then may its input
//! offsets be committed. Every batch made from an input batch carries a clone of its
//! [`Ack`]; when the last clone is dropped the batch is [`AckStatus::Done`], unless a
//! holder [`Ack::fail`]ed it first (an output could not be delivered: the batch must be
//! read again, never committed). In-process batches carry [`Ack::none`], which costs
//! nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// What became of an acknowledged batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Something made from it is still on its way.
    Pending,
    /// Everything made from it is safe.
    Done,
    /// Something made from it was lost: it must be read again.
    Failed,
}

/// The status of one acknowledged batch, as its reader (the committer) sees it.
#[derive(Debug, Default)]
pub struct Acknowledged(AtomicU8);

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

impl Acknowledged {
    /// The batch's status now.
    pub fn status(&self) -> AckStatus {
        match self.0.load(Ordering::Acquire) {
            PENDING => AckStatus::Pending,
            DONE => AckStatus::Done,
            _ => AckStatus::Failed,
        }
    }
}

/// What every holder of an [`Ack`] shares; dropped with the last holder.
#[derive(Debug)]
pub struct Token(Arc<Acknowledged>);

impl Drop for Token {
    fn drop(&mut self) {
        // A failed batch stays failed.
        let _ = self
            .0
            .0
            .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The acknowledgement a batch carries: none (in-process), or a share of its input
/// batch's token.
#[derive(Debug, Clone, Default)]
pub struct Ack(Option<Arc<Token>>);

impl Ack {
    /// A batch nothing waits on.
    pub const fn none() -> Self {
        Ack(None)
    }

    /// A new input batch's ack, and the status its reader watches.
    pub fn tracked() -> (Ack, Arc<Acknowledged>) {
        let status = Arc::new(Acknowledged::default());
        (Ack(Some(Arc::new(Token(status.clone())))), status)
    }

    /// Marks the batch failed: it never becomes done, so it is not committed.
    pub fn fail(self) {
        if let Some(token) = self.0 {
            token.0.0.store(FAILED, Ordering::Release);
        }
    }

    /// As a raw pointer (null for [`Ack::none`]), for a C library's per-message opaque;
    /// [`Ack::from_raw`] takes it back.
    pub fn into_raw(self) -> *const Token {
        self.0.map_or(std::ptr::null(), Arc::into_raw)
    }

    /// # Safety
    /// `ptr` must come from [`Ack::into_raw`], and be taken back once.
    pub unsafe fn from_raw(ptr: *const Token) -> Self {
        // SAFETY: as the caller promises, a non-null pointer is an `Arc` given up by
        // `into_raw`.
        Ack((!ptr.is_null()).then(|| unsafe { Arc::from_raw(ptr) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_when_the_last_holder_lets_go_failed_stays_failed() {
        let (ack, status) = Ack::tracked();
        let copy = ack.clone();
        drop(ack);
        assert_eq!(status.status(), AckStatus::Pending);
        drop(copy);
        assert_eq!(status.status(), AckStatus::Done);

        let (ack, status) = Ack::tracked();
        let copy = ack.clone();
        copy.fail();
        drop(ack);
        assert_eq!(status.status(), AckStatus::Failed);

        let (ack, status) = Ack::tracked();
        // SAFETY: the pointer comes from `into_raw` and is taken back once.
        let back = unsafe { Ack::from_raw(ack.into_raw()) };
        assert_eq!(status.status(), AckStatus::Pending);
        drop(back);
        assert_eq!(status.status(), AckStatus::Done);
        // SAFETY: null is what `into_raw` gives for `none`.
        assert!(unsafe { Ack::from_raw(Ack::none().into_raw()) }.0.is_none());
    }
}
