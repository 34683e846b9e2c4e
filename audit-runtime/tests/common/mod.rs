//! Shared helpers: synthetic events (no real PHI) and proptest strategies.
#![allow(dead_code)]

use phi_audit_runtime::*;
use proptest::prelude::*;

/// A simple event number `i`.
pub fn event(i: u64) -> AuditEvent {
    let mut metadata = Metadata::new();
    metadata.insert("seq", i);
    metadata.insert("ratio", i as f64 / 7.0);
    AuditEvent {
        schema_version: SchemaVersion::V1_1,
        event_id: uuid::Uuid::from_u128(0x4000_0000_0000_4000_8000_0000_0000_0000 | u128::from(i)),
        timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + i as i64),
        service: Service {
            name: "intake-api".into(),
            environment: Some("test".into()),
            version: None,
        },
        actor: Actor::human(format!("user-{i}")).roles(["clinician"]),
        action: Action {
            kind: ActionType::Read,
            name: Some("read_chart".into()),
            phi_touched: Some(true),
            data_classification: Some(DataClassification::Phi),
        },
        resource: Resource {
            kind: "Patient".into(),
            id: Some(format!("pat-{i}").into()),
            patient_id: Some(format!("pat-{i}").into()),
        },
        outcome: Outcome::SUCCESS,
        correlation: Some(Correlation {
            request_id: Some("req-1".into()),
            ..Correlation::default()
        }),
        http: None,
        delegation: None,
        metadata,
        integrity: None,
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _-]{1,12}",
        // Control characters, quotes, backslashes, non-BMP, U+2028.
        "[\\x00-\\x1f\"\\\\\u{7f}\u{e9}\u{2028}\u{1F600}a-z]{1,10}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        prop::sample::select(vec![
            1e16,
            1e-5,
            1.0,
            0.1,
            -0.0,
            0.0,
            123456789012345.0,
            1e15,
            1e-4,
            5e-324,
            f64::MAX,
            1.5e300,
            0.30000000000000004,
        ]),
        (-1_000_000i64..1_000_000).prop_map(|i| i as f64 / 1000.0),
    ]
}

fn meta_value() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        Just(MetaValue::Null),
        any::<bool>().prop_map(MetaValue::Bool),
        any::<i64>().prop_map(MetaValue::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(MetaValue::UInt),
        float().prop_map(MetaValue::Float),
        text().prop_map(|s| MetaValue::Str(Text::from(s))),
    ]
}

/// Random events: random metadata (unicode keys, floats), optional blocks.
pub fn arb_event() -> impl Strategy<Value = AuditEvent> {
    (
        any::<u128>(),
        0i64..4_000_000_000_000,
        text(),
        prop::collection::vec((text(), meta_value()), 0..6),
        prop::option::of(text()),
        prop::sample::select(ActionType::ALL.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(id, ms, subject, meta, patient, kind, failed)| {
            let mut e = event(0);
            e.event_id = uuid::Uuid::from_u128(id);
            e.timestamp = Timestamp::from_unix_millis(ms);
            e.actor = Actor::service(subject.clone()).org("org-1");
            e.action.kind = kind;
            e.resource.patient_id = patient.map(Text::from);
            if failed {
                e.outcome = Outcome::failure("DbError", subject);
            }
            let mut m = Metadata::new();
            for (k, v) in meta {
                m.insert_value(Text::from(k), v);
            }
            e.metadata = m;
            e
        })
}

/// Bytes of disk a file holds (its blocks, not its length).
#[cfg(target_os = "linux")]
pub fn disk_bytes(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}
