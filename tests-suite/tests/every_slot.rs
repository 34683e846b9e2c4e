//! Every event the library emits is valid against its target schema
//! version, whatever runtime strings fill its slots: empty ones are left
//! out, long ones cut on a character boundary, characters no reader should
//! get replaced, values a format rejects left out, and each correction is
//! counted under its own name. A sample of the same events goes through the
//! Python reference's validator in `tests/reference_conformance.rs`.

#[path = "support/hostile.rs"]
mod hostile;

use hostile::{as_value, has_bad_char, inputs, strings, Inputs};
use phi_audit::schema::validate_value;
use phi_audit::{
    audited, with_dispatch, ActionType, Actor, AuditContext, Config, Dispatch, EventBuilder, Http,
    JsonlFileSink, MemorySink, SchemaVersion,
};
use proptest::prelude::*;

fn check(i: &Inputs) -> Result<(), TestCaseError> {
    let run = hostile::run(i);
    // 6 calls and 4 manual events per pipeline, none lost.
    let per_pipeline = 10;
    prop_assert_eq!(run.events.len(), per_pipeline * run.stats.len());
    for (path, s) in &run.stats {
        prop_assert_eq!(s.emitted, per_pipeline as u64, "{}", path);
        prop_assert_eq!(
            (s.dropped, s.failed, s.validation_failures),
            (0, 0, 0),
            "{}",
            path
        );
    }
    for e in &run.events {
        let value = as_value(e);
        let verdict = validate_value(&value, Some(e.version));
        prop_assert!(
            verdict.is_ok(),
            "{} [{}] invalid: {:?}\n{}",
            e.path,
            e.version,
            verdict.err().map(|v| v.to_string()),
            e.json
        );
        let mut all = Vec::new();
        strings(&value, &mut all);
        prop_assert!(
            !all.iter().any(|s| has_bad_char(s)),
            "{}: a bad character survived: {}",
            e.path,
            e.json
        );
    }
    // Corrections of the call's own identifier, counted by the record
    // path's dispatcher under their own names.
    let (_, s) = run.stats[0];
    if i.id.is_empty() {
        prop_assert!(s.empty_fields > 0);
    }
    if has_bad_char(&i.id) {
        prop_assert!(s.chars_replaced > 0);
    }
    if i.id.chars().count() > 256 {
        prop_assert!(s.truncated > 0);
    }
    if !(100..=599).contains(&i.status) || i.client_ip.parse::<std::net::IpAddr>().is_err() {
        prop_assert!(s.invalid_fields > 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_slot_every_path_every_version(i in inputs()) {
        check(&i)?;
    }
}

// ------------------------------------------------- the examples

#[audited(action = "READ", resource = "Patient", id = id, patient = id)]
fn read(id: &str) -> u8 {
    1
}

fn one(d: &Dispatch, sink: &MemorySink, f: impl FnOnce()) -> serde_json::Value {
    with_dispatch(d, f);
    let mut events = sink.take();
    assert_eq!(events.len(), 1);
    let e = events.remove(0);
    assert!(phi_audit::schema::validate(&e).is_ok(), "{}", e.to_json());
    serde_json::to_value(&e).unwrap()
}

#[test]
fn the_reported_cases_are_fitted_and_counted() {
    let sink = MemorySink::new();
    let d = Dispatch::new(Config::new("svc").build().unwrap(), sink.clone());

    // An empty runtime id: left out.
    let e = one(&d, &sink, || {
        read("");
    });
    assert!(e["resource"].get("id").is_none(), "{e}");
    assert!(e["resource"].get("patient_id").is_none());
    assert_eq!(d.stats().empty_fields, 2);

    // 300-character ids, subject and org: cut to 256 / 256 / 128.
    let long = "x".repeat(300);
    let e = one(&d, &sink, || {
        AuditContext::new()
            .actor(Actor::human(long.as_str()).org(long.as_str()))
            .request_id(long.as_str())
            .in_scope(|| read(&long));
    });
    assert_eq!(e["resource"]["id"].as_str().unwrap().len(), 256);
    assert_eq!(e["actor"]["subject_id"].as_str().unwrap().len(), 256);
    assert_eq!(e["actor"]["org_id"].as_str().unwrap().len(), 128);
    assert_eq!(e["correlation"]["request_id"].as_str().unwrap().len(), 256);
    // resource.id, patient_id, subject_id, org_id, request_id.
    assert_eq!(d.stats().truncated, 5);

    // A 600-character user agent: cut to 512.
    let e = one(&d, &sink, || {
        AuditContext::new()
            .http(Http {
                user_agent: Some("é".repeat(600).into()),
                client_ip: Some("not an ip".into()),
                ..Http::default()
            })
            .in_scope(|| read("p-1"));
    });
    assert_eq!(
        e["http"]["user_agent"].as_str().unwrap().chars().count(),
        512
    );
    assert!(e["http"].get("client_ip").is_none());
    assert_eq!(d.stats().truncated, 6);
    assert_eq!(d.stats().invalid_fields, 1);

    // A NUL in a resource type, control characters in a metadata key.
    let e = one(&d, &sink, || {
        EventBuilder::new(ActionType::Read, "Pat\0ient")
            .metadata("k\u{1b}[31m", 1u8)
            .emit()
    });
    assert_eq!(e["resource"]["type"], "Pat\u{fffd}ient");
    assert_eq!(e["metadata"]["k\u{fffd}[31m"], 1);
    assert_eq!(d.stats().chars_replaced, 2);
    assert_eq!(d.stats().dropped, 0);
}

#[test]
fn the_record_path_fits_what_the_event_path_fits() {
    // The JSON lines sink writes calls from their pre-rendered parts: the
    // same corrections apply there.
    let path = std::env::temp_dir().join(format!("phi-audit-fit-{}.jsonl", std::process::id()));
    let d = Dispatch::new(
        Config::new("svc")
            .target(SchemaVersion::V1_1)
            .build()
            .unwrap(),
        JsonlFileSink::open(&path).unwrap(),
    );
    let ctx = AuditContext::new()
        .request_id("")
        .trace_id("t\u{2028}1")
        .session_id("s".repeat(400));
    with_dispatch(&d, || ctx.in_scope(|| read("a\u{202e}b")));
    d.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let e: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(validate_value(&e, Some(SchemaVersion::V1_1)).is_ok(), "{e}");
    assert_eq!(e["resource"]["id"], "a\u{fffd}b");
    assert!(e["correlation"].get("request_id").is_none());
    assert_eq!(e["correlation"]["trace_id"], "t\u{fffd}1");
    assert_eq!(e["correlation"]["session_id"].as_str().unwrap().len(), 256);
    let s = d.stats();
    // id and patient (both the call's), the trace id; the empty request id;
    // the long session id.
    assert_eq!((s.chars_replaced, s.empty_fields, s.truncated), (3, 1, 1));
}

#[test]
fn a_config_refuses_what_it_could_not_write() {
    for bad in [
        Config::new("svc\n").build(),
        Config::new("svc").environment("prod\u{202e}").build(),
        Config::new("svc")
            .default_actor(Actor::service("svc").roles([""]))
            .build(),
        Config::new("svc")
            .default_actor(Actor::service("svc").org("o".repeat(129)))
            .build(),
        Config::new("svc").metadata_allowlist(["a\0"]).build(),
    ] {
        let e = bad.unwrap_err();
        assert!(!e.to_string().contains('\0'));
    }
}
