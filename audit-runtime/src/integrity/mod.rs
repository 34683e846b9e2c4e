//! Canonical serialization and chain hashing of audit events.
//!
//! The chain rule is the one bh-audit-logger uses, so ledgers written by
//! either implementation verify with the other:
//!
//! 1. Take the event as a JSON object and drop its top-level `integrity` key.
//! 2. Serialize it canonically: keys sorted (by code point) at every depth,
//!    separators `,` and `:` with no whitespace, non-ASCII characters written
//!    raw as UTF-8. The bytes equal what Python writes with
//!    `json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`,
//!    including Python's float `repr` (`1e+16`, `1e-05`, `1.0`, `-0.0`) and
//!    its string escapes (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, other
//!    control characters as `\u00XX` in lowercase hex).
//! 3. Hash, with the chosen [`HashAlg`], the previous event's lowercase hex
//!    hash (as UTF-8, when there is a previous event) followed by those bytes.
//!    The lowercase hex digest is the event's `integrity.event_hash`.
//!
//! Rust strings are always valid UTF-8, so the lone surrogates Python can hold
//! never occur here; JSON input containing an escaped lone surrogate is
//! rejected by the parser before it reaches this module.
//!
//! ```
//! use phi_audit::integrity::{canonical_json, event_hash};
//! use phi_audit::HashAlg;
//!
//! let v: serde_json::Value = serde_json::from_str(r#"{"b":1e16,"a":"é","integrity":{}}"#).unwrap();
//! let mut out = Vec::new();
//! canonical_json(&v, &mut out);
//! assert_eq!(out, r#"{"a":"é","b":1e+16,"integrity":{}}"#.as_bytes());
//! let first = event_hash(&v, None, HashAlg::Sha256);
//! let second = event_hash(&v, Some(&first), HashAlg::Sha256);
//! assert_eq!(first.len(), 64);
//! assert_ne!(first, second);
//! ```

pub mod checkpoint;
pub mod fast_verify;
pub mod verify;

use std::fmt;

use serde::ser;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha384, Sha512};

pub use crate::json::canonical::{
    canonical_event_json, canonical_json, write_python_float, write_python_str,
};
use crate::model::event::{AuditEvent, HashAlg};

/// The event could not be serialized canonically. Never holds event content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalError(String);

impl fmt::Display for CanonicalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot serialize the event canonically: {}", self.0)
    }
}

impl std::error::Error for CanonicalError {}

impl ser::Error for CanonicalError {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        // The message may quote content; keep only a fixed description.
        CanonicalError("a field failed to serialize".to_owned())
    }
}

// ---------------------------------------------------------------------------
// Hashing.
// ---------------------------------------------------------------------------

/// Hashes `prev` (when given, as UTF-8) followed by `canonical`, and returns
/// the lowercase hex digest.
pub fn chain_hash(canonical: &[u8], prev: Option<&str>, alg: HashAlg) -> String {
    HexDigest::chain(canonical, prev, alg).as_str().to_owned()
}

/// A chain hash in lowercase hex, on the stack: what a chaining sink
/// computes per event (a `String` per event cost an allocation and a free).
#[derive(Clone, Copy)]
pub(crate) struct HexDigest {
    hex: [u8; 128],
    len: u8,
}

impl HexDigest {
    /// The hex digest of `prev` (when given) followed by `canonical`: the
    /// same text as [`chain_hash`].
    pub(crate) fn chain(canonical: &[u8], prev: Option<&str>, alg: HashAlg) -> HexDigest {
        fn run<D: Digest>(canonical: &[u8], prev: Option<&str>) -> HexDigest {
            let mut h = D::new();
            if let Some(p) = prev {
                h.update(p.as_bytes());
            }
            h.update(canonical);
            HexDigest::of(&h.finalize())
        }
        match alg {
            HashAlg::Sha256 => run::<Sha256>(canonical, prev),
            HashAlg::Sha384 => run::<Sha384>(canonical, prev),
            HashAlg::Sha512 => run::<Sha512>(canonical, prev),
        }
    }

    /// Lowercase hex of a digest of at most 64 bytes.
    fn of(bytes: &[u8]) -> HexDigest {
        let mut hex = [0u8; 128];
        let len = crate::util::hex::encode_into(bytes, &mut hex);
        HexDigest {
            hex,
            len: len as u8,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        let hex = &self.hex[..usize::from(self.len)];
        debug_assert!(hex.is_ascii());
        // SAFETY: `of` is the only writer, and it writes ASCII hex digits to
        // the first `len` bytes (the fields are private, the type is `Copy`
        // but never mutated after it is built).
        unsafe { std::str::from_utf8_unchecked(hex) }
    }
}

impl fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        let [hi, lo] = crate::util::hex::pair(b);
        s.push(char::from(hi));
        s.push(char::from(lo));
    }
    s
}

/// The chain hash of an event given as JSON: the hex digest of `prev`
/// followed by [`canonical_event_json`] of `event`.
pub fn event_hash(event: &Value, prev: Option<&str>, alg: HashAlg) -> String {
    let mut buf = Vec::with_capacity(1024);
    canonical_event_json(event, &mut buf);
    chain_hash(&buf, prev, alg)
}

/// Canonical serialization of typed events with reused buffers: the fast
/// path a chaining sink uses. The bytes equal [`canonical_event_json`] of the
/// event's JSON, without building a `serde_json::Value`.
///
/// ```
/// use phi_audit::integrity::{canonical_event_json, Canonicalizer};
/// # use phi_audit::*;
/// # let event = AuditEvent {
/// #     schema_version: SchemaVersion::V1_1, event_id: uuid::Uuid::nil(),
/// #     timestamp: Timestamp::from_unix_millis(0),
/// #     service: Service { name: "svc".into(), environment: None, version: None },
/// #     actor: Actor::human("u1"),
/// #     action: Action { kind: ActionType::Read, name: None, phi_touched: None, data_classification: None },
/// #     resource: Resource { kind: "Patient".into(), id: None, patient_id: None },
/// #     outcome: Outcome::SUCCESS, correlation: None, http: None, delegation: None,
/// #     metadata: Metadata::new(), integrity: None };
/// let mut c = Canonicalizer::new();
/// let fast = c.event_bytes(&event).unwrap().to_vec();
/// let mut slow = Vec::new();
/// canonical_event_json(&serde_json::to_value(&event).unwrap(), &mut slow);
/// assert_eq!(fast, slow);
/// ```
#[derive(Debug, Default)]
pub struct Canonicalizer {
    out: Vec<u8>,
    /// Where a top-level `integrity` member sorts in `out`.
    integrity_at: Option<usize>,
}

impl Canonicalizer {
    /// A canonicalizer with empty buffers.
    pub fn new() -> Canonicalizer {
        Canonicalizer::default()
    }

    /// The canonical bytes of `event` without its `integrity` block. The
    /// slice is valid until the next call.
    pub fn event_bytes(&mut self, event: &AuditEvent) -> Result<&[u8], CanonicalError> {
        self.out.clear();
        self.integrity_at = None;
        if event.metadata.iter().all(|(_, v)| !v.is_non_finite()) {
            // Known keys in sorted order, written directly.
            self.integrity_at = Some(crate::json::canonical::canonical_event(
                &mut self.out,
                event,
            ));
            return Ok(&self.out);
        }
        // NaN or infinite metadata (which the dispatcher drops, so only an
        // event built and chained by hand has it): through the generic
        // canonical form of the event's JSON, where it is `null`.
        let value = serde_json::to_value(event)
            .map_err(|_| CanonicalError("a field failed to serialize".to_owned()))?;
        canonical_event_json(&value, &mut self.out);
        self.integrity_at = crate::integrity::fast_verify::insert_position(&self.out, b"integrity");
        Ok(&self.out)
    }

    /// The bytes of the last [`Canonicalizer::event_bytes`] and the offset
    /// at which a top-level `integrity` member sorts in them (`None` when
    /// unknown).
    pub(crate) fn last(&self) -> (&[u8], Option<usize>) {
        (&self.out, self.integrity_at)
    }

    /// The chain hash of `event` after `prev`.
    pub fn event_hash(
        &mut self,
        event: &AuditEvent,
        prev: Option<&str>,
        alg: HashAlg,
    ) -> Result<String, CanonicalError> {
        Ok(self.event_digest(event, prev, alg)?.as_str().to_owned())
    }

    /// [`Canonicalizer::event_hash`] without allocating the result.
    pub(crate) fn event_digest(
        &mut self,
        event: &AuditEvent,
        prev: Option<&str>,
        alg: HashAlg,
    ) -> Result<HexDigest, CanonicalError> {
        let bytes = self.event_bytes(event)?;
        Ok(HexDigest::chain(bytes, prev, alg))
    }
}

/// Chain hash of a typed event (allocates its buffers; a sink keeps a
/// [`Canonicalizer`] instead).
pub fn typed_event_hash(
    event: &AuditEvent,
    prev: Option<&str>,
    alg: HashAlg,
) -> Result<String, CanonicalError> {
    Canonicalizer::new().event_hash(event, prev, alg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NaN and infinite metadata take the generic path: the canonical form
    /// of the event's JSON line, where they are `null`, hashed as a reader
    /// of that line (or bh-audit-logger) would.
    #[test]
    fn non_finite_metadata_is_canonical_through_the_event_json() {
        use crate::model::event::{
            Action, ActionType, Actor, Outcome, Resource, SchemaVersion, Service,
        };
        use crate::model::metadata::{MetaValue, Metadata};
        let mut metadata = Metadata::new();
        metadata.insert_value("z_nan".into(), MetaValue::Float(f64::NAN));
        metadata.insert_value("a_inf".into(), MetaValue::Float(f64::NEG_INFINITY));
        metadata.insert_value("m".into(), MetaValue::Float(1e16));
        let event = AuditEvent {
            schema_version: SchemaVersion::V1_1,
            event_id: uuid::Uuid::from_u128(7),
            timestamp: crate::time::timestamp::Timestamp::from_unix_millis(1_700_000_000_123),
            service: Service {
                name: "svc".into(),
                environment: None,
                version: None,
            },
            actor: Actor::human("u1"),
            action: Action {
                kind: ActionType::Read,
                name: Some("read".into()),
                phi_touched: None,
                data_classification: None,
            },
            resource: Resource {
                kind: "Patient".into(),
                id: Some("p1".into()),
                patient_id: None,
            },
            outcome: Outcome::SUCCESS,
            correlation: None,
            http: None,
            delegation: None,
            metadata,
            integrity: None,
        };
        let mut c = Canonicalizer::new();
        let bytes = c.event_bytes(&event).unwrap().to_vec();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(r#""metadata":{"a_inf":null,"m":1e+16,"z_nan":null}"#),
            "{text}"
        );
        let line: Value = serde_json::from_str(&event.to_json()).unwrap();
        let mut want = Vec::new();
        canonical_event_json(&line, &mut want);
        assert_eq!(bytes, want);
        assert_eq!(
            c.event_hash(&event, None, HashAlg::Sha256).unwrap(),
            event_hash(&line, None, HashAlg::Sha256)
        );
        // The same canonicalizer goes back to the direct path.
        let mut finite = event.clone();
        finite.metadata = Metadata::new();
        let direct = c.event_bytes(&finite).unwrap().to_vec();
        let mut generic = Vec::new();
        canonical_event_json(&serde_json::to_value(&finite).unwrap(), &mut generic);
        assert_eq!(direct, generic);
    }

    fn pf(f: f64) -> String {
        let mut v = Vec::new();
        write_python_float(f, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn python_float_repr() {
        let cases: &[(f64, &str)] = &[
            (1e16, "1e+16"),
            (1e-5, "1e-05"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (123456789012345.0, "123456789012345.0"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (1e22, "1e+22"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (12345678901234567890.0, "1.2345678901234567e+19"),
            (-2.5, "-2.5"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.30000000000000004, "0.30000000000000004"),
            (100.0, "100.0"),
            (1.25e-4, "0.000125"),
            (f64::NAN, "null"),
        ];
        for (f, want) in cases {
            assert_eq!(pf(*f), *want, "{f:e}");
        }
    }

    #[test]
    fn python_string_escapes() {
        let mut v = Vec::new();
        write_python_str("\u{0}\u{1f}\u{7f}\u{2028}😀\"\\\n\r\t\u{8}\u{c}é", &mut v);
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "\"\\u0000\\u001f\u{7f}\u{2028}😀\\\"\\\\\\n\\r\\t\\b\\fé\""
        );
    }

    #[test]
    fn sorts_nested_and_skips_top_integrity_only() {
        let v: Value = serde_json::from_str(
            r#"{"z":{"b":1,"a":[{"d":1,"c":2}]},"integrity":{"x":1},"a":{"integrity":1}}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        canonical_event_json(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"integrity":1},"z":{"a":[{"c":2,"d":1}],"b":1}}"#
        );
    }

    #[test]
    fn known_digests() {
        // sha256("abc") with and without a prefix.
        assert_eq!(
            chain_hash(b"abc", None, HashAlg::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            chain_hash(b"c", Some("ab"), HashAlg::Sha256),
            chain_hash(b"abc", None, HashAlg::Sha256)
        );
        assert_eq!(chain_hash(b"", None, HashAlg::Sha384).len(), 96);
        assert_eq!(chain_hash(b"", None, HashAlg::Sha512).len(), 128);
    }
}
