//! A hand-written compact JSON encoder for [`AuditEvent`], the sinks' hot
//! path. Its output is byte for byte what `serde_json::to_vec(&event)` writes
//! (field order, escapes, number forms); a test holds it to that.

use crate::model::event::{
    Action, Actor, AuditEvent, Correlation, Delegation, Http, HttpMethod, Integrity, Outcome,
    Service,
};
use crate::model::metadata::{MetaValue, Metadata};
use crate::util::hex;
use crate::util::text::Text;

/// 0: copy as is; otherwise the escape letter (`u` for `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Repeats a byte across a word.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

const LOW: u64 = splat(0x01);
const HIGH: u64 = splat(0x80);

/// True if a byte of `x` is a control character, `"` or `\\` (the bytes JSON
/// escapes). Exact for the question "any?", which is all that is asked.
#[inline(always)]
fn word_needs_escape(x: u64) -> bool {
    let zero_in = |v: u64| v.wrapping_sub(LOW) & !v & HIGH;
    let control = x.wrapping_sub(splat(0x20)) & !x & HIGH;
    (control | zero_in(x ^ splat(b'"')) | zero_in(x ^ splat(b'\\'))) != 0
}

/// True if `bytes` hold anything JSON must escape; eight bytes at a time.
#[inline]
fn needs_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n < 8 {
        return bytes.iter().any(|&b| ESCAPE[b as usize] != 0);
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    // Whole words, the last one overlapping the one before it.
    let mut at = 0;
    while at + 8 < n {
        if word_needs_escape(word(at)) {
            return true;
        }
        at += 8;
    }
    word_needs_escape(word(n - 8))
}

/// Writes a string known to need no escaping (the schema's enum names).
#[inline]
fn raw(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!needs_escape(s.as_bytes()));
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Writes `s` as a JSON string.
#[inline]
pub(crate) fn str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !needs_escape(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    escaped(out, bytes);
}

#[cold]
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if esc == b'u' {
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&hex::pair(b));
        } else {
            out.push(b'\\');
            out.push(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes `,"key":` (or `"key":` for the first member).
pub(crate) fn key(out: &mut Vec<u8>, first: &mut bool, k: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

pub(crate) fn opt(out: &mut Vec<u8>, first: &mut bool, k: &str, v: &Option<Text>) {
    if let Some(v) = v {
        key(out, first, k);
        str(out, v);
    }
}

pub(crate) fn int(out: &mut Vec<u8>, v: i128) {
    let mut buf = [0u8; 40];
    let mut i = buf.len();
    let neg = v < 0;
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        i -= 1;
        buf[i] = b'-';
    }
    out.extend_from_slice(&buf[i..]);
}

pub(crate) fn meta_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::Null => out.extend_from_slice(b"null"),
        MetaValue::Bool(true) => out.extend_from_slice(b"true"),
        MetaValue::Bool(false) => out.extend_from_slice(b"false"),
        MetaValue::Int(i) => int(out, i128::from(*i)),
        MetaValue::UInt(u) => int(out, i128::from(*u)),
        // serde_json's own float form (and `null` for non-finite values).
        MetaValue::Float(f) => {
            if serde_json::to_writer(&mut *out, f).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        MetaValue::Str(s) => str(out, s),
    }
}

fn metadata(out: &mut Vec<u8>, m: &Metadata) {
    out.push(b'{');
    let mut first = true;
    for (k, v) in m.iter() {
        if !first {
            out.push(b',');
        }
        first = false;
        str(out, k);
        out.push(b':');
        meta_value(out, v);
    }
    out.push(b'}');
}

/// Writes `"key":` (the first member of an object) or `,"key":`, each
/// form one constant.
macro_rules! member {
    // The key is copied as one literal of known length (choosing between
    // `"k":` and `,"k":` made it a copy of unknown length: a `memcpy` call).
    ($out:expr, $first:expr, $k:literal) => {{
        if !::std::mem::replace(&mut $first, false) {
            $out.push(b',');
        }
        $out.extend_from_slice(concat!("\"", $k, "\":").as_bytes());
    }};
}

/// `"GET"` and the others, each a copy of known length.
#[inline]
fn method(out: &mut Vec<u8>, m: HttpMethod) {
    match m {
        HttpMethod::Get => out.extend_from_slice(b"\"GET\""),
        HttpMethod::Head => out.extend_from_slice(b"\"HEAD\""),
        HttpMethod::Post => out.extend_from_slice(b"\"POST\""),
        HttpMethod::Put => out.extend_from_slice(b"\"PUT\""),
        HttpMethod::Patch => out.extend_from_slice(b"\"PATCH\""),
        HttpMethod::Delete => out.extend_from_slice(b"\"DELETE\""),
        HttpMethod::Options => out.extend_from_slice(b"\"OPTIONS\""),
    }
}

fn correlation(out: &mut Vec<u8>, c: &Correlation) {
    out.push(b'{');
    let mut f = true;
    if let Some(v) = &c.request_id {
        member!(out, f, "request_id");
        str(out, v);
    }
    if let Some(v) = &c.trace_id {
        member!(out, f, "trace_id");
        str(out, v);
    }
    if let Some(v) = &c.session_id {
        member!(out, f, "session_id");
        str(out, v);
    }
    out.push(b'}');
}

/// `{..}` of `h`, with `status` as its status code.
fn http(out: &mut Vec<u8>, h: &Http, status: Option<u16>) {
    out.push(b'{');
    let mut f = true;
    if let Some(m) = h.method {
        member!(out, f, "method");
        method(out, m);
    }
    if let Some(v) = &h.route_template {
        member!(out, f, "route_template");
        str(out, v);
    }
    if let Some(c) = status {
        member!(out, f, "status_code");
        if (100..1000).contains(&c) {
            // Three digits, written as one.
            let d = |n: u16| b'0' + (n % 10) as u8;
            out.extend_from_slice(&[d(c / 100), d(c / 10), d(c)]);
        } else {
            int(out, i128::from(c));
        }
    }
    if let Some(v) = &h.client_ip {
        member!(out, f, "client_ip");
        str(out, v);
    }
    if let Some(v) = &h.user_agent {
        member!(out, f, "user_agent");
        str(out, v);
    }
    out.push(b'}');
}

fn integrity(out: &mut Vec<u8>, i: &Integrity) {
    out.push(b'{');
    let mut f = true;
    opt(out, &mut f, "event_hash", &i.event_hash);
    opt(out, &mut f, "prev_event_hash", &i.prev_event_hash);
    if let Some(a) = i.hash_alg {
        key(out, &mut f, "hash_alg");
        str(out, a.as_str());
    }
    out.push(b'}');
}

fn delegation(out: &mut Vec<u8>, d: &Delegation) {
    // Rare (schema 2.0 agents only): serde's output is the reference form.
    if serde_json::to_writer(&mut *out, d).is_err() {
        out.extend_from_slice(b"{}");
    }
}

// The model's JSON methods live here, beside the encoder they call, so the
// model does not import the JSON layer.
impl AuditEvent {
    /// The event as one compact JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        let mut v = Vec::with_capacity(512);
        self.write_json(&mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    /// Appends the compact JSON of the event to `out`.
    ///
    /// The same bytes as `serde_json::to_vec(&event)`, written by a
    /// hand-written encoder (the sinks' hot path).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        crate::json::encode::event(out, self);
    }
}

/// Appends the compact JSON of `e` to `out`.
pub(crate) fn event(out: &mut Vec<u8>, e: &AuditEvent) {
    // One reservation for the usual event; the pieces below then only check.
    out.reserve(768);
    out.extend_from_slice(b"{\"schema_version\":");
    raw(out, e.schema_version.as_str());
    id_and_time(out, &e.event_id, e.timestamp);
    service(out, &e.service);
    actor(out, &e.actor);
    action(out, &e.action);
    resource_type(out, &e.resource.kind);
    resource_ids(out, &e.resource.id, &e.resource.patient_id);
    outcome(out, &e.outcome);
    context_tail(out, e.correlation.as_ref(), e.http.as_ref());
    if let Some(d) = &e.delegation {
        out.extend_from_slice(b",\"delegation\":");
        delegation(out, d);
    }
    if !e.metadata.is_empty() {
        out.extend_from_slice(b",\"metadata\":");
        metadata(out, &e.metadata);
    }
    if let Some(i) = &e.integrity {
        out.extend_from_slice(b",\"integrity\":");
        integrity(out, i);
    }
    out.push(b'}');
}

// The pieces of an event, in order. The record encoder (`record`) writes the
// same pieces, some of them rendered once and reused, so both forms agree
// byte for byte by construction.

/// `,"event_id":"..","timestamp":".."`
#[inline]
pub(crate) fn id_and_time(
    out: &mut Vec<u8>,
    id: &uuid::Uuid,
    t: crate::time::timestamp::Timestamp,
) {
    out.extend_from_slice(b",\"event_id\":\"");
    out.extend_from_slice(&hex::uuid_hyphenated(id.as_bytes()));
    out.extend_from_slice(b"\",\"timestamp\":\"");
    out.extend_from_slice(&t.rfc3339_bytes_cached());
    out.push(b'"');
}

/// `,"service":{..}`
pub(crate) fn service(out: &mut Vec<u8>, s: &Service) {
    out.extend_from_slice(b",\"service\":{\"name\":");
    str(out, &s.name);
    let mut f = false;
    opt(out, &mut f, "environment", &s.environment);
    opt(out, &mut f, "version", &s.version);
    out.push(b'}');
}

/// `,"actor":{..}`
pub(crate) fn actor(out: &mut Vec<u8>, a: &Actor) {
    out.extend_from_slice(b",\"actor\":{\"subject_id\":");
    str(out, &a.subject_id);
    out.extend_from_slice(b",\"subject_type\":");
    raw(out, a.subject_type.as_str());
    let mut f = false;
    opt(out, &mut f, "org_id", &a.org_id);
    opt(out, &mut f, "owner_org_id", &a.owner_org_id);
    if let Some(roles) = &a.roles {
        key(out, &mut f, "roles");
        out.push(b'[');
        for (i, r) in roles.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            str(out, r);
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// `,"action":{..}`
pub(crate) fn action(out: &mut Vec<u8>, a: &Action) {
    out.extend_from_slice(b",\"action\":{\"type\":");
    raw(out, a.kind.as_str());
    let mut f = false;
    opt(out, &mut f, "name", &a.name);
    if let Some(p) = a.phi_touched {
        key(out, &mut f, "phi_touched");
        out.extend_from_slice(if p { b"true" } else { b"false" });
    }
    if let Some(c) = a.data_classification {
        key(out, &mut f, "data_classification");
        raw(out, c.as_str());
    }
    out.push(b'}');
}

/// `,"resource":{"type":..` (left open for the ids)
pub(crate) fn resource_type(out: &mut Vec<u8>, kind: &str) {
    out.extend_from_slice(b",\"resource\":{\"type\":");
    str(out, kind);
}

/// `,"id":..,"patient_id":..}` (closes the resource)
#[inline]
pub(crate) fn resource_ids(out: &mut Vec<u8>, id: &Option<Text>, patient_id: &Option<Text>) {
    let mut f = false;
    opt(out, &mut f, "id", id);
    opt(out, &mut f, "patient_id", patient_id);
    out.push(b'}');
}

/// `,"outcome":{..}`
#[inline]
pub(crate) fn outcome(out: &mut Vec<u8>, o: &Outcome) {
    out.extend_from_slice(b",\"outcome\":{\"status\":");
    raw(out, o.status.as_str());
    let mut f = false;
    opt(out, &mut f, "error_type", &o.error_type);
    opt(out, &mut f, "error_message", &o.error_message);
    out.push(b'}');
}

/// `,"correlation":{..},"http":{..}` (each when present)
pub(crate) fn context_tail(out: &mut Vec<u8>, c: Option<&Correlation>, h: Option<&Http>) {
    context_tail_status(out, c, h, None);
}

/// [`context_tail`] with `status` (when set) as the `http` block's status
/// code.
pub(crate) fn context_tail_status(
    out: &mut Vec<u8>,
    c: Option<&Correlation>,
    h: Option<&Http>,
    status: Option<u16>,
) {
    // One reservation for the usual tail (a few short ids, a user agent).
    out.reserve(320);
    if let Some(c) = c {
        out.extend_from_slice(b",\"correlation\":");
        correlation(out, c);
    }
    if let Some(h) = h {
        out.extend_from_slice(b",\"http\":");
        http(out, h, status.or(h.status_code));
    }
}

/// What `write` appends, as a boxed slice (for fragments rendered once).
///
/// Written into a buffer this thread keeps, then copied out in one
/// allocation of the exact size: a context per request renders its
/// fragments once per request, and growing a fresh vector byte by byte cost
/// more than the rendering (measured: ~5,000 instructions per context).
pub(crate) fn rendered(write: impl FnOnce(&mut Vec<u8>)) -> Box<[u8]> {
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut out = SCRATCH.try_with(|s| s.take()).unwrap_or_default();
    out.clear();
    if out.capacity() < 1024 {
        out.reserve(1024);
    }
    write(&mut out);
    let boxed = Box::<[u8]>::from(out.as_slice());
    // A huge fragment's buffer is not kept.
    if out.capacity() <= 64 * 1024 {
        let _ = SCRATCH.try_with(|s| s.set(out));
    }
    boxed
}

/// `,"metadata":{..}` when there is any, and the closing brace.
#[inline]
pub(crate) fn metadata_and_close(out: &mut Vec<u8>, m: &Metadata) {
    if !m.is_empty() {
        out.extend_from_slice(b",\"metadata\":");
        metadata(out, m);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_check_agrees_with_the_table_for_every_byte_in_every_position() {
        for b in 0..=255u8 {
            for pos in 0..19 {
                let mut v = vec![b'a'; 19];
                v[pos] = b;
                assert_eq!(needs_escape(&v[..pos + 1]), ESCAPE[b as usize] != 0);
                assert_eq!(needs_escape(&v), ESCAPE[b as usize] != 0, "{b} at {pos}");
            }
        }
        // Neighbours that borrow across bytes in the word arithmetic.
        for (a, b) in [(0x00u8, 0x21u8), (0x21, 0x00), (0x80, 0x1f), (0xff, 0x20)] {
            let v = [a, b, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41];
            let want = ESCAPE[a as usize] != 0 || ESCAPE[b as usize] != 0;
            assert_eq!(needs_escape(&v), want);
        }
    }

    #[test]
    fn uuids_are_written_as_the_uuid_crate_writes_them() {
        let mut x = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        for _ in 0..10_000 {
            let id = uuid::Uuid::from_u128(x);
            assert_eq!(
                &hex::uuid_hyphenated(id.as_bytes())[..],
                id.hyphenated().to_string().as_bytes()
            );
            x = x
                .wrapping_mul(0x2545_f491_4f6c_dd1d)
                .wrapping_add(0x9e37_79b9);
        }
    }

    #[test]
    fn strings_encode_as_serde_json_does() {
        let samples = [
            "",
            "plain",
            "exactly8",
            "sixteen bytes ok",
            "quote\"inside a longer string",
            "back\\slash",
            "tab\tand\nnewline and \u{1} and \u{7f}",
            "é ü 漢字 emoji 😀",
        ];
        for s in samples {
            let mut out = Vec::new();
            str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
