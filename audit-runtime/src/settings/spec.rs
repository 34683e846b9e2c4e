//! Sink specs: one sink written as text, the way `PHI_AUDIT_SINK` and the
//! `sink` key of the settings spell it.
//!
//! ```text
//! stdout                              tracing
//! jsonl:PATH                          ledger:PATH
//! postgres://USER@HOST/DB             (the connection URL itself; feature `postgres`)
//! ```
//!
//! Options follow a `?`, joined by `&` (`ledger:/var/audit.jsonl?alg=sha384&every=500`).
//! In a path or an option value, `%XX` stands for the byte with hex code
//! `XX`: write `%25` for `%`, `%3F` for `?`, `%26` for `&` and `%2C` for `,`.
//!
//! | option | sinks | meaning |
//! |---|---|---|
//! | `sync` | all | write on the caller's thread; without it the sink runs behind a [`NonBlocking`](crate::NonBlocking) queue |
//! | `queue=N` | all but `sync` | queue capacity in events (default 4096, at most 1048576) |
//! | `full=block\|drop` | all but `sync` | what a full queue does (default `block`: lossless) |
//! | `fsync=always\|never\|N` | jsonl, ledger | sync every event (default), never, or every N events |
//! | `rotate=SIZE` | jsonl | rotate before the file grows past SIZE (`500MB`, `1GiB`, or bytes) |
//! | `alg=sha256\|sha384\|sha512` | ledger | hash algorithm of the chain (default sha256) |
//! | `checkpoint_key=FILE` | ledger | sign checkpoints with the Ed25519 key in FILE (32 raw bytes or 64 hex characters) |
//! | `every=N` | ledger, with `checkpoint_key` | a checkpoint every N events (default 1000; 0: only at close) |
//! | `schema=NAME` | postgres | schema of the audit table (default `public`) |
//! | `integrity` | postgres | hash-chain the rows per service |
//! | `batch=N` | postgres | most events per insert transaction (default 1000) |
//! | `stream=NAME`, `prefix=P`, `cloudevents` (and `spool=DIR`, as postgres) | nats | the JetStream stream (created if absent), subject prefix (default `audit`), CloudEvents envelopes (feature `nats`: `nats://HOST:PORT`) |
//! | `spool=DIR` | postgres | a durable [`Spool`](crate::Spool) in DIR between the queue and the sink: callers wait only for the local append; the sink gives a failing batch up after 10 s and the spool retries it, events staying on disk |
//! | `spool_max=SIZE` | postgres, with `spool` | most bytes waiting in the spool (default 1GiB) |
//! | `spool_full=block\|refuse` | postgres, with `spool` | what a full spool does (default `block`; `refuse` counts each refused event as lost) |
//!
//! A PostgreSQL URL keeps its own parameters (`sslmode`, `connect_timeout`,
//! `application_name`, ...) beside phi-audit's: the keys above are phi-audit's,
//! every other key goes to the driver, which rejects the ones it does not
//! know.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;

use crate::model::event::HashAlg;
use crate::sink::{FsyncPolicy, FullPolicy, JsonlOptions, LedgerOptions};

#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "nats")]
pub use nats::NatsSpec;

/// The sink forms, as error messages list them.
pub(crate) const ACCEPTED_FORMS: &str =
    "stdout, tracing, jsonl:PATH, ledger:PATH, postgres://USER@HOST/DB or postgres:URL (feature `postgres`)";

/// The options each sink takes (a new option: its key here, and a line
/// taking it in the sink's parser).
const STREAM_OPTIONS: &[&str] = &["sync", "queue", "full"];
const JSONL_OPTIONS: &[&str] = &["sync", "queue", "full", "fsync", "rotate"];
const LEDGER_OPTIONS: &[&str] = &[
    "sync",
    "queue",
    "full",
    "fsync",
    "alg",
    "checkpoint_key",
    "every",
];
/// phi-audit's options of a PostgreSQL URL; its other parameters are the
/// driver's.
#[cfg(feature = "postgres")]
const POSTGRES_OPTIONS: &[&str] = &[
    "sync",
    "queue",
    "full",
    "schema",
    "integrity",
    "batch",
    "spool",
    "spool_max",
    "spool_full",
];

/// Largest `queue=N`: the queue's memory is reserved at start-up.
pub(crate) const MAX_QUEUE: usize = 1 << 20;

/// Largest `batch=N` of a PostgreSQL sink.
#[cfg(feature = "postgres")]
const MAX_BATCH: usize = 100_000;

/// One sink: where events go, and how they are handed to it.
///
/// Parse one with [`str::parse`]; the [module docs](self) list the forms and
/// options.
///
/// ```
/// use audit_runtime::settings::{Delivery, SinkKind, SinkSpec};
/// use audit_runtime::HashAlg;
///
/// let spec: SinkSpec = "ledger:/var/log/audit.jsonl?alg=sha384&sync".parse()?;
/// let SinkKind::Ledger(ledger) = &spec.kind else { unreachable!() };
/// assert_eq!(ledger.alg, HashAlg::Sha384);
/// assert_eq!(spec.delivery, Delivery::Sync);
///
/// let err = "jsnl:/tmp/a.jsonl".parse::<SinkSpec>().unwrap_err();
/// assert!(err.to_string().contains("jsonl:PATH"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkSpec {
    /// The sink.
    pub kind: SinkKind,
    /// On the caller's thread, or behind a queue (the default).
    pub delivery: Delivery,
    /// A durable spool in front of the sink (`spool=DIR`; remote sinks).
    pub spool: Option<SpoolSpec>,
}

/// `spool=DIR`: a [`Spool`](crate::Spool) directory in front of a remote
/// sink, with `spool_max=SIZE` and `spool_full=block|refuse`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolSpec {
    /// The spool directory (`{pid}` and `{hostname}` are replaced when it
    /// is opened).
    pub dir: PathBuf,
    /// `spool_max=SIZE` (default 1 GiB).
    pub max_bytes: u64,
    /// `spool_full=block|refuse` (default block).
    pub full: crate::sink::SpoolFull,
}

impl SpoolSpec {
    /// The spool options these settings stand for.
    pub fn options(&self) -> crate::sink::SpoolOptions {
        crate::sink::SpoolOptions {
            max_bytes: self.max_bytes,
            full: self.full,
            ..crate::sink::SpoolOptions::default()
        }
    }
}

impl SinkSpec {
    /// `kind`, behind the default queue.
    pub fn new(kind: SinkKind) -> SinkSpec {
        SinkSpec {
            kind,
            delivery: Delivery::default(),
            spool: None,
        }
    }

    /// The scheme that names this sink's kind (`stdout`, `jsonl`, ...).
    pub fn scheme(&self) -> &'static str {
        self.kind.scheme()
    }
}

/// The sinks a [`SinkSpec`] can name.
///
/// New remote sinks are new variants (behind their feature), each with its
/// own options struct.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkKind {
    /// `stdout`: [`StdoutSink`](crate::StdoutSink).
    Stdout,
    /// `tracing`: [`TracingSink`](crate::TracingSink).
    Tracing,
    /// `jsonl:PATH`: [`JsonlFileSink`](crate::JsonlFileSink).
    Jsonl(JsonlSpec),
    /// `ledger:PATH`: [`LedgerSink`](crate::LedgerSink).
    Ledger(LedgerSpec),
    /// `postgres://..`: [`PostgresSink`](crate::PostgresSink).
    #[cfg(feature = "postgres")]
    Postgres(PostgresSpec),
    /// `nats://..`: [`NatsSink`](crate::NatsSink).
    #[cfg(feature = "nats")]
    Nats(NatsSpec),
}

impl SinkKind {
    /// The scheme that names this kind.
    pub fn scheme(&self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::Tracing => "tracing",
            SinkKind::Jsonl(_) => "jsonl",
            SinkKind::Ledger(_) => "ledger",
            #[cfg(feature = "postgres")]
            SinkKind::Postgres(_) => "postgres",
            #[cfg(feature = "nats")]
            SinkKind::Nats(_) => "nats",
        }
    }
}

/// How events reach a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Behind a [`NonBlocking`](crate::NonBlocking) queue and its worker
    /// thread (the default): callers only pay for queueing.
    Queued {
        /// Queue capacity in events (`queue=N`; default 4096).
        capacity: usize,
        /// What a full queue does (`full=block|drop`; default block).
        full: FullPolicy,
    },
    /// On the caller's thread (`?sync`).
    Sync,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery::Queued {
            capacity: 4096,
            full: FullPolicy::Block,
        }
    }
}

/// `jsonl:PATH`: a JSON-lines file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsonlSpec {
    /// The file.
    pub path: PathBuf,
    /// `fsync=always|never|N` (default always).
    pub fsync: FsyncPolicy,
    /// `rotate=SIZE` (default: no rotation).
    pub rotate_bytes: Option<u64>,
}

impl JsonlSpec {
    /// A file at `path` with the default options.
    pub fn new(path: impl Into<PathBuf>) -> JsonlSpec {
        JsonlSpec {
            path: path.into(),
            fsync: FsyncPolicy::EveryEvent,
            rotate_bytes: None,
        }
    }

    /// The sink options these settings stand for.
    pub fn options(&self) -> JsonlOptions {
        JsonlOptions {
            fsync: self.fsync,
            rotate_bytes: self.rotate_bytes,
            ..JsonlOptions::default()
        }
    }
}

/// `ledger:PATH`: a hash-chained JSON-lines file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerSpec {
    /// The file.
    pub path: PathBuf,
    /// `alg=` (default sha256).
    pub alg: HashAlg,
    /// `fsync=always|never|N` (default always).
    pub fsync: FsyncPolicy,
    /// `checkpoint_key=FILE`: the file holding the Ed25519 signing key (read
    /// at start-up; the key itself is never part of the settings).
    pub checkpoint_key: Option<PathBuf>,
    /// `every=N`: a checkpoint every N events (default 1000; 0: only at close).
    pub checkpoint_every: u64,
}

impl LedgerSpec {
    /// A ledger at `path` with the default options.
    pub fn new(path: impl Into<PathBuf>) -> LedgerSpec {
        let d = LedgerOptions::default();
        LedgerSpec {
            path: path.into(),
            alg: d.hash_alg,
            fsync: d.fsync,
            checkpoint_key: None,
            checkpoint_every: d.checkpoint_every,
        }
    }
}

/// `postgres://USER@HOST/DB`: a PostgreSQL table (feature `postgres`).
///
/// Its `Debug` output hides the URL's password.
#[cfg(feature = "postgres")]
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresSpec {
    /// The driver's URL: phi-audit's options taken out.
    url: String,
    /// `schema=` (default `public`).
    pub schema: String,
    /// `integrity`: hash-chain the rows per service.
    pub integrity: bool,
    /// `batch=N`: most events per insert transaction (default 1000).
    pub batch_size: usize,
}

#[cfg(feature = "postgres")]
impl PostgresSpec {
    /// The connection URL handed to the driver (phi-audit's options taken
    /// out). It may hold a password: never log it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The sink options these settings stand for, with the URL's
    /// `connect_timeout` when it has one.
    pub fn options(&self) -> crate::PostgresOptions {
        let mut o = crate::PostgresOptions::new()
            .schema(self.schema.clone())
            .integrity(self.integrity)
            .batch_size(self.batch_size);
        if let Ok(config) = self.url.parse::<postgres::Config>() {
            if let Some(t) = config.get_connect_timeout() {
                o = o.connect_timeout(*t);
            }
        }
        o
    }
}

#[cfg(feature = "postgres")]
impl fmt::Debug for PostgresSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSpec")
            .field("url", &redacted_url(&self.url))
            .field("schema", &self.schema)
            .field("integrity", &self.integrity)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

#[cfg(feature = "postgres")]
/// `url` with the password of its user info and of a `password=` parameter
/// replaced by `***`. The user info ends at the first `@`, as the driver
/// reads it (a password may hold `/`, `?` and `:`).
pub(crate) fn redacted_url(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return "***".to_owned();
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..i + 3]);
    let mut rest = &url[i + 3..];
    if let Some(at) = rest.find('@') {
        let creds = &rest[..at];
        match creds.find(':') {
            Some(c) => {
                out.push_str(&creds[..c]);
                out.push_str(":***");
            }
            None => out.push_str(creds),
        }
        rest = &rest[at..];
    }
    let Some(q) = rest.find('?') else {
        out.push_str(rest);
        return out;
    };
    out.push_str(&rest[..=q]);
    for (n, pair) in rest[q + 1..].split('&').enumerate() {
        if n > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _)) if decode(k).is_ok_and(|k| k.eq_ignore_ascii_case("password")) => {
                out.push_str(k);
                out.push_str("=***");
            }
            _ => out.push_str(pair),
        }
    }
    out
}

/// Byte offset of the `?` that starts a URL's parameters: the first one
/// after the user info (which ends at the first `@`, as the driver reads it).
#[cfg(feature = "postgres")]
fn url_query_start(url: &str) -> Option<usize> {
    let host_at = url.find("://").map_or(0, |i| i + 3);
    let after_creds = url[host_at..]
        .find('@')
        .map_or(host_at, |at| host_at + at + 1);
    url[after_creds..].find('?').map(|q| after_creds + q)
}

/// A mistake in one spec: where (bytes of the spec) and what.
#[derive(Debug)]
pub(crate) struct SpecError {
    pub(crate) span: Range<usize>,
    pub(crate) message: String,
}

impl FromStr for SinkSpec {
    type Err = super::SettingsError;

    /// Parses one spec; the error lists every mistake in it.
    fn from_str(s: &str) -> Result<SinkSpec, super::SettingsError> {
        parse(s).map_err(|errors| {
            let origin = super::Origin::key("sink spec");
            super::SettingsError::new(
                errors
                    .into_iter()
                    .map(|e| origin.at_chars(s, 0, e.span).problem(e.message))
                    .collect(),
            )
        })
    }
}

impl<'de> serde::Deserialize<'de> for SinkSpec {
    /// From the spec's text.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SinkSpec, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses one spec (already trimmed), reporting every mistake in it.
pub(crate) fn parse(s: &str) -> Result<SinkSpec, Vec<SpecError>> {
    let mut errs = Vec::new();
    let spec = parse_inner(s, &mut errs);
    match spec {
        Some(spec) if errs.is_empty() => Ok(spec),
        _ => {
            if errs.is_empty() {
                errs.push(err(0..s.len(), "not a sink spec"));
            }
            Err(errs)
        }
    }
}

fn err(span: Range<usize>, message: impl Into<String>) -> SpecError {
    SpecError {
        span,
        message: message.into(),
    }
}

/// `word` when it is a short plain identifier, safe to show in a message.
fn shown(word: &str) -> Option<&str> {
    let ok = !word.is_empty()
        && word.len() <= 32
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'));
    ok.then_some(word)
}

fn parse_inner(s: &str, errs: &mut Vec<SpecError>) -> Option<SinkSpec> {
    if s.is_empty() {
        errs.push(err(
            0..0,
            format!("empty sink spec; accepted: {ACCEPTED_FORMS}"),
        ));
        return None;
    }
    let end = s.find([':', '?']).unwrap_or(s.len());
    let scheme = &s[..end];
    let after = &s[end..];
    match scheme {
        "postgres" | "postgresql" if after.starts_with("://") => parse_postgres(s, errs),
        #[cfg(feature = "nats")]
        "nats" if after.starts_with("://") => nats::parse_nats(s, errs),
        // `postgres:URL`: the scheme, then the connection URL itself.
        "postgres" | "postgresql"
            if after.starts_with(":postgres://") || after.starts_with(":postgresql://") =>
        {
            let skip = end + 1;
            let mut inner = Vec::new();
            let spec = parse_postgres(&s[skip..], &mut inner);
            errs.extend(inner.into_iter().map(|mut e| {
                e.span = e.span.start + skip..e.span.end + skip;
                e
            }));
            spec
        }
        "postgres" | "postgresql" => {
            errs.push(err(
                0..s.len(),
                "a PostgreSQL sink is its connection URL, alone or after `postgres:`: \
                 postgres://USER@HOST/DB or postgres:postgres://USER@HOST/DB",
            ));
            None
        }
        "stdout" | "tracing" => {
            let kind = if scheme == "stdout" {
                SinkKind::Stdout
            } else {
                SinkKind::Tracing
            };
            let query = match after.strip_prefix(':') {
                Some(_) => {
                    errs.push(err(
                        end..s.len(),
                        format!("`{scheme}` takes no path; options follow a `?` ({scheme}?sync)"),
                    ));
                    return None;
                }
                None => after.strip_prefix('?'),
            };
            let mut opts = Opts::split(query, end + 1, errs);
            let delivery = opts.delivery();
            opts.finish(STREAM_OPTIONS);
            Some(SinkSpec {
                kind,
                delivery,
                spool: None,
            })
        }
        "jsonl" | "ledger" => {
            let Some(body) = after.strip_prefix(':') else {
                errs.push(err(
                    0..s.len(),
                    format!("`{scheme}` needs a file: {scheme}:PATH"),
                ));
                return None;
            };
            let body_at = end + 1;
            let (raw_path, query) = match body.find('?') {
                Some(q) => (&body[..q], Some(&body[q + 1..])),
                None => (body, None),
            };
            let path_span = body_at..body_at + raw_path.len();
            let path = if raw_path.is_empty() {
                errs.push(err(
                    path_span,
                    format!("`{scheme}:` needs a file path: {scheme}:PATH"),
                ));
                None
            } else {
                match decode(raw_path) {
                    Ok(p) => Some(PathBuf::from(p)),
                    Err(e) => {
                        errs.push(err(
                            body_at + e.start..body_at + e.end,
                            format!("the path has a bad escape: {PERCENT_RULE}"),
                        ));
                        None
                    }
                }
            };
            let query_at = body_at + raw_path.len() + 1;
            let mut opts = Opts::split(query, query_at, errs);
            let delivery = opts.delivery();
            let fsync = opts.fsync();
            let kind = if scheme == "jsonl" {
                let rotate_bytes = opts.size("rotate");
                opts.finish(JSONL_OPTIONS);
                SinkKind::Jsonl(JsonlSpec {
                    path: path?,
                    fsync,
                    rotate_bytes,
                })
            } else {
                let alg = opts.choice("alg", &["sha256", "sha384", "sha512"]);
                let alg = alg.and_then(HashAlg::from_str).unwrap_or(HashAlg::Sha256);
                let checkpoint_key = opts.value("checkpoint_key").and_then(|(v, span)| {
                    if v.is_empty() {
                        opts.errs
                            .push(err(span, "`checkpoint_key=` needs a key file path"));
                        None
                    } else {
                        Some(PathBuf::from(v))
                    }
                });
                let every_span = opts.span_of("every");
                let every = opts.number("every", 0, u64::MAX);
                if let (Some(span), None) = (every_span, &checkpoint_key) {
                    opts.errs.push(err(
                        span,
                        "`every` sets how often checkpoints are signed: it needs `checkpoint_key=FILE`",
                    ));
                }
                opts.finish(LEDGER_OPTIONS);
                SinkKind::Ledger(LedgerSpec {
                    path: path?,
                    alg,
                    fsync,
                    checkpoint_key,
                    checkpoint_every: every.unwrap_or(LedgerOptions::default().checkpoint_every),
                })
            };
            Some(SinkSpec {
                kind,
                delivery,
                spool: None,
            })
        }
        _ => {
            let message = match shown(scheme) {
                Some(word) if !after.is_empty() || !word.contains('.') => {
                    format!("unknown sink `{word}`; accepted: {ACCEPTED_FORMS}")
                }
                _ if s.contains('/') && !s.contains(':') => format!(
                    "not a sink spec: a file needs its format first (jsonl:PATH or ledger:PATH); accepted: {ACCEPTED_FORMS}"
                ),
                _ => format!("not a sink spec; accepted: {ACCEPTED_FORMS}"),
            };
            errs.push(err(0..end.max(1).min(s.len()), message));
            None
        }
    }
}

#[cfg(not(feature = "postgres"))]
fn parse_postgres(s: &str, errs: &mut Vec<SpecError>) -> Option<SinkSpec> {
    errs.push(err(
        0..s.find("://").unwrap_or(s.len()),
        "PostgreSQL sinks need the `postgres` feature: depend on phi-audit with \
         features = [\"postgres\"]",
    ));
    None
}

#[cfg(feature = "postgres")]
fn parse_postgres(s: &str, errs: &mut Vec<SpecError>) -> Option<SinkSpec> {
    let (base, query, query_at) = match url_query_start(s) {
        Some(q) => (&s[..q], Some(&s[q + 1..]), q + 1),
        None => (s, None, s.len()),
    };
    let mut opts = Opts::split(query, query_at, errs);
    let delivery = opts.delivery();
    let schema = opts
        .value("schema")
        .and_then(|(v, span)| match crate::sink::quoted_schema(&v) {
            Ok(_) => Some(v),
            Err(_) => {
                opts.errs.push(err(
                    span,
                    "`schema` must be 1-63 characters of a-z, 0-9 and _, not starting with a digit",
                ));
                None
            }
        });
    let integrity = opts.flag("integrity");
    let batch = opts.number("batch", 1, MAX_BATCH as u64);
    let spool = opts.spool();
    // Every other parameter is the driver's.
    let rest = opts.unused();
    let mut url = base.to_owned();
    if !rest.is_empty() {
        url.push('?');
        url.push_str(&rest.join("&"));
    }
    if let Err(e) = url.parse::<postgres::Config>() {
        // The driver's causes name an option or a position, never a value.
        let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
        errs.push(err(
            0..s.len(),
            format!(
                "not a PostgreSQL connection URL the driver accepts ({e}{cause}); phi-audit's \
                 own options here are {}",
                POSTGRES_OPTIONS.join(", ")
            ),
        ));
        return None;
    }
    Some(SinkSpec {
        kind: SinkKind::Postgres(PostgresSpec {
            url,
            schema: schema.unwrap_or_else(|| "public".into()),
            integrity,
            batch_size: batch.map_or(1000, |b| b as usize),
        }),
        delivery,
        spool,
    })
}

const PERCENT_RULE: &str = "write `%` as `%25` (`%XX` is the byte with hex code XX)";

/// Decodes `%XX` escapes; the error is the bytes of the first bad escape.
pub(crate) fn decode(s: &str) -> Result<String, Range<usize>> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| {
                let h = std::str::from_utf8(h).ok()?;
                u8::from_str_radix(h, 16).ok()
            });
            match hex {
                Some(v) => {
                    out.push(v);
                    i += 3;
                }
                None => return Err(i..(i + 3).min(b.len())),
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| 0..s.len())
}

/// One `key` or `key=value` after the `?`.
struct Opt<'a> {
    key: &'a str,
    value: Option<&'a str>,
    /// Bytes of the whole option in the spec.
    span: Range<usize>,
    /// Bytes of the value in the spec.
    value_span: Range<usize>,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    raw: &'a str,
    used: bool,
}

/// The options of one spec, taken one key at a time; what is left at the
/// end is unknown.
struct Opts<'a, 'e> {
    list: Vec<Opt<'a>>,
    errs: &'e mut Vec<SpecError>,
}

impl<'a, 'e> Opts<'a, 'e> {
    /// Splits `query` (the text after `?`, which starts at byte `at`).
    fn split(query: Option<&'a str>, at: usize, errs: &'e mut Vec<SpecError>) -> Opts<'a, 'e> {
        let mut list: Vec<Opt<'a>> = Vec::new();
        let Some(q) = query else {
            return Opts { list, errs };
        };
        let mut start = 0;
        for raw in q.split('&') {
            let span = at + start..at + start + raw.len();
            start += raw.len() + 1;
            if raw.is_empty() {
                errs.push(err(
                    span.start.saturating_sub(1)..span.end + 1,
                    "empty option: options are `key` or `key=value`, joined by `&`",
                ));
                continue;
            }
            let (key, value, value_span) = match raw.split_once('=') {
                Some((k, v)) => (k, Some(v), span.start + k.len() + 1..span.end),
                None => (raw, None, span.end..span.end),
            };
            if list.iter().any(|o| o.key == key) {
                errs.push(err(
                    span.clone(),
                    match shown(key) {
                        Some(k) => format!("option `{k}` is given twice"),
                        None => "this option is given twice".to_owned(),
                    },
                ));
                continue;
            }
            list.push(Opt {
                key,
                value,
                span,
                value_span,
                raw,
                used: false,
            });
        }
        Opts { list, errs }
    }

    fn take(&mut self, key: &str) -> Option<&mut Opt<'a>> {
        let o = self.list.iter_mut().find(|o| o.key == key)?;
        o.used = true;
        Some(o)
    }

    fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.list
            .iter()
            .find(|o| o.key == key)
            .map(|o| o.span.clone())
    }

    /// `key` given alone.
    fn flag(&mut self, key: &str) -> bool {
        let Some(o) = self.take(key) else {
            return false;
        };
        if o.value.is_some() {
            let span = o.span.clone();
            self.errs.push(err(
                span,
                format!("`{key}` is a flag: write `{key}` without a value"),
            ));
        }
        true
    }

    /// `key=value`, decoded.
    fn value(&mut self, key: &str) -> Option<(String, Range<usize>)> {
        let o = self.take(key)?;
        let (span, value_span) = (o.span.clone(), o.value_span.clone());
        let Some(v) = o.value else {
            self.errs
                .push(err(span, format!("`{key}` needs a value: `{key}=...`")));
            return None;
        };
        match decode(v) {
            Ok(v) => Some((v, value_span)),
            Err(e) => {
                self.errs.push(err(
                    value_span.start + e.start..value_span.start + e.end,
                    format!("the value of `{key}` has a bad escape: {PERCENT_RULE}"),
                ));
                None
            }
        }
    }

    /// `key=` one of `choices` (returned as given).
    fn choice(&mut self, key: &str, choices: &[&'static str]) -> Option<&'static str> {
        let (v, span) = self.value(key)?;
        let found = choices.iter().find(|c| **c == v).copied();
        if found.is_none() {
            self.errs.push(err(
                span,
                format!("`{key}` must be one of {}", choices.join(", ")),
            ));
        }
        found
    }

    /// `key=N` with `min <= N <= max`.
    fn number(&mut self, key: &str, min: u64, max: u64) -> Option<u64> {
        let (v, span) = self.value(key)?;
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.errs.push(err(
                    span,
                    format!("`{key}` must be a whole number from {min} to {max}"),
                ));
                None
            }
        }
    }

    /// `key=SIZE`: bytes, or a number with a unit.
    fn size(&mut self, key: &str) -> Option<u64> {
        let (v, span) = self.value(key)?;
        match parse_size(&v) {
            Some(n) if n > 0 => Some(n),
            _ => {
                self.errs.push(err(
                    span,
                    format!(
                        "`{key}` must be a size of at least 1 byte: a whole number of bytes, or with \
                         one of the units B, KB, MB, GB, KiB, MiB, GiB (`{key}=500MB`)"
                    ),
                ));
                None
            }
        }
    }

    /// `sync`, or `queue=N` and `full=block|drop`.
    fn delivery(&mut self) -> Delivery {
        let sync_span = self.span_of("sync");
        let sync = self.flag("sync");
        let queue_given = self.span_of("queue").or_else(|| self.span_of("full"));
        let capacity = self.number("queue", 1, MAX_QUEUE as u64);
        let full = match self.choice("full", &["block", "drop"]) {
            Some("drop") => FullPolicy::Drop,
            _ => FullPolicy::Block,
        };
        if let (true, Some(span)) = (sync, queue_given) {
            let start = span.start.min(sync_span.map_or(span.start, |s| s.start));
            self.errs.push(err(
                start..span.end,
                "`queue` and `full` set the queue that `sync` turns off: use one or the other",
            ));
        }
        if sync {
            Delivery::Sync
        } else {
            Delivery::Queued {
                capacity: capacity.map_or(4096, |c| c as usize),
                full,
            }
        }
    }

    /// `spool=DIR`, with `spool_max=SIZE` and `spool_full=block|refuse`.
    #[cfg(any(feature = "postgres", feature = "nats"))]
    fn spool(&mut self) -> Option<SpoolSpec> {
        let dir = self.value("spool");
        let tuned = self
            .span_of("spool_max")
            .or_else(|| self.span_of("spool_full"));
        let max = self.size("spool_max");
        let full = match self.choice("spool_full", &["block", "refuse"]) {
            Some("refuse") => crate::sink::SpoolFull::Refuse,
            _ => crate::sink::SpoolFull::Block,
        };
        match (dir, tuned) {
            (Some((dir, span)), _) if dir.is_empty() => {
                self.errs.push(err(
                    span,
                    "`spool` needs a directory (`spool=/var/spool/audit`)",
                ));
                None
            }
            (Some((dir, _)), _) => Some(SpoolSpec {
                dir: PathBuf::from(dir),
                max_bytes: max.unwrap_or(1 << 30),
                full,
            }),
            (None, Some(span)) => {
                self.errs.push(err(
                    span,
                    "`spool_max` and `spool_full` tune the spool that `spool=DIR` turns on: add `spool=DIR`",
                ));
                None
            }
            (None, None) => None,
        }
    }

    /// `fsync=always|never|N`.
    fn fsync(&mut self) -> FsyncPolicy {
        let Some((v, span)) = self.value("fsync") else {
            return FsyncPolicy::EveryEvent;
        };
        match v.as_str() {
            "always" => FsyncPolicy::EveryEvent,
            "never" => FsyncPolicy::Never,
            n => match n.parse::<u32>() {
                Ok(n) if n >= 1 => FsyncPolicy::EveryN(n),
                _ => {
                    self.errs.push(err(
                        span,
                        format!(
                            "`fsync` must be always, never, or a number of events from 1 to {}",
                            u32::MAX
                        ),
                    ));
                    FsyncPolicy::EveryEvent
                }
            },
        }
    }

    /// The options not taken, as written.
    #[cfg(feature = "postgres")]
    fn unused(&self) -> Vec<&'a str> {
        self.list
            .iter()
            .filter(|o| !o.used)
            .map(|o| o.raw)
            .collect()
    }

    /// Reports every option not taken as unknown.
    fn finish(self, accepted: &[&str]) {
        for o in self.list.iter().filter(|o| !o.used) {
            let what = match shown(o.key) {
                Some(k) => format!("unknown option `{k}`"),
                None => "unknown option".to_owned(),
            };
            self.errs.push(err(
                o.span.clone(),
                format!("{what}; accepted here: {}", accepted.join(", ")),
            ));
        }
    }
}

/// `500MB`, `1GiB`, `1048576`.
fn parse_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let unit: u64 = match &s[digits..] {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

impl fmt::Display for SinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("2KiB"), Some(2048));
        assert_eq!(parse_size("3MB"), Some(3_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1TB"), None);
        assert_eq!(parse_size("MB"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }

    #[test]
    fn percent_escapes() {
        assert_eq!(decode("/a%2Cb%3F%26c%25").unwrap(), "/a,b?&c%");
        assert_eq!(decode("/plain").unwrap(), "/plain");
        assert_eq!(decode("/a%zz").unwrap_err(), 2..5);
        assert_eq!(decode("/a%2").unwrap_err(), 2..4);
        assert!(decode("%ff").is_err()); // not UTF-8
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redacted_url("postgres://u:pw@h:5432/db?sslmode=disable&password=x"),
            "postgres://u:***@h:5432/db?sslmode=disable&password=***"
        );
        assert_eq!(redacted_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redacted_url("postgres://a:b?c/d@h/db?x=1"),
            "postgres://a:***@h/db?x=1"
        );
        assert_eq!(redacted_url("host=h password=x"), "***");
        assert_eq!(url_query_start("postgres://u:p?w@h/db?a=1"), Some(21));
        assert_eq!(url_query_start("postgres://h/db"), None);
    }
}
