//! Choosing the outcome of a finished call from its return value.
//!
//! # Why autoref dispatch
//!
//! `#[audited]` expands before type checking: it sees the tokens of the
//! return type, not the type, and the tokens do not say whether an error
//! type implements [`AuditError`] or `Display`, or whether a value is a
//! future (aliases, generics, `impl Trait`). Stable Rust has no
//! specialization to pick an impl by what a type implements, so the choice
//! is left to method resolution, the technique anyhow's `kind.rs` and
//! `dtolnay`'s "autoref specialization" write-up use.
//!
//! # How
//!
//! The macro writes, for a return value `ret` (with every `Via*` trait in
//! scope):
//!
//! ```text
//! (&&&&&Probe(&ret)).__phi_audit_outcome(&call, phi)   // synchronous body
//! (&&&&Probe(&ret)).__phi_audit_outcome(&call, phi)    // async body or future
//! ```
//!
//! Method resolution looks for `__phi_audit_outcome` on the receiver type
//! as written, then with one `&` fewer (auto-deref), and so on, and takes
//! the first type for which some trait in scope has an impl whose bounds
//! hold. Each trait is implemented for a different number of references,
//! most specific first:
//!
//! | `Self` of the impl | trait | applies when | outcome |
//! |---|---|---|---|
//! | `&&&&Probe<F>` | [`ViaFuture`] | `F: Future` | a compile error (see [`UnfollowedFuture`]) |
//! | `&&&Probe<Result<T, E>>` | [`ViaAuditError`] | `E: AuditError` | `e.audit_outcome()` |
//! | `&&Probe<Result<T, E>>` | [`ViaDisplay`] | `E: Display` | FAILURE, the type's name; the sanitized `Display` only if configured and no PHI parameter |
//! | `&Probe<Result<T, E>>` | [`ViaAnyError`] | any `E` | FAILURE, the type's name |
//! | `Probe<T>` | [`ViaValue`] | anything | SUCCESS |
//!
//! A bound that does not hold (`E: AuditError` for an `io::Error`) does not
//! make the call fail to compile: the candidate is skipped and resolution
//! moves one `&` down. `Ok(_)` in each `Result` impl is SUCCESS. The body of
//! an async function or a followed future is never itself a future, so the
//! macro starts those at four `&` and the [`ViaFuture`] rung is out of reach
//! (a future *output* that is a future is a value like any other).
//!
//! The dispatch is resolved at compile time: the generated code calls one
//! concrete method, with no trait objects and no run-time type checks.
//! `ViaFuture`'s impl requires `F: UnfollowedFuture`, which no type
//! implements, so a synchronous function returning a named future type
//! stops at that rung with the `#[diagnostic::on_unimplemented]` message
//! instead of being recorded as a SUCCESS when the future is made.

use std::fmt::{Display, Write as _};
use std::future::Future;

use crate::call::Call;
use crate::model::event::Outcome;
use crate::model::outcome::AuditError;
use crate::util::stack::StackText;
use crate::util::text::Text;

/// Holds a reference to a return value while its outcome is classified.
///
/// The macro calls `(&&&&&Probe(&ret)).__phi_audit_outcome(&call, phi)`
/// (four `&` for async bodies and futures, whose value is never itself a
/// future): method resolution takes the first of the `Via*` traits, from
/// [`ViaFuture`] down to [`ViaValue`], whose impl applies to the value's
/// type. `phi` is true when the function has a `#[phi]` or `Phi<T>`
/// parameter.
pub struct Probe<'a, T: ?Sized>(pub &'a T);

/// A synchronous audited function returning a future the macro cannot
/// follow to its completion: a compile error, never a silent SUCCESS.
pub trait ViaFuture {
    /// The future's type.
    type Future;
    /// Never compiles: [`UnfollowedFuture`] has no implementations.
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome
    where
        Self::Future: UnfollowedFuture;
}

/// Implemented by no type: what makes an audited function returning a named
/// future type a compile error that says what to do.
#[diagnostic::on_unimplemented(
    message = "#[audited] cannot see when `{Self}` completes, so it cannot record how the call ended",
    label = "this function returns a future of a type #[audited] cannot wrap",
    note = "#[audited] records a future's outcome when it completes if the function is an `async fn` or returns `impl Future<Output = ..>` or `Pin<Box<dyn Future<Output = ..> + ..>>`",
    note = "return one of those (e.g. `-> impl Future<Output = T>` around this value), or audit the code that awaits it"
)]
pub trait UnfollowedFuture {}

/// Outcome of an `Err` whose type implements [`AuditError`].
pub trait ViaAuditError {
    /// The outcome.
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome;
}

/// Outcome of an `Err` whose type implements `Display` (read only when the
/// config opts in and the function has no PHI parameter).
pub trait ViaDisplay {
    /// The outcome.
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome;
}

/// Outcome of any other `Err`.
pub trait ViaAnyError {
    /// The outcome.
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome;
}

/// Outcome of a value that is not a `Result`: SUCCESS.
pub trait ViaValue {
    /// The outcome.
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome;
}

impl<F: Future> ViaFuture for &&&&Probe<'_, F> {
    type Future = F;
    fn __phi_audit_outcome(&self, _call: &Call, _phi: bool) -> Outcome
    where
        F: UnfollowedFuture,
    {
        Outcome::SUCCESS
    }
}

impl<T, E: AuditError> ViaAuditError for &&&Probe<'_, Result<T, E>> {
    fn __phi_audit_outcome(&self, _call: &Call, _phi: bool) -> Outcome {
        match self.0 {
            Ok(_) => Outcome::SUCCESS,
            Err(e) => e.audit_outcome(),
        }
    }
}

impl<T, E: Display> ViaDisplay for &&Probe<'_, Result<T, E>> {
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome {
        match self.0 {
            Ok(_) => Outcome::SUCCESS,
            Err(e) => {
                let ty = Text::from_static(short_type_name::<E>());
                if call.display_allowed(phi) {
                    let mut msg = StackText::new();
                    let _ = write!(msg, "{e}");
                    Outcome::failure(ty, msg.into_text())
                } else {
                    Outcome::failure(ty.clone(), ty)
                }
            }
        }
    }
}

impl<T, E> ViaAnyError for &Probe<'_, Result<T, E>> {
    fn __phi_audit_outcome(&self, _call: &Call, _phi: bool) -> Outcome {
        match self.0 {
            Ok(_) => Outcome::SUCCESS,
            Err(_) => {
                let ty = Text::from_static(short_type_name::<E>());
                Outcome::failure(ty.clone(), ty)
            }
        }
    }
}

impl<T: ?Sized> ViaValue for Probe<'_, T> {
    fn __phi_audit_outcome(&self, _call: &Call, _phi: bool) -> Outcome {
        Outcome::SUCCESS
    }
}

/// `my_app::errors::AppError<T>` → `AppError`; through `Box`, `Arc` and
/// `Rc` to what they hold (`Box<dyn Error + Send>` → `Error`,
/// `Box<MyError>` → `MyError`).
pub fn short_type_name<T: ?Sized>() -> &'static str {
    short_name(std::any::type_name::<T>())
}

fn short_name(full: &'static str) -> &'static str {
    // Plain byte scans: this runs on every failed call, and a substring
    // search for `::` cost more than the rest of the outcome. The common
    // case (`my_app::AppError<T>`) takes one scan forward to `<` and one
    // back to `:`.
    if !full.starts_with("dyn ") {
        let b = full.as_bytes();
        let end = b.iter().position(|&c| c == b'<').unwrap_or(b.len());
        let start = b[..end]
            .iter()
            .rposition(|&c| c == b':')
            .map_or(0, |i| i + 1);
        match &full[start..end] {
            "Box" | "Arc" | "Rc" => {}
            "" => return full,
            name => return name,
        }
    }
    wrapped_short_name(full)
}

/// [`short_name`] through `dyn` and `Box`/`Arc`/`Rc`.
#[cold]
fn wrapped_short_name(full: &'static str) -> &'static str {
    let mut s = full;
    let mut inside = false;
    loop {
        if let Some(rest) = s.strip_prefix("dyn ") {
            s = rest;
        }
        let b = s.as_bytes();
        // A path ends at its generics (`<`) or, after `dyn`, at ` + Send`.
        let end = if inside {
            b.iter()
                .position(|&c| matches!(c, b'<' | b' ' | b',' | b'>'))
        } else {
            b.iter().position(|&c| c == b'<' || c == b' ')
        }
        .unwrap_or(b.len());
        let start = b[..end]
            .iter()
            .rposition(|&c| c == b':')
            .map_or(0, |i| i + 1);
        let name = &s[start..end];
        if matches!(name, "Box" | "Arc" | "Rc") && b.get(end) == Some(&b'<') {
            s = &s[end + 1..];
            inside = true;
            continue;
        }
        return if name.is_empty() { full } else { name };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_type_name::<std::io::Error>(), "Error");
        assert_eq!(short_type_name::<Vec<String>>(), "Vec");
        assert_eq!(short_type_name::<u8>(), "u8");
        assert_eq!(short_type_name::<dyn std::error::Error>(), "Error");
        assert_eq!(
            short_type_name::<Box<dyn std::error::Error + Send + Sync>>(),
            "Error"
        );
        assert_eq!(short_type_name::<Box<std::fmt::Error>>(), "Error");
        assert_eq!(
            short_type_name::<std::sync::Arc<std::num::ParseIntError>>(),
            "ParseIntError"
        );
        assert_eq!(short_type_name::<String>(), "String");
        assert_eq!(short_type_name::<&str>(), "&str");
        assert_eq!(short_type_name::<[u8]>(), "[u8]");
        assert_eq!(
            short_type_name::<std::collections::HashMap<String, std::io::Error>>(),
            "HashMap"
        );
    }
}
