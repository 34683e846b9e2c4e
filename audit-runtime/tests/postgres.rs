//! PostgresSink, PostgresStore and the access-review queries, against a real
//! PostgreSQL server (`PHI_AUDIT_PG_URL`, set by `.ci/run`), plus the JSONL
//! report queries (no server needed).
//!
//! Run: `PHI_AUDIT_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!       cargo test -p phi-audit-runtime --features postgres --test postgres`
//!
//! Each test works in its own schema (dropped at the end), so tests run in
//! parallel.
#![cfg(feature = "postgres")]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phi_audit_runtime::report::{self, FailedLoginsByIp, Format, Query};
use phi_audit_runtime::{
    ActionType, Actor, AuditEvent, Config, Correlation, DataClassification, Dispatch, EventBuilder,
    Http, MemorySink, NonBlocking, Outcome, OutcomeStatus, PostgresOptions, PostgresSink,
    PostgresStore, Sink, Timestamp,
};
use uuid::Uuid;

const HOUR_MS: i64 = 3_600_000;

fn pg_url() -> Option<String> {
    phi_audit_test_env::server(
        phi_audit_test_env::PG_URL,
        "phi-audit-runtime --test postgres",
        "PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test",
    )
}

/// A schema of its own for one test; dropped on drop.
struct TestSchema {
    url: String,
    name: String,
}

impl TestSchema {
    fn new(url: &str, tag: &str) -> TestSchema {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t_{tag}_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        TestSchema {
            url: url.to_owned(),
            name,
        }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect")
    }

    fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.url, &self.name).expect("store")
    }

    fn count(&self, sql_where: &str) -> i64 {
        self.client()
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.audit_events {sql_where}",
                    self.name
                ),
                &[],
            )
            .unwrap()
            .get(0)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

fn dispatch(service: &str) -> Dispatch {
    Dispatch::new(
        Config::new(service.to_owned()).build().unwrap(),
        MemorySink::new(),
    )
}

/// The synthetic data set: event `n` of a fixed pattern, timestamps from
/// `base` at 1.5 s steps.
fn make_event(d: &Dispatch, n: u64, base: Timestamp) -> AuditEvent {
    let action = match n % 10 {
        0 => ActionType::Export,
        1 => ActionType::Login,
        2 => ActionType::Update,
        _ => ActionType::Read,
    };
    let resource = match (action, n % 3) {
        (ActionType::Login, _) => "Session",
        (_, 0) => "Patient",
        (_, 1) => "Note",
        _ => "Chart",
    };
    let mut actor = Actor::human(format!("user-{}", n % 50)).org(format!("org-{}", n % 3));
    if n % 5 == 0 {
        actor = actor.owner_org(format!("org-{}", (n / 5) % 3));
    }
    let outcome = if n % 13 == 0 {
        Outcome::denied("RoleDenied")
    } else if n % 17 == 0 {
        Outcome::failure("Timeout", "upstream timed out")
    } else {
        Outcome::SUCCESS
    };
    let mut b = EventBuilder::new(action, resource)
        .actor(actor)
        .outcome(outcome)
        .timestamp(Timestamp::from_unix_millis(
            base.unix_millis() + n as i64 * 1500,
        ))
        .correlation(Correlation {
            request_id: Some(format!("req-{n}").into()),
            ..Correlation::default()
        })
        .metadata("n", n);
    if action != ActionType::Login {
        b = b
            .resource_id(format!("r-{n}"))
            .patient_id(format!("pat-{}", n % 200));
        if n % 4 != 0 {
            b = b.phi_touched(true);
        } else if n % 8 == 0 {
            b = b.classification(DataClassification::Phi);
        }
    } else {
        b = b.http(Http {
            client_ip: Some(format!("10.0.0.{}", n % 7).into()),
            ..Http::default()
        });
    }
    b.build(d)
}

type Ids = BTreeSet<Uuid>;

/// Every access-review query, its expected result computed by hand-written
/// predicates (independent of `Query::matches` and of the SQL).
fn expected_queries(events: &[AuditEvent], now: Timestamp, base: Timestamp) -> Vec<(Query, Ids)> {
    let t = |n: i64| Timestamp::from_unix_millis(base.unix_millis() + n * 1500);
    let ids = |f: &dyn Fn(&AuditEvent) -> bool| -> Ids {
        events.iter().filter(|e| f(e)).map(|e| e.event_id).collect()
    };
    let (from, to) = (t(10_000), t(60_000));
    vec![
        (
            Query::patient_access("pat-5", from, to),
            ids(&|e| {
                e.resource.patient_id.as_deref() == Some("pat-5")
                    && e.timestamp >= from
                    && e.timestamp < to
            }),
        ),
        (
            Query::actor_activity("user-7", from, to),
            ids(&|e| &*e.actor.subject_id == "user-7" && e.timestamp >= from && e.timestamp < to),
        ),
        (
            Query::exports(),
            ids(&|e| e.action.kind == ActionType::Export),
        ),
        (
            Query::failures_and_denials(),
            ids(&|e| e.outcome.status != OutcomeStatus::Success),
        ),
        (
            Query::resource_type("Note"),
            ids(&|e| &*e.resource.kind == "Note"),
        ),
        (
            Query::phi_last_24h(now),
            ids(&|e| {
                (e.action.phi_touched == Some(true)
                    || e.action.data_classification == Some(DataClassification::Phi))
                    && e.timestamp.unix_millis() >= now.unix_millis() - 24 * HOUR_MS
                    && e.timestamp <= now
            }),
        ),
        (
            Query::cross_org(),
            ids(&|e| match (&e.actor.org_id, &e.actor.owner_org_id) {
                (Some(a), Some(o)) => a != o,
                _ => false,
            }),
        ),
        (
            Query::exports().outcome(OutcomeStatus::Denied).limit(3),
            ids(&|e| {
                e.action.kind == ActionType::Export && e.outcome.status == OutcomeStatus::Denied
            })
            .into_iter()
            .collect(),
        ),
    ]
}

fn expected_failed_logins(events: &[AuditEvent], threshold: u64) -> BTreeMap<String, u64> {
    let mut m: HashMap<String, u64> = HashMap::new();
    for e in events {
        if e.action.kind == ActionType::Login && e.outcome.status != OutcomeStatus::Success {
            if let Some(ip) = e.http.as_ref().and_then(|h| h.client_ip.as_ref()) {
                *m.entry(ip.to_string()).or_default() += 1;
            }
        }
    }
    m.into_iter().filter(|(_, c)| *c > threshold).collect()
}

fn check_limit(q: &Query, want: &Ids, got: &Ids, events: &[AuditEvent]) {
    match q.limit {
        None => assert_eq!(got, want, "query {q:?}"),
        Some(l) => {
            // The first `l` by (timestamp, id) for PostgreSQL, by file order for
            // JSONL: both are the earliest here (file order is time order).
            let mut all: Vec<&AuditEvent> = events
                .iter()
                .filter(|e| want.contains(&e.event_id))
                .collect();
            all.sort_by_key(|e| (e.timestamp, e.event_id));
            let first: Ids = all.iter().take(l as usize).map(|e| e.event_id).collect();
            assert_eq!(got, &first, "query {q:?}");
        }
    }
}

fn dataset(total: u64, now: Timestamp) -> (Vec<AuditEvent>, Timestamp) {
    let base = Timestamp::from_unix_millis(now.unix_millis() - 50 * HOUR_MS);
    let d = dispatch("chart-service");
    ((0..total).map(|n| make_event(&d, n, base)).collect(), base)
}

#[test]
fn jsonl_report_queries_without_postgres() {
    let now = Timestamp::now();
    let (events, base) = dataset(70_000, now);
    let mut file = Vec::new();
    for e in &events {
        e.write_json(&mut file);
        file.push(b'\n');
    }
    file.extend_from_slice(b"\nnot json\n");
    for (q, want) in expected_queries(&events, now, base) {
        assert!(
            !want.is_empty() || q.limit.is_some(),
            "empty expectation for {q:?}"
        );
        let mut bad = 0;
        let got: Ids = report::query_jsonl(BufReader::new(&file[..]), &q)
            .filter_map(|r| match r {
                Ok(r) => Some(r.event_id),
                Err(report::ReportError::InvalidLine { line, reason }) => {
                    assert_eq!(line, events.len() as u64 + 2);
                    assert_eq!(reason, report::InvalidReason::NotAnEvent);
                    bad += 1;
                    None
                }
                Err(e) => panic!("{e}"),
            })
            .collect();
        check_limit(&q, &want, &got, &events);
        if q.limit.is_none() {
            assert_eq!(bad, 1);
        }
    }
    let (groups, invalid) =
        report::failed_logins_jsonl(&file[..], &FailedLoginsByIp::over(5)).unwrap();
    assert_eq!(invalid, 1);
    let got: BTreeMap<String, u64> = groups.into_iter().map(|g| (g.key, g.count)).collect();
    let want = expected_failed_logins(&events, 5);
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[test]
fn render_text_json_csv() {
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    let d = dispatch("svc");
    let mut e = make_event(&d, 10, now);
    e.actor.subject_id = "=cmd|' /C calc'!A0".into();
    let row = report::ReportRow::from_event(&e);
    let mut csv = Vec::new();
    assert_eq!(
        report::render([row.clone()], Format::Csv, &mut csv).unwrap(),
        1
    );
    let csv = String::from_utf8(csv).unwrap();
    let mut lines = csv.split("\r\n");
    assert_eq!(lines.next().unwrap(), report::COLUMNS.join(","));
    let line = lines.next().unwrap();
    assert!(
        line.starts_with(&format!(
            "{},2023-11-14T22:13:35.000Z,svc,\"'=cmd|' /C calc'!A0\",human,",
            e.event_id
        )),
        "{line}"
    );
    let mut json = Vec::new();
    report::render([row.clone(), row.clone()], Format::Json, &mut json).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["action_type"], "EXPORT");
    assert_eq!(v[0]["timestamp"], "2023-11-14T22:13:35.000Z");
    let mut text = Vec::new();
    report::render([row], Format::Text, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("EXPORT") && text.ends_with("1 event(s)\n"),
        "{text}"
    );
    let mut empty = Vec::new();
    report::render(std::iter::empty(), Format::Json, &mut empty).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&empty).unwrap(),
        serde_json::json!([])
    );
    let mut g = Vec::new();
    report::render_groups(
        &[report::GroupCount {
            key: "10.0.0.1".into(),
            count: 7,
        }],
        "client_ip",
        Format::Csv,
        &mut g,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(g).unwrap(),
        "client_ip,count\r\n10.0.0.1,7\r\n"
    );
}

#[test]
fn hundred_thousand_events_from_four_threads_land_once_and_queries_match() {
    let Some(url) = pg_url() else { return };
    let schema = TestSchema::new(&url, "bulk");
    let now = Timestamp::now();
    let (events, base) = dataset(100_000, now);
    let pg =
        Arc::new(PostgresSink::connect(&url, PostgresOptions::new().schema(&schema.name)).unwrap());
    // A second connect migrates nothing and succeeds (idempotent).
    drop(PostgresSink::connect(&url, PostgresOptions::new().schema(&schema.name)).unwrap());
    let sink = Arc::new(NonBlocking::builder(pg.clone()).capacity(8192).build());
    let started = Instant::now();
    std::thread::scope(|s| {
        for chunk in events.chunks(25_000) {
            let sink = sink.clone();
            s.spawn(move || {
                for e in chunk {
                    sink.write(e).unwrap();
                }
            });
        }
    });
    sink.flush().unwrap();
    let elapsed = started.elapsed();
    let st = sink.stats();
    assert_eq!((st.written, st.failed, st.dropped), (100_000, 0, 0));
    let ps = pg.stats();
    assert_eq!(
        (ps.inserted, ps.duplicates, ps.failed_batches),
        (100_000, 0, 0)
    );
    eprintln!(
        "100000 events in {elapsed:?} ({:.0} events/s, {} batches)",
        100_000.0 / elapsed.as_secs_f64(),
        ps.batches
    );
    assert_eq!(schema.count(""), 100_000);

    // Writing the same events again inserts nothing (ON CONFLICT DO NOTHING).
    pg.write_batch(&mut events[..500].to_vec()).unwrap();
    assert_eq!(pg.stats().duplicates, 500);
    assert_eq!(schema.count(""), 100_000);

    // The stored JSON is the event.
    let mut c = schema.client();
    let v: serde_json::Value = c
        .query_one(
            &format!(
                "SELECT event FROM {}.audit_events WHERE event_id = $1",
                schema.name
            ),
            &[&events[42].event_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(serde_json::from_value::<AuditEvent>(v).unwrap(), events[42]);

    let mut store = schema.store();
    for (q, want) in expected_queries(&events, now, base) {
        assert!(!want.is_empty(), "empty expectation for {q:?}");
        let rows = store.query(&q).unwrap();
        let got: Ids = rows.iter().map(|r| r.event_id).collect();
        assert_eq!(got.len(), rows.len(), "duplicate rows for {q:?}");
        check_limit(&q, &want, &got, &events);
        // Rows carry the right columns and come in time order.
        assert!(rows
            .windows(2)
            .all(|w| (w[0].timestamp, w[0].event_id) <= (w[1].timestamp, w[1].event_id)));
        let by_id: HashMap<Uuid, &AuditEvent> = events.iter().map(|e| (e.event_id, e)).collect();
        for r in rows.iter().take(50) {
            assert_eq!(r, &report::ReportRow::from_event(by_id[&r.event_id]));
        }
    }
    let groups = store
        .failed_logins_by_ip(&FailedLoginsByIp::over(5))
        .unwrap();
    let got: BTreeMap<String, u64> = groups.into_iter().map(|g| (g.key, g.count)).collect();
    let want = expected_failed_logins(&events, 5);
    assert!(!want.is_empty());
    assert_eq!(got, want);
    // A threshold above every count leaves nothing.
    assert!(store
        .failed_logins_by_ip(&FailedLoginsByIp::over(1_000_000))
        .unwrap()
        .is_empty());
}

#[test]
fn connection_killed_repeatedly_loses_and_duplicates_nothing() {
    let Some(url) = pg_url() else { return };
    let schema = TestSchema::new(&url, "fault");
    let app = format!("phi_audit_fault_{}", schema.name);
    let sep = if url.contains('?') { '&' } else { '?' };
    let sink_url = format!("{url}{sep}application_name={app}");
    let pg = Arc::new(
        PostgresSink::connect(
            &sink_url,
            PostgresOptions::new()
                .schema(&schema.name)
                .integrity(true)
                .batch_size(200)
                .backoff(Duration::from_millis(5), Duration::from_millis(100))
                .report_errors(false),
        )
        .unwrap(),
    );
    let sink = Arc::new(NonBlocking::builder(pg.clone()).capacity(1024).build());
    let d = dispatch("fault-svc");
    let base = Timestamp::now();
    let stop = AtomicBool::new(false);
    let kills = AtomicU64::new(0);
    let total = 30_000u64;
    let events: Vec<AuditEvent> = (0..total).map(|n| make_event(&d, n, base)).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Kill the sink's backend at a random moment after each committed
            // batch: mid-transaction, mid-commit or while idle.
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut rng = u64::from(std::process::id()) | 1;
            let mut last = 0;
            while !stop.load(Ordering::Acquire) {
                let now = pg.stats().batches;
                if now == last {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                last = now;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                std::thread::sleep(Duration::from_micros(rng % 20_000));
                let n: i64 = c
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                        &[&app],
                    )
                    .unwrap()
                    .get(0);
                kills.fetch_add(n as u64, Ordering::AcqRel);
            }
        });
        for chunk in events.chunks(10_000) {
            let sink = sink.clone();
            s.spawn(move || {
                for (i, e) in chunk.iter().enumerate() {
                    sink.write(e).unwrap();
                    if i % 500 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            });
        }
        // Writers finish, then the queue drains, then the killer stops.
        while sink.stats().enqueued < total {
            std::thread::sleep(Duration::from_millis(5));
        }
        sink.flush().unwrap();
        stop.store(true, Ordering::Release);
    });
    let st = sink.stats();
    let ps = pg.stats();
    eprintln!(
        "fault test: {} backends terminated; sink {st:?}; postgres {ps:?}",
        kills.load(Ordering::Acquire)
    );
    assert!(
        kills.load(Ordering::Acquire) >= 3,
        "the killer must have hit the sink"
    );
    assert!(ps.reconnects >= 3 && ps.retries >= 3);
    assert_eq!((st.written, st.failed), (total, 0));
    assert_eq!(ps.inserted + ps.duplicates, total);
    assert_eq!(schema.count(""), total as i64);
    let mut c = schema.client();
    let missing: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM unnest($1::uuid[]) AS w(id) WHERE NOT EXISTS (SELECT 1 FROM {}.audit_events e WHERE e.event_id = w.id)",
                schema.name
            ),
            &[&events.iter().map(|e| e.event_id).collect::<Vec<_>>()],
        )
        .unwrap()
        .get(0);
    assert_eq!(missing, 0);
    // The chain survived the retries without gaps or forks.
    assert_eq!(
        schema.store().verify_chain("fault-svc").unwrap(),
        total as usize
    );
}

fn sqlstate(e: &postgres::Error) -> &str {
    e.code().map(|c| c.code()).unwrap_or("none")
}

#[test]
fn update_delete_truncate_refused_and_purge_guarded() {
    let Some(url) = pg_url() else { return };
    let schema = TestSchema::new(&url, "guard");
    let s = &schema.name;
    let pg = PostgresSink::connect(&url, PostgresOptions::new().schema(s).integrity(true)).unwrap();
    let d = dispatch("guard-svc");
    let now = Timestamp::now();
    let old = Timestamp::from_unix_millis(now.unix_millis() - 7 * 366 * 24 * HOUR_MS);
    // 40 events from seven years ago, then 10 recent ones, one chain.
    let mut events: Vec<AuditEvent> = (0..40).map(|n| make_event(&d, n, old)).collect();
    events.extend((40..50).map(|n| make_event(&d, n, now)));
    pg.write_batch(&mut events[..25].to_vec()).unwrap();
    pg.write_batch(&mut events[25..].to_vec()).unwrap();
    assert_eq!(schema.count(""), 50);

    let mut c = schema.client();
    for sql in [
        format!("UPDATE {s}.audit_events SET actor_subject_id = 'x'"),
        format!("UPDATE {s}.audit_events SET event = event WHERE false"),
        format!("DELETE FROM {s}.audit_events"),
        format!(
            "DELETE FROM {s}.audit_events WHERE event_id = '{}'",
            events[0].event_id
        ),
        format!("TRUNCATE {s}.audit_events"),
    ] {
        let e = c.batch_execute(&sql).expect_err(&sql);
        assert_eq!(sqlstate(&e), "42501", "{sql}");
        assert!(e.as_db_error().unwrap().message().contains("append-only"));
    }
    // A look-alike purge function elsewhere does not get through.
    c.batch_execute(&format!(
        "CREATE SCHEMA {s}_x;
         CREATE FUNCTION {s}_x.purge_older_than(age interval, force boolean DEFAULT false) RETURNS bigint
         LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {s}.audit_events; RETURN 0; END $$;"
    ))
    .unwrap();
    let e = c
        .query_one(&format!("SELECT {s}_x.purge_older_than('1 day')"), &[])
        .unwrap_err();
    c.batch_execute(&format!("DROP SCHEMA {s}_x CASCADE"))
        .unwrap();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(schema.count(""), 50);

    // Purge under six years is refused, also through the store.
    let e = c
        .query_one(
            &format!("SELECT {s}.purge_older_than('5 years 11 months')"),
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22023");
    let mut store = schema.store();
    let err = store
        .purge_older_than("1 year", false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("six years"), "{err}");
    assert_eq!(schema.count(""), 50);

    // Six years: the 40 old events go, the purge is itself audited, and the
    // rest of the chain still verifies from the recorded anchor.
    assert_eq!(
        store.purge_older_than("6 years", false).unwrap().removed,
        40
    );
    assert_eq!(schema.count("WHERE service_name = 'guard-svc'"), 10);
    let purge_events = store
        .query(
            &Query::all()
                .service("phi-audit-retention")
                .action(ActionType::Delete),
        )
        .unwrap();
    assert_eq!(purge_events.len(), 1);
    let v: serde_json::Value = c
        .query_one(
            &format!(
                "SELECT event FROM {s}.audit_events WHERE service_name = 'phi-audit-retention'"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v["metadata"]["purged_events"], 40);
    assert_eq!(v["action"]["type"], "DELETE");
    let purge_event: AuditEvent =
        serde_json::from_value(v).expect("the purge event is a valid event");
    assert_eq!(purge_event.resource.kind, "AuditEvent");
    let chain = store.read_chain("guard-svc").unwrap();
    assert!(chain.anchor.is_some());
    assert_eq!(chain.verify().unwrap(), 10);
    // Forced short retention is allowed and removes nothing recent.
    assert_eq!(store.purge_older_than("1 day", true).unwrap().removed, 0);
    assert_eq!(schema.count("WHERE service_name = 'guard-svc'"), 10);
}

/// Not a test on its own: the child process of
/// `chain_written_by_two_processes_verifies` (run with `--ignored`).
#[test]
#[ignore = "child process of chain_written_by_two_processes_verifies"]
fn chain_child_writer() {
    let (Ok(url), Ok(schema), Ok(writer)) = (
        std::env::var("PHI_AUDIT_PG_URL"),
        std::env::var("PHI_AUDIT_CHILD_SCHEMA"),
        std::env::var("PHI_AUDIT_CHILD_WRITER"),
    ) else {
        eprintln!(
            "chain_child_writer only runs as the child of chain_written_by_two_processes_verifies"
        );
        return;
    };
    let pg = PostgresSink::connect(
        &url,
        PostgresOptions::new()
            .schema(&schema)
            .integrity(true)
            .batch_size(50),
    )
    .unwrap();
    let sink = Arc::new(NonBlocking::new(pg));
    let d = dispatch("shared-svc");
    let now = Timestamp::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (sink, d, writer) = (sink.clone(), &d, writer.clone());
            s.spawn(move || {
                for i in 0..1500u64 {
                    let mut e = make_event(d, t * 1500 + i, now);
                    e.metadata.insert("writer", writer.clone());
                    // Values whose JSON PostgreSQL rewrites: the chain must survive them.
                    if i % 100 == 0 {
                        e.metadata.insert("big", 1e16);
                        e.metadata.insert("tiny", 1e-7);
                        e.metadata.insert("sum", 0.1 + 0.2);
                        e.metadata.insert("nul", "a\u{0}b");
                    }
                    sink.write(&e).unwrap();
                }
            });
        }
    });
    let report = sink.shutdown(Duration::from_secs(60));
    assert!(report.completed && report.lost() == 0, "{report:?}");
}

#[test]
fn chain_written_by_two_processes_verifies() {
    let Some(url) = pg_url() else { return };
    let schema = TestSchema::new(&url, "chain");
    // Migrate first so the children do not race on an empty database (they
    // would be serialized by the advisory lock anyway).
    drop(PostgresSink::connect(&url, PostgresOptions::new().schema(&schema.name)).unwrap());
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|w| {
            std::process::Command::new(&exe)
                .args(["--exact", "chain_child_writer", "--ignored", "--nocapture"])
                .env("PHI_AUDIT_CHILD_SCHEMA", &schema.name)
                .env("PHI_AUDIT_CHILD_WRITER", w)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "child writer failed");
    }
    let mut store = schema.store();
    assert_eq!(
        store.chained_services().unwrap(),
        vec!["shared-svc".to_owned()]
    );
    let chain = store.read_chain("shared-svc").unwrap();
    assert_eq!(chain.events.len(), 6000);
    assert_eq!(chain.anchor, None);
    assert_eq!(chain.verify().unwrap(), 6000);
    // Both processes appended to the one chain, interleaved.
    let writers: Vec<&str> = chain
        .events
        .iter()
        .map(|e| e["metadata"]["writer"].as_str().unwrap())
        .collect();
    let switches = writers.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches >= 1, "writers never interleaved");
    // NUL became U+FFFD, consistently in the column-free JSON and the hash.
    assert!(chain
        .events
        .iter()
        .any(|e| e["metadata"]["nul"] == "a\u{fffd}b"));

    // Tampering is detected: edit one event with the trigger disabled.
    let mut c = schema.client();
    let s = &schema.name;
    c.batch_execute(&format!(
        "ALTER TABLE {s}.audit_events DISABLE TRIGGER audit_events_append_only;
         UPDATE {s}.audit_events SET event = jsonb_set(event, '{{actor,subject_id}}', '\"someone-else\"')
          WHERE service_name = 'shared-svc' AND chain_seq = 1234;
         ALTER TABLE {s}.audit_events ENABLE TRIGGER audit_events_append_only;"
    ))
    .unwrap();
    let err = store
        .read_chain("shared-svc")
        .unwrap()
        .verify()
        .unwrap_err();
    assert_eq!(
        err,
        phi_audit_runtime::ChainVerifyError::HashMismatch { index: 1233 }
    );
}

#[test]
fn bad_schema_names_are_rejected_without_touching_the_database() {
    for bad in [
        "",
        "Public",
        "a-b",
        "1abc",
        "x; DROP TABLE y",
        &"a".repeat(64),
    ] {
        let e = PostgresSink::connect(
            "postgres://nobody@127.0.0.1:1/none",
            PostgresOptions::new().schema(bad),
        )
        .unwrap_err();
        assert!(
            matches!(e, phi_audit_runtime::PostgresError::InvalidSchema(_)),
            "{bad}: {e}"
        );
    }
    let e = PostgresSink::connect(
        "postgres://nobody@127.0.0.1:1/none",
        PostgresOptions::new().connect_timeout(Duration::from_secs(1)),
    )
    .unwrap_err();
    assert!(
        matches!(e, phi_audit_runtime::PostgresError::Connect(_)),
        "{e}"
    );
}

#[test]
fn retried_batch_after_lost_commit_acknowledgement_keeps_chain_whole() {
    // What the sink does when a commit succeeded but its acknowledgement was
    // lost: the same batch comes again, with new events behind it.
    let Some(url) = pg_url() else { return };
    let schema = TestSchema::new(&url, "retry");
    let pg = PostgresSink::connect(
        &url,
        PostgresOptions::new().schema(&schema.name).integrity(true),
    )
    .unwrap();
    let d = dispatch("retry-svc");
    let now = Timestamp::now();
    let events: Vec<AuditEvent> = (0..30).map(|n| make_event(&d, n, now)).collect();
    pg.write_batch(&mut events[..20].to_vec()).unwrap();
    let mut again = events[10..30].to_vec();
    again.push(events[25].clone()); // a repeated id within one batch, too
    pg.write_batch(&mut again.clone()).unwrap();
    let st = pg.stats();
    assert_eq!((st.inserted, st.duplicates), (30, 11));
    assert_eq!(schema.count(""), 30);
    let chain = schema.store().read_chain("retry-svc").unwrap();
    assert_eq!(chain.verify().unwrap(), 30);
    let order: Vec<String> = chain
        .events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(order, want);
}

#[test]
fn database_gone_for_good_gives_up_after_the_limit_and_counts_the_loss() {
    let Some(url) = pg_url() else { return };
    let schema = TestSchema::new(&url, "gone");
    let first = AtomicBool::new(true);
    let app = format!("phi_audit_gone_{}", schema.name);
    let sep = if url.contains('?') { '&' } else { '?' };
    let good = format!("{url}{sep}application_name={app}");
    let pg = PostgresSink::connect_with(
        move || {
            // The first connection works; every reconnection finds nobody.
            let target = if first.swap(false, Ordering::AcqRel) {
                good.as_str()
            } else {
                "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"
            };
            postgres::Client::connect(target, postgres::NoTls)
        },
        PostgresOptions::new()
            .schema(&schema.name)
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .give_up_after(Some(Duration::from_millis(400)))
            .report_errors(false),
    )
    .unwrap();
    let pg = Arc::new(pg);
    let sink = NonBlocking::new(pg.clone());
    let d = dispatch("gone-svc");
    let now = Timestamp::now();
    sink.write_owned(make_event(&d, 1, now)).unwrap();
    sink.flush().unwrap();
    assert_eq!(schema.count(""), 1);
    // Kill the sink's connection: the reconnections fail until the limit.
    let mut admin = schema.client();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap();
    let started = Instant::now();
    for n in 2..5 {
        sink.write_owned(make_event(&d, n, now)).unwrap(); // never raised into callers
    }
    // The flush says what was lost, once.
    match sink.flush() {
        Err(phi_audit_runtime::SinkError::Lost { events, .. }) => assert_eq!(events, 3),
        other => panic!("flush after a loss: {other:?}"),
    }
    assert!(sink.flush().is_ok());
    let st = sink.stats();
    let ps = pg.stats();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(st.written, 1, "{st:?} {ps:?}");
    assert_eq!(st.failed, 3, "{st:?} {ps:?}");
    assert!(ps.failed_batches >= 1 && ps.retries >= 2, "{ps:?}");
    assert!(ps.last_error.is_some());
    assert_eq!(schema.count(""), 1);
}

#[test]
fn an_event_id_taken_by_a_different_event_is_counted_and_reported_never_dropped_silently() {
    let Some(url) = pg_url() else { return };
    for chained in [false, true] {
        let schema = TestSchema::new(&url, "conflict");
        let pg = Arc::new(
            PostgresSink::connect(
                &url,
                PostgresOptions::new()
                    .schema(&schema.name)
                    .integrity(chained)
                    .report_errors(false),
            )
            .unwrap(),
        );
        let d = dispatch("conflict-svc");
        let now = Timestamp::now();
        let first = make_event(&d, 1, now);
        pg.write(&first).unwrap();
        // The same event again (a retry): a duplicate, nothing lost.
        pg.write(&first).unwrap();
        assert!(pg.flush().is_ok());
        // Another event with the same id: it cannot be stored; the write
        // fails, the stats count it, and the next flush reports it.
        let mut other = make_event(&d, 2, now);
        other.event_id = first.event_id;
        assert!(pg.write(&other).is_err(), "chained={chained}");
        let st = pg.stats();
        assert_eq!(
            (st.inserted, st.duplicates, st.conflicts),
            (1, 1, 1),
            "{st:?}"
        );
        match pg.flush() {
            Err(phi_audit_runtime::SinkError::Lost { events: 1, cause }) => {
                assert!(cause.contains("event_id"), "{cause}")
            }
            other => panic!("chained={chained}: {other:?}"),
        }
        // In a batch, through a queue: the rest of the batch is stored, the
        // conflicting event (and a repeated id with other content inside
        // the batch) counted as failed.
        let sink = NonBlocking::new(pg.clone());
        let mut batch: Vec<AuditEvent> = (10..15).map(|n| make_event(&d, n, now)).collect();
        batch[1].event_id = first.event_id;
        batch[3].event_id = batch[2].event_id;
        let mut third = batch[4].clone();
        third.event_id = batch[0].event_id;
        batch.push(third);
        for e in batch {
            sink.write_owned(e).unwrap();
        }
        match sink.flush() {
            Err(phi_audit_runtime::SinkError::Lost { events, .. }) => {
                assert_eq!(
                    events,
                    3,
                    "chained={chained} {:?} {:?}",
                    sink.stats(),
                    pg.stats()
                )
            }
            other => panic!("chained={chained}: {other:?}"),
        }
        let nb = sink.stats();
        assert_eq!((nb.written, nb.failed), (3, 3), "{nb:?}");
        assert_eq!(pg.stats().conflicts, 4);
        assert_eq!(schema.count(""), 4);
        if chained {
            let chain = schema.store().read_chain("conflict-svc").unwrap();
            assert_eq!(chain.verify().unwrap(), 4);
        }
    }
}

#[test]
fn ts_column_agrees_with_the_json_timestamp_at_the_edges() {
    let Some(url) = pg_url() else { return };
    let schema = TestSchema::new(&url, "ts");
    let pg = PostgresSink::connect(
        &url,
        PostgresOptions::new().schema(&schema.name).integrity(true),
    )
    .unwrap();
    let d = dispatch("ts-svc");
    for (n, ms) in [
        i64::MIN,
        -62_167_219_200_001,
        -62_167_219_200_000,
        0,
        253_402_300_799_999,
        253_402_300_800_000,
        i64::MAX,
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = make_event(&d, n as u64, Timestamp::from_unix_millis(0));
        e.timestamp = Timestamp::from_unix_millis(ms);
        pg.write(&e).unwrap();
    }
    let mut c = schema.client();
    for r in c
        .query(
            &format!(
                "SELECT ts, event->>'timestamp' FROM {}.audit_events",
                schema.name
            ),
            &[],
        )
        .unwrap()
    {
        let ts: std::time::SystemTime = r.get(0);
        let json: String = r.get(1);
        assert_eq!(
            Timestamp::from_system_time(ts),
            Timestamp::parse_rfc3339(&json).unwrap(),
            "{json}"
        );
    }
    assert_eq!(schema.store().verify_chain("ts-svc").unwrap(), 7);
}
