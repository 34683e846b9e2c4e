//! Cross-check of the schema validator against the reference implementation.
//!
//! Set `PHI_AUDIT_REF_PYTHON` to a Python where
//! `bh-audit-logger[jsonschema,cli]==2.0.0` is installed:
//!
//! ```text
//! python3 -m venv /tmp/refvenv
//! /tmp/refvenv/bin/pip install 'bh-audit-logger[jsonschema,cli]==2.0.0'
//! PHI_AUDIT_REF_PYTHON=/tmp/refvenv/bin/python cargo test -p phi-audit-tests --test reference_conformance
//! ```
//!
//! Without it the test says why it is skipped and passes. With it, a corpus of
//! valid events (built with the public types) and of invalid events (one or
//! more per rule, plus format edge cases) goes through both validators, which
//! must agree on valid/invalid for every case. The corpus also holds a sample
//! of what the library emits for hostile runtime strings in every slot
//! (`tests/support/hostile.rs`, the inputs of `tests/every_slot.rs`), every
//! one of which both validators must find valid.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

#[path = "support/hostile.rs"]
mod hostile;

use phi_audit::schema::validate_value;
use phi_audit::{
    ActingAgent, Action, ActionType, Actor, AgentInfo, AgentInterface, AuditEvent,
    AuthorizingHuman, Correlation, DataClassification, Delegation, DelegationType, HashAlg, Http,
    HttpMethod, Integrity, Metadata, Outcome, Resource, SchemaVersion, Service, SubjectType, Text,
    Timestamp,
};
use serde_json::{json, Value};

const V10: SchemaVersion = SchemaVersion::V1_0;
const V11: SchemaVersion = SchemaVersion::V1_1;
const V20: SchemaVersion = SchemaVersion::V2_0;

struct Case {
    name: String,
    version: SchemaVersion,
    event: Value,
    /// What the case was written to be, when that is certain (format edge
    /// cases are left to the reference).
    intended: Option<bool>,
}

struct Corpus(Vec<Case>);

impl Corpus {
    fn push(&mut self, name: impl Into<String>, version: SchemaVersion, event: Value) {
        self.push_intended(name, version, event, None);
    }

    fn valid(&mut self, name: impl Into<String>, e: &AuditEvent) {
        let event = serde_json::to_value(e).expect("typed events serialize");
        self.push_intended(name, e.schema_version, event, Some(true));
    }

    fn invalid(&mut self, name: impl Into<String>, version: SchemaVersion, event: Value) {
        self.push_intended(name, version, event, Some(false));
    }

    fn push_intended(
        &mut self,
        name: impl Into<String>,
        version: SchemaVersion,
        event: Value,
        intended: Option<bool>,
    ) {
        self.0.push(Case {
            name: name.into(),
            version,
            event,
            intended,
        });
    }
}

fn t(s: &str) -> Text {
    Text::new(s)
}

fn rep(s: &str, n: usize) -> Text {
    Text::from(s.repeat(n))
}

fn base(version: SchemaVersion) -> AuditEvent {
    AuditEvent {
        schema_version: version,
        event_id: uuid::Uuid::from_u128(0x6f1c2a34_9b7e_4d21_8a55_0c3e9f4b7a10),
        timestamp: Timestamp::from_unix_millis(1_767_323_045_678),
        service: Service {
            name: t("charts"),
            environment: Some(t("prod")),
            version: Some(t("1.2.3")),
        },
        actor: Actor::human("u-1").org("org-1"),
        action: Action {
            kind: ActionType::Read,
            name: Some(t("read_chart")),
            phi_touched: Some(true),
            data_classification: Some(DataClassification::Phi),
        },
        resource: Resource {
            kind: t("Patient"),
            id: Some(t("p-1")),
            patient_id: Some(t("p-1")),
        },
        outcome: Outcome::SUCCESS,
        correlation: None,
        http: None,
        delegation: None,
        metadata: Metadata::new(),
        integrity: None,
    }
}

fn delegation(depth: Option<u32>) -> Delegation {
    Delegation {
        acting: ActingAgent {
            subject_id: t("agent-7"),
            subject_type: SubjectType::Agent,
            agent: AgentInfo {
                interface: AgentInterface::Mcp,
                vendor: Some(t("acme")),
                model_family: None,
                model_version: None,
                harness: None,
                harness_version: None,
            },
        },
        authorizing: AuthorizingHuman {
            subject_id: t("dr-1"),
            subject_type: SubjectType::Human,
            org_id: Some(t("org-1")),
        },
        delegation_type: DelegationType::Supervised,
        agent_session_id: t("s-1"),
        chain_depth: depth,
        parent_agent_session_id: depth.filter(|d| *d >= 2).map(|_| t("s-0")),
    }
}

fn agent_event() -> AuditEvent {
    let mut e = base(V20);
    e.actor = Actor::agent("agent-7");
    e.delegation = Some(Box::new(delegation(Some(1))));
    e
}

fn override_event() -> AuditEvent {
    let mut e = base(V20);
    e.action.kind = ActionType::Override;
    e.action.name = Some(t("cancel_agent_session"));
    e.resource = Resource {
        kind: t("AgentSession"),
        id: Some(t("s-1")),
        patient_id: None,
    };
    e
}

fn valid_corpus(c: &mut Corpus) {
    for &v in SchemaVersion::ALL {
        let bounded = v != V10;
        c.valid(format!("{v} base"), &base(v));
        let mut bare = base(v);
        bare.service.environment = None;
        bare.service.version = None;
        bare.actor = Actor::service("svc-1");
        bare.action = Action {
            kind: ActionType::Other,
            name: None,
            phi_touched: None,
            data_classification: None,
        };
        bare.resource = Resource {
            kind: t("Note"),
            id: None,
            patient_id: None,
        };
        c.valid(format!("{v} minimal"), &bare);
        for &kind in ActionType::ALL {
            if kind == ActionType::Override {
                continue;
            }
            let mut e = base(v);
            e.action.kind = kind;
            c.valid(format!("{v} action {kind}"), &e);
        }
        for &cls in DataClassification::ALL {
            let mut e = base(v);
            e.action.data_classification = Some(cls);
            e.action.phi_touched = Some(cls == DataClassification::Phi);
            c.valid(format!("{v} classification {cls}"), &e);
        }
        let mut e = base(v);
        e.outcome = Outcome::failure("Timeout", "upstream timed out");
        c.valid(format!("{v} failure"), &e);
        e.outcome = Outcome::failure("Timeout", "");
        c.valid(format!("{v} failure empty message"), &e);
        if v != V10 {
            e.outcome = Outcome::denied("RoleDenied");
            c.valid(format!("{v} denied"), &e);
            e.outcome = Outcome::denied("CrossOrg").with_message("owner org differs");
            c.valid(format!("{v} denied with message"), &e);
            let mut e = base(v);
            e.actor = Actor::human("u-1").org("org-1").owner_org("org-2");
            c.valid(format!("{v} owner org"), &e);
        }
        // Correlation.
        for (i, corr) in [
            Correlation {
                request_id: Some(t("r-1")),
                ..Correlation::default()
            },
            Correlation {
                trace_id: Some(t("t-1")),
                ..Correlation::default()
            },
            Correlation {
                session_id: Some(t("s-1")),
                ..Correlation::default()
            },
            Correlation {
                request_id: Some(t("r")),
                trace_id: Some(t("t")),
                session_id: Some(t("s")),
            },
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = base(v);
            e.correlation = Some(corr);
            c.valid(format!("{v} correlation {i}"), &e);
        }
        // HTTP.
        for &m in HttpMethod::ALL {
            for (code, ip) in [
                (100u16, "10.0.0.1"),
                (599, "2001:db8::1"),
                (200, "::ffff:192.168.1.1"),
            ] {
                let mut e = base(v);
                e.http = Some(Http {
                    method: Some(m),
                    route_template: Some(t("/patients/{id}")),
                    status_code: Some(code),
                    client_ip: Some(t(ip)),
                    user_agent: Some(t("curl/8")),
                });
                c.valid(format!("{v} http {m} {code} {ip}"), &e);
            }
        }
        let mut e = base(v);
        e.http = Some(Http::default());
        c.valid(format!("{v} empty http"), &e);
        // Integrity.
        for &alg in HashAlg::ALL {
            for (ev, prev) in [(false, false), (true, false), (true, true)] {
                let mut e = base(v);
                e.integrity = Some(Integrity {
                    event_hash: ev.then(|| rep("a", 64)),
                    prev_event_hash: prev.then(|| rep("b", 128)),
                    hash_alg: Some(alg),
                });
                c.valid(format!("{v} integrity {alg} {ev} {prev}"), &e);
            }
        }
        // Metadata of every scalar kind, and 20 keys.
        let mut e = base(v);
        e.metadata.insert("null", Option::<u32>::None);
        e.metadata.insert("true", true);
        e.metadata.insert("false", false);
        e.metadata.insert("int", 42i32);
        e.metadata.insert("neg", i64::MIN);
        e.metadata.insert("u64", u64::MAX);
        e.metadata.insert("float", 0.1f64);
        e.metadata.insert("tiny", 1e-7f64);
        e.metadata.insert("huge", 1e300f64);
        e.metadata.insert("whole", 3.0f64);
        e.metadata.insert("str", "treatment");
        e.metadata.insert("empty", "");
        e.metadata.insert("unicode", "naïve 日本語 😀");
        e.metadata.insert("char", 'é');
        c.valid(format!("{v} metadata scalars"), &e);
        let mut e = base(v);
        for i in 0..20 {
            e.metadata.insert(format!("k{i}"), i);
        }
        c.valid(format!("{v} metadata 20 keys"), &e);
        // Unicode at the length bounds (characters, not bytes).
        let mut e = base(v);
        e.service = Service {
            name: rep("é", 128),
            environment: Some(rep("環", 64)),
            version: Some(rep("😀", 64)),
        };
        e.actor = Actor::human(rep("😀", 256))
            .org(rep("ü", 128))
            .roles(vec![rep("ß", 64); 25]);
        if bounded {
            e.actor.owner_org_id = Some(rep("ø", 128));
        }
        e.action.name = Some(rep("名", 128));
        e.resource = Resource {
            kind: rep("Ж", 128),
            id: Some(rep("ç", 256)),
            patient_id: Some(rep("😀", 256)),
        };
        e.outcome = Outcome::failure(rep("É", 128), rep("語", 500));
        e.correlation = Some(Correlation {
            request_id: Some(rep("ñ", 256)),
            trace_id: Some(rep("ñ", 256)),
            session_id: Some(rep("ñ", 256)),
        });
        e.http = Some(Http {
            method: Some(HttpMethod::Get),
            route_template: Some(rep("ü", 512)),
            status_code: Some(404),
            client_ip: Some(t("::1")),
            user_agent: Some(rep("ü", 512)),
        });
        e.integrity = Some(Integrity {
            event_hash: Some(rep("é", 256)),
            prev_event_hash: Some(rep("é", 256)),
            hash_alg: Some(HashAlg::Sha256),
        });
        c.valid(format!("{v} unicode at bounds"), &e);
        // Timestamps.
        for ms in [0i64, 951_782_400_000, 253_402_300_799_999, 1] {
            let mut e = base(v);
            e.timestamp = Timestamp::from_unix_millis(ms);
            c.valid(format!("{v} timestamp {ms}"), &e);
        }
        // Roles.
        let mut e = base(v);
        e.actor = Actor::human("u").roles(Vec::<Text>::new());
        c.valid(format!("{v} empty roles"), &e);
    }
    // 2.0 only: agents, delegation, OVERRIDE.
    c.valid("2.0 agent", &agent_event());
    for &iface in AgentInterface::ALL {
        for &dt in DelegationType::ALL {
            let mut e = agent_event();
            if let Some(d) = e.delegation.as_mut() {
                d.acting.agent.interface = iface;
                d.delegation_type = dt;
            }
            c.valid(format!("2.0 agent {iface} {dt}"), &e);
        }
    }
    for depth in [None, Some(1), Some(2), Some(32)] {
        let mut e = agent_event();
        e.delegation = Some(Box::new(delegation(depth)));
        c.valid(format!("2.0 agent depth {depth:?}"), &e);
    }
    let mut e = agent_event();
    if let Some(d) = e.delegation.as_mut() {
        d.acting.agent = AgentInfo {
            interface: AgentInterface::UiDriving,
            vendor: Some(rep("é", 128)),
            model_family: Some(rep("é", 128)),
            model_version: Some(rep("é", 128)),
            harness: Some(rep("é", 128)),
            harness_version: Some(rep("é", 128)),
        };
        d.acting.subject_id = rep("😀", 256);
        d.authorizing.subject_id = rep("😀", 256);
        d.agent_session_id = rep("😀", 256);
        d.authorizing.org_id = None;
    }
    c.valid("2.0 agent descriptor at bounds", &e);
    let mut e = base(V20);
    e.delegation = Some(Box::new(delegation(Some(3))));
    c.valid("2.0 human actor with delegation", &e);
    c.valid("2.0 override", &override_event());
    let mut e = override_event();
    e.outcome = Outcome::denied("NotOwner");
    c.valid("2.0 override denied", &e);
}

/// `(pointer, replacement)`: `None` deletes the member.
type Edit = (&'static str, Option<Value>);

fn apply(mut v: Value, edits: &[Edit]) -> Value {
    for (pointer, new) in edits {
        let Some((parent, key)) = pointer.rsplit_once('/') else {
            continue;
        };
        let Some(parent) = v.pointer_mut(parent) else {
            panic!("no parent for {pointer}");
        };
        match parent {
            Value::Object(m) => match new {
                Some(n) => {
                    m.insert(key.to_owned(), n.clone());
                }
                None => {
                    m.remove(key);
                }
            },
            Value::Array(a) => {
                let i: usize = key.parse().expect("index");
                match new {
                    Some(n) => a[i] = n.clone(),
                    None => {
                        a.remove(i);
                    }
                }
            }
            _ => panic!("scalar parent for {pointer}"),
        }
    }
    v
}

fn s(n: usize) -> Value {
    Value::String("é".repeat(n))
}

fn json_of(e: &AuditEvent) -> Value {
    serde_json::to_value(e).expect("serializes")
}

fn invalid_corpus(c: &mut Corpus) {
    let common: Vec<(&str, Vec<Edit>)> = vec![
        ("missing schema_version", vec![("/schema_version", None)]),
        ("missing event_id", vec![("/event_id", None)]),
        ("missing timestamp", vec![("/timestamp", None)]),
        ("missing service", vec![("/service", None)]),
        ("missing actor", vec![("/actor", None)]),
        ("missing action", vec![("/action", None)]),
        ("missing resource", vec![("/resource", None)]),
        ("missing outcome", vec![("/outcome", None)]),
        ("unknown root member", vec![("/extra", Some(json!(1)))]),
        (
            "schema_version number",
            vec![("/schema_version", Some(json!(1.1)))],
        ),
        (
            "schema_version 3.0",
            vec![("/schema_version", Some(json!("3.0")))],
        ),
        ("event_id number", vec![("/event_id", Some(json!(1234)))]),
        ("timestamp number", vec![("/timestamp", Some(json!(0)))]),
        ("service string", vec![("/service", Some(json!("svc")))]),
        ("service.name missing", vec![("/service/name", None)]),
        (
            "service.name empty",
            vec![("/service/name", Some(json!("")))],
        ),
        (
            "service unknown",
            vec![("/service/region", Some(json!("eu")))],
        ),
        (
            "service.environment number",
            vec![("/service/environment", Some(json!(1)))],
        ),
        (
            "actor.subject_id missing",
            vec![("/actor/subject_id", None)],
        ),
        (
            "actor.subject_id empty",
            vec![("/actor/subject_id", Some(json!("")))],
        ),
        (
            "actor.subject_type bad",
            vec![("/actor/subject_type", Some(json!("robot")))],
        ),
        (
            "actor.subject_type missing",
            vec![("/actor/subject_type", None)],
        ),
        ("actor unknown", vec![("/actor/email", Some(json!("x")))]),
        (
            "actor.roles string",
            vec![("/actor/roles", Some(json!("admin")))],
        ),
        (
            "actor.roles item number",
            vec![("/actor/roles", Some(json!(["a", 3])))],
        ),
        (
            "actor.org_id number",
            vec![("/actor/org_id", Some(json!(7)))],
        ),
        ("action.type missing", vec![("/action/type", None)]),
        (
            "action.type lowercase",
            vec![("/action/type", Some(json!("read")))],
        ),
        (
            "action.phi_touched string",
            vec![("/action/phi_touched", Some(json!("yes")))],
        ),
        (
            "action.data_classification bad",
            vec![("/action/data_classification", Some(json!("SECRET")))],
        ),
        ("action unknown", vec![("/action/reason", Some(json!("x")))]),
        ("resource.type missing", vec![("/resource/type", None)]),
        (
            "resource.type empty",
            vec![("/resource/type", Some(json!("")))],
        ),
        (
            "resource unknown",
            vec![("/resource/name", Some(json!("x")))],
        ),
        ("outcome.status missing", vec![("/outcome/status", None)]),
        (
            "outcome.status bad",
            vec![("/outcome/status", Some(json!("OK")))],
        ),
        ("outcome unknown", vec![("/outcome/code", Some(json!(1)))]),
        (
            "correlation string",
            vec![("/correlation", Some(json!("r")))],
        ),
        (
            "correlation unknown",
            vec![("/correlation", Some(json!({"span_id": "x"})))],
        ),
        ("http array", vec![("/http", Some(json!([])))]),
        (
            "http unknown",
            vec![("/http", Some(json!({"path": "/p/1"})))],
        ),
        (
            "http.status_code string",
            vec![("/http", Some(json!({"status_code": "200"})))],
        ),
        (
            "http.status_code fraction",
            vec![("/http", Some(json!({"status_code": 200.5})))],
        ),
        (
            "http.status_code bool",
            vec![("/http", Some(json!({"status_code": true})))],
        ),
        (
            "integrity unknown",
            vec![("/integrity", Some(json!({"sig": "x"})))],
        ),
        (
            "integrity.event_hash number",
            vec![("/integrity", Some(json!({"event_hash": 1})))],
        ),
        ("metadata array", vec![("/metadata", Some(json!([1])))]),
        ("root array of event", vec![]),
    ];
    let bounded: Vec<(&str, Vec<Edit>)> = vec![
        (
            "event_id not uuid",
            vec![(
                "/event_id",
                Some(json!("6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a1g")),
            )],
        ),
        (
            "event_id 35",
            vec![(
                "/event_id",
                Some(json!("6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a1")),
            )],
        ),
        (
            "event_id no hyphens",
            vec![("/event_id", Some(json!("6f1c2a349b7e4d218a550c3e9f4b7a10")))],
        ),
        ("service.name 129", vec![("/service/name", Some(s(129)))]),
        (
            "service.environment 65",
            vec![("/service/environment", Some(s(65)))],
        ),
        (
            "service.version 65",
            vec![("/service/version", Some(s(65)))],
        ),
        (
            "actor.subject_id 257",
            vec![("/actor/subject_id", Some(s(257)))],
        ),
        (
            "actor.org_id empty",
            vec![("/actor/org_id", Some(json!("")))],
        ),
        ("actor.org_id 129", vec![("/actor/org_id", Some(s(129)))]),
        (
            "actor.owner_org_id empty",
            vec![("/actor/owner_org_id", Some(json!("")))],
        ),
        (
            "actor.owner_org_id 129",
            vec![("/actor/owner_org_id", Some(s(129)))],
        ),
        (
            "actor.roles 26",
            vec![("/actor/roles", Some(json!(vec!["r"; 26])))],
        ),
        (
            "actor.roles item empty",
            vec![("/actor/roles", Some(json!(["a", ""])))],
        ),
        (
            "actor.roles item 65",
            vec![("/actor/roles", Some(json!([s(65)])))],
        ),
        ("action.name 129", vec![("/action/name", Some(s(129)))]),
        ("resource.type 129", vec![("/resource/type", Some(s(129)))]),
        ("resource.id empty", vec![("/resource/id", Some(json!("")))]),
        ("resource.id 257", vec![("/resource/id", Some(s(257)))]),
        (
            "resource.patient_id empty",
            vec![("/resource/patient_id", Some(json!("")))],
        ),
        (
            "resource.patient_id 257",
            vec![("/resource/patient_id", Some(s(257)))],
        ),
        ("correlation empty", vec![("/correlation", Some(json!({})))]),
        (
            "correlation.request_id empty",
            vec![("/correlation", Some(json!({"request_id": ""})))],
        ),
        (
            "correlation.trace_id 257",
            vec![("/correlation", Some(json!({"trace_id": s(257)})))],
        ),
        (
            "correlation.session_id 257",
            vec![("/correlation", Some(json!({"session_id": s(257)})))],
        ),
        (
            "http.method lowercase",
            vec![("/http", Some(json!({"method": "get"})))],
        ),
        (
            "http.method unknown",
            vec![("/http", Some(json!({"method": "TRACE"})))],
        ),
        (
            "http.status_code 99",
            vec![("/http", Some(json!({"status_code": 99})))],
        ),
        (
            "http.status_code 600",
            vec![("/http", Some(json!({"status_code": 600})))],
        ),
        (
            "http.route_template 513",
            vec![("/http", Some(json!({"route_template": s(513)})))],
        ),
        (
            "http.user_agent 513",
            vec![("/http", Some(json!({"user_agent": s(513)})))],
        ),
        (
            "http.client_ip hostname",
            vec![("/http", Some(json!({"client_ip": "localhost"})))],
        ),
        (
            "outcome.error_type empty",
            vec![(
                "/outcome",
                Some(json!({"status": "SUCCESS", "error_type": ""})),
            )],
        ),
        (
            "outcome.error_type 129",
            vec![(
                "/outcome",
                Some(json!({"status": "SUCCESS", "error_type": s(129)})),
            )],
        ),
        (
            "outcome.error_message 501",
            vec![(
                "/outcome",
                Some(json!({"status": "SUCCESS", "error_message": s(501)})),
            )],
        ),
        (
            "failure without error_type",
            vec![(
                "/outcome",
                Some(json!({"status": "FAILURE", "error_message": "m"})),
            )],
        ),
        (
            "failure without error_message",
            vec![(
                "/outcome",
                Some(json!({"status": "FAILURE", "error_type": "E"})),
            )],
        ),
        (
            "denied without error_type",
            vec![("/outcome", Some(json!({"status": "DENIED"})))],
        ),
        (
            "integrity.hash_alg md5",
            vec![("/integrity", Some(json!({"hash_alg": "md5"})))],
        ),
        (
            "integrity.event_hash empty",
            vec![(
                "/integrity",
                Some(json!({"event_hash": "", "hash_alg": "sha256"})),
            )],
        ),
        (
            "integrity.event_hash 257",
            vec![(
                "/integrity",
                Some(json!({"event_hash": s(257), "hash_alg": "sha256"})),
            )],
        ),
        (
            "integrity event_hash without alg",
            vec![("/integrity", Some(json!({"event_hash": "ab"})))],
        ),
        (
            "integrity prev without event_hash",
            vec![(
                "/integrity",
                Some(json!({"prev_event_hash": "ab", "hash_alg": "sha256"})),
            )],
        ),
        (
            "integrity prev without alg",
            vec![(
                "/integrity",
                Some(json!({"prev_event_hash": "ab", "event_hash": "cd"})),
            )],
        ),
        (
            "metadata 21 keys",
            vec![(
                "/metadata",
                Some(Value::Object(
                    (0..21).map(|i| (format!("k{i}"), json!(i))).collect(),
                )),
            )],
        ),
        (
            "metadata nested object",
            vec![("/metadata", Some(json!({"a": {"b": 1}})))],
        ),
        (
            "metadata array value",
            vec![("/metadata", Some(json!({"a": [1]})))],
        ),
    ];
    for &v in SchemaVersion::ALL {
        let good = json_of(&base(v));
        for (name, edits) in &common {
            let event = if edits.is_empty() {
                json!([good.clone()])
            } else {
                apply(good.clone(), edits)
            };
            c.invalid(format!("{v} {name}"), v, event);
        }
        for (name, edits) in &bounded {
            let event = apply(good.clone(), edits);
            if v == V10 {
                // 1.0 has none of these rules: let the reference decide.
                c.push(format!("{v} (1.1 rule) {name}"), v, event);
            } else {
                c.invalid(format!("{v} {name}"), v, event);
            }
        }
        // Another version's const.
        let other = if v == V20 { "1.1" } else { "2.0" };
        c.invalid(
            format!("{v} wrong const"),
            v,
            apply(good.clone(), &[("/schema_version", Some(json!(other)))]),
        );
    }
    // Version-specific enums and members.
    let denied = json!({"status": "DENIED", "error_type": "RoleDenied"});
    c.invalid(
        "1.0 denied",
        V10,
        apply(json_of(&base(V10)), &[("/outcome", Some(denied.clone()))]),
    );
    c.invalid(
        "1.0 owner_org_id",
        V10,
        apply(
            json_of(&base(V10)),
            &[("/actor/owner_org_id", Some(json!("o")))],
        ),
    );
    c.invalid(
        "1.0 event_id 15",
        V10,
        apply(
            json_of(&base(V10)),
            &[("/event_id", Some(json!("123456789012345")))],
        ),
    );
    c.push(
        "1.0 event_id 16 non-uuid",
        V10,
        apply(
            json_of(&base(V10)),
            &[("/event_id", Some(json!("not-a-uuid-16ch!")))],
        ),
    );
    for v in [V10, V11] {
        let good = json_of(&base(v));
        c.invalid(
            format!("{v} override"),
            v,
            apply(good.clone(), &[("/action/type", Some(json!("OVERRIDE")))]),
        );
        c.invalid(
            format!("{v} agent"),
            v,
            apply(
                good.clone(),
                &[("/actor/subject_type", Some(json!("agent")))],
            ),
        );
        c.invalid(
            format!("{v} delegation"),
            v,
            apply(
                good.clone(),
                &[(
                    "/delegation",
                    Some(serde_json::to_value(delegation(Some(1))).expect("ser")),
                )],
            ),
        );
        c.invalid(format!("{v} 2.0 event as {v}"), v, json_of(&agent_event()));
    }
    // 2.0 conditionals and delegation block.
    let agent = json_of(&agent_event());
    let d = |edits: &[Edit]| apply(agent.clone(), edits);
    let two: Vec<(&str, Value)> = vec![
        ("agent without delegation", d(&[("/delegation", None)])),
        (
            "delegation missing acting",
            d(&[("/delegation/acting", None)]),
        ),
        (
            "delegation missing authorizing",
            d(&[("/delegation/authorizing", None)]),
        ),
        (
            "delegation missing type",
            d(&[("/delegation/delegation_type", None)]),
        ),
        (
            "delegation missing session",
            d(&[("/delegation/agent_session_id", None)]),
        ),
        (
            "delegation unknown",
            d(&[("/delegation/prompt", Some(json!("x")))]),
        ),
        ("delegation string", d(&[("/delegation", Some(json!("x")))])),
        (
            "acting human",
            d(&[("/delegation/acting/subject_type", Some(json!("human")))]),
        ),
        (
            "acting missing agent",
            d(&[("/delegation/acting/agent", None)]),
        ),
        (
            "acting unknown",
            d(&[("/delegation/acting/x", Some(json!(1)))]),
        ),
        (
            "acting subject_id 257",
            d(&[("/delegation/acting/subject_id", Some(s(257)))]),
        ),
        (
            "agent interface bad",
            d(&[(
                "/delegation/acting/agent/interface",
                Some(json!("telepathy")),
            )]),
        ),
        (
            "agent interface missing",
            d(&[("/delegation/acting/agent/interface", None)]),
        ),
        (
            "agent unknown key",
            d(&[("/delegation/acting/agent/system_prompt", Some(json!("x")))]),
        ),
        (
            "agent vendor empty",
            d(&[("/delegation/acting/agent/vendor", Some(json!("")))]),
        ),
        (
            "agent vendor 129",
            d(&[("/delegation/acting/agent/vendor", Some(s(129)))]),
        ),
        (
            "agent harness number",
            d(&[("/delegation/acting/agent/harness", Some(json!(1)))]),
        ),
        (
            "authorizing agent",
            d(&[("/delegation/authorizing/subject_type", Some(json!("agent")))]),
        ),
        (
            "authorizing org empty",
            d(&[("/delegation/authorizing/org_id", Some(json!("")))]),
        ),
        (
            "authorizing unknown",
            d(&[("/delegation/authorizing/roles", Some(json!([])))]),
        ),
        (
            "delegation_type bad",
            d(&[("/delegation/delegation_type", Some(json!("manual")))]),
        ),
        (
            "session empty",
            d(&[("/delegation/agent_session_id", Some(json!("")))]),
        ),
        ("depth 0", d(&[("/delegation/chain_depth", Some(json!(0)))])),
        (
            "depth 33 with parent",
            d(&[
                ("/delegation/chain_depth", Some(json!(33))),
                ("/delegation/parent_agent_session_id", Some(json!("p"))),
            ]),
        ),
        (
            "depth 1.5",
            d(&[("/delegation/chain_depth", Some(json!(1.5)))]),
        ),
        (
            "depth string",
            d(&[("/delegation/chain_depth", Some(json!("2")))]),
        ),
        (
            "depth 2 without parent",
            d(&[("/delegation/chain_depth", Some(json!(2)))]),
        ),
        (
            "depth 2.0 without parent",
            d(&[("/delegation/chain_depth", Some(json!(2.0)))]),
        ),
        (
            "parent without depth",
            d(&[
                ("/delegation/chain_depth", None),
                ("/delegation/parent_agent_session_id", Some(json!("p"))),
            ]),
        ),
        (
            "parent with depth 1",
            d(&[("/delegation/parent_agent_session_id", Some(json!("p")))]),
        ),
        (
            "parent empty",
            d(&[
                ("/delegation/chain_depth", Some(json!(2))),
                ("/delegation/parent_agent_session_id", Some(json!(""))),
            ]),
        ),
    ];
    for (name, event) in two {
        c.invalid(format!("2.0 {name}"), V20, event);
    }
    c.push(
        "2.0 depth 2.0 with parent",
        V20,
        d(&[
            ("/delegation/chain_depth", Some(json!(2.0))),
            ("/delegation/parent_agent_session_id", Some(json!("p"))),
        ]),
    );
    c.push(
        "2.0 depth 1.0",
        V20,
        d(&[("/delegation/chain_depth", Some(json!(1.0)))]),
    );
    let ov = json_of(&override_event());
    let o = |edits: &[Edit]| apply(ov.clone(), edits);
    for (name, event) in [
        (
            "override service actor",
            o(&[("/actor/subject_type", Some(json!("service")))]),
        ),
        (
            "override agent actor",
            apply(
                ov.clone(),
                &[
                    ("/actor/subject_type", Some(json!("agent"))),
                    (
                        "/delegation",
                        Some(serde_json::to_value(delegation(None)).expect("ser")),
                    ),
                ],
            ),
        ),
        (
            "override patient resource",
            o(&[("/resource/type", Some(json!("Patient")))]),
        ),
        ("override without resource id", o(&[("/resource/id", None)])),
        (
            "override with delegation",
            o(&[(
                "/delegation",
                Some(serde_json::to_value(delegation(None)).expect("ser")),
            )]),
        ),
    ] {
        c.invalid(format!("2.0 {name}"), V20, event);
    }
}

/// Format and number edge cases: the reference decides, we must agree.
fn edge_corpus(c: &mut Corpus) {
    let timestamps = [
        "2026-01-02T03:04:05Z",
        "2026-01-02t03:04:05z",
        "2026-01-02T03:04:05.1+05:30",
        "2026-01-02T03:04:05.123456789-23:59",
        "2026-01-02T03:04:05+00:00",
        "2026-01-02T03:04:05-00:00",
        "2024-02-29T23:59:59.999Z",
        "2000-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999Z",
        "2026-01-02T03:04:05Z\n",
        "2026-01-02T03:04:05Z\n\n",
        "2026-01-02T03:04:05Z ",
        " 2026-01-02T03:04:05Z",
        "2026-01-02 03:04:05Z",
        "2026-01-02T03:04:05",
        "2026-01-02T03:04:60Z",
        "2026-06-30T23:59:60Z",
        "2026-01-02T24:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-01-02T03:04:05.Z",
        "2026-01-02T03:04:05+24:00",
        "2026-01-02T03:04:05+23:60",
        "2026-01-02T03:04:05+0100",
        "2026-01-02T03:04:05+01",
        "2026-01-02T03:04:05Zjunk",
        "２026-01-02T03:04:05Z",
        "2026-01-02T03:04:05.١Z",
        "2026-1-02T03:04:05Z",
        "20260102T030405Z",
        "2026-01-02",
        "",
    ];
    let uuids = [
        "6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10",
        "6F1C2A34-9B7E-4D21-8A55-0C3E9F4B7A10",
        "00000000-0000-0000-0000-000000000000",
        " 0000000-0000-0000-0000-000000000000",
        "0000000 -0000-0000-0000-000000000000",
        "0x000000-0000-0000-0000-000000000000",
        "0X_00000-0000-0000-0000-000000000000",
        "+0000000-0000-0000-0000-000000000000",
        "+0000000-0000-0000-0000-00000000000\u{3000}",
        "00000000-0000-0000-0000-0000000000_0",
        "00000000-0000-0000-0000-0000000000__",
        "00000000-0000-0000-0000-00000000000_",
        "_0000000-0000-0000-0000-000000000000",
        "00000000-0000-0000-0000-00000000000\u{1c}",
        "00000000-0000-0000-0000-00000000000\t",
        "00000000-0000-0000-0000-00000000000g",
        "{0000000-0000-0000-0000-00000000000}",
        "urn:uuid:00000000-0000-0000-0000-00",
        "0000000000000-0000-0000-000000000000",
        "6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10-",
        "6f1c2a34-9b7e-4d21-8a55_0c3e9f4b7a10",
    ];
    let ips = [
        "192.168.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "256.0.0.1",
        "010.0.0.1",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1.2.3.4\n",
        "::",
        "::1",
        "1::",
        "2001:db8::8a2e:370:7334",
        "2001:DB8::1",
        "::ffff:10.0.0.1",
        "::ffff:010.0.0.1",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "0000:0000:0000:0000:0000:0000:0000:0001",
        "00000::1",
        "1::2::3",
        ":1::",
        ":::",
        "fe80::1%eth0",
        "fe80::1%1",
        "fe80::1%",
        "localhost",
        "",
        "١.2.3.4",
    ];
    let numbers = [
        json!(200),
        json!(200.0),
        json!(2e2),
        json!(-0.0),
        json!(100.0),
        json!(599.0),
        json!(599.5),
        json!(99.999),
        json!(1e300),
        json!(u64::MAX),
        json!(i64::MIN),
    ];
    for &v in SchemaVersion::ALL {
        let good = json_of(&base(v));
        for ts in timestamps {
            c.push(
                format!("{v} timestamp {ts:?}"),
                v,
                apply(good.clone(), &[("/timestamp", Some(json!(ts)))]),
            );
        }
        for id in uuids {
            c.push(
                format!("{v} event_id {id:?}"),
                v,
                apply(good.clone(), &[("/event_id", Some(json!(id)))]),
            );
        }
        for ip in ips {
            c.push(
                format!("{v} client_ip {ip:?}"),
                v,
                apply(good.clone(), &[("/http", Some(json!({ "client_ip": ip })))]),
            );
        }
        for n in &numbers {
            c.push(
                format!("{v} status_code {n}"),
                v,
                apply(
                    good.clone(),
                    &[("/http", Some(json!({ "status_code": n })))],
                ),
            );
        }
    }
    let agent = json_of(&agent_event());
    for n in numbers
        .iter()
        .chain(&[json!(2), json!(2.0), json!(32.0), json!(1.0), json!(33.0)])
    {
        for parent in [false, true] {
            let mut edits: Vec<Edit> = vec![("/delegation/chain_depth", Some(n.clone()))];
            if parent {
                edits.push(("/delegation/parent_agent_session_id", Some(json!("p"))));
            }
            c.push(
                format!("2.0 chain_depth {n} parent {parent}"),
                V20,
                apply(agent.clone(), &edits),
            );
        }
    }
}

/// What the library emitted for hostile strings in every slot, through every
/// path and target version: a deterministic sample of the property test's
/// inputs. Every event must be valid.
fn emitted_corpus(c: &mut Corpus) {
    use proptest::strategy::{Strategy, ValueTree};
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for n in 0..16 {
        let inputs = hostile::inputs()
            .new_tree(&mut runner)
            .expect("inputs")
            .current();
        for (k, e) in hostile::run(&inputs).events.iter().enumerate() {
            c.push_intended(
                format!("emitted {n}.{k} ({})", e.path),
                e.version,
                hostile::as_value(e),
                Some(true),
            );
        }
    }
}

fn run_reference(python: &str, corpus: &Corpus) -> Vec<(bool, Vec<String>)> {
    let dir = std::env::temp_dir();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path: PathBuf = dir.join(format!(
        "phi-audit-conformance-{}-{stamp}.jsonl",
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&path).expect("create corpus file");
        for (id, case) in corpus.0.iter().enumerate() {
            let line = json!({"id": id, "version": case.version.as_str(), "event": case.event});
            writeln!(f, "{line}").expect("write corpus");
        }
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/validate.py");
    let out = Command::new(python).arg(script).arg(&path).output();
    let _ = std::fs::remove_file(&path);
    let out = out.expect("run the reference python");
    assert!(
        out.status.success(),
        "reference script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 verdicts");
    let mut verdicts = vec![None; corpus.0.len()];
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("verdict is JSON");
        let id = v["id"].as_u64().expect("id") as usize;
        let errors = v["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e.as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        verdicts[id] = Some((v["valid"].as_bool().expect("valid"), errors));
    }
    verdicts
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.unwrap_or_else(|| panic!("no verdict for case {i}")))
        .collect()
}

#[test]
fn agrees_with_the_reference_implementation() {
    let mut corpus = Corpus(Vec::new());
    valid_corpus(&mut corpus);
    invalid_corpus(&mut corpus);
    edge_corpus(&mut corpus);
    emitted_corpus(&mut corpus);

    // Our own verdicts first: the corpus must mean what it says.
    let mut ours = Vec::with_capacity(corpus.0.len());
    let mut misintended = Vec::new();
    for case in &corpus.0 {
        let verdict = validate_value(&case.event, Some(case.version));
        if verdict.is_ok() {
            // With the version taken from the event, the verdict is the same.
            assert_eq!(
                validate_value(&case.event, None),
                Ok(case.version),
                "{}",
                case.name
            );
        }
        if let Some(want) = case.intended {
            if verdict.is_ok() != want {
                misintended.push(format!(
                    "{}: ours {:?}",
                    case.name,
                    verdict.as_ref().err().map(|e| e.to_string())
                ));
            }
        }
        ours.push(verdict);
    }
    assert!(
        misintended.is_empty(),
        "cases not as intended:\n{}",
        misintended.join("\n")
    );
    let valid = ours.iter().filter(|v| v.is_ok()).count();
    println!(
        "corpus: {} cases, {valid} valid, {} invalid",
        corpus.0.len(),
        corpus.0.len() - valid
    );

    let Some(python) = phi_audit_test_env::server(
        phi_audit_test_env::REF_PYTHON,
        "reference_conformance: the cross-check with the reference",
        "python with bh-audit-logger[jsonschema,cli]==2.0.0 installed",
    ) else {
        return;
    };
    let theirs = run_reference(&python, &corpus);
    let mut disagreements = Vec::new();
    for ((case, our), (their_ok, their_errors)) in corpus.0.iter().zip(&ours).zip(&theirs) {
        if our.is_ok() != *their_ok {
            disagreements.push(format!(
                "- {} [{}]\n    ours:   {}\n    theirs: {}",
                case.name,
                case.version,
                match our {
                    Ok(_) => "valid".to_owned(),
                    Err(e) => e.to_string().replace('\n', "; "),
                },
                if *their_ok {
                    "valid".to_owned()
                } else {
                    their_errors.join("; ")
                },
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree with the reference:\n{}",
        disagreements.len(),
        corpus.0.len(),
        disagreements.join("\n")
    );
    println!("all {} cases agree with the reference", corpus.0.len());
}
