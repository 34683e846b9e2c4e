//! # phi-audit
//!
//! HIPAA audit trails for Rust services. One attribute per function emits one
//! [bh-audit-schema](https://github.com/bh-healthcare/bh-audit-schema) event per
//! call (who did what to which resource, when, and how it ended), and PHI
//! reaching the audit trail is a compile error.
//!
//! ```
//! use phi_audit::{audited, AuditContext, Actor, Config, Dispatch, MemorySink, with_dispatch};
//!
//! #[derive(Debug)]
//! struct Chart { notes: usize }
//!
//! // One event per call. `name` is PHI: putting it in `id`, `metadata(..)`
//! // or a `record!` would not compile.
//! #[audited(action = "READ", resource = "Patient", id = patient_id, patient = patient_id)]
//! fn read_chart(patient_id: &str, #[phi] name: &str) -> Result<Chart, std::io::Error> {
//!     phi_audit::record!(cache = "miss");
//!     Ok(Chart { notes: name.len() })
//! }
//!
//! // Where events go: here a sink in memory; in a service, `phi_audit::init`
//! // (or `init_from_env`) with a file, a tamper-evident ledger or PostgreSQL.
//! let sink = MemorySink::new();
//! let dispatch = Dispatch::new(Config::new("chart-service").build()?, sink.clone());
//!
//! // Who is calling: set once per request, read by every audited call in it.
//! let ctx = AuditContext::new().actor(Actor::human("dr-smith"));
//! with_dispatch(&dispatch, || ctx.in_scope(|| read_chart("pat-7", "Jane Doe")))?;
//!
//! let event = &sink.events()[0];
//! assert_eq!(event.actor.subject_id.as_str(), "dr-smith");
//! assert_eq!(event.resource.patient_id.as_deref(), Some("pat-7"));
//! assert!(event.metadata.get("cache").is_some()); // from record!
//! assert!(!event.to_json().contains("Jane")); // never in the trail
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Start with [`audited`] (the attribute and its arguments), then
//! [`Config`] and [`init`] (service name, sinks, schema version),
//! [`AuditContext`] (the actor and request of the calls in a scope) and the
//! sinks ([`JsonlFileSink`], [`LedgerSink`], [`NonBlocking`], and with the
//! `postgres` feature `PostgresSink`). The README has a tour and the
//! measured costs.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `toml` | yes | settings from the TOML file `PHI_AUDIT_CONFIG` names ([`init_from_env`]) |
//! | `postgres` | | `PostgresSink`, `PostgresStore` and the access-review queries |
//! | `postgres-tls` | | TLS (rustls) to PostgreSQL |
//! | `tower` | | `web::AuditLayer`: one event per HTTP request (axum, hyper, tonic) |
//! | `axum` | | `AuditLayer` with axum's matched routes and client addresses |
//! | `tokio` | | `spawn` and `spawn_blocking`: tasks that carry the audit context |
//!
//! The runtime API is re-exported here from `phi-audit-runtime`; depend on
//! this crate and use its paths (`phi_audit::..`).

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use phi_audit_runtime::*;

/// Audits every call of a function: one bh-audit-schema event per call, and
/// PHI reaching the event is a compile error.
///
/// ```
/// use phi_audit::{audited, with_dispatch, AuditError, Config, Dispatch, MemorySink, Outcome};
///
/// # pub struct Session { user: String }
/// # impl Session { fn user_id(&self) -> &str { &self.user } }
/// # #[derive(Debug)] pub struct Chart;
/// #[derive(Debug)]
/// pub enum AppError { Forbidden, NotFound }
///
/// impl AuditError for AppError {
///     fn audit_outcome(&self) -> Outcome {
///         match self {
///             AppError::Forbidden => Outcome::denied("RoleDenied"),
///             AppError::NotFound => Outcome::failure("NotFound", "no such chart"),
///         }
///     }
/// }
///
/// #[audited(action = "READ", resource = "Patient", id = patient_id, patient = patient_id,
///           actor = session.user_id(), metadata(reason = reason, page = page))]
/// fn read_chart(session: &Session, patient_id: &str, #[phi] name: &str,
///               reason: &'static str, page: u32) -> Result<Chart, AppError> {
///     // `name` may be used freely here; it can never reach the audit event.
///     if name.is_empty() { return Err(AppError::NotFound); }
///     phi_audit::record!(rows = 12);
///     Ok(Chart)
/// }
///
/// let sink = MemorySink::new();
/// let dispatch = Dispatch::new(Config::new("chart-service").build()?, sink.clone());
/// let session = Session { user: "dr-smith".into() };
/// let chart = with_dispatch(&dispatch, || read_chart(&session, "pat-7", "Jane Doe", "treatment", 1));
/// assert!(chart.is_ok());
///
/// let event = &sink.events()[0];
/// assert_eq!(event.action.name.as_deref(), Some("read_chart"));
/// assert_eq!(event.resource.patient_id.as_deref(), Some("pat-7"));
/// assert_eq!(event.actor.subject_id.as_str(), "dr-smith");
/// assert_eq!(event.action.phi_touched, Some(true)); // it has a #[phi] parameter
/// assert!(!event.to_json().contains("Jane"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Arguments
///
/// | argument | meaning |
/// |---|---|
/// | `action = "READ"` | **required**: `action.type`, one of `"READ"`, `"CREATE"`, `"UPDATE"`, `"DELETE"`, `"EXPORT"`, `"LOGIN"`, `"LOGOUT"`, `"PRINT"`, `"OVERRIDE"` (schema 2.0), `"OTHER"`. A misspelling is an error that suggests the nearest value. |
/// | `resource = "Patient"` | **required**: `resource.type`, a string literal of 1 to 128 characters. |
/// | `id = expr` | `resource.id`: any expression over the arguments (and `self`) whose value is an identifier ([`AuditId`]: strings, integers, UUIDs, `Option` of those). |
/// | `patient = expr` | `resource.patient_id`, like `id`. |
/// | `actor = expr` | the actor: an [`Actor`], an `Option<Actor>`, or a string id (a human user). Without it, the actor of the current [`AuditContext`], else the config's default actor. |
/// | `name = "read_chart"` | `action.name`; defaults to the function's name. |
/// | `classification = "PHI"` | `action.data_classification`: `"PHI"`, `"PII"`, `"NONE"` or `"UNKNOWN"`. |
/// | `phi_touched = true` | `action.phi_touched`. |
/// | `metadata(key = expr, ..)` | metadata entries: unique ASCII keys (at most 20), each value a scalar ([`MetadataValue`]: strings, numbers, `bool`, `Option` of those). A `Vec`, a struct or a [`Phi`] does not compile. |
/// | `crate = path` | the path to this crate, when the dependency is renamed. |
///
/// `action`, `resource`, `name`, `classification` and `phi_touched` are
/// constants: they become one `static` call-site descriptor, and nothing
/// constant is built per call. A function with a `#[phi]` parameter defaults
/// to `phi_touched = true` and `classification = "PHI"`.
///
/// Attribute expressions are evaluated once, by reference, before the body
/// runs, so a body that moves an argument still compiles. Arguments are
/// never captured unless named.
///
/// # Outcome
///
/// Exactly one event per call, however it ends:
///
/// - `Ok(_)`, or a return value that is not a `Result`: SUCCESS.
/// - `Err(e)` where the error type implements [`AuditError`]: the outcome it
///   chooses (DENIED for a denial, with its own error type and PHI-safe
///   message).
/// - Any other `Err(e)`: FAILURE, with the error type's short name as
///   `error_type` and as the message (`std::io::Error`: its `ErrorKind`,
///   and the kind's description as the message). The error's `Display` is
///   never read: it may quote the function's inputs, and no sanitizer knows
///   a name from a word. A config may opt in to the sanitized `Display`
///   ([`ErrorMessages::Sanitized`], a PHI risk), but never in a function
///   with a `#[phi]` or `Phi<T>` parameter: there only [`AuditError`]
///   (or `#[derive(AuditError)]`) decides the message.
/// - A panic: FAILURE `Panic` (the payload is never recorded: it may hold
///   PHI), and the panic goes on unwinding. Under `panic = "abort"`,
///   [`flush_on_panic`]'s hook records it before the process aborts.
/// - An async call whose future is dropped before it completes: FAILURE
///   `Cancelled`.
///
/// # PHI: `#[phi]` and `pseudonym(..)`
///
/// Tag a parameter `#[phi]` (on a pattern, every binding it introduces is
/// tagged; `#[phi] &self` tags `self`); a parameter whose type mentions
/// [`Phi<..>`](Phi) (`Phi<T>`, `&Phi<T>`, `&mut Phi<T>`, `Option<Phi<T>>`,
/// `Box<Phi<T>>`, ...) is tainted the same way without a tag. Mentioning it
/// in `id`, `patient`, `actor`, `name` or `metadata(..)` — directly, through
/// a field, a method (`.expose()` included), a reference, a closure or a
/// format string — is a compile error, and so is a `record!` in the body
/// whose value may come from it: the check follows `let` bindings,
/// shadowing, destructuring, `match`/`if let`/`for` bindings, assignments,
/// mutating calls and closures. It is deliberately conservative; restructure
/// the code (or compute the value from non-PHI inputs) when it flags
/// something you know is safe.
///
/// A value taken out of any `Phi` with `.expose()` (or `.expose_mut()`,
/// `Phi::expose(..)`), a field's or a return value's too, is tainted the same
/// way, and so is what is derived from it.
///
/// [`record!`] is expanded by this attribute, in the function's own body
/// only: anywhere else (a helper function, a nested `fn`, a renamed import)
/// it is a compile error, because there the check cannot see where its
/// values come from.
///
/// ```compile_fail
/// # use phi_audit::audited;
/// #[audited(action = "READ", resource = "Patient", metadata(who = name))]
/// fn read(#[phi] name: &str) {} // error: `name` is tagged #[phi] ...
/// ```
///
/// `pseudonym(expr)` in `id`, `patient` or a metadata value stores a keyed
/// HMAC-SHA256 token of the value instead of the value: the same input gives
/// the same token under the configured [`PseudonymKey`], so an access review
/// can still follow one identifier. Without a key the field is left out (and
/// counted), never filled with the raw value.
///
/// ```
/// # use phi_audit::audited;
/// #[audited(action = "READ", resource = "Patient", id = pseudonym(ssn))]
/// fn by_ssn(#[phi] ssn: &str) -> usize { ssn.len() }
/// # by_ssn("123-45-6789");
/// ```
///
/// Behind the syntactic check stands the type wall: a [`Phi<T>`](Phi) value
/// implements neither [`MetadataValue`] nor [`AuditId`], anywhere.
///
/// # Shapes
///
/// Sync and `async fn`; free functions, methods taking `&self`, `&mut self`
/// or `self`, associated functions, trait impl methods, `async fn` in traits;
/// generics, lifetimes, where clauses, `impl Trait` arguments and returns,
/// `unsafe fn`, early `return`, `?` with `From` conversions. Doc comments
/// and other attributes are kept, and it composes with
/// `#[tracing::instrument]` in either order (give `#[instrument]`
/// `skip(..)` for every `#[phi]` parameter: it records arguments by default,
/// into your logs). A `const fn` or a declaration without a body is an
/// error.
///
/// Functions that return a future are audited like an `async fn`: a method
/// of an `#[async_trait]` impl (`#[async_trait]` on the impl, `#[audited]`
/// on the method), or any function returning `Pin<Box<dyn Future<..>>>`
/// (also as a `BoxFuture` alias) or `impl Future<..>`. The call begins when
/// the returned future is first polled (its dispatcher, context and time
/// are taken there), the event is emitted when it completes, with its
/// outcome; a panic inside it is FAILURE `Panic`, dropping it unfinished
/// FAILURE `Cancelled` (never polled: no event, as for an `async fn`). The
/// future stays `Send` when the original was. A synchronous function
/// returning a future of a named type (`std::future::Ready<..>`, a
/// `JoinHandle`) is a compile error: the attribute could not see it end.
///
/// ```
/// use std::future::Future;
/// use phi_audit::audited;
///
/// #[audited(action = "READ", resource = "Chart", id = id)]
/// fn load(id: u64) -> impl Future<Output = Result<u64, std::io::Error>> + Send {
///     async move { Ok(id) } // the event is emitted when this completes
/// }
/// ```
///
/// Inside a synchronous body, the body runs in an `FnOnce` closure; inside
/// an `async fn`, in an `async move` block. Errors in the body still point at
/// your code.
pub use phi_audit_macros::audited;

/// Derives [`AuditError`](trait@AuditError) from string literals: each
/// variant (or the struct) says its outcome, and no field's value is ever
/// read, so no message can carry PHI.
///
/// ```
/// use phi_audit::{AuditError, Outcome, Phi};
///
/// #[derive(Debug, AuditError)]
/// enum ChartError {
///     /// DENIED, `error_type` "RoleDenied".
///     #[audit(denied, error_type = "RoleDenied")]
///     Forbidden,
///     /// DENIED with a fixed message; `error_type` is the variant's name.
///     #[audit(denied, message = "consent withdrawn")]
///     NoConsent { patient: Phi<String> },
///     /// FAILURE with its own type and message.
///     #[audit(error_type = "NotFound", message = "no such chart")]
///     Missing(Phi<String>),
///     /// FAILURE, `error_type` and message "Database".
///     Database(String),
/// }
///
/// let e = ChartError::Missing(Phi::new("Jane Doe".into()));
/// assert_eq!(e.audit_outcome(), Outcome::failure("NotFound", "no such chart"));
/// assert_eq!(ChartError::Forbidden.audit_outcome(), Outcome::denied("RoleDenied"));
/// assert_eq!(
///     ChartError::Database("row 12: Jane".into()).audit_outcome(),
///     Outcome::failure("Database", "Database")
/// );
///
/// #[derive(Debug, AuditError)]
/// #[audit(denied, error_type = "CrossOrg")]
/// struct CrossOrg;
/// assert_eq!(CrossOrg.audit_outcome(), Outcome::denied("CrossOrg"));
/// ```
///
/// | attribute | on | meaning |
/// |---|---|---|
/// | `#[audit(denied)]` | a variant, or the struct | the outcome is DENIED (default FAILURE) |
/// | `#[audit(error_type = "..")]` | a variant, or the struct | `error_type`, 1 to 128 characters (default: the variant's or the struct's name) |
/// | `#[audit(message = "..")]` | a variant, or the struct | `error_message`, 1 to 500 characters (default for FAILURE: the error type; DENIED has none) |
/// | `#[audit(crate = path)]` | the type | the path to this crate, when the dependency is renamed |
///
/// Values must be string literals: an expression, or a key the derive does
/// not know, is a compile error. It composes with `thiserror`'s derive: the
/// `Display` it writes is for your logs; the audit trail never reads it.
pub use phi_audit_macros::AuditError;

/// Adds metadata to the event of the `#[audited]` function whose body it is
/// written in.
///
/// ```
/// use phi_audit::{audited, record};
///
/// #[audited(action = "READ", resource = "Patient", id = patient_id)]
/// fn list_notes(patient_id: &str, limit: usize) -> Vec<String> {
///     let rows: Vec<String> = (0..limit).map(|i| format!("note {i}")).collect();
///     record!(rows = rows.len(), cache = "hit");
///     rows
/// }
/// # list_notes("pat-1", 3);
/// ```
///
/// Values must be scalars ([`MetadataValue`]), keys ASCII identifiers of at
/// most 64 characters. A `#[phi]` or `Phi<T>` argument (or anything derived
/// from it) reaching `record!` is a compile error.
///
/// `record!` works only in the body of an `#[audited]` function, written
/// `record!(..)` or `phi_audit::record!(..)` (or `<crate>::record!(..)` with
/// `crate = <crate>` in the attribute), closures and async blocks in the
/// body included: `#[audited]` expands it there, after checking its values. Anywhere else, in a helper function, in a nested `fn`, or
/// through a renamed import (`use phi_audit::record as remember;`), it is a
/// compile error: the check could not see where its values come from.
/// Return the value to the audited function and record it there, or name
/// it in the attribute (`pseudonym(..)` for an identifier).
///
/// ```compile_fail
/// fn helper(name: &str) {
///     phi_audit::record!(initial = name.len()); // error: only in an #[audited] body
/// }
/// ```
#[macro_export]
macro_rules! record {
    // What `#[audited]` rewrites the calls in its body to, once it has
    // checked their values. Not for direct use.
    (@__phi_audit_checked $($checked:tt)*) => {{ $($checked)* }};
    ($($anything:tt)*) => {
        ::core::compile_error!(
            "`record!` can only be used in the body of an #[audited] function, written `record!(..)` or `phi_audit::record!(..)`: only there does the compile-time PHI check see every value it records\n\
             help: in a helper function, return the value to the audited function and `record!` it there, or name it in the #[audited] attribute (`pseudonym(..)` for an identifier)\n\
             help: a renamed import (`use phi_audit::record as ..`) is not recognized; through a renamed crate, write `<crate>::record!(..)` and give #[audited] `crate = <crate>`"
        )
    };
}
