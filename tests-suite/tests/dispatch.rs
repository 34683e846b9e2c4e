//! Dispatch and config behaviour, through the public API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use phi_audit::{
    with_dispatch, ActionType, Actor, AuditContext, Config, Dispatch, DowngradePolicy,
    EventBuilder, MemorySink, MetaValue, Outcome, OutcomeStatus, SchemaVersion, SubjectType,
    Timestamp, ValidationPolicy,
};

fn dispatch(cfg: phi_audit::ConfigBuilder) -> (Dispatch, MemorySink) {
    let sink = MemorySink::new();
    (Dispatch::new(cfg.build().unwrap(), sink.clone()), sink)
}

#[test]
fn builder_fills_service_actor_ids_and_time() {
    let ids = Arc::new(AtomicU64::new(1));
    let (d, sink) = dispatch(
        Config::new("chart-service")
            .environment("test")
            .version("1.2.3")
            .clock(|| Timestamp::from_unix_millis(1_700_000_000_123))
            .id_source(move || uuid::Uuid::from_u128(ids.fetch_add(1, Ordering::Relaxed) as u128)),
    );
    with_dispatch(&d, || {
        EventBuilder::access(ActionType::Read, "Patient", "p-1")
            .patient_id("p-1")
            .name("read_chart")
            .phi_touched(true)
            .emit()
    });
    let e = &sink.events()[0];
    assert_eq!(
        e.to_json(),
        concat!(
            r#"{"schema_version":"1.1","event_id":"00000000-0000-0000-0000-000000000001","#,
            r#""timestamp":"2023-11-14T22:13:20.123Z","service":{"name":"chart-service","environment":"test","version":"1.2.3"},"#,
            r#""actor":{"subject_id":"chart-service","subject_type":"service"},"#,
            r#""action":{"type":"READ","name":"read_chart","phi_touched":true},"#,
            r#""resource":{"type":"Patient","id":"p-1","patient_id":"p-1"},"outcome":{"status":"SUCCESS"}}"#
        )
    );
    let back: phi_audit::AuditEvent = serde_json::from_str(&e.to_json()).unwrap();
    assert_eq!(&back, e);
}

#[test]
fn context_supplies_actor_and_correlation_explicit_actor_wins() {
    let (d, sink) = dispatch(Config::new("svc"));
    let ctx = AuditContext::new()
        .actor(Actor::human("dr-1").org("org-a").roles(["clinician"]))
        .request_id("req-1")
        .trace_id("trace-1");
    with_dispatch(&d, || {
        ctx.in_scope(|| {
            EventBuilder::new(ActionType::Read, "Note").emit();
            EventBuilder::new(ActionType::Read, "Note")
                .actor(Actor::service("batch"))
                .emit();
        })
    });
    let ev = sink.events();
    assert_eq!(ev[0].actor.subject_id, "dr-1");
    assert_eq!(ev[0].actor.org_id.as_deref(), Some("org-a"));
    assert_eq!(ev[0].actor.roles.as_deref().unwrap()[0], "clinician");
    let c = ev[0].correlation.as_ref().unwrap();
    assert_eq!(c.request_id.as_deref(), Some("req-1"));
    assert_eq!(c.trace_id.as_deref(), Some("trace-1"));
    assert_eq!(ev[1].actor.subject_type, SubjectType::Service);
    assert_eq!(ev[1].actor.subject_id, "batch");
}

#[test]
fn conveniences_produce_schema_shapes() {
    let (d, sink) = dispatch(Config::new("svc"));
    with_dispatch(&d, || {
        EventBuilder::access_denied(ActionType::Export, "Chart", "RoleDenied").emit();
        EventBuilder::login_success(Actor::human("u1")).emit();
        EventBuilder::login_failure(Actor::human("u1"), "BadCredentials").emit();
    });
    let ev = sink.events();
    assert_eq!(ev[0].outcome.status, OutcomeStatus::Denied);
    assert_eq!(ev[0].outcome.error_type.as_deref(), Some("RoleDenied"));
    assert_eq!(ev[1].action.kind, ActionType::Login);
    assert_eq!(ev[1].outcome.status, OutcomeStatus::Success);
    assert_eq!(ev[2].outcome.status, OutcomeStatus::Failure);
    assert_eq!(
        ev[2].outcome.error_message.as_deref(),
        Some("BadCredentials")
    );
}

#[test]
fn metadata_allowlist_limits_and_non_finite_floats_are_enforced_and_counted() {
    let (d, sink) = dispatch(
        Config::new("svc")
            .metadata_allowlist(["reason", "ratio", "bad", "long"])
            .max_metadata_string_len(5),
    );
    with_dispatch(&d, || {
        EventBuilder::new(ActionType::Read, "Patient")
            .metadata("reason", "treatment")
            .metadata("ratio", 0.5)
            .metadata("bad", f64::NAN)
            .metadata("secret", "PATIENT_JANE_DOE")
            .emit()
    });
    let e = &sink.events()[0];
    assert_eq!(e.metadata.len(), 2);
    assert_eq!(
        e.metadata.get("reason"),
        Some(&MetaValue::Str("treat".into()))
    );
    assert_eq!(e.metadata.get("ratio"), Some(&MetaValue::Float(0.5)));
    let s = d.stats();
    assert_eq!(s.metadata_dropped, 2);
    assert_eq!(s.truncated, 1);
    assert_eq!(s.emitted, 1);
}

#[test]
fn more_than_twenty_metadata_keys_are_cut_and_counted() {
    let (d, sink) = dispatch(Config::new("svc"));
    with_dispatch(&d, || {
        let mut b = EventBuilder::new(ActionType::Read, "Patient");
        for i in 0..25 {
            b = b.metadata(format!("k{i}"), i);
        }
        b.emit();
    });
    assert_eq!(sink.events()[0].metadata.len(), 20);
    assert_eq!(d.stats().metadata_dropped, 5);
}

#[test]
fn failure_messages_are_sanitized_capped_and_never_empty() {
    let (d, sink) = dispatch(Config::new("svc").max_error_message_len(40));
    with_dispatch(&d, || {
        EventBuilder::new(ActionType::Update, "Patient")
            .outcome(Outcome::failure(
                "DbError",
                "row for 123-45-6789   not\nfound",
            ))
            .emit();
        EventBuilder::new(ActionType::Update, "Patient")
            .outcome(Outcome::failure("Timeout", ""))
            .emit();
        EventBuilder::new(ActionType::Update, "Patient")
            .outcome(Outcome::failure("X", "y".repeat(100)))
            .emit();
    });
    let ev = sink.events();
    assert_eq!(
        ev[0].outcome.error_message.as_deref(),
        Some("row for [SSN] not found")
    );
    assert_eq!(ev[1].outcome.error_message.as_deref(), Some("Timeout"));
    assert_eq!(ev[2].outcome.error_message.as_ref().unwrap().len(), 40);
}

#[test]
fn targeting_1_0_turns_denied_into_failure() {
    let (d, sink) = dispatch(Config::new("svc").target(SchemaVersion::V1_0));
    with_dispatch(&d, || {
        EventBuilder::access_denied(ActionType::Read, "Patient", "RoleDenied").emit()
    });
    let e = &sink.events()[0];
    assert_eq!(e.schema_version, SchemaVersion::V1_0);
    assert_eq!(e.outcome.status, OutcomeStatus::Failure);
    assert!(e.outcome.error_message.is_some());
}

#[test]
fn v2_only_data_is_rejected_for_1_x_unless_downgrade_is_configured() {
    let override_event =
        || EventBuilder::new(ActionType::Override, "AgentSession").resource_id("s-1");
    let (d, sink) = dispatch(Config::new("svc"));
    with_dispatch(&d, || override_event().emit());
    assert!(sink.is_empty());
    assert_eq!(d.stats().dropped, 1);

    let (d, sink) = dispatch(Config::new("svc").downgrade(DowngradePolicy::Downgrade));
    with_dispatch(&d, || override_event().emit());
    assert_eq!(sink.events()[0].schema_version, SchemaVersion::V1_1);
    assert_ne!(sink.events()[0].action.kind, ActionType::Override);

    let (d, sink) = dispatch(Config::new("svc").target(SchemaVersion::V2_0));
    with_dispatch(&d, || override_event().actor(Actor::human("u")).emit());
    assert_eq!(sink.events()[0].action.kind, ActionType::Override);
}

#[test]
fn validate_on_emit_drops_or_emits_and_counts() {
    // Strings are fitted to the schema before validation (a 300-character id
    // is cut, and counted); what is left to fail is a shape: an agent
    // acting without a delegation block.
    let bad = || {
        EventBuilder::new(ActionType::Read, "Patient")
            .resource_id("x".repeat(300))
            .actor(Actor::agent("bot-1"))
    };
    let v2 = || Config::new("svc").target(SchemaVersion::V2_0);
    let (d, sink) = dispatch(v2().validate_on_emit(ValidationPolicy::Drop));
    with_dispatch(&d, || {
        bad().emit();
        EventBuilder::new(ActionType::Read, "Patient").emit();
    });
    assert_eq!(sink.len(), 1);
    let s = d.stats();
    assert_eq!((s.validation_failures, s.dropped, s.emitted), (1, 1, 1));
    assert_eq!(s.truncated, 1);

    let (d, sink) = dispatch(v2().validate_on_emit(ValidationPolicy::EmitAnyway));
    with_dispatch(&d, || bad().emit());
    assert_eq!(sink.len(), 1);
    assert_eq!(d.stats().validation_failures, 1);
}

#[test]
fn invalid_config_is_an_error_at_construction() {
    for b in [
        Config::new(""),
        Config::new("x".repeat(129)),
        Config::new("svc").environment("e".repeat(65)),
        Config::new("svc").version("v".repeat(65)),
        Config::new("svc").max_error_message_len(0),
        Config::new("svc").max_error_message_len(501),
        Config::new("svc").default_actor(Actor::human("")),
        Config::new("svc").default_actor(Actor::agent("bot")),
        Config::new("svc").metadata_allowlist([""]),
    ] {
        let err = b.build().unwrap_err();
        assert!(!err.to_string().is_empty());
    }
    assert!(Config::new("svc").build().is_ok());
}

#[test]
fn scoped_dispatchers_nest_and_restore_after_panic() {
    let (outer, outer_sink) = dispatch(Config::new("outer"));
    let (inner, inner_sink) = dispatch(Config::new("inner"));
    with_dispatch(&outer, || {
        let r = std::panic::catch_unwind(|| {
            with_dispatch(&inner, || {
                EventBuilder::new(ActionType::Read, "A").emit();
                panic!("boom");
            })
        });
        assert!(r.is_err());
        EventBuilder::new(ActionType::Read, "B").emit();
    });
    assert_eq!(inner_sink.events()[0].service.name, "inner");
    assert_eq!(outer_sink.events()[0].service.name, "outer");
    assert_eq!(outer_sink.events()[0].resource.kind, "B");
}

#[test]
fn without_a_dispatcher_events_are_counted_not_lost_silently() {
    let before = phi_audit::stats::undispatched();
    std::thread::spawn(|| EventBuilder::new(ActionType::Read, "Patient").emit())
        .join()
        .unwrap();
    assert!(phi_audit::stats::undispatched() > before);
}
