//! The in-sink flag: whether this thread is running sink code, so that a
//! panic there does not flush (which could re-enter a lock the sink holds).

use std::cell::Cell;

thread_local! {
    /// True while this thread runs sink code (or is a sink worker): a panic
    /// there must not flush, which could re-enter a lock the sink holds.
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as running sink code for the rest of its life
/// (sink worker threads).
pub(crate) fn mark_sink_thread() {
    let _ = IN_SINK.try_with(|c| c.set(true));
}

pub(crate) fn in_sink<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = IN_SINK.try_with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(IN_SINK.try_with(|c| c.replace(true)).unwrap_or(false));
    f()
}

/// True when this thread runs sink code (and when that cannot be told, as
/// while the thread's locals are being destroyed).
pub(crate) fn running_sink_code() -> bool {
    IN_SINK.try_with(Cell::get).unwrap_or(true)
}
