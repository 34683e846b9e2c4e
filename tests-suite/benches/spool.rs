//! Caller-side cost of a durable `Spool` in front of `PostgresSink`, against
//! `NonBlocking` in front of it, in one run: nanoseconds per call as the
//! calling thread sees them (mean, p50, p99, max), and events/s until every
//! event is committed. One JSON line per variant.
//!
//! ```text
//! PHI_AUDIT_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p phi-audit-tests --features postgres --bench spool
//! ```
//! Optional: `PHI_AUDIT_BENCH_EVENTS` (default 20000; the variant that
//! syncs every write from one thread writes a tenth of them). Works in its
//! own schema and a temporary spool directory, both removed at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use phi_audit::{
    ActionType, Actor, AuditEvent, Config, Dispatch, EventBuilder, FsyncPolicy, MemorySink,
    NonBlocking, PostgresOptions, PostgresSink, Sink, Spool, SpoolOptions,
};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Variant {
    name: &'static str,
    threads: usize,
    events: usize,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let Ok(url) = std::env::var("PHI_AUDIT_PG_URL") else {
        eprintln!("skipped: set PHI_AUDIT_PG_URL (e.g. postgres://postgres@127.0.0.1:5432/test)");
        return;
    };
    let total = env_num("PHI_AUDIT_BENCH_EVENTS", 20_000) as usize;
    let d = Dispatch::new(
        Config::new("bench-svc").build().expect("config"),
        MemorySink::new(),
    );
    let make = |n: usize| -> AuditEvent {
        EventBuilder::access(ActionType::Read, "Patient", format!("p-{}", n % 1000))
            .actor(Actor::human(format!("dr-{}", n % 100)).org("org-1"))
            .patient_id(format!("p-{}", n % 1000))
            .phi_touched(true)
            .metadata("reason", "treatment")
            .build(&d)
    };
    let schema = format!("bench_spool_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let variants = [
        Variant {
            name: "NonBlocking<PostgresSink>",
            threads: 1,
            events: total,
        },
        Variant {
            name: "NonBlocking<Spool<PostgresSink>> (spool=DIR)",
            threads: 1,
            events: total,
        },
        Variant {
            name: "Spool<PostgresSink>, fsync every write",
            threads: 1,
            events: (total / 10).max(1),
        },
        Variant {
            name: "Spool<PostgresSink>, fsync every write",
            threads: 4,
            events: total,
        },
        Variant {
            name: "Spool<PostgresSink>, fsync never",
            threads: 1,
            events: total,
        },
    ];
    for (k, v) in variants.iter().enumerate() {
        let events: Vec<AuditEvent> = (0..v.events).map(make).collect();
        let pg = Arc::new(
            PostgresSink::connect(&url, PostgresOptions::new().schema(&schema)).expect("sink"),
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let spool_opts = |fsync| SpoolOptions {
            fsync,
            ..SpoolOptions::default()
        };
        let mut spool: Option<Arc<Spool>> = None;
        let sink: Arc<dyn Sink> = match k {
            0 => Arc::new(NonBlocking::new(pg.clone())),
            1 => {
                let s = Arc::new(
                    Spool::open_with(dir.path(), pg.clone(), spool_opts(FsyncPolicy::EveryEvent))
                        .expect("spool"),
                );
                spool = Some(s.clone());
                Arc::new(NonBlocking::new(s))
            }
            2 | 3 => {
                let s = Arc::new(
                    Spool::open_with(dir.path(), pg.clone(), spool_opts(FsyncPolicy::EveryEvent))
                        .expect("spool"),
                );
                spool = Some(s.clone());
                s
            }
            _ => {
                let s = Arc::new(
                    Spool::open_with(dir.path(), pg.clone(), spool_opts(FsyncPolicy::Never))
                        .expect("spool"),
                );
                spool = Some(s.clone());
                s
            }
        };
        let before = pg.stats().inserted;
        let per = events.len().div_ceil(v.threads);
        let start = Instant::now();
        let mut waits: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = events
                .chunks(per)
                .map(|chunk| {
                    let sink = sink.clone();
                    s.spawn(move || {
                        let mut w = Vec::with_capacity(chunk.len());
                        for e in chunk {
                            let t0 = Instant::now();
                            let _ = sink.write(e);
                            w.push(t0.elapsed().as_nanos() as u64);
                        }
                        w
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("writer"))
                .collect()
        });
        let callers_done = start.elapsed();
        sink.flush().expect("flush");
        if let Some(s) = &spool {
            s.drain(Duration::from_secs(600)).expect("drain");
        }
        let committed = start.elapsed();
        let delivered = pg.stats().inserted - before;
        waits.sort_unstable();
        let mean = waits.iter().sum::<u64>() / waits.len().max(1) as u64;
        println!(
            "{{\"bench\":\"spool\",\"variant\":\"{}\",\"threads\":{},\"events\":{},\"caller_ns_per_call\":{},\"p50_ns\":{},\"p99_ns\":{},\"max_ns\":{},\"callers_s\":{:.3},\"committed_events_per_s\":{:.0},\"delivered\":{}}}",
            v.name,
            v.threads,
            v.events,
            mean,
            percentile(&waits, 0.5),
            percentile(&waits, 0.99),
            waits.last().copied().unwrap_or(0),
            callers_done.as_secs_f64(),
            v.events as f64 / committed.as_secs_f64(),
            delivered,
        );
        drop(sink);
        drop(spool);
    }
    let _ = admin.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
}
