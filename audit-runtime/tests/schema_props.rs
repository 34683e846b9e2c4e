//! Property tests of the schema validator: whatever the input, it returns
//! (never panics), every violation has a JSON Pointer and a message, and no
//! message repeats a value from the event.

use phi_audit_runtime::schema::{validate_value, ValidationErrors};
use phi_audit_runtime::SchemaVersion;
use proptest::prelude::*;
use serde_json::{json, Value};

#[path = "common/schema_gen.rs"]
mod schema_gen;

/// A synthetic PHI token put in string values: it must never reach a message.
const PHI: &str = "PHI-TOKEN-Jane-Roe";

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(200.0)),
        Just(json!(1.5)),
        ".{0,40}".prop_map(|s| Value::String(format!("{s}{PHI}"))),
        "\\PC{0,80}".prop_map(Value::String),
        (0usize..3000).prop_map(|n| Value::String(format!("{PHI}{}", "é".repeat(n)))),
        prop::sample::select(vec![
            "",
            "1.0",
            "1.1",
            "2.0",
            "READ",
            "OVERRIDE",
            "DENIED",
            "FAILURE",
            "agent",
            "human",
            "AgentSession",
            "sha256",
            "::1",
            "1.2.3.4",
            "2026-01-02T03:04:05Z",
            "6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    schema_gen::tree(leaf(), 6, 96, 12, 24)
}

fn valid(version: SchemaVersion) -> Value {
    let mut v = json!({
        "schema_version": version.as_str(),
        "event_id": "6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10",
        "timestamp": "2026-01-02T03:04:05.678Z",
        "service": {"name": "charts", "environment": "prod"},
        "actor": {"subject_id": "u-1", "subject_type": "human", "roles": ["a", "b"]},
        "action": {"type": "READ", "phi_touched": true},
        "resource": {"type": "Patient", "id": "p-1"},
        "outcome": {"status": "FAILURE", "error_type": "E", "error_message": "m"},
        "correlation": {"request_id": "r-1"},
        "http": {"method": "GET", "status_code": 200, "client_ip": "::1"},
        "integrity": {"event_hash": "ab", "hash_alg": "sha256"},
        "metadata": {"page": 3}
    });
    if version == SchemaVersion::V2_0 {
        v["delegation"] = json!({
            "acting": {"subject_id": "a-1", "subject_type": "agent",
                       "agent": {"interface": "api"}},
            "authorizing": {"subject_id": "h-1", "subject_type": "human"},
            "delegation_type": "supervised",
            "agent_session_id": "s-1",
            "chain_depth": 2,
            "parent_agent_session_id": "s-0"
        });
    }
    v
}

/// Every member a mutation may replace.
const POINTERS: &[&str] = &[
    "",
    "/schema_version",
    "/event_id",
    "/timestamp",
    "/service",
    "/service/name",
    "/actor",
    "/actor/subject_type",
    "/actor/roles",
    "/actor/roles/1",
    "/action",
    "/action/type",
    "/resource",
    "/resource/type",
    "/outcome",
    "/outcome/status",
    "/outcome/error_type",
    "/correlation",
    "/http",
    "/http/status_code",
    "/http/client_ip",
    "/integrity",
    "/metadata",
    "/metadata/page",
    "/delegation",
    "/delegation/chain_depth",
    "/delegation/acting",
    "/delegation/acting/agent",
];

fn replace(v: &mut Value, pointer: &str, new: Value) {
    if pointer.is_empty() {
        *v = new;
    } else if let Some(slot) = v.pointer_mut(pointer) {
        *slot = new;
    }
}

fn check_errors(e: &ValidationErrors) {
    assert!(!e.is_empty());
    assert_eq!(e.len(), e.violations().len());
    for v in e {
        assert!(
            v.path.is_empty() || v.path.starts_with('/'),
            "bad pointer {:?}",
            v.path
        );
        assert!(!v.message.is_empty());
        assert!(!v.message.contains(PHI), "value leaked: {}", v.message);
    }
    assert_eq!(e.to_string().lines().count(), e.len());
}

fn run(v: &Value) {
    for version in [
        None,
        Some(SchemaVersion::V1_0),
        Some(SchemaVersion::V1_1),
        Some(SchemaVersion::V2_0),
    ] {
        match validate_value(v, version) {
            Ok(got) => {
                if let Some(want) = version {
                    assert_eq!(got, want);
                }
                assert_eq!(v["schema_version"].as_str(), Some(got.as_str()));
            }
            Err(e) => check_errors(&e),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        run(&v);
    }

    #[test]
    fn mutated_events_never_panic(
        version in prop::sample::select(SchemaVersion::ALL.to_vec()),
        edits in prop::collection::vec((prop::sample::select(POINTERS.to_vec()), arb_json()), 1..4),
    ) {
        let mut v = valid(version);
        prop_assert!(validate_value(&v, None).is_ok());
        for (p, new) in edits {
            replace(&mut v, p, new);
        }
        run(&v);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            run(&v);
        }
    }

    #[test]
    fn json_like_text_never_panics(text in "[\\[\\]{}\":,0-9a-z.\\-eE ]{0,200}") {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            run(&v);
        }
    }
}

#[test]
fn deep_nesting_and_huge_strings() {
    // serde_json clones and drops values recursively, so the test (not the
    // validator, which never descends into unknown structure) needs a big stack.
    let worker = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let mut deep = json!("leaf");
            for _ in 0..5000 {
                deep = json!([deep, {"k": 1}]);
            }
            let huge = Value::String(format!("{PHI}{}", "😀".repeat(300_000)));
            for version in SchemaVersion::ALL {
                for p in POINTERS {
                    for new in [&deep, &huge] {
                        let mut v = valid(*version);
                        replace(&mut v, p, new.clone());
                        run(&v);
                    }
                }
            }
        })
        .expect("spawn test thread");
    worker.join().expect("validator panicked");
}
