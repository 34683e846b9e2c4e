//! 4 threads × 250,000 events through the non-blocking wrapper into a JSONL
//! file: after the guard drops the file has exactly 1,000,000 lines, every
//! line a valid event, every event_id distinct.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use phi_audit::{
    with_dispatch, ActionType, Actor, AuditContext, Config, Dispatch, EventBuilder, JsonlFileSink,
    NonBlocking, Outcome,
};

#[test]
fn four_threads_write_a_million_lines_without_loss() {
    let dir = std::env::temp_dir().join(format!("phi-audit-million-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&path);

    let nb = Arc::new(NonBlocking::new(JsonlFileSink::open(&path).unwrap()));
    let d = Dispatch::new(Config::new("million").build().unwrap(), nb.clone());
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let d = &d;
            s.spawn(move || {
                let ctx = AuditContext::new()
                    .actor(Actor::human(format!("user-{t}")))
                    .request_id(format!("req-{t}"));
                with_dispatch(d, || {
                    ctx.in_scope(|| {
                        for i in 0..250_000u32 {
                            let b =
                                EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}"))
                                    .metadata("t", t)
                                    .metadata("i", i);
                            if i % 10 == 0 {
                                b.outcome(Outcome::failure("Timeout", "upstream timed out"))
                                    .emit();
                            } else {
                                b.emit();
                            }
                        }
                    })
                });
            });
        }
    });
    d.flush().unwrap();
    drop(d);
    let stats = nb.stats();
    assert_eq!(
        (stats.written, stats.failed, stats.dropped),
        (1_000_000, 0, 0)
    );

    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(&path).unwrap());
    let mut ids = HashSet::with_capacity(1_000_000);
    let mut lines = 0u64;
    for line in reader.lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        phi_audit::schema::validate_value(&v, None).unwrap();
        assert!(ids.insert(v["event_id"].as_str().unwrap().to_owned()));
        lines += 1;
    }
    assert_eq!(lines, 1_000_000);
    std::fs::remove_dir_all(&dir).unwrap();
}
