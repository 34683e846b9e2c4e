//! Access review: the queries a HIPAA access review asks of an audit trail,
//! over a JSONL file (here, streaming, constant memory) or a PostgreSQL table
//! (`PostgresStore` in the `postgres` feature), and their rendering as text,
//! JSON or CSV.
//!
//! ```
//! use phi_audit::report::{self, Format, Query};
//! # let jsonl = "";
//! let q = Query::exports();
//! let rows = report::query_jsonl(jsonl.as_bytes(), &q).filter_map(Result::ok);
//! let mut out = Vec::new();
//! report::render(rows, Format::Csv, &mut out).unwrap();
//! assert!(String::from_utf8(out).unwrap().starts_with("event_id,timestamp"));
//! ```
//!
//! Time ranges are half-open: `since` inclusive, `until` exclusive.
//!
//! **Safe to print.** A report is the one place the trail's values are
//! shown, and they may have been written by anyone: every renderer escapes
//! control characters, bidirectional overrides, invisible format characters
//! and line breaks ([`escape_text`]) in text and CSV, and as `\uXXXX`
//! escapes in JSON ([`write_json`]), so no value can move the cursor,
//! retitle a terminal, reorder what is shown or forge a row. JSONL sources
//! are read a line at a time with the same 16 MiB cap as the verifier
//! ([`crate::integrity::verify::MAX_LINE_BYTES`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, Write};

use serde::Serialize;
use uuid::Uuid;

use crate::integrity::verify::JsonLines;
use crate::model::event::{ActionType, AuditEvent, DataClassification, OutcomeStatus};
use crate::time::timestamp::Timestamp;

/// Milliseconds in 24 hours.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A filter over audit events. Every set criterion must hold (AND); an empty
/// list means "any". Build one with a named review ([`Query::patient_access`],
/// [`Query::exports`], ...) and narrow it with the builder methods.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Query {
    /// `resource.patient_id` equals this.
    pub patient_id: Option<String>,
    /// `actor.subject_id` equals this.
    pub actor_subject_id: Option<String>,
    /// `action.type` is one of these.
    pub action_types: Vec<ActionType>,
    /// `outcome.status` is one of these.
    pub outcomes: Vec<OutcomeStatus>,
    /// `resource.type` equals this.
    pub resource_type: Option<String>,
    /// `service.name` equals this.
    pub service: Option<String>,
    /// Only events that touched PHI: `action.phi_touched == true` or
    /// `action.data_classification == "PHI"`.
    pub phi_only: bool,
    /// Only cross-organization access: both `actor.org_id` and
    /// `actor.owner_org_id` set and different.
    pub cross_org_only: bool,
    /// Events at or after this instant.
    pub since: Option<Timestamp>,
    /// Events strictly before this instant.
    pub until: Option<Timestamp>,
    /// At most this many rows.
    pub limit: Option<u64>,
}

impl Query {
    /// Every event.
    pub fn all() -> Query {
        Query::default()
    }

    /// All access to patient `patient_id` in `[since, until)`.
    pub fn patient_access(
        patient_id: impl Into<String>,
        since: Timestamp,
        until: Timestamp,
    ) -> Query {
        Query {
            patient_id: Some(patient_id.into()),
            since: Some(since),
            until: Some(until),
            ..Query::default()
        }
    }

    /// All actions by actor `subject_id` in `[since, until)`.
    pub fn actor_activity(
        subject_id: impl Into<String>,
        since: Timestamp,
        until: Timestamp,
    ) -> Query {
        Query {
            actor_subject_id: Some(subject_id.into()),
            since: Some(since),
            until: Some(until),
            ..Query::default()
        }
    }

    /// All EXPORT actions.
    pub fn exports() -> Query {
        Query::default().action(ActionType::Export)
    }

    /// All FAILURE and DENIED outcomes.
    pub fn failures_and_denials() -> Query {
        Query::default()
            .outcome(OutcomeStatus::Failure)
            .outcome(OutcomeStatus::Denied)
    }

    /// All access to resources of type `resource_type`.
    pub fn resource_type(resource_type: impl Into<String>) -> Query {
        Query {
            resource_type: Some(resource_type.into()),
            ..Query::default()
        }
    }

    /// PHI-touching actions in the 24 hours before `now` (pass
    /// `Timestamp::now()`).
    pub fn phi_last_24h(now: Timestamp) -> Query {
        Query {
            phi_only: true,
            since: Some(Timestamp::from_unix_millis(
                now.unix_millis().saturating_sub(DAY_MS),
            )),
            until: Some(Timestamp::from_unix_millis(
                now.unix_millis().saturating_add(1),
            )),
            ..Query::default()
        }
    }

    /// Cross-organization access: the actor's org differs from the
    /// resource owner's org.
    pub fn cross_org() -> Query {
        Query {
            cross_org_only: true,
            ..Query::default()
        }
    }

    /// Narrows to events of patient `patient_id`.
    pub fn patient(mut self, patient_id: impl Into<String>) -> Query {
        self.patient_id = Some(patient_id.into());
        self
    }

    /// Narrows to events of actor `subject_id`.
    pub fn actor(mut self, subject_id: impl Into<String>) -> Query {
        self.actor_subject_id = Some(subject_id.into());
        self
    }

    /// Also requires `action.type == action` (several calls: any of them).
    pub fn action(mut self, action: ActionType) -> Query {
        self.action_types.push(action);
        self
    }

    /// Also requires `outcome.status == status` (several calls: any of them).
    pub fn outcome(mut self, status: OutcomeStatus) -> Query {
        self.outcomes.push(status);
        self
    }

    /// Only events of service `name`.
    pub fn service(mut self, name: impl Into<String>) -> Query {
        self.service = Some(name.into());
        self
    }

    /// Only events at or after `t`.
    pub fn since(mut self, t: Timestamp) -> Query {
        self.since = Some(t);
        self
    }

    /// Only events strictly before `t`.
    pub fn until(mut self, t: Timestamp) -> Query {
        self.until = Some(t);
        self
    }

    /// At most `n` rows.
    pub fn limit(mut self, n: u64) -> Query {
        self.limit = Some(n);
        self
    }

    /// True when `event` satisfies every criterion (the limit aside).
    pub fn matches(&self, e: &AuditEvent) -> bool {
        fn eq(want: &Option<String>, have: Option<&str>) -> bool {
            match want {
                None => true,
                Some(w) => have == Some(w.as_str()),
            }
        }
        eq(&self.patient_id, e.resource.patient_id.as_deref())
            && eq(&self.actor_subject_id, Some(&e.actor.subject_id))
            && eq(&self.resource_type, Some(&e.resource.kind))
            && eq(&self.service, Some(&e.service.name))
            && (self.action_types.is_empty() || self.action_types.contains(&e.action.kind))
            && (self.outcomes.is_empty() || self.outcomes.contains(&e.outcome.status))
            && (!self.phi_only || touches_phi(e))
            && (!self.cross_org_only || is_cross_org(e))
            && self.since.is_none_or(|s| e.timestamp >= s)
            && self.until.is_none_or(|u| e.timestamp < u)
    }
}

fn touches_phi(e: &AuditEvent) -> bool {
    e.action.phi_touched == Some(true)
        || e.action.data_classification == Some(DataClassification::Phi)
}

fn is_cross_org(e: &AuditEvent) -> bool {
    match (&e.actor.org_id, &e.actor.owner_org_id) {
        (Some(a), Some(o)) => a != o,
        _ => false,
    }
}

/// Failed logins (LOGIN with outcome FAILURE or DENIED) grouped by
/// `http.client_ip`, keeping the IPs with more than `threshold` failures.
/// Events without a client IP are not counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedLoginsByIp {
    /// Keep IPs with strictly more failures than this.
    pub threshold: u64,
    /// Events at or after this instant.
    pub since: Option<Timestamp>,
    /// Events strictly before this instant.
    pub until: Option<Timestamp>,
}

impl FailedLoginsByIp {
    /// IPs with more than `threshold` failed logins, over all time.
    pub fn over(threshold: u64) -> FailedLoginsByIp {
        FailedLoginsByIp {
            threshold,
            since: None,
            until: None,
        }
    }

    /// True when `e` is a failed login in the time range with a client IP.
    pub fn counts(&self, e: &AuditEvent) -> bool {
        e.action.kind == ActionType::Login
            && matches!(
                e.outcome.status,
                OutcomeStatus::Failure | OutcomeStatus::Denied
            )
            && e.http.as_ref().is_some_and(|h| h.client_ip.is_some())
            && self.since.is_none_or(|s| e.timestamp >= s)
            && self.until.is_none_or(|u| e.timestamp < u)
    }
}

/// One grouped count: a key (here a client IP) and how many events had it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupCount {
    /// The group key.
    pub key: String,
    /// Events in the group.
    pub count: u64,
}

/// One event as an access review shows it: the query dimensions, not the
/// metadata. Rows hold identifiers as recorded; the trail holds no PHI
/// values by construction, but treat reports as sensitive all the same.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportRow {
    /// `event_id`.
    pub event_id: Uuid,
    /// `timestamp`.
    pub timestamp: Timestamp,
    /// `service.name`.
    pub service: String,
    /// `actor.subject_id`.
    pub actor_subject_id: String,
    /// `actor.subject_type`.
    pub actor_subject_type: String,
    /// `actor.org_id`.
    pub actor_org_id: Option<String>,
    /// `actor.owner_org_id`.
    pub owner_org_id: Option<String>,
    /// `action.type`.
    pub action_type: String,
    /// `action.name`.
    pub action_name: Option<String>,
    /// `action.phi_touched`.
    pub phi_touched: Option<bool>,
    /// `action.data_classification`.
    pub data_classification: Option<String>,
    /// `resource.type`.
    pub resource_type: String,
    /// `resource.id`.
    pub resource_id: Option<String>,
    /// `resource.patient_id`.
    pub patient_id: Option<String>,
    /// `outcome.status`.
    pub outcome_status: String,
    /// `outcome.error_type`.
    pub error_type: Option<String>,
    /// `correlation.request_id`.
    pub request_id: Option<String>,
    /// `http.client_ip`.
    pub client_ip: Option<String>,
}

/// Column names, in [`ReportRow`] field order (the CSV header).
pub const COLUMNS: &[&str] = &[
    "event_id",
    "timestamp",
    "service",
    "actor_subject_id",
    "actor_subject_type",
    "actor_org_id",
    "owner_org_id",
    "action_type",
    "action_name",
    "phi_touched",
    "data_classification",
    "resource_type",
    "resource_id",
    "patient_id",
    "outcome_status",
    "error_type",
    "request_id",
    "client_ip",
];

impl ReportRow {
    /// The row of `e`.
    pub fn from_event(e: &AuditEvent) -> ReportRow {
        let s = |t: &Option<crate::util::text::Text>| t.as_ref().map(|t| t.as_str().to_owned());
        ReportRow {
            event_id: e.event_id,
            timestamp: e.timestamp,
            service: e.service.name.as_str().to_owned(),
            actor_subject_id: e.actor.subject_id.as_str().to_owned(),
            actor_subject_type: e.actor.subject_type.as_str().to_owned(),
            actor_org_id: s(&e.actor.org_id),
            owner_org_id: s(&e.actor.owner_org_id),
            action_type: e.action.kind.as_str().to_owned(),
            action_name: s(&e.action.name),
            phi_touched: e.action.phi_touched,
            data_classification: e.action.data_classification.map(|c| c.as_str().to_owned()),
            resource_type: e.resource.kind.as_str().to_owned(),
            resource_id: s(&e.resource.id),
            patient_id: s(&e.resource.patient_id),
            outcome_status: e.outcome.status.as_str().to_owned(),
            error_type: s(&e.outcome.error_type),
            request_id: e.correlation.as_ref().and_then(|c| s(&c.request_id)),
            client_ip: e.http.as_ref().and_then(|h| s(&h.client_ip)),
        }
    }

    fn cells(&self) -> [Option<String>; 18] {
        [
            Some(self.event_id.to_string()),
            Some(self.timestamp.to_string()),
            Some(self.service.clone()),
            Some(self.actor_subject_id.clone()),
            Some(self.actor_subject_type.clone()),
            self.actor_org_id.clone(),
            self.owner_org_id.clone(),
            Some(self.action_type.clone()),
            self.action_name.clone(),
            self.phi_touched.map(|b| b.to_string()),
            self.data_classification.clone(),
            Some(self.resource_type.clone()),
            self.resource_id.clone(),
            self.patient_id.clone(),
            Some(self.outcome_status.clone()),
            self.error_type.clone(),
            self.request_id.clone(),
            self.client_ip.clone(),
        ]
    }
}

/// Why a line of a JSONL source is not an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The line is not valid UTF-8.
    NotUtf8,
    /// The line is longer than [`crate::integrity::verify::MAX_LINE_BYTES`].
    TooLong,
    /// The last line is unterminated and does not parse (a write cut off).
    Truncated,
    /// The line is not JSON of an audit event.
    NotAnEvent,
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidReason::NotUtf8 => "not valid UTF-8",
            InvalidReason::TooLong => "longer than the 16 MiB line limit",
            InvalidReason::Truncated => "an unterminated last line (a write cut off)",
            InvalidReason::NotAnEvent => "not JSON of an audit event (bh-audit-schema)",
        })
    }
}

/// Why a report could not be produced. Never contains event content.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReportError {
    /// Reading the source or writing the output failed.
    Io(io::Error),
    /// Line `line` (1-based) of a JSONL source is not an audit event; fix or
    /// remove that line, or skip such errors.
    InvalidLine {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: InvalidReason,
    },
    /// The database refused or failed a query (SQLSTATE code and kind only).
    Database(String),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Io(e) => write!(f, "report I/O error: {e}"),
            ReportError::InvalidLine { line, reason } => {
                write!(f, "line {line} is not a valid audit event: {reason}")
            }
            ReportError::Database(m) => write!(f, "report query failed: {m}"),
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ReportError {
    fn from(e: io::Error) -> Self {
        ReportError::Io(e)
    }
}

/// Streams the events of a JSONL source that match `query`, in file order,
/// reading one line at a time (memory bounded by the line cap). Blank lines
/// are skipped; a line that is not an event (not UTF-8, too long, not JSON
/// of an event) yields [`ReportError::InvalidLine`] and the scan goes on.
/// Stops after `query.limit` rows.
pub fn query_jsonl<R: BufRead>(reader: R, query: &Query) -> JsonlQuery<'_, R> {
    JsonlQuery {
        lines: JsonLines::new(reader),
        query,
        emitted: 0,
        events: 0,
        done: false,
    }
}

/// Iterator returned by [`query_jsonl`].
#[derive(Debug)]
pub struct JsonlQuery<'q, R> {
    lines: JsonLines<R>,
    query: &'q Query,
    emitted: u64,
    events: u64,
    done: bool,
}

impl<R> JsonlQuery<'_, R> {
    /// Lines read so far that were events (matching the query or not).
    pub fn events_read(&self) -> u64 {
        self.events
    }
}

impl<R: BufRead> Iterator for JsonlQuery<'_, R> {
    type Item = Result<ReportRow, ReportError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if self.query.limit.is_some_and(|l| self.emitted >= l) {
                self.done = true;
                break;
            }
            match next_event(&mut self.lines) {
                Ok(None) => self.done = true,
                Ok(Some(e)) => {
                    self.events += 1;
                    if self.query.matches(&e) {
                        self.emitted += 1;
                        return Some(Ok(ReportRow::from_event(&e)));
                    }
                }
                Err(e @ ReportError::InvalidLine { .. }) => return Some(Err(e)),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// Next non-blank line parsed as an event; `Ok(None)` at the end.
fn next_event<R: BufRead>(lines: &mut JsonLines<R>) -> Result<Option<AuditEvent>, ReportError> {
    loop {
        let Some(l) = lines.next_line()? else {
            return Ok(None);
        };
        let invalid = |reason| {
            Err(ReportError::InvalidLine {
                line: l.number,
                reason,
            })
        };
        if l.too_long {
            return invalid(InvalidReason::TooLong);
        }
        let t = l.bytes.trim_ascii();
        if t.is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(t) else {
            return invalid(InvalidReason::NotUtf8);
        };
        return match serde_json::from_str::<AuditEvent>(text) {
            Ok(e) => Ok(Some(e)),
            Err(_) if !l.terminated => invalid(InvalidReason::Truncated),
            Err(_) => invalid(InvalidReason::NotAnEvent),
        };
    }
}

/// Counts failed logins per client IP over a JSONL source, keeping IPs over
/// the threshold, sorted by count (descending) then IP. Memory grows with the
/// number of distinct IPs only. Invalid lines are counted in the second value
/// and otherwise skipped.
pub fn failed_logins_jsonl<R: BufRead>(
    reader: R,
    q: &FailedLoginsByIp,
) -> Result<(Vec<GroupCount>, u64), ReportError> {
    failed_logins_jsonl_with(reader, q, |_, _| {}).map(|s| (s.groups, s.invalid))
}

/// What [`failed_logins_jsonl_with`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailedLoginsScan {
    /// IPs over the threshold, by count (descending) then IP.
    pub groups: Vec<GroupCount>,
    /// Lines that were events.
    pub events: u64,
    /// Lines that were not events (skipped).
    pub invalid: u64,
}

/// [`failed_logins_jsonl`], calling `on_invalid(line, reason)` for each line
/// that is not an event, and counting the events read.
pub fn failed_logins_jsonl_with<R: BufRead>(
    reader: R,
    q: &FailedLoginsByIp,
    mut on_invalid: impl FnMut(u64, InvalidReason),
) -> Result<FailedLoginsScan, ReportError> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut lines = JsonLines::new(reader);
    let mut invalid = 0u64;
    let mut events = 0u64;
    loop {
        match next_event(&mut lines) {
            Ok(None) => break,
            Ok(Some(e)) => {
                events += 1;
                if q.counts(&e) {
                    if let Some(ip) = e.http.as_ref().and_then(|h| h.client_ip.as_ref()) {
                        *counts.entry(ip.as_str().to_owned()).or_insert(0) += 1;
                    }
                }
            }
            Err(ReportError::InvalidLine { line, reason }) => {
                invalid += 1;
                on_invalid(line, reason);
            }
            Err(e) => return Err(e),
        }
    }
    let mut groups: Vec<GroupCount> = counts
        .into_iter()
        .filter(|(_, c)| *c > q.threshold)
        .map(|(key, count)| GroupCount { key, count })
        .collect();
    sort_groups(&mut groups);
    Ok(FailedLoginsScan {
        groups,
        events,
        invalid,
    })
}

pub(crate) fn sort_groups(groups: &mut [GroupCount]) {
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
}

/// Output format of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// One human-readable line per row.
    #[default]
    Text,
    /// A JSON array of objects (fields as in [`ReportRow`] / [`GroupCount`]).
    Json,
    /// RFC 4180 CSV with a header row. Cells that a spreadsheet would run as
    /// a formula (starting with `=`, `+`, `-`, `@`, tab or CR) are prefixed
    /// with `'`.
    Csv,
}

impl Format {
    /// Parses `text`, `json` or `csv` (case-insensitive).
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "txt" => Some(Format::Text),
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// Writes `rows` to `out` in `format`, streaming (one row in memory at a
/// time). Returns the number of rows written. Values are escaped as the
/// [module docs](self) say: nothing a row holds reaches `out` raw.
pub fn render<I, W>(rows: I, format: Format, out: &mut W) -> io::Result<u64>
where
    I: IntoIterator<Item = ReportRow>,
    W: Write + ?Sized,
{
    let mut n = 0u64;
    match format {
        Format::Csv => {
            write_csv_record(out, COLUMNS.iter().map(|c| Some(*c)))?;
            for r in rows {
                let cells = r.cells();
                write_csv_record(out, cells.iter().map(|c| c.as_deref()))?;
                n += 1;
            }
        }
        Format::Json => {
            out.write_all(b"[")?;
            for r in rows {
                out.write_all(if n == 0 { b"\n" } else { b",\n" })?;
                write_json(&mut *out, &r, false)?;
                n += 1;
            }
            out.write_all(if n == 0 { b"]\n" } else { b"\n]\n" })?;
        }
        Format::Text => {
            for r in rows {
                let e = |s: &str| escape_text(s).into_owned();
                let opt = |o: &Option<String>| o.as_deref().map_or_else(|| "-".into(), e);
                write!(
                    out,
                    "{}  {:<7} {:<8} actor={} ({}, org={}) resource={}/{} patient={} owner_org={}",
                    r.timestamp,
                    e(&r.action_type),
                    e(&r.outcome_status),
                    e(&r.actor_subject_id),
                    e(&r.actor_subject_type),
                    opt(&r.actor_org_id),
                    e(&r.resource_type),
                    opt(&r.resource_id),
                    opt(&r.patient_id),
                    opt(&r.owner_org_id),
                )?;
                if let Some(t) = &r.error_type {
                    write!(out, " error={}", e(t))?;
                }
                if let Some(ip) = &r.client_ip {
                    write!(out, " ip={}", e(ip))?;
                }
                writeln!(out, " service={} event={}", e(&r.service), r.event_id)?;
                n += 1;
            }
            writeln!(out, "{n} event(s)")?;
        }
    }
    Ok(n)
}

/// Writes grouped counts (`key`, `count`) to `out` in `format`; `key_name`
/// names the key column (e.g. `client_ip`). Keys are escaped like
/// [`render`]'s values.
pub fn render_groups<W: Write + ?Sized>(
    groups: &[GroupCount],
    key_name: &str,
    format: Format,
    out: &mut W,
) -> io::Result<()> {
    match format {
        Format::Csv => {
            write_csv_record(out, [Some(key_name), Some("count")].into_iter())?;
            for g in groups {
                let c = g.count.to_string();
                write_csv_record(out, [Some(g.key.as_str()), Some(c.as_str())].into_iter())?;
            }
        }
        Format::Json => {
            let v: Vec<serde_json::Value> = groups
                .iter()
                .map(|g| serde_json::json!({ key_name: g.key, "count": g.count }))
                .collect();
            write_json(&mut *out, &v, true)?;
            out.write_all(b"\n")?;
        }
        Format::Text => {
            let keys: Vec<Cow<'_, str>> = groups.iter().map(|g| escape_text(&g.key)).collect();
            let w = keys
                .iter()
                .map(|k| k.chars().count())
                .max()
                .unwrap_or(0)
                .max(key_name.len());
            writeln!(out, "{:<w$}  count", escape_text(key_name))?;
            for (g, k) in groups.iter().zip(&keys) {
                writeln!(out, "{k:<w$}  {}", g.count)?;
            }
        }
    }
    Ok(())
}

/// True for characters that must not reach a terminal or a text report
/// raw: C0 and C1 controls and DEL (escape sequences, line breaks, NUL),
/// bidirectional controls (which reorder what is shown), zero-width and
/// other invisible format characters, line and paragraph separators, the
/// byte-order mark and tag characters.
pub fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{ad}'
        | '\u{61c}'
        | '\u{180e}'
        | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}'
        | '\u{e0000}'..='\u{e007f}')
}

/// `s` with every character [`needs_escape`] names written as `\n`, `\r`,
/// `\t` or `\u{hex}`, and `\` as `\\` (so the escaped form is
/// unambiguous). Borrowed when nothing needed escaping.
///
/// ```
/// use phi_audit::report::escape_text;
/// assert_eq!(escape_text("plain"), "plain");
/// assert_eq!(escape_text("a\x1b]0;x\x07\n\u{202e}b"), "a\\u{1b}]0;x\\u{7}\\n\\u{202e}b");
/// ```
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || needs_escape(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Writes `value` as JSON (pretty or compact) with every character
/// [`needs_escape`] names written as a `\uXXXX` escape, so the output is
/// still the same JSON and safe to show on a terminal.
pub fn write_json<W: Write + ?Sized, T: Serialize + ?Sized>(
    out: &mut W,
    value: &T,
    pretty: bool,
) -> io::Result<()> {
    let mut out = out;
    if pretty {
        let mut ser = serde_json::Serializer::with_formatter(
            &mut out,
            SafeJson(serde_json::ser::PrettyFormatter::new()),
        );
        value.serialize(&mut ser).map_err(io::Error::other)
    } else {
        let mut ser = serde_json::Serializer::with_formatter(
            &mut out,
            SafeJson(serde_json::ser::CompactFormatter),
        );
        value.serialize(&mut ser).map_err(io::Error::other)
    }
}

/// A JSON formatter that also escapes what [`needs_escape`] names (serde
/// escapes C0 controls, `"` and `\` itself).
struct SafeJson<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for SafeJson<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if needs_escape(c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{:04x}", u)?;
                }
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// One CSV record (RFC 4180): cells holding `,` or `"` are quoted; cells a
/// spreadsheet would run as a formula get a `'` first (and are quoted);
/// characters [`needs_escape`] names, line breaks included, are escaped as
/// in [`escape_text`] and their cells quoted, so a value never splits a row
/// or reaches a terminal raw.
fn write_csv_record<'a, W: Write + ?Sized>(
    out: &mut W,
    cells: impl Iterator<Item = Option<&'a str>>,
) -> io::Result<()> {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        let Some(raw) = cell else { continue };
        let c = escape_text(raw);
        let formula = raw.starts_with(['=', '+', '-', '@', '\t', '\r']);
        let quote = formula || matches!(c, Cow::Owned(_)) || c.contains([',', '"']);
        if quote {
            out.write_all(b"\"")?;
            if formula {
                out.write_all(b"'")?;
            }
            out.write_all(c.replace('"', "\"\"").as_bytes())?;
            out.write_all(b"\"")?;
        } else {
            out.write_all(c.as_bytes())?;
        }
    }
    out.write_all(b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut out = Vec::new();
        write_csv_record(
            &mut out,
            [Some("a,b"), None, Some("=1+1"), Some("q\"x"), Some("plain")].into_iter(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a,b\",,\"'=1+1\",\"q\"\"x\",plain\r\n"
        );
    }

    #[test]
    fn format_parse() {
        assert_eq!(Format::parse("CSV"), Some(Format::Csv));
        assert_eq!(Format::parse("json"), Some(Format::Json));
        assert_eq!(Format::parse("text"), Some(Format::Text));
        assert_eq!(Format::parse("xml"), None);
    }
}
