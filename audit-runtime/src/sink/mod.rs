//! Where events go: the [`Sink`] trait and the sinks that ship with the crate.

use std::fmt;
use std::sync::Arc;

use crate::event::AuditEvent;

mod fanout;
// mod file;
mod memory;
mod nonblocking;
#[cfg(feature = "postgres")]
mod postgres;
mod stdout;
mod tracing_sink;

pub use fanout::FanOut;
// pub use file::{FsyncPolicy, JsonlFileSink, JsonlOptions};
pub use memory::MemorySink;
pub use nonblocking::{FullPolicy, NonBlocking, NonBlockingBuilder, NonBlockingStats, ShutdownReport};
#[cfg(feature = "postgres")]
pub use postgres::{
    ChainReadback, ChainVerifyError, PostgresError, PostgresOptions, PostgresSink, PostgresStats,
    PostgresStore, PurgeReport,
};
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
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Io(e) => write!(f, "sink I/O error: {e}"),
            SinkError::Closed => f.write_str("sink is closed"),
            SinkError::QueueFull => f.write_str("sink queue is full; event dropped"),
            SinkError::Other(m) => write!(f, "sink error: {m}"),
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

    /// Makes everything written so far durable in the sink's medium (as far
    /// as its fsync policy says) and, for queued sinks, written at all.
    fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// The most events this sink wants in one [`Sink::write_batch`] call.
    /// The default, 1, makes [`NonBlocking`] write event by event; a sink
    /// with a per-batch cost (a database transaction) returns more, and the
    /// worker then hands it whatever is already queued, up to this many.
    fn max_batch(&self) -> usize {
        1
    }

    /// Writes `events` in order, all or nothing: `Ok` means every event was
    /// written, `Err` that none is to be counted as written. The default
    /// writes them one by one with [`Sink::write_owned`] (stopping at the
    /// first error), which is all-or-nothing only for one event; sinks that
    /// return more than 1 from [`Sink::max_batch`] override it.
    fn write_batch(&self, events: Vec<AuditEvent>) -> Result<(), SinkError> {
        for e in events {
            self.write_owned(e)?;
        }
        Ok(())
    }
}

impl<S: Sink + ?Sized> Sink for Arc<S> {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        (**self).write(event)
    }
    fn write_owned(&self, event: AuditEvent) -> Result<(), SinkError> {
        (**self).write_owned(event)
    }
    fn flush(&self) -> Result<(), SinkError> {
        (**self).flush()
    }
    fn max_batch(&self) -> usize {
        (**self).max_batch()
    }
    fn write_batch(&self, events: Vec<AuditEvent>) -> Result<(), SinkError> {
        (**self).write_batch(events)
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        (**self).write(event)
    }
    fn write_owned(&self, event: AuditEvent) -> Result<(), SinkError> {
        (**self).write_owned(event)
    }
    fn flush(&self) -> Result<(), SinkError> {
        (**self).flush()
    }
    fn max_batch(&self) -> usize {
        (**self).max_batch()
    }
    fn write_batch(&self, events: Vec<AuditEvent>) -> Result<(), SinkError> {
        (**self).write_batch(events)
    }
}
