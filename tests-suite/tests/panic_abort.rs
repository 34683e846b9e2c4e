//! Under `panic = "abort"` nothing unwinds, so no audited call's guard
//! records the panic; `flush_on_panic()`'s hook does: the panicking call's
//! own FAILURE `Panic` event (and its enclosing call's) is written before the
//! process aborts. The program is `panic-abort-check`, built here with the
//! `panic-abort` profile (a test binary itself always unwinds).

use std::process::Command;

#[test]
fn the_panicking_calls_own_event_is_written_before_the_abort() {
    let out = std::env::temp_dir().join(format!("phi-audit-abort-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "--quiet",
            "-p",
            "panic-abort-check",
            "--profile",
            "panic-abort",
            "--",
        ])
        .arg(&out)
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "the program must abort: {stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        // `cargo run` runs the program in its own place (exec): the status
        // is the program's, killed by SIGABRT.
        assert_eq!(
            run.status.signal(),
            Some(libc::SIGABRT),
            "{:?}: {stderr}",
            run.status
        );
    }
    assert!(
        stderr.contains("unreadable"),
        "the panic message reached stderr (the hook ran the default hook): {stderr}"
    );
    let text = std::fs::read_to_string(&out).expect("the output file");
    let _ = std::fs::remove_file(&out);
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    assert_eq!(events[0]["action"]["name"], "finished");
    assert_eq!(events[0]["outcome"]["status"], "SUCCESS");
    // Innermost first, as unwinding would have recorded them.
    assert_eq!(events[1]["action"]["name"], "inner");
    assert_eq!(events[2]["action"]["name"], "outer");
    for e in &events[1..] {
        assert_eq!(e["outcome"]["status"], "FAILURE");
        assert_eq!(e["outcome"]["error_type"], "Panic");
    }
    assert_eq!(events[2]["metadata"]["step"], "before the inner call");
    assert!(!text.contains("Jane"), "{text}");
    for e in &events {
        assert!(phi_audit::schema::validate_value(e, None).is_ok(), "{e}");
    }
}
