//! A single-pass check that a ledger line is already in canonical form (the
//! form [`crate::integrity::canonical_json`] writes), locating its top-level
//! `integrity` member and `timestamp` on the way.
//!
//! When [`scan_line`] accepts a line, the line parses (with `serde_json`) to
//! a JSON object whose canonical serialization is the line itself, so the
//! chain hash covers the line's bytes minus the `integrity` member. Anything
//! it is not sure of (escaped keys, floats it cannot reproduce, integers of
//! 19 digits or more, deep nesting, non-string integrity fields) makes it
//! return `None`, and the caller falls back to the general parser.

/// A byte range `start..end` of the scanned line.
pub(crate) type Span = (usize, usize);

/// The top-level `integrity` member of a canonical line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Integrity {
    /// No `integrity` key.
    Absent,
    /// `"integrity":null`.
    Null,
    /// An object; spans are string contents (no escapes in them).
    Object {
        /// `event_hash`, when present.
        event_hash: Option<Span>,
        /// `hash_alg`, when present.
        hash_alg: Option<Span>,
        /// `prev_event_hash`, when present and not null.
        prev: Option<Span>,
    },
}

/// What [`scan_line`] found in a canonical line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// The bytes to leave out of the hash: the `integrity` member with one
    /// adjacent comma (`None` when there is no such member).
    pub cut: Option<Span>,
    /// The `integrity` member.
    pub integrity: Integrity,
    /// Contents of the top-level `timestamp` string when it is a string
    /// without escapes (an escaped one can never be a well-formed
    /// timestamp, so it counts as absent).
    pub timestamp: Option<Span>,
}

/// Deepest nesting accepted here (serde_json's own limit is 128).
const MAX_DEPTH: u32 = 100;

use crate::json::bytes::next_special;

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

/// Checks that `line` (without its newline) is a canonical JSON object and
/// locates its `integrity` member; `None` when it is not (or not surely)
/// canonical.
pub(crate) fn scan_line(line: &[u8]) -> Option<Scanned> {
    if line.first() != Some(&b'{') || line.last() != Some(&b'}') {
        return None;
    }
    std::str::from_utf8(line).ok()?;
    let mut s = Scanner { b: line, i: 1 };
    let mut out = Scanned {
        cut: None,
        integrity: Integrity::Absent,
        timestamp: None,
    };
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        let mut prev_key: &[u8] = &[];
        let mut first = true;
        loop {
            let member_start = s.i;
            let key = s.key()?;
            if !first && !after(key, prev_key) {
                return None;
            }
            s.expect(b':')?;
            match key {
                b"integrity" => {
                    out.integrity = s.integrity()?;
                    let end = s.i;
                    out.cut = Some(if !first {
                        (member_start - 1, end)
                    } else if s.peek()? == b',' {
                        (member_start, end + 1)
                    } else {
                        (member_start, end)
                    });
                }
                b"timestamp" if s.peek()? == b'"' => {
                    let (span, escaped) = s.string()?;
                    out.timestamp = (!escaped).then_some(span);
                }
                _ => s.value(1)?,
            }
            prev_key = key;
            first = false;
            match s.peek()? {
                b',' => s.i += 1,
                b'}' => {
                    s.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (s.i == line.len()).then_some(out)
}

/// In a canonical object `obj`, the offset at which a top-level member
/// named `key` sorts: right after `{` or at the `,` or `}` that follows the
/// last smaller member. `None` when `obj` is not a canonical object or
/// already has that key.
pub(crate) fn insert_position(obj: &[u8], key: &[u8]) -> Option<usize> {
    if obj.first() != Some(&b'{') {
        return None;
    }
    let mut s = Scanner { b: obj, i: 1 };
    if s.peek()? == b'}' {
        return Some(1);
    }
    loop {
        let at = s.i;
        let k = s.key()?;
        if k == key {
            return None;
        }
        if k > key {
            // Before this member: at its start when it is the first one,
            // else at the comma before it.
            return Some(if at == 1 { 1 } else { at - 1 });
        }
        s.expect(b':')?;
        s.value(1)?;
        match s.peek()? {
            b',' => s.i += 1,
            b'}' => return Some(s.i),
            _ => return None,
        }
    }
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// A key without escapes; returns its contents.
    #[inline]
    fn key(&mut self) -> Option<&'a [u8]> {
        let ((start, end), escaped) = self.string()?;
        if escaped {
            return None;
        }
        Some(&self.b[start..end])
    }

    /// A string in canonical form; returns the contents' span and whether
    /// it holds an escape (a raw control byte is never canonical).
    #[inline]
    fn string(&mut self) -> Option<(Span, bool)> {
        self.expect(b'"')?;
        let start = self.i;
        let mut escaped = false;
        let b = self.b;
        loop {
            // Plain bytes, eight at a time; jump to the first special one.
            self.i = next_special(b, self.i, true);
            match *b.get(self.i)? {
                b'"' => {
                    let end = self.i;
                    self.i += 1;
                    return Some(((start, end), escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return None,
            }
        }
    }

    /// An escape as the canonical form writes it (at `\`).
    fn escape(&mut self) -> Option<()> {
        let c = *self.b.get(self.i + 1)?;
        match c {
            b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f' => {
                self.i += 2;
                Some(())
            }
            b'u' => {
                let h = self.b.get(self.i + 2..self.i + 6)?;
                if h[0] != b'0' || h[1] != b'0' {
                    return None;
                }
                let v = hex(h[2])? * 16 + hex(h[3])?;
                // Only controls without a short form are written as \u00XX.
                if v >= 0x20 || matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                    return None;
                }
                self.i += 6;
                Some(())
            }
            _ => None,
        }
    }

    fn value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + lit.len())? == lit {
            self.i += lit.len();
            Some(())
        } else {
            None
        }
    }

    fn object(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        let mut prev: Option<&[u8]> = None;
        loop {
            let key = self.key()?;
            if prev.is_some_and(|p| !after(key, p)) {
                return None;
            }
            prev = Some(key);
            self.expect(b':')?;
            self.value(depth)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A number as the canonical form writes it: an integer of at most 18
    /// digits without a leading zero (not `-0`), or a float exactly as
    /// Python's `repr` writes it.
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        let b = self.b;
        let mut j = start;
        if b.get(j) == Some(&b'-') {
            j += 1;
        }
        let digits_start = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        let digits = j - digits_start;
        if digits == 0 {
            return None;
        }
        let is_float = matches!(b.get(j), Some(b'.' | b'e' | b'E'));
        if !is_float {
            if digits > 18 || (b[digits_start] == b'0' && (digits > 1 || digits_start > start)) {
                return None;
            }
            self.i = j;
            return Some(());
        }
        while b
            .get(j)
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            j += 1;
        }
        let text = std::str::from_utf8(&b[start..j]).ok()?;
        let f: f64 = text.parse().ok()?;
        if !f.is_finite() {
            return None;
        }
        let mut again = Vec::with_capacity(32);
        crate::integrity::write_python_float(f, &mut again);
        if again != b[start..j] {
            return None;
        }
        self.i = j;
        Some(())
    }

    /// The value of the top-level `integrity` member: null, or an object
    /// whose `event_hash`, `hash_alg` and `prev_event_hash` are strings
    /// without escapes (`prev_event_hash` may be null).
    fn integrity(&mut self) -> Option<Integrity> {
        match self.peek()? {
            b'n' => {
                self.literal(b"null")?;
                return Some(Integrity::Null);
            }
            b'{' => {}
            _ => return None,
        }
        self.i += 1;
        let mut event_hash = None;
        let mut hash_alg = None;
        let mut prev = None;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(Integrity::Object {
                event_hash,
                hash_alg,
                prev,
            });
        }
        let mut last: Option<&[u8]> = None;
        loop {
            let key = self.key()?;
            if last.is_some_and(|p| !after(key, p)) {
                return None;
            }
            last = Some(key);
            self.expect(b':')?;
            match key {
                b"event_hash" => event_hash = Some(self.plain_string()?),
                b"hash_alg" => hash_alg = Some(self.plain_string()?),
                b"prev_event_hash" => {
                    if self.peek()? == b'n' {
                        self.literal(b"null")?;
                    } else {
                        prev = Some(self.plain_string()?);
                    }
                }
                _ => self.value(2)?,
            }
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(Integrity::Object {
                        event_hash,
                        hash_alg,
                        prev,
                    });
                }
                _ => return None,
            }
        }
    }

    fn plain_string(&mut self) -> Option<Span> {
        if self.peek()? != b'"' {
            return None;
        }
        let (span, escaped) = self.string()?;
        (!escaped).then_some(span)
    }
}

/// Whether `key` sorts strictly after `prev` (keys mostly differ in their
/// first byte: decided there without a call to `memcmp`).
#[inline]
fn after(key: &[u8], prev: &[u8]) -> bool {
    match (key.first(), prev.first()) {
        (Some(a), Some(b)) if a != b => a > b,
        _ => key > prev,
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn canonical(line: &str) -> bool {
        scan_line(line.as_bytes()).is_some()
    }

    #[test]
    fn accepts_exactly_what_the_canonical_serializer_writes() {
        for line in [
            r#"{}"#,
            r#"{"a":1,"b":[true,false,null,-5,"x\n\u0001é"],"c":{"d":1.5e+300,"e":0.0001}}"#,
            r#"{"a":{},"b":[],"integrity":{"event_hash":"ab","hash_alg":"sha256"},"z":0}"#,
        ] {
            assert!(canonical(line), "{line}");
            let v: Value = serde_json::from_str(line).unwrap();
            let mut out = Vec::new();
            crate::integrity::canonical_json(&v, &mut out);
            assert_eq!(out, line.as_bytes());
        }
        for line in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{ "a":1}"#,
            r#"{"a":1e16}"#,
            r#"{"a":-0}"#,
            r#"{"a":01}"#,
            r#"{"a":1234567890123456789}"#,
            r#"{"a":"\/"}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"\u001F"}"#,
            r#"{"a":"\u000a"}"#,
            r#"{"\n":1}"#,
            r#"{"a":1}x"#,
            r#"{"a":tru}"#,
            r#"[1]"#,
            r#"{"integrity":5}"#,
            r#"{"integrity":{"event_hash":5}}"#,
        ] {
            assert!(!canonical(line), "{line}");
        }
        // Raw control bytes: never canonical, wherever they are.
        for line in [
            "{\"a\":\"x\u{1}\"}",
            "{\"a\":\"0123456789\u{1f}abc\"}",
            "{\"a\u{0}\":1}",
            "{\"a\":\"x\ty\"}",
            "{\"a\":1,\u{a}\"b\":2}",
        ] {
            assert!(!canonical(line), "{line:?}");
        }
    }

    #[test]
    fn cuts_the_integrity_member_with_one_comma() {
        let cut = |line: &str| {
            let s = scan_line(line.as_bytes()).unwrap();
            let (a, b) = s.cut.unwrap();
            format!("{}{}", &line[..a], &line[b..])
        };
        assert_eq!(cut(r#"{"a":1,"integrity":{},"z":2}"#), r#"{"a":1,"z":2}"#);
        assert_eq!(cut(r#"{"integrity":{},"z":2}"#), r#"{"z":2}"#);
        assert_eq!(cut(r#"{"a":1,"integrity":null}"#), r#"{"a":1}"#);
        assert_eq!(cut(r#"{"integrity":{"x":[1]}}"#), r#"{}"#);
    }
}
