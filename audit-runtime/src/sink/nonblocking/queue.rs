//! The bounded queue between callers and the worker, and what it holds:
//! records, events and control messages in the order of a run log.

use std::sync::mpsc::SyncSender;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::model::event::AuditEvent;
use crate::record::{CallRecord, RecordRef};
use crate::sink::SinkError;
use crate::util::cache::CacheLine;

/// A control message, ordered among the events by its place in the log.
pub(super) enum Control {
    Flush(SyncSender<Result<(), SinkError>>),
    Shutdown(SyncSender<()>),
}

/// How many record slots ahead a caller prefetches. A measured choice: with
/// three ahead, on an AMD EPYC virtual machine, the caller still spent a
/// quarter to half of its time waiting for slot lines at its next locked
/// instruction; eight and sixteen ahead both cut that to a tenth (the lines
/// come from the worker's core, and under load that takes longer than three
/// calls).
pub(super) const PREFETCH_AHEAD: usize = 8;

/// How long the worker lets a small batch grow ([`Queue::take_all`]).
pub(super) const LINGER: Duration = Duration::from_micros(20);
/// Events that make a batch worth taking at once.
pub(super) const LINGER_BATCH: usize = 64;

/// The bounded queue between callers and the worker: a mutex-guarded [`Queued`]
/// the worker swaps out whole, so it takes everything queued with one lock,
/// and wakes blocked callers once per batch rather than once per event.
///
/// The worker never polls: between batches it naps on a timed wait, so the
/// queue's cache lines stay with the callers while they fill a batch, and
/// callers wake it (a system call) only when it sleeps for good, when a
/// control message arrives, or when the queue is half full.
pub(super) struct Queue {
    state: CacheLine<Mutex<QueueState>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
    /// [`LINGER_BATCH`], or the capacity if smaller.
    linger_batch: usize,
}

pub(super) struct QueueState {
    queued: Queued,
    /// Set by the worker when it stops: later sends fail.
    closed: bool,
    /// Events accepted, ever (kept under the lock the push takes anyway).
    enqueued: u64,
    /// The worker sleeps until woken.
    consumer_waiting: bool,
    /// The worker naps for a short time; wake it only for something urgent.
    consumer_napping: bool,
    producers_waiting: usize,
}

impl QueueState {
    pub(super) fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }
}

/// What is queued, in order: the records (nearly everything: audited calls)
/// in one vector the worker hands to the inner sink as it is, events written
/// directly in another, and the run log saying how they interleave with
/// each other and with control messages.
#[derive(Default)]
pub(super) struct Queued {
    pub(super) records: Vec<CallRecord>,
    pub(super) events: Vec<AuditEvent>,
    /// The order: runs of records and events (taken from the front of their
    /// vectors) and control messages.
    pub(super) log: Vec<Run>,
}

/// One entry of the run log of [`Queued`].
pub(super) enum Run {
    /// The next `n` records.
    Records(usize),
    /// The next `n` events.
    Events(usize),
    /// A message, behind everything before it.
    Control(Control),
}

impl Queued {
    /// Room for `n` of what will be queued: records when the inner sink
    /// takes them, events otherwise.
    pub(super) fn with_capacity(n: usize, records: bool) -> Queued {
        let (r, e) = if records { (n, 0) } else { (0, n) };
        Queued {
            records: Vec::with_capacity(r),
            events: Vec::with_capacity(e),
            log: Vec::with_capacity(16),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.records.len() + self.events.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Notes one more record (just pushed) in the log.
    #[inline(always)]
    fn note_record(&mut self) {
        match self.log.last_mut() {
            Some(Run::Records(n)) => *n += 1,
            _ => self.log.push(Run::Records(1)),
        }
    }

    /// Notes one more event (just pushed) in the log.
    #[inline]
    fn note_event(&mut self) {
        match self.log.last_mut() {
            Some(Run::Events(n)) => *n += 1,
            _ => self.log.push(Run::Events(1)),
        }
    }
}

impl Queue {
    /// A queue of `capacity` items, with room reserved for records when the
    /// inner sink takes them, else for events.
    pub(super) fn new(capacity: usize, takes_records: bool) -> Queue {
        Queue {
            state: CacheLine(Mutex::new(QueueState {
                queued: Queued::with_capacity(capacity, takes_records),
                closed: false,
                enqueued: 0,
                consumer_waiting: false,
                consumer_napping: false,
                producers_waiting: 0,
            })),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity,
            linger_batch: LINGER_BATCH.min(capacity),
        }
    }

    /// Items accepted, ever.
    pub(super) fn enqueued(&self) -> u64 {
        self.lock().enqueued
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, QueueState> {
        // The state is vectors and flags: a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues what `put` adds (one record or event), waiting for room when
    /// `block`.
    #[inline]
    fn push(&self, block: bool, put: impl FnOnce(&mut Queued)) -> Result<(), SinkError> {
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err(SinkError::Closed);
            }
            if st.queued.len() < self.capacity {
                break;
            }
            if !block {
                return Err(SinkError::QueueFull);
            }
            st.producers_waiting += 1;
            st = self.not_full.wait(st).unwrap_or_else(|p| p.into_inner());
            st.producers_waiting -= 1;
        }
        put(&mut st.queued);
        let len = st.queued.len();
        st.enqueued += 1;
        let wake = st.consumer_waiting || (st.consumer_napping && len >= self.capacity.div_ceil(2));
        drop(st);
        if wake {
            self.not_empty.notify_one();
        }
        Ok(())
    }

    #[inline]
    pub(super) fn push_record(&self, record: RecordRef<'_>, block: bool) -> Result<(), SinkError> {
        self.push(block, |q| {
            record.push_to(&mut q.records);
            q.note_record();
            // Records go into lines the worker last read, on another core;
            // taking them back at the store would stall the lock's release
            // (measured: most of a push's time). So ask for them early: the
            // slot `PREFETCH_AHEAD` pushes ahead, and after a hand-over (an
            // empty vector) the ones before it too.
            let first = q.records.len() == 1;
            let spare = q.records.spare_capacity_mut();
            for (i, slot) in spare.iter_mut().take(PREFETCH_AHEAD).enumerate() {
                if first || i + 1 == PREFETCH_AHEAD {
                    crate::util::cache::for_write(slot.as_mut_ptr());
                }
            }
        })
    }

    pub(super) fn push_event(&self, event: AuditEvent, block: bool) -> Result<(), SinkError> {
        // The event is copied once, into its place in the queue: moved into
        // the closure and on through `push`, it was copied twice more
        // (measured: ~250 instructions per event whenever the compiler did
        // not inline `push`).
        let event = std::mem::ManuallyDrop::new(event);
        let mut queued = false;
        let r = self.push(block, |q| {
            q.events.reserve(1);
            let len = q.events.len();
            // SAFETY: `reserve` made room for one element past `len`; the
            // event is copied there once and, `queued` being set, never
            // read or dropped through `event` again.
            unsafe {
                std::ptr::copy_nonoverlapping(&*event, q.events.as_mut_ptr().add(len), 1);
                q.events.set_len(len + 1);
            }
            q.note_event();
            queued = true;
        });
        if !queued {
            drop(std::mem::ManuallyDrop::into_inner(event));
        }
        r
    }

    /// Queues a control message behind everything queued (never blocks).
    pub(super) fn push_control(&self, msg: Control) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.queued.log.push(Run::Control(msg));
        let wake = st.consumer_waiting || st.consumer_napping;
        drop(st);
        if wake {
            self.not_empty.notify_one();
        }
        true
    }

    /// Sleeps up to `time` or until woken for something urgent.
    fn nap<'a>(
        &'a self,
        st: MutexGuard<'a, QueueState>,
        time: Duration,
    ) -> MutexGuard<'a, QueueState> {
        let mut st = st;
        st.consumer_napping = true;
        let (mut st, _) = self
            .not_empty
            .wait_timeout(st, time)
            .unwrap_or_else(|p| p.into_inner());
        st.consumer_napping = false;
        st
    }

    /// Worker side: waits for work and swaps everything queued into the
    /// (empty) vectors given, handing their capacity back to the queue.
    ///
    /// A small batch without a control message first gets [`LINGER`] to
    /// grow. An empty queue gets one nap of [`LINGER`] (work tends to follow
    /// work); if it is still empty, `idle` runs (the worker flushes its
    /// sink) and the worker sleeps until a caller wakes it.
    pub(super) fn take_all(&self, into: &mut Queued, idle: &mut dyn FnMut()) {
        let mut st = self.lock();
        let control = st.queued.log.iter().any(|r| matches!(r, Run::Control(_)));
        if !control && st.queued.len() < self.linger_batch {
            st = self.nap(st, LINGER);
        }
        if st.is_empty() {
            drop(st);
            idle();
            st = self.lock();
            while st.is_empty() {
                st.consumer_waiting = true;
                st = self.not_empty.wait(st).unwrap_or_else(|p| p.into_inner());
                st.consumer_waiting = false;
            }
        }
        std::mem::swap(&mut st.queued, into);
        let wake = st.producers_waiting > 0;
        drop(st);
        if wake {
            self.not_full.notify_all();
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.not_full.notify_all();
    }
}
