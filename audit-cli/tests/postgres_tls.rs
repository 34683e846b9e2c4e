//! TLS to PostgreSQL against a real TLS-only server: this test starts a
//! throwaway PostgreSQL (`initdb`/`pg_ctl` from `PHI_AUDIT_PG_BIN`, default
//! /usr/lib/postgresql/15/bin) on a free loopback port, with a self-signed
//! certificate made here and a pg_hba.conf that refuses every connection
//! without TLS. Then `PostgresSink` writes through `sslmode=require` and
//! through a verified connection, and the `phi-audit` command's
//! `--postgres` reads the same table with `sslmode=require`.
//!
//! Skipped, with the reason printed, where no PostgreSQL binaries are
//! installed.

use std::process::Command;

use phi_audit_runtime::{
    with_dispatch, ActionType, Config, Dispatch, EventBuilder, NonBlocking, PostgresOptions,
    PostgresSink, PostgresStore, PostgresTls,
};

#[path = "../../audit-runtime/tests/common/throwaway_pg.rs"]
mod throwaway_pg;

/// A PostgreSQL server that accepts TLS connections only (the shared
/// throwaway server with a certificate and a TLS-only `pg_hba.conf`);
/// stopped on drop.
struct TlsServer {
    server: throwaway_pg::Server,
    cert_pem: String,
}

impl TlsServer {
    /// `Ok(None)`: no PostgreSQL binaries here (skip).
    fn start() -> Result<Option<TlsServer>, String> {
        if throwaway_pg::unavailable().is_some() {
            return Ok(None);
        }
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let cert_pem = cert.pem();
        let setup = throwaway_pg::Setup {
            files: vec![
                ("server.crt".into(), cert_pem.clone().into_bytes(), 0o644),
                ("server.key".into(), key.serialize_pem().into_bytes(), 0o600),
            ],
            conf: Some(Box::new(|dir: &std::path::Path| {
                format!(
                    "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                    dir.join("server.crt").display(),
                    dir.join("server.key").display()
                )
            })),
            hba: Some(
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n"
                    .into(),
            ),
        };
        Ok(throwaway_pg::Server::start_with(setup)?.map(|server| TlsServer { server, cert_pem }))
    }

    fn url(&self, query: &str) -> String {
        self.server.url(query)
    }
}

fn write_events(url: &str, tls: PostgresTls, n: usize) -> Result<(), String> {
    let pg = PostgresSink::connect(url, PostgresOptions::new().integrity(true).tls(tls))
        .map_err(|e| e.to_string())?;
    let d = Dispatch::new(
        Config::new("tls-service").build().unwrap(),
        NonBlocking::new(pg),
    );
    for i in 0..n {
        with_dispatch(&d, || {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}")).emit()
        });
    }
    d.flush().map_err(|e| e.to_string())
}

#[test]
fn tls_only_server_sink_store_and_cli() {
    let server = match TlsServer::start() {
        Ok(Some(s)) => s,
        Ok(None) => {
            phi_audit_test_env::skip(
                "postgres_tls::tls_only_server_sink_store_and_cli",
                "no PostgreSQL binaries (initdb, pg_ctl) in PHI_AUDIT_PG_BIN or /usr/lib/postgresql/15/bin",
            );
            return;
        }
        Err(e) => panic!("could not start the TLS-only PostgreSQL: {e}"),
    };

    // The server refuses plain connections.
    let plain = PostgresStore::connect(&server.url("?sslmode=disable"), "public");
    assert!(plain.is_err(), "a plain connection must be refused");
    let plain = write_events(&server.url(""), PostgresTls::disabled(), 1);
    assert!(plain.is_err());

    // sslmode=require: encrypted, certificate not verified (libpq's meaning).
    write_events(&server.url("?sslmode=require"), PostgresTls::from_url(), 3).unwrap();
    // Verified against the server's certificate (and its IP address).
    let verified = PostgresTls::verify_pem(server.cert_pem.as_bytes()).unwrap();
    write_events(&server.url(""), verified, 2).unwrap();
    // Verified against roots that did not sign it: refused.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&other_key)
        .unwrap();
    let wrong = PostgresTls::verify_pem(other.pem().as_bytes()).unwrap();
    let e = write_events(&server.url(""), wrong, 1).unwrap_err();
    assert!(e.contains("cannot connect"), "{e}");
    assert!(PostgresTls::verify_pem(b"not a certificate").is_err());

    // The command reaches it with sslmode=require.
    let out = Command::new(env!("CARGO_BIN_EXE_phi-audit"))
        .args(["verify", "--postgres", &server.url("?sslmode=require")])
        .args(["--service", "tls-service"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("5 chained event(s)"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_phi-audit"))
        .args(["report", "--postgres", &server.url("?sslmode=require")])
        .args([
            "--query",
            "resource",
            "--resource-type",
            "Patient",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(csv.lines().filter(|l| l.contains("p-")).count(), 5, "{csv}");
    // Without TLS the command fails with the unreadable-input code.
    let out = Command::new(env!("CARGO_BIN_EXE_phi-audit"))
        .args(["verify", "--postgres", &server.url("?sslmode=disable")])
        .args(["--service", "tls-service"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
