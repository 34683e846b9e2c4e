//! Validation of one JSON text without building a `serde_json::Value`: the
//! same verdicts and messages as [`validate_value`](super::validate_value)
//! over `serde_json::from_slice`, from borrowed parsing.
//!
//! Two passes over the text:
//!
//! 1. [`syntax`] accepts exactly the texts `serde_json::from_slice::<Value>`
//!    accepts (its grammar, its nesting limit, paired surrogate escapes,
//!    numbers that fit an `f64`), without storing anything;
//! 2. the checker reads the objects the rule tables describe as sorted
//!    lists of borrowed members (a key, unescaped only when it holds an
//!    escape, and the byte span of its value), duplicates resolved as a
//!    `serde_json` map resolves them (the last one wins), and checks each
//!    member's span against its rule. Members outside the tables are
//!    skipped, never read.
//!
//! Violations come out in the order `validate_value` finds them, because
//! the members are visited in the order of a `serde_json` map (sorted by
//! key).

use std::borrow::Cow;

use super::{as_integer_f64, Checker, Node, Obj, ValidationErrors};
use crate::json::bytes::next_special;
use crate::SchemaVersion;

/// Why a text is not a JSON value (as `serde_json` reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonError {
    /// The text is not valid UTF-8.
    Utf8,
    /// The text is not one JSON value (`serde_json::from_slice` fails).
    Syntax,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JsonError::Utf8 => "not valid UTF-8",
            JsonError::Syntax => "not valid JSON",
        })
    }
}

impl std::error::Error for JsonError {}

/// Validates the JSON text `text` as an audit event, without building a
/// JSON tree.
///
/// The outer `Err` says the text is not a JSON value at all; otherwise the
/// inner result is exactly what
/// `validate_value(&serde_json::from_slice(text)?, version)` returns: the
/// same version, or the same violations in the same order.
///
/// ```
/// use phi_audit_runtime::schema::{validate_json, JsonError};
///
/// let line = br#"{"schema_version":"1.1","event_id":"6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10",
///   "timestamp":"2026-01-02T03:04:05.678Z","service":{"name":"charts"},
///   "actor":{"subject_id":"u-1","subject_type":"human"},"action":{"type":"READ"},
///   "resource":{"type":"Patient"},"outcome":{"status":"DENIED"}}"#;
/// let errors = validate_json(line, None).unwrap().unwrap_err();
/// assert_eq!(errors.violations()[0].path, "/outcome/error_type");
/// assert_eq!(validate_json(b"{\"a\":", None), Err(JsonError::Syntax));
/// ```
pub fn validate_json(
    text: &[u8],
    version: Option<SchemaVersion>,
) -> Result<Result<SchemaVersion, ValidationErrors>, JsonError> {
    let Ok(text) = std::str::from_utf8(text) else {
        return Err(JsonError::Utf8);
    };
    let mut spans = Vec::new();
    let (start, end) = syntax(text.as_bytes(), &mut spans).ok_or(JsonError::Syntax)?;
    let value = Raw(&text[start..end], false);
    let root = value.is_object().then(|| {
        let members = spans
            .iter()
            .map(|&(k0, k1, v0, v1)| (unescape(&text[k0 + 1..k1 - 1]), Raw(&text[v0..v1], false)))
            .collect();
        settle(members)
    });
    Ok(check(value, root, version))
}

// ---------------------------------------------------------------------------
// Pass 1: the grammar serde_json accepts
// ---------------------------------------------------------------------------

/// serde_json's nesting limit: it fails when entering the 128th level.
const DEPTH_LIMIT: usize = 127;

#[inline]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Checks that `b` (valid UTF-8) is one JSON value with optional
/// surrounding whitespace, as `serde_json::from_slice::<Value>` decides;
/// returns the value's span. When the value is an object, `members`
/// receives the spans of its members as written: the key with its quotes
/// and the value.
fn syntax(b: &[u8], members: &mut Vec<(usize, usize, usize, usize)>) -> Option<(usize, usize)> {
    let start = ws(b, 0);
    // Open containers, one bit each (1 = object); at most DEPTH_LIMIT.
    let mut stack = Stack::default();
    let mut i = start;
    // The root member being read: its key's span and its value's start.
    let mut key = (0, 0);
    let mut vstart = 0;
    'value: loop {
        i = ws(b, i);
        if stack.len() == 1 {
            vstart = i;
        }
        match *b.get(i)? {
            b'{' => {
                if stack.len() >= DEPTH_LIMIT {
                    return None;
                }
                i = ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    stack.push(true);
                    let k = i;
                    i = string(b, i)?;
                    if stack.len() == 1 {
                        key = (k, i);
                    }
                    i = ws(b, i);
                    if b.get(i) != Some(&b':') {
                        return None;
                    }
                    i += 1;
                    continue 'value;
                }
            }
            b'[' => {
                if stack.len() >= DEPTH_LIMIT {
                    return None;
                }
                i = ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    stack.push(false);
                    continue 'value;
                }
            }
            b'"' => i = string(b, i)?,
            b't' => i = literal(b, i, b"true")?,
            b'f' => i = literal(b, i, b"false")?,
            b'n' => i = literal(b, i, b"null")?,
            b'-' | b'0'..=b'9' => i = number(b, i)?,
            _ => return None,
        }
        // After a value: close containers or go on to the next member.
        loop {
            let Some(&top) = stack.last() else {
                let end = i;
                return (ws(b, i) == b.len()).then_some((start, end));
            };
            if stack.len() == 1 && top {
                members.push((key.0, key.1, vstart, i));
            }
            i = ws(b, i);
            match (*b.get(i)?, top) {
                (b',', true) => {
                    i = ws(b, i + 1);
                    let k = i;
                    i = string(b, i)?;
                    if stack.len() == 1 {
                        key = (k, i);
                    }
                    i = ws(b, i);
                    if b.get(i) != Some(&b':') {
                        return None;
                    }
                    i += 1;
                    continue 'value;
                }
                (b',', false) => {
                    i += 1;
                    continue 'value;
                }
                (b'}', true) | (b']', false) => {
                    stack.pop();
                    i += 1;
                    // The closed container was a value: when it was a root
                    // member, the loop records it next.
                }
                _ => return None,
            }
        }
    }
}

/// The open containers of [`syntax`]: bit `k` of `bits` is 1 when the
/// container at depth `k` is an object.
#[derive(Default)]
struct Stack {
    bits: u128,
    len: usize,
}

impl Stack {
    fn len(&self) -> usize {
        self.len
    }
    fn push(&mut self, object: bool) {
        if object {
            self.bits |= 1 << self.len;
        } else {
            self.bits &= !(1 << self.len);
        }
        self.len += 1;
    }
    fn pop(&mut self) {
        self.len -= 1;
    }
    fn last(&self) -> Option<&bool> {
        let top = self.len.checked_sub(1)?;
        Some(if self.bits >> top & 1 == 1 {
            &true
        } else {
            &false
        })
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// A string starting at `b[i] == '"'`: no control characters, valid
/// escapes, surrogate escapes paired. Returns the offset after it.
fn string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut i = i + 1;
    loop {
        i = next_special(b, i, true);
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {
                i += 1;
                match *b.get(i)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 1,
                    b'u' => {
                        let n = hex4(b, i + 1)?;
                        i += 5;
                        if (0xDC00..=0xDFFF).contains(&n) {
                            return None;
                        }
                        if (0xD800..=0xDBFF).contains(&n) {
                            if b.get(i..i + 2)? != b"\\u" {
                                return None;
                            }
                            let n2 = hex4(b, i + 2)?;
                            if !(0xDC00..=0xDFFF).contains(&n2) {
                                return None;
                            }
                            i += 6;
                        }
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

fn hex4(b: &[u8], i: usize) -> Option<u16> {
    let mut n = 0u16;
    for &c in b.get(i..i + 4)? {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        n = (n << 4) | u16::from(d);
    }
    Some(n)
}

/// A number starting at `b[i]`: JSON's grammar, and a value that is finite
/// as an `f64` (serde_json fails with "number out of range" otherwise).
fn number(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let digits = |i: usize| b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i += digits(i),
        _ => return None,
    }
    let mut plain = i - start <= 19;
    if b.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
        plain = false;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return None;
        }
        i += n;
        plain = false;
    }
    if !plain {
        let text = std::str::from_utf8(&b[start..i]).ok()?;
        if !text.parse::<f64>().ok()?.is_finite() {
            return None;
        }
    }
    Some(i)
}

// ---------------------------------------------------------------------------
// Pass 2: borrowed members of a text pass 1 accepted
// ---------------------------------------------------------------------------

/// The exact text of one JSON value that [`syntax`] accepted, and whether
/// it is known to hold no escape (false: unknown).
#[derive(Clone, Copy)]
struct Raw<'a>(&'a str, bool);

/// An object's members in `serde_json` map order: sorted by key, one per
/// key (the last one written).
type Members<'a> = Vec<(Cow<'a, str>, Raw<'a>)>;

/// Members as written, in map order: sorted (stable, so equal keys keep
/// their order) and the last of equal keys kept.
fn settle(mut m: Members<'_>) -> Members<'_> {
    if m.windows(2).all(|w| cmp(&w[0].0, &w[1].0).is_lt()) {
        return m;
    }
    m.sort_by(|a, b| cmp(&a.0, &b.0));
    let mut kept: Members<'_> = Vec::with_capacity(m.len());
    for member in m {
        match kept.last_mut() {
            Some(last) if last.0 == member.0 => *last = member,
            _ => kept.push(member),
        }
    }
    kept
}

impl<'a> Raw<'a> {
    fn first(&self) -> u8 {
        self.0.as_bytes().first().copied().unwrap_or(b'n')
    }

    /// The JSON type, as `super::kind` names it.
    fn kind(&self) -> &'static str {
        match self.first() {
            b'n' => "null",
            b't' | b'f' => "boolean",
            b'"' => "string",
            b'[' => "array",
            b'{' => "object",
            _ => "number",
        }
    }

    fn is_object(&self) -> bool {
        self.first() == b'{'
    }

    fn is_array(&self) -> bool {
        self.first() == b'['
    }

    fn is_number(&self) -> bool {
        matches!(self.first(), b'-' | b'0'..=b'9')
    }

    /// The string's contents, unescaped (None: not a string).
    fn as_str(&self) -> Option<Cow<'a, str>> {
        if self.first() != b'"' {
            return None;
        }
        let contents = &self.0[1..self.0.len() - 1];
        Some(if self.1 {
            Cow::Borrowed(contents)
        } else {
            unescape(contents)
        })
    }

    /// The value as a JSON Schema integer (see `super::as_integer`).
    fn as_integer(&self) -> Option<f64> {
        if !self.is_number() {
            return None;
        }
        let f = self.0.parse::<f64>().ok()?;
        let integral = !self.0.bytes().any(|c| matches!(c, b'.' | b'e' | b'E'));
        if integral {
            Some(f)
        } else {
            as_integer_f64(f)
        }
    }

    /// The members of an object (None: not an object).
    fn members(&self) -> Option<Members<'a>> {
        if !self.is_object() {
            return None;
        }
        let t = self.0;
        let b = t.as_bytes();
        let mut out: Members<'a> = Vec::new();
        let mut i = ws(b, 1);
        if b.get(i) == Some(&b'}') {
            return Some(out);
        }
        loop {
            let (kend, escaped) = skip_string(b, i);
            let key = &t[i + 1..kend - 1];
            let key = if escaped {
                unescape(key)
            } else {
                Cow::Borrowed(key)
            };
            i = ws(b, ws(b, kend) + 1);
            out.push((key, value_at(t, i)));
            i += out.last().map_or(0, |m| m.1 .0.len());
            i = ws(b, i);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                _ => break,
            }
        }
        Some(settle(out))
    }

    /// The member `key` of an object (the last one of that name, as in a
    /// `serde_json` map), found without collecting the members.
    fn member(&self, key: &str) -> Option<Raw<'a>> {
        if !self.is_object() {
            return None;
        }
        let t = self.0;
        let b = t.as_bytes();
        let mut i = ws(b, 1);
        if b.get(i) == Some(&b'}') {
            return None;
        }
        let mut found = None;
        loop {
            let (kend, escaped) = skip_string(b, i);
            let k = &t[i + 1..kend - 1];
            i = ws(b, ws(b, kend) + 1);
            let v = value_at(t, i);
            i += v.0.len();
            // An escape only shortens a name; `key` holds no backslash.
            if k == key || (escaped && k.len() > key.len() && unescape(k) == key) {
                found = Some(v);
            }
            i = ws(b, i);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                _ => break,
            }
        }
        found
    }

    /// The items of an array (None: not an array).
    fn items(&self) -> Option<Vec<Raw<'a>>> {
        if !self.is_array() {
            return None;
        }
        let t = self.0;
        let b = t.as_bytes();
        let mut out = Vec::new();
        let mut i = ws(b, 1);
        if b.get(i) == Some(&b']') {
            return Some(out);
        }
        loop {
            let v = value_at(t, i);
            out.push(v);
            i = ws(b, i + v.0.len());
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                _ => break,
            }
        }
        Some(out)
    }
}

/// The member `key` of sorted members.
fn get<'m, 'a>(m: &'m Members<'a>, key: &str) -> Option<&'m Raw<'a>> {
    m.binary_search_by(|(k, _)| cmp(k, key))
        .ok()
        .map(|i| &m[i].1)
}

/// `a.cmp(b)`, decided at the first byte when it differs (member names
/// mostly do) without a call to `memcmp`.
#[inline]
fn cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// End of the (valid) string starting at `b[i] == '"'`, and whether it
/// holds an escape.
fn skip_string(b: &[u8], i: usize) -> (usize, bool) {
    let mut i = i + 1;
    let mut escaped = false;
    loop {
        i = next_special(b, i, false);
        match b.get(i) {
            Some(b'"') => return (i + 1, escaped),
            Some(_) => {
                escaped = true;
                i += 2;
            }
            None => return (b.len(), escaped),
        }
    }
}

/// The (valid) value starting at `t[i]`.
fn value_at(t: &str, i: usize) -> Raw<'_> {
    let b = t.as_bytes();
    if b.get(i) == Some(&b'"') {
        let (end, escaped) = skip_string(b, i);
        Raw(&t[i..end], !escaped)
    } else {
        Raw(&t[i..skip_value(b, i)], false)
    }
}

/// End of the (valid) value starting at `b[i]`.
fn skip_value(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => skip_string(b, i).0,
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = i;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = skip_string(b, i).0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            b.len()
        }
        _ => {
            let n = b[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.'))
                .count();
            i + n
        }
    }
}

/// The contents of a (valid) string, unescaped.
fn unescape(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    // The contents hold no unescaped quote: a hit is a backslash.
    let first = next_special(b, 0, false);
    if first == b.len() {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..first]);
    let mut i = first;
    while i < b.len() {
        if b[i] != b'\\' {
            let k = next_special(b, i, false);
            out.push_str(&s[i..k]);
            i = k;
            continue;
        }
        let c = b[i + 1];
        i += 2;
        let ch = match c {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let n = u32::from(hex4(b, i).unwrap_or(0));
                i += 4;
                let n = if (0xD800..0xDC00).contains(&n) {
                    let n2 = u32::from(hex4(b, i + 2).unwrap_or(0xDC00));
                    i += 6;
                    0x1_0000 + ((n - 0xD800) << 10) + (n2.wrapping_sub(0xDC00) & 0x3ff)
                } else {
                    n
                };
                char::from_u32(n).unwrap_or(char::REPLACEMENT_CHARACTER)
            }
            other => char::from(other),
        };
        out.push(ch);
    }
    Cow::Owned(out)
}

// ---------------------------------------------------------------------------
// The checker over borrowed members (mirrors Checker::node/object/conditionals)
// ---------------------------------------------------------------------------

fn check(
    value: Raw<'_>,
    root: Option<Members<'_>>,
    version: Option<SchemaVersion>,
) -> Result<SchemaVersion, ValidationErrors> {
    let mut cx = Checker {
        version: version.unwrap_or(SchemaVersion::V2_0),
        skip_version_member: false,
        path: String::new(),
        out: Vec::new(),
    };
    let Some(root) = root else {
        cx.push(format!("must be an object (found {})", value.kind()));
        return Err(cx.finish_err());
    };
    if version.is_none() {
        let member = get(&root, "schema_version");
        match member.and_then(Raw::as_str) {
            Some(s) if SchemaVersion::from_str(&s).is_some() => {
                if let Some(v) = SchemaVersion::from_str(&s) {
                    cx.version = v;
                }
            }
            _ => {
                cx.skip_version_member = true;
                cx.child("schema_version", |cx| {
                    let what = if member.is_none() {
                        "is required"
                    } else {
                        "is not a supported version"
                    };
                    cx.push(format!(
                        "{what}: must be one of \"1.0\", \"1.1\", \"2.0\" (a string); \
                         checked against the 2.0 rules"
                    ));
                });
            }
        }
    }
    cx.object_b(super::root_of(cx.version), &root);
    cx.conditionals_b(&root);
    if cx.out.is_empty() {
        Ok(cx.version)
    } else {
        Err(cx.finish_err())
    }
}

impl Checker {
    fn node_b(&mut self, node: &Node, v: Raw<'_>) {
        match *node {
            Node::Str { min, max, format } => {
                let Some(s) = v.as_str() else {
                    return self.push(format!("must be a string (found {})", v.kind()));
                };
                self.length(&s, min, max);
                if let Some(fmt) = format {
                    self.format(fmt, &s);
                }
            }
            Node::Enum(options) => {
                if !v.as_str().is_some_and(|s| options.contains(&s.as_ref())) {
                    self.push(format!("must be one of {}", options.join(", ")));
                }
            }
            Node::Const(c) => {
                if v.as_str().as_deref() != Some(c) {
                    self.push(format!("must be \"{c}\""));
                }
            }
            Node::Bool => {
                if !matches!(v.first(), b't' | b'f') {
                    self.push(format!("must be a boolean (found {})", v.kind()));
                }
            }
            Node::Int { min, max } => match v.as_integer() {
                Some(n) => {
                    if let Some(min) = min {
                        if n < min as f64 {
                            self.push(format!("must be at least {min}"));
                        }
                    }
                    if let Some(max) = max {
                        if n > max as f64 {
                            self.push(format!("must be at most {max}"));
                        }
                    }
                }
                None => {
                    let found = if v.is_number() {
                        "a number with a fraction"
                    } else {
                        v.kind()
                    };
                    self.push(format!("must be an integer (found {found})"));
                }
            },
            Node::Array { items, max_items } => {
                let Some(a) = v.items() else {
                    return self.push(format!("must be an array (found {})", v.kind()));
                };
                if let Some(max) = max_items {
                    if a.len() > max {
                        self.push(format!("must have at most {max} items (has {})", a.len()));
                    }
                }
                for (i, item) in a.into_iter().enumerate() {
                    self.index(i, |cx| cx.node_b(items, item));
                }
            }
            Node::Object(obj) => match v.members() {
                Some(m) => self.object_b(obj, &m),
                None => self.push(format!("must be an object (found {})", v.kind())),
            },
            Node::Metadata {
                scalar_only,
                max_props,
            } => {
                let Some(m) = v.members() else {
                    return self.push(format!("must be an object (found {})", v.kind()));
                };
                if let Some(max) = max_props {
                    if m.len() > max {
                        self.push(format!(
                            "must have at most {max} properties (has {})",
                            m.len()
                        ));
                    }
                }
                if scalar_only {
                    for (k, val) in &m {
                        if val.is_array() || val.is_object() {
                            self.child(k, |cx| {
                                cx.push(format!(
                                    "must be a scalar: string, number, boolean or null (found {})",
                                    val.kind()
                                ))
                            });
                        }
                    }
                }
            }
        }
    }

    fn object_b(&mut self, obj: &Obj, m: &Members<'_>) {
        let at_root = self.path.is_empty();
        for &req in obj.required {
            if at_root && self.skip_version_member && req == "schema_version" {
                continue;
            }
            if get(m, req).is_none() {
                self.child(req, |cx| cx.push("is required".to_owned()));
            }
        }
        if m.len() < obj.min_props {
            self.push(format!(
                "must have at least {} propert{}",
                obj.min_props,
                if obj.min_props == 1 { "y" } else { "ies" }
            ));
        }
        for (k, v) in m {
            if at_root && self.skip_version_member && k == "schema_version" {
                continue;
            }
            let k_bytes = k.as_bytes();
            let found = obj.props.iter().find(|(name, _)| {
                name.len() == k_bytes.len()
                    && name.as_bytes().first() == k_bytes.first()
                    && name.as_bytes() == k_bytes
            });
            match found {
                Some((_, node)) => self.child(k, |cx| cx.node_b(node, *v)),
                None => self.child(k, |cx| {
                    cx.push(format!(
                        "unknown property (not allowed by schema {})",
                        cx.version
                    ))
                }),
            }
        }
        for &(trigger, needs) in obj.dependent {
            if get(m, trigger).is_none() {
                continue;
            }
            for &need in needs {
                if get(m, need).is_none() {
                    self.child(need, |cx| {
                        cx.push(format!("is required when `{trigger}` is present"))
                    });
                }
            }
        }
    }

    fn conditionals_b(&mut self, root: &Members<'_>) {
        if self.version == SchemaVersion::V1_0 {
            return;
        }
        if let Some(outcome) = get(root, "outcome").filter(|r| r.is_object()) {
            let status = outcome.member("status").and_then(|r| r.as_str());
            let needs: &[&str] = match status.as_deref() {
                Some("FAILURE") => &["error_type", "error_message"],
                Some("DENIED") => &["error_type"],
                _ => &[],
            };
            for &need in needs {
                if outcome.member(need).is_none() {
                    self.child("outcome", |cx| {
                        cx.child(need, |cx| {
                            cx.push(format!(
                                "is required when outcome.status is {}",
                                status.as_deref().unwrap_or_default()
                            ))
                        })
                    });
                }
            }
        }
        if self.version != SchemaVersion::V2_0 {
            return;
        }
        let delegation = get(root, "delegation");
        if let Some(actor) = get(root, "actor") {
            if actor
                .member("subject_type")
                .and_then(|r| r.as_str())
                .as_deref()
                == Some("agent")
                && delegation.is_none()
            {
                self.child("delegation", |cx| {
                    cx.push("is required when actor.subject_type is agent".to_owned())
                });
            }
        }
        if let Some(d) = delegation.filter(|r| r.is_object()) {
            let depth = d.member("chain_depth");
            let depth_n = depth.and_then(|r| r.as_integer());
            let deep = depth_n.is_some_and(|n| n >= 2.0);
            let has_parent = d.member("parent_agent_session_id").is_some();
            if deep && !has_parent {
                self.child("delegation", |cx| {
                    cx.child("parent_agent_session_id", |cx| {
                        cx.push("is required when chain_depth is 2 or more".to_owned())
                    })
                });
            }
            if has_parent {
                self.child("delegation", |cx| {
                    cx.child("chain_depth", |cx| match depth {
                        None => cx
                            .push("is required when parent_agent_session_id is present".to_owned()),
                        Some(_) if depth_n.is_some_and(|n| n < 2.0) => cx.push(
                            "must be at least 2 when parent_agent_session_id is present".to_owned(),
                        ),
                        Some(_) => {}
                    })
                });
            }
        }
        if let Some(action) = get(root, "action") {
            if action.member("type").and_then(|r| r.as_str()).as_deref() == Some("OVERRIDE") {
                self.override_rules_b(root);
            }
        }
    }

    fn override_rules_b(&mut self, root: &Members<'_>) {
        const WHY: &str = "when action.type is OVERRIDE";
        if let Some(actor) = get(root, "actor") {
            if let Some(t) = actor.member("subject_type") {
                if t.as_str().as_deref() != Some("human") {
                    self.child("actor", |cx| {
                        cx.child("subject_type", |cx| {
                            cx.push(format!("must be \"human\" {WHY}"))
                        })
                    });
                }
            }
        }
        if let Some(resource) = get(root, "resource").filter(|r| r.is_object()) {
            if let Some(t) = resource.member("type") {
                if t.as_str().as_deref() != Some("AgentSession") {
                    self.child("resource", |cx| {
                        cx.child("type", |cx| {
                            cx.push(format!("must be \"AgentSession\" {WHY}"))
                        })
                    });
                }
            }
            if resource.member("id").is_none() {
                self.child("resource", |cx| {
                    cx.child("id", |cx| cx.push(format!("is required {WHY}")))
                });
            }
        }
        if get(root, "delegation").is_some() {
            self.child("delegation", |cx| cx.push(format!("must be absent {WHY}")));
        }
    }
}
