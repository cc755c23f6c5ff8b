//! Event time: the node's watermark, timers, and windows.
//!
//! A watermark `t` says no record with a timestamp earlier than `t` is still to come on
//! the node's inputs; a record earlier than the watermark that comes anyway is *late*.
//! Sources make watermarks from the timestamps they read (`watermark = { … }` in the
//! manifest); a node's is the least of its inputs', and it is `None` until every input
//! has one. At the end of a bounded input it is `i64::MAX`: every window closes.
//!
//! Timers are held by the host, keyed and deduplicated (one timer per domain, time and
//! key), so they survive a trap, a swap and, in a durable graph, a crash. Set one with
//! [`Output::set_timer`] while processing (it is withdrawn with the message's output if
//! the message fails); the host calls [`crate::Node::on_timer`] when it fires: an
//! event-time timer once the watermark reaches its time, a processing-time timer once
//! the wall clock does.
//!
//! ```
//! use flowhost_sdk::time::{Window, Windows};
//! let hourly = Windows::tumbling(3_600_000);
//! assert_eq!(hourly.assign(5_000_000).collect::<Vec<_>>(), [Window { start: 3_600_000, end: 7_200_000 }]);
//! ```

use std::cell::Cell;
use std::collections::BTreeSet;

use crate::Output;
pub use crate::frame::TimeDomain;
use crate::frame::{TimerOp, TimerRef};

thread_local! {
    /// The watermark of the current call, once asked for (it does not change within one).
    static WATERMARK: Cell<Option<Option<i64>>> = const { Cell::new(None) };
}

/// Forgets the watermark read in the previous call.
pub(crate) fn new_call() {
    WATERMARK.with(|w| w.set(None));
}

/// The node's watermark now (milliseconds since the epoch), or `None` while some input
/// has none. One host call per batch at most.
pub fn watermark() -> Option<i64> {
    if let Some(w) = WATERMARK.with(Cell::get) {
        return w;
    }
    let w = host_watermark();
    WATERMARK.with(|c| c.set(Some(w)));
    w
}

#[cfg(target_arch = "wasm32")]
fn host_watermark() -> Option<i64> {
    crate::__private::bindings::flowhost::node::time::watermark()
}

#[cfg(not(target_arch = "wasm32"))]
fn host_watermark() -> Option<i64> {
    crate::testing::watermark_now()
}

/// A timer that fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer<'a> {
    /// Its clock.
    pub domain: TimeDomain,
    /// The time it was set for.
    pub time: i64,
    /// The key it was set with.
    pub key: &'a [u8],
}

impl Output<'_> {
    /// Sets a timer: the host calls [`crate::Node::on_timer`] once `domain`'s clock
    /// reaches `time`, with `key`. Setting one that is set already does nothing.
    pub fn set_timer(&mut self, domain: TimeDomain, time: i64, key: &[u8]) {
        self.timer(TimerOp::Set, domain, time, key);
    }

    /// Deletes a timer, if it is set.
    pub fn delete_timer(&mut self, domain: TimeDomain, time: i64, key: &[u8]) {
        self.timer(TimerOp::Delete, domain, time, key);
    }
}

/// A window of event time: `start ≤ t < end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// First millisecond in it.
    pub start: i64,
    /// First millisecond after it.
    pub end: i64,
}

impl Window {
    /// Whether `t` falls in it.
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

/// How records are put in windows by their timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Windows {
    /// Back-to-back windows of `size` ms, aligned to the epoch: each record in one.
    Tumbling {
        /// Length, in milliseconds.
        size: i64,
    },
    /// Windows of `size` ms starting every `slide` ms: each record in `size / slide`.
    Hopping {
        /// Length, in milliseconds.
        size: i64,
        /// Distance between starts, in milliseconds.
        slide: i64,
    },
    /// A window per burst of records less than `gap` ms apart: a record opens
    /// `[t, t + gap)`, and windows that overlap merge.
    Session {
        /// The quiet time that ends a session, in milliseconds.
        gap: i64,
    },
}

impl Windows {
    /// Tumbling windows of `size` ms.
    pub fn tumbling(size: i64) -> Self {
        Windows::Tumbling { size: size.max(1) }
    }

    /// Hopping windows of `size` ms every `slide` ms.
    pub fn hopping(size: i64, slide: i64) -> Self {
        Windows::Hopping {
            size: size.max(1),
            slide: slide.clamp(1, size.max(1)),
        }
    }

    /// Session windows closed by `gap` ms without a record.
    pub fn session(gap: i64) -> Self {
        Windows::Session { gap: gap.max(1) }
    }

    /// The windows a record at `t` belongs to, earliest first (a session's is the
    /// record's own `[t, t + gap)`, before merging).
    pub fn assign(&self, t: i64) -> impl Iterator<Item = Window> + use<> {
        let (size, slide) = match *self {
            Windows::Tumbling { size } => (size, size),
            Windows::Hopping { size, slide } => (size, slide),
            Windows::Session { gap } => (gap, gap),
        };
        let session = matches!(self, Windows::Session { .. });
        // The latest window start at or before t, then back by `slide` while t is in it.
        let last = if session { t } else { t - t.rem_euclid(slide) };
        let count = if session { 1 } else { (size + slide - 1) / slide };
        (0..count)
            .rev()
            .map(move |i| last - i * slide)
            .map(move |start| Window {
                start,
                end: start.saturating_add(size),
            })
            .filter(move |w| w.contains(t))
    }
}

impl Output<'_> {
    fn timer(&mut self, op: TimerOp, domain: TimeDomain, time: i64, key: &[u8]) {
        self.writer_mut().timer(&TimerRef {
            op,
            domain,
            time,
            key,
        });
    }
}

/// A node's timers as its host holds them: one per domain, time and key, fired in time
/// order. The host and [`crate::testing::Harness`] both keep them in one of these.
#[doc(hidden)]
#[derive(Debug, Default, Clone)]
pub struct TimerTable {
    set: BTreeSet<(TimeDomain, i64, Vec<u8>)>,
}

impl TimerTable {
    /// Applies a set or delete item; whether the table changed.
    pub fn apply(&mut self, timer: &TimerRef<'_>) -> bool {
        let entry = (timer.domain, timer.time, timer.key.to_vec());
        match timer.op {
            TimerOp::Set => self.set.insert(entry),
            TimerOp::Delete => self.set.remove(&entry),
            TimerOp::Fired => false,
        }
    }

    /// Takes out the timers of `domain` due at `now` (time ≤ now), earliest first, at most `limit`.
    pub fn take_due(&mut self, domain: TimeDomain, now: i64, limit: usize) -> Vec<(i64, Vec<u8>)> {
        let due: Vec<_> = self
            .set
            .range((domain, i64::MIN, Vec::new())..)
            .take_while(|(d, t, _)| *d == domain && *t <= now)
            .take(limit)
            .cloned()
            .collect();
        for entry in &due {
            self.set.remove(entry);
        }
        due.into_iter().map(|(_, t, k)| (t, k)).collect()
    }

    /// The earliest timer of `domain`.
    pub fn next(&self, domain: TimeDomain) -> Option<i64> {
        self.set
            .range((domain, i64::MIN, Vec::new())..)
            .next()
            .filter(|(d, _, _)| *d == domain)
            .map(|(_, t, _)| *t)
    }

    /// Timers set, per domain: (event time, processing time).
    pub fn counts(&self) -> (usize, usize) {
        let event = self
            .set
            .iter()
            .take_while(|(d, _, _)| *d == TimeDomain::EventTime)
            .count();
        (event, self.set.len() - event)
    }

    /// Every timer set, in order.
    pub fn iter(&self) -> impl Iterator<Item = (TimeDomain, i64, &[u8])> {
        self.set.iter().map(|(d, t, k)| (*d, *t, k.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(w: Windows, t: i64) -> Vec<(i64, i64)> {
        w.assign(t).map(|w| (w.start, w.end)).collect()
    }

    #[test]
    fn tumbling_windows_hold_each_time_once_negative_times_included() {
        let w = Windows::tumbling(10);
        assert_eq!(starts(w, 0), [(0, 10)]);
        assert_eq!(starts(w, 9), [(0, 10)]);
        assert_eq!(starts(w, 10), [(10, 20)]);
        assert_eq!(starts(w, -1), [(-10, 0)]);
    }

    #[test]
    fn hopping_windows_hold_each_time_in_size_over_slide_windows() {
        let w = Windows::hopping(10, 5);
        assert_eq!(starts(w, 7), [(0, 10), (5, 15)]);
        assert_eq!(starts(w, 10), [(5, 15), (10, 20)]);
        let uneven = Windows::hopping(10, 4);
        assert_eq!(starts(uneven, 9), [(0, 10), (4, 14), (8, 18)]);
        assert_eq!(starts(uneven, 11), [(4, 14), (8, 18)]);
    }

    #[test]
    fn timers_are_one_per_domain_time_and_key_and_fire_in_time_order() {
        let mut table = TimerTable::default();
        let set = |time, key: &'static [u8], domain| TimerRef {
            op: TimerOp::Set,
            domain,
            time,
            key,
        };
        assert!(table.apply(&set(20, b"b", TimeDomain::EventTime)));
        assert!(table.apply(&set(10, b"a", TimeDomain::EventTime)));
        assert!(!table.apply(&set(10, b"a", TimeDomain::EventTime)), "set already");
        assert!(table.apply(&set(5, b"p", TimeDomain::ProcessingTime)));
        assert_eq!(table.counts(), (2, 1));
        assert_eq!(table.next(TimeDomain::EventTime), Some(10));
        assert_eq!(table.take_due(TimeDomain::EventTime, 9, 10), []);
        assert_eq!(
            table.take_due(TimeDomain::EventTime, 20, 10),
            [(10, b"a".to_vec()), (20, b"b".to_vec())]
        );
        assert_eq!(table.next(TimeDomain::EventTime), None);
        let delete = TimerRef {
            op: TimerOp::Delete,
            ..set(5, b"p", TimeDomain::ProcessingTime)
        };
        assert!(table.apply(&delete));
        assert_eq!(table.counts(), (0, 0));
    }

    #[test]
    fn a_session_window_starts_at_its_record() {
        assert_eq!(starts(Windows::session(30), 100), [(100, 130)]);
    }
}
