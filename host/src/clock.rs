//! Wall-clock time as the host uses it: event timestamps, expiry, heartbeats, and the
//! histograms latencies are kept in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A histogram of microseconds up to an hour, 3 significant digits. (With
/// `Histogram::new`, `saturating_record` clamps at its initial 2048 µs, and the
/// percentiles of anything slower read back wrong.)
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

#[cfg(test)]
mod tests {
    #[test]
    fn latencies_past_two_milliseconds_read_back_as_recorded() {
        let mut h = super::latency_histogram();
        for micros in [5_000, 5_000, 120_000] {
            h.saturating_record(micros);
        }
        let (p50, max) = (h.value_at_quantile(0.5), h.max());
        assert_eq!((p50 / 10, max / 1000), (500, 120), "{p50} {max}");
    }
}
