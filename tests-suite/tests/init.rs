//! The global dispatcher: installed once, its guard flushes on drop. (Own
//! test binary: the global dispatcher is per process.)

use std::sync::Arc;

use phi_audit::{init, ActionType, Config, EventBuilder, MemorySink, NonBlocking};

#[test]
fn init_installs_once_and_the_guard_flushes_on_drop() {
    let memory = MemorySink::new();
    let nb = Arc::new(NonBlocking::builder(memory.clone()).capacity(16).build());
    let guard = init(Config::new("svc").build().unwrap(), nb.clone()).unwrap();

    let again = init(Config::new("svc").build().unwrap(), MemorySink::new());
    let err = again.unwrap_err();
    assert!(err.to_string().contains("already"));

    // Events from other threads reach the global dispatcher too.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..500 {
                    EventBuilder::new(ActionType::Read, "Patient")
                        .metadata("t", t)
                        .metadata("i", i)
                        .emit();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(guard);
    assert_eq!(memory.len(), 2000);
    assert_eq!(nb.stats().pending(), 0);
    assert_eq!(phi_audit::current().unwrap().stats().emitted, 2000);
}
