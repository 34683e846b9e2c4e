//! The worker thread of a [`NonBlocking`](super::NonBlocking) sink: takes
//! everything queued at once and follows its run log, writing runs of
//! records and events to the inner sink in order and answering control
//! messages where they were queued.
//!
//! A worker is [`State::Running`] until it meets a shutdown message; then
//! it closes the queue, takes what callers queued before the close, and is
//! [`State::Stopping`]: it writes the rest of its log (answering flushes as
//! before, collecting further shutdowns) and stops.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use super::queue::{Control, Queue, Queued, Run};
use super::Counters;
use crate::config::INTERNAL_TARGET;
use crate::model::event::AuditEvent;
use crate::record::CallRecord;
use crate::sink::{BatchError, Sink, SinkError};

/// Where the worker is in its life.
pub(super) enum State {
    /// Taking batches from the queue.
    Running,
    /// The queue is closed; what it held is being written. The senders are
    /// the shutdown requests to answer once it is.
    Stopping(Vec<SyncSender<()>>),
}

/// The worker: the inner sink, its counters, and the batch being written.
pub(super) struct Worker<S> {
    inner: Arc<S>,
    counters: Arc<Counters>,
    report: bool,
    /// What the last `take_all` handed over; emptied as it is written, then
    /// handed back to the queue (with its capacity) by the next one.
    batch: Queued,
    state: State,
}

impl<S: Sink> Worker<S> {
    pub(super) fn new(
        inner: Arc<S>,
        capacity: usize,
        counters: Arc<Counters>,
        report: bool,
    ) -> Self {
        let batch = Queued::with_capacity(capacity, inner.__takes_records());
        Worker {
            inner,
            counters,
            report,
            batch,
            state: State::Running,
        }
    }

    /// Runs until a shutdown message is written and answered.
    pub(super) fn run(mut self, queue: &Queue) {
        crate::sink::in_sink::mark_sink_thread();
        loop {
            let (inner, counters) = (&self.inner, &self.counters);
            queue.take_all(&mut self.batch, &mut || Self::idle(inner, counters));
            self.write_batch(queue);
            if let State::Stopping(acks) = &mut self.state {
                let _ = Self::flush_inner(&self.inner, &self.counters);
                for ack in acks.drain(..) {
                    let _ = ack.send(());
                }
                return;
            }
        }
    }

    /// Follows the batch's run log to its end (which a shutdown extends by
    /// what was still queued), leaving the batch empty.
    fn write_batch(&mut self, queue: &Queue) {
        let mut log = std::mem::take(&mut self.batch.log);
        let mut i = 0;
        while i < log.len() {
            match std::mem::replace(&mut log[i], Run::Records(0)) {
                Run::Records(n) => self.write_records(n),
                Run::Events(n) => self.write_events(n),
                Run::Control(Control::Flush(ack)) => {
                    let flushed = Self::flush_inner(&self.inner, &self.counters);
                    let _ = ack.send(self.counters.flush_result(&*self.inner, flushed));
                }
                Run::Control(Control::Shutdown(ack)) => match &mut self.state {
                    State::Stopping(acks) => acks.push(ack),
                    State::Running => {
                        queue.close();
                        // Everything accepted before the close is written
                        // too: it goes behind what this batch holds.
                        let mut rest = Queued::default();
                        if !queue.is_empty() {
                            queue.take_all(&mut rest, &mut || {});
                        }
                        self.batch.records.append(&mut rest.records);
                        self.batch.events.append(&mut rest.events);
                        log.append(&mut rest.log);
                        self.state = State::Stopping(vec![ack]);
                    }
                },
            }
            i += 1;
        }
        debug_assert!(self.batch.records.is_empty() && self.batch.events.is_empty());
        log.clear();
        self.batch.log = log;
    }

    /// Writes the next `n` records: the whole vector, unmoved, when they
    /// are all it holds (the usual case).
    fn write_records(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let inner = &self.inner;
        if n >= self.batch.records.len() {
            let batch = &mut self.batch.records;
            let len = batch.len() as u64;
            let r = catch_unwind(AssertUnwindSafe(|| inner.__write_records(batch)));
            batch.clear();
            self.count(len, r);
        } else {
            let mut run: Vec<CallRecord> = self.batch.records.drain(..n).collect();
            let r = catch_unwind(AssertUnwindSafe(|| inner.__write_records(&mut run)));
            self.count(n as u64, r);
        }
    }

    /// Writes the next `n` events, as [`Worker::write_records`].
    fn write_events(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let inner = &self.inner;
        if n >= self.batch.events.len() {
            let batch = &mut self.batch.events;
            let len = batch.len() as u64;
            let r = catch_unwind(AssertUnwindSafe(|| inner.write_batch(batch)));
            batch.clear();
            self.count(len, r);
        } else {
            let mut run: Vec<AuditEvent> = self.batch.events.drain(..n).collect();
            let r = catch_unwind(AssertUnwindSafe(|| inner.write_batch(&mut run)));
            self.count(n as u64, r);
        }
    }

    /// Counts what the inner sink made of `n` items.
    fn count(&self, n: u64, r: std::thread::Result<Result<(), BatchError>>) {
        let counters = &self.counters;
        match r {
            Ok(Ok(())) => {
                counters.written.fetch_add(n, Ordering::AcqRel);
            }
            Ok(Err(e)) => {
                let failed = e.failed.min(n);
                counters.written.fetch_add(n - failed, Ordering::AcqRel);
                counters.failed.fetch_add(failed, Ordering::AcqRel);
                counters.note_cause(&e.error);
                if let Some(since) = self.report.then(|| counters.throttle.add(failed)).flatten() {
                    tracing::warn!(
                        target: INTERNAL_TARGET,
                        failed = since,
                        failed_total = counters.failed.load(Ordering::Acquire),
                        error_kind = e.error.kind(),
                        error = %e.error,
                        "audit sink worker failed to write events"
                    );
                }
            }
            Err(_) => {
                // Which items of the run made it is unknown: count them all.
                counters.failed.fetch_add(n, Ordering::AcqRel);
                counters.panics.fetch_add(1, Ordering::AcqRel);
                counters.note_cause(&"the sink panicked");
                if let Some(since) = self.report.then(|| counters.throttle.add(n)).flatten() {
                    tracing::error!(
                        target: INTERNAL_TARGET,
                        failed = since,
                        failed_total = counters.failed.load(Ordering::Acquire),
                        error_kind = "panic",
                        "audit sink panicked while writing events"
                    );
                }
            }
        }
    }

    /// The inner sink's flush, a panic counted and turned into an error.
    fn flush_inner(inner: &Arc<S>, counters: &Counters) -> Result<(), SinkError> {
        match catch_unwind(AssertUnwindSafe(|| inner.flush())) {
            Ok(r) => r,
            Err(_) => {
                counters.panics.fetch_add(1, Ordering::AcqRel);
                Err(SinkError::Other("sink panicked while flushing".into()))
            }
        }
    }

    /// Nothing queued: push buffered lines to the medium. An error is kept
    /// for the next flush to report.
    fn idle(inner: &Arc<S>, counters: &Counters) {
        if let Err(e) = Self::flush_inner(inner, counters) {
            let mut slot = counters
                .idle_flush_error
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e);
            }
        }
    }
}
