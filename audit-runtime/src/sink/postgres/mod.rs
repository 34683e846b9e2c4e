//! [`PostgresSink`]: audit events into a PostgreSQL table (feature `postgres`),
//! and [`PostgresStore`]: the access-review queries, chain read-back and
//! retention purge over that table.
//!
//! The table (`<schema>.audit_events`) holds one row per event: the query
//! dimensions as columns and the whole event as `jsonb`. It is append-only (a
//! trigger refuses UPDATE, DELETE and TRUNCATE); rows leave only through
//! `<schema>.purge_older_than(interval)`, which refuses anything under six
//! years unless forced and records the purge as an audit event.
//!
//! Run the sink behind [`crate::NonBlocking`]: its worker hands the sink every
//! event already queued (up to [`PostgresOptions::batch_size`]) and the sink
//! inserts them in one transaction, `ON CONFLICT (event_id) DO NOTHING`, so a
//! retried batch never duplicates. On connection loss it reconnects with
//! backoff and retries the same batch; the queue's full policy (Block by
//! default) applies meanwhile. Errors are counted ([`PostgresStats`]) and
//! logged by kind and SQLSTATE, never with event content. For an outage
//! that callers never wait for, put a [`crate::Spool`] in front.
//!
//! Every step has a deadline: the connection lives on a thread of the
//! sink's own, and the sink waits at most
//! [`PostgresOptions::connect_timeout`] for a connection's whole start-up
//! (TCP, TLS, authentication) and [`PostgresOptions::statement_timeout`]
//! plus 2 s for an insert transaction. A server that stops answering is
//! then an error in [`PostgresStats`] (with `last_error`), retried as
//! [`PostgresOptions::give_up_after`] says.
//!
//! An `event_id` already in the table is never dropped silently: when the
//! stored event is the same (`jsonb` equality, `integrity` aside: a retried
//! batch, an event written twice) it is counted in
//! [`PostgresStats::duplicates`]; when it differs, the new event could not
//! be stored, and it is counted in [`PostgresStats::conflicts`], logged, and
//! returned as a failure of the batch (so a [`crate::NonBlocking`] wrapper
//! and [`Sink::flush`] report it).
//!
//! **What is hashed is what is stored.** With [`PostgresOptions::integrity`]
//! the sink hashes each event in the form `jsonb` gives back, so `verify
//! --postgres` recomputes the same hashes. Strings, integers and key order
//! (the canonical form sorts keys) survive `jsonb` as they are; floats may
//! not (negative zero, the form of large values), so events holding floats
//! are first put in the server's own `jsonb` form (one query per batch that
//! has any). U+0000, which `jsonb` cannot
//! hold, becomes U+FFFD before anything else. The `ts` column holds the
//! instant the event's JSON `timestamp` says (timestamps outside years
//! 0000-9999 are written clamped to that range, in both).
//!
//! ```no_run
//! use audit_runtime::{Config, Dispatch, NonBlocking, PostgresOptions, PostgresSink};
//! use std::sync::Arc;
//!
//! let pg = Arc::new(PostgresSink::connect(
//!     "postgres://audit@db.internal/app",
//!     PostgresOptions::new().schema("audit").integrity(true),
//! )?);
//! let sink = NonBlocking::new(pg.clone());
//! let dispatch = Dispatch::new(Config::new("chart-service").build()?, sink);
//! // ... later: pg.stats() for counters.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Client, Statement};
use serde_json::Value;
use uuid::Uuid;

use super::{BatchError, Sink, SinkError};
use crate::config::INTERNAL_TARGET;
use crate::model::event::{AuditEvent, HashAlg, Integrity};
use crate::time::timestamp::Timestamp;
use crate::util::text::Text;

mod chain;
mod connect;
mod session;
mod store;

pub use connect::PostgresTls;
use session::{Output, Session};
pub use store::{ChainReadback, ChainVerifyError, PostgresStore, PurgeReport};

const MIGRATION_V1: &str = include_str!("migration_v1.sql");

/// Why connecting, migrating or querying failed. Never contains event
/// content: database errors are described by SQLSTATE and kind.
#[derive(Debug)]
pub enum PostgresError {
    /// The schema name is not a plain lowercase identifier.
    InvalidSchema(String),
    /// The connection URL could not be parsed.
    InvalidUrl(String),
    /// Could not connect; check the URL, that the server runs, and credentials.
    Connect(String),
    /// The migration failed; the role needs CREATE on the database (first
    /// run) or the schema was changed by hand.
    Migration(String),
    /// A statement failed.
    Database(String),
    /// The chain in the table does not verify.
    Chain(ChainVerifyError),
}

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostgresError::InvalidSchema(s) => write!(
                f,
                "invalid schema name {s:?}: use 1-63 characters of a-z, 0-9 and _, not starting with a digit"
            ),
            PostgresError::InvalidUrl(m) => write!(f, "invalid PostgreSQL URL: {m}"),
            PostgresError::Connect(m) => write!(
                f,
                "cannot connect to PostgreSQL ({m}); check the URL, that the server is running and the credentials"
            ),
            PostgresError::Migration(m) => write!(
                f,
                "applying the phi-audit migration failed ({m}); the role needs CREATE on the database or schema"
            ),
            PostgresError::Database(m) => write!(f, "PostgreSQL error: {m}"),
            PostgresError::Chain(e) => write!(f, "chain verification failed: {e}"),
        }
    }
}

impl std::error::Error for PostgresError {}

/// Describes a client error without event content: SQLSTATE and, for the
/// classes whose messages name only objects or connection state, the message.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let safe = ["08", "28", "3D", "3F", "42", "53", "55", "57", "P0"]
                .iter()
                .any(|p| code.starts_with(p));
            if safe {
                format!("SQLSTATE {code}: {}", db.message())
            } else {
                format!("SQLSTATE {code}")
            }
        }
        None if e.is_closed() => "connection closed".to_owned(),
        // I/O, TLS, protocol and parameter-type errors: no row data in them.
        None => e.to_string(),
    }
}

/// True for errors after which the same batch may succeed on a fresh
/// connection: connection loss, server shutdown, resource shortage,
/// serialization failure, deadlock.
fn is_transient(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true,
        Some(c) => {
            let c = c.code();
            c.starts_with("08")
                || c.starts_with("57P")
                || c.starts_with("53")
                || c == "57014"
                || c == "40001"
                || c == "40P01"
                || c == "55P03"
        }
    }
}

/// Options of [`PostgresSink::connect`].
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    schema: String,
    integrity: bool,
    batch_size: usize,
    backoff_initial: Duration,
    backoff_max: Duration,
    give_up_after: Option<Duration>,
    connect_timeout: Duration,
    statement_timeout: Duration,
    tcp_keepalive: Duration,
    report_errors: bool,
    tls: PostgresTls,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "public".into(),
            integrity: false,
            batch_size: 1000,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            give_up_after: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            tcp_keepalive: Duration::from_secs(10),
            report_errors: true,
            tls: PostgresTls::default(),
        }
    }
}

impl PostgresOptions {
    /// The defaults: schema `public`, no integrity, batches of 1000,
    /// backoff 50 ms doubling to 5 s, retry forever, 5 s connect timeout,
    /// 10 s statement timeout, TCP keepalive after 10 s idle, errors logged.
    pub fn new() -> PostgresOptions {
        PostgresOptions::default()
    }

    /// Schema of the table (created if missing): 1-63 of `a-z`, `0-9`, `_`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Hash-chain events per service (sha256, bh-audit-logger's rule). The
    /// chain head is a row locked in each insert transaction, so any number
    /// of processes can append to the same chain.
    pub fn integrity(mut self, on: bool) -> Self {
        self.integrity = on;
        self
    }

    /// Most events per insert transaction (default 1000, at least 1).
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// First and longest wait between reconnection attempts.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// Stop retrying a batch after this long and report it failed (counted
    /// by [`crate::NonBlocking`] as failed events). Default: retry forever,
    /// which loses nothing but blocks the queue (and a shutdown without a
    /// deadline) while the database is down.
    pub fn give_up_after(mut self, limit: Option<Duration>) -> Self {
        self.give_up_after = limit;
        self
    }

    /// Connect timeout per attempt (default 5 s), for the whole start-up:
    /// TCP connect, TLS handshake and authentication. A server or listener
    /// that does not complete it in time fails the attempt (counted in
    /// [`PostgresStats::errors`] with its `last_error`).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Statement timeout (default 10 s, at least 1 ms): set on every session
    /// (`SET statement_timeout`), so the server cancels a statement that
    /// runs longer (the batch is retried). The sink also stops waiting for
    /// an insert transaction that gets no answer within this plus 2 s (a
    /// hung server: processes stopped, socket still open): the attempt is
    /// counted in [`PostgresStats::errors`] with its `last_error` and
    /// retried as [`PostgresOptions::give_up_after`] says.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Idle time before TCP keepalive probes start on the session's socket
    /// (default 10 s; probes every 5 s, 3 missed close the connection; for
    /// connections [`PostgresSink::connect`] opens).
    pub fn tcp_keepalive(mut self, idle: Duration) -> Self {
        self.tcp_keepalive = idle;
        self
    }

    /// How long the sink waits for an insert transaction's answer.
    fn answer_limit(&self) -> Duration {
        self.statement_timeout + Duration::from_secs(2)
    }

    /// How connections are secured (default [`PostgresTls::from_url`]: the
    /// URL's `sslmode`; `sslmode=require` needs the `postgres-tls` feature).
    pub fn tls(mut self, tls: PostgresTls) -> Self {
        self.tls = tls;
        self
    }

    /// Log errors through `tracing` at [`crate::INTERNAL_TARGET`] (default on;
    /// SQLSTATE and kind only).
    pub fn report_errors(mut self, on: bool) -> Self {
        self.report_errors = on;
        self
    }
}

/// The schema name quoted for SQL, after checking it is a plain identifier.
pub(crate) fn quoted_schema(schema: &str) -> Result<String, PostgresError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(format!("\"{schema}\""))
    } else {
        Err(PostgresError::InvalidSchema(schema.to_owned()))
    }
}

/// Creates the schema, table, indexes, trigger and purge function if they are
/// missing. Idempotent and safe to run from several processes at once.
pub(crate) fn migrate(client: &mut Client, schema: &str) -> Result<(), PostgresError> {
    let q = quoted_schema(schema)?;
    let err = |e: postgres::Error| PostgresError::Migration(describe(&e));
    let mut tx = client.transaction().map_err(err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(1885434465, hashtext($1))",
        &[&schema],
    )
    .map_err(err)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {q};
         CREATE TABLE IF NOT EXISTS {q}.phi_audit_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now());"
    ))
    .map_err(err)?;
    let done = tx
        .query_opt(
            &format!("SELECT 1 FROM {q}.phi_audit_migrations WHERE version = 1"),
            &[],
        )
        .map_err(err)?;
    if done.is_none() {
        tx.batch_execute(&MIGRATION_V1.replace("{schema}", &q))
            .map_err(err)?;
        tx.execute(
            &format!("INSERT INTO {q}.phi_audit_migrations (version) VALUES (1)"),
            &[],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// Counters of a [`PostgresSink`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostgresStats {
    /// Transactions committed.
    pub batches: u64,
    /// Events inserted (rows new to the table).
    pub inserted: u64,
    /// Events skipped because the same event (same `event_id`, same
    /// content) was already in the table (a retry after a commit whose
    /// acknowledgement was lost, an event written twice). Nothing is lost.
    pub duplicates: u64,
    /// Batch attempts that failed and were retried.
    pub retries: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Errors seen (each failed attempt or connect).
    pub errors: u64,
    /// Batches given up on (permanent error or [`PostgresOptions::give_up_after`]).
    pub failed_batches: u64,
    /// Events not stored because their `event_id` was already in the table
    /// (or earlier in the batch) with different content. Each is a loss:
    /// reported as a failed event of its batch.
    pub conflicts: u64,
    /// The last error, described without event content.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    inserted: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    reconnects: AtomicU64,
    errors: AtomicU64,
    failed_batches: AtomicU64,
    conflicts: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A failed attempt: a client error, a condition no retry fixes, or one a
/// retry does.
enum Attempt {
    Db(postgres::Error),
    Permanent(&'static str),
    Retry(&'static str),
    /// No answer in time (a hung server or listener); retried.
    Hung(String),
}

impl From<postgres::Error> for Attempt {
    fn from(e: postgres::Error) -> Self {
        Attempt::Db(e)
    }
}

struct Conn {
    client: Client,
    insert: Statement,
    /// Events as `jsonb` gives them back.
    normalize: Statement,
    /// Which ids are stored already.
    stored: Statement,
    /// For ids already stored: whether the stored event is the same.
    same: Statement,
}

/// Whether `v` holds a float anywhere (the only values `jsonb` may give
/// back in another form).
fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

/// Writes audit events into PostgreSQL: one `audit_events` row per event,
/// inserted in batches, with reconnection (see [`PostgresOptions`]).
///
/// Wrap it in [`crate::NonBlocking`] (batches come from its queue); used
/// directly, every [`Sink::write`] is one transaction.
pub struct PostgresSink {
    connector: Arc<dyn Fn() -> Result<Client, postgres::Error> + Send + Sync>,
    schema: String,
    quoted: String,
    options: PostgresOptions,
    session: Mutex<Session>,
    counters: Counters,
    losses: super::loss::LossTracker,
}

impl fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
            .field("schema", &self.schema)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// One event ready to insert: columns extracted, JSON normalized.
struct Row {
    event_id: Uuid,
    ts: SystemTime,
    service: String,
    cols: [Option<String>; 14],
    phi_touched: Option<bool>,
    /// The event's JSON (in chained mode without `integrity`): what is
    /// normalized, hashed and compared with a stored event.
    base: String,
    /// The JSON to store: `base`, or in chained mode the normalized event
    /// with its `integrity` block (set by each attempt).
    json: String,
}

fn system_time(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    let t = if ms >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// The instant the event's JSON `timestamp` says: the model's instant,
/// clamped to the years 0000-9999 RFC 3339 can write.
fn json_instant(t: Timestamp) -> i64 {
    let bytes = t.rfc3339_bytes();
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| Timestamp::parse_rfc3339(s).ok())
        .map_or(t.unix_millis(), Timestamp::unix_millis)
}

fn prepare_row(event: AuditEvent, chained: bool) -> Result<Row, SinkError> {
    let mut event = event;
    // The event's own integrity block (from an upstream chaining sink) is
    // replaced by this table's chain when chaining, kept otherwise.
    if chained {
        event.integrity = None;
    }
    let mut json = event.to_json();
    if json.contains("\\u0000") {
        let mut v: Value = serde_json::from_str(&json)
            .map_err(|_| SinkError::Other("event did not serialize to JSON".into()))?;
        if chain::normalize_for_postgres(&mut v) {
            // Columns must agree with the stored JSON: rebuild the event from it.
            event = serde_json::from_value(v.clone())
                .map_err(|_| SinkError::Other("normalized event does not parse back".into()))?;
            json = event.to_json();
        }
    }
    let s = |t: &Option<Text>| t.as_ref().map(|t| t.as_str().to_owned());
    let cols = [
        Some(event.actor.subject_id.as_str().to_owned()),
        Some(event.actor.subject_type.as_str().to_owned()),
        s(&event.actor.org_id),
        s(&event.actor.owner_org_id),
        Some(event.action.kind.as_str().to_owned()),
        s(&event.action.name),
        event
            .action
            .data_classification
            .map(|c| c.as_str().to_owned()),
        Some(event.resource.kind.as_str().to_owned()),
        s(&event.resource.id),
        s(&event.resource.patient_id),
        Some(event.outcome.status.as_str().to_owned()),
        s(&event.outcome.error_type),
        event.correlation.as_ref().and_then(|c| s(&c.request_id)),
        event.http.as_ref().and_then(|h| s(&h.client_ip)),
    ];
    Ok(Row {
        event_id: event.event_id,
        ts: system_time(json_instant(event.timestamp)),
        service: event.service.name.as_str().to_owned(),
        cols,
        phi_touched: event.action.phi_touched,
        base: json.clone(),
        json,
    })
}

fn insert_sql(q: &str) -> String {
    format!(
        "INSERT INTO {q}.audit_events (event_id, ts, service_name, actor_subject_id, actor_subject_type,
             actor_org_id, owner_org_id, action_type, action_name, data_classification, resource_type,
             resource_id, patient_id, outcome_status, error_type, request_id, client_ip, phi_touched,
             chain_seq, event)
         SELECT u.id, u.ts, u.svc, u.c0, u.c1, u.c2, u.c3, u.c4, u.c5, u.c6, u.c7, u.c8, u.c9, u.c10,
                u.c11, u.c12, u.c13, u.phi, u.seq, u.ev::jsonb
           FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                       $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::bool[],
                       $19::int8[], $20::text[])
                AS u(id, ts, svc, c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, phi, seq, ev)
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id"
    )
}

/// Each event (in order) as `jsonb` gives it back.
const NORMALIZE_SQL: &str =
    "SELECT u.ev::jsonb FROM unnest($1::text[]) WITH ORDINALITY AS u(ev, ord) ORDER BY u.ord";

/// Which of the ids are stored already.
fn stored_sql(q: &str) -> String {
    format!("SELECT event_id FROM {q}.audit_events WHERE event_id = ANY($1)")
}

/// For events whose id is stored already: whether the stored one is the same.
fn same_sql(q: &str) -> String {
    format!(
        "SELECT coalesce((e.event - 'integrity') = (u.ev::jsonb - 'integrity'), false)
           FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(id, ev, ord)
           LEFT JOIN {q}.audit_events e ON e.event_id = u.id
          ORDER BY u.ord"
    )
}

fn prepare_conn(
    mut client: Client,
    q: &str,
    statement_timeout: Duration,
) -> Result<Conn, postgres::Error> {
    client.batch_execute(&format!(
        "SET statement_timeout = {}",
        statement_timeout.as_millis().max(1)
    ))?;
    let insert = client.prepare(&insert_sql(q))?;
    let normalize = client.prepare(NORMALIZE_SQL)?;
    let stored = client.prepare(&stored_sql(q))?;
    let same = client.prepare(&same_sql(q))?;
    Ok(Conn {
        client,
        insert,
        normalize,
        stored,
        same,
    })
}

impl PostgresSink {
    /// Connects to `url` (`postgres://user@host:port/db`, or a key=value
    /// string), applies the migration if needed, and returns the sink.
    /// TLS as [`PostgresOptions::tls`] says (by default the URL's
    /// `sslmode`).
    ///
    /// Works from async code too: on a thread that drives a tokio runtime
    /// (inside `#[tokio::main]`, a task) it connects on a thread of its
    /// own, blocking the caller meanwhile (at most the connect timeout per
    /// attempt); call it before serving, or from `spawn_blocking`. Writes
    /// belong behind [`crate::NonBlocking`], whose worker is no runtime
    /// thread.
    pub fn connect(url: &str, options: PostgresOptions) -> Result<PostgresSink, PostgresError> {
        let connector = connect::connector(
            url,
            &options.tls,
            Some(options.connect_timeout),
            Some(options.tcp_keepalive),
            "phi-audit",
        )?;
        PostgresSink::connect_with(connector, options)
    }

    /// Like [`PostgresSink::connect`], with your own way to open a
    /// connection (TLS, pooled credentials); called again on every
    /// reconnection. The sink waits at most
    /// [`PostgresOptions::connect_timeout`] for it to return (set the
    /// client's own connect timeout and keepalives in it).
    pub fn connect_with<F>(
        connect: F,
        options: PostgresOptions,
    ) -> Result<PostgresSink, PostgresError>
    where
        F: Fn() -> Result<Client, postgres::Error> + Send + Sync + 'static,
    {
        let quoted = quoted_schema(&options.schema)?;
        let connector: Arc<dyn Fn() -> Result<Client, postgres::Error> + Send + Sync> =
            Arc::new(connect);
        let session = Session::start()?;
        let limit = options.connect_timeout;
        let answer = options.answer_limit();
        // The start-up (TCP, TLS, authentication) within the connect
        // timeout; then the migration and the prepared statements within
        // the answer limit.
        let client = Arc::new(Mutex::new(None::<Client>));
        let (c, slot) = (Arc::clone(&connector), Arc::clone(&client));
        session.submit(move |_| {
            Output::Connected(match c() {
                Ok(cl) => {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(cl);
                    Ok(())
                }
                Err(e) => Err(PostgresError::Connect(describe(&e))),
            })
        });
        match session.wait(limit) {
            Some(Output::Connected(Ok(()))) => {}
            Some(Output::Connected(Err(e))) => return Err(e),
            Some(Output::Inserted { .. }) => {
                return Err(PostgresError::Connect("unexpected session state".into()))
            }
            None => return Err(PostgresError::Connect(no_answer("connecting", limit))),
        }
        let (schema, q, timeout) = (
            options.schema.clone(),
            quoted.clone(),
            options.statement_timeout,
        );
        session.submit(move |conn| {
            let taken = client.lock().unwrap_or_else(|p| p.into_inner()).take();
            let Some(mut cl) = taken else {
                return Output::Connected(Err(PostgresError::Connect(
                    "the connection was lost".into(),
                )));
            };
            let r = migrate(&mut cl, &schema).and_then(|()| {
                prepare_conn(cl, &q, timeout).map_err(|e| PostgresError::Migration(describe(&e)))
            });
            Output::Connected(r.map(|c| {
                *conn = Some(c);
            }))
        });
        match session.wait(answer) {
            Some(Output::Connected(Ok(()))) => {}
            Some(Output::Connected(Err(e))) => return Err(e),
            Some(Output::Inserted { .. }) => {
                return Err(PostgresError::Migration("unexpected session state".into()))
            }
            None => return Err(PostgresError::Migration(no_answer("migrating", answer))),
        }
        Ok(PostgresSink {
            connector,
            schema: options.schema.clone(),
            quoted,
            options,
            session: Mutex::new(session),
            counters: Counters::default(),
            losses: Default::default(),
        })
    }

    /// The schema this sink writes to.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Current counters.
    pub fn stats(&self) -> PostgresStats {
        let c = &self.counters;
        PostgresStats {
            batches: c.batches.load(Ordering::Acquire),
            inserted: c.inserted.load(Ordering::Acquire),
            duplicates: c.duplicates.load(Ordering::Acquire),
            retries: c.retries.load(Ordering::Acquire),
            reconnects: c.reconnects.load(Ordering::Acquire),
            errors: c.errors.load(Ordering::Acquire),
            failed_batches: c.failed_batches.load(Ordering::Acquire),
            conflicts: c.conflicts.load(Ordering::Acquire),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    fn record_error(&self, what: &str, description: String) {
        self.counters.errors.fetch_add(1, Ordering::AcqRel);
        if self.options.report_errors {
            tracing::warn!(target: INTERNAL_TARGET, error = %description, "{what}");
        }
        *self
            .counters
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(description);
    }

    /// Opens a connection on the session (within the connect timeout, then
    /// prepared within the answer limit).
    fn reconnect(&self, session: &Session) -> Result<(), Attempt> {
        let (c, q, timeout) = (
            Arc::clone(&self.connector),
            self.quoted.clone(),
            self.options.statement_timeout,
        );
        let failure: Arc<Mutex<Option<postgres::Error>>> = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&failure);
        let limit = self.options.connect_timeout + self.options.answer_limit();
        session.submit(
            move |conn| match c().and_then(|cl| prepare_conn(cl, &q, timeout)) {
                Ok(prepared) => {
                    *conn = Some(prepared);
                    Output::Connected(Ok(()))
                }
                Err(e) => {
                    let d = describe(&e);
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    Output::Connected(Err(PostgresError::Connect(d)))
                }
            },
        );
        match session.wait(limit) {
            Some(Output::Connected(Ok(()))) => Ok(()),
            Some(Output::Connected(Err(e))) => {
                match failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    Some(db) => Err(Attempt::Db(db)),
                    None => Err(Attempt::Hung(e.to_string())),
                }
            }
            Some(Output::Inserted { .. }) => Err(Attempt::Retry("unexpected session state")),
            None => Err(Attempt::Hung(no_answer("connecting", limit))),
        }
    }

    /// Counts a transaction that committed.
    fn count_done(&self, done: &Done) {
        let c = &self.counters;
        c.batches.fetch_add(1, Ordering::AcqRel);
        c.inserted.fetch_add(done.inserted, Ordering::AcqRel);
        c.duplicates.fetch_add(done.duplicates, Ordering::AcqRel);
        c.conflicts.fetch_add(done.conflicts, Ordering::AcqRel);
        if done.duplicates > 0 && self.options.report_errors {
            tracing::info!(
                target: INTERNAL_TARGET,
                duplicates = done.duplicates,
                "audit events already stored (same event_id and content) were skipped"
            );
        }
    }

    /// One attempt: our rows into the session (unless they are there
    /// already, from an attempt that got no answer in time), then its
    /// answer within the limit. Gives the rows back when the session does.
    fn attempt(
        &self,
        session: &Session,
        rows: &mut Option<Vec<Row>>,
    ) -> Result<Done, (Attempt, &'static str)> {
        let answer = self.options.answer_limit();
        if rows.is_some() {
            // A step of an earlier batch (given up on) may still run.
            if session.busy() {
                match session.wait(answer) {
                    Some(Output::Inserted {
                        result: Ok(done), ..
                    }) => self.count_done(&done),
                    Some(_) => {}
                    None => {
                        return Err((
                            Attempt::Hung(no_answer("waiting for an earlier step", answer)),
                            "PostgreSQL does not answer",
                        ))
                    }
                }
            }
            if !session.connected() {
                self.reconnect(session)
                    .map_err(|e| (e, "connecting to PostgreSQL failed"))?;
                self.counters.reconnects.fetch_add(1, Ordering::AcqRel);
            }
            let Some(mut mine) = rows.take() else {
                return Err((Attempt::Retry("no rows"), "audit batch insert failed"));
            };
            let (q, chained) = (self.quoted.clone(), self.options.integrity);
            session.submit(move |conn| {
                let Some(c) = conn.as_mut() else {
                    return Output::Inserted {
                        rows: mine,
                        result: Err(Attempt::Retry("the connection was lost")),
                    };
                };
                let result = insert_once(&q, chained, c, &mut mine);
                let closed = c.client.is_closed()
                    || matches!(&result, Err(Attempt::Db(e)) if is_transient(e));
                if closed {
                    *conn = None;
                }
                Output::Inserted { rows: mine, result }
            });
        }
        match session.wait(answer) {
            Some(Output::Inserted { rows: back, result }) => {
                *rows = Some(back);
                result.map_err(|e| (e, "audit batch insert failed"))
            }
            Some(Output::Connected(_)) => Err((
                Attempt::Retry("unexpected session state"),
                "audit batch insert failed",
            )),
            None => Err((
                Attempt::Hung(no_answer("an insert transaction", answer)),
                "PostgreSQL does not answer",
            )),
        }
    }

    /// Inserts `rows` in one transaction, retrying on transient errors with
    /// backoff until committed (or given up). Returns how many events were
    /// not stored because their id is taken by a different event.
    fn insert_with_retry(&self, rows: Vec<Row>) -> Result<u64, SinkError> {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let mut backoff = self.options.backoff_initial;
        let n = rows.len();
        let mut rows = Some(rows);
        loop {
            match self.attempt(&session, &mut rows) {
                Ok(done) => {
                    self.count_done(&done);
                    return Ok(done.conflicts);
                }
                Err((e, what)) => {
                    let (desc, transient) = match &e {
                        Attempt::Db(e) => (describe(e), is_transient(e)),
                        Attempt::Permanent(m) => ((*m).to_owned(), false),
                        Attempt::Retry(m) => ((*m).to_owned(), true),
                        Attempt::Hung(m) => (m.clone(), true),
                    };
                    self.record_error(what, desc.clone());
                    let out_of_time = self
                        .options
                        .give_up_after
                        .is_some_and(|l| started.elapsed() >= l);
                    if !transient || out_of_time {
                        self.counters.failed_batches.fetch_add(1, Ordering::AcqRel);
                        return Err(SinkError::Other(format!(
                            "PostgreSQL batch of {n} event(s) not written: {desc}"
                        )));
                    }
                    self.counters.retries.fetch_add(1, Ordering::AcqRel);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.options.backoff_max);
                }
            }
        }
    }
}

/// The description of a step that got no answer in time.
fn no_answer(step: &str, limit: Duration) -> String {
    format!(
        "no answer from PostgreSQL within {limit:?} ({step}); the server or the network may be hung"
    )
}

/// One insert transaction of `rows` into the table of schema `q` (quoted).
fn insert_once(q: &str, chained: bool, conn: &mut Conn, rows: &mut [Row]) -> Result<Done, Attempt> {
    let mut tx = conn.client.transaction()?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    // Which rows to insert; of the others, which repeat a stored (or an
    // earlier) event and which only share its id.
    let mut take: Vec<bool> = vec![true; rows.len()];
    let mut done = Done::default();
    let mut seqs: Vec<Option<i64>> = vec![None; rows.len()];
    if chained {
        // Events already stored (a retried batch, or an id collision):
        // not inserted again; the same event is a duplicate, another
        // one a conflict.
        let stored: std::collections::HashSet<Uuid> = tx
            .query(&conn.stored, &[&ids])?
            .iter()
            .map(|r| r.try_get::<_, Uuid>(0))
            .collect::<Result<_, _>>()?;
        if !stored.is_empty() {
            let at: Vec<usize> = (0..rows.len())
                .filter(|&i| stored.contains(&rows[i].event_id))
                .collect();
            let ids: Vec<Uuid> = at.iter().map(|&i| rows[i].event_id).collect();
            let texts: Vec<&str> = at.iter().map(|&i| rows[i].base.as_str()).collect();
            for (k, r) in tx.query(&conn.same, &[&ids, &texts])?.iter().enumerate() {
                if let Some(&i) = at.get(k) {
                    take[i] = false;
                    if r.try_get::<_, bool>(0)? {
                        done.duplicates += 1;
                    } else {
                        done.conflicts += 1;
                    }
                }
            }
        }
        // Hash what jsonb stores. Strings, integers and key order come
        // back as they went (U+0000 was replaced already); floats may
        // not (negative zero, the form of large values), so events with
        // floats are put in the form jsonb gives back by the server
        // itself, in one query for the batch.
        let mut values: Vec<Value> = Vec::with_capacity(rows.len());
        for r in rows.iter() {
            values.push(
                serde_json::from_str(&r.base)
                    .map_err(|_| Attempt::Permanent("an event did not serialize to JSON"))?,
            );
        }
        let floats: Vec<usize> = (0..rows.len())
            .filter(|&i| take[i] && has_float(&values[i]))
            .collect();
        if !floats.is_empty() {
            let texts: Vec<&str> = floats.iter().map(|&i| rows[i].base.as_str()).collect();
            let found = tx.query(&conn.normalize, &[&texts])?;
            if found.len() != floats.len() {
                return Err(Attempt::Permanent(
                    "the server returned a different number of normalized events",
                ));
            }
            for (&i, f) in floats.iter().zip(&found) {
                values[i] = f.try_get(0)?;
            }
        }
        // A repeated id within the batch: the first is inserted.
        let mut first_of: HashMap<Uuid, usize> = HashMap::with_capacity(rows.len());
        for i in 0..rows.len() {
            if !take[i] {
                continue;
            }
            match first_of.get(&rows[i].event_id) {
                Some(&j) => {
                    take[i] = false;
                    if values[j] == values[i] {
                        done.duplicates += 1;
                    } else {
                        done.conflicts += 1;
                    }
                }
                None => {
                    first_of.insert(rows[i].event_id, i);
                }
            }
        }
        let mut services: Vec<&str> = rows
            .iter()
            .zip(&take)
            .filter(|(_, t)| **t)
            .map(|(r, _)| r.service.as_str())
            .collect();
        services.sort_unstable();
        services.dedup();
        let services: Vec<String> = services.into_iter().map(str::to_owned).collect();
        // Lock heads in name order (no deadlocks between writers).
        for svc in &services {
            tx.execute(
                &format!("INSERT INTO {q}.audit_chain_heads (service_name) VALUES ($1) ON CONFLICT DO NOTHING"),
                &[svc],
            )?;
            let head = tx.query_one(
                &format!("SELECT last_seq, last_hash, hash_alg FROM {q}.audit_chain_heads WHERE service_name = $1 FOR UPDATE"),
                &[svc],
            )?;
            let mut seq: i64 = head.get(0);
            let mut prev: Option<String> = head.get(1);
            let alg: String = head.get(2);
            if alg != HashAlg::Sha256.as_str() {
                return Err(Attempt::Permanent(
                    "the chain head uses a hash algorithm this sink does not write (only sha256)",
                ));
            }
            for (i, r) in rows.iter_mut().enumerate() {
                if !take[i] || r.service != *svc {
                    continue;
                }
                let v = &values[i];
                let hash = chain::chain_hash(v, prev.as_deref());
                seq += 1;
                seqs[i] = Some(seq);
                let mut stored = v.clone();
                if let Value::Object(m) = &mut stored {
                    let integrity = Integrity {
                        event_hash: Some(Text::from(hash.as_str())),
                        prev_event_hash: prev.as_deref().map(Text::from),
                        hash_alg: Some(HashAlg::Sha256),
                    };
                    if let Ok(iv) = serde_json::to_value(&integrity) {
                        m.insert("integrity".into(), iv);
                    }
                }
                r.json = stored.to_string();
                prev = Some(hash);
            }
            tx.execute(
                &format!("UPDATE {q}.audit_chain_heads SET last_seq = $2, last_hash = $3 WHERE service_name = $1"),
                &[svc, &seq, &prev],
            )?;
        }
    }
    let idx: Vec<usize> = (0..rows.len()).filter(|&i| take[i]).collect();
    let ids_in: Vec<Uuid> = idx.iter().map(|&i| rows[i].event_id).collect();
    let ts: Vec<SystemTime> = idx.iter().map(|&i| rows[i].ts).collect();
    let svc: Vec<&str> = idx.iter().map(|&i| rows[i].service.as_str()).collect();
    let col = |k: usize| -> Vec<Option<&str>> {
        idx.iter().map(|&i| rows[i].cols[k].as_deref()).collect()
    };
    let (c0, c1, c2, c3, c4, c5, c6) = (col(0), col(1), col(2), col(3), col(4), col(5), col(6));
    let (c7, c8, c9, c10, c11, c12, c13) =
        (col(7), col(8), col(9), col(10), col(11), col(12), col(13));
    let phi: Vec<Option<bool>> = idx.iter().map(|&i| rows[i].phi_touched).collect();
    let seq: Vec<Option<i64>> = idx.iter().map(|&i| seqs[i]).collect();
    let ev: Vec<&str> = idx.iter().map(|&i| rows[i].json.as_str()).collect();
    let inserted: std::collections::HashSet<Uuid> = tx
        .query(
            &conn.insert,
            &[
                &ids_in, &ts, &svc, &c0, &c1, &c2, &c3, &c4, &c5, &c6, &c7, &c8, &c9, &c10, &c11,
                &c12, &c13, &phi, &seq, &ev,
            ],
        )?
        .iter()
        .map(|r| r.try_get::<_, Uuid>(0))
        .collect::<Result<_, _>>()?;
    done.inserted = inserted.len() as u64;
    // The first row of an inserted id is the one stored (rows go in in
    // order); later rows with that id, and rows of ids not inserted,
    // were skipped.
    let mut stored_now = std::collections::HashSet::with_capacity(inserted.len());
    let skipped: Vec<usize> = idx
        .iter()
        .copied()
        .filter(|&i| {
            let id = rows[i].event_id;
            !(inserted.contains(&id) && stored_now.insert(id))
        })
        .collect();
    if !skipped.is_empty() {
        if chained {
            // Another writer stored one of these ids meanwhile: the
            // chain would have a hole. Start over; the next attempt sees
            // the stored event.
            return Err(Attempt::Retry(
                "an event id of the batch was stored by another writer meanwhile; retrying",
            ));
        }
        let ids: Vec<Uuid> = skipped.iter().map(|&i| rows[i].event_id).collect();
        let texts: Vec<&str> = skipped.iter().map(|&i| rows[i].base.as_str()).collect();
        for r in tx.query(&conn.same, &[&ids, &texts])? {
            if r.try_get::<_, bool>(0)? {
                done.duplicates += 1;
            } else {
                done.conflicts += 1;
            }
        }
    }
    tx.commit()?;
    Ok(done)
}

/// What one committed transaction did.
#[derive(Default)]
struct Done {
    inserted: u64,
    duplicates: u64,
    conflicts: u64,
}

impl PostgresSink {
    /// Inserts `events` in one transaction, all or nothing. Returns how
    /// many were not stored because their id is taken by a different event.
    fn insert_events(&self, events: Vec<AuditEvent>) -> Result<u64, SinkError> {
        if events.is_empty() {
            return Ok(0);
        }
        let chained = self.options.integrity;
        let rows = events
            .into_iter()
            .map(|e| prepare_row(e, chained))
            .collect::<Result<Vec<Row>, SinkError>>()?;
        // The client runs on the session thread: this thread only waits,
        // on a runtime's thread too.
        self.insert_with_retry(rows)
    }
}

impl Drop for PostgresSink {
    /// Stops the session thread; it closes the connection once its step
    /// (if any) ends, never on an async runtime's thread.
    fn drop(&mut self) {}
}

impl PostgresSink {
    /// Counts and reports `n` events of a batch not written because of `e`.
    fn lose(&self, n: u64, e: &SinkError) {
        self.losses.record(n, e);
        if self.options.report_errors {
            tracing::warn!(
                target: INTERNAL_TARGET,
                failed = n,
                error_kind = e.kind(),
                error = %e,
                "audit events not stored in PostgreSQL"
            );
        }
    }

    /// The error for `n` events whose id was taken by a different event.
    fn conflict_error(n: u64) -> SinkError {
        SinkError::Rejected(format!(
            "{n} event(s) not stored: their event_id is already in the table with different \
             content (an id collision); nothing was overwritten"
        ))
    }

    /// Writes one chunk; returns the events not written and the error.
    fn write_chunk(&self, chunk: Vec<AuditEvent>) -> Result<(), (u64, SinkError)> {
        let n = chunk.len() as u64;
        match self.insert_events(chunk) {
            Ok(0) => Ok(()),
            Ok(conflicts) => {
                let e = Self::conflict_error(conflicts);
                self.lose(conflicts, &e);
                Err((conflicts, e))
            }
            Err(e) => {
                self.losses.record(n, &e);
                Err((n, e))
            }
        }
    }
}

impl Sink for PostgresSink {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        self.write_chunk(vec![event.clone()]).map_err(|(_, e)| e)
    }

    fn write_owned(&self, event: AuditEvent) -> Result<(), SinkError> {
        self.write_chunk(vec![event]).map_err(|(_, e)| e)
    }

    /// One transaction per `batch_size` events, each all or nothing.
    fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
        let size = self.options.batch_size.max(1);
        let mut failed = 0;
        let mut first = None;
        while !events.is_empty() {
            let n = size.min(events.len());
            let chunk: Vec<AuditEvent> = events.drain(..n).collect();
            if let Err((lost, e)) = self.write_chunk(chunk) {
                failed += lost;
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(()),
            Some(error) => Err(BatchError { failed, error }),
        }
    }

    /// Nothing is buffered: every batch is committed before `write_batch`
    /// returns. Returns [`SinkError::Lost`] when events failed (batches
    /// given up on, id conflicts) since the previous flush.
    fn flush(&self) -> Result<(), SinkError> {
        self.losses.take()
    }
}
