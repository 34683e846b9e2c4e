use super::{Sink, SinkError};
use crate::model::event::AuditEvent;

/// The `tracing` target of [`TracingSink`]'s events.
pub const TRACING_TARGET: &str = "phi_audit::event";

/// Emits one `tracing` event per audit event, at level INFO and target
/// [`TRACING_TARGET`], with the compact JSON in the field `audit_event`, so a
/// service's existing subscriber ships the audit trail.
///
/// Filter on the target to route audit events apart from other logs, e.g.
/// `RUST_LOG=phi_audit::event=info`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingSink(());

impl TracingSink {
    /// A tracing sink.
    pub fn new() -> TracingSink {
        TracingSink(())
    }
}

impl Sink for TracingSink {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        let json = event.to_json();
        tracing::info!(target: TRACING_TARGET, audit_event = %json, "audit event");
        Ok(())
    }
}
