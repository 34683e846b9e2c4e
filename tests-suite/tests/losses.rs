//! Losses are never silent: `flush()` returns the count of events that
//! failed since the previous flush (through a queue too), `Dispatch::stats()`
//! includes what its sink lost after accepting it, and the default policy
//! reports failures through `tracing` with counts and error kinds, never
//! event content.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use phi_audit::{
    with_dispatch, ActionType, AuditEvent, Config, Dispatch, EventBuilder, MetaValue, NonBlocking,
    Sink, SinkError, SinkFailurePolicy, INTERNAL_TARGET,
};

const PHI: &str = "PATIENT_JANE_DOE_123-45-6789";

/// Refuses every event whose metadata `n` is a multiple of 3.
#[derive(Default)]
struct EveryThird(AtomicU64);

impl Sink for EveryThird {
    fn write(&self, e: &AuditEvent) -> Result<(), SinkError> {
        let n = match e.metadata.get("n") {
            Some(MetaValue::Int(n)) => *n as u64,
            Some(MetaValue::UInt(n)) => *n,
            _ => 0,
        };
        if n % 3 == 0 {
            return Err(SinkError::Other("disk on fire".into()));
        }
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn emit(d: &Dispatch, range: std::ops::Range<u64>) {
    with_dispatch(d, || {
        for n in range {
            EventBuilder::new(ActionType::Read, "Patient")
                .resource_id(PHI)
                .metadata("n", n)
                .emit();
        }
    });
}

fn lost(r: Result<(), SinkError>) -> u64 {
    match r {
        Err(SinkError::Lost { events, cause }) => {
            assert!(!cause.contains(PHI), "{cause}");
            events
        }
        other => panic!("expected a loss, got {other:?}"),
    }
}

#[test]
fn flush_reports_what_a_queued_sink_lost_and_stats_include_it() {
    let inner = Arc::new(EveryThird::default());
    let queue = NonBlocking::builder(inner.clone())
        .report_errors(false)
        .build();
    let d = Dispatch::new(
        Config::new("svc")
            .sink_failure(SinkFailurePolicy::Ignore)
            .build()
            .unwrap(),
        queue,
    );
    emit(&d, 0..30);
    // The callers were told nothing (the queue took every event) ...
    assert_eq!(lost(d.flush()), 10);
    // ... but the flush was, once, and the stats say so.
    assert!(d.flush().is_ok());
    let s = d.stats();
    assert_eq!((s.emitted, s.failed, s.sink_lost), (30, 10, 10));
    assert_eq!(inner.0.load(Ordering::Relaxed), 20);
    emit(&d, 30..33);
    assert_eq!(lost(d.flush()), 1);
    assert_eq!(d.stats().failed, 11);
}

#[test]
fn flush_reports_failed_writes_of_any_sink() {
    // A sink of the user's, written directly: its failed writes are
    // counted by the dispatcher, and its flush (which says Ok) does not
    // hide them.
    let d = Dispatch::new(
        Config::new("svc")
            .sink_failure(SinkFailurePolicy::Ignore)
            .build()
            .unwrap(),
        EveryThird::default(),
    );
    emit(&d, 0..9);
    let s = d.stats();
    assert_eq!((s.emitted, s.failed, s.sink_lost), (6, 3, 0));
    assert_eq!(lost(d.flush()), 3);
    assert!(d.flush().is_ok());
}

/// Captures what is logged at the crate's internal target.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[test]
fn failures_are_reported_by_default_with_counts_and_kinds_never_content() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    // Global: the queue's worker logs from a thread of its own. (The other
    // tests of this file log nothing: they use the Ignore policy and turn
    // the queue's reports off.)
    tracing::subscriber::set_global_default(subscriber).unwrap();
    {
        // The default config: no sink_failure(..) call.
        let d = Dispatch::new(Config::new("svc").build().unwrap(), EveryThird::default());
        emit(&d, 0..30);
        let _ = d.flush();
        // Through a queue: the worker reports (on by default).
        let q = NonBlocking::new(EveryThird::default());
        let d = Dispatch::new(Config::new("svc").build().unwrap(), q);
        emit(&d, 0..30);
        let _ = d.flush();
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains(INTERNAL_TARGET), "{text}");
    assert!(text.contains("audit sink failed to write events"), "{text}");
    assert!(
        text.contains("audit sink worker failed to write events"),
        "{text}"
    );
    assert!(text.contains("failed=1"), "{text}");
    assert!(text.contains("error_kind=\"other\""), "{text}");
    assert!(text.contains("disk on fire"), "{text}");
    assert!(!text.contains(PHI), "{text}");
    // Throttled: not one line per failed event.
    assert!(text.lines().count() < 10, "{text}");
}
