//! What the layer reads from a request's head: correlation ids, the user
//! agent, the method. Every value is clamped to the schema's bounds here,
//! and each correction is counted.

use ::http::header::{HeaderMap, HeaderName, COOKIE, USER_AGENT};
use ::http::Method;

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
    let v = headers.get(name)?;
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

/// The user agent, at most 512 characters.
pub(crate) fn user_agent(headers: &HeaderMap, counters: &Counters) -> Option<Text> {
    header_text(headers, &USER_AGENT).map(|s| clamp_counted(&s, MAX_HTTP_TEXT, counters))
}

/// The trace id of a W3C `traceparent` header
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), or `None`
/// when the header is absent or malformed (an all-zero id is invalid).
pub(crate) fn trace_id(headers: &HeaderMap) -> Option<Text> {
    static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    let v = headers.get(&TRACEPARENT)?.as_bytes();
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
    use ::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn traceparent() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(&headers(&[("traceparent", good)])).as_deref(),
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
            assert_eq!(trace_id(&headers(&[("traceparent", bad)])), None, "{bad}");
        }
        // A later version may carry more fields.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abcd";
        assert!(trace_id(&headers(&[("traceparent", v1)])).is_some());
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
