//! Anomaly review of an audit trail (feature `review`): rules with
//! thresholds ([`Rules`], from TOML over built-in defaults) run over a
//! stream of events ([`Reviewer`]) and return [`Finding`]s, each with its
//! rule, subject (an actor id or a client IP), count, first and last event
//! time, and evidence (the events' line numbers or ids, capped).
//!
//! | rule | subject | a finding when |
//! |---|---|---|
//! | `denials` | actor | more than N `DENIED` outcomes within a sliding window |
//! | `failed_logins` | client IP | more than N `LOGIN`s with `FAILURE` or `DENIED` within a window |
//! | `exports` | actor | more than N successful `EXPORT`s in one calendar day |
//! | `off_hours` | actor | more than N PHI events outside office hours in a day |
//! | `cross_org` | actor | more than N events with `actor.org_id` ≠ `actor.owner_org_id` in a day (per owner org) |
//! | `distinct_patients` | actor | more than N distinct `resource.patient_id`s within a window |
//! | `new_patient` (opt-in) | actor | more than N patients touched for the first time in the input in a day, after a baseline |
//!
//! Overlapping windows over a threshold are one finding (its count is
//! every event of those windows); days are calendar days in
//! [`Rules::time_zone`].
//!
//! **Streaming and bounded memory.** Events are read one line at a time
//! ([`scan_jsonl`]: only the fields above are parsed, strings borrowed from
//! the line, nothing else decoded). State is bounded by the rules:
//!
//! * a window rule keeps, per subject, the newest `threshold + 1` events
//!   (about 48 bytes each): the window holds more than `threshold` events
//!   exactly when the oldest of them is within the window of the newest;
//! * a day rule keeps, per subject, today's and yesterday's counts;
//! * `distinct_patients` keeps, per actor, at most `max_tracked` patients
//!   (64-bit keyed hashes) seen within the window;
//! * `new_patient` keeps at most `max_pairs` (actor, patient) hashes;
//! * every rule tracks at most `max_subjects` subjects: past it, subjects
//!   idle for a window (or two days) are closed, then the half idle longest
//!   are dropped, and [`RuleSummary::subjects_evicted`] counts them;
//! * each finding lists at most `max_evidence` events (the rest counted)
//!   and at most [`MAX_FINDINGS`] findings are kept (the rest counted).
//!
//! With the defaults that is at most a few hundred MB on adversarial input
//! and a few MB on a real trail. Windows are exact when events arrive in
//! time order (a ledger, rotated files ordered by their first event, the
//! PostgreSQL table ordered by time); a late event is placed in order within
//! the events a window keeps.
//!
//! Rendering ([`render`]) escapes every value from the trail as the
//! reports do ([`crate::report::escape_text`], [`crate::report::write_json`]);
//! CSV cells that a spreadsheet would run as a formula are defused.

mod engine;
mod event;
mod fast;
mod render;
mod rules;
mod tz;

use std::io::{self, BufRead};

use serde::Serialize;
use uuid::Uuid;

pub use engine::{Reviewer, MAX_FINDINGS};
pub use event::{NotAnEvent, ReviewEvent};
pub use render::{render, Format};
pub use rules::{
    ClockTime, DailyRule, DistinctPatientsRule, Duration, NewPatientRule, OffHoursRule, Rules,
    RulesError, Weekday, WindowRule, DEFAULT_RULES_TOML,
};

use crate::integrity::verify::JsonLines;
use crate::report::InvalidReason;
use crate::time::timestamp::Timestamp;

/// A review rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// An actor with many DENIED outcomes in a window.
    Denials,
    /// A client IP with many failed logins in a window.
    FailedLogins,
    /// An actor with many exports in a day.
    Exports,
    /// PHI access outside office hours.
    OffHours,
    /// Cross-organization access.
    CrossOrg,
    /// An actor touching many distinct patients in a window.
    DistinctPatients,
    /// First-time patient access after a baseline (opt-in).
    NewPatient,
}

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Rule; 7] = [
        Rule::Denials,
        Rule::FailedLogins,
        Rule::Exports,
        Rule::OffHours,
        Rule::CrossOrg,
        Rule::DistinctPatients,
        Rule::NewPatient,
    ];

    /// The rule's name, as in the rules file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::Denials => "denials",
            Rule::FailedLogins => "failed_logins",
            Rule::Exports => "exports",
            Rule::OffHours => "off_hours",
            Rule::CrossOrg => "cross_org",
            Rule::DistinctPatients => "distinct_patients",
            Rule::NewPatient => "new_patient",
        }
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which event a finding refers to: its source (an index into
/// [`ReviewReport::sources`]), its 1-based line in a file, and its
/// `event_id` when it has a valid one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EvidenceRef {
    /// Index into the sources.
    pub source: u32,
    /// 1-based line number (files).
    pub line: Option<u64>,
    /// The event's id.
    pub event_id: Option<Uuid>,
}

/// One finding of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// Actor id (or client IP for `failed_logins`), as the trail holds it.
    pub subject: String,
    /// What was exceeded (and, for day rules, the day; for `cross_org`,
    /// the organizations).
    pub detail: String,
    /// Events in the finding (distinct patients for `distinct_patients`).
    pub count: u64,
    /// Time of its first event.
    pub first: Timestamp,
    /// Time of its last event.
    pub last: Timestamp,
    /// Its events, in time order, at most `max_evidence`.
    pub evidence: Vec<EvidenceRef>,
    /// Events not listed in `evidence`.
    pub evidence_omitted: u64,
}

/// How one rule went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleSummary {
    /// The rule.
    pub rule: Rule,
    /// Whether it ran.
    pub enabled: bool,
    /// Its findings (kept or not).
    pub findings: u64,
    /// Subjects dropped to stay within `max_subjects` (0: exact).
    pub subjects_evicted: u64,
    /// Anything else that limited it.
    pub note: Option<String>,
}

/// The result of a review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewReport {
    /// Source names, as evidence refers to them.
    pub sources: Vec<String>,
    /// Events reviewed.
    pub events: u64,
    /// Findings, by first event time, rule, subject.
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_FINDINGS`], counted only.
    pub findings_omitted: u64,
    /// Per rule.
    pub rules: Vec<RuleSummary>,
    /// The time zone days and hours were read in.
    pub time_zone: String,
}

/// What [`scan_jsonl`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanCounts {
    /// Lines that were events (in the time range or not).
    pub events: u64,
    /// Lines that were not events (skipped).
    pub invalid: u64,
}

/// Reads JSON lines from `reader`, calling `f(event, line)` for each event
/// and `on_invalid(line, reason)` for each non-blank line that is not one.
/// Lines are capped at [`crate::integrity::verify::MAX_LINE_BYTES`]; memory is one
/// line.
pub fn scan_jsonl<R: BufRead>(
    reader: R,
    mut f: impl FnMut(&ReviewEvent<'_>, u64),
    mut on_invalid: impl FnMut(u64, InvalidReason),
) -> io::Result<ScanCounts> {
    let mut lines = JsonLines::new(reader);
    let mut counts = ScanCounts::default();
    while let Some(l) = lines.next_line()? {
        if l.too_long {
            counts.invalid += 1;
            on_invalid(l.number, InvalidReason::TooLong);
            continue;
        }
        let t = l.bytes.trim_ascii();
        if t.is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(t) else {
            counts.invalid += 1;
            on_invalid(l.number, InvalidReason::NotUtf8);
            continue;
        };
        match ReviewEvent::parse(text) {
            Ok(e) => {
                counts.events += 1;
                f(&e, l.number);
            }
            Err(_) => {
                counts.invalid += 1;
                on_invalid(
                    l.number,
                    if l.terminated {
                        InvalidReason::NotAnEvent
                    } else {
                        InvalidReason::Truncated
                    },
                );
            }
        }
    }
    Ok(counts)
}
