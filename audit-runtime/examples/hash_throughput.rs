//! Measures canonical serialization + SHA-256 chain hashing of typed events
//! (the LedgerSink fast path) and the ledger's write throughput.
//! Run: `cargo run --release -p phi-audit-runtime --example hash_throughput`

use std::time::Instant;

use phi_audit_runtime::*;

fn event(i: u64) -> AuditEvent {
    let mut metadata = Metadata::new();
    metadata.insert("page", i);
    metadata.insert("ratio", i as f64 / 7.0);
    metadata.insert("reason", "treatment");
    AuditEvent {
        schema_version: SchemaVersion::V1_1,
        event_id: uuid::Uuid::from_u128(u128::from(i) | (4 << 76)),
        timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + i as i64),
        service: Service {
            name: "intake-api".into(),
            environment: Some("prod".into()),
            version: Some("1.2.3".into()),
        },
        actor: Actor::human("user-12345")
            .org("org-1")
            .roles(["clinician", "nurse"]),
        action: Action {
            kind: ActionType::Read,
            name: Some("read_chart".into()),
            phi_touched: Some(true),
            data_classification: Some(DataClassification::Phi),
        },
        resource: Resource {
            kind: "Patient".into(),
            id: Some("pat-000123".into()),
            patient_id: Some("pat-000123".into()),
        },
        outcome: Outcome::SUCCESS,
        correlation: Some(Correlation {
            request_id: Some("req-abcdef".into()),
            ..Default::default()
        }),
        http: None,
        delegation: None,
        metadata,
        integrity: None,
    }
}

fn main() {
    let events: Vec<AuditEvent> = (0..200_000).map(event).collect();
    let mut c = integrity::Canonicalizer::new();
    let mut prev: Option<String> = None;
    let t = Instant::now();
    for e in &events {
        let h = c
            .event_hash(e, prev.as_deref(), HashAlg::Sha256)
            .unwrap_or_default();
        prev = Some(h);
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "typed canonical + sha256: {:.0} events/s",
        events.len() as f64 / dt
    );

    let t = Instant::now();
    for e in &events[..50_000] {
        let v = serde_json::to_value(e).unwrap_or_default();
        let _ = integrity::event_hash(&v, prev.as_deref(), HashAlg::Sha256);
    }
    println!(
        "via serde_json::Value:    {:.0} events/s",
        50_000.0 / t.elapsed().as_secs_f64()
    );

    let dir = std::env::temp_dir().join(format!("phi-audit-bench-{}", std::process::id()));
    let l = LedgerSink::open_with(
        dir.join("l.jsonl"),
        LedgerOptions::new().fsync(FsyncPolicy::Never),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    for e in &events {
        let _ = l.write(e);
    }
    let _ = l.close();
    println!(
        "LedgerSink (fsync Never): {:.0} events/s",
        events.len() as f64 / t.elapsed().as_secs_f64()
    );
    let s = JsonlFileSink::open_with(
        dir.join("f.jsonl"),
        JsonlOptions::new().fsync(FsyncPolicy::Never),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    for e in &events {
        let _ = s.write(e);
    }
    let _ = s.close();
    println!(
        "JsonlFileSink (Never):    {:.0} events/s",
        events.len() as f64 / t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(dir);
}
