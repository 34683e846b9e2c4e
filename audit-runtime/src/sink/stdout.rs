use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;

use super::loss::{flush_result, LossTracker};
use super::{Sink, SinkError};
use crate::model::event::AuditEvent;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes one compact JSON line per event to standard output.
///
/// Each line is written with a single locked write, so lines from several
/// threads never interleave. A failed write is returned, and counted for
/// the next [`Sink::flush`] (which then returns [`SinkError::Lost`]);
/// clones share that count.
#[derive(Debug, Default, Clone)]
pub struct StdoutSink(Arc<LossTracker>);

impl StdoutSink {
    /// A stdout sink.
    pub fn new() -> StdoutSink {
        StdoutSink::default()
    }
}

impl Sink for StdoutSink {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        BUF.with(|b| {
            let mut buf = b.borrow_mut();
            buf.clear();
            event.write_json(&mut buf);
            buf.push(b'\n');
            let mut out = std::io::stdout().lock();
            out.write_all(&buf).map_err(|e| {
                self.0.record(1, &e);
                SinkError::Io(e)
            })
        })
    }

    fn flush(&self) -> Result<(), SinkError> {
        let r = std::io::stdout().lock().flush().map_err(SinkError::Io);
        flush_result(r, self.0.take())
    }
}
