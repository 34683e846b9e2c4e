//! The limits of bh-audit-schema, in one place: the schema rule tables, the
//! clamping of runtime strings, config validation and the dispatcher's
//! metadata limits all read them (the macro crate keeps its own copy of
//! [`METADATA`], held equal by a test here). Lengths count characters, as
//! the schema does.

/// Most characters of an identifier: `actor.subject_id`, `resource.id` and
/// `patient_id`, correlation ids, `integrity.event_hash`, agent session ids.
pub(crate) const ID: usize = 256;
/// Most characters of a name: `service.name`, org ids, `action.name`,
/// `resource.type`, `outcome.error_type`, the agent's descriptors.
pub(crate) const NAME: usize = 128;
/// Most characters of a role.
pub(crate) const ROLE: usize = 64;
/// Most roles of an actor.
pub(crate) const ROLES: usize = 25;
/// Most characters of a route template or user agent.
pub(crate) const HTTP_TEXT: usize = 512;
/// Most characters of a service environment or version.
pub(crate) const SERVICE_TAG: usize = 64;
/// Most characters of a metadata key (the macro's limit, for keys given at
/// run time too; the schema itself does not bound keys).
pub(crate) const META_KEY: usize = 64;
/// Most characters of an error message.
pub(crate) const MESSAGE: usize = 500;
/// Most metadata entries of an event.
pub(crate) const METADATA: usize = 20;
/// Characters of a hyphenated event id.
pub(crate) const EVENT_ID: usize = 36;
/// Smallest and largest HTTP status code.
pub(crate) const STATUS: (i64, i64) = (100, 599);
/// Smallest and largest delegation chain depth (2.0).
pub(crate) const CHAIN_DEPTH: (i64, i64) = (1, 32);

#[cfg(test)]
mod tests {
    /// The macro crate cannot depend on the runtime: its copy of the
    /// metadata limit (it rejects a 21st key at compile time) is read from
    /// its source and must agree.
    #[test]
    fn the_macro_counts_metadata_keys_as_the_runtime_does() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../audit-macros/src/ast.rs");
        let Ok(src) = std::fs::read_to_string(path) else {
            eprintln!("skipped: {path} not found (not in the workspace)");
            return;
        };
        let decl = "pub const MAX_METADATA: usize = ";
        let at = src
            .find(decl)
            .expect("MAX_METADATA in audit-macros/src/ast.rs")
            + decl.len();
        let n: usize = src[at..]
            .split(';')
            .next()
            .and_then(|v| v.trim().parse().ok())
            .expect("a literal MAX_METADATA");
        assert_eq!(n, super::METADATA);
        let decl = "pub const MAX_KEY_LEN: usize = ";
        let at = src
            .find(decl)
            .expect("MAX_KEY_LEN in audit-macros/src/ast.rs")
            + decl.len();
        let n: usize = src[at..]
            .split(';')
            .next()
            .and_then(|v| v.trim().parse().ok())
            .expect("a literal MAX_KEY_LEN");
        assert_eq!(n, super::META_KEY);
    }
}
