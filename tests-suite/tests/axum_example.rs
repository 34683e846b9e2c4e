//! `examples/axum_service.rs` as a user runs it: the built example on a
//! free port, real requests, SIGTERM, and every event in the JSONL file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example binary cargo built beside this test (`cargo test` builds
/// examples), or `None`.
fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("examples");
    let bin = dir.join(format!("axum_service{}", std::env::consts::EXE_SUFFIX));
    bin.exists().then_some(bin)
}

/// One HTTP/1.1 request on its own connection; (status, response text).
fn request(addr: &str, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: Bearer {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: example-test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    (status, text)
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_example_audits_requests_and_flushes_on_sigterm() {
    let Some(bin) = example_binary() else {
        phi_audit_test_env::skip_required(
            "axum_example",
            "the axum_service example is not built (cargo test --all-features builds it)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Running(
        Command::new(bin)
            .env("PHI_AUDIT_ADDR", &addr)
            .env("PHI_AUDIT_FILE", &file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the example did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (s, body) = request(&addr, "GET", "/patients/p-42", Some("dr-house:clinician"));
    assert_eq!(s, 200, "{body}");
    assert!(body.to_ascii_lowercase().contains("x-request-id: "));
    assert_eq!(request(&addr, "GET", "/patients/p-42", None).0, 401);
    assert_eq!(
        request(
            &addr,
            "POST",
            "/patients/p-42/export",
            Some("dr-house:clinician")
        )
        .0,
        403
    );
    assert_eq!(
        request(
            &addr,
            "POST",
            "/patients/p-42/export",
            Some("cm-1:exporter,auditor")
        )
        .0,
        200
    );
    assert_eq!(request(&addr, "GET", "/health", None).0, 200);

    // SIGTERM: graceful shutdown, then the flush.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("every audit event is in"), "{out}");

    let text = std::fs::read_to_string(&file).unwrap();
    let events: Vec<phi_audit::AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Four audited requests: the handler's event and the route's each.
    assert_eq!(events.len(), 8, "{text}");
    for e in &events {
        phi_audit::validate(e).unwrap();
        let h = e.http.as_ref().unwrap();
        assert_eq!(h.client_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(h.user_agent.as_deref(), Some("example-test"));
        assert!(h
            .route_template
            .as_deref()
            .unwrap()
            .starts_with("/patients/{id}"));
        assert!(h.status_code.is_some());
    }
    let outcomes: Vec<(&str, &str, u16)> = events
        .iter()
        .map(|e| {
            (
                e.actor.subject_id.as_str(),
                e.outcome.status.as_str(),
                e.http.as_ref().unwrap().status_code.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("dr-house", "SUCCESS", 200),
            ("dr-house", "SUCCESS", 200),
            ("anonymous", "DENIED", 401),
            ("anonymous", "DENIED", 401),
            ("dr-house", "DENIED", 403),
            ("dr-house", "DENIED", 403),
            ("cm-1", "SUCCESS", 200),
            ("cm-1", "SUCCESS", 200),
        ]
    );
    assert!(!text.contains("/health"));
}
