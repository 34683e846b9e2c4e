//! Crash test: a child process writing to a LedgerSink (fsync on every event)
//! is killed with SIGKILL mid-stream. Reopening recovers, the verifier passes
//! on everything before the tear, and no acknowledged event is missing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use phi_audit_runtime::*;

const CHILD_ENV: &str = "PHI_AUDIT_CRASH_CHILD";

/// In the child: write events forever, printing each acknowledged sequence
/// number after `write` returned Ok.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let l = LedgerSink::open_with(&path, LedgerOptions::default()).unwrap();
    let start = l.recovery().events;
    let mut out = std::io::stdout().lock();
    for i in start.. {
        l.write(&common::event(i)).unwrap();
        use std::io::Write;
        writeln!(out, "{i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_mid_stream_recovers_without_losing_acknowledged_events() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut total_acked = 0u64;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(n) = line.trim().parse::<u64>() {
                    last = Some(n);
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(150 + 100 * round));
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        let last_acked = reader.join().unwrap();

        let l = LedgerSink::open_with(&path, LedgerOptions::default()).unwrap();
        let rec = l.recovery().clone();
        drop(l);
        if let Some(n) = last_acked {
            assert!(
                rec.events > n,
                "round {round}: acknowledged event {n} missing ({} in file)",
                rec.events
            );
            total_acked = n + 1;
        }
        let r = verify_path(&path, &VerifyOptions::default()).unwrap();
        assert!(r.passed(), "round {round}: {:?}", r.failures);
        assert_eq!(r.events_scanned, rec.events);
        // Every event is there exactly once and in order.
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["metadata"]["seq"], i as u64);
        }
    }
    assert!(total_acked > 0, "the child never acknowledged an event");
}
