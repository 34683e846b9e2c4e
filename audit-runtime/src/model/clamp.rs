//! Runtime strings clamped to the schema where they enter an event.
//!
//! Every string slot of an event has bounds (bh-audit-schema counts
//! characters) and, for a reader's sake, characters it must not hold. A
//! value that does not fit is corrected, never refused, and every
//! correction is counted ([`Fixes`], added to the dispatcher's stats):
//!
//! - empty where the schema needs a character: the field is left out (a
//!   required one gets a fixed placeholder);
//! - too long: cut to the limit on a character boundary;
//! - control characters (C0, DEL, C1), bidirectional-formatting characters
//!   and the Unicode line and paragraph separators: each replaced by U+FFFD.
//!   PostgreSQL refuses NUL in text, terminals obey control and bidi
//!   characters, and line-oriented readers split JSON lines at U+2028;
//! - a value its format rejects (a client IP that is no IP address, a status
//!   code outside 100..=599): left out.
//!
//! Values are checked where they are built (a context when it is made, a
//! config when it is built, an identifier when the audited call stores it),
//! so that what is constant is checked once, and the check of a short ASCII
//! identifier costs a few word operations.

use std::sync::Arc;

use crate::model::event::{
    Actor, AuditEvent, Correlation, Delegation, Http, Integrity, Outcome, OutcomeStatus, Service,
};
use crate::model::metadata::Metadata;
use crate::util::text::Text;

pub(crate) use crate::model::limits::{
    HTTP_TEXT, ID, MESSAGE, META_KEY, NAME, ROLE, ROLES, SERVICE_TAG,
};

/// Corrections made to one value or event, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fixes {
    /// Empty strings where the schema needs a character.
    pub(crate) empty: u32,
    /// Strings cut to a length limit.
    pub(crate) truncated: u32,
    /// Strings with characters replaced.
    pub(crate) replaced: u32,
    /// Values a format or range rejects, left out.
    pub(crate) invalid: u32,
}

impl Fixes {
    /// True when nothing was corrected.
    #[inline]
    pub(crate) fn is_none(&self) -> bool {
        (self.empty | self.truncated | self.replaced | self.invalid) == 0
    }

    pub(crate) fn add(&mut self, o: Fixes) {
        self.empty = self.empty.saturating_add(o.empty);
        self.truncated = self.truncated.saturating_add(o.truncated);
        self.replaced = self.replaced.saturating_add(o.replaced);
        self.invalid = self.invalid.saturating_add(o.invalid);
    }
}

const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

const HIGH: u64 = splat(0x80);

/// Nonzero if a byte of `x` is below 0x20 or above 0x7e. Exact for "any".
#[inline(always)]
fn word_not_printable(x: u64) -> u64 {
    let below = x.wrapping_sub(splat(0x20)) & !x & HIGH;
    let above = (x.wrapping_add(splat(0x01)) | x) & HIGH;
    below | above
}

/// The eight bytes of `b` from `at`.
#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(w)
}

/// True if every byte is printable ASCII (0x20..=0x7e): eight at a time,
/// the last word overlapping the one before (an id of 8 to 16 bytes is two
/// loads and no loop; a shorter one two overlapping 4-byte loads).
#[inline]
fn printable_ascii(b: &[u8]) -> bool {
    let n = b.len();
    if n < 8 {
        if n < 4 {
            return b.iter().all(|&c| (0x20..0x7f).contains(&c));
        }
        let half = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[at..at + 4]);
            u64::from(u32::from_ne_bytes(w))
        };
        // Both halves in one word: the upper four bytes are the last four.
        return word_not_printable(half(0) | (half(n - 4) << 32)) == 0;
    }
    let mut acc = word_not_printable(word(b, n - 8));
    let mut at = 0;
    while at + 8 < n {
        acc |= word_not_printable(word(b, at));
        at += 8;
    }
    acc == 0
}

/// Characters no event holds: C0 and C1 controls, DEL, bidirectional
/// formatting, and the line and paragraph separators.
#[inline]
pub(crate) fn is_bad_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// True when `s` holds a character no event may hold.
pub(crate) fn has_bad_chars(s: &str) -> bool {
    !printable_ascii(s.as_bytes()) && s.chars().any(is_bad_char)
}

/// True when `s` can stand as it is in a slot of `min..=max` characters
/// (`min` is 0 or 1). Decided from the bytes alone for printable ASCII.
#[inline]
pub(crate) fn fits(s: &str, min: usize, max: usize) -> bool {
    let b = s.as_bytes();
    if b.len() < min {
        return false;
    }
    if b.len() <= max && printable_ascii(b) {
        return true;
    }
    // Non-ASCII (or control bytes): count characters, look at each.
    let mut n = 0usize;
    for c in s.chars() {
        n += 1;
        if n > max || is_bad_char(c) {
            return false;
        }
    }
    n >= min
}

/// `s` with bad characters replaced and cut to `max` characters; the
/// corrections are added to `fixes`. `None` when `s` needs nothing.
#[cold]
fn repaired(s: &str, max: usize, fixes: &mut Fixes) -> Option<String> {
    let mut out = String::with_capacity(s.len().min(max.saturating_mul(4)));
    let mut replaced = false;
    let mut truncated = false;
    for (n, c) in s.chars().enumerate() {
        if n == max {
            truncated = true;
            break;
        }
        if is_bad_char(c) {
            replaced = true;
            out.push('\u{fffd}');
        } else {
            out.push(c);
        }
    }
    if replaced {
        fixes.replaced += 1;
    }
    if truncated {
        fixes.truncated += 1;
    }
    (replaced || truncated).then_some(out)
}

/// An optional slot of 1..=`max` characters: empty → left out.
#[inline]
pub(crate) fn opt(slot: &mut Option<Text>, max: usize, fixes: &mut Fixes) {
    if let Some(t) = slot {
        if !fits(t, 1, max) {
            fix_opt(slot, max, fixes);
        }
    }
}

#[cold]
fn fix_opt(slot: &mut Option<Text>, max: usize, fixes: &mut Fixes) {
    let Some(t) = slot else { return };
    if t.is_empty() {
        fixes.empty += 1;
        *slot = None;
    } else if let Some(s) = repaired(t, max, fixes) {
        *t = Text::from(s);
    }
}

/// A required slot of 1..=`max` characters: empty → `placeholder`.
#[inline]
pub(crate) fn req(t: &mut Text, max: usize, placeholder: &'static str, fixes: &mut Fixes) {
    if !fits(t, 1, max) {
        if t.is_empty() {
            fixes.empty += 1;
            *t = Text::from_static(placeholder);
        } else if let Some(s) = repaired(t, max, fixes) {
            *t = Text::from(s);
        }
    }
}

/// A slot of 0..=`max` characters (empty is fine).
#[inline]
pub(crate) fn any(t: &mut Text, max: usize, fixes: &mut Fixes) {
    if !fits(t, 0, max) {
        if let Some(s) = repaired(t, max, fixes) {
            *t = Text::from(s);
        }
    }
}

/// An optional slot of 0..=`max` characters.
fn opt_any(slot: &mut Option<Text>, max: usize, fixes: &mut Fixes) {
    if let Some(t) = slot {
        any(t, max, fixes);
    }
}

/// An identifier slot (1..=256): what `#[audited]` stores per call.
#[inline]
pub(crate) fn id(slot: Option<Text>, fixes: &mut Fixes) -> Option<Text> {
    let mut slot = slot;
    opt(&mut slot, ID, fixes);
    slot
}

/// An actor: `None` when its subject id is empty (the context's or the
/// default actor stands in).
pub(crate) fn actor(mut a: Actor, fixes: &mut Fixes) -> Option<Actor> {
    if a.subject_id.is_empty() {
        fixes.empty += 1;
        return None;
    }
    req(&mut a.subject_id, ID, "unknown", fixes);
    opt(&mut a.org_id, NAME, fixes);
    opt(&mut a.owner_org_id, NAME, fixes);
    roles(&mut a.roles, fixes);
    Some(a)
}

fn roles(slot: &mut Option<Arc<[Text]>>, fixes: &mut Fixes) {
    let Some(roles) = slot else { return };
    if roles.len() <= ROLES && roles.iter().all(|r| fits(r, 1, ROLE)) {
        return;
    }
    let mut kept: Vec<Text> = Vec::with_capacity(roles.len().min(ROLES));
    for r in roles.iter() {
        let mut r = Some(r.clone());
        opt(&mut r, ROLE, fixes);
        if let Some(r) = r {
            if kept.len() == ROLES {
                fixes.truncated += 1;
                break;
            }
            kept.push(r);
        }
    }
    *slot = Some(kept.into());
}

/// Correlation ids; `None` when none is left.
pub(crate) fn correlation(mut c: Correlation, fixes: &mut Fixes) -> Option<Correlation> {
    opt(&mut c.request_id, ID, fixes);
    opt(&mut c.trace_id, ID, fixes);
    opt(&mut c.session_id, ID, fixes);
    (!c.is_empty()).then_some(c)
}

/// HTTP details.
pub(crate) fn http(h: &mut Http, fixes: &mut Fixes) {
    opt_any(&mut h.route_template, HTTP_TEXT, fixes);
    opt_any(&mut h.user_agent, HTTP_TEXT, fixes);
    if let Some(ip) = &h.client_ip {
        if !is_ip(ip) {
            fixes.invalid += 1;
            h.client_ip = None;
        }
    }
    if let Some(code) = h.status_code {
        if !(100..=599).contains(&code) {
            fixes.invalid += 1;
            h.status_code = None;
        }
    }
}

/// `format: ipv4` or `ipv6`, as the validator decides.
fn is_ip(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok() || s.parse::<std::net::Ipv6Addr>().is_ok()
}

/// An outcome: the error type is required on FAILURE and DENIED, the
/// message on FAILURE. `max_message` is the config's cap.
pub(crate) fn outcome(o: &mut Outcome, max_message: usize, fixes: &mut Fixes) {
    if o.status == OutcomeStatus::Success {
        return;
    }
    match &mut o.error_type {
        Some(t) => req(t, NAME, "Error", fixes),
        None => o.error_type = Some(Text::from_static("Error")),
    }
    if let Some(m) = &mut o.error_message {
        any(m, max_message.min(MESSAGE), fixes);
    }
    // FAILURE needs a message: the type stands in for a missing one.
    if o.status == OutcomeStatus::Failure && o.error_message.as_ref().is_none_or(|m| m.is_empty()) {
        o.error_message = o.error_type.clone();
    }
}

/// Metadata keys: 1..=64 characters, each at most once after correction.
/// Returns how many entries were removed (empty keys, and keys that became
/// another's).
#[inline]
pub(crate) fn metadata_keys(m: &mut Metadata, fixes: &mut Fixes) -> u64 {
    if m.iter().all(|(k, _)| fits(k, 1, META_KEY)) {
        return 0;
    }
    m.rekey(|k| {
        let mut key = Some(k.clone());
        opt(&mut key, META_KEY, fixes);
        key
    }) as u64
}

/// Every string of `service` (a config's is checked when it is built).
fn service(s: &mut Service, fixes: &mut Fixes) {
    req(&mut s.name, NAME, "unknown", fixes);
    opt(&mut s.environment, SERVICE_TAG, fixes);
    opt(&mut s.version, SERVICE_TAG, fixes);
}

fn delegation(d: &mut Delegation, fixes: &mut Fixes) {
    req(&mut d.acting.subject_id, ID, "unknown", fixes);
    let a = &mut d.acting.agent;
    for slot in [
        &mut a.vendor,
        &mut a.model_family,
        &mut a.model_version,
        &mut a.harness,
        &mut a.harness_version,
    ] {
        opt(slot, NAME, fixes);
    }
    req(&mut d.authorizing.subject_id, ID, "unknown", fixes);
    opt(&mut d.authorizing.org_id, NAME, fixes);
    req(&mut d.agent_session_id, ID, "unknown", fixes);
    opt(&mut d.parent_agent_session_id, ID, fixes);
    // Depth 1..=32; a parent exactly when the depth is 2 or more.
    if d.chain_depth.is_some_and(|n| !(1..=32).contains(&n)) {
        fixes.invalid += 1;
        d.chain_depth = None;
    }
    let deep = d.chain_depth.is_some_and(|n| n >= 2);
    if deep && d.parent_agent_session_id.is_none() {
        fixes.invalid += 1;
        d.chain_depth = None;
    } else if !deep && d.parent_agent_session_id.is_some() {
        fixes.invalid += 1;
        d.parent_agent_session_id = None;
    }
}

/// An integrity block handed in with an event: kept when its strings fit
/// and its members depend on each other as the schema says, else left out.
fn integrity(slot: &mut Option<Integrity>, fixes: &mut Fixes) {
    let Some(i) = slot else { return };
    let strings_fit = [&i.event_hash, &i.prev_event_hash]
        .iter()
        .all(|h| h.as_ref().is_none_or(|h| fits(h, 1, ID)));
    let depends = (i.event_hash.is_none() || i.hash_alg.is_some())
        && (i.prev_event_hash.is_none() || (i.event_hash.is_some() && i.hash_alg.is_some()));
    if !(strings_fit && depends) {
        fixes.invalid += 1;
        *slot = None;
    }
}

/// Every string slot of an event handed to `Dispatch::emit`, but for the
/// metadata and the outcome (the dispatcher's limits fit those, for calls
/// too).
pub(crate) fn event(e: &mut AuditEvent, fixes: &mut Fixes) {
    service(&mut e.service, fixes);
    let a = std::mem::replace(&mut e.actor, Actor::service("unknown"));
    match actor(a, fixes) {
        Some(a) => e.actor = a,
        // The service itself stands in for an actor without an id.
        None => e.actor = Actor::service(e.service.name.clone()),
    }
    opt(&mut e.action.name, NAME, fixes);
    req(&mut e.resource.kind, NAME, "Unknown", fixes);
    opt(&mut e.resource.id, ID, fixes);
    opt(&mut e.resource.patient_id, ID, fixes);
    if let Some(c) = e.correlation.take() {
        e.correlation = correlation(c, fixes);
    }
    if let Some(h) = &mut e.http {
        http(h, fixes);
    }
    if let Some(d) = &mut e.delegation {
        delegation(d, fixes);
    }
    integrity(&mut e.integrity, fixes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_exact() {
        for b in 0u8..=255 {
            let ok = (0x20..=0x7e).contains(&b);
            for len in 1..20 {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    assert_eq!(printable_ascii(&v), ok, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(printable_ascii(b""));
    }

    #[test]
    fn fits_counts_characters_and_refuses_bad_ones() {
        assert!(fits("abc", 1, 3));
        assert!(!fits("abcd", 1, 3));
        assert!(fits("ééé", 1, 3), "three characters, six bytes");
        assert!(!fits("éééé", 1, 3));
        assert!(!fits("", 1, 3));
        assert!(fits("", 0, 3));
        for bad in [
            "a\0b",
            "a\nb",
            "a\u{7f}",
            "a\u{85}",
            "\u{202e}x",
            "x\u{2028}",
            "\u{2066}",
        ] {
            assert!(!fits(bad, 0, 100), "{bad:?}");
            assert!(has_bad_chars(bad), "{bad:?}");
        }
        assert!(fits("Zoë 🩺", 1, 10));
        assert!(!has_bad_chars("Zoë 🩺"));
    }

    #[test]
    fn slots_are_corrected_and_counted() {
        let mut f = Fixes::default();
        let mut s = Some(Text::from(""));
        opt(&mut s, 10, &mut f);
        assert_eq!(s, None);
        let mut s = Some(Text::from("ab\0cdé\u{202e}fghijk"));
        opt(&mut s, 8, &mut f);
        assert_eq!(s.as_deref(), Some("ab\u{fffd}cdé\u{fffd}f"));
        assert_eq!(
            f,
            Fixes {
                empty: 1,
                truncated: 1,
                replaced: 1,
                invalid: 0
            }
        );
        let mut t = Text::from("");
        req(&mut t, 5, "Error", &mut f);
        assert_eq!(t, "Error");
        assert_eq!(f.empty, 2);
    }

    #[test]
    fn roles_keep_at_most_25_non_empty() {
        let mut f = Fixes::default();
        let mut roles: Option<Arc<[Text]>> = Some(
            std::iter::once(Text::EMPTY)
                .chain((0..30).map(|i| Text::from(format!("r{i}"))))
                .collect(),
        );
        super::roles(&mut roles, &mut f);
        assert_eq!(roles.unwrap().len(), ROLES);
        assert_eq!((f.empty, f.truncated), (1, 1));
    }
}
