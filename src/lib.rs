//! # phi-audit
//!
//! HIPAA audit trails for Rust services. One attribute per function emits one
//! [bh-audit-schema](https://github.com/bh-healthcare/bh-audit-schema) event per
//! call (who did what to which resource, when, and how it ended), and PHI
//! reaching the audit trail is a compile error.
//!
//! See the README for a tour; the runtime API is re-exported here from
//! `audit-runtime`.

#![warn(missing_docs)]

pub use audit_runtime::*;

pub use audit_macros::audited;

/// Adds metadata to the audited call this code runs in.
///
/// ```ignore
/// phi_audit::record!(rows = rows.len(), cache = "hit");
/// ```
///
/// Values must be scalars ([`MetadataValue`]). Inside an `#[audited]`
/// function, a `#[phi]` argument (or anything derived from it) reaching
/// `record!` is a compile error. Outside an audited call it does nothing.
#[macro_export]
macro_rules! record {
    ($($key:ident = $value:expr),+ $(,)?) => {{
        $( $crate::__private::record(::core::stringify!($key), $crate::__private::meta(&$value)); )+
    }};
}
