//! `phi-audit report` over JSONL files and `verify --postgres`, through the
//! binary.

use std::sync::Arc;

use phi_audit_runtime::{
    with_dispatch, ActionType, Actor, Config, Dispatch, EventBuilder, Http, JsonlFileSink,
    NonBlocking, Outcome,
};

mod support;
use support::run;

fn write_events(path: &std::path::Path) {
    let sink = Arc::new(NonBlocking::new(JsonlFileSink::open(path).unwrap()));
    let d = Dispatch::new(Config::new("svc").build().unwrap(), sink.clone());
    with_dispatch(&d, || {
        for i in 0..10 {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{}", i % 3))
                .patient_id(format!("p-{}", i % 3))
                .actor(Actor::human("dr-1").org("org-a").owner_org(if i == 4 {
                    "org-b"
                } else {
                    "org-a"
                }))
                .emit();
        }
        EventBuilder::access_denied(ActionType::Export, "Chart", "RoleDenied").emit();
        for _ in 0..7 {
            EventBuilder::login_failure(Actor::human("eve"), "BadCredentials")
                .http(Http {
                    client_ip: Some("10.0.0.9".into()),
                    ..Http::default()
                })
                .emit();
        }
        EventBuilder::new(ActionType::Update, "Note")
            .outcome(Outcome::failure("DbError", "database unavailable"))
            .emit();
    });
    d.flush().unwrap();
}

#[test]
fn reports_over_a_jsonl_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_events(&path);
    let p = path.to_str().unwrap();

    let (c, out, _) = run(
        &[
            "report",
            p,
            "--query",
            "patient",
            "--patient",
            "p-1",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(c, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3, "{out}");

    let (c, out, _) = run(
        &["report", p, "--query", "failures", "--format", "csv"],
        None,
    );
    assert_eq!(c, 0);
    // Header + 1 denial + 7 failed logins + 1 failure.
    assert_eq!(out.lines().count(), 10, "{out}");

    let (c, out, _) = run(
        &["report", p, "--query", "cross-org", "--format", "json"],
        None,
    );
    assert_eq!(c, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (c, out, _) = run(&["report", p, "--query", "exports"], None);
    assert_eq!(c, 0);
    assert!(out.contains("1 event(s)"), "{out}");

    let (c, out, _) = run(
        &[
            "report",
            "-",
            "--query",
            "failed-logins",
            "--threshold",
            "5",
            "--format",
            "csv",
        ],
        Some(&std::fs::read(&path).unwrap()),
    );
    assert_eq!(c, 0);
    assert_eq!(
        out.replace("\r\n", "\n").trim(),
        "client_ip,count\n10.0.0.9,7"
    );

    // Bad arguments or unreadable input: a clear message and exit 2.
    assert_eq!(run(&["report", p, "--query", "patient"], None).0, 2);
    assert_eq!(
        run(&["report", "/nonexistent", "--query", "all"], None).0,
        2
    );
    assert_eq!(
        run(
            &["report", p, "--query", "all", "--since", "yesterday"],
            None
        )
        .0,
        2
    );
    // A line that is not an event is skipped, counted and named: exit 1.
    let (c, _, err) = run(&["report", "-", "--query", "all"], Some(b"{not json\n"));
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("line 1 skipped"), "{err}");
}

#[test]
fn verify_a_chain_read_back_from_postgres() {
    let Some(url) = phi_audit_test_env::server(
        phi_audit_test_env::PG_URL,
        "report::verify_a_chain_read_back_from_postgres",
        "PostgreSQL URL",
    ) else {
        return;
    };
    let schema = format!("cli_verify_{}", std::process::id());
    let sink = phi_audit_runtime::PostgresSink::connect(
        &url,
        phi_audit_runtime::PostgresOptions::new()
            .schema(schema.clone())
            .integrity(true),
    )
    .unwrap();
    let nb = Arc::new(NonBlocking::new(sink));
    let d = Dispatch::new(Config::new("cli-svc").build().unwrap(), nb.clone());
    with_dispatch(&d, || {
        for i in 0..50 {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}")).emit();
        }
    });
    d.flush().unwrap();
    assert_eq!(nb.stats().written, 50);

    let (c, out, err) = run(
        &[
            "verify",
            "--postgres",
            &url,
            "--pg-schema",
            &schema,
            "--service",
            "cli-svc",
        ],
        None,
    );
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("PASS: 50"), "{out}");
    let (c, out, _) = run(
        &[
            "verify",
            "--postgres",
            &url,
            "--pg-schema",
            &schema,
            "--service",
            "cli-svc",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(c, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["result"],
        "PASS"
    );
    // Report straight from the table.
    let (c, out, _) = run(
        &[
            "report",
            "--postgres",
            &url,
            "--pg-schema",
            &schema,
            "--query",
            "all",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(c, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        50
    );
    // Unreachable database: exit 2.
    assert_eq!(
        run(
            &[
                "verify",
                "--postgres",
                "postgres://nobody@127.0.0.1:1/none",
                "--service",
                "x"
            ],
            None
        )
        .0,
        2
    );

    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}
