//! [`Text`]: the string type of event fields.
//!
//! Constant parts of a call site are `&'static str` and short identifiers fit
//! inline, so building an event for a typical audited call allocates nothing
//! for its strings. Longer strings are shared (`Arc<str>`), so cloning an event
//! or a context never copies string data.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const INLINE_CAP: usize = 23;

/// Generates [`InlineLen`], whose unused values (24..=255) give `Repr` room
/// for its tag, so 23 bytes fit inline in a 24-byte `Text`.
macro_rules! inline_len {
    ($($v:ident = $n:literal),* $(,)?) => {
        /// The length of an inline text: 0 to [`INLINE_CAP`].
        #[derive(Clone, Copy)]
        #[repr(u8)]
        enum InlineLen { $($v = $n),* }

        impl InlineLen {
            const ALL: [InlineLen; INLINE_CAP + 1] = [$(InlineLen::$v),*];
        }
    };
}

inline_len!(
    L0 = 0,
    L1 = 1,
    L2 = 2,
    L3 = 3,
    L4 = 4,
    L5 = 5,
    L6 = 6,
    L7 = 7,
    L8 = 8,
    L9 = 9,
    L10 = 10,
    L11 = 11,
    L12 = 12,
    L13 = 13,
    L14 = 14,
    L15 = 15,
    L16 = 16,
    L17 = 17,
    L18 = 18,
    L19 = 19,
    L20 = 20,
    L21 = 21,
    L22 = 22,
    L23 = 23,
);

// The point of `InlineLen`: the tag costs no byte of its own.
const _: () = assert!(std::mem::size_of::<Text>() == 24);
const _: () = assert!(std::mem::size_of::<Option<Text>>() == 24);

/// An immutable, cheaply clonable string used for every text field of an event.
///
/// ```
/// use phi_audit::Text;
/// let a = Text::from_static("Patient");
/// let b = Text::from("p-123");
/// assert_eq!(&*a, "Patient");
/// assert_eq!(b, "p-123");
/// ```
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Inline {
        buf: [u8; INLINE_CAP],
        len: InlineLen,
    },
    Shared(Arc<str>),
}

impl Text {
    /// The empty string.
    pub const EMPTY: Text = Text(Repr::Static(""));

    /// A text borrowing a `'static` string: no allocation, ever.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Repr::Static(s))
    }

    /// Copies `s`: inline (no allocation) up to 23 bytes, shared above that.
    pub fn new(s: &str) -> Text {
        if s.len() <= INLINE_CAP {
            let mut buf = [0u8; INLINE_CAP];
            copy_short(&mut buf, s.as_bytes());
            Text(Repr::Inline {
                len: InlineLen::ALL[s.len()],
                buf,
            })
        } else {
            Text(Repr::Shared(Arc::from(s)))
        }
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            // SAFETY: `Inline` is only built by `Text::new`, which copies all
            // `len` bytes of a `&str` (valid UTF-8, never cut) into `buf`;
            // the fields are private and never mutated afterwards.
            Repr::Inline { len, buf } => unsafe {
                std::str::from_utf8_unchecked(buf.get_unchecked(..*len as usize))
            },
            Repr::Shared(s) => s,
        }
    }

    /// Length in characters (Unicode scalar values), as JSON Schema counts.
    pub fn char_len(&self) -> usize {
        self.as_str().chars().count()
    }

    /// Returns this text cut to at most `max_chars` characters (never inside a
    /// character). Returns `None` when it already fits.
    pub fn truncated(&self, max_chars: usize) -> Option<Text> {
        let s = self.as_str();
        // No more bytes than the limit: no more characters either.
        if s.len() <= max_chars {
            return None;
        }
        let (idx, _) = s.char_indices().nth(max_chars)?;
        Some(Text::new(&s[..idx]))
    }
}

/// Copies `src` (at most [`INLINE_CAP`] bytes) to the start of `dst` with a
/// few fixed-size, possibly overlapping moves instead of a call to `memcpy`
/// (an identifier is copied on every audited call).
#[inline(always)]
fn copy_short(dst: &mut [u8; INLINE_CAP], src: &[u8]) {
    let n = src.len();
    debug_assert!(n <= INLINE_CAP);
    if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        if n > 16 {
            dst[8..16].copy_from_slice(&src[8..16]);
        }
        dst[n - 8..n].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..n].copy_from_slice(&src[n - 4..]);
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

impl Default for Text {
    fn default() -> Self {
        Text::EMPTY
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::new(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        if s.len() <= INLINE_CAP {
            Text::new(&s)
        } else {
            Text(Repr::Shared(Arc::from(s)))
        }
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Text::new(s)
    }
}

impl From<Arc<str>> for Text {
    fn from(s: Arc<str>) -> Self {
        Text(Repr::Shared(s))
    }
}

impl From<std::borrow::Cow<'_, str>> for Text {
    fn from(s: std::borrow::Cow<'_, str>) -> Self {
        match s {
            std::borrow::Cow::Borrowed(b) => Text::new(b),
            std::borrow::Cow::Owned(o) => Text::from(o),
        }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Text {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text::new(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text::from(v))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_shared_static_agree() {
        let short = Text::new("abc");
        let long = Text::new(&"x".repeat(40));
        assert!(matches!(short.0, Repr::Inline { .. }));
        assert!(matches!(long.0, Repr::Shared(_)));
        // Every length up to the inline capacity stays inline and intact,
        // multi-byte characters included; one more byte is shared.
        for n in 0..=INLINE_CAP {
            let s = "é".repeat(n / 2) + &"x".repeat(n % 2);
            let t = Text::new(&s);
            assert!(matches!(t.0, Repr::Inline { .. }), "{n}");
            assert_eq!(t.as_str(), s);
            assert_eq!(Some(t.clone()).as_deref(), Some(s.as_str()));
            // A different byte at every position: each lands where it belongs.
            let s: String = (0..n).map(|i| char::from(b'a' + i as u8)).collect();
            assert_eq!(Text::new(&s).as_str(), s, "{n}");
        }

        assert!(matches!(
            Text::new(&"x".repeat(INLINE_CAP + 1)).0,
            Repr::Shared(_)
        ));
        assert_eq!(short, Text::from_static("abc"));
        assert_eq!(long.len(), 40);
        assert_eq!(std::mem::size_of::<Text>(), 24);
    }

    #[test]
    fn truncation_counts_characters() {
        let t = Text::new("héllo wörld");
        assert_eq!(t.truncated(4).unwrap(), "héll");
        assert!(t.truncated(11).is_none());
        let e = Text::new("😀😀😀");
        assert_eq!(e.truncated(2).unwrap(), "😀😀");
    }
}
