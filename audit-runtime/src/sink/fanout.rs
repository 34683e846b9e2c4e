use std::sync::atomic::{AtomicU64, Ordering};

use super::{BatchError, Sink, SinkError};
use crate::model::event::AuditEvent;

/// Writes every event to several sinks. A failing (or panicking) sink does not
/// stop the others; its failures are counted per sink, and the write reports
/// an error when any sink failed.
///
/// ```
/// use phi_audit::{FanOut, MemorySink, StdoutSink};
/// let fan = FanOut::new().with(MemorySink::new()).with(StdoutSink::new());
/// assert_eq!(fan.len(), 2);
/// ```
#[derive(Default)]
pub struct FanOut {
    sinks: Vec<(Box<dyn Sink>, AtomicU64)>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("sinks", &self.sinks.len())
            .field("failures", &self.failures())
            .finish()
    }
}

impl FanOut {
    /// A fan-out with no sinks yet.
    pub fn new() -> FanOut {
        FanOut::default()
    }

    /// Adds a sink.
    pub fn with(mut self, sink: impl Sink) -> FanOut {
        self.sinks.push((Box::new(sink), AtomicU64::new(0)));
        self
    }

    /// Number of sinks.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// True with no sinks.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Failed writes and flushes per sink, in the order they were added.
    pub fn failures(&self) -> Vec<u64> {
        self.sinks
            .iter()
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .collect()
    }

    fn each(&self, mut f: impl FnMut(&dyn Sink) -> Result<(), SinkError>) -> Result<(), SinkError> {
        let mut failed = 0;
        for (sink, count) in &self.sinks {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&**sink)));
            if !matches!(r, Ok(Ok(()))) {
                count.fetch_add(1, Ordering::Relaxed);
                failed += 1;
            }
        }
        if failed == 0 {
            Ok(())
        } else {
            Err(SinkError::Other(format!(
                "{failed} of {} fan-out sinks failed",
                self.sinks.len()
            )))
        }
    }
}

impl Sink for FanOut {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        self.each(|s| s.write(event))
    }

    fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
        // Every sink gets the whole batch (so each can group its work); the
        // batch counts as failed by as many events as the worst sink failed.
        let mut worst: Option<BatchError> = None;
        let last = self.sinks.len().saturating_sub(1);
        for (i, (sink, count)) in self.sinks.iter().enumerate() {
            let mut mine = if i == last {
                std::mem::take(events)
            } else {
                events.clone()
            };
            let n = mine.len() as u64;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                sink.write_batch(&mut mine)
            }));
            let err = match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(BatchError {
                    failed: n,
                    error: SinkError::Other("a fan-out sink panicked".into()),
                }),
            };
            if let Some(e) = err {
                count.fetch_add(e.failed.max(1), Ordering::Relaxed);
                if worst.as_ref().is_none_or(|w| e.failed > w.failed) {
                    worst = Some(e);
                }
            }
        }
        events.clear();
        match worst {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Flushes every sink. A sink's [`SinkError::Lost`] is passed on (the
    /// largest count when several lost events); otherwise any other error
    /// is summarized.
    fn flush(&self) -> Result<(), SinkError> {
        let mut lost: Option<(u64, String)> = None;
        let r = self.each(|s| {
            let r = s.flush();
            if let Err(SinkError::Lost { events, cause }) = &r {
                if lost.as_ref().is_none_or(|(n, _)| events > n) {
                    lost = Some((*events, cause.clone()));
                }
            }
            r
        });
        match lost {
            Some((events, cause)) => Err(SinkError::Lost { events, cause }),
            None => r,
        }
    }

    /// The sinks' lost events, added up (an event two sinks lost counts
    /// twice).
    fn lost_events(&self) -> u64 {
        self.sinks.iter().map(|(s, _)| s.lost_events()).sum()
    }
}
