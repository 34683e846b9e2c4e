//! What the layer reads from a request's head: correlation ids, the user
//! agent, the method. Every value is clamped to the schema's bounds here,
//! and each correction is counted.

use ::http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE, USER_AGENT};
use ::http::Method;
use bytes::{Bytes, BytesMut};

use super::Counters;
use crate::model::event::HttpMethod;
use crate::util::text::Text;

/// Longest `correlation.*` id the schema allows (characters).
pub(crate) const MAX_ID: usize = crate::model::limits::ID;
/// Longest `http.user_agent` and `http.route_template` (characters).
pub(crate) const MAX_HTTP_TEXT: usize = crate::model::limits::HTTP_TEXT;

/// `s` cut to at most `max` characters (never inside one). The second value
/// is true when it was cut.
///
/// Local to the layer for now; it counts its corrections in the layer's
/// counters.
pub(crate) fn clamp(s: &str, max: usize) -> (Text, bool) {
    if s.len() <= max {
        return (Text::new(s), false);
    }
    match s.char_indices().nth(max) {
        Some((i, _)) => (Text::new(&s[..i]), true),
        None => (Text::new(s), false),
    }
}

/// [`clamp`], counting a cut.
pub(crate) fn clamp_counted(s: &str, max: usize, counters: &Counters) -> Text {
    let (t, cut) = clamp(s, max);
    if cut {
        counters.add(&counters.clamped);
    }
    t
}

/// A header's value as text: `None` when absent or empty. Bytes that are
/// not visible ASCII (obs-text) are read as UTF-8 where they are, else
/// replaced with U+FFFD.
pub(crate) fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Option<std::borrow::Cow<'a, str>> {
    value_text(headers.get(name)?)
}

/// The headers the layer reads from every request, found in one pass over
/// the request's headers (the first value of each): each lookup by name
/// hashed the name and probed the map, four times per request.
#[derive(Default)]
pub(crate) struct Head<'a> {
    /// The header [`AuditLayer::actor_from_header`](super::AuditLayer::actor_from_header) names.
    pub(crate) actor: Option<&'a HeaderValue>,
    pub(crate) request_id: Option<&'a HeaderValue>,
    pub(crate) traceparent: Option<&'a HeaderValue>,
    pub(crate) user_agent: Option<&'a HeaderValue>,
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

impl<'a> Head<'a> {
    pub(crate) fn scan(
        headers: &'a HeaderMap,
        actor: Option<&HeaderName>,
        request_id: &HeaderName,
    ) -> Head<'a> {
        let mut head = Head::default();
        let first = |slot: &mut Option<&'a HeaderValue>, v: &'a HeaderValue| {
            if slot.is_none() {
                *slot = Some(v);
            }
        };
        for (name, v) in headers {
            if actor == Some(name) {
                first(&mut head.actor, v);
            }
            if name == request_id {
                first(&mut head.request_id, v);
            } else if name == USER_AGENT {
                first(&mut head.user_agent, v);
            } else if name == TRACEPARENT {
                first(&mut head.traceparent, v);
            }
        }
        head
    }
}

/// A header value as text: `None` when empty. Bytes that are not visible
/// ASCII (obs-text) are read as UTF-8 where they are, else replaced with
/// U+FFFD.
pub(crate) fn value_text(v: &HeaderValue) -> Option<std::borrow::Cow<'_, str>> {
    // The usual value: visible ASCII, nothing to trim (parsers strip the
    // whitespace around a field's value).
    let b = v.as_bytes();
    if let (Some(first), Some(last)) = (b.first(), b.last()) {
        if *first > b' ' && *last > b' ' {
            if let Ok(s) = v.to_str() {
                return Some(std::borrow::Cow::Borrowed(s));
            }
        }
    }
    let text = match v.to_str() {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v.as_bytes()),
    };
    let trimmed_len = text.trim().len();
    if trimmed_len == 0 {
        return None;
    }
    Some(match text {
        std::borrow::Cow::Borrowed(s) => std::borrow::Cow::Borrowed(s.trim()),
        std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s.trim().to_owned()),
    })
}

/// Bytes of this thread's header values (see [`value_of`]): small enough
/// for the allocator's per-thread cache.
const SLAB: usize = 1000;

/// `value` as a header value (`None` when it is not a valid one), its
/// bytes in a slab this thread shares among the values it makes: a
/// response's request id costs a reference count, not an allocation (one
/// per kilobyte of ids, some 27 requests). A slab is freed when the
/// last value in it is.
pub(crate) fn value_of(value: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(slab_bytes(value)).ok()
}

/// [`value_of`] for a UUID's hyphenated form, without checking its bytes
/// again.
pub(crate) fn uuid_value(hyphenated: &str) -> HeaderValue {
    debug_assert!(hyphenated
        .bytes()
        .all(|b| b == b'-' || b.is_ascii_hexdigit()));
    // SAFETY: a hyphenated UUID (what the caller passes) is hex digits and
    // dashes: visible ASCII, valid UTF-8 and a valid header value.
    unsafe { HeaderValue::from_maybe_shared_unchecked(slab_bytes(hyphenated.as_bytes())) }
}

/// `value` copied into this thread's slab of header bytes.
fn slab_bytes(value: &[u8]) -> Bytes {
    use std::cell::RefCell;
    thread_local! {
        static VALUES: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }
    let bytes = VALUES
        .try_with(|v| {
            let mut v = v.try_borrow_mut().ok()?;
            if v.capacity() < value.len() {
                *v = BytesMut::with_capacity(SLAB.max(value.len()));
            }
            v.extend_from_slice(value);
            Some(v.split().freeze())
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| Bytes::copy_from_slice(value));
    bytes
}

/// An address as `http.client_ip` holds it, written without the
/// formatting machinery or a heap string.
pub(crate) fn ip_text(ip: std::net::IpAddr) -> Text {
    use std::cell::RefCell;
    // The last address this thread wrote: a connection's requests come
    // from one peer, one after another.
    thread_local! {
        static LAST: RefCell<Option<(std::net::IpAddr, Text)>> = const { RefCell::new(None) };
    }
    let hit = LAST
        .try_with(|l| match &*l.try_borrow().ok()? {
            Some((last, text)) if *last == ip => Some(text.clone()),
            _ => None,
        })
        .ok()
        .flatten();
    if let Some(text) = hit {
        return text;
    }
    let text = write_ip(ip);
    let _ = LAST.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            *l = Some((ip, text.clone()));
        }
    });
    text
}

/// `ip` written out.
fn write_ip(ip: std::net::IpAddr) -> Text {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            // SAFETY: `buf[..n]` holds ASCII digits and dots only.
            Text::new(unsafe { std::str::from_utf8_unchecked(&buf[..n]) })
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            // The longest form (`ffff:..` with an embedded IPv4) has 45.
            let mut buf = [0u8; 64];
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            match write!(cur, "{v6}") {
                Ok(()) => {
                    let n = cur.position() as usize;
                    Text::new(std::str::from_utf8(&buf[..n]).unwrap_or_default())
                }
                Err(_) => Text::from(v6.to_string()),
            }
        }
    }
}

/// The schema's method, when it has one (it lists GET, HEAD, POST, PUT,
/// PATCH, DELETE and OPTIONS; others leave `http.method` out).
pub(crate) fn method(m: &Method) -> Option<HttpMethod> {
    Some(match *m {
        Method::GET => HttpMethod::Get,
        Method::HEAD => HttpMethod::Head,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::OPTIONS => HttpMethod::Options,
        _ => return None,
    })
}

/// The user agent (the request's `User-Agent` value), at most 512
/// characters.
pub(crate) fn user_agent(value: Option<&HeaderValue>, counters: &Counters) -> Option<Text> {
    value_text(value?).map(|s| clamp_counted(&s, MAX_HTTP_TEXT, counters))
}

/// The trace id of a W3C `traceparent` header
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), or `None`
/// when the header is absent or malformed (an all-zero id is invalid).
pub(crate) fn trace_id(traceparent: Option<&HeaderValue>) -> Option<Text> {
    let v = traceparent?.as_bytes();
    let v = v.trim_ascii();
    if v.len() < 55 {
        return None;
    }
    let hex = |b: &[u8]| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    let dashes = v[2] == b'-' && v[35] == b'-' && v[52] == b'-';
    let ok = dashes
        && hex(version)
        && version != b"ff"
        && hex(trace)
        && hex(parent)
        && hex(flags)
        && trace.iter().any(|&c| c != b'0')
        && parent.iter().any(|&c| c != b'0')
        // Version 00 has exactly these fields; later versions may append
        // more after a dash.
        && (if version == b"00" { v.len() == 55 } else { v.len() == 55 || v[55] == b'-' });
    if !ok {
        return None;
    }
    // Checked above: ASCII hex.
    std::str::from_utf8(trace).ok().map(Text::new)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values share a slab and keep their bytes; a value longer than a
    /// slab, or not a valid header value, is handled too.
    #[test]
    fn values_from_the_slab() {
        let ids: Vec<String> = (0..300).map(|i| format!("{i:036}")).collect();
        let values: Vec<HeaderValue> = ids
            .iter()
            .map(|i| value_of(i.as_bytes()).unwrap())
            .collect();
        for (i, v) in ids.iter().zip(&values) {
            assert_eq!(v.as_bytes(), i.as_bytes());
        }
        let long = "x".repeat(SLAB + 10);
        assert_eq!(
            value_of(long.as_bytes()).unwrap().as_bytes(),
            long.as_bytes()
        );
        assert!(value_of(b"bad\nvalue").is_none());
        let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let mut buf = uuid::Uuid::encode_buffer();
        let s = id.hyphenated().encode_lower(&mut buf);
        assert_eq!(uuid_value(s), "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(value_of(b"after").unwrap(), "after");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn addresses_as_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "2001:db8:cafe::17",
            "::ffff:1.2.3.4",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(parsed), parsed.to_string().as_str(), "{ip}");
            // Again, from the thread's last address.
            assert_eq!(ip_text(parsed), parsed.to_string().as_str(), "{ip}");
        }
    }

    #[test]
    fn traceparent() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(headers(&[("traceparent", good)]).get("traceparent")).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(
                trace_id(headers(&[("traceparent", bad)]).get("traceparent")),
                None,
                "{bad}"
            );
        }
        // A later version may carry more fields.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abcd";
        assert!(trace_id(headers(&[("traceparent", v1)]).get("traceparent")).is_some());
    }

    #[test]
    fn cookies() {
        let h = headers(&[("cookie", "a=1; sid=abc; b=2"), ("cookie", "c=3")]);
        assert_eq!(cookie(&h, "sid"), Some("abc"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "d"), None);
        assert_eq!(cookie(&headers(&[("cookie", "sid=")]), "sid"), None);
    }

    #[test]
    fn clamping_counts_characters() {
        let (t, cut) = clamp(&"é".repeat(300), 256);
        assert!(cut);
        assert_eq!(t.chars().count(), 256);
        let (t, cut) = clamp("short", 256);
        assert!(!cut);
        assert_eq!(t, "short");
    }
}
