//! The canonical JSON form chain hashes are taken over: keys sorted at
//! every depth, Python's float `repr` and string escapes (see
//! [`crate::integrity`] for the rule), for a `serde_json::Value` and, without
//! building one, for a typed [`AuditEvent`].

use std::fmt;
use std::fmt::Write as _;

use serde_json::Value;

use crate::json::encode::{int, key, meta_value, opt, str};
use crate::model::event::AuditEvent;
use crate::model::metadata::MetaValue;
use crate::util::stack::StackText;
use crate::util::text::Text;

// ---------------------------------------------------------------------------
// Scalars: Python float repr and Python string escapes.
// ---------------------------------------------------------------------------

/// Appends `f` formatted as Python's `repr(float)` (which `json.dumps` uses).
///
/// Shortest round-trip digits (from Rust's formatter), laid out as Python
/// does: fixed notation for decimal exponents -4..=15 with at least one
/// fractional digit (`1.0`, `0.0001`, `1000000000000000.0`), otherwise
/// scientific with a signed exponent of at least two digits (`1e+16`,
/// `1e-05`, `1.5e+300`). Non-finite values are written as JSON `null`,
/// which is what the event's JSON line holds for them (they never enter an
/// event through the dispatcher).
///
/// ```
/// let mut out = Vec::new();
/// for f in [1e16, 1e-5, 1.0, 0.1, -0.0, 123456789012345.0] {
///     phi_audit::integrity::write_python_float(f, &mut out);
///     out.push(b' ');
/// }
/// assert_eq!(out, b"1e+16 1e-05 1.0 0.1 -0.0 123456789012345.0 ");
/// ```
pub fn write_python_float(f: f64, out: &mut Vec<u8>) {
    if !f.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7", "0e0".
    let mut sci = StackText::<40>::empty();
    if write!(sci, "{f:e}").is_err() {
        out.extend_from_slice(b"null");
        return;
    }
    let s = sci.as_bytes();
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let epos = s.iter().position(|&b| b == b'e').unwrap_or(s.len());
    let (mant, exp) = s.split_at(epos);
    let exp = parse_exp(exp.get(1..).unwrap_or(b"0"));
    let mut digits = [0u8; 24];
    let mut n = 0;
    for &b in mant {
        if b.is_ascii_digit() && n < digits.len() {
            digits[n] = b;
            n += 1;
        }
    }
    if n == 0 {
        digits[0] = b'0';
        n = 1;
    }
    let digits = &digits[..n];
    if neg {
        out.push(b'-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.extend_from_slice(digits);
                out.extend(std::iter::repeat_n(b'0', int_len - digits.len()));
                out.extend_from_slice(b".0");
            } else {
                out.extend_from_slice(&digits[..int_len]);
                out.push(b'.');
                out.extend_from_slice(&digits[int_len..]);
            }
        } else {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-exp - 1) as usize));
            out.extend_from_slice(digits);
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push(b'0');
        }
        let mut ibuf = StackText::<40>::empty();
        let _ = write!(ibuf, "{a}");
        out.extend_from_slice(ibuf.as_bytes());
    }
}

fn parse_exp(s: &[u8]) -> i32 {
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let mut v: i32 = 0;
    for &b in s {
        if b.is_ascii_digit() {
            v = v.saturating_mul(10).saturating_add(i32::from(b - b'0'));
        }
    }
    if neg {
        -v
    } else {
        v
    }
}

/// Appends `s` as a JSON string the way Python's `json.dumps` writes it with
/// `ensure_ascii=False`.
pub fn write_python_str(s: &str, out: &mut Vec<u8>) {
    // Python's escapes with ensure_ascii=False are serde_json's: `"`, `\\`,
    // `\n`, `\r`, `\t`, `\b`, `\f`, other controls as lowercase `\u00XX`.
    crate::json::encode::str(out, s);
}

fn write_int<I: fmt::Display>(i: I, out: &mut Vec<u8>) {
    let mut b = StackText::<40>::empty();
    let _ = write!(b, "{i}");
    out.extend_from_slice(b.as_bytes());
}

// ---------------------------------------------------------------------------
// Canonical form of a serde_json::Value.
// ---------------------------------------------------------------------------

/// Appends the canonical JSON of `value` (keys sorted at every depth).
pub fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    write_value(value, out, false);
}

/// Appends the canonical JSON of an event: like [`canonical_json`], but a
/// top-level `integrity` key is left out. This is the hashed form.
pub fn canonical_event_json(event: &Value, out: &mut Vec<u8>) {
    write_value(event, out, true);
}

fn write_value(value: &Value, out: &mut Vec<u8>, skip_integrity: bool) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                write_int(i, out);
            } else if let Some(u) = n.as_u64() {
                write_int(u, out);
            } else {
                write_python_float(n.as_f64().unwrap_or(f64::NAN), out);
            }
        }
        Value::String(s) => write_python_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out, false);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let keep = |k: &String| !(skip_integrity && k == "integrity");
            let sorted = map
                .keys()
                .zip(map.keys().skip(1))
                .all(|(a, b)| a.as_str() < b.as_str());
            out.push(b'{');
            let mut first = true;
            let mut entry = |k: &String, v: &Value, out: &mut Vec<u8>| {
                if !first {
                    out.push(b',');
                }
                first = false;
                write_python_str(k, out);
                out.push(b':');
                write_value(v, out, false);
            };
            if sorted {
                for (k, v) in map.iter().filter(|(k, _)| keep(k)) {
                    entry(k, v, out);
                }
            } else {
                let mut entries: Vec<(&String, &Value)> =
                    map.iter().filter(|(k, _)| keep(k)).collect();
                entries.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
                for (k, v) in entries {
                    entry(k, v, out);
                }
            }
            out.push(b'}');
        }
    }
}

// ---------------------------------------------------------------------------
// Canonical form for chain hashing: keys sorted at every depth, Python's float
// repr, no `integrity`. Struct keys are known, so they are written in sorted
// order directly; only metadata keys are sorted at run time.
// ---------------------------------------------------------------------------

fn c_meta_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::Float(f) => write_python_float(*f, out),
        other => meta_value(out, other),
    }
}

/// Appends the canonical JSON of `e` without its `integrity` block.
/// Returns the offset at which a top-level `integrity` member sorts (before
/// `metadata` or `outcome`).
pub(crate) fn canonical_event(out: &mut Vec<u8>, e: &AuditEvent) -> usize {
    let mut f = true;
    out.push(b'{');

    key(out, &mut f, "action");
    out.push(b'{');
    let mut g = true;
    if let Some(c) = e.action.data_classification {
        key(out, &mut g, "data_classification");
        str(out, c.as_str());
    }
    opt(out, &mut g, "name", &e.action.name);
    if let Some(p) = e.action.phi_touched {
        key(out, &mut g, "phi_touched");
        out.extend_from_slice(if p { b"true" } else { b"false" });
    }
    key(out, &mut g, "type");
    str(out, e.action.kind.as_str());
    out.push(b'}');

    key(out, &mut f, "actor");
    out.push(b'{');
    let a = &e.actor;
    let mut g = true;
    opt(out, &mut g, "org_id", &a.org_id);
    opt(out, &mut g, "owner_org_id", &a.owner_org_id);
    if let Some(roles) = &a.roles {
        key(out, &mut g, "roles");
        out.push(b'[');
        for (i, r) in roles.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            str(out, r);
        }
        out.push(b']');
    }
    key(out, &mut g, "subject_id");
    str(out, &a.subject_id);
    key(out, &mut g, "subject_type");
    str(out, a.subject_type.as_str());
    out.push(b'}');

    if let Some(c) = &e.correlation {
        key(out, &mut f, "correlation");
        out.push(b'{');
        let mut g = true;
        opt(out, &mut g, "request_id", &c.request_id);
        opt(out, &mut g, "session_id", &c.session_id);
        opt(out, &mut g, "trace_id", &c.trace_id);
        out.push(b'}');
    }
    if let Some(d) = &e.delegation {
        key(out, &mut f, "delegation");
        match serde_json::to_value(d) {
            Ok(v) => canonical_json(&v, out),
            Err(_) => out.extend_from_slice(b"{}"),
        }
    }
    key(out, &mut f, "event_id");
    out.push(b'"');
    let mut id = [0u8; 36];
    out.extend_from_slice(e.event_id.hyphenated().encode_lower(&mut id).as_bytes());
    out.push(b'"');
    if let Some(h) = &e.http {
        key(out, &mut f, "http");
        out.push(b'{');
        let mut g = true;
        opt(out, &mut g, "client_ip", &h.client_ip);
        if let Some(m) = h.method {
            key(out, &mut g, "method");
            str(out, m.as_str());
        }
        opt(out, &mut g, "route_template", &h.route_template);
        if let Some(c) = h.status_code {
            key(out, &mut g, "status_code");
            int(out, i128::from(c));
        }
        opt(out, &mut g, "user_agent", &h.user_agent);
        out.push(b'}');
    }
    let integrity_at = out.len();
    if !e.metadata.is_empty() {
        key(out, &mut f, "metadata");
        let mut entries: Vec<(&Text, &MetaValue)> = e.metadata.iter().collect();
        // Byte order of UTF-8 is code point order, which is how Python sorts.
        entries.sort_by(|x, y| x.0.as_bytes().cmp(y.0.as_bytes()));
        out.push(b'{');
        for (i, (k, v)) in entries.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            str(out, k);
            out.push(b':');
            c_meta_value(out, v);
        }
        out.push(b'}');
    }

    key(out, &mut f, "outcome");
    out.push(b'{');
    let mut g = true;
    opt(out, &mut g, "error_message", &e.outcome.error_message);
    opt(out, &mut g, "error_type", &e.outcome.error_type);
    key(out, &mut g, "status");
    str(out, e.outcome.status.as_str());
    out.push(b'}');

    key(out, &mut f, "resource");
    out.push(b'{');
    let mut g = true;
    opt(out, &mut g, "id", &e.resource.id);
    opt(out, &mut g, "patient_id", &e.resource.patient_id);
    key(out, &mut g, "type");
    str(out, &e.resource.kind);
    out.push(b'}');

    key(out, &mut f, "schema_version");
    str(out, e.schema_version.as_str());

    key(out, &mut f, "service");
    out.push(b'{');
    let mut g = true;
    opt(out, &mut g, "environment", &e.service.environment);
    key(out, &mut g, "name");
    str(out, &e.service.name);
    opt(out, &mut g, "version", &e.service.version);
    out.push(b'}');

    key(out, &mut f, "timestamp");
    out.push(b'"');
    out.extend_from_slice(&e.timestamp.rfc3339_bytes_cached());
    out.push(b'"');
    out.push(b'}');
    integrity_at
}
