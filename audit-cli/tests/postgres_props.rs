//! Stored form = hashed form in PostgreSQL: events with arbitrary metadata
//! (negative zero, subnormals, ±1e308, integers past 2^53, NUL, lone
//! escapes, odd keys) and arbitrary timestamps, written through
//! `PostgresSink` with integrity on, pass `phi-audit verify --postgres`,
//! and the `ts` column holds the instant of the JSON `timestamp`.
//!
//! Needs a server: `PHI_AUDIT_PG_URL=postgres://postgres@127.0.0.1:5432/test`
//! (unset: skipped with a message).

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use phi_audit_runtime::{
    Action, ActionType, Actor, AuditEvent, MetaValue, Metadata, Outcome, PostgresOptions,
    PostgresSink, Resource, SchemaVersion, Service, Sink, Text, Timestamp,
};
use proptest::prelude::*;

fn pg_url() -> Option<String> {
    phi_audit_test_env::server(
        phi_audit_test_env::PG_URL,
        "phi-audit-cli --test postgres_props",
        "PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test",
    )
}

/// Floats `jsonb` is known to rewrite, and the edges of f64.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(-0.0),
        Just(0.0),
        Just(f64::from_bits(1)),                      // smallest subnormal
        Just(-f64::from_bits(0x000f_ffff_ffff_ffff)), // largest subnormal
        Just(f64::MIN_POSITIVE),
        Just(1e308),
        Just(-1e308),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(1e16),
        Just(-1.5e16),
        Just(9_007_199_254_740_993.0),
        Just(18_446_744_073_709_551_616.0),
        Just(-9_223_372_036_854_775_808.0),
        Just(1e-7),
        Just(0.1),
        Just(5e-324),
        Just(123_456_789_012_345.67),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        (-1e20f64..1e20).prop_map(|f| f.trunc()),
    ]
}

fn int() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        Just(MetaValue::Int(9_007_199_254_740_993)),
        Just(MetaValue::Int(-9_007_199_254_740_993)),
        Just(MetaValue::Int(i64::MIN)),
        Just(MetaValue::Int(i64::MAX)),
        Just(MetaValue::Int(0)),
        Just(MetaValue::UInt(u64::MAX)),
        Just(MetaValue::UInt(1 << 63)),
        any::<i64>().prop_map(MetaValue::Int),
        (1u64 << 63..=u64::MAX).prop_map(MetaValue::UInt),
    ]
}

/// Strings with NUL, lone escape sequences as text, quotes, backslashes,
/// control and bidi characters, and any Unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a\u{0}b".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\\ud800".to_owned()),
        Just("\\u0000".to_owned()),
        Just("\\".to_owned()),
        Just("\"\\\"".to_owned()),
        Just("\u{7f}\u{1b}[2J\u{202e}\u{2028}\u{feff}".to_owned()),
        "\\PC{0,24}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
        prop::collection::vec(prop::char::range('\u{0}', '\u{20}'), 0..8)
            .prop_map(|v| v.into_iter().collect()),
    ]
}

fn value() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        4 => float().prop_map(MetaValue::Float),
        2 => int(),
        2 => text().prop_map(|s| MetaValue::Str(Text::from(s.as_str()))),
        1 => any::<bool>().prop_map(MetaValue::Bool),
        1 => Just(MetaValue::Null),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_]{1,12}",
        1 => text().prop_filter("a key", |k| !k.is_empty()),
    ]
}

/// Every instant the model can hold, the edges of RFC 3339 and of
/// PostgreSQL's range included.
fn millis() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0),
        Just(-1),
        Just(-62_167_219_200_000),  // 0000-01-01
        Just(-62_167_219_200_001),  // just before
        Just(253_402_300_799_999),  // 9999-12-31T23:59:59.999
        Just(253_402_300_800_000),  // just after
        Just(-210_866_803_200_000), // 4713 BC, PostgreSQL's earliest
        -62_167_219_200_000i64..253_402_300_800_000,
        any::<i64>(),
    ]
}

fn event(
    service: &str,
    n: u64,
    ms: i64,
    meta: Vec<(String, MetaValue)>,
    actor: String,
) -> AuditEvent {
    let mut metadata = Metadata::new();
    for (k, v) in meta {
        metadata.insert_value(Text::from(k.as_str()), v);
    }
    AuditEvent {
        schema_version: SchemaVersion::V1_1,
        event_id: uuid::Uuid::from_u128(
            0x4000_0000_0000_4000_8000_0000_0000_0000
                | (u128::from(n) << 20)
                | u128::from(N.fetch_add(1, Ordering::Relaxed)),
        ),
        timestamp: Timestamp::from_unix_millis(ms),
        service: Service {
            name: Text::from(service),
            environment: None,
            version: None,
        },
        actor: Actor::human(Text::from(actor.as_str())),
        action: Action {
            kind: ActionType::Read,
            name: None,
            phi_touched: None,
            data_classification: None,
        },
        resource: Resource {
            kind: "Patient".into(),
            id: None,
            patient_id: None,
        },
        outcome: Outcome::SUCCESS,
        correlation: None,
        http: None,
        delegation: None,
        metadata,
        integrity: None,
    }
}

static N: AtomicU64 = AtomicU64::new(1);

fn verify_cli(url: &str, schema: &str, service: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_phi-audit"))
        .args([
            "verify",
            "--postgres",
            url,
            "--service",
            service,
            "--pg-schema",
            schema,
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn millis_of(t: SystemTime) -> i64 {
    Timestamp::from_system_time(t).unix_millis()
}

#[test]
fn every_value_the_sink_takes_verifies_after_jsonb() {
    let Some(url) = pg_url() else { return };
    let schema = format!(
        "t_props_{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let pg = PostgresSink::connect(
        &url,
        PostgresOptions::new()
            .schema(schema.clone())
            .integrity(true)
            .report_errors(false),
    )
    .unwrap();
    let client = std::sync::Mutex::new(postgres::Client::connect(&url, postgres::NoTls).unwrap());
    let case = AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let result = proptest::test_runner::TestRunner::new(config).run(
        &prop::collection::vec(
            (
                millis(),
                prop::collection::vec((key(), value()), 0..20),
                text().prop_filter("non-empty", |s| !s.is_empty()),
            ),
            1..6,
        ),
        |events| {
            let service = format!("svc-{}", case.fetch_add(1, Ordering::Relaxed));
            let mut batch: Vec<AuditEvent> = events
                .into_iter()
                .enumerate()
                .map(|(i, (ms, meta, actor))| event(&service, i as u64, ms, meta, actor))
                .collect();
            let n = batch.len() as u64;
            // Half the cases one event per transaction, half as a batch.
            if n % 2 == 0 {
                for e in batch.drain(..) {
                    pg.write(&e).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            } else {
                pg.write_batch(&mut batch)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            pg.flush().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (code, out, err) = verify_cli(&url, &schema, &service);
            prop_assert_eq!(code, 0, "verify --postgres: {} {}", out, err);
            prop_assert!(out.contains(&format!("PASS: {n} chained event(s)")), "{}", out);
            // The ts column is the instant the JSON timestamp says.
            let rows = client
                .lock()
                .unwrap()
                .query(
                    &format!(
                        "SELECT ts, event->>'timestamp' FROM {schema}.audit_events WHERE service_name = $1"
                    ),
                    &[&service],
                )
                .unwrap();
            prop_assert_eq!(rows.len() as u64, n);
            for r in rows {
                let ts: SystemTime = r.get(0);
                let json: String = r.get(1);
                let said = Timestamp::parse_rfc3339(&json).unwrap();
                prop_assert_eq!(millis_of(ts), said.unix_millis(), "ts column vs {}", json);
            }
            Ok(())
        },
    );
    drop(pg);
    let _ = client
        .into_inner()
        .unwrap()
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
    if let Err(e) = result {
        panic!("{e}");
    }
}
