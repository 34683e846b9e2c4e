//! Chain hashing for the PostgreSQL store, and the normalization that makes
//! an event hash the same before it is stored and after `jsonb` gives it back.
//!
use serde_json::{Map, Value};

use crate::model::event::HashAlg;

/// sha256 over `prev` (its hex text, when there is one) followed by the
/// canonical JSON of `event` (see [`crate::integrity`]), as hex: the chain
/// rule of bh-audit-logger.
pub(crate) fn chain_hash(event_json_without_integrity: &Value, prev: Option<&str>) -> String {
    crate::integrity::event_hash(event_json_without_integrity, prev, HashAlg::Sha256)
}

/// Replaces U+0000, which neither `text` nor `jsonb` can hold, by U+FFFD
/// in every string and key of `v`. Everything else `jsonb` changes (number
/// forms, negative zero, key order) the sink learns from the server itself
/// before hashing. Returns true when anything changed.
pub(crate) fn normalize_for_postgres(v: &mut Value) -> bool {
    match v {
        Value::String(s) => {
            if s.contains('\0') {
                *s = s.replace('\0', "\u{fffd}");
                true
            } else {
                false
            }
        }
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |acc, x| normalize_for_postgres(x) | acc),
        Value::Object(m) => normalize_map(m),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn normalize_map(m: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    if m.keys().any(|k| k.contains('\0')) {
        let old = std::mem::take(m);
        for (k, v) in old {
            m.insert(k.replace('\0', "\u{fffd}"), v);
        }
        changed = true;
    }
    for v in m.values_mut() {
        changed |= normalize_for_postgres(v);
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_hash_prefixes_previous_hash() {
        let v = json!({"a": 1});
        // sha256('{"a":1}') and sha256('abc' + '{"a":1}'), as Python computes them.
        assert_eq!(
            chain_hash(&v, None),
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
        assert_eq!(
            chain_hash(&v, Some("abc")),
            "62de7fc29a6144bf049a4c6b18ffc63a51131bb6acc1496e50ba3b27b6a2a42b"
        );
        assert_ne!(chain_hash(&v, Some("abc")), chain_hash(&v, None));
    }

    #[test]
    fn normalization_replaces_nul_only() {
        let mut v = json!({"k\u{0}": ["a\u{0}b"], "f": 1e16, "g": -0.0});
        assert!(normalize_for_postgres(&mut v));
        assert_eq!(
            v,
            json!({"k\u{fffd}": ["a\u{fffd}b"], "f": 1e16, "g": -0.0})
        );
        assert!(!normalize_for_postgres(&mut v));
    }
}
