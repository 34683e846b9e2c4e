//! The `#[audited]` attribute of phi-audit.
