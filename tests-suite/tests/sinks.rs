//! Sinks through the public API: fan-out with a failing sink, non-blocking
//! policies and flush, memory bound, tracing, stdout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phi_audit::{
    with_dispatch, ActionType, AuditEvent, Config, Dispatch, EventBuilder, FanOut, FullPolicy,
    MemorySink, NonBlocking, Sink, SinkError, TracingSink,
};

/// Fails every 7th write.
#[derive(Default, Clone)]
struct Flaky(Arc<AtomicU64>);

impl Sink for Flaky {
    fn write(&self, _event: &AuditEvent) -> Result<(), SinkError> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 7 == 0 {
            Err(SinkError::Io(std::io::Error::other("disk on fire")))
        } else {
            Ok(())
        }
    }
}

#[test]
fn fan_out_keeps_writing_when_one_sink_fails_every_7th_write() {
    let memory = MemorySink::new();
    let fan = Arc::new(FanOut::new().with(Flaky::default()).with(memory.clone()));
    let d = Dispatch::new(Config::new("svc").build().unwrap(), fan.clone());
    with_dispatch(&d, || {
        for i in 0..700 {
            EventBuilder::new(ActionType::Read, "Patient")
                .metadata("i", i)
                .emit();
        }
    });
    assert_eq!(memory.len(), 700);
    assert_eq!(fan.failures(), vec![100, 0]);
    let s = d.stats();
    assert_eq!(s.failed, 100);
    assert_eq!(s.emitted, 600);
}

/// Panics on every write.
struct Panicky;
impl Sink for Panicky {
    fn write(&self, _event: &AuditEvent) -> Result<(), SinkError> {
        panic!("sink bug");
    }
}

#[test]
fn a_panicking_sink_never_reaches_the_caller() {
    let memory = MemorySink::new();
    let fan = FanOut::new().with(Panicky).with(memory.clone());
    let d = Dispatch::new(Config::new("svc").build().unwrap(), fan);
    with_dispatch(&d, || EventBuilder::new(ActionType::Read, "Patient").emit());
    assert_eq!(memory.len(), 1);
    assert_eq!(d.stats().failed, 1);

    let nb = Arc::new(NonBlocking::new(Panicky));
    let d = Dispatch::new(Config::new("svc").build().unwrap(), nb.clone());
    with_dispatch(&d, || {
        for _ in 0..10 {
            EventBuilder::new(ActionType::Read, "Patient").emit()
        }
    });
    // The flush says what was lost; the dispatcher's stats include it.
    assert!(matches!(d.flush(), Err(SinkError::Lost { events: 10, .. })));
    assert_eq!(d.stats().failed, 10);
    let s = nb.stats();
    assert_eq!((s.enqueued, s.written, s.failed), (10, 0, 10));
    // A panic fails the whole batch the worker handed over: at least one.
    assert!((1..=10).contains(&s.panics), "{s:?}");
}

/// Blocks every write until released, to fill the queue deterministically.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>, MemorySink);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

impl Sink for Gate {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        let mut open = self.0 .0.lock().unwrap();
        while !*open {
            open = self.0 .1.wait(open).unwrap();
        }
        self.1.write(event)
    }
}

#[test]
fn drop_policy_counts_what_it_drops_and_block_policy_loses_nothing() {
    let gate = Gate::default();
    let nb = Arc::new(
        NonBlocking::builder(gate.clone())
            .capacity(4)
            .full_policy(FullPolicy::Drop)
            .build(),
    );
    let d = Dispatch::new(Config::new("svc").build().unwrap(), nb.clone());
    with_dispatch(&d, || {
        for _ in 0..50 {
            EventBuilder::new(ActionType::Read, "Patient").emit()
        }
    });
    gate.open();
    let flushed = d.flush();
    let s = nb.stats();
    // Drops are losses: the flush reports them.
    assert!(
        matches!(flushed, Err(SinkError::Lost { events, .. }) if events == s.dropped),
        "{flushed:?} {s:?}"
    );
    assert_eq!(s.enqueued + s.dropped, 50);
    assert!(s.dropped >= 40, "{s:?}");
    assert_eq!(gate.1.len() as u64, s.written);
    assert_eq!(d.stats().failed, s.dropped);

    let gate = Gate::default();
    let nb = Arc::new(NonBlocking::builder(gate.clone()).capacity(2).build());
    let d = Dispatch::new(Config::new("svc").build().unwrap(), nb.clone());
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            gate.open();
        })
    };
    with_dispatch(&d, || {
        for _ in 0..100 {
            EventBuilder::new(ActionType::Read, "Patient").emit()
        }
    });
    d.flush().unwrap();
    opener.join().unwrap();
    assert_eq!(gate.1.len(), 100);
    assert_eq!(nb.stats().dropped, 0);
}

#[test]
fn shutdown_reports_what_was_not_written() {
    let gate = Gate::default();
    let nb = NonBlocking::builder(gate.clone()).capacity(16).build();
    for _ in 0..5 {
        nb.write(&sample()).unwrap();
    }
    let report = nb.shutdown(Duration::from_millis(50));
    assert!(!report.completed);
    assert_eq!(report.lost(), 5);
    gate.open();
    let report = nb.shutdown(Duration::from_secs(5));
    assert!(report.completed, "{report:?}");
    assert_eq!(report.stats.written, 5);
    assert!(matches!(nb.write(&sample()), Err(SinkError::Closed)));
}

fn sample() -> AuditEvent {
    let d = Dispatch::new(Config::new("svc").build().unwrap(), MemorySink::new());
    EventBuilder::new(ActionType::Read, "Patient").build(&d)
}

#[test]
fn memory_sink_bound_keeps_newest() {
    let m = MemorySink::bounded(3);
    for i in 0..5u32 {
        let mut e = sample();
        e.metadata.insert("i", i);
        m.write(&e).unwrap();
    }
    assert_eq!(m.len(), 3);
    assert_eq!(m.evicted(), 2);
    assert_eq!(
        m.events()[0].metadata.get("i"),
        Some(&phi_audit::MetaValue::Int(2))
    );
}

mod capture {
    //! A minimal `tracing` subscriber that keeps (target, field) pairs.
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Clone, Default)]
    pub struct Capture(pub Arc<Mutex<Vec<(String, String, String)>>>);

    struct V<'a>(&'a mut Vec<(String, String)>);
    impl Visit for V<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0
                .push((field.name().to_string(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_string(), value.to_string()));
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Vec::new();
            event.record(&mut V(&mut fields));
            let mut out = self.0.lock().unwrap();
            for (k, v) in fields {
                out.push((event.metadata().target().to_string(), k, v));
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[test]
fn tracing_sink_emits_the_json_line_at_its_target() {
    let cap = capture::Capture::default();
    let d = Dispatch::new(Config::new("svc").build().unwrap(), TracingSink::new());
    tracing::subscriber::with_default(cap.clone(), || {
        with_dispatch(&d, || {
            EventBuilder::access(ActionType::Read, "Patient", "p-9").emit()
        })
    });
    let got = cap.0.lock().unwrap();
    let (target, _, json) = got
        .iter()
        .find(|(_, k, _)| k == "audit_event")
        .expect("an audit_event field");
    assert_eq!(target, phi_audit::TRACING_TARGET);
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["resource"]["id"], "p-9");
}

#[test]
fn stdout_sink_writes_one_json_line_per_event() {
    if std::env::var_os("PHI_AUDIT_STDOUT_CHILD").is_some() {
        let d = Dispatch::new(
            Config::new("svc").build().unwrap(),
            phi_audit::StdoutSink::new(),
        );
        with_dispatch(&d, || {
            for i in 0..3 {
                EventBuilder::new(ActionType::Read, "Patient")
                    .metadata("i", i)
                    .emit();
            }
        });
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stdout_sink_writes_one_json_line_per_event",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PHI_AUDIT_STDOUT_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.find('{').map(|i| &l[i..]))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[2]["metadata"]["i"], 2);
}
