//! Passes messages through, and emits `tick <n> after <count> messages` every `every_ms`
//! of wall-clock time from its first message on, whether messages keep coming or not: a
//! processing-time timer that sets the next one each time it fires.
use flowhost_sdk::prelude::*;
use flowhost_sdk::time::{TimeDomain, Timer};
use serde::Deserialize;

/// `config` of the node.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TickerConfig {
    /// Milliseconds between ticks.
    pub every_ms: i64,
}

/// Counts what passes; the timer is the host's.
pub struct Ticker {
    every: i64,
    seen: u64,
    ticks: u64,
    armed: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[node]
impl Node for Ticker {
    type Config = TickerConfig;

    fn init(config: TickerConfig) -> Result<Self, NodeError> {
        if config.every_ms <= 0 {
            return Err(NodeError::fatal("every_ms must be positive"));
        }
        Ok(Ticker {
            every: config.every_ms,
            seen: 0,
            ticks: 0,
            armed: false,
        })
    }

    fn process<'a>(&mut self, msg: &Message<'a>, out: &mut Output<'a>) -> Result<(), NodeError> {
        self.seen += 1;
        if !std::mem::replace(&mut self.armed, true) {
            out.set_timer(TimeDomain::ProcessingTime, now_ms() + self.every, b"tick");
        }
        out.forward(msg)
    }

    fn on_timer(&mut self, timer: &Timer<'_>, out: &mut Output<'_>) -> Result<(), NodeError> {
        self.ticks += 1;
        out.emit(format!("tick {} after {} messages", self.ticks, self.seen))?;
        out.set_timer(TimeDomain::ProcessingTime, timer.time + self.every, b"tick");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_sdk::testing::{Harness, json};

    #[test]
    fn ticks_every_interval_from_the_first_message_on_with_or_without_input() {
        let mut node = Harness::<Ticker>::new(json!({ "every_ms": 1000 })).unwrap();
        assert_eq!(node.process(["a", "b"]).unwrap().texts(), ["a", "b"]);
        let timers = node.timers();
        assert_eq!(timers.len(), 1);
        let first = timers[0].1;
        assert!(node.advance_clock(first - 1).unwrap().records.is_empty());
        assert_eq!(
            node.advance_clock(first).unwrap().texts(),
            ["tick 1 after 2 messages"]
        );
        assert_eq!(
            node.advance_clock(first + 2000).unwrap().texts(),
            ["tick 2 after 2 messages", "tick 3 after 2 messages"],
            "two intervals passed without input: two ticks"
        );
        assert_eq!(node.timers()[0].1, first + 3000);
    }
}
