//! The audit event model of bh-audit-schema: [`event`] (the serde types),
//! [`metadata`], [`phi`] (PHI kept out by type), [`outcome`] (the
//! [`AuditError`](outcome::AuditError) trait) and [`clamp`] (strings clamped
//! to the schema's bounds where they enter an event).
//!
//! The model never imports the JSON encoder ([`crate::json`]): how an event
//! is written is the layer above's business.

pub(crate) mod clamp;
pub mod event;
pub(crate) mod limits;
pub(crate) mod metadata;
pub(crate) mod outcome;
pub(crate) mod phi;
