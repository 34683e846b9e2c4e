//! `flush_on_panic`: a panic flushes the global dispatcher before the
//! previous hook runs. (Own test binary: the global dispatcher is per process.)

use std::time::Duration;

use phi_audit::{
    init, ActionType, AuditEvent, Config, EventBuilder, MemorySink, NonBlocking, Sink, SinkError,
};

/// Takes a millisecond per event, so a backlog builds up.
struct Slow(MemorySink);

impl Sink for Slow {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        std::thread::sleep(Duration::from_millis(1));
        self.0.write(event)
    }
}

#[test]
fn a_panic_flushes_everything_queued_before_it() {
    let memory = MemorySink::new();
    let _guard = init(
        Config::new("svc").build().unwrap(),
        NonBlocking::builder(Slow(memory.clone()))
            .capacity(1024)
            .build(),
    )
    .unwrap();
    phi_audit::flush_on_panic();
    let r = std::thread::spawn(|| {
        for _ in 0..100 {
            EventBuilder::new(ActionType::Read, "Patient").emit();
        }
        panic!("request handler bug");
    })
    .join();
    assert!(r.is_err());
    // The hook ran on the panicking thread before it finished: the backlog
    // of ~100 ms is already written, without dropping the guard.
    assert_eq!(memory.len(), 100);
}
