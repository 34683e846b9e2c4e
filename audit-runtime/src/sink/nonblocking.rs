use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Sink, SinkError};
use crate::config::INTERNAL_TARGET;
use crate::event::AuditEvent;

/// What a [`NonBlocking`] sink does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    /// Inner-sink panics caught by the worker (each also counted as failed).
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

enum Msg {
    Event(AuditEvent),
    Flush(SyncSender<Result<(), SinkError>>),
    Shutdown(SyncSender<()>),
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
    panics: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NonBlockingStats {
        NonBlockingStats {
            enqueued: self.enqueued.load(Ordering::Acquire),
            written: self.written.load(Ordering::Acquire),
            failed: self.failed.load(Ordering::Acquire),
            panics: self.panics.load(Ordering::Acquire),
            dropped: self.dropped.load(Ordering::Acquire),
        }
    }
}

/// Runs any sink on one worker thread behind a bounded queue, so callers only
/// pay for moving the event into the queue. Encoding, hashing and I/O happen
/// on the worker, in order.
///
/// - Full queue: [`FullPolicy::Block`] (default, lossless) or
///   [`FullPolicy::Drop`] (counted).
/// - [`Sink::flush`] returns once everything queued before it is written and
///   the inner sink is flushed.
/// - [`NonBlocking::shutdown`] drains with a deadline and reports what, if
///   anything, was not written; dropping the sink drains without a deadline.
/// - Inner-sink errors and panics are counted, never propagated to callers.
///
/// ```
/// use audit_runtime::{FullPolicy, MemorySink, NonBlocking};
/// let memory = MemorySink::new();
/// let sink = NonBlocking::builder(memory.clone())
///     .capacity(1024)
///     .full_policy(FullPolicy::Block)
///     .build();
/// ```
pub struct NonBlocking {
    tx: SyncSender<Msg>,
    policy: FullPolicy,
    counters: Arc<Counters>,
    worker: Mutex<Option<JoinHandle<()>>>,
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
    /// Queue capacity in events (default 8192; at least 1).
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

    /// Also log inner-sink errors through `tracing` at
    /// [`crate::INTERNAL_TARGET`] (the error kind only, never event content).
    pub fn report_errors(mut self, on: bool) -> Self {
        self.report_errors = on;
        self
    }

    /// Starts the worker.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread.
    pub fn build(self) -> NonBlocking {
        let (tx, rx) = mpsc::sync_channel(self.capacity);
        let counters = Arc::new(Counters::default());
        let worker = {
            let counters = counters.clone();
            let inner = self.inner;
            let report = self.report_errors;
            std::thread::Builder::new()
                .name(self.thread_name)
                .spawn(move || run_worker(inner, rx, &counters, report))
                .expect("failed to spawn the phi-audit sink worker thread")
        };
        NonBlocking {
            tx,
            policy: self.policy,
            counters,
            worker: Mutex::new(Some(worker)),
        }
    }
}

impl NonBlocking {
    /// Wraps `inner` with the defaults: 8192 events, [`FullPolicy::Block`].
    pub fn new(inner: impl Sink) -> NonBlocking {
        NonBlocking::builder(inner).build()
    }

    /// Configures a wrapper around `inner`.
    pub fn builder<S: Sink>(inner: S) -> NonBlockingBuilder<S> {
        NonBlockingBuilder {
            inner,
            capacity: 8192,
            policy: FullPolicy::Block,
            thread_name: "phi-audit-sink".into(),
            report_errors: false,
        }
    }

    /// Current counters.
    pub fn stats(&self) -> NonBlockingStats {
        self.counters.snapshot()
    }

    /// Writes everything queued, flushes the inner sink and stops the worker,
    /// waiting at most `timeout`. Later writes fail with [`SinkError::Closed`].
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let deadline = std::time::Instant::now() + timeout;
        let mut msg = Msg::Shutdown(ack_tx);
        // Enqueue the stop behind everything already queued, without waiting
        // past the deadline for room.
        enum Sent {
            Queued,
            WorkerGone,
            TimedOut,
        }
        let sent = loop {
            match self.tx.try_send(msg) {
                Ok(()) => break Sent::Queued,
                Err(TrySendError::Disconnected(_)) => break Sent::WorkerGone,
                Err(TrySendError::Full(m)) => {
                    if std::time::Instant::now() >= deadline {
                        break Sent::TimedOut;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let completed = match sent {
            Sent::TimedOut => false,
            Sent::Queued => match ack_rx.recv_timeout(remaining) {
                Ok(()) => true,
                Err(RecvTimeoutError::Timeout) => false,
                // The worker stopped on an earlier shutdown request.
                Err(RecvTimeoutError::Disconnected) => true,
            },
            Sent::WorkerGone => true,
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
        let handle = self
            .worker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn enqueue(&self, event: AuditEvent) -> Result<(), SinkError> {
        let msg = Msg::Event(event);
        let r = match self.policy {
            FullPolicy::Block => self.tx.send(msg).map_err(|_| SinkError::Closed),
            FullPolicy::Drop => match self.tx.try_send(msg) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => {
                    self.counters.dropped.fetch_add(1, Ordering::AcqRel);
                    Err(SinkError::QueueFull)
                }
                Err(TrySendError::Disconnected(_)) => Err(SinkError::Closed),
            },
        };
        if r.is_ok() {
            self.counters.enqueued.fetch_add(1, Ordering::AcqRel);
        }
        r
    }
}

impl Sink for NonBlocking {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        self.enqueue(event.clone())
    }

    fn write_owned(&self, event: AuditEvent) -> Result<(), SinkError> {
        self.enqueue(event)
    }

    fn flush(&self) -> Result<(), SinkError> {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Flush(ack_tx))
            .map_err(|_| SinkError::Closed)?;
        match ack_rx.recv() {
            Ok(r) => r,
            Err(_) => Err(SinkError::Closed),
        }
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Shutdown(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
        self.join();
    }
}

fn run_worker<S: Sink>(inner: S, rx: Receiver<Msg>, counters: &Counters, report: bool) {
    // Sinks that take batches get whatever is already queued, up to this many.
    let max_batch = catch_unwind(AssertUnwindSafe(|| inner.max_batch()))
        .unwrap_or(1)
        .max(1);
    let write = |event: AuditEvent| {
        match catch_unwind(AssertUnwindSafe(|| inner.write_owned(event))) {
            Ok(Ok(())) => {
                counters.written.fetch_add(1, Ordering::AcqRel);
            }
            Ok(Err(e)) => {
                counters.failed.fetch_add(1, Ordering::AcqRel);
                if report {
                    tracing::warn!(target: INTERNAL_TARGET, error = %e, "audit sink worker failed to write an event");
                }
            }
            Err(_) => {
                counters.failed.fetch_add(1, Ordering::AcqRel);
                counters.panics.fetch_add(1, Ordering::AcqRel);
                if report {
                    tracing::error!(target: INTERNAL_TARGET, "audit sink panicked while writing an event");
                }
            }
        }
    };
    let write_batch = |batch: Vec<AuditEvent>| {
        let n = batch.len() as u64;
        match catch_unwind(AssertUnwindSafe(|| inner.write_batch(batch))) {
            Ok(Ok(())) => {
                counters.written.fetch_add(n, Ordering::AcqRel);
            }
            Ok(Err(e)) => {
                counters.failed.fetch_add(n, Ordering::AcqRel);
                if report {
                    tracing::warn!(target: INTERNAL_TARGET, error = %e, events = n, "audit sink worker failed to write a batch");
                }
            }
            Err(_) => {
                counters.failed.fetch_add(n, Ordering::AcqRel);
                counters.panics.fetch_add(1, Ordering::AcqRel);
                if report {
                    tracing::error!(target: INTERNAL_TARGET, "audit sink panicked while writing a batch");
                }
            }
        }
    };
    let flush = || match catch_unwind(AssertUnwindSafe(|| inner.flush())) {
        Ok(r) => r,
        Err(_) => {
            counters.panics.fetch_add(1, Ordering::AcqRel);
            Err(SinkError::Other("sink panicked while flushing".into()))
        }
    };
    // Returns false when the worker must stop.
    let handle = |msg: Msg| -> bool {
        match msg {
            Msg::Event(e) => {
                write(e);
                true
            }
            Msg::Flush(ack) => {
                let _ = ack.send(flush());
                true
            }
            Msg::Shutdown(ack) => {
                let _ = flush();
                let _ = ack.send(());
                false
            }
        }
    };
    // With batching, an event pulls in the events queued behind it; the first
    // other message ends the batch and is handled right after it, in order.
    let handle = |msg: Msg| -> bool {
        match msg {
            Msg::Event(first) if max_batch > 1 => {
                let mut batch = Vec::with_capacity(max_batch.min(1024));
                batch.push(first);
                let mut next = None;
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(Msg::Event(e)) => batch.push(e),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                write_batch(batch);
                next.is_none_or(&handle)
            }
            other => handle(other),
        }
    };
    while let Ok(msg) = rx.recv() {
        if !handle(msg) {
            return;
        }
        loop {
            match rx.try_recv() {
                Ok(msg) => {
                    if !handle(msg) {
                        return;
                    }
                }
                Err(TryRecvError::Empty) => {
                    // Idle: push buffered lines to the medium.
                    let _ = flush();
                    break;
                }
                Err(TryRecvError::Disconnected) => {
                    let _ = flush();
                    return;
                }
            }
        }
    }
    let _ = flush();
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A sink taking batches of up to 8; batches holding event 13 fail.
    #[derive(Default)]
    struct Batches(Mutex<Vec<usize>>);

    impl Sink for Batches {
        fn write(&self, _: &AuditEvent) -> Result<(), SinkError> {
            Err(SinkError::Other("batching sink got a single write".into()))
        }
        fn max_batch(&self) -> usize {
            8
        }
        fn write_batch(&self, events: Vec<AuditEvent>) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(events.len());
            if events.iter().any(|e| {
                e.metadata
                    .get("n")
                    .is_some_and(|v| format!("{v:?}").contains("13"))
            }) {
                return Err(SinkError::Other("refused".into()));
            }
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
        sink.flush().unwrap();
        let sizes = inner.0.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|&s| (1..=8).contains(&s)));
        let st = sink.stats();
        let failed_batch = st.failed;
        assert!((1..=8).contains(&failed_batch), "{st:?}");
        assert_eq!(st.written + st.failed, 40);
    }
}
