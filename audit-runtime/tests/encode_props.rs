//! The hand-written encoders write exactly what serde_json writes, and the
//! canonical form the generic (Python-compatible) canonicalizer writes.

use phi_audit_runtime::{
    Action, ActionType, Actor, AuditEvent, Correlation, DataClassification, HashAlg, Http,
    HttpMethod, Integrity, MetaValue, Metadata, Outcome, OutcomeStatus, Resource, SchemaVersion,
    Service, SubjectType, Text, Timestamp,
};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = Text> {
    prop_oneof![
        "[a-z0-9-]{0,30}",
        "\\PC{0,40}",
        prop::collection::vec(any::<char>(), 0..40).prop_map(|v| v.into_iter().collect::<String>()),
        Just("quote\" back\\ slash/ \u{0}\u{1f}\u{7f}\u{2028}😀 \n\r\t\u{8}\u{c}".to_string()),
    ]
    .prop_map(Text::from)
}

fn opt_text() -> impl Strategy<Value = Option<Text>> {
    prop::option::of(text())
}

fn meta_value() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        Just(MetaValue::Null),
        any::<bool>().prop_map(MetaValue::Bool),
        any::<i64>().prop_map(MetaValue::Int),
        (i64::MAX as u64..=u64::MAX).prop_map(MetaValue::UInt),
        prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            Just(1e16),
            Just(1e-5),
            Just(-0.0),
            Just(0.1),
            Just(123456789012345.0),
            Just(f64::MIN_POSITIVE),
        ]
        .prop_map(MetaValue::Float),
        text().prop_map(MetaValue::Str),
    ]
}

prop_compose! {
    fn event()(
        version in prop::sample::select(SchemaVersion::ALL),
        id in any::<u128>(),
        ms in -10_000_000_000_000i64..300_000_000_000_000,
        name in text(), env in opt_text(), ver in opt_text(),
        subject in text(), st in prop::sample::select(SubjectType::ALL),
        org in opt_text(), owner in opt_text(),
        roles in prop::option::of(prop::collection::vec(text(), 0..4)),
        kind in prop::sample::select(ActionType::ALL), aname in opt_text(),
        phi in prop::option::of(any::<bool>()),
        class in prop::option::of(prop::sample::select(DataClassification::ALL)),
        rtype in text(), rid in opt_text(), pid in opt_text(),
        status in prop::sample::select(OutcomeStatus::ALL), et in opt_text(), em in opt_text(),
        corr in prop::option::of((opt_text(), opt_text(), opt_text())),
        http in prop::option::of((prop::option::of(prop::sample::select(HttpMethod::ALL)), opt_text(), prop::option::of(any::<u16>()), opt_text(), opt_text())),
        meta in prop::collection::vec((text(), meta_value()), 0..6),
        integ in prop::option::of((opt_text(), opt_text(), prop::option::of(prop::sample::select(HashAlg::ALL)))),
    ) -> AuditEvent {
        let mut metadata = Metadata::new();
        for (k, v) in meta {
            metadata.insert_value(k, v);
        }
        AuditEvent {
            schema_version: version,
            event_id: uuid::Uuid::from_u128(id),
            timestamp: Timestamp::from_unix_millis(ms),
            service: Service { name, environment: env, version: ver },
            actor: Actor {
                subject_id: subject,
                subject_type: st,
                org_id: org,
                owner_org_id: owner,
                roles: roles.map(|r| r.into()),
            },
            action: Action { kind, name: aname, phi_touched: phi, data_classification: class },
            resource: Resource { kind: rtype, id: rid, patient_id: pid },
            outcome: Outcome { status, error_type: et, error_message: em },
            correlation: corr.map(|(request_id, trace_id, session_id)| Correlation { request_id, trace_id, session_id }),
            http: http.map(|(method, route_template, status_code, client_ip, user_agent)| Http { method, route_template, status_code, client_ip, user_agent }),
            delegation: None,
            metadata,
            integrity: integ.map(|(event_hash, prev_event_hash, hash_alg)| Integrity { event_hash, prev_event_hash, hash_alg }),
        }
    }
}

#[test]
fn hand_encoder_matches_serde() {
    // The event strategy is deep; give it room in debug builds.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let mut runner =
                proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(2000));
            runner
                .run(&event(), |e| {
                    let mut ours = Vec::new();
                    e.write_json(&mut ours);
                    let theirs = serde_json::to_vec(&e).unwrap();
                    prop_assert_eq!(
                        String::from_utf8(ours).unwrap(),
                        String::from_utf8(theirs).unwrap()
                    );
                    // Canonical form: the typed fast path equals the generic
                    // one over the event's JSON value.
                    let mut c = phi_audit_runtime::Canonicalizer::new();
                    let fast = c.event_bytes(&e).unwrap().to_vec();
                    let mut slow = Vec::new();
                    phi_audit_runtime::integrity::canonical_event_json(
                        &serde_json::to_value(&e).unwrap(),
                        &mut slow,
                    );
                    prop_assert_eq!(
                        String::from_utf8(fast).unwrap(),
                        String::from_utf8(slow).unwrap()
                    );
                    Ok(())
                })
                .unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}
