//! TEMPORARY shim for `audit_runtime::schema::validate_value`, which another
//! branch is adding. It has that function's exact signature and checks only
//! the structural core of bh-audit-schema (required blocks and fields, their
//! JSON types, enum values, no unknown top-level fields); the real validator
//! replaces it at merge: delete this file and change `schema_shim::` to
//! `audit_runtime::schema::` in main.rs.
//!
//! Messages never quote event values (they may be PHI).

use audit_runtime::{ActionType, OutcomeStatus, SchemaVersion, SubjectType};
use serde_json::Value;

/// One schema violation.
pub struct Violation {
    /// JSON path of the offending value (`$.actor.subject_id`).
    pub path: String,
    /// What is wrong, without the value.
    pub message: String,
}

/// All violations of one event.
#[derive(Default)]
pub struct ValidationErrors(Vec<Violation>);

impl ValidationErrors {
    /// The violations in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Violation> {
        self.0.iter()
    }
    fn push(&mut self, path: &str, message: &str) {
        self.0.push(Violation {
            path: path.to_owned(),
            message: message.to_owned(),
        });
    }
}

const TOP: &[&str] = &[
    "schema_version",
    "event_id",
    "timestamp",
    "service",
    "actor",
    "action",
    "resource",
    "outcome",
    "correlation",
    "http",
    "delegation",
    "metadata",
    "integrity",
];

fn non_empty_str(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::String(s)) if !s.is_empty())
}

/// Validates `value` against `version` (default: its own `schema_version`).
pub fn validate_value(
    value: &Value,
    version: Option<SchemaVersion>,
) -> Result<SchemaVersion, ValidationErrors> {
    let mut errs = ValidationErrors::default();
    let Some(obj) = value.as_object() else {
        errs.push("$", "an event must be a JSON object");
        return Err(errs);
    };
    let declared = obj
        .get("schema_version")
        .and_then(Value::as_str)
        .and_then(SchemaVersion::from_str);
    let target = version.or(declared).unwrap_or_default();
    if declared.is_none() {
        errs.push(
            "$.schema_version",
            "required: one of \"1.0\", \"1.1\", \"2.0\"",
        );
    }
    for k in obj.keys() {
        if !TOP.contains(&k.as_str()) {
            errs.push("$", "unknown top-level property");
        }
    }
    for req in ["event_id", "timestamp"] {
        if !non_empty_str(obj.get(req)) {
            errs.push(&format!("$.{req}"), "required non-empty string");
        }
    }
    let mut need = |block: &str, fields: &[&str]| match obj.get(block) {
        Some(Value::Object(m)) => {
            for f in fields {
                if !non_empty_str(m.get(*f)) {
                    errs.push(&format!("$.{block}.{f}"), "required non-empty string");
                }
            }
        }
        _ => errs.push(&format!("$.{block}"), "required object"),
    };
    need("service", &["name"]);
    need("actor", &["subject_id", "subject_type"]);
    need("action", &["type"]);
    need("resource", &["type"]);
    need("outcome", &["status"]);
    let s = |p: &str| value.pointer(p).and_then(Value::as_str);
    if let Some(t) = s("/actor/subject_type") {
        match SubjectType::from_str(t) {
            None => errs.push("$.actor.subject_type", "not one of human, service, agent"),
            Some(SubjectType::Agent) if target != SchemaVersion::V2_0 => {
                errs.push("$.actor.subject_type", "agent requires schema 2.0")
            }
            _ => {}
        }
    }
    if let Some(t) = s("/action/type") {
        match ActionType::from_str(t) {
            None => errs.push("$.action.type", "not a known action type"),
            Some(ActionType::Override) if target != SchemaVersion::V2_0 => {
                errs.push("$.action.type", "OVERRIDE requires schema 2.0")
            }
            _ => {}
        }
    }
    if let Some(t) = s("/outcome/status") {
        match OutcomeStatus::from_str(t) {
            None => errs.push("$.outcome.status", "not SUCCESS, FAILURE or DENIED"),
            Some(OutcomeStatus::Denied) if target == SchemaVersion::V1_0 => {
                errs.push("$.outcome.status", "DENIED requires schema 1.1 or later")
            }
            Some(OutcomeStatus::Failure) if s("/outcome/error_type").is_none() => {
                errs.push("$.outcome.error_type", "required when status is FAILURE")
            }
            _ => {}
        }
    }
    if let Some(m) = obj.get("metadata") {
        match m.as_object() {
            None => errs.push("$.metadata", "must be an object"),
            Some(m) => {
                for (k, v) in m {
                    if v.is_object() || v.is_array() {
                        let _ = k;
                        errs.push("$.metadata", "values must be scalars");
                        break;
                    }
                }
            }
        }
    }
    if errs.0.is_empty() {
        Ok(target)
    } else {
        Err(errs)
    }
}
