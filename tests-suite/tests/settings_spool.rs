//! `spool=DIR` in a PostgreSQL sink spec (environment and settings file):
//! parsed with its options taken out of the driver's URL, every mistake
//! reported, and the sink it opens (a spool between the queue and
//! PostgreSQL) delivering events (with `PHI_AUDIT_PG_URL`).
#![cfg(feature = "postgres")]

use std::time::Duration;

use phi_audit::settings::{Delivery, SinkKind, SpoolSpec};
use phi_audit::{
    with_dispatch, ActionType, EventBuilder, Settings, SettingsError, SinkSpec, SpoolFull,
};

fn from_env(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    Settings::from_env_map(pairs.iter().copied())
}

fn problems(spec: &str) -> Vec<String> {
    match from_env(&[("PHI_AUDIT_SERVICE", "svc"), ("PHI_AUDIT_SINK", spec)]) {
        Ok(s) => panic!("{spec} was accepted: {s:?}"),
        Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn spool_options_are_phi_audits_not_the_drivers() {
    let spec: SinkSpec =
        "postgres://audit@db/app?spool=/var/spool/audit-%7Bpid%7D&spool_max=10MB&spool_full=refuse&sslmode=disable&schema=a"
            .parse()
            .unwrap();
    let spool: &SpoolSpec = spec.spool.as_ref().unwrap();
    assert_eq!(spool.dir, std::path::Path::new("/var/spool/audit-{pid}"));
    assert_eq!(spool.max_bytes, 10_000_000);
    assert_eq!(spool.full, SpoolFull::Refuse);
    let o = spool.options();
    assert_eq!((o.max_bytes, o.full), (10_000_000, SpoolFull::Refuse));
    match &spec.kind {
        SinkKind::Postgres(p) => {
            assert_eq!(p.url(), "postgres://audit@db/app?sslmode=disable");
            assert_eq!(p.schema, "a");
        }
        other => panic!("{other:?}"),
    }
    // Still behind the queue: callers -> queue -> spool -> PostgreSQL.
    assert!(matches!(spec.delivery, Delivery::Queued { .. }));

    let plain: SinkSpec = "postgres://audit@db/app?spool=/s".parse().unwrap();
    let spool = plain.spool.unwrap();
    assert_eq!((spool.max_bytes, spool.full), (1 << 30, SpoolFull::Block));
    let none: SinkSpec = "postgres://audit@db/app".parse().unwrap();
    assert_eq!(none.spool, None);
}

#[test]
fn spool_mistakes_are_reported_with_their_position() {
    let p = problems("postgres://h/db?spool_max=1MB");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("`spool_max` and `spool_full` tune the spool"),
        "{p:?}"
    );
    assert!(
        p[0].starts_with("PHI_AUDIT_SINK (characters 17-29)"),
        "{p:?}"
    );
    let p = problems("postgres://h/db?spool=/s&spool_full=sometimes&spool_max=0");
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p.iter()
            .any(|m| m.contains("`spool_full` must be one of block, refuse")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|m| m.contains("`spool_max` must be a size")),
        "{p:?}"
    );
    let p = problems("postgres://h/db?spool=");
    assert!(p[0].contains("`spool` needs a directory"), "{p:?}");
    // Only remote sinks take a spool.
    let p = problems("jsonl:/tmp/a.jsonl?spool=/s");
    assert!(p[0].contains("spool"), "{p:?}");
}

#[cfg(feature = "toml")]
#[test]
fn the_settings_file_takes_the_same_spec() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.toml");
    std::fs::write(
        &path,
        "[phi_audit]\nservice = \"svc\"\nsink = [\"postgres://audit@db/app?spool=/var/spool/a&spool_full=block\"]\n",
    )
    .unwrap();
    let s = from_env(&[("PHI_AUDIT_CONFIG", path.to_str().unwrap())]).unwrap();
    let spool = s.sinks[0].spool.as_ref().unwrap();
    assert_eq!(spool.dir, std::path::Path::new("/var/spool/a"));
    assert_eq!(spool.full, SpoolFull::Block);
}

#[test]
fn a_spooled_postgres_sink_from_settings_delivers() {
    let Some(url) = phi_audit_test_env::server(
        phi_audit_test_env::PG_URL,
        "a_spooled_postgres_sink_from_settings_delivers",
        "PostgreSQL URL",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("t_spool_settings_{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let spec = format!(
        "{url}{sep}schema={schema}&spool={}",
        dir.path().join("spool").display()
    );
    let settings = from_env(&[
        ("PHI_AUDIT_SERVICE", "spool-settings"),
        ("PHI_AUDIT_SINK", &spec),
    ])
    .unwrap();
    let d = settings.dispatch().unwrap();
    for i in 0..25 {
        with_dispatch(&d, || {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}")).emit()
        });
    }
    d.flush().unwrap();
    // Flushed means on local disk; the spool's worker delivers.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let count = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            &format!("SELECT count(*) FROM \"{schema}\".audit_events"),
            &[],
        )
        .map(|r| r.get(0))
        .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count(&mut client) < 25 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(&mut client), 25);
    assert!(dir.path().join("spool").join("spool.lock").exists());
    drop(d);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .unwrap();
}
