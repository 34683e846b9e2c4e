//! Chain hashing for the PostgreSQL store, and the normalization that makes
//! an event hash the same before it is stored and after `jsonb` gives it back.
//!
//! MERGE NOTE (for the lead): `chain_hash` and its canonical serializer are a
//! local stand-in for `crate::integrity` (written in parallel). Replace the
//! body of [`chain_hash`] with the integrity module's canonical JSON + chain
//! rule and delete `canonical_json` / `python_float`; nothing else here
//! depends on them. The tests below pin the expected bytes.

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// sha256 over `prev` (its hex text, when there is one) followed by the
/// canonical JSON of `event` (which must not contain `integrity`), as hex.
/// The chain rule of bh-audit-logger.
pub(crate) fn chain_hash(event_json_without_integrity: &Value, prev: Option<&str>) -> String {
    let mut canon = String::with_capacity(1024);
    canonical_json(event_json_without_integrity, &mut canon);
    let mut h = Sha256::new();
    if let Some(p) = prev {
        h.update(p.as_bytes());
    }
    h.update(canon.as_bytes());
    let digest = h.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Python's `json.dumps(v, sort_keys=True, separators=(",", ":"),
/// ensure_ascii=False)`.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(f) = n.as_f64() {
                python_float(f, out);
            }
        }
        Value::String(s) => json_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                if let Some(x) = m.get(k) {
                    canonical_json(x, out);
                }
            }
            out.push('}');
        }
    }
}

/// Python's string escaping with `ensure_ascii=False`: `"`, `\` and control
/// characters below U+0020 only (short forms for \b \f \n \r \t).
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let n = c as u32;
                out.push_str("\\u00");
                out.push(char::from(HEX[(n >> 4) as usize]));
                out.push(char::from(HEX[(n & 0xf) as usize]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits; fixed notation when
/// the decimal exponent is in -4..16, else `d.ddde+XX`.
fn python_float(f: f64, out: &mut String) {
    if !f.is_finite() {
        // Never in our events (the dispatcher drops non-finite floats).
        out.push_str("null");
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push('0');
        }
        out.push_str(&a.to_string());
    }
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

    fn canon(v: &Value) -> String {
        let mut s = String::new();
        canonical_json(v, &mut s);
        s
    }

    #[test]
    fn floats_as_python_writes_them() {
        let cases: &[(f64, &str)] = &[
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5, "-2.5"),
            (1e100, "1e+100"),
            (123456.789, "123456.789"),
            (5e-324, "5e-324"),
            (-0.0, "-0.0"),
            (3.0, "3.0"),
        ];
        for (f, want) in cases {
            let mut s = String::new();
            python_float(*f, &mut s);
            assert_eq!(&s, want, "{f:e}");
        }
    }

    #[test]
    fn canonical_sorts_keys_and_escapes_like_python() {
        let v = json!({"b": 1, "a": {"z": [true, null], "é": "x\"\\\n\u{1}ü"}});
        assert_eq!(
            canon(&v),
            "{\"a\":{\"z\":[true,null],\"é\":\"x\\\"\\\\\\n\\u0001ü\"},\"b\":1}"
        );
    }

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
