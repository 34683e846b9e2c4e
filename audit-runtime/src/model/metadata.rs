//! Event metadata: at most 20 keys of scalar values, and the
//! [`MetadataValue`] trait that decides at compile time what may be recorded.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::util::text::Text;

/// One scalar metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer above `i64::MAX`.
    UInt(u64),
    /// A float. Non-finite values never reach an event: the dispatcher drops
    /// them and counts them.
    Float(f64),
    /// A string.
    Str(Text),
}

impl MetaValue {
    /// True for NaN and infinities, which JSON cannot carry.
    pub fn is_non_finite(&self) -> bool {
        matches!(self, MetaValue::Float(f) if !f.is_finite())
    }
}

impl Serialize for MetaValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MetaValue::Null => s.serialize_unit(),
            MetaValue::Bool(b) => s.serialize_bool(*b),
            MetaValue::Int(i) => s.serialize_i64(*i),
            MetaValue::UInt(u) => s.serialize_u64(*u),
            MetaValue::Float(f) => s.serialize_f64(*f),
            MetaValue::Str(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for MetaValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar (string, number, boolean or null)")
            }
            fn visit_unit<E>(self) -> Result<MetaValue, E> {
                Ok(MetaValue::Null)
            }
            fn visit_none<E>(self) -> Result<MetaValue, E> {
                Ok(MetaValue::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<MetaValue, E> {
                Ok(MetaValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<MetaValue, E> {
                Ok(MetaValue::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<MetaValue, E> {
                Ok(match i64::try_from(v) {
                    Ok(i) => MetaValue::Int(i),
                    Err(_) => MetaValue::UInt(v),
                })
            }
            fn visit_f64<E>(self, v: f64) -> Result<MetaValue, E> {
                Ok(MetaValue::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<MetaValue, E> {
                Ok(MetaValue::Str(Text::new(v)))
            }
            fn visit_string<E>(self, v: String) -> Result<MetaValue, E> {
                Ok(MetaValue::Str(Text::from(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Metadata of one event: ordered keys, each at most once.
///
/// ```
/// use phi_audit::{Metadata, MetaValue};
/// let mut m = Metadata::new();
/// m.insert("page", 3u32);
/// m.insert("reason", "treatment");
/// m.insert("page", 4u32); // replaces
/// assert_eq!(m.len(), 2);
/// assert_eq!(m.get("page"), Some(&MetaValue::Int(4)));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata(Vec<(Text, MetaValue)>);

impl Metadata {
    /// Empty metadata (no allocation).
    pub const fn new() -> Metadata {
        Metadata(Vec::new())
    }

    /// Sets `key` to `value`, replacing an earlier value of the same key.
    pub fn insert(&mut self, key: impl Into<Text>, value: impl MetadataValue) {
        self.insert_value(key.into(), value.to_meta_value());
    }

    /// Sets `key` to an already converted value.
    pub fn insert_value(&mut self, key: Text, value: MetaValue) {
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.0.push((key, value));
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&Text, &MetaValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Keeps only the entries for which `keep` returns true; returns how many
    /// were removed.
    pub fn retain(&mut self, mut keep: impl FnMut(&Text, &mut MetaValue) -> bool) -> usize {
        let before = self.0.len();
        self.0.retain_mut(|(k, v)| keep(k, v));
        before - self.0.len()
    }

    /// Gives every key the name `f` returns for it; entries `f` turns down,
    /// and those whose new name an earlier entry took, are removed. Returns
    /// how many were removed.
    pub(crate) fn rekey(&mut self, mut f: impl FnMut(&Text) -> Option<Text>) -> usize {
        let before = self.0.len();
        let mut kept: Vec<(Text, MetaValue)> = Vec::with_capacity(before);
        for (k, v) in self.0.drain(..) {
            if let Some(k) = f(&k) {
                if !kept.iter().any(|(e, _)| *e == k) {
                    kept.push((k, v));
                }
            }
        }
        self.0 = kept;
        before - self.0.len()
    }

    /// Moves every entry of `other` into `self` (later keys win).
    pub fn extend(&mut self, other: Metadata) {
        for (k, v) in other.0 {
            self.insert_value(k, v);
        }
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of scalar values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut m = Metadata::new();
                while let Some((k, v)) = map.next_entry::<Text, MetaValue>()? {
                    m.insert_value(k, v);
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

/// A value that may be recorded as audit metadata: a scalar that is not PHI.
///
/// Implemented for string types, integers, floats, `bool`, and `Option` and
/// references of those. Nothing else can be metadata: not collections, not
/// structs, and never [`crate::Phi`].
///
/// ```compile_fail
/// use phi_audit::{Metadata, Phi};
/// let mut m = Metadata::new();
/// m.insert("name", Phi::new("Jane Doe")); // error: PHI cannot be recorded
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be recorded as audit metadata",
    label = "not a scalar metadata value",
    note = "metadata values are strings, integers, floats, bool, or Option of those",
    note = "PHI (`Phi<T>` or a `#[phi]` argument) can never be recorded; for an identifier, record `pseudonym(..)` of it instead"
)]
pub trait MetadataValue {
    /// Converts to the stored scalar.
    fn to_meta_value(&self) -> MetaValue;
}

impl<T: MetadataValue + ?Sized> MetadataValue for &T {
    fn to_meta_value(&self) -> MetaValue {
        (**self).to_meta_value()
    }
}

impl<T: MetadataValue> MetadataValue for Option<T> {
    fn to_meta_value(&self) -> MetaValue {
        match self {
            Some(v) => v.to_meta_value(),
            None => MetaValue::Null,
        }
    }
}

impl MetadataValue for str {
    fn to_meta_value(&self) -> MetaValue {
        MetaValue::Str(Text::new(self))
    }
}

impl MetadataValue for String {
    fn to_meta_value(&self) -> MetaValue {
        MetaValue::Str(Text::new(self))
    }
}

impl MetadataValue for Text {
    fn to_meta_value(&self) -> MetaValue {
        MetaValue::Str(self.clone())
    }
}

impl MetadataValue for Cow<'_, str> {
    fn to_meta_value(&self) -> MetaValue {
        MetaValue::Str(Text::new(self))
    }
}

impl MetadataValue for Arc<str> {
    fn to_meta_value(&self) -> MetaValue {
        MetaValue::Str(Text::from(self.clone()))
    }
}

impl MetadataValue for Box<str> {
    fn to_meta_value(&self) -> MetaValue {
        MetaValue::Str(Text::new(self))
    }
}

impl MetadataValue for bool {
    fn to_meta_value(&self) -> MetaValue {
        MetaValue::Bool(*self)
    }
}

impl MetadataValue for char {
    fn to_meta_value(&self) -> MetaValue {
        let mut b = [0u8; 4];
        MetaValue::Str(Text::new(self.encode_utf8(&mut b)))
    }
}

macro_rules! signed {
    ($($t:ty),*) => {$(
        impl MetadataValue for $t {
            fn to_meta_value(&self) -> MetaValue {
                MetaValue::Int(*self as i64)
            }
        }
    )*};
}
signed!(i8, i16, i32, i64, isize);

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl MetadataValue for $t {
            fn to_meta_value(&self) -> MetaValue {
                let v = *self as u64;
                match i64::try_from(v) {
                    Ok(i) => MetaValue::Int(i),
                    Err(_) => MetaValue::UInt(v),
                }
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64, usize);

impl MetadataValue for f64 {
    fn to_meta_value(&self) -> MetaValue {
        MetaValue::Float(*self)
    }
}

impl MetadataValue for f32 {
    fn to_meta_value(&self) -> MetaValue {
        // Through the shortest decimal form, so 0.1f32 records as 0.1, not
        // 0.10000000149011612.
        let s = self.to_string();
        MetaValue::Float(s.parse::<f64>().unwrap_or(f64::from(*self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_object_and_back() {
        let mut m = Metadata::new();
        m.insert("a", 1u8);
        m.insert("b", "x");
        m.insert("c", Option::<u32>::None);
        m.insert("d", 0.5f32);
        m.insert("e", u64::MAX);
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(
            j,
            r#"{"a":1,"b":"x","c":null,"d":0.5,"e":18446744073709551615}"#
        );
        let back: Metadata = serde_json::from_str(&j).unwrap();
        assert_eq!(back, m);
        assert!(serde_json::from_str::<Metadata>(r#"{"a":[1]}"#).is_err());
        assert!(serde_json::from_str::<Metadata>(r#"{"a":{"b":1}}"#).is_err());
    }
}
