//! Keeping PHI out of the audit trail by type: [`Phi<T>`], the [`AuditId`]
//! trait for identifiers, and keyed pseudonyms.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::util::text::Text;

/// Protected health information.
///
/// `Debug` and `Display` print `[PHI REDACTED]`; there is no `Serialize`, no
/// [`crate::MetadataValue`] and no [`AuditId`] implementation, so a `Phi<T>`
/// cannot reach an audit event except through [`crate::PseudonymKey`].
///
/// A parameter typed `Phi<T>` (also `&Phi<T>`, `Option<Phi<T>>`, ...) of an
/// `#[audited]` function is tainted like a `#[phi]` one: mentioning it in the
/// attribute or in `record!` is a compile error, even through `.expose()`.
///
/// It implements `serde::Deserialize` (never `Serialize`), so PHI fields of
/// domain structs read from a database or JSON can carry the type: a value
/// that fails to deserialize gives an error that does not quote it.
///
/// ```
/// use phi_audit::Phi;
/// let name = Phi::new(String::from("Jane Doe"));
/// assert_eq!(format!("{name:?} {name}"), "[PHI REDACTED] [PHI REDACTED]");
/// assert_eq!(name.expose(), "Jane Doe");
///
/// #[derive(serde::Deserialize, Debug)]
/// struct Patient { id: String, name: Phi<String> }
/// let p: Patient = serde_json::from_str(r#"{"id":"p-1","name":"Jane Doe"}"#).unwrap();
/// assert_eq!(p.name.expose(), "Jane Doe");
/// assert!(!format!("{p:?}").contains("Jane"));
/// ```
///
/// ```compile_fail
/// // Never `Serialize`: PHI does not leave through serde either.
/// let name = phi_audit::Phi::new(String::from("Jane Doe"));
/// let json = serde_json::to_string(&name);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Phi<T>(T);

impl<T> Phi<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Phi<T> {
        Phi(value)
    }

    /// The wrapped value, for the code that legitimately works with it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Mutable access to the wrapped value.
    pub fn expose_mut(&mut self) -> &mut T {
        &mut self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Phi<T> {
    fn from(value: T) -> Self {
        Phi(value)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Phi<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The inner error may quote the value ("invalid type: string
        // \"Jane Doe\", expected u32"): it is replaced by one that does not.
        T::deserialize(d).map(Phi).map_err(|_| {
            <D::Error as serde::de::Error>::custom(
                "a PHI field could not be read (its value is not shown)",
            )
        })
    }
}

const REDACTED: &str = "[PHI REDACTED]";

impl<T> fmt::Debug for Phi<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Phi<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A value usable as an identifier in an event (`resource.id`,
/// `resource.patient_id`, an actor's `subject_id`).
///
/// Implemented for string types, integers and UUIDs. `Phi<T>` does not
/// implement it: to store an identifier that is itself PHI, store a keyed
/// pseudonym of it (`pseudonym(..)` in `#[audited]`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as an audit identifier",
    label = "not an identifier type",
    note = "identifiers are strings, integers or UUIDs; `Option` of those omits the field when `None`",
    note = "PHI (`Phi<T>` or a `#[phi]` argument) can never be stored; wrap it in `pseudonym(..)` to store a keyed token instead"
)]
pub trait AuditId {
    /// The identifier text, or `None` to leave the field out.
    fn to_audit_id(&self) -> Option<Text>;
}

impl<T: AuditId + ?Sized> AuditId for &T {
    fn to_audit_id(&self) -> Option<Text> {
        (**self).to_audit_id()
    }
}

impl<T: AuditId> AuditId for Option<T> {
    fn to_audit_id(&self) -> Option<Text> {
        self.as_ref().and_then(AuditId::to_audit_id)
    }
}

macro_rules! id_via_str {
    ($($t:ty),*) => {$(
        impl AuditId for $t {
            fn to_audit_id(&self) -> Option<Text> {
                Some(Text::new(self))
            }
        }
    )*};
}
id_via_str!(str, String, Cow<'_, str>, Box<str>);

impl AuditId for Text {
    fn to_audit_id(&self) -> Option<Text> {
        Some(self.clone())
    }
}

impl AuditId for Arc<str> {
    fn to_audit_id(&self) -> Option<Text> {
        Some(Text::from(self.clone()))
    }
}

impl AuditId for uuid::Uuid {
    fn to_audit_id(&self) -> Option<Text> {
        let mut buf = [0u8; 36];
        Some(Text::new(self.hyphenated().encode_lower(&mut buf)))
    }
}

macro_rules! id_via_int {
    ($($t:ty),*) => {$(
        impl AuditId for $t {
            fn to_audit_id(&self) -> Option<Text> {
                let mut buf = itoa_buf::Buf::new();
                Some(Text::new(buf.format(*self as i128)))
            }
        }
    )*};
}
id_via_int!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

mod itoa_buf {
    /// Integer formatting into a stack buffer (no allocation).
    pub struct Buf([u8; 40]);
    impl Buf {
        pub fn new() -> Buf {
            Buf([0; 40])
        }
        pub fn format(&mut self, v: i128) -> &str {
            let neg = v < 0;
            let mut n = v.unsigned_abs();
            let mut i = self.0.len();
            loop {
                i -= 1;
                self.0[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            if neg {
                i -= 1;
                self.0[i] = b'-';
            }
            std::str::from_utf8(&self.0[i..]).unwrap_or("")
        }
    }
}

/// A value that can be turned into a keyed pseudonym: its bytes are the HMAC
/// input. Unlike [`AuditId`], this *is* implemented for [`Phi<T>`]: a keyed
/// token reveals nothing without the key.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be pseudonymized",
    note = "pseudonyms are computed over strings, integers, UUIDs, or `Phi` of those"
)]
pub trait PseudonymSource {
    /// Feeds the canonical bytes of the value to `sink`.
    fn pseudonym_bytes(&self, sink: &mut dyn FnMut(&[u8]));
}

impl<T: PseudonymSource> PseudonymSource for Phi<T> {
    fn pseudonym_bytes(&self, sink: &mut dyn FnMut(&[u8])) {
        self.0.pseudonym_bytes(sink)
    }
}

impl<T: AuditId + ?Sized> PseudonymSource for T {
    fn pseudonym_bytes(&self, sink: &mut dyn FnMut(&[u8])) {
        if let Some(t) = self.to_audit_id() {
            sink(t.as_bytes())
        }
    }
}

/// A secret key for pseudonyms: HMAC-SHA256 of an identifier, written as 64
/// lowercase hex characters. The same key and value always give the same
/// token, so an access review can still group by patient without storing who
/// the patient is.
///
/// ```
/// use phi_audit::PseudonymKey;
/// let key = PseudonymKey::new(b"0123456789abcdef0123456789abcdef").unwrap();
/// let a = key.pseudonym(&"MRN-0042");
/// assert_eq!(a.len(), 64);
/// assert_eq!(a, key.pseudonym(&"MRN-0042"));
/// assert_ne!(a, key.pseudonym(&"MRN-0043"));
/// ```
#[derive(Clone)]
pub struct PseudonymKey(Arc<[u8]>);

/// A pseudonym key shorter than 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakKeyError;

impl fmt::Display for WeakKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pseudonym key must be at least 16 bytes (32 random bytes recommended)")
    }
}

impl std::error::Error for WeakKeyError {}

impl PseudonymKey {
    /// A key from secret bytes (at least 16; 32 random bytes recommended).
    pub fn new(key: &[u8]) -> Result<PseudonymKey, WeakKeyError> {
        if key.len() < 16 {
            return Err(WeakKeyError);
        }
        Ok(PseudonymKey(Arc::from(key)))
    }

    /// The pseudonym of `value`.
    pub fn pseudonym<T: PseudonymSource + ?Sized>(&self, value: &T) -> Text {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            // HMAC accepts keys of any length; this branch cannot be taken.
            Err(_) => return Text::EMPTY,
        };
        value.pseudonym_bytes(&mut |b| mac.update(b));
        let digest = mac.finalize().into_bytes();
        let mut hex = [0u8; 64];
        crate::util::hex::encode_into(&digest, &mut hex);
        Text::new(std::str::from_utf8(&hex).unwrap_or(""))
    }
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey([secret])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_format_without_allocation_surprises() {
        assert_eq!(42u64.to_audit_id().unwrap(), "42");
        assert_eq!((-7i32).to_audit_id().unwrap(), "-7");
        assert_eq!(u64::MAX.to_audit_id().unwrap(), "18446744073709551615");
        assert_eq!(i64::MIN.to_audit_id().unwrap(), "-9223372036854775808");
        assert!(Option::<&str>::None.to_audit_id().is_none());
    }

    #[test]
    fn pseudonym_is_hmac_sha256_hex() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        // (our keys must be >= 16 bytes, so build the MAC directly to check the hex).
        let key = PseudonymKey(Arc::from(&b"Jefe"[..]));
        assert_eq!(
            key.pseudonym("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let k = PseudonymKey::new(&[7u8; 32]).unwrap();
        assert_eq!(k.pseudonym(&Phi::new("x")), k.pseudonym("x"));
        assert!(PseudonymKey::new(b"short").is_err());
        assert_eq!(format!("{k:?}"), "PseudonymKey([secret])");
    }

    #[test]
    fn phi_deserializes_without_quoting_bad_values() {
        let p: Phi<String> = serde_json::from_str("\"Jane Doe\"").unwrap();
        assert_eq!(p.expose(), "Jane Doe");
        let e = serde_json::from_str::<Phi<u32>>("\"Jane Doe\"").unwrap_err();
        assert!(!e.to_string().contains("Jane"), "{e}");
        let o: Option<Phi<u8>> = serde_json::from_str("null").unwrap();
        assert!(o.is_none());
    }
}
