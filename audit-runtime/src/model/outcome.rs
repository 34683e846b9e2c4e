//! [`AuditError`]: how an error type accounts for itself in the audit
//! trail (the outcome of a call that returned it).

use std::fmt::Write as _;

use crate::model::event::Outcome;
use crate::util::stack::StackText;

/// An error type's own account of itself in the audit trail.
///
/// Implement it (or derive it: `#[derive(AuditError)]` in `phi-audit`) to
/// mark denials (the event becomes DENIED) and to choose the `error_type`
/// and a PHI-free message. Error types without it still work: their calls
/// end as FAILURE with the type's short name as `error_type` and message;
/// their `Display` is only read when the config opts in
/// ([`ErrorMessages::Sanitized`](crate::ErrorMessages::Sanitized)), and never in a function with a PHI
/// parameter. `std::io::Error` implements it: its `ErrorKind` and the kind's
/// description.
///
/// ```
/// use phi_audit::{AuditError, Outcome};
///
/// enum AppError { Forbidden, NotFound, Db(String) }
///
/// impl AuditError for AppError {
///     fn audit_outcome(&self) -> Outcome {
///         match self {
///             AppError::Forbidden => Outcome::denied("RoleDenied"),
///             AppError::NotFound => Outcome::failure("NotFound", "no such record"),
///             // The database text may quote data: never pass it on.
///             AppError::Db(_) => Outcome::failure("DatabaseError", "database unavailable"),
///         }
///     }
/// }
/// ```
pub trait AuditError {
    /// The outcome to record for this error: usually
    /// [`Outcome::denied`] or [`Outcome::failure`].
    fn audit_outcome(&self) -> Outcome;
}

/// `std::io::Error` says what it is without its message: `error_type` is
/// its [`ErrorKind`](std::io::ErrorKind) (`NotFound`, `PermissionDenied`)
/// and `error_message` the kind's fixed description (`entity not found`).
/// A custom I/O error's message, which may quote a path or a value, is
/// never read.
impl AuditError for std::io::Error {
    fn audit_outcome(&self) -> Outcome {
        let kind = self.kind();
        let mut ty = StackText::new();
        let _ = write!(ty, "{kind:?}");
        let mut msg = StackText::new();
        let _ = write!(msg, "{kind}");
        Outcome::failure(ty.into_text(), msg.into_text())
    }
}
