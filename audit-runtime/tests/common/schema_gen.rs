//! JSON generators shared by the schema property tests (`schema_props.rs`,
//! `validate_json_diff.rs`): keys the schema knows, and trees of values.
//!
//! Include with `#[path = "common/schema_gen.rs"] mod schema_gen;`.
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{Map, Value};

/// An object key: mostly the schema's own names (so that generated
/// objects often look like parts of an event), JSON Pointer metacharacters,
/// a non-ASCII name, or a short random name.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "schema_version",
            "event_id",
            "timestamp",
            "service",
            "actor",
            "action",
            "resource",
            "outcome",
            "correlation",
            "http",
            "integrity",
            "metadata",
            "delegation",
            "name",
            "type",
            "id",
            "status",
            "error_type",
            "error_message",
            "subject_id",
            "subject_type",
            "roles",
            "chain_depth",
            "parent_agent_session_id",
            "acting",
            "authorizing",
            "agent",
            "interface",
            "hash_alg",
            "event_hash",
            "prev_event_hash",
            "client_ip",
            "status_code",
            "a/b",
            "t~0",
            "é",
        ])
        .prop_map(str::to_owned),
        "[a-z_/~]{0,12}",
    ]
}

/// Trees of `leaf` values: arrays of up to `max_items`, objects of up to
/// `max_members` (keys from [`key`]), `depth` levels deep, about `size`
/// nodes.
pub fn tree(
    leaf: impl Strategy<Value = Value> + 'static,
    depth: u32,
    size: u32,
    max_items: usize,
    max_members: usize,
) -> impl Strategy<Value = Value> {
    leaf.prop_recursive(
        depth,
        size,
        max_items.max(max_members) as u32,
        move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..max_items).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..max_members)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        },
    )
}
