//! [`flush_on_panic`]: the panic hook that finishes the running audited
//! calls (under `panic = "abort"`) and flushes the global dispatcher. It
//! lives with the guard, whose running calls it finishes, so the dispatcher
//! does not import the guard.

/// Installs a panic hook that flushes the global dispatcher before running
/// the previous hook, so events queued before a panic reach the sink even
/// when the process aborts on panic (`panic = "abort"`) or the panic ends
/// `main` before the guard drops.
///
/// Built with `panic = "abort"`, nothing unwinds, so no audited call's guard
/// gets to record the panic: the hook first finishes every audited call
/// running on the panicking thread with FAILURE `Panic` (the event an
/// unwinding panic records), writes them through their dispatchers, and
/// flushes. With unwinding the guards do it as the panic passes them (a
/// panic the body catches itself then ends no call).
///
/// A panic inside sink code (on a caller's thread or a sink worker) does not
/// flush: that could re-enter a lock the panicking sink holds.
pub fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_sink = crate::sink::in_sink::running_sink_code();
        if !in_sink {
            if cfg!(panic = "abort") {
                crate::call::finish_running_calls_on_abort();
            }
            if let Some(d) = crate::dispatch::global() {
                let _ = d.flush();
            }
        }
        previous(info);
    }));
}
