//! Event time between vertices. A watermark `t` from a producer says: no record with a
//! timestamp earlier than `t` will follow from it (its later records earlier than that
//! are late). Watermarks travel in-band, on the same channels as the batches and after
//! them, so a consumer never sees a watermark before the records it covers.
//!
//! A source's watermark is the largest timestamp it has read, less its allowed
//! out-of-orderness; a node's is the least of its producers' (every replica of every
//! vertex feeding it), and it passes that on once its timers up to it have fired. A
//! producer that ends says `i64::MAX`, so windows close at the end of a bounded input.
//! A source with an idleness timeout that has sent nothing for that long is *idle*: it
//! holds nobody back until it sends again; a node all of whose producers are idle is
//! idle itself and says so downstream.

use std::time::{Duration, Instant};

/// Event time: milliseconds since the Unix epoch.
pub type Time = i64;

/// What a producer says about event time, after everything it sent before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// No record earlier than this follows (`i64::MAX`: the producer has ended).
    At(Time),
    /// Nothing comes for now: hold nobody back until something does.
    Idle,
}

/// A mark with its producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    /// Who says it: a number unique among the producers of the graph in this process.
    pub from: u32,
    /// What it says.
    pub mark: Mark,
    /// The producer counts as idle once nothing came from it for this long.
    pub idle_after: Option<Duration>,
}

/// A source's watermark: the largest timestamp read, less the out-of-orderness allowed.
#[derive(Debug, Clone)]
pub struct Generator {
    out_of_orderness: i64,
    max_seen: Option<Time>,
}

impl Generator {
    /// A generator allowing records `out_of_orderness` behind the largest timestamp seen.
    pub fn new(out_of_orderness: Duration) -> Self {
        Generator {
            out_of_orderness: out_of_orderness.as_millis().min(i64::MAX as u128) as i64,
            max_seen: None,
        }
    }

    /// Goes on from `max_seen`, the largest timestamp read before (a resumed source's).
    pub fn resume(mut self, max_seen: Option<Time>) -> Self {
        self.max_seen = max_seen;
        self
    }

    /// The largest timestamp read.
    pub fn max_seen(&self) -> Option<Time> {
        self.max_seen
    }

    /// The watermark now.
    pub fn current(&self) -> Option<Time> {
        self.max_seen.map(|m| m.saturating_sub(self.out_of_orderness))
    }

    /// Takes in the timestamps of a batch; the watermark after it (none before the first
    /// timestamp).
    pub fn observe(&mut self, timestamps: impl IntoIterator<Item = Option<Time>>) -> Option<Time> {
        if let Some(max) = timestamps.into_iter().flatten().max() {
            self.max_seen = Some(self.max_seen.map_or(max, |m| m.max(max)));
        }
        self.current()
    }
}

#[derive(Debug, Clone)]
struct Producer {
    from: u32,
    mark: Mark,
    heard: Instant,
    idle_after: Option<Duration>,
}

impl Producer {
    /// What it says now: a producer quiet for longer than its idleness timeout is idle.
    fn mark(&self, now: Instant) -> Mark {
        match self.idle_after {
            Some(after) if now.duration_since(self.heard) >= after && self.mark != Mark::At(Time::MAX) => {
                Mark::Idle
            }
            _ => self.mark,
        }
    }
}

/// A consumer's watermark over its producers.
#[derive(Debug, Clone)]
pub struct Watermarks {
    expected: usize,
    producers: Vec<Producer>,
}

impl Watermarks {
    /// A consumer fed by `expected` producers: it has a watermark once each has said one.
    pub fn new(expected: usize) -> Self {
        Watermarks {
            expected,
            producers: Vec::new(),
        }
    }

    /// Something came from `marked.from`, saying `marked.mark`.
    pub fn observe(&mut self, marked: &Marked, now: Instant) {
        let heard = Producer {
            from: marked.from,
            mark: marked.mark,
            heard: now,
            idle_after: marked.idle_after,
        };
        match self.producers.iter_mut().find(|p| p.from == marked.from) {
            Some(p) => *p = heard,
            None => self.producers.push(heard),
        }
    }

    /// The consumer's mark now: the least of its producers' that are not idle; idle if
    /// all are; none until every producer has said something.
    pub fn current(&self, now: Instant) -> Option<Mark> {
        if self.expected == 0 || self.producers.len() < self.expected {
            return None;
        }
        let least = self
            .producers
            .iter()
            .filter_map(|p| match p.mark(now) {
                Mark::At(t) => Some(t),
                Mark::Idle => None,
            })
            .min();
        Some(least.map_or(Mark::Idle, Mark::At))
    }

    /// When a producer that is not idle now becomes idle if nothing comes from it.
    pub fn next_idle(&self, now: Instant) -> Option<Instant> {
        self.producers
            .iter()
            .filter(|p| p.mark(now) != Mark::Idle && p.mark != Mark::At(Time::MAX))
            .filter_map(|p| p.idle_after.map(|a| p.heard + a))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(from: u32, t: Time) -> Marked {
        Marked {
            from,
            mark: Mark::At(t),
            idle_after: None,
        }
    }

    #[test]
    fn the_least_of_every_producer_once_all_have_spoken() {
        let now = Instant::now();
        let mut w = Watermarks::new(2);
        w.observe(&at(7, 100), now);
        assert_eq!(w.current(now), None, "one producer has not said anything yet");
        w.observe(&at(9, 50), now);
        assert_eq!(w.current(now), Some(Mark::At(50)));
        w.observe(&at(9, 300), now);
        assert_eq!(w.current(now), Some(Mark::At(100)));
        w.observe(&at(7, Time::MAX), now);
        w.observe(&at(9, Time::MAX), now);
        assert_eq!(w.current(now), Some(Mark::At(Time::MAX)), "all ended");
    }

    #[test]
    fn a_quiet_producer_stops_holding_time_back_after_its_idleness_timeout() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(2);
        let quiet = Marked {
            idle_after: Some(Duration::from_secs(5)),
            ..at(1, 10)
        };
        w.observe(&quiet, t0);
        w.observe(&at(2, 500), t0);
        assert_eq!(w.current(t0), Some(Mark::At(10)));
        assert_eq!(w.next_idle(t0), Some(t0 + Duration::from_secs(5)));
        let later = t0 + Duration::from_secs(6);
        assert_eq!(w.current(later), Some(Mark::At(500)), "the quiet one is idle");
        assert_eq!(w.next_idle(later), None);
        // It reads again: it holds time back again.
        w.observe(
            &Marked {
                mark: Mark::At(20),
                ..quiet
            },
            later,
        );
        assert_eq!(w.current(later), Some(Mark::At(20)));
        // Every producer idle: the consumer is idle.
        w.observe(
            &Marked {
                mark: Mark::Idle,
                ..at(2, 0)
            },
            later,
        );
        let much_later = later + Duration::from_secs(6);
        assert_eq!(w.current(much_later), Some(Mark::Idle));
    }

    #[test]
    fn a_source_watermark_trails_its_largest_timestamp() {
        let mut g = Generator::new(Duration::from_millis(30));
        assert_eq!(g.observe([None]), None);
        assert_eq!(g.observe([Some(100), Some(90)]), Some(70));
        assert_eq!(
            g.observe([Some(80)]),
            Some(70),
            "an earlier timestamp does not move it back"
        );
        assert_eq!(g.observe([Some(200)]), Some(170));
    }
}
