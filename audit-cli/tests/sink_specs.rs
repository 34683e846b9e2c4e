//! The commands that read accept the sink specs a service's `PHI_AUDIT_SINK`
//! writes with: `verify ledger:PATH`, `validate jsonl:PATH`, `report
//! jsonl:PATH`, and a PostgreSQL URL with `?schema=NAME`.

use std::io::Write;
use std::process::{Command, Stdio};

use phi_audit_runtime::{with_dispatch, ActionType, EventBuilder, Settings};

fn run(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phi-audit"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().flush().unwrap();
    let out = child.wait_with_output().unwrap();
    let s = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        s(out.stdout),
        s(out.stderr),
    )
}

/// Writes `n` events through the settings a service would read from
/// `PHI_AUDIT_SINK=spec`.
fn write_with(spec: &str, n: usize) {
    let settings =
        Settings::from_env_map([("PHI_AUDIT_SERVICE", "svc"), ("PHI_AUDIT_SINK", spec)]).unwrap();
    let d = settings.dispatch().unwrap();
    with_dispatch(&d, || {
        for i in 0..n {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}")).emit();
        }
    });
    d.flush().unwrap();
}

#[test]
fn verify_validate_and_report_read_the_specs_the_service_writes_with() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("a,b.jsonl");
    // The comma is escaped in the spec, as PHI_AUDIT_SINK needs it.
    let spec = format!(
        "ledger:{}/a%2Cb.jsonl?alg=sha384&fsync=never&sync",
        dir.path().display()
    );
    write_with(&spec, 12);
    assert!(ledger.exists());

    let (c, out, err) = run(&["verify", &spec]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("PASS"), "{out}");
    let (c, plain, _) = run(&["verify", ledger.to_str().unwrap()]);
    assert_eq!(c, 0);
    assert_eq!(plain, out);

    let (c, out, err) = run(&["validate", &format!("jsonl:{}", ledger.display())]);
    assert_eq!(c, 0, "{out}{err}");
    let (c, out, err) = run(&["validate", &spec]);
    assert_eq!(c, 0, "{out}{err}");

    let events = dir.path().join("events.jsonl");
    let jsonl = format!("jsonl:{}?fsync=never", events.display());
    write_with(&jsonl, 5);
    let (c, out, err) = run(&["report", &jsonl, "--query", "all", "--format", "csv"]);
    assert_eq!(c, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 6, "{out}"); // header and 5 rows
    let (c, out, err) = run(&["validate", &jsonl, "--format", "json"]);
    assert_eq!(c, 0, "{out}{err}");
}

#[test]
fn bad_specs_are_errors_that_echo_nothing() {
    let cases: &[(&[&str], &str)] = &[
        (&["verify", "ledger:"], "needs a file path"),
        (
            &["verify", "ledger:/x?colour=RedValue"],
            "unknown option `colour`",
        ),
        (
            &["validate", "jsonl:/x?rotate=huge"],
            "`rotate` must be a size",
        ),
        (&["validate", "ledger:/x%zz"], "bad escape"),
        (
            &["verify", "postgres:db/app", "--service", "s"],
            "postgres://USER@HOST/DB",
        ),
    ];
    for (args, expected) in cases {
        let (c, out, err) = run(args);
        assert_eq!(c, 2, "{args:?}: {out}{err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("RedValue") && !err.contains("huge"), "{err}");
    }
    // A password never reaches the terminal.
    for args in [
        &["validate", "postgres://audit:Pw-S3cret@127.0.0.1:1/app"][..],
        &["verify", "postgres://audit:Pw-S3cret@127.0.0.1:1/app"],
        &[
            "verify",
            "postgres://audit:Pw-S3cret@127.0.0.1:1/app",
            "--service",
            "s",
            "--anchor",
            "00",
        ],
        &[
            "report",
            "postgres://audit:Pw-S3cret@127.0.0.1:1/app?schema=audit",
            "--pg-schema",
            "other",
            "--query",
            "all",
        ],
        &[
            "report",
            "--postgres",
            "postgres://audit:Pw-S3cret@127.0.0.1:1/app?bogus=1",
            "--query",
            "all",
        ],
    ] {
        let (c, out, err) = run(args);
        assert_eq!(c, 2, "{args:?}: {out}{err}");
        assert!(!format!("{out}{err}").contains("Pw-S3cret"), "{err}");
    }
    // What a PostgreSQL source needs (without the feature, the URL is refused as such).
    #[cfg(feature = "postgres")]
    {
        let (_, _, err) = run(&["validate", "postgres://audit@h/app"]);
        assert!(err.contains("validate reads JSON-lines files"), "{err}");
        let (_, _, err) = run(&["verify", "postgres://audit@h/app"]);
        assert!(err.contains("needs --service NAME"), "{err}");
        let (_, _, err) = run(&[
            "verify",
            "postgres://h/a",
            "--service",
            "s",
            "--anchor",
            "0",
        ]);
        assert!(err.contains("apply to ledger files"), "{err}");
        let (_, _, err) = run(&[
            "report",
            "postgres://h/a?schema=x",
            "--pg-schema",
            "y",
            "--query",
            "all",
        ]);
        assert!(err.contains("give the schema once"), "{err}");
    }
}

#[cfg(feature = "postgres")]
#[test]
fn a_postgres_url_with_its_schema_is_a_source() {
    let Some(url) = phi_audit_test_env::server(
        phi_audit_test_env::PG_URL,
        "sink_specs::a_postgres_url_with_its_schema_is_a_source",
        "PostgreSQL URL",
    ) else {
        return;
    };
    let schema = format!("cli_specs_{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let spec = format!("{url}{sep}schema={schema}&integrity&batch=5");
    write_with(&spec, 15);

    let (c, out, err) = run(&["verify", &spec, "--service", "svc"]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("PASS: 15"), "{out}");
    let (c, out, err) = run(&["verify", "--postgres", &spec, "--service", "svc"]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("PASS: 15"), "{out}");
    let (c, out, err) = run(&["report", &spec, "--query", "all", "--format", "csv"]);
    assert_eq!(c, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 16, "{out}");
    // --pg-schema still works with a plain URL.
    let (c, out, err) = run(&["report", &url, "--pg-schema", &schema, "--query", "all"]);
    assert_eq!(c, 0, "{out}{err}");

    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}
