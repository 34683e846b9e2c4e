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
pub mod verify;

use std::fmt;
use std::fmt::Write as _;

use serde::ser::{self, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha384, Sha512};

pub use crate::json::canonical::{
    canonical_event_json, canonical_json, write_python_float, write_python_str,
};
use crate::json::canonical::{write_int, StackBuf};
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

const HEX: &[u8; 16] = b"0123456789abcdef";

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
        let n = bytes.len().min(64);
        for (pair, &b) in hex.chunks_exact_mut(2).zip(&bytes[..n]) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        HexDigest {
            hex,
            len: (n * 2) as u8,
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
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
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
    entries: Vec<Entry>,
    /// Where a top-level `integrity` member sorts in `out`.
    integrity_at: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key_start: usize,
    key_end: usize,
    end: usize,
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
        self.entries.clear();
        if event.metadata.iter().all(|(_, v)| !v.is_non_finite()) {
            // Known keys in sorted order, written directly.
            self.integrity_at = Some(crate::json::canonical::canonical_event(
                &mut self.out,
                event,
            ));
            return Ok(&self.out);
        }
        let r = event.serialize(CanonSer { st: self, depth: 0 });
        match r {
            Ok(()) => {
                self.integrity_at = crate::fast_verify::insert_position(&self.out, b"integrity");
                Ok(&self.out)
            }
            Err(e) => {
                self.out.clear();
                self.entries.clear();
                Err(e)
            }
        }
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

// The serde serializer behind `Canonicalizer`. Struct and map entries are
// written into the output as `[raw key]["key":value]`, then sorted by raw key
// and compacted in place when the compound ends.

struct CanonSer<'a> {
    st: &'a mut Canonicalizer,
    depth: u32,
}

struct Compound<'a> {
    st: &'a mut Canonicalizer,
    depth: u32,
    start: usize,
    base: usize,
    first: bool,
}

impl Compound<'_> {
    fn key_raw(&mut self, key: &str) {
        let key_start = self.st.out.len();
        self.st.out.extend_from_slice(key.as_bytes());
        let key_end = self.st.out.len();
        write_python_str(key, &mut self.st.out);
        self.st.out.push(b':');
        self.st.entries.push(Entry {
            key_start,
            key_end,
            end: key_end,
        });
    }

    fn finish_entry(&mut self) {
        let len = self.st.out.len();
        if let Some(e) = self.st.entries.last_mut() {
            e.end = len;
        }
    }

    fn end_object(self) {
        let Canonicalizer { out, entries, .. } = self.st;
        let mine = &mut entries[self.base..];
        mine.sort_by(|a, b| out[a.key_start..a.key_end].cmp(&out[b.key_start..b.key_end]));
        let region_end = out.len();
        out.push(b'{');
        for (i, e) in mine.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_within(e.key_end..e.end);
        }
        out.push(b'}');
        let produced = out.len() - region_end;
        out.copy_within(region_end.., self.start);
        out.truncate(self.start + produced);
        entries.truncate(self.base);
    }
}

impl<'a> ser::Serializer for CanonSer<'a> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = ser::Impossible<(), CanonicalError>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = ser::Impossible<(), CanonicalError>;

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.st
            .out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        write_int(v, &mut self.st.out);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        write_int(v, &mut self.st.out);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), CanonicalError> {
        // serde_json writes f32 through its own shortest form; reading that
        // back gives the f64 of the shortest decimal.
        let mut b = StackBuf::new();
        let _ = write!(b, "{v}");
        let f = std::str::from_utf8(b.as_bytes())
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::from(v));
        self.serialize_f64(f)
    }
    fn serialize_f64(self, v: f64) -> Result<(), CanonicalError> {
        write_python_float(v, &mut self.st.out);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        let mut b = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut b))
    }
    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        write_python_str(v, &mut self.st.out);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        use ser::SerializeSeq;
        let mut s = self.serialize_seq(Some(v.len()))?;
        for b in v {
            s.serialize_element(b)?;
        }
        s.end()
    }
    fn serialize_none(self) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), CanonicalError> {
        self.st.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _idx: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _idx: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        use ser::SerializeMap;
        let mut m = self.serialize_map(Some(1))?;
        m.serialize_entry(variant, value)?;
        m.end()
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, CanonicalError> {
        let start = self.st.out.len();
        let base = self.st.entries.len();
        self.st.out.push(b'[');
        Ok(Compound {
            st: self.st,
            depth: self.depth + 1,
            start,
            base,
            first: true,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a>, CanonicalError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, CanonicalError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _idx: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, CanonicalError> {
        Err(CanonicalError("tuple variants are not supported".into()))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, CanonicalError> {
        let start = self.st.out.len();
        let base = self.st.entries.len();
        Ok(Compound {
            st: self.st,
            depth: self.depth + 1,
            start,
            base,
            first: true,
        })
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, CanonicalError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _idx: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, CanonicalError> {
        Err(CanonicalError("struct variants are not supported".into()))
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Self::Error> {
        if !self.first {
            self.st.out.push(b',');
        }
        self.first = false;
        value.serialize(CanonSer {
            st: self.st,
            depth: self.depth,
        })
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.st.out.push(b']');
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Self::Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), CanonicalError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Self::Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), CanonicalError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Self::Error> {
        let k = key.serialize(KeySer)?;
        self.key_raw(&k);
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Self::Error> {
        value.serialize(CanonSer {
            st: self.st,
            depth: self.depth,
        })?;
        self.finish_entry();
        Ok(())
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.end_object();
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        if self.depth == 1 && key == "integrity" {
            return Ok(());
        }
        self.key_raw(key);
        value.serialize(CanonSer {
            st: self.st,
            depth: self.depth,
        })?;
        self.finish_entry();
        Ok(())
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.end_object();
        Ok(())
    }
}

/// Serializes a map key to its string (JSON object keys must be strings).
struct KeySer;

impl ser::Serializer for KeySer {
    type Ok = String;
    type Error = CanonicalError;
    type SerializeSeq = ser::Impossible<String, CanonicalError>;
    type SerializeTuple = ser::Impossible<String, CanonicalError>;
    type SerializeTupleStruct = ser::Impossible<String, CanonicalError>;
    type SerializeTupleVariant = ser::Impossible<String, CanonicalError>;
    type SerializeMap = ser::Impossible<String, CanonicalError>;
    type SerializeStruct = ser::Impossible<String, CanonicalError>;
    type SerializeStructVariant = ser::Impossible<String, CanonicalError>;

    fn serialize_str(self, v: &str) -> Result<String, CanonicalError> {
        Ok(v.to_owned())
    }
    fn serialize_char(self, v: char) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_unit_variant(
        self,
        _n: &'static str,
        _i: u32,
        variant: &'static str,
    ) -> Result<String, CanonicalError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _n: &'static str,
        value: &T,
    ) -> Result<String, CanonicalError> {
        value.serialize(self)
    }
    fn serialize_bool(self, _v: bool) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_i8(self, _v: i8) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_i16(self, _v: i16) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_i32(self, _v: i32) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_i64(self, _v: i64) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_u8(self, _v: u8) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_u16(self, _v: u16) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_u32(self, _v: u32) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_u64(self, _v: u64) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_f32(self, _v: f32) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_f64(self, _v: f64) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _v: &T) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_unit(self) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _n: &'static str) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _value: &T,
    ) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_seq(self, _l: Option<usize>) -> Result<Self::SerializeSeq, CanonicalError> {
        Err(key_error())
    }
    fn serialize_tuple(self, _l: usize) -> Result<Self::SerializeTuple, CanonicalError> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _n: &'static str,
        _l: usize,
    ) -> Result<Self::SerializeTupleStruct, CanonicalError> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _l: usize,
    ) -> Result<Self::SerializeTupleVariant, CanonicalError> {
        Err(key_error())
    }
    fn serialize_map(self, _l: Option<usize>) -> Result<Self::SerializeMap, CanonicalError> {
        Err(key_error())
    }
    fn serialize_struct(
        self,
        _n: &'static str,
        _l: usize,
    ) -> Result<Self::SerializeStruct, CanonicalError> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _l: usize,
    ) -> Result<Self::SerializeStructVariant, CanonicalError> {
        Err(key_error())
    }
}

fn key_error() -> CanonicalError {
    CanonicalError("a map key is not a string".into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
