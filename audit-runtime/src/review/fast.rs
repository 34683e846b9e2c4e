//! A fast path for [`super::ReviewEvent::parse`]: one pass over the line
//! that reads the few members the review needs and skips the rest (strings
//! by scanning for their closing quote, containers by depth), validating
//! JSON as it goes. Anything unusual (an escape in a string it reads or
//! skips, a repeated member, deep nesting, a value of another type) makes
//! it give up and the serde path decide, so it never accepts a line the
//! serde path rejects nor reads one differently (a property test holds the
//! two equal).

use std::borrow::Cow;

use uuid::Uuid;

use super::event::ReviewEvent;
use crate::json::bytes::next_special;
use crate::model::event::{ActionType, DataClassification, OutcomeStatus};
use crate::time::timestamp::Timestamp;

/// Deepest nesting skipped here (serde_json's limit is 128).
const MAX_DEPTH: u32 = 100;

/// The index of the first byte at or after `j` that is `"`, `\\` or a
/// control character (< 0x20), eight bytes at a time.
#[inline]
fn special(b: &[u8], j: usize) -> Option<usize> {
    let at = next_special(b, j, true);
    (at < b.len()).then_some(at)
}

struct P<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

/// Give up: let the serde path decide.
type R<T> = Option<T>;

impl<'a> P<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> R<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> R<()> {
        self.ws();
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// A string without escapes (the opening quote next), borrowed.
    #[inline]
    fn plain_str(&mut self) -> R<&'a str> {
        self.ws();
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i + 1;
        let j = special(self.b, start)?;
        if self.b[j] != b'"' {
            return None;
        }
        self.i = j + 1;
        // The line is UTF-8 and the quotes are ASCII: both ends are
        // character boundaries.
        self.s.get(start..j)
    }

    /// Skips a string, escapes included (but not `\u`).
    fn skip_str(&mut self) -> R<()> {
        self.i += 1;
        loop {
            self.i = special(self.b, self.i)?;
            let c = self.b[self.i];
            self.i += 1;
            match c {
                b'"' => return Some(()),
                b'\\' => {
                    let e = *self.b.get(self.i)?;
                    if !matches!(e, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') {
                        return None;
                    }
                    self.i += 1;
                }
                c if c < 0x20 => return None,
                _ => {}
            }
        }
    }

    fn digits(&mut self) -> usize {
        let s = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - s
    }

    fn skip_number(&mut self) -> R<()> {
        if self.peek()? == b'-' {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    fn skip_value(&mut self, depth: u32) -> R<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'"' => self.skip_str(),
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    if self.peek()? != b'"' {
                        return None;
                    }
                    self.skip_str()?;
                    self.eat(b':')?;
                    self.skip_value(depth + 1)?;
                    self.ws();
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
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
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
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.skip_number(),
        }
    }

    /// `null` (then `None`) or a plain string.
    fn opt_str(&mut self) -> R<Option<&'a str>> {
        self.ws();
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        self.plain_str().map(Some)
    }

    /// The members of an object, `f(key)` reading each value (or skipping
    /// it when it returns `None` for "not mine").
    fn object(&mut self, mut f: impl FnMut(&mut Self, &'a str) -> R<bool>) -> R<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.plain_str()?;
            self.eat(b':')?;
            if !f(self, key)? {
                self.skip_value(1)?;
            }
            self.ws();
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
}

/// Sets `slot` once; a second time gives up (serde rejects duplicates).
#[inline]
fn once<T>(slot: &mut Option<T>, v: T) -> R<bool> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v);
    Some(true)
}

fn nonempty(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.filter(|s| !s.is_empty()).map(Cow::Borrowed)
}

/// The event of `line`, or `None` to let the serde path decide.
pub(crate) fn parse(line: &str) -> Option<ReviewEvent<'_>> {
    let mut p = P {
        b: line.as_bytes(),
        s: line,
        i: 0,
    };
    let mut event_id: Option<Option<&str>> = None;
    let mut timestamp: Option<&str> = None;
    let mut actor: Option<(&str, Option<&str>, Option<&str>)> = None;
    let mut action: Option<(ActionType, bool)> = None;
    let mut resource: Option<(&str, Option<&str>, Option<&str>)> = None;
    let mut outcome: Option<(OutcomeStatus, Option<&str>)> = None;
    let mut http: Option<Option<&str>> = None;
    let mut integrity: Option<bool> = None;
    p.object(|p, key| match key {
        "event_id" => {
            let v = p.opt_str()?;
            once(&mut event_id, v)
        }
        "timestamp" => {
            let v = p.plain_str()?;
            once(&mut timestamp, v)
        }
        "actor" => {
            let (mut id, mut org, mut owner) = (None, None, None);
            p.object(|p, k| match k {
                "subject_id" => {
                    let v = p.plain_str()?;
                    once(&mut id, v)
                }
                "org_id" => {
                    let v = p.opt_str()?;
                    once(&mut org, v)
                }
                "owner_org_id" => {
                    let v = p.opt_str()?;
                    once(&mut owner, v)
                }
                _ => Some(false),
            })?;
            once(&mut actor, (id?, org.flatten(), owner.flatten()))
        }
        "action" => {
            let (mut kind, mut touched, mut class) = (None, None, None);
            p.object(|p, k| match k {
                "type" => {
                    let v = ActionType::from_str(p.plain_str()?)?;
                    once(&mut kind, v)
                }
                "phi_touched" => {
                    p.ws();
                    let v = match p.peek()? {
                        b't' => p.literal(b"true").map(|_| Some(true))?,
                        b'f' => p.literal(b"false").map(|_| Some(false))?,
                        _ => p.literal(b"null").map(|_| None)?,
                    };
                    once(&mut touched, v)
                }
                "data_classification" => {
                    let v = match p.opt_str()? {
                        Some(s) => Some(DataClassification::from_str(s)?),
                        None => None,
                    };
                    once(&mut class, v)
                }
                _ => Some(false),
            })?;
            let phi =
                touched.flatten() == Some(true) || class.flatten() == Some(DataClassification::Phi);
            once(&mut action, (kind?, phi))
        }
        "resource" => {
            let (mut kind, mut id, mut patient) = (None, None, None);
            p.object(|p, k| match k {
                "type" => {
                    let v = p.plain_str()?;
                    once(&mut kind, v)
                }
                "id" => {
                    let v = p.opt_str()?;
                    once(&mut id, v)
                }
                "patient_id" => {
                    let v = p.opt_str()?;
                    once(&mut patient, v)
                }
                _ => Some(false),
            })?;
            once(&mut resource, (kind?, id.flatten(), patient.flatten()))
        }
        "outcome" => {
            let (mut status, mut error_type) = (None, None);
            p.object(|p, k| match k {
                "status" => {
                    let v = OutcomeStatus::from_str(p.plain_str()?)?;
                    once(&mut status, v)
                }
                "error_type" => {
                    let v = p.opt_str()?;
                    once(&mut error_type, v)
                }
                _ => Some(false),
            })?;
            once(&mut outcome, (status?, error_type.flatten()))
        }
        "http" => {
            p.ws();
            if p.peek()? == b'n' {
                p.literal(b"null")?;
                return once(&mut http, None);
            }
            let mut ip = None;
            p.object(|p, k| match k {
                "client_ip" => {
                    let v = p.opt_str()?;
                    once(&mut ip, v)
                }
                _ => Some(false),
            })?;
            once(&mut http, ip.flatten())
        }
        "integrity" => {
            p.ws();
            let null = p.peek()? == b'n';
            p.skip_value(1)?;
            once(&mut integrity, !null)
        }
        _ => Some(false),
    })?;
    p.ws();
    if p.i != p.b.len() {
        return None;
    }
    let (actor, actor_org, owner_org) = actor?;
    let (action, phi) = action?;
    let (resource_type, resource_id, patient) = resource?;
    let (outcome, error_type) = outcome?;
    Some(ReviewEvent {
        event_id: event_id.flatten().and_then(|s| Uuid::try_parse(s).ok()),
        timestamp: Timestamp::parse_rfc3339(timestamp?).ok()?,
        actor: Cow::Borrowed(actor),
        actor_org: nonempty(actor_org),
        owner_org: nonempty(owner_org),
        action,
        phi,
        resource_type: Cow::Borrowed(resource_type),
        resource_id: nonempty(resource_id),
        patient: nonempty(patient),
        outcome,
        error_type: nonempty(error_type),
        client_ip: nonempty(http.flatten()),
        chained: integrity == Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: &str = r#"{"schema_version":"1.1","event_id":"0b6c5c1e-7a0f-4d4e-9b1a-3c2d1e0f9a8b","timestamp":"2026-03-02T10:00:00.123Z","service":{"name":"s","environment":"prod"},"actor":{"subject_id":"dr-a","subject_type":"human","org_id":"o1","owner_org_id":"o2","roles":["a","b"]},"action":{"type":"READ","phi_touched":true,"data_classification":"PHI","name":"x"},"resource":{"type":"Patient","id":"r1","patient_id":"p1"},"outcome":{"status":"DENIED","error_type":"RoleDenied"},"http":{"client_ip":"10.0.0.1","status_code":403},"correlation":{"request_id":"q"},"metadata":{"n":-1.5e3,"b":false,"z":null,"s":"a\"b\\c\/\n","l":[1,[2,{}],[]]},"integrity":{"event_hash":"ab","prev_event_hash":null,"hash_alg":"sha256"}}"#;

    #[test]
    fn special_bytes_are_found_in_any_position() {
        for len in 0..40 {
            for at in 0..len {
                for c in [b'"', b'\\', 0u8, 0x1f] {
                    let mut v = vec![b'a'; len];
                    v[at] = c;
                    assert_eq!(special(&v, 0), Some(at), "{len} {at} {c}");
                    assert_eq!(special(&v, at + 1), None);
                }
                let mut v = vec![0x20u8; len];
                v[at] = 0xe9;
                assert_eq!(special(&v, 0), None);
            }
        }
    }

    #[test]
    fn the_fast_path_reads_the_common_case() {
        let fast = parse(BASE).expect("the fast path takes a plain event");
        assert_eq!(Ok(fast), ReviewEvent::parse_serde(BASE));
        // Escapes in a field it reads: the serde path decides.
        assert!(parse(&BASE.replace("dr-a", "dr\\u0041")).is_none());
        assert!(ReviewEvent::parse(&BASE.replace("dr-a", "dr\\u0041")).is_ok());
        // Nulls where serde takes None.
        let nulls = BASE
            .replace(
                r#""http":{"client_ip":"10.0.0.1","status_code":403}"#,
                r#""http":null"#,
            )
            .replace(r#""integrity":{"#, r#""integrity":null,"x":{"#);
        let fast = parse(&nulls).unwrap();
        assert!(!fast.chained && fast.client_ip.is_none());
        assert_eq!(Ok(fast), ReviewEvent::parse_serde(&nulls));
    }

    /// Edits that keep or break JSON at interesting places.
    fn edit() -> impl Strategy<Value = (usize, u8, String)> {
        let piece = prop_oneof![
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("-0.5e+".to_owned()),
            Just(" ".to_owned()),
            Just("\u{1}".to_owned()),
            Just("\\u00e9".to_owned()),
            Just(r#""actor":{"subject_id":"x"},"#.to_owned()),
            Just(r#""integrity":null,"#.to_owned()),
            Just(r#""http":null,"#.to_owned()),
            Just(r#""phi_touched":null,"#.to_owned()),
            Just("é".to_owned()),
            "[a-z0-9]{1,3}",
        ];
        (0..BASE.len(), 0u8..3, piece)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Whenever the fast path accepts a line, serde reads it the same.
        #[test]
        fn fast_path_agrees_with_serde(edits in proptest::collection::vec(edit(), 1..4)) {
            let mut line = BASE.to_owned();
            for (at, op, piece) in edits {
                let mut at = at.min(line.len());
                while !line.is_char_boundary(at) {
                    at -= 1;
                }
                match op {
                    0 => line.insert_str(at, &piece),
                    1 => {
                        let mut end = (at + piece.len()).min(line.len());
                        while !line.is_char_boundary(end) {
                            end += 1;
                        }
                        line.replace_range(at..end, "");
                    }
                    _ => {
                        let mut end = (at + 1).min(line.len());
                        while !line.is_char_boundary(end) {
                            end += 1;
                        }
                        line.replace_range(at..end, &piece);
                    }
                }
            }
            if let Some(fast) = parse(&line) {
                prop_assert_eq!(Ok(fast), ReviewEvent::parse_serde(&line), "{}", line);
            }
        }
    }
}
