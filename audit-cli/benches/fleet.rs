//! Fleet delivery, end to end: 4 producing services (each `#[audited]`-style
//! events through `Spool` + `NatsSink`) → one JetStream server →
//! `phi-audit collect` → PostgreSQL, against the alternative in the same
//! run: the same 4 services writing straight into PostgreSQL through
//! `NonBlocking` + `PostgresSink`.
//!
//! ```text
//! PHI_AUDIT_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p phi-audit-cli --bench fleet
//! ```
//!
//! One JSON line per variant: events, caller ns per call (mean over the
//! producing threads' emit loops), seconds until every event is in the
//! table, and events/s end to end. `PHI_AUDIT_BENCH_EVENTS` sets the events
//! per service (default 20000). Skips with the reason when nats-server
//! (PHI_AUDIT_NATS_SERVER or /usr/sbin/nats-server) or PHI_AUDIT_PG_URL is
//! missing.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use phi_audit_runtime::{
    with_dispatch, ActionType, Config, Dispatch, EventBuilder, FsyncPolicy, NatsOptions, NatsSink,
    NonBlocking, PostgresOptions, PostgresSink, Sink, Spool, SpoolOptions,
};

const SERVICES: usize = 4;

fn skip(why: &str) {
    println!("{}", serde_json::json!({"bench": "fleet", "skipped": why}));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rows(pg: &str, schema: &str) -> i64 {
    let Ok(mut c) = postgres::Client::connect(pg, postgres::NoTls) else {
        return 0;
    };
    c.query_one(
        &format!("SELECT count(*) FROM \"{schema}\".audit_events"),
        &[],
    )
    .map(|r| r.get::<_, i64>(0))
    .unwrap_or(0)
}

fn drop_schema(pg: &str, schema: &str) {
    if let Ok(mut c) = postgres::Client::connect(pg, postgres::NoTls) {
        let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    }
}

/// Emits `n` events on each of the dispatches, one thread per service, all
/// starting together; returns the mean caller ns per call.
fn produce(dispatches: &[Dispatch], n: usize) -> f64 {
    let barrier = Arc::new(Barrier::new(dispatches.len()));
    let handles: Vec<_> = dispatches
        .iter()
        .cloned()
        .map(|d| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                with_dispatch(&d, || {
                    for i in 0..n {
                        EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}")).emit();
                    }
                });
                t.elapsed().as_nanos() as f64 / n as f64
            })
        })
        .collect();
    let per: Vec<f64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    per.iter().sum::<f64>() / per.len() as f64
}

fn wait_rows(pg: &str, schema: &str, total: i64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(600);
    while rows(pg, schema) < total {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn fleet(
    variant: &str,
    nats_url: &str,
    pg: &str,
    dir: &Path,
    n: usize,
    fsync: FsyncPolicy,
    tag: &str,
) {
    let schema = format!("bench_fleet_{tag}_{}", std::process::id());
    let stream = format!("BENCH_{tag}");
    let prefix = format!("bench{tag}");
    let log = std::fs::File::create(dir.join(format!("collector-{tag}.log"))).unwrap();
    let _collector = Kill(
        Command::new(env!("CARGO_BIN_EXE_phi-audit"))
            .args([
                "collect",
                "--nats",
                nats_url,
                "--stream",
                &stream,
                "--prefix",
                &prefix,
                "--postgres",
                pg,
                "--schema",
                &schema,
                "--batch",
                "1000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("phi-audit collect"),
    );
    let mut spools = Vec::new();
    let dispatches: Vec<Dispatch> = (0..SERVICES)
        .map(|i| {
            let nats = NatsSink::connect(
                nats_url,
                NatsOptions::new()
                    .prefix(prefix.clone())
                    .stream(stream.clone())
                    .report_errors(false),
            )
            .expect("NatsSink");
            let spool = Arc::new(
                Spool::open_with(
                    dir.join(format!("spool-{tag}-{i}")),
                    nats,
                    SpoolOptions {
                        fsync,
                        ..SpoolOptions::default()
                    },
                )
                .unwrap(),
            );
            spools.push(spool.clone());
            Dispatch::new(
                Config::new(format!("service-{i}")).build().unwrap(),
                spool as Arc<dyn Sink>,
            )
        })
        .collect();
    let start = Instant::now();
    let caller_ns = produce(&dispatches, n);
    let produced = start.elapsed();
    for s in &spools {
        s.drain(Duration::from_secs(600)).expect("spool drained");
    }
    let in_jetstream = start.elapsed();
    let total = (n * SERVICES) as i64;
    let done = wait_rows(pg, &schema, total);
    let end_to_end = start.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "bench": "fleet",
            "variant": variant,
            "services": SERVICES,
            "events": total,
            "caller_ns_per_call": caller_ns.round(),
            "produce_seconds": round3(produced.as_secs_f64()),
            "acked_by_jetstream_seconds": round3(in_jetstream.as_secs_f64()),
            "end_to_end_seconds": round3(end_to_end.as_secs_f64()),
            "end_to_end_events_per_sec": (total as f64 / end_to_end.as_secs_f64()).round(),
            "complete": done,
        })
    );
    drop(dispatches);
    drop(spools);
    drop_schema(pg, &schema);
}

fn direct(pg: &str, n: usize) {
    let schema = format!("bench_fleet_direct_{}", std::process::id());
    let dispatches: Vec<Dispatch> = (0..SERVICES)
        .map(|i| {
            let sink = PostgresSink::connect(
                pg,
                PostgresOptions::new()
                    .schema(schema.clone())
                    .integrity(true),
            )
            .expect("PostgresSink");
            Dispatch::new(
                Config::new(format!("service-{i}")).build().unwrap(),
                NonBlocking::new(sink),
            )
        })
        .collect();
    let start = Instant::now();
    let caller_ns = produce(&dispatches, n);
    let produced = start.elapsed();
    for d in &dispatches {
        d.flush().expect("all written");
    }
    let end_to_end = start.elapsed();
    let total = (n * SERVICES) as i64;
    let complete = rows(pg, &schema) == total;
    println!(
        "{}",
        serde_json::json!({
            "bench": "fleet",
            "variant": "direct: NonBlocking + PostgresSink (no spool, no JetStream)",
            "services": SERVICES,
            "events": total,
            "caller_ns_per_call": caller_ns.round(),
            "produce_seconds": round3(produced.as_secs_f64()),
            "end_to_end_seconds": round3(end_to_end.as_secs_f64()),
            "end_to_end_events_per_sec": (total as f64 / end_to_end.as_secs_f64()).round(),
            "complete": complete,
        })
    );
    drop(dispatches);
    drop_schema(pg, &schema);
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here.
    let bin = match std::env::var_os("PHI_AUDIT_NATS_SERVER") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from("/usr/sbin/nats-server"),
    };
    if !bin.is_file() {
        return skip("no nats-server (set PHI_AUDIT_NATS_SERVER or install /usr/sbin/nats-server)");
    }
    let Some(pg) = std::env::var("PHI_AUDIT_PG_URL")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        return skip("PHI_AUDIT_PG_URL is not set");
    };
    let n: usize = std::env::var("PHI_AUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = dir.path().join("store");
    let log = std::fs::File::create(dir.path().join("nats.log")).unwrap();
    let _server = Kill(
        Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nats-server"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("nats://127.0.0.1:{port}");
    fleet(
        "fleet: Spool (fsync every event, group commit) + NatsSink -> JetStream -> collect -> PostgreSQL",
        &url,
        &pg,
        dir.path(),
        n,
        FsyncPolicy::EveryEvent,
        "sync",
    );
    fleet(
        "fleet: Spool (fsync every 1000) + NatsSink -> JetStream -> collect -> PostgreSQL",
        &url,
        &pg,
        dir.path(),
        n,
        FsyncPolicy::EveryN(1000),
        "n1000",
    );
    direct(&pg, n);
}
