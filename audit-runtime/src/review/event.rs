//! The fields of an event the review reads, parsed from a JSON line without
//! building a tree: strings are borrowed from the line where they hold no
//! escapes, and every other member is skipped unread.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use uuid::Uuid;

use crate::model::event::{ActionType, DataClassification, OutcomeStatus};
use crate::report::ReportRow;
use crate::time::timestamp::Timestamp;

/// One event as the review and the HTML report see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewEvent<'a> {
    /// `event_id`, when it is a UUID.
    pub event_id: Option<Uuid>,
    /// `timestamp`.
    pub timestamp: Timestamp,
    /// `actor.subject_id`.
    pub actor: Cow<'a, str>,
    /// `actor.org_id`.
    pub actor_org: Option<Cow<'a, str>>,
    /// `actor.owner_org_id`.
    pub owner_org: Option<Cow<'a, str>>,
    /// `action.type`.
    pub action: ActionType,
    /// `action.phi_touched` is true or `action.data_classification` is PHI.
    pub phi: bool,
    /// `resource.type`.
    pub resource_type: Cow<'a, str>,
    /// `resource.id`.
    pub resource_id: Option<Cow<'a, str>>,
    /// `resource.patient_id`.
    pub patient: Option<Cow<'a, str>>,
    /// `outcome.status`.
    pub outcome: OutcomeStatus,
    /// `outcome.error_type`.
    pub error_type: Option<Cow<'a, str>>,
    /// `http.client_ip`.
    pub client_ip: Option<Cow<'a, str>>,
    /// The event has an `integrity` member (it belongs to a ledger).
    pub chained: bool,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    actor: RawActor<'a>,
    action: RawAction,
    #[serde(borrow)]
    resource: RawResource<'a>,
    #[serde(borrow)]
    outcome: RawOutcome<'a>,
    #[serde(borrow, default)]
    http: Option<RawHttp<'a>>,
    #[serde(default)]
    integrity: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawActor<'a> {
    #[serde(borrow)]
    subject_id: Cow<'a, str>,
    #[serde(borrow, default)]
    org_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    owner_org_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawAction {
    #[serde(rename = "type")]
    kind: ActionType,
    #[serde(default)]
    phi_touched: Option<bool>,
    #[serde(default)]
    data_classification: Option<DataClassification>,
}

#[derive(Deserialize)]
struct RawResource<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    patient_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawOutcome<'a> {
    status: OutcomeStatus,
    #[serde(borrow, default)]
    error_type: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawHttp<'a> {
    #[serde(borrow, default)]
    client_ip: Option<Cow<'a, str>>,
}

/// Why a line is not an event the review can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAnEvent {
    /// Not JSON, or JSON without the fields every event has (`timestamp`,
    /// `actor.subject_id`, `action.type`, `resource.type`, `outcome.status`)
    /// in their types, or with a member twice.
    Shape,
    /// `timestamp` is not RFC 3339.
    Timestamp,
}

impl<'a> ReviewEvent<'a> {
    /// Parses one JSON line (already known to be UTF-8): a one-pass scan
    /// for the common case, serde (borrowing, every other member skipped)
    /// for the rest and for errors.
    pub fn parse(line: &'a str) -> Result<ReviewEvent<'a>, NotAnEvent> {
        match super::fast::parse(line) {
            Some(e) => Ok(e),
            None => ReviewEvent::parse_serde(line),
        }
    }

    /// [`ReviewEvent::parse`] through serde only.
    pub(crate) fn parse_serde(line: &'a str) -> Result<ReviewEvent<'a>, NotAnEvent> {
        let raw: Raw<'a> = serde_json::from_str(line).map_err(|_| NotAnEvent::Shape)?;
        let timestamp =
            Timestamp::parse_rfc3339(&raw.timestamp).map_err(|_| NotAnEvent::Timestamp)?;
        let nonempty = |s: Option<Cow<'a, str>>| s.filter(|s| !s.is_empty());
        Ok(ReviewEvent {
            event_id: raw.event_id.and_then(|s| Uuid::try_parse(&s).ok()),
            timestamp,
            actor: raw.actor.subject_id,
            actor_org: nonempty(raw.actor.org_id),
            owner_org: nonempty(raw.actor.owner_org_id),
            action: raw.action.kind,
            phi: raw.action.phi_touched == Some(true)
                || raw.action.data_classification == Some(DataClassification::Phi),
            resource_type: raw.resource.kind,
            resource_id: nonempty(raw.resource.id),
            patient: nonempty(raw.resource.patient_id),
            outcome: raw.outcome.status,
            error_type: nonempty(raw.outcome.error_type),
            client_ip: raw.http.and_then(|h| nonempty(h.client_ip)),
            chained: raw.integrity.is_some(),
        })
    }

    /// The event of a report row (PostgreSQL). Rows whose action or outcome
    /// is not one of the schema's values are `None`.
    pub fn from_row(r: &'a ReportRow) -> Option<ReviewEvent<'a>> {
        let b = |s: &'a Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(Cow::Borrowed);
        Some(ReviewEvent {
            event_id: Some(r.event_id),
            timestamp: r.timestamp,
            actor: Cow::Borrowed(&r.actor_subject_id),
            actor_org: b(&r.actor_org_id),
            owner_org: b(&r.owner_org_id),
            action: ActionType::from_str(&r.action_type)?,
            phi: r.phi_touched == Some(true) || r.data_classification.as_deref() == Some("PHI"),
            resource_type: Cow::Borrowed(&r.resource_type),
            resource_id: b(&r.resource_id),
            patient: b(&r.patient_id),
            outcome: OutcomeStatus::from_str(&r.outcome_status)?,
            error_type: b(&r.error_type),
            client_ip: b(&r.client_ip),
            chained: false,
        })
    }

    /// True when `actor.org_id` and `actor.owner_org_id` are both set and
    /// differ.
    pub fn cross_org(&self) -> bool {
        matches!((&self.actor_org, &self.owner_org), (Some(a), Some(o)) if a != o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_and_skips() {
        let line = r#"{"schema_version":"1.1","event_id":"0b6c5c1e-7a0f-4d4e-9b1a-3c2d1e0f9a8b","timestamp":"2026-03-02T10:00:00.000Z","service":{"name":"s"},"actor":{"subject_id":"dr-a","subject_type":"human","org_id":"o1","owner_org_id":"o2"},"action":{"type":"READ","phi_touched":true},"resource":{"type":"Patient","id":"r1","patient_id":"p1"},"outcome":{"status":"DENIED","error_type":"RoleDenied"},"http":{"client_ip":"10.0.0.1"},"metadata":{"x":[1,{"y":2}]},"integrity":{"event_hash":"ab"}}"#;
        let e = ReviewEvent::parse(line).unwrap();
        assert!(matches!(e.actor, Cow::Borrowed("dr-a")));
        assert!(e.phi && e.chained && e.cross_org());
        assert_eq!(e.outcome, OutcomeStatus::Denied);
        assert_eq!(e.client_ip.as_deref(), Some("10.0.0.1"));
        assert!(e.event_id.is_some());
        let escaped = line.replace("dr-a", "dr\\u002da");
        assert_eq!(ReviewEvent::parse(&escaped).unwrap().actor, "dr-a");
    }

    #[test]
    fn rejects_what_is_not_an_event() {
        let ok = r#"{"timestamp":"2026-03-02T10:00:00Z","actor":{"subject_id":"a"},"action":{"type":"READ"},"resource":{"type":"P"},"outcome":{"status":"SUCCESS"}}"#;
        assert!(ReviewEvent::parse(ok).is_ok());
        for bad in [
            "",
            "[]",
            "{}",
            &ok.replace("READ", "read"),
            &ok.replace("\"a\"", "1"),
            &ok.replace(
                "{\"timestamp",
                "{\"actor\":{\"subject_id\":\"b\"},\"timestamp",
            ),
        ] {
            assert_eq!(ReviewEvent::parse(bad), Err(NotAnEvent::Shape), "{bad}");
        }
        assert_eq!(
            ReviewEvent::parse(&ok.replace("2026-03-02T10:00:00Z", "yesterday")),
            Err(NotAnEvent::Timestamp)
        );
    }
}
