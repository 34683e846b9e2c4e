use std::cell::RefCell;
use std::io::Write;

use super::{Sink, SinkError};
use crate::event::AuditEvent;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes one compact JSON line per event to standard output.
///
/// Each line is written with a single locked write, so lines from several
/// threads never interleave.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdoutSink(());

impl StdoutSink {
    /// A stdout sink.
    pub fn new() -> StdoutSink {
        StdoutSink(())
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
            out.write_all(&buf)?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), SinkError> {
        std::io::stdout().lock().flush()?;
        Ok(())
    }
}
