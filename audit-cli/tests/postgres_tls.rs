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

use std::path::{Path, PathBuf};
use std::process::Command;

use phi_audit_runtime::{
    with_dispatch, ActionType, Config, Dispatch, EventBuilder, NonBlocking, PostgresOptions,
    PostgresSink, PostgresStore, PostgresTls,
};

/// A PostgreSQL server that accepts TLS connections only; stopped on drop.
struct TlsServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    cert_pem: String,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl TlsServer {
    /// `Ok(None)`: no PostgreSQL binaries here (skip).
    fn start() -> Result<Option<TlsServer>, String> {
        let bin = PathBuf::from(
            std::env::var("PHI_AUDIT_PG_BIN")
                .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned()),
        );
        if !bin.join("initdb").exists() || !bin.join("pg_ctl").exists() {
            return Ok(None);
        }
        // initdb refuses to run as root: run the server as `postgres` then.
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");

        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let cert_pem = cert.pem();
        std::fs::write(dir.path().join("server.crt"), &cert_pem).map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("server.key"), key.serialize_pem())
            .map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();

        let server = TlsServer {
            dir,
            bin,
            port,
            as_postgres,
            cert_pem,
        };
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path()))?;
        }
        run(Command::new("chmod")
            .arg("0600")
            .arg(server.dir.path().join("server.key")))?;
        run(&mut server.pg(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        ))?;
        let d = server.dir.path();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n",
            d.display(),
            d.join("server.crt").display(),
            d.join("server.key").display()
        );
        append(&data.join("postgresql.conf"), &conf)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
        )
        .map_err(|e| e.to_string())?;
        run(&mut server.pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&d.join("server.log"))?,
                "-w",
                "-t",
                "60",
                "start",
            ],
        ))?;
        Ok(Some(server))
    }

    fn pg(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe).args(args);
            c
        } else {
            let mut c = Command::new(exe);
            c.args(args);
            c
        }
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres{query}",
            self.port
        )
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| "a non-UTF-8 temporary path".to_owned())
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    f.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        if let Some(d) = data.to_str() {
            let _ = self
                .pg("pg_ctl", &["-D", d, "-m", "immediate", "stop"])
                .output();
        }
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
