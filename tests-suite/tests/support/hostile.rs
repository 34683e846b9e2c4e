//! Runtime strings of every kind, in every slot an event has, through every
//! way the library emits: an audited call (the call-record JSON path of the
//! JSON lines sink, and the event path of other sinks), `EventBuilder`, and
//! `Dispatch::emit` of a hand-built event, for each target schema version.
//!
//! Shared by `tests/every_slot.rs` (a property test, checked by the crate's
//! validator) and `tests/reference_conformance.rs` (a sample, checked by the
//! Python reference's validator).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use phi_audit::{
    audited, with_dispatch, ActingAgent, ActionType, Actor, AgentInfo, AgentInterface,
    AuditContext, AuditError, AuthorizingHuman, Config, Correlation, Delegation, DelegationType,
    Dispatch, ErrorMessages, EventBuilder, Http, HttpMethod, JsonlFileSink, MemorySink, Outcome,
    SchemaVersion, Service, StatsSnapshot, SubjectType,
};
use proptest::prelude::*;

/// One character of a hostile string: what JSON escapes, what readers
/// choke on, multi-byte characters, and anything at all.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => Just('a'),
        1 => Just('\0'),
        1 => Just('\n'),
        1 => Just('\t'),
        1 => Just('"'),
        1 => Just('\\'),
        1 => Just('\u{7f}'),
        1 => Just('\u{85}'),
        1 => Just('\u{9f}'),
        1 => Just('\u{61c}'),
        1 => Just('\u{200f}'),
        1 => Just('\u{202e}'),
        1 => Just('\u{2028}'),
        1 => Just('\u{2066}'),
        1 => Just('\u{feff}'),
        1 => Just('é'),
        1 => Just('🩺'),
        2 => any::<char>(),
    ]
}

/// A string for any slot: empty, plain, hostile, or long (past every
/// bound: 64, 128, 256, 500, 512 characters), with hostile characters
/// anywhere, also where a cut falls.
pub fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        2 => "[a-z0-9-]{1,24}",
        4 => prop::collection::vec(hostile_char(), 1..40).prop_map(String::from_iter),
        2 => (hostile_char(), 60usize..700, hostile_char(), 0usize..700).prop_map(
            |(fill, n, odd, at)| {
                let mut s: Vec<char> = std::iter::repeat_n(fill, n).collect();
                s.insert(at.min(n), odd);
                String::from_iter(s)
            }
        ),
    ]
}

/// Every runtime string an event can carry.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub id: String,
    pub patient: String,
    pub actor_id: String,
    pub actor_org: String,
    pub actor_owner: String,
    pub roles: Vec<String>,
    pub ctx_actor_id: String,
    pub ctx_org: String,
    pub ctx_roles: Vec<String>,
    pub request_id: String,
    pub trace_id: String,
    pub session_id: String,
    pub route: String,
    pub user_agent: String,
    pub client_ip: String,
    pub status: u16,
    pub meta_key: String,
    pub meta_value: String,
    pub record_value: String,
    pub error_type: String,
    pub error_message: String,
    pub display: String,
    pub resource_type: String,
    pub action_name: String,
    pub service: [String; 3],
    pub agent: [String; 5],
    pub depth: Option<u32>,
    /// 0 SUCCESS, 1 FAILURE, 2 DENIED.
    pub mode: u8,
}

pub fn inputs() -> impl Strategy<Value = Inputs> {
    let ids = (hostile(), hostile(), hostile(), hostile(), hostile());
    let roles = (
        prop::collection::vec(hostile(), 0..30),
        hostile(),
        hostile(),
        prop::collection::vec(hostile(), 0..4),
    );
    let corr = (hostile(), hostile(), hostile());
    let http = (
        hostile(),
        hostile(),
        prop_oneof![
            hostile(),
            Just("10.0.0.1".to_string()),
            Just("::1".to_string())
        ],
        prop_oneof![any::<u16>(), 100u16..600],
    );
    let meta = (hostile(), hostile(), hostile());
    let outcome = (hostile(), hostile(), hostile(), 0u8..3);
    let names = (hostile(), hostile(), [hostile(), hostile(), hostile()]);
    let agent = (
        [hostile(), hostile(), hostile(), hostile(), hostile()],
        prop::option::of(0u32..40),
    );
    (ids, roles, corr, http, meta, outcome, names, agent).prop_map(
        |(
            (id, patient, actor_id, actor_org, actor_owner),
            (roles, ctx_actor_id, ctx_org, ctx_roles),
            (request_id, trace_id, session_id),
            (route, user_agent, client_ip, status),
            (meta_key, meta_value, record_value),
            (error_type, error_message, display, mode),
            (resource_type, action_name, service),
            (agent, depth),
        )| Inputs {
            id,
            patient,
            actor_id,
            actor_org,
            actor_owner,
            roles,
            ctx_actor_id,
            ctx_org,
            ctx_roles,
            request_id,
            trace_id,
            session_id,
            route,
            user_agent,
            client_ip,
            status,
            meta_key,
            meta_value,
            record_value,
            error_type,
            error_message,
            display,
            resource_type,
            action_name,
            service,
            agent,
            depth,
            mode,
        },
    )
}

/// An error whose audit outcome is made of runtime strings.
#[derive(Debug)]
pub struct HostileError(pub Outcome);

impl AuditError for HostileError {
    fn audit_outcome(&self) -> Outcome {
        self.0.clone()
    }
}

/// An error whose `Display` is a runtime string (read when the config opts in).
#[derive(Debug)]
pub struct DisplayError(pub String);

impl std::fmt::Display for DisplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn outcome(i: &Inputs) -> Outcome {
    match i.mode {
        0 => Outcome::SUCCESS,
        1 => Outcome::failure(i.error_type.as_str(), i.error_message.as_str()),
        _ => Outcome::denied(i.error_type.as_str()).with_message(i.error_message.as_str()),
    }
}

fn actor(i: &Inputs) -> Actor {
    Actor::human(i.actor_id.as_str())
        .org(i.actor_org.as_str())
        .owner_org(i.actor_owner.as_str())
        .roles(i.roles.iter().map(String::as_str))
}

/// Every slot of a call, from the attribute, `record!` and the outcome.
#[audited(action = "READ", resource = "Patient", id = i.id.as_str(), patient = i.patient.as_str(),
          actor = attribute_actor, metadata(m = i.meta_value.as_str()))]
fn audited_call(i: &Inputs, attribute_actor: Option<Actor>) -> Result<u8, HostileError> {
    phi_audit::record!(r = i.record_value.as_str());
    match i.mode {
        0 => Ok(1),
        _ => Err(HostileError(outcome(i))),
    }
}

/// An error's `Display` as the message (the config opts in).
#[audited(action = "UPDATE", resource = "Note", id = i.id.as_str())]
fn display_call(i: &Inputs) -> Result<u8, DisplayError> {
    Err(DisplayError(i.display.clone()))
}

fn context(i: &Inputs) -> AuditContext {
    AuditContext::new()
        .actor(
            Actor::human(i.ctx_actor_id.as_str())
                .org(i.ctx_org.as_str())
                .roles(i.ctx_roles.iter().map(String::as_str)),
        )
        .request_id(i.request_id.as_str())
        .trace_id(i.trace_id.as_str())
        .session_id(i.session_id.as_str())
        .http(Http {
            method: Some(HttpMethod::Post),
            route_template: Some(i.route.as_str().into()),
            status_code: Some(i.status),
            client_ip: Some(i.client_ip.as_str().into()),
            user_agent: Some(i.user_agent.as_str().into()),
        })
}

fn delegation(i: &Inputs) -> Delegation {
    Delegation {
        acting: ActingAgent {
            subject_id: i.agent[0].as_str().into(),
            subject_type: SubjectType::Agent,
            agent: AgentInfo {
                interface: AgentInterface::Mcp,
                vendor: Some(i.agent[1].as_str().into()),
                model_family: Some(i.agent[2].as_str().into()),
                model_version: None,
                harness: None,
                harness_version: None,
            },
        },
        authorizing: AuthorizingHuman {
            subject_id: i.agent[3].as_str().into(),
            subject_type: SubjectType::Human,
            org_id: Some(i.agent[2].as_str().into()),
        },
        delegation_type: DelegationType::Supervised,
        agent_session_id: i.agent[4].as_str().into(),
        chain_depth: i.depth,
        parent_agent_session_id: Some(i.agent[0].as_str().into()),
    }
}

/// Every manual event of `i` through `d`: with the builder (with and
/// without the context), and hand-built with the service's strings.
fn manual_events(d: &Dispatch, i: &Inputs, v2: bool) {
    let builder = || {
        let mut b = EventBuilder::new(ActionType::Export, i.resource_type.as_str())
            .name(i.action_name.as_str())
            .resource_id(i.id.as_str())
            .patient_id(i.patient.as_str())
            .actor(actor(i))
            .outcome(outcome(i))
            .metadata(i.meta_key.as_str(), i.meta_value.as_str())
            .metadata("plain", i.record_value.as_str());
        if v2 {
            b = b
                .actor(Actor::agent(i.agent[0].as_str()))
                .delegation(delegation(i));
        }
        b
    };
    builder().emit_to(d);
    context(i).in_scope(|| builder().emit_to(d));
    builder()
        .correlation(Correlation {
            request_id: Some(i.request_id.as_str().into()),
            trace_id: Some(i.trace_id.as_str().into()),
            session_id: Some(i.session_id.as_str().into()),
        })
        .emit_to(d);
    let mut e = builder().build(d);
    e.service = Service {
        name: i.service[0].as_str().into(),
        environment: Some(i.service[1].as_str().into()),
        version: Some(i.service[2].as_str().into()),
    };
    d.emit(e);
}

/// Every way of emitting, through `d`.
fn emit_all(d: &Dispatch, i: &Inputs, v2: bool) {
    let attribute_actor = Some(actor(i));
    with_dispatch(d, || {
        let _ = audited_call(i, None);
        let _ = audited_call(i, attribute_actor.clone());
        context(i).in_scope(|| {
            let _ = audited_call(i, None);
            let _ = audited_call(i, attribute_actor.clone());
            let _ = display_call(i);
        });
        let _ = display_call(i);
    });
    manual_events(d, i, v2);
}

/// One emitted event, as the JSON a sink wrote, with the version its
/// dispatcher targets.
pub struct Emitted {
    pub version: SchemaVersion,
    pub json: String,
    /// Which pipeline wrote it.
    pub path: &'static str,
}

/// The events of every pipeline, and each pipeline's stats.
pub struct Run {
    pub events: Vec<Emitted>,
    pub stats: Vec<(&'static str, StatsSnapshot)>,
}

fn scratch_file() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "phi-audit-every-slot-{}-{}.jsonl",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Emits `i` every way, into a JSON lines file (schema 1.1: call records
/// written from their pre-rendered parts) and into memory for each target
/// version (1.0, 1.1, 2.0), and with a config made of `i`'s service strings
/// when one builds.
pub fn run(i: &Inputs) -> Run {
    let mut events = Vec::new();
    let mut stats = Vec::new();
    let config = |v: SchemaVersion| {
        Config::new("svc")
            .target(v)
            .error_messages(ErrorMessages::Sanitized)
            .build()
            .unwrap()
    };

    let path = scratch_file();
    {
        let d = Dispatch::new(
            config(SchemaVersion::V1_1),
            JsonlFileSink::open(&path).unwrap(),
        );
        emit_all(&d, i, false);
        d.flush().unwrap();
        stats.push(("jsonl records", d.stats()));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    for line in text.lines() {
        events.push(Emitted {
            version: SchemaVersion::V1_1,
            json: line.to_string(),
            path: "jsonl",
        });
    }

    let mut memory = |d: Dispatch, sink: MemorySink, v: SchemaVersion, path: &'static str| {
        emit_all(&d, i, v == SchemaVersion::V2_0);
        stats.push((path, d.stats()));
        for e in sink.take() {
            events.push(Emitted {
                version: v,
                json: e.to_json(),
                path,
            });
        }
    };
    for (v, name) in [
        (SchemaVersion::V1_0, "memory 1.0"),
        (SchemaVersion::V1_1, "memory 1.1"),
        (SchemaVersion::V2_0, "memory 2.0"),
    ] {
        let sink = MemorySink::new();
        memory(Dispatch::new(config(v), sink.clone()), sink, v, name);
    }
    let built = Config::new(i.service[0].as_str())
        .environment(i.service[1].as_str())
        .version(i.service[2].as_str())
        .default_actor(Actor::service(i.actor_id.as_str()).org(i.actor_org.as_str()))
        .build();
    if let Ok(cfg) = built {
        let sink = MemorySink::new();
        memory(
            Dispatch::new(cfg, sink.clone()),
            sink,
            SchemaVersion::V1_1,
            "hostile config",
        );
    }
    Run { events, stats }
}

/// The same events as `serde_json` values, for validators.
pub fn as_value(e: &Emitted) -> serde_json::Value {
    serde_json::from_str(&e.json).expect("every line is JSON")
}

/// Whether `s` holds a character no event may hold.
pub fn has_bad_char(s: &str) -> bool {
    s.chars().any(|c| {
        matches!(c,
            '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}')
    })
}

/// Every string value of a JSON document, keys included.
pub fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                strings(x, out);
            }
        }
        _ => {}
    }
}
