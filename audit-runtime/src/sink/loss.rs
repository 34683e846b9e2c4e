//! Loss accounting shared by the sinks: what failed since the last flush
//! (so `flush()` never says Ok after a loss), and a throttle for reporting
//! failures through `tracing` without flooding the log.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use super::SinkError;

/// Events that failed since the last flush and the first error among them.
#[derive(Debug, Default)]
pub(crate) struct LossTracker {
    since_flush: AtomicU64,
    cause: Mutex<Option<String>>,
}

impl LossTracker {
    /// Counts `events` that were not written because of `cause` (a
    /// description without event content).
    pub(crate) fn record(&self, events: u64, cause: &dyn fmt::Display) {
        if events == 0 {
            return;
        }
        self.since_flush.fetch_add(events, Ordering::AcqRel);
        let mut c = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            *c = Some(cause.to_string());
        }
    }

    /// The loss since the last call as a [`SinkError::Lost`], resetting it;
    /// `Ok` when nothing failed.
    pub(crate) fn take(&self) -> Result<(), SinkError> {
        let events = self.since_flush.swap(0, Ordering::AcqRel);
        let cause = self.cause.lock().unwrap_or_else(|p| p.into_inner()).take();
        if events == 0 {
            return Ok(());
        }
        Err(SinkError::Lost {
            events,
            cause: cause.unwrap_or_else(|| "unknown".to_owned()),
        })
    }
}

/// Combines a sink's flush result with its losses since the last flush: a
/// loss wins (it carries the count), else the flush's own error.
pub(crate) fn flush_result(
    flushed: Result<(), SinkError>,
    losses: Result<(), SinkError>,
) -> Result<(), SinkError> {
    match (losses, flushed) {
        (Err(lost), _) => Err(lost),
        (Ok(()), r) => r,
    }
}

/// At most one report per interval; failures in between are summed into
/// the next report.
#[derive(Debug)]
pub(crate) struct ReportThrottle {
    /// Milliseconds (monotonic, from the first use) of the last report;
    /// `i64::MIN` before the first.
    last: AtomicI64,
    pending: AtomicU64,
}

/// Shortest time between two reports of the same reporter.
const REPORT_EVERY_MS: i64 = 1000;

impl Default for ReportThrottle {
    fn default() -> Self {
        ReportThrottle {
            last: AtomicI64::new(i64::MIN),
            pending: AtomicU64::new(0),
        }
    }
}

impl ReportThrottle {
    /// Adds `events` failures; returns the failures to report now (those
    /// since the last report), or `None` while the last report is recent.
    pub(crate) fn add(&self, events: u64) -> Option<u64> {
        self.pending.fetch_add(events, Ordering::AcqRel);
        let now = monotonic_ms();
        let last = self.last.load(Ordering::Acquire);
        if last != i64::MIN && now.saturating_sub(last) < REPORT_EVERY_MS {
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        Some(self.pending.swap(0, Ordering::AcqRel))
    }
}

fn monotonic_ms() -> i64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_reports_once_with_the_count_and_first_cause() {
        let t = LossTracker::default();
        assert!(t.take().is_ok());
        t.record(2, &"disk full");
        t.record(3, &"closed");
        match t.take() {
            Err(SinkError::Lost { events, cause }) => {
                assert_eq!(events, 5);
                assert_eq!(cause, "disk full");
            }
            other => panic!("{other:?}"),
        }
        assert!(t.take().is_ok());
    }

    #[test]
    fn throttle_reports_the_first_at_once_and_sums_the_rest() {
        let t = ReportThrottle::default();
        assert_eq!(t.add(1), Some(1));
        assert_eq!(t.add(4), None);
        assert_eq!(t.add(5), None);
        t.last
            .store(monotonic_ms() - 2 * REPORT_EVERY_MS, Ordering::Release);
        assert_eq!(t.add(1), Some(10));
    }
}
