//! TEMPORARY shim until the schema validator lands (branch wip/schema).
#![allow(missing_docs)]
use crate::event::{AuditEvent, OutcomeStatus, SchemaVersion};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DowngradePolicy {
    #[default]
    Reject,
    Downgrade,
}

#[derive(Debug)]
pub struct RetargetError;

pub fn retarget(
    event: &mut AuditEvent,
    target: SchemaVersion,
    _policy: DowngradePolicy,
) -> Result<(), RetargetError> {
    if target != SchemaVersion::V2_0 && event.uses_v2_features() {
        return Err(RetargetError);
    }
    event.schema_version = target;
    if target == SchemaVersion::V1_0 && event.outcome.status == OutcomeStatus::Denied {
        event.outcome.status = OutcomeStatus::Failure;
    }
    Ok(())
}

#[derive(Debug)]
pub struct ValidationErrors;

pub fn validate(_event: &AuditEvent) -> Result<(), ValidationErrors> {
    Ok(())
}
