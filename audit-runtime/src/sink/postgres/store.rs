//! [`PostgresStore`]: reading the table back — access-review queries, the
//! hash chain in order, and the retention purge.

use std::fmt;
use std::time::SystemTime;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::Client;
use serde_json::Value;
use uuid::Uuid;

use super::{chain, describe, quoted_schema, PostgresError};
use crate::report::{sort_groups, FailedLoginsByIp, GroupCount, Query, ReportError, ReportRow};
use crate::time::timestamp::Timestamp;

/// A connection to a phi-audit table for reading (and purging).
///
/// ```no_run
/// use audit_runtime::report::{self, Format, Query};
/// use audit_runtime::PostgresStore;
/// let mut store = PostgresStore::connect("postgres://audit@db/app", "public")?;
/// let rows = store.query(&Query::exports())?;
/// report::render(rows, Format::Csv, &mut std::io::stdout())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PostgresStore {
    /// Dropped by hand, off any async runtime (see `Drop`).
    client: std::mem::ManuallyDrop<Client>,
    quoted: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.quoted)
            .finish_non_exhaustive()
    }
}

/// What [`PostgresStore::purge_older_than`] removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurgeReport {
    /// Events deleted (the purge's own audit event not counted).
    pub removed: u64,
}

/// The chain of one service, read back in chain order.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainReadback {
    /// The service.
    pub service: String,
    /// The expected `prev_event_hash` of the first event when a purge
    /// removed the start of the chain (`None`: the chain starts at its
    /// first event).
    pub anchor: Option<String>,
    /// The events as stored (`integrity` included), in chain order.
    pub events: Vec<Value>,
}

/// Where a chain read back from PostgreSQL stops verifying. `index` is the
/// 0-based position in [`ChainReadback::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainVerifyError {
    /// The event has no `integrity.event_hash`.
    MissingIntegrity {
        /// Position in the chain read back.
        index: usize,
    },
    /// `prev_event_hash` is not the previous event's hash (an event is
    /// missing, reordered or inserted).
    BrokenLink {
        /// Position in the chain read back.
        index: usize,
    },
    /// The event's content does not hash to its `event_hash` (altered).
    HashMismatch {
        /// Position in the chain read back.
        index: usize,
    },
    /// `hash_alg` is not sha256.
    UnsupportedAlgorithm {
        /// Position in the chain read back.
        index: usize,
    },
}

impl fmt::Display for ChainVerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainVerifyError::MissingIntegrity { index } => {
                write!(f, "event {index} has no integrity.event_hash")
            }
            ChainVerifyError::BrokenLink { index } => write!(
                f,
                "event {index}: prev_event_hash does not match the previous event (missing, reordered or inserted event)"
            ),
            ChainVerifyError::HashMismatch { index } => {
                write!(f, "event {index}: content does not match its event_hash (altered)")
            }
            ChainVerifyError::UnsupportedAlgorithm { index } => {
                write!(f, "event {index}: hash_alg is not sha256")
            }
        }
    }
}

impl std::error::Error for ChainVerifyError {}

impl ChainReadback {
    /// Checks every link and hash, starting from [`ChainReadback::anchor`].
    /// Returns the number of events verified (0 for an empty chain).
    ///
    /// MERGE NOTE: a stand-in for `crate::integrity`'s verifier, which the
    /// CLI's `verify --postgres` should use on [`ChainReadback::events`].
    pub fn verify(&self) -> Result<usize, ChainVerifyError> {
        let mut prev = self.anchor.clone();
        for (index, ev) in self.events.iter().enumerate() {
            let integrity = ev.get("integrity");
            let hash = integrity
                .and_then(|i| i.get("event_hash"))
                .and_then(Value::as_str)
                .ok_or(ChainVerifyError::MissingIntegrity { index })?;
            if integrity
                .and_then(|i| i.get("hash_alg"))
                .and_then(Value::as_str)
                != Some("sha256")
            {
                return Err(ChainVerifyError::UnsupportedAlgorithm { index });
            }
            let claimed_prev = integrity
                .and_then(|i| i.get("prev_event_hash"))
                .and_then(Value::as_str);
            if claimed_prev != prev.as_deref() {
                return Err(ChainVerifyError::BrokenLink { index });
            }
            let mut body = ev.clone();
            if let Value::Object(m) = &mut body {
                m.remove("integrity");
            }
            if chain::chain_hash(&body, prev.as_deref()) != hash {
                return Err(ChainVerifyError::HashMismatch { index });
            }
            prev = Some(hash.to_owned());
        }
        Ok(self.events.len())
    }
}

const ROW_COLUMNS: &str = "event_id, ts, service_name, actor_subject_id, actor_subject_type, actor_org_id, \
     owner_org_id, action_type, action_name, phi_touched, data_classification, resource_type, resource_id, \
     patient_id, outcome_status, error_type, request_id, client_ip";

fn db(e: postgres::Error) -> ReportError {
    ReportError::Database(describe(&e))
}

fn pg(e: postgres::Error) -> PostgresError {
    PostgresError::Database(describe(&e))
}

fn to_system_time(t: Timestamp) -> SystemTime {
    super::system_time(t.unix_millis())
}

fn row_of(r: &postgres::Row) -> Result<ReportRow, postgres::Error> {
    let ts: SystemTime = r.try_get(1)?;
    Ok(ReportRow {
        event_id: r.try_get::<_, Uuid>(0)?,
        timestamp: Timestamp::from_system_time(ts),
        service: r.try_get(2)?,
        actor_subject_id: r.try_get(3)?,
        actor_subject_type: r.try_get(4)?,
        actor_org_id: r.try_get(5)?,
        owner_org_id: r.try_get(6)?,
        action_type: r.try_get(7)?,
        action_name: r.try_get(8)?,
        phi_touched: r.try_get(9)?,
        data_classification: r.try_get(10)?,
        resource_type: r.try_get(11)?,
        resource_id: r.try_get(12)?,
        patient_id: r.try_get(13)?,
        outcome_status: r.try_get(14)?,
        error_type: r.try_get(15)?,
        request_id: r.try_get(16)?,
        client_ip: r.try_get(17)?,
    })
}

type Params = Vec<Box<dyn ToSql + Sync>>;

/// The WHERE clause of `q` and its parameters. Enum values (action types,
/// outcomes) are written as literals from their fixed spellings so the
/// planner can use the partial indexes.
fn where_clause(q: &Query) -> (String, Params) {
    let mut conds: Vec<String> = Vec::new();
    let mut params: Params = Vec::new();
    let bind = |col: &str, op: &str, v: Box<dyn ToSql + Sync>, params: &mut Params| {
        params.push(v);
        format!("{col} {op} ${}", params.len())
    };
    if let Some(p) = &q.patient_id {
        conds.push(bind("patient_id", "=", Box::new(p.clone()), &mut params));
    }
    if let Some(a) = &q.actor_subject_id {
        conds.push(bind(
            "actor_subject_id",
            "=",
            Box::new(a.clone()),
            &mut params,
        ));
    }
    if let Some(r) = &q.resource_type {
        conds.push(bind("resource_type", "=", Box::new(r.clone()), &mut params));
    }
    if let Some(s) = &q.service {
        conds.push(bind("service_name", "=", Box::new(s.clone()), &mut params));
    }
    if let Some(t) = q.since {
        conds.push(bind("ts", ">=", Box::new(to_system_time(t)), &mut params));
    }
    if let Some(t) = q.until {
        conds.push(bind("ts", "<", Box::new(to_system_time(t)), &mut params));
    }
    let list = |vals: Vec<&'static str>| -> String {
        vals.iter()
            .map(|v| format!("'{v}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !q.action_types.is_empty() {
        conds.push(format!(
            "action_type IN ({})",
            list(q.action_types.iter().map(|a| a.as_str()).collect())
        ));
    }
    if !q.outcomes.is_empty() {
        conds.push(format!(
            "outcome_status IN ({})",
            list(q.outcomes.iter().map(|o| o.as_str()).collect())
        ));
    }
    if q.phi_only {
        conds.push("(phi_touched OR data_classification = 'PHI')".into());
    }
    if q.cross_org_only {
        conds.push("actor_org_id <> owner_org_id".into());
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    (clause, params)
}

impl PostgresStore {
    /// Connects to `url` for tables in `schema`, TLS as the URL's `sslmode`
    /// says (see [`super::PostgresTls::from_url`]). Does not create
    /// anything: a writer ([`super::PostgresSink::connect`]) applies the
    /// migration.
    pub fn connect(url: &str, schema: &str) -> Result<PostgresStore, PostgresError> {
        PostgresStore::connect_tls(url, schema, &super::PostgresTls::default())
    }

    /// [`PostgresStore::connect`] with the TLS of your choice.
    pub fn connect_tls(
        url: &str,
        schema: &str,
        tls: &super::PostgresTls,
    ) -> Result<PostgresStore, PostgresError> {
        let connector = super::connect::connector(url, tls, None, None, "phi-audit-report")?;
        let client = super::connect::open(&connector)?;
        PostgresStore::from_client(client, schema)
    }

    /// Uses an open connection (TLS, pools) for tables in `schema`.
    pub fn from_client(client: Client, schema: &str) -> Result<PostgresStore, PostgresError> {
        Ok(PostgresStore {
            client: std::mem::ManuallyDrop::new(client),
            quoted: quoted_schema(schema)?,
        })
    }

    /// Applies the migration if needed (what the sink does on connect).
    pub fn migrate(&mut self) -> Result<(), PostgresError> {
        let schema = self.quoted.trim_matches('"').to_owned();
        super::migrate(&mut self.client, &schema)
    }

    /// The connection's slot, for `Drop`.
    pub(super) fn client_slot(&mut self) -> &mut std::mem::ManuallyDrop<Client> {
        &mut self.client
    }

    /// The underlying connection, for your own read queries.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Rows matching `q`, ordered by timestamp then event id.
    pub fn query(&mut self, q: &Query) -> Result<Vec<ReportRow>, ReportError> {
        let mut rows = Vec::new();
        self.query_each(q, |r| {
            rows.push(r);
            Ok(())
        })?;
        Ok(rows)
    }

    /// Streams the rows matching `q` to `f` (ordered by timestamp then event
    /// id) without collecting them; returns how many were seen.
    pub fn query_each<F>(&mut self, q: &Query, mut f: F) -> Result<u64, ReportError>
    where
        F: FnMut(ReportRow) -> std::io::Result<()>,
    {
        let (clause, mut params) = where_clause(q);
        let mut sql = format!(
            "SELECT {ROW_COLUMNS} FROM {}.audit_events{clause} ORDER BY ts, event_id",
            self.quoted
        );
        if let Some(l) = q.limit {
            params.push(Box::new(i64::try_from(l).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT ${}", params.len()));
        }
        let mut it = self
            .client
            .query_raw(
                sql.as_str(),
                params.iter().map(|p| p.as_ref() as &dyn ToSql),
            )
            .map_err(db)?;
        let mut n = 0u64;
        while let Some(r) = it.next().map_err(db)? {
            f(row_of(&r).map_err(db)?)?;
            n += 1;
        }
        Ok(n)
    }

    /// Failed logins per client IP over the threshold, by count (descending)
    /// then IP.
    pub fn failed_logins_by_ip(
        &mut self,
        q: &FailedLoginsByIp,
    ) -> Result<Vec<GroupCount>, ReportError> {
        let mut params: Params = Vec::new();
        let mut sql = format!(
            "SELECT client_ip, count(*) FROM {}.audit_events
              WHERE action_type = 'LOGIN' AND outcome_status IN ('FAILURE', 'DENIED') AND client_ip IS NOT NULL",
            self.quoted
        );
        if let Some(t) = q.since {
            params.push(Box::new(to_system_time(t)));
            sql.push_str(&format!(" AND ts >= ${}", params.len()));
        }
        if let Some(t) = q.until {
            params.push(Box::new(to_system_time(t)));
            sql.push_str(&format!(" AND ts < ${}", params.len()));
        }
        params.push(Box::new(i64::try_from(q.threshold).unwrap_or(i64::MAX)));
        sql.push_str(&format!(
            " GROUP BY client_ip HAVING count(*) > ${}",
            params.len()
        ));
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
        let mut groups = self
            .client
            .query(sql.as_str(), &refs)
            .map_err(db)?
            .iter()
            .map(|r| {
                Ok(GroupCount {
                    key: r.try_get(0)?,
                    count: u64::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, postgres::Error>>()
            .map_err(db)?;
        sort_groups(&mut groups);
        Ok(groups)
    }

    /// Services with a hash chain in the table, by name.
    pub fn chained_services(&mut self) -> Result<Vec<String>, PostgresError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT service_name FROM {}.audit_chain_heads ORDER BY service_name",
                    self.quoted
                ),
                &[],
            )
            .map_err(pg)?;
        rows.iter().map(|r| r.try_get(0).map_err(pg)).collect()
    }

    /// The chain of `service` in chain order, with its purge anchor, for
    /// verification (reads one consistent snapshot).
    pub fn read_chain(&mut self, service: &str) -> Result<ChainReadback, PostgresError> {
        let q = self.quoted.clone();
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)?;
        let anchor: Option<String> = tx
            .query_opt(
                &format!("SELECT anchor_hash FROM {q}.audit_chain_heads WHERE service_name = $1"),
                &[&service],
            )
            .map_err(pg)?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(pg)?
            .flatten();
        let mut events = Vec::new();
        {
            let mut it = tx
                .query_raw(
                    format!(
                        "SELECT event FROM {q}.audit_events
                          WHERE service_name = $1 AND chain_seq IS NOT NULL ORDER BY chain_seq"
                    )
                    .as_str(),
                    [&service as &dyn ToSql],
                )
                .map_err(pg)?;
            while let Some(r) = it.next().map_err(pg)? {
                events.push(r.try_get::<_, Value>(0).map_err(pg)?);
            }
        }
        tx.commit().map_err(pg)?;
        Ok(ChainReadback {
            service: service.to_owned(),
            anchor,
            events,
        })
    }

    /// Reads the chain of `service` and verifies it; returns the number of
    /// events verified.
    pub fn verify_chain(&mut self, service: &str) -> Result<usize, PostgresError> {
        self.read_chain(service)?
            .verify()
            .map_err(PostgresError::Chain)
    }

    /// Runs `purge_older_than(age, force)`: `age` is a PostgreSQL interval
    /// (`"7 years"`). Refused under six years unless `force`.
    pub fn purge_older_than(
        &mut self,
        age: &str,
        force: bool,
    ) -> Result<PurgeReport, PostgresError> {
        let row = self
            .client
            .query_one(
                &format!(
                    "SELECT {}.purge_older_than($1::text::interval, $2)",
                    self.quoted
                ),
                &[&age, &force],
            )
            .map_err(|e| match e.code().map(|c| c.code()) {
                Some("22023") => PostgresError::Database(
                    "purge refused: audit events must be kept six years (HIPAA, 45 CFR 164.530(j)); \
                     pass force = true only if your retention policy allows less"
                        .into(),
                ),
                Some("22007") | Some("22P02") => PostgresError::Database(format!(
                    "{age:?} is not a PostgreSQL interval; write e.g. \"6 years\" or \"2200 days\""
                )),
                _ => pg(e),
            })?;
        let removed: i64 = row.try_get(0).map_err(pg)?;
        Ok(PurgeReport {
            removed: u64::try_from(removed).unwrap_or(0),
        })
    }
}
