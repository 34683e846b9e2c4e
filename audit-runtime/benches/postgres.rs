//! Throughput of `NonBlocking<PostgresSink>`: events/s from producer threads
//! until every event is committed, with and without the hash chain.
//!
//! ```text
//! PHI_AUDIT_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p phi-audit-runtime --features postgres --bench postgres
//! ```
//! Optional: `PHI_AUDIT_BENCH_EVENTS` (default 200000), `PHI_AUDIT_BENCH_THREADS` (4).
//! Works in its own schema, dropped at the end.

use std::sync::Arc;
use std::time::Instant;

use phi_audit_runtime::{
    ActionType, Actor, Config, Dispatch, EventBuilder, MemorySink, NonBlocking, PostgresOptions,
    PostgresSink, Sink,
};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let Ok(url) = std::env::var("PHI_AUDIT_PG_URL") else {
        eprintln!("skipped: set PHI_AUDIT_PG_URL (e.g. postgres://postgres@127.0.0.1:5432/test)");
        return;
    };
    let total = env_num("PHI_AUDIT_BENCH_EVENTS", 200_000);
    let threads = env_num("PHI_AUDIT_BENCH_THREADS", 4).max(1);
    let d = Dispatch::new(
        Config::new("bench-svc").build().expect("config"),
        MemorySink::new(),
    );
    let events: Vec<_> = (0..total)
        .map(|n| {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{}", n % 1000))
                .actor(Actor::human(format!("dr-{}", n % 100)).org("org-1"))
                .patient_id(format!("p-{}", n % 1000))
                .phi_touched(true)
                .metadata("reason", "treatment")
                .build(&d)
        })
        .collect();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    println!("NonBlocking<PostgresSink>: {total} events from {threads} threads, until committed");
    for (label, integrity, batch) in [
        ("unchained, batch 1000", false, 1000),
        ("unchained, batch 100", false, 100),
        ("chained (sha256), batch 1000", true, 1000),
    ] {
        let schema = format!(
            "bench_{}_{}",
            std::process::id(),
            integrity as u8 + (batch / 100) as u8
        );
        let pg = PostgresSink::connect(
            &url,
            PostgresOptions::new()
                .schema(&schema)
                .integrity(integrity)
                .batch_size(batch),
        )
        .expect("sink");
        let pg = Arc::new(pg);
        let sink = Arc::new(NonBlocking::builder(pg.clone()).capacity(16_384).build());
        let per = events.len().div_ceil(threads as usize);
        let start = Instant::now();
        std::thread::scope(|s| {
            for chunk in events.chunks(per) {
                let sink = sink.clone();
                s.spawn(move || {
                    for e in chunk {
                        let _ = sink.write(e);
                    }
                });
            }
        });
        let _ = sink.flush();
        let secs = start.elapsed().as_secs_f64();
        let st = sink.stats();
        let ps = pg.stats();
        assert_eq!(st.written, total, "not every event was written: {st:?}");
        println!(
            "  {label:<30} {:>9.0} events/s  ({secs:.2} s, {} transactions, {:.0} events/transaction)",
            total as f64 / secs,
            ps.batches,
            total as f64 / ps.batches.max(1) as f64
        );
        drop(sink);
        let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}
