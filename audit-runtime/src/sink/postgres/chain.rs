//! Chain hashing for the PostgreSQL store, and the normalization that makes
//! an event hash the same before it is stored and after `jsonb` gives it back.
//!
use serde_json::{Map, Number, Value};

use crate::event::HashAlg;

/// sha256 over `prev` (its hex text, when there is one) followed by the
/// canonical JSON of `event` (see [`crate::integrity`]), as hex: the chain
/// rule of bh-audit-logger.
pub(crate) fn chain_hash(event_json_without_integrity: &Value, prev: Option<&str>) -> String {
    crate::integrity::event_hash(event_json_without_integrity, prev, HashAlg::Sha256)
}

/// Rewrites `v` in place into the form PostgreSQL stores, so that the hash of
/// the stored event equals the hash computed before storing it:
/// - U+0000 (which neither `text` nor `jsonb` can hold) becomes U+FFFD;
/// - an integral float of magnitude at least 1e16 that fits a 64-bit integer
///   becomes that integer (`jsonb` writes `1e16` back as
///   `10000000000000000`, which reads back as an integer).
///
/// Returns true when anything changed.
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
        Value::Number(n) => {
            if n.is_f64() {
                if let Some(f) = n.as_f64() {
                    if f.is_finite() && f.fract() == 0.0 && f.abs() >= 1e16 {
                        let as_int = if f > 0.0 && f < 18_446_744_073_709_551_616.0 {
                            Some(Number::from(f as u64))
                        } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                            Some(Number::from(f as i64))
                        } else {
                            None
                        };
                        if let Some(i) = as_int {
                            *n = i;
                            return true;
                        }
                    }
                }
            }
            false
        }
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |acc, x| normalize_for_postgres(x) | acc),
        Value::Object(m) => normalize_map(m),
        Value::Null | Value::Bool(_) => false,
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
    fn normalization_replaces_nul_and_big_integral_floats() {
        let mut v = json!({"k\u{0}": "a\u{0}b", "f": 1e16, "g": 1.5, "h": -1e17, "i": 1e300});
        assert!(normalize_for_postgres(&mut v));
        assert_eq!(
            v,
            json!({"k\u{fffd}": "a\u{fffd}b", "f": 10000000000000000u64, "g": 1.5, "h": -100000000000000000i64, "i": 1e300})
        );
        assert!(!normalize_for_postgres(&mut v));
    }
}
