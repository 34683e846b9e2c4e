//! Every feature of `#[audited]` in a crate that denies warnings: the
//! generated code triggers no lint.

#![deny(warnings)]
#![deny(unused, nonstandard_style, rust_2018_idioms, unreachable_pub)]

extern crate phi_audit as audit;

use audit::{audited, Actor, AuditError, Outcome, Phi};

/// An error type that declares denials.
#[derive(Debug)]
pub enum ChartError {
    /// Not allowed.
    Forbidden,
}

impl AuditError for ChartError {
    fn audit_outcome(&self) -> Outcome {
        match self {
            ChartError::Forbidden => Outcome::denied("RoleDenied").with_message("chart access denied"),
        }
    }
}

/// A request session.
pub struct Session {
    user: String,
    /// Not PHI: a field that happens to share the name of a PHI parameter.
    pub name: String,
}

impl Session {
    /// The user id.
    pub fn user_id(&self) -> &str {
        &self.user
    }
}

/// A chart.
#[derive(Debug)]
pub struct Chart {
    /// Lines.
    pub lines: Vec<String>,
}

/// Every argument of the attribute.
#[audited(action = "READ", resource = "Patient", id = patient_id, patient = patient_id,
          actor = session.user_id(), name = "read_chart", classification = "PHI",
          phi_touched = true, crate = ::audit,
          metadata(reason = reason, page = page, desk = session.name, ssn = pseudonym(ssn)))]
pub fn read_chart(
    session: &Session,
    patient_id: &str,
    #[phi] name: &str,
    #[phi] ssn: &str,
    reason: &'static str,
    page: u32,
) -> Result<Chart, ChartError> {
    if page > 10 {
        return Err(ChartError::Forbidden);
    }
    let lines = vec![format!("{name} {ssn}")];
    let shown = page * 2; // not derived from PHI
    audit::record!(shown = shown, cached = false);
    Ok(Chart { lines })
}

/// The actor given as an `Actor`; the id as a pseudonym.
#[audited(action = "EXPORT", resource = "Report", id = pseudonym(mrn), actor = Actor::service("exporter"),
          crate = audit)]
pub async fn export(#[phi] mrn: String, rows: u32) -> u32 {
    audit::record!(rows = rows);
    let _ = mrn;
    rows
}

/// `Phi<T>` values live in the body; they never reach the event.
#[audited(action = "UPDATE", resource = "Patient", id = id)]
pub fn update(id: u64, name: Phi<String>) -> usize {
    name.expose().len()
}

/// A one-expression body on one line (no `unused_braces` from the wrapper).
#[audited(action = "READ", resource = "Patient", id = id)]
pub fn one_line(id: &str) -> Result<usize, ChartError> { Ok(id.len()) }

/// The same, async.
#[audited(action = "READ", resource = "Patient", id = id)]
pub async fn one_line_async(id: String) -> usize { id.len() }

/// Inner attributes of the body still apply to the whole body.
#[audited(action = "READ", resource = "Patient", id = id)]
pub fn inner_attributes(id: &str) -> usize {
    #![allow(unused_variables)]
    let not_used = 1;
    id.len()
}

fn main() {
    let s = Session { user: "u1".into(), name: "front desk".into() };
    let _ = read_chart(&s, "p1", "Jane Doe", "123-45-6789", "treatment", 1);
    drop(export("mrn-1".into(), 3));
    let _ = update(1, Phi::new("Jane".into()));
    let _ = one_line("p1");
    drop(one_line_async("p1".into()));
    let _ = inner_attributes("p1");
}
