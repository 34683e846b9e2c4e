//! What this run of the tests can reach, said where `cargo test` shows it:
//! which server-backed tests run and which skip (and why). Under
//! `PHI_AUDIT_REQUIRE_SERVERS=1` (`.ci/run`) every server must be set and
//! answer, or this test fails.

use std::process::Command;
use std::time::Duration;

use phi_audit_test_env::{note, servers_required, PG_URL, REF_PYTHON, REQUIRE_SERVERS};

/// Whether PostgreSQL at `url` answers `SELECT 1`.
fn postgres_answers(url: &str) -> Result<(), String> {
    let mut config: postgres::Config = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    config.connect_timeout(Duration::from_secs(10));
    let mut client = config
        .connect(postgres::NoTls)
        .map_err(|e| format!("cannot connect: {e}"))?;
    let row = client
        .query_one("SELECT 1::INT4", &[])
        .map_err(|e| format!("SELECT 1 failed: {e}"))?;
    (row.get::<_, i32>(0) == 1)
        .then_some(())
        .ok_or_else(|| "SELECT 1 returned something else".to_string())
}

/// Whether `python` imports the reference implementation.
fn reference_imports(python: &str) -> Result<(), String> {
    let out = Command::new(python)
        .args(["-c", "import bh_audit_logger"])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`import bh_audit_logger` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Checks that a variable's value works.
type Check = fn(&str) -> Result<(), String>;

#[test]
fn environment_summary() {
    let required = servers_required();
    let checks: [(&str, &str, Check); 2] = [
        (
            PG_URL,
            "the PostgreSQL tests (runtime postgres*, CLI postgres_props/report/sink_specs, settings)",
            postgres_answers,
        ),
        (
            REF_PYTHON,
            "the reference cross-checks (reference_conformance, CLI interop)",
            reference_imports,
        ),
    ];
    let mut failures = Vec::new();
    for (var, tests, check) in checks {
        let line = match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => match check(&v) {
                Ok(()) => format!("environment: {var} is set and answers: {tests} run"),
                Err(why) => {
                    failures.push(format!("{var} is set but {why}"));
                    format!("environment: {var} is set but {why}: {tests} will fail")
                }
            },
            _ => {
                if required {
                    failures.push(format!("{var} is not set"));
                }
                format!("environment: {var} is not set: {tests} skip")
            }
        };
        note(&line);
    }
    note(&format!(
        "environment: {REQUIRE_SERVERS} is {}",
        if required {
            "set: a skip is a failure"
        } else {
            "not set: skips pass"
        }
    ));
    // A variable that is set must work, required or not: a wrong URL is a
    // mistake to report, not a reason to skip.
    assert!(failures.is_empty(), "{}", failures.join("; "));
}
