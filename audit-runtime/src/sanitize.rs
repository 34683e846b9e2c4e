//! Error-message sanitization: what an error's `Display` says may hold PHI, so
//! before it enters an event the message is normalized and every pattern that
//! commonly identifies a person is replaced by a marker.
//!
//! | pattern | example | marker |
//! |---|---|---|
//! | e-mail address | `jane.doe@example.com` | `[EMAIL]` |
//! | SSN | `123-45-6789`, `123 45 6789`, `123456789` | `[SSN]` |
//! | phone | `(555) 123-4567`, `555-123-4567`, `555.123.4567`, `+1 555 123 4567` | `[PHONE]` |
//! | date | `1990-01-01`, `01/31/1990`, `31.01.1990`, `1990/01/31` | `[DATE]` |
//! | long number | any run of 10 or more digits | `[NUMBER]` |
//!
//! Whitespace runs collapse to one space and the result is capped in
//! characters (never cut inside a character).

/// Sanitizes `msg` and caps it at `max_chars` characters.
///
/// ```
/// use phi_audit::sanitize::sanitize_message;
/// let s = sanitize_message("no  chart for 123-45-6789,\n mail jane@x.org or (555) 123-4567", 200);
/// assert_eq!(s, "no chart for [SSN], mail [EMAIL] or [PHONE]");
/// ```
pub fn sanitize_message(msg: &str, max_chars: usize) -> String {
    if is_clean(msg) {
        return cap_chars(msg.to_owned(), max_chars);
    }
    let collapsed = collapse_whitespace(msg);
    let no_email = redact_emails(&collapsed);
    let out = redact_digit_patterns(&no_email);
    cap_chars(out, max_chars)
}

/// True when sanitizing `msg` would not change it: no digit, no `@`, no
/// control character, and single spaces only between words.
pub fn is_clean(msg: &str) -> bool {
    let b = msg.as_bytes();
    if b.first() == Some(&b' ') || b.last() == Some(&b' ') {
        return false;
    }
    let mut prev_space = false;
    for &c in b {
        match c {
            b'0'..=b'9' | b'@' => return false,
            b' ' if prev_space => return false,
            b' ' => prev_space = true,
            0..=0x1f | 0x7f => return false,
            // Non-ASCII: Unicode whitespace or controls may hide in it.
            0x80.. => return false,
            _ => prev_space = false,
        }
    }
    true
}

/// Cuts `s` to at most `max_chars` characters.
pub fn cap_chars(mut s: String, max_chars: usize) -> String {
    if let Some((idx, _)) = s.char_indices().nth(max_chars) {
        s.truncate(idx);
    }
    s
}

fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

fn is_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

fn redact_emails(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0; // bytes of `s` already handled
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'@' {
            let mut start = i;
            while start > copied && is_local_char(b[start - 1]) {
                start -= 1;
            }
            let mut end = i + 1;
            while end < b.len() && is_domain_char(b[end]) {
                end += 1;
            }
            // Trailing dots and hyphens end a sentence, not a domain.
            while end > i + 1 && matches!(b[end - 1], b'.' | b'-') {
                end -= 1;
            }
            let domain = &s[i + 1..end];
            let tld_ok = domain.rsplit_once('.').is_some_and(|(host, tld)| {
                !host.is_empty() && tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic())
            });
            if start < i && tld_ok {
                out.push_str(&s[copied..start]);
                out.push_str("[EMAIL]");
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[copied..]);
    out
}

// Pattern language: `d` a digit, `s` one of `-`, `.`, ` `; anything else literal.
const PATTERNS: &[(&str, &str)] = &[
    ("+1 (ddd) ddd-dddd", "[PHONE]"),
    ("+1 dddsdddsdddd", "[PHONE]"),
    ("+1sdddsdddsdddd", "[PHONE]"),
    ("+1dddddddddd", "[PHONE]"),
    ("1-ddd-ddd-dddd", "[PHONE]"),
    ("(ddd) ddd-dddd", "[PHONE]"),
    ("(ddd)ddd-dddd", "[PHONE]"),
    ("(ddd) ddd dddd", "[PHONE]"),
    ("dddsdddsdddd", "[PHONE]"),
    ("ddd-dd-dddd", "[SSN]"),
    ("ddd dd dddd", "[SSN]"),
    ("dddd-dd-dd", "[DATE]"),
    ("dddd/dd/dd", "[DATE]"),
    ("dddd.dd.dd", "[DATE]"),
    ("dd/dd/dddd", "[DATE]"),
    ("d/dd/dddd", "[DATE]"),
    ("dd/d/dddd", "[DATE]"),
    ("d/d/dddd", "[DATE]"),
    ("dd-dd-dddd", "[DATE]"),
    ("dd.dd.dddd", "[DATE]"),
    ("dd/dd/dd", "[DATE]"),
];

fn match_pattern(b: &[u8], at: usize, pat: &str) -> Option<usize> {
    let mut i = at;
    for p in pat.bytes() {
        let c = *b.get(i)?;
        let ok = match p {
            b'd' => c.is_ascii_digit(),
            b's' => matches!(c, b'-' | b'.' | b' '),
            lit => c == lit,
        };
        if !ok {
            return None;
        }
        i += 1;
    }
    Some(i - at)
}

fn redact_digit_patterns(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let at_boundary = i == 0 || !b[i - 1].is_ascii_digit();
        let starts = matches!(b[i], b'0'..=b'9' | b'+' | b'(');
        if at_boundary && starts {
            let mut best: Option<(usize, &str)> = None;
            for (pat, marker) in PATTERNS {
                if let Some(len) = match_pattern(b, i, pat) {
                    let end_ok = b.get(i + len).is_none_or(|c| !c.is_ascii_digit());
                    if end_ok && best.is_none_or(|(l, _)| len > l) {
                        best = Some((len, marker));
                    }
                }
            }
            if best.is_none() && b[i].is_ascii_digit() {
                let run = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                if run >= 10 {
                    best = Some((run, "[NUMBER]"));
                } else if run == 9 {
                    best = Some((run, "[SSN]"));
                }
            }
            if let Some((len, marker)) = best {
                out.push_str(&s[copied..i]);
                out.push_str(marker);
                i += len;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(m: &str) -> String {
        sanitize_message(m, 500)
    }

    #[test]
    fn redacts_each_pattern() {
        assert_eq!(s("ssn 123-45-6789 x"), "ssn [SSN] x");
        assert_eq!(s("ssn 123456789"), "ssn [SSN]");
        assert_eq!(s("ssn 123 45 6789."), "ssn [SSN].");
        assert_eq!(s("call (555) 123-4567"), "call [PHONE]");
        assert_eq!(
            s("call 555-123-4567 or 555.123.4567"),
            "call [PHONE] or [PHONE]"
        );
        assert_eq!(s("call +1 555 123 4567"), "call [PHONE]");
        assert_eq!(s("call +15551234567"), "call [PHONE]");
        assert_eq!(
            s("born 1990-01-01, seen 01/31/2024"),
            "born [DATE], seen [DATE]"
        );
        assert_eq!(s("acct 12345678901234"), "acct [NUMBER]");
        assert_eq!(s("mail jane.doe+x@mail.example.com."), "mail [EMAIL].");
        assert_eq!(s("EMAIL_jane.doe@example.com"), "[EMAIL]");
        assert_eq!(s("SSN_123-45-6789"), "SSN_[SSN]");
        assert_eq!(s("DOB_1990-01-01"), "DOB_[DATE]");
    }

    #[test]
    fn clean_fast_path_agrees_with_the_full_pass() {
        for m in [
            "plain words here",
            "a  b",
            " a",
            "a ",
            "x\ty",
            "jane@x.org",
            "r2",
            "héllo",
            "",
            "a-b_c.d",
        ] {
            if is_clean(m) {
                assert_eq!(sanitize_message(m, 500), m, "{m:?}");
            }
        }
        assert!(is_clean("patient record unavailable"));
        assert!(!is_clean("call 555-123-4567"));
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        assert_eq!(
            s("timeout after 30 s (code 504)"),
            "timeout after 30 s (code 504)"
        );
        assert_eq!(s("user@localhost"), "user@localhost");
        assert_eq!(s("v1.2.3 at 12:30"), "v1.2.3 at 12:30");
        assert_eq!(s("12345678"), "12345678");
    }

    #[test]
    fn collapses_whitespace_and_caps_in_chars() {
        assert_eq!(s("  a \t\n b  "), "a b");
        assert_eq!(sanitize_message("ééééé", 3), "ééé");
        assert_eq!(sanitize_message("", 3), "");
    }
}
