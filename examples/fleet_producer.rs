//! One service of a fleet: audited calls through a durable local spool to
//! NATS JetStream, from where `phi-audit collect` stores them in PostgreSQL.
//!
//! ```text
//! phi-audit collect --nats nats://127.0.0.1:4222 --stream AUDIT --postgres postgres://audit@db/app &
//! PHI_AUDIT_SERVICE=chart-service cargo run --release --example fleet_producer --features nats
//! ```
//!
//! Environment: `PHI_AUDIT_EVENTS` (default 10000) audited calls,
//! `PHI_AUDIT_NATS_URL` (default `nats://127.0.0.1:4222`; several servers
//! separated by `,`), `PHI_AUDIT_SERVICE` (default `fleet-producer`),
//! `PHI_AUDIT_SPOOL` (the spool directory; default a new temporary
//! directory). Events go to the subject `audit.<service>` of the stream
//! `AUDIT` (created with one replica when absent). The program flushes
//! (every event acknowledged by JetStream) and prints one JSON line of
//! counts; it exits with 1 when an event was lost.

use std::time::Instant;

use phi_audit::{audited, Actor, AuditContext, Config, NatsOptions, NatsSink, NatsStream, Spool};

/// What the service's functions return on error.
#[derive(Debug)]
struct NotFound;

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not found")
    }
}

#[audited(action = "READ", resource = "Patient", id = patient_id, patient = patient_id)]
fn read_patient(patient_id: &str) -> Result<u64, NotFound> {
    if patient_id.ends_with('7') {
        Err(NotFound)
    } else {
        Ok(patient_id.len() as u64)
    }
}

/// A temporary spool directory, removed at exit.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: u64 = env_or("PHI_AUDIT_EVENTS", "10000")
        .parse()
        .map_err(|_| "PHI_AUDIT_EVENTS must be a whole number")?;
    let url = env_or("PHI_AUDIT_NATS_URL", "nats://127.0.0.1:4222");
    let service = env_or("PHI_AUDIT_SERVICE", "fleet-producer");
    // The spool directory: events wait here (on disk) until JetStream has
    // them; a restarted producer sends what an earlier one left.
    let (spool_dir, _temp) = match std::env::var_os("PHI_AUDIT_SPOOL").filter(|v| !v.is_empty()) {
        Some(d) => (std::path::PathBuf::from(d), None),
        None => {
            let d = std::env::temp_dir().join(format!(
                "phi-audit-spool-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            ));
            (d.clone(), Some(TempDir(d)))
        }
    };

    let nats = std::sync::Arc::new(NatsSink::connect(
        &url,
        NatsOptions::new().create_stream(NatsStream::new("AUDIT")),
    )?);
    let config = Config::new(service.as_str()).environment("demo").build()?;
    let spool = std::sync::Arc::new(Spool::open(&spool_dir, nats.clone())?);
    let guard = phi_audit::init(config, spool.clone())?;

    let ctx = AuditContext::new().actor(Actor::human("dr-house"));
    let started = Instant::now();
    ctx.in_scope(|| {
        for i in 0..events {
            let _ = read_patient(&format!("p-{i}"));
        }
    });
    let calls = started.elapsed();
    // Durable locally (and no loss), then every event acknowledged by
    // JetStream.
    let flushed = guard
        .flush()
        .and_then(|()| spool.drain(std::time::Duration::from_secs(600)));
    let total = started.elapsed();

    let s = nats.stats();
    let sp = spool.stats();
    let line = serde_json::json!({
        "service": service,
        "events": events,
        "published": s.published,
        "acked": s.acked,
        "duplicates": s.duplicates,
        "retries": s.retries,
        "errors": s.errors,
        "failed": s.failed,
        "spool_depth": sp.depth,
        "spool_recovered": sp.recovered,
        "caller_ns_per_call": calls.as_nanos() as u64 / events.max(1),
        "seconds": (total.as_secs_f64() * 1000.0).round() / 1000.0,
        "flush": match &flushed { Ok(()) => "ok".to_owned(), Err(e) => e.to_string() },
    });
    println!("{line}");
    drop(guard);
    drop(spool);
    if flushed.is_err() {
        drop(_temp);
        std::process::exit(1);
    }
    Ok(())
}
