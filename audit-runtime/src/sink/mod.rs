//! Where events go: the [`Sink`] trait and the sinks that ship with the crate.

use std::fmt;
use std::sync::Arc;

use crate::model::event::AuditEvent;
use crate::record::{CallRecord, RecordRef};

mod fanout;
mod file;
pub(crate) mod in_sink;
mod ledger;
mod lock;
pub(crate) mod loss;
mod memory;
#[cfg(feature = "nats")]
mod nats;
mod nonblocking;
#[cfg(feature = "postgres")]
mod postgres;
mod spool;
mod stdout;
mod tracing_sink;

pub use fanout::FanOut;
pub use file::{FsyncPolicy, JsonlFileSink, JsonlOptions, DEFAULT_PREALLOCATE};
pub use ledger::{DamagedTail, LedgerError, LedgerOptions, LedgerSink, Recovery, TornTail};
pub use lock::FileLocked;
pub use memory::MemorySink;
#[cfg(feature = "nats")]
pub(crate) use nats::valid_prefix as nats_valid_prefix;
#[cfg(feature = "nats")]
pub use nats::{
    subject_token, CloudEvents, NatsError, NatsOptions, NatsSink, NatsStats, NatsStream,
};
pub use nonblocking::{
    FullPolicy, NonBlocking, NonBlockingBuilder, NonBlockingStats, ShutdownReport,
};
#[cfg(feature = "postgres")]
pub(crate) use postgres::quoted_schema;
#[cfg(feature = "postgres")]
pub use postgres::{
    ChainReadback, ChainVerifyError, PostgresError, PostgresOptions, PostgresSink, PostgresStats,
    PostgresStore, PostgresTls, PurgeReport,
};
pub use spool::{Spool, SpoolFull, SpoolOptions, SpoolStats};
pub use stdout::StdoutSink;
pub use tracing_sink::{TracingSink, TRACING_TARGET};

/// Why a sink could not take an event. Never contains event content.
#[derive(Debug)]
pub enum SinkError {
    /// An I/O error from the underlying file, socket or stream.
    Io(std::io::Error),
    /// The sink is closed or shut down.
    Closed,
    /// The queue was full and the policy is to drop.
    QueueFull,
    /// Anything else, described without event content.
    Other(String),
    /// The sink will never take these events, however often they are
    /// offered (an `event_id` already stored with other content): a
    /// [`Spool`] counts them as lost instead of retrying. Described without
    /// event content.
    Rejected(String),
    /// Returned by [`Sink::flush`]: events handed to the sink since the
    /// previous flush did not reach its medium (refused with an error, or
    /// acknowledged and lost later). The flush itself may have succeeded.
    Lost {
        /// How many events.
        events: u64,
        /// The first error among them, described without event content.
        cause: String,
    },
}

impl SinkError {
    /// A short, stable name of the error's kind for logs and metrics:
    /// `io`, `closed`, `queue_full`, `lost`, `rejected` or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Io(_) => "io",
            SinkError::Closed => "closed",
            SinkError::QueueFull => "queue_full",
            SinkError::Other(_) => "other",
            SinkError::Rejected(_) => "rejected",
            SinkError::Lost { .. } => "lost",
        }
    }

    /// Events this error says were lost: `events` of [`SinkError::Lost`],
    /// else 1 (one refused event).
    pub fn events(&self) -> u64 {
        match self {
            SinkError::Lost { events, .. } => *events,
            _ => 1,
        }
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Io(e) => write!(f, "sink I/O error: {e}"),
            SinkError::Closed => f.write_str("sink is closed"),
            SinkError::QueueFull => f.write_str("sink queue is full; event dropped"),
            SinkError::Other(m) => write!(f, "sink error: {m}"),
            SinkError::Rejected(m) => write!(f, "sink refused the event(s) for good: {m}"),
            SinkError::Lost { events, cause } => write!(
                f,
                "{events} audit event(s) were not written since the last flush (first error: {cause})"
            ),
        }
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SinkError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for SinkError {
    fn from(e: std::io::Error) -> Self {
        SinkError::Io(e)
    }
}

/// What went wrong in [`Sink::write_batch`].
#[derive(Debug)]
pub struct BatchError {
    /// How many events of the batch were not written.
    pub failed: u64,
    /// The first error.
    pub error: SinkError,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events of the batch were not written: {}",
            self.failed, self.error
        )
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl BatchError {
    /// Fails every item of `events` (clearing it) with `error`.
    pub(crate) fn all<T>(events: &mut Vec<T>, error: SinkError) -> BatchError {
        let failed = events.len() as u64;
        events.clear();
        BatchError { failed, error }
    }
}

/// A destination for audit events.
///
/// Implement [`Sink::write`]; override [`Sink::write_owned`] when the sink can
/// take ownership cheaply (a queue), and [`Sink::flush`] when it buffers.
/// Sinks are shared between threads; a sink must never panic on bad data and
/// must never put event content into its errors.
///
/// ```
/// use audit_runtime::{AuditEvent, Sink, SinkError};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// #[derive(Default)]
/// struct Counting(AtomicUsize);
///
/// impl Sink for Counting {
///     fn write(&self, _event: &AuditEvent) -> Result<(), SinkError> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
pub trait Sink: Send + Sync + 'static {
    /// Writes one event.
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError>;

    /// Writes one event the caller no longer needs. Defaults to [`Sink::write`].
    fn write_owned(&self, event: AuditEvent) -> Result<(), SinkError> {
        self.write(&event)
    }

    /// Writes `events` in order, draining the vector (its capacity is reused
    /// by the caller). Sinks that can group work override it: the file and
    /// ledger sinks write a batch with one system call and, under
    /// [`FsyncPolicy::EveryEvent`], one sync (group commit). The non-blocking
    /// worker hands over everything queued at once through this method.
    ///
    /// The default writes the events one by one with [`Sink::write_owned`].
    fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
        let mut failed = 0;
        let mut first = None;
        for event in events.drain(..) {
            if let Err(e) = self.write_owned(event) {
                failed += 1;
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(()),
            Some(error) => Err(BatchError { failed, error }),
        }
    }

    /// Makes everything written so far durable in the sink's medium (as far
    /// as its fsync policy says) and, for queued sinks, written at all.
    ///
    /// Never `Ok` after a loss: the crate's sinks return
    /// [`SinkError::Lost`] with the count when events handed to them since
    /// the previous flush failed (including failures already returned by
    /// `write`), and start counting afresh.
    fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Events this sink acknowledged (a write returned `Ok`) and could not
    /// deliver afterwards, since it was created: a buffered batch whose
    /// write failed, a queued event its worker could not write. Wrappers
    /// add their inner sink's. [`crate::Dispatch::stats`] adds them to its
    /// `failed` count (as `sink_lost`).
    ///
    /// The default, 0, is right for a sink that writes before it returns.
    fn lost_events(&self) -> u64 {
        0
    }

    /// Whether [`Sink::__write_record`] is worth calling: the crate's queue
    /// and JSON-lines sinks say yes. Not part of the public API.
    #[doc(hidden)]
    fn __takes_records(&self) -> bool {
        false
    }

    /// Writes a finished audited call (by default as its event). Not part of
    /// the public API.
    #[doc(hidden)]
    fn __write_record(&self, record: RecordRef<'_>) -> Result<(), SinkError> {
        self.write_owned(record.into_record().into_event())
    }

    /// Writes finished audited calls in order, draining the vector (by
    /// default as events, through [`Sink::write_batch`]). Not part of the
    /// public API.
    #[doc(hidden)]
    fn __write_records(&self, records: &mut Vec<CallRecord>) -> Result<(), BatchError> {
        let mut events: Vec<AuditEvent> = records.drain(..).map(CallRecord::into_event).collect();
        self.write_batch(&mut events)
    }
}

/// Smart pointers to a sink are sinks: every method forwards, the hidden
/// ones too (a missed one would quietly turn the record path off).
macro_rules! forward_sink {
    ($($ptr:ident),*) => {$(
        impl<S: Sink + ?Sized> Sink for $ptr<S> {
            fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
                (**self).write(event)
            }
            fn write_owned(&self, event: AuditEvent) -> Result<(), SinkError> {
                (**self).write_owned(event)
            }
            fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
                (**self).write_batch(events)
            }
            fn flush(&self) -> Result<(), SinkError> {
                (**self).flush()
            }
            fn lost_events(&self) -> u64 {
                (**self).lost_events()
            }
            fn __takes_records(&self) -> bool {
                (**self).__takes_records()
            }
            fn __write_record(&self, record: RecordRef<'_>) -> Result<(), SinkError> {
                (**self).__write_record(record)
            }
            fn __write_records(&self, records: &mut Vec<CallRecord>) -> Result<(), BatchError> {
                (**self).__write_records(records)
            }
        }
    )*};
}

forward_sink!(Arc, Box);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_forward_the_record_path() {
        let dir = std::env::temp_dir().join(format!("phi-audit-fwd-{}", std::process::id()));
        let jsonl = || JsonlFileSink::open(dir.join("a.jsonl")).unwrap();
        assert!(jsonl().__takes_records());
        assert!(Arc::new(jsonl()).__takes_records());
        assert!(Box::new(jsonl()).__takes_records());
        let boxed: Box<dyn Sink> = Box::new(Arc::new(jsonl()));
        assert!(Box::new(boxed).__takes_records());
        assert!(!Arc::new(MemorySink::new()).__takes_records());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
