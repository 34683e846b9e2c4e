//! `nats://HOST:PORT?stream=NAME&prefix=P&cloudevents`: a [`NatsSink`](crate::NatsSink)
//! (feature `nats`).

use std::fmt;

use super::{err, Opts, SinkKind, SinkSpec, SpecError};

/// phi-audit's options of a NATS URL.
const NATS_OPTIONS: &[&str] = &[
    "sync",
    "queue",
    "full",
    "stream",
    "prefix",
    "cloudevents",
    "spool",
    "spool_max",
    "spool_full",
];

/// `nats://HOST:PORT`: NATS JetStream (feature `nats`). Several servers are
/// separated by `,`, written `%2C` in a `PHI_AUDIT_SINK` list.
///
/// Its `Debug` output hides the URL's credentials.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsSpec {
    url: String,
    /// `stream=NAME`: the stream that must store the events (created with
    /// one replica when absent).
    pub stream: Option<String>,
    /// `prefix=P`: subject prefix (default `audit`).
    pub prefix: String,
    /// `cloudevents`: CloudEvents 1.0 structured-mode envelopes.
    pub cloudevents: bool,
}

impl NatsSpec {
    /// The server URL(s). It may hold credentials: never log it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The sink options these settings stand for.
    pub fn options(&self) -> crate::NatsOptions {
        let mut o = crate::NatsOptions::new().prefix(self.prefix.clone());
        if let Some(s) = &self.stream {
            o = o.create_stream(crate::NatsStream::new(s.clone()));
        }
        if self.cloudevents {
            o = o.cloudevents(crate::CloudEvents::new());
        }
        o
    }
}

impl fmt::Debug for NatsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let has_creds = self.url.contains('@');
        f.debug_struct("NatsSpec")
            .field(
                "url",
                &if has_creds {
                    "nats://***@..."
                } else {
                    self.url.as_str()
                },
            )
            .field("stream", &self.stream)
            .field("prefix", &self.prefix)
            .field("cloudevents", &self.cloudevents)
            .finish()
    }
}

pub(super) fn parse_nats(s: &str, errs: &mut Vec<SpecError>) -> Option<SinkSpec> {
    let (base, query, at) = match s.find('?') {
        Some(q) => (&s[..q], Some(&s[q + 1..]), q + 1),
        None => (s, None, s.len()),
    };
    let mut opts = Opts::split(query, at, errs);
    let delivery = opts.delivery();
    let stream = opts.value("stream").and_then(|(v, span)| {
        let ok = !v.is_empty()
            && v.len() <= 255
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Some(v)
        } else {
            opts.errs.push(err(
                span,
                "`stream` must be 1-255 characters of letters, digits, `-` and `_`",
            ));
            None
        }
    });
    let prefix = opts.value("prefix").and_then(|(v, span)| {
        if crate::sink::nats_valid_prefix(&v) {
            Some(v)
        } else {
            opts.errs.push(err(
                span,
                "`prefix` must be subject tokens separated by `.`, without `*`, `>` or spaces",
            ));
            None
        }
    });
    let cloudevents = opts.flag("cloudevents");
    let spool = opts.spool();
    opts.finish(NATS_OPTIONS);
    let base = match super::decode(base) {
        Ok(b) => b,
        Err(span) => {
            errs.push(err(span, "bad `%XX` escape in the URL"));
            return None;
        }
    };
    let servers_ok = base.split(',').all(|u| {
        u.strip_prefix("nats://")
            .is_some_and(|h| !h.is_empty() && !h.contains('/'))
    });
    if !servers_ok {
        errs.push(err(
            0..base.len(),
            "a NATS sink is nats://HOST:PORT, several separated by `,` (`%2C` in a list of sinks)",
        ));
        return None;
    }
    Some(SinkSpec {
        kind: SinkKind::Nats(NatsSpec {
            url: base,
            stream,
            prefix: prefix.unwrap_or_else(|| "audit".into()),
            cloudevents,
        }),
        delivery,
        spool,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Delivery, SinkKind};

    #[test]
    fn nats_specs_parse_with_their_options() {
        let spec = parse("nats://127.0.0.1:4222%2Cnats://127.0.0.1:4223?stream=AUDIT&prefix=audit.prod&cloudevents&sync")
            .map_err(|e| e.into_iter().map(|e| e.message).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(spec.delivery, Delivery::Sync);
        let SinkKind::Nats(n) = &spec.kind else {
            panic!("not a NATS spec")
        };
        assert_eq!(n.url(), "nats://127.0.0.1:4222,nats://127.0.0.1:4223");
        assert_eq!(n.stream.as_deref(), Some("AUDIT"));
        assert_eq!(n.prefix, "audit.prod");
        assert!(n.cloudevents);
        assert!(spec.spool.is_none());
        let spooled = parse("nats://h:4222?spool=/var/spool/audit").unwrap();
        assert!(spooled.spool.is_some());
        let n = match parse("nats://h:4222").unwrap().kind {
            SinkKind::Nats(n) => n,
            _ => unreachable!(),
        };
        assert_eq!(
            (n.stream, n.prefix.as_str(), n.cloudevents),
            (None, "audit", false)
        );
    }

    #[test]
    fn bad_nats_options_are_reported_without_values() {
        let errs =
            parse("nats://h:4222?stream=a.b&prefix=audit.*&cloudevents=yes&color=red").unwrap_err();
        let all: Vec<String> = errs.into_iter().map(|e| e.message).collect();
        assert_eq!(all.len(), 4, "{all:?}");
        assert!(all.iter().any(|m| m.contains("`stream`")));
        assert!(all.iter().any(|m| m.contains("`prefix`")));
        assert!(all.iter().any(|m| m.contains("`cloudevents` is a flag")));
        assert!(all.iter().any(|m| m.contains("unknown option `color`")));
        assert!(parse("nats://").is_err());
    }
}
