use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Sink, SinkError};
use crate::model::event::AuditEvent;

/// Keeps events in memory, for tests. Clones share the same storage.
///
/// With [`MemorySink::bounded`], only the newest `n` events are kept; older
/// ones are evicted and counted by [`MemorySink::evicted`].
///
/// ```
/// use phi_audit::{MemorySink, Sink};
/// let sink = MemorySink::new();
/// let reader = sink.clone();
/// // ... install `sink`, emit ...
/// assert!(reader.events().is_empty());
/// ```
#[derive(Clone, Default, Debug)]
pub struct MemorySink(Arc<Mutex<State>>);

#[derive(Default, Debug)]
struct State {
    events: VecDeque<AuditEvent>,
    bound: Option<usize>,
    evicted: u64,
}

impl MemorySink {
    /// An unbounded memory sink.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// A memory sink keeping the newest `max_events` events.
    pub fn bounded(max_events: usize) -> MemorySink {
        let s = MemorySink::default();
        s.lock().bound = Some(max_events);
        s
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the stored events, oldest first.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.lock().events.iter().cloned().collect()
    }

    /// Removes and returns the stored events.
    pub fn take(&self) -> Vec<AuditEvent> {
        self.lock().events.drain(..).collect()
    }

    /// Number of stored events.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// True when no event is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events evicted by the bound.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// Removes all stored events.
    pub fn clear(&self) {
        self.lock().events.clear();
    }
}

impl Sink for MemorySink {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        self.write_owned(event.clone())
    }

    fn write_owned(&self, event: AuditEvent) -> Result<(), SinkError> {
        let mut s = self.lock();
        if let Some(b) = s.bound {
            if b == 0 {
                s.evicted += 1;
                return Ok(());
            }
            while s.events.len() >= b {
                s.events.pop_front();
                s.evicted += 1;
            }
        }
        s.events.push_back(event);
        Ok(())
    }
}
