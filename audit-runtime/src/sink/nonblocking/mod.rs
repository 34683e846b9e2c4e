use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[cfg(test)]
mod props;
mod queue;
mod worker;

use queue::{Control, Queue};
use worker::Worker;

use super::loss::ReportThrottle;
use super::{Sink, SinkError};
use crate::model::event::AuditEvent;
use crate::record::RecordRef;

/// What a [`NonBlocking`] sink does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FullPolicy {
    /// Wait for room: lossless, and the default.
    #[default]
    Block,
    /// Drop the event and count it ([`NonBlockingStats::dropped`]).
    Drop,
}

/// Counters of a [`NonBlocking`] sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NonBlockingStats {
    /// Events accepted into the queue.
    pub enqueued: u64,
    /// Events the inner sink wrote.
    pub written: u64,
    /// Events the inner sink refused with an error.
    pub failed: u64,
    /// Inner-sink panics caught by the worker. A panic fails the whole batch
    /// handed to the inner sink: its events are counted as failed.
    pub panics: u64,
    /// Events dropped because the queue was full ([`FullPolicy::Drop`]).
    pub dropped: u64,
}

impl NonBlockingStats {
    /// Events queued but not yet written or failed.
    pub fn pending(&self) -> u64 {
        self.enqueued.saturating_sub(self.written + self.failed)
    }
}

/// What [`NonBlocking::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// True when the worker wrote everything queued and stopped in time.
    pub completed: bool,
    /// Counters at the end of the shutdown.
    pub stats: NonBlockingStats,
}

impl ShutdownReport {
    /// Events that were queued and not written (still pending at the
    /// timeout, or refused by the inner sink), plus those dropped when full.
    pub fn lost(&self) -> u64 {
        self.stats.pending() + self.stats.failed + self.stats.dropped
    }
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    failed: AtomicU64,
    panics: AtomicU64,
    dropped: AtomicU64,
    /// Failed + dropped + the inner sink's lost events at the last flush.
    flushed_losses: AtomicU64,
    /// The first error since the last flush (no event content).
    cause: Mutex<Option<String>>,
    /// An error of the inner sink's flush run when the worker idled.
    idle_flush_error: Mutex<Option<SinkError>>,
    throttle: ReportThrottle,
}

impl Counters {
    fn note_cause(&self, cause: &dyn std::fmt::Display) {
        let mut c = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            *c = Some(cause.to_string());
        }
    }

    /// What a flush reports, given the inner sink's flush result: the
    /// events failed, dropped or lost by the inner sink since the previous
    /// flush, else an inner flush error (this one's or an idle one's).
    fn flush_result(
        &self,
        inner: &dyn Sink,
        flushed: Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let total = self.failed.load(Ordering::Acquire)
            + self.dropped.load(Ordering::Acquire)
            + inner.lost_events();
        let since = total.saturating_sub(self.flushed_losses.swap(total, Ordering::AcqRel));
        let cause = self.cause.lock().unwrap_or_else(|p| p.into_inner()).take();
        let idle = self
            .idle_flush_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let flushed = flushed.and(idle.map_or(Ok(()), Err));
        match flushed {
            // An inner sink that counts losses only in its flush result.
            Err(SinkError::Lost { events, cause: c }) if events > since => {
                Err(SinkError::Lost { events, cause: c })
            }
            Err(SinkError::Lost { .. }) | Ok(()) if since == 0 => Ok(()),
            Err(SinkError::Lost { cause: c, .. }) => Err(SinkError::Lost {
                events: since,
                cause: cause.unwrap_or(c),
            }),
            Ok(()) => Err(SinkError::Lost {
                events: since,
                cause: cause.unwrap_or_else(|| "unknown".into()),
            }),
            Err(e) if since == 0 => Err(e),
            Err(e) => Err(SinkError::Lost {
                events: since,
                cause: cause.unwrap_or_else(|| e.to_string()),
            }),
        }
    }

    /// The worker's counters, then `enqueued` (read second, so it is never
    /// behind what was written).
    fn snapshot(&self, queue: &Queue) -> NonBlockingStats {
        let written = self.written.load(Ordering::Acquire);
        let failed = self.failed.load(Ordering::Acquire);
        NonBlockingStats {
            written,
            failed,
            enqueued: queue.enqueued(),
            panics: self.panics.load(Ordering::Acquire),
            dropped: self.dropped.load(Ordering::Acquire),
        }
    }
}

/// Runs any sink on one worker thread behind a bounded queue, so callers only
/// pay for moving the event into the queue. Encoding, hashing and I/O happen
/// on the worker, in order. When the inner sink is a [`crate::JsonlFileSink`],
/// an audited call is queued as a compact record (its constant parts by
/// reference) and the worker writes its JSON from parts rendered once; other
/// inner sinks get events, built by the callers.
///
/// - Full queue: [`FullPolicy::Block`] (default, lossless) or
///   [`FullPolicy::Drop`] (counted).
/// - [`Sink::flush`] returns once everything queued before it is written and
///   the inner sink is flushed.
/// - [`NonBlocking::shutdown`] drains with a deadline and reports what, if
///   anything, was not written; dropping the sink drains without a deadline.
/// - Inner-sink errors and panics are counted, never propagated to callers;
///   they are reported instead: [`Sink::flush`] returns
///   [`SinkError::Lost`] with the count of events failed, dropped or lost by
///   the inner sink since the previous flush, [`Sink::lost_events`] (and so
///   [`crate::Dispatch::stats`]) includes them, and by default the worker
///   logs them through `tracing` (see [`NonBlockingBuilder::report_errors`]).
/// - Batching: when the worker finds fewer than 64 events queued it naps
///   about 20 µs (a timed sleep, not polling) to let the batch grow, and
///   naps once more before it sleeps for good on an empty queue; a flush or
///   shutdown wakes it at once. Under load callers hand over events without
///   waking the worker, and the queue's cache lines stay with them while
///   they fill a batch; a lone event reaches the inner sink within about
///   0.1 ms.
///
/// ```
/// use phi_audit::{FullPolicy, MemorySink, NonBlocking};
/// let memory = MemorySink::new();
/// let sink = NonBlocking::builder(memory.clone())
///     .capacity(1024)
///     .full_policy(FullPolicy::Block)
///     .build();
/// ```
pub struct NonBlocking {
    queue: Arc<Queue>,
    policy: FullPolicy,
    counters: Arc<Counters>,
    /// The inner sink, also held by the worker (asked for its losses).
    inner: Arc<dyn Sink>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Whether the inner sink takes call records: if not, callers build
    /// the events (their cores are the ones with time to spare when the
    /// worker hashes or formats).
    takes_records: bool,
}

impl std::fmt::Debug for NonBlocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonBlocking")
            .field("policy", &self.policy)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Configures a [`NonBlocking`] sink.
#[derive(Debug)]
pub struct NonBlockingBuilder<S> {
    inner: S,
    capacity: usize,
    policy: FullPolicy,
    thread_name: String,
    report_errors: bool,
}

impl<S: Sink> NonBlockingBuilder<S> {
    /// Queue capacity in events (default 4096; at least 1). Memory is about
    /// twice this many events (the queue and the batch being written).
    pub fn capacity(mut self, events: usize) -> Self {
        self.capacity = events.max(1);
        self
    }

    /// What to do when the queue is full (default [`FullPolicy::Block`]).
    pub fn full_policy(mut self, policy: FullPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Name of the worker thread (default `phi-audit-sink`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Log inner-sink errors through `tracing` at [`crate::INTERNAL_TARGET`]
    /// (default on): counts and the error kind, never event content; at
    /// most one report a second, summing the failures in between.
    pub fn report_errors(mut self, on: bool) -> Self {
        self.report_errors = on;
        self
    }

    /// Starts the worker.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread.
    pub fn build(self) -> NonBlocking {
        let takes_records = self.inner.__takes_records();
        let queue = Arc::new(Queue::new(self.capacity, takes_records));
        let counters = Arc::new(Counters::default());
        let inner = Arc::new(self.inner);
        let worker = {
            let counters = counters.clone();
            let queue = queue.clone();
            let inner = inner.clone();
            let report = self.report_errors;
            let capacity = self.capacity;
            std::thread::Builder::new()
                .name(self.thread_name)
                .spawn(move || Worker::new(inner, capacity, counters, report).run(&queue))
                .expect("failed to spawn the phi-audit sink worker thread")
        };
        NonBlocking {
            queue,
            policy: self.policy,
            counters,
            inner,
            worker: Mutex::new(Some(worker)),
            takes_records,
        }
    }
}

impl NonBlocking {
    /// Wraps `inner` with the defaults: 4096 events, [`FullPolicy::Block`].
    pub fn new(inner: impl Sink) -> NonBlocking {
        NonBlocking::builder(inner).build()
    }

    /// Configures a wrapper around `inner`.
    pub fn builder<S: Sink>(inner: S) -> NonBlockingBuilder<S> {
        NonBlockingBuilder {
            inner,
            capacity: 4096,
            policy: FullPolicy::Block,
            thread_name: "phi-audit-sink".into(),
            report_errors: true,
        }
    }

    /// Current counters.
    pub fn stats(&self) -> NonBlockingStats {
        self.counters.snapshot(&self.queue)
    }

    /// Writes everything queued, flushes the inner sink and stops the worker,
    /// waiting at most `timeout`. Later writes fail with [`SinkError::Closed`].
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        // The stop goes behind everything already queued.
        let completed = if self.queue.push_control(Control::Shutdown(ack_tx)) {
            match ack_rx.recv_timeout(timeout) {
                Ok(()) => true,
                Err(RecvTimeoutError::Timeout) => false,
                // The worker stopped on an earlier shutdown request.
                Err(RecvTimeoutError::Disconnected) => true,
            }
        } else {
            // Already closed by an earlier shutdown.
            true
        };
        if completed {
            self.join();
        }
        let completed = completed && self.stats().pending() == 0;
        ShutdownReport {
            completed,
            stats: self.stats(),
        }
    }

    fn join(&self) {
        let handle = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Counts a drop for a full queue.
    #[inline]
    fn counted(&self, r: Result<(), SinkError>) -> Result<(), SinkError> {
        if let Err(e @ SinkError::QueueFull) = &r {
            self.counters.dropped.fetch_add(1, Ordering::AcqRel);
            self.counters.note_cause(e);
        }
        r
    }

    fn blocks(&self) -> bool {
        self.policy == FullPolicy::Block
    }
}

impl Sink for NonBlocking {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        self.counted(self.queue.push_event(event.clone(), self.blocks()))
    }

    fn write_owned(&self, event: AuditEvent) -> Result<(), SinkError> {
        self.counted(self.queue.push_event(event, self.blocks()))
    }

    fn __takes_records(&self) -> bool {
        self.takes_records
    }

    fn __write_record(&self, record: RecordRef<'_>) -> Result<(), SinkError> {
        self.counted(self.queue.push_record(record, self.blocks()))
    }

    fn flush(&self) -> Result<(), SinkError> {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if !self.queue.push_control(Control::Flush(ack_tx)) {
            return Err(SinkError::Closed);
        }
        match ack_rx.recv() {
            Ok(r) => r,
            Err(_) => Err(SinkError::Closed),
        }
    }

    /// Events accepted into the queue that the inner sink refused (or
    /// panicked on), plus the inner sink's own lost events.
    fn lost_events(&self) -> u64 {
        self.counters.failed.load(Ordering::Acquire) + self.inner.lost_events()
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.queue.push_control(Control::Shutdown(ack_tx)) {
            let _ = ack_rx.recv();
        }
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::BatchError;
    use std::time::Instant;

    #[test]
    fn report_counts_lost_events() {
        let r = ShutdownReport {
            completed: false,
            stats: NonBlockingStats {
                enqueued: 10,
                written: 6,
                failed: 1,
                panics: 0,
                dropped: 2,
            },
        };
        assert_eq!(r.stats.pending(), 3);
        assert_eq!(r.lost(), 6);
    }

    /// A batching sink; a batch holding event 13 fails as a whole.
    #[derive(Default)]
    struct Batches(Mutex<Vec<usize>>);

    impl Sink for Batches {
        fn write(&self, _: &AuditEvent) -> Result<(), SinkError> {
            Err(SinkError::Other("batching sink got a single write".into()))
        }
        fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
            self.0.lock().unwrap().push(events.len());
            let bad = events.iter().any(|e| {
                e.metadata
                    .get("n")
                    .is_some_and(|v| *v == crate::MetaValue::Int(13))
            });
            if bad {
                return Err(BatchError::all(events, SinkError::Other("refused".into())));
            }
            events.clear();
            Ok(())
        }
    }

    #[test]
    fn batching_sink_gets_queued_events_in_batches_and_counts_per_event() {
        let inner = Arc::new(Batches::default());
        let sink = NonBlocking::builder(inner.clone()).capacity(64).build();
        let d = crate::Dispatch::new(
            crate::Config::new("svc").build().unwrap(),
            crate::MemorySink::new(),
        );
        for n in 0..40u64 {
            let e = crate::EventBuilder::new(crate::ActionType::Read, "Patient")
                .metadata("n", n)
                .build(&d);
            sink.write_owned(e).unwrap();
        }
        let flushed = sink.flush();
        let sizes = inner.0.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        let st = sink.stats();
        // The flush reports the loss, with its count, once.
        match flushed {
            Err(SinkError::Lost { events, .. }) => assert_eq!(events, st.failed),
            other => panic!("flush after a loss: {other:?}"),
        }
        assert!(sink.flush().is_ok());
        assert_eq!(sink.lost_events(), st.failed);
        // Exactly the batch holding event 13 failed, counted per event.
        assert!(sizes.contains(&(st.failed as usize)), "{st:?} {sizes:?}");
        assert!(st.failed >= 1);
        assert_eq!(st.written + st.failed, 40);
    }

    /// Records and events, queued in any mix around flushes and a
    /// shutdown, reach the inner sink in the order they were queued.
    #[test]
    fn records_and_events_keep_their_order() {
        use crate::record::{CallRecord, CallSite, ConfigRef};
        static SITE: CallSite = CallSite {
            action: crate::ActionType::Read,
            resource: "Patient",
            name: "read",
            phi_touched: None,
            classification: None,
        };
        let config = crate::Config::new("svc").build().unwrap();
        let d = crate::Dispatch::new(config.clone(), crate::MemorySink::new());
        let record = |n: u64| {
            let mut metadata = crate::Metadata::new();
            metadata.insert_value(crate::Text::from_static("n"), crate::MetaValue::UInt(n));
            CallRecord {
                site: &SITE,
                config: ConfigRef::Shared(config.clone()),
                context: None,
                started: crate::time::timestamp::Timestamp::from_unix_millis(0),
                resource_id: None,
                patient_id: None,
                actor: None,
                outcome: crate::Outcome::SUCCESS,
                metadata,
            }
        };
        let event = |n: u64| {
            crate::EventBuilder::new(crate::ActionType::Read, "Patient")
                .metadata("n", n)
                .build(&d)
        };
        let memory = crate::MemorySink::new();
        let sink = NonBlocking::builder(memory.clone()).capacity(64).build();
        // A fixed but irregular mix: runs of records, lone events, events
        // first and last, flushes between.
        let pattern = "eerrrerreeflrrrrfeerlrfe";
        let mut n = 0u64;
        for c in pattern.chars() {
            match c {
                'r' => {
                    RecordRef::pass(record(n), |r| sink.__write_record(r)).unwrap();
                    n += 1;
                }
                'e' => {
                    sink.write_owned(event(n)).unwrap();
                    n += 1;
                }
                'f' => sink.flush().unwrap(),
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        drop(sink);
        let seen: Vec<u64> = memory
            .events()
            .iter()
            .map(|e| match e.metadata.get("n") {
                Some(crate::MetaValue::UInt(n)) => *n,
                Some(crate::MetaValue::Int(n)) => *n as u64,
                other => panic!("no sequence number: {other:?}"),
            })
            .collect();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn a_lone_event_is_written_without_a_flush() {
        // The worker lingers for a bigger batch only briefly: one event and
        // nothing after it still reaches the inner sink on its own.
        let memory = crate::MemorySink::new();
        let sink = NonBlocking::builder(memory.clone()).capacity(4096).build();
        let d = crate::Dispatch::new(
            crate::Config::new("svc").build().unwrap(),
            crate::MemorySink::new(),
        );
        for round in 1..=3 {
            let e = crate::EventBuilder::new(crate::ActionType::Read, "Patient").build(&d);
            sink.write_owned(e).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while (memory.len() < round || sink.stats().pending() != 0) && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(memory.len(), round, "event {round} stayed in the queue");
            assert_eq!(sink.stats().pending(), 0);
            // Long enough for the worker to park between rounds.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
