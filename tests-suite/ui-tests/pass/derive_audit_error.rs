//! `#[derive(AuditError)]` in a crate that denies warnings, with generics,
//! every kind of variant, a renamed crate, and an audited function using it.

#![deny(warnings)]
#![deny(unused, nonstandard_style, rust_2018_idioms, unreachable_pub)]

extern crate phi_audit as audit;

use audit::{audited, AuditError, Outcome, Phi};

/// Errors of the chart service.
#[derive(Debug, AuditError)]
#[audit(crate = audit)]
pub enum ChartError<T: std::fmt::Debug> {
    /// Denied.
    #[audit(denied, error_type = "RoleDenied", message = "role lacks chart:read")]
    Forbidden,
    /// Not found, holding PHI that is never read.
    #[audit(error_type = "NotFound", message = "no such chart")]
    Missing {
        /// The name asked for.
        name: Phi<String>,
    },
    /// A generic payload.
    Other(T),
}

/// A struct error.
#[derive(Debug, AuditError)]
#[audit(denied)]
pub struct NoConsent;

/// An empty error enum.
#[derive(Debug, AuditError)]
pub enum Never {}

/// Uses it.
#[audited(action = "READ", resource = "Chart", id = id)]
pub fn read(id: u64, #[phi] name: &str) -> Result<u64, ChartError<u8>> {
    if name.is_empty() {
        return Err(ChartError::Forbidden);
    }
    if id == 0 {
        return Err(ChartError::Missing { name: Phi::new(name.to_string()) });
    }
    Err(ChartError::Other(1))
}

fn main() {
    let _ = read(1, "Jane");
    assert_eq!(NoConsent.audit_outcome(), Outcome::denied("NoConsent"));
    let o = ChartError::<u8>::Other(3).audit_outcome();
    assert_eq!(o, Outcome::failure("Other", "Other"));
    fn takes(_: &dyn AuditError) {}
    let n: Option<Never> = None;
    if let Some(n) = &n {
        takes(n);
    }
}
