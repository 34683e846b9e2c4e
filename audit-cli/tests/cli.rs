//! Exit codes and messages of `phi-audit` on good and bad input.

use std::fs;

use phi_audit_runtime::*;

mod support;
use support::run;

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        schema_version: SchemaVersion::V1_1,
        event_id: uuid::Uuid::from_u128(0x4000_0000_0000_4000_8000_0000_0000_0000 | u128::from(i)),
        timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + i as i64),
        service: Service {
            name: "svc".into(),
            environment: None,
            version: None,
        },
        actor: Actor::human("u-1"),
        action: Action {
            kind: ActionType::Read,
            name: None,
            phi_touched: None,
            data_classification: None,
        },
        resource: Resource {
            kind: "Patient".into(),
            id: None,
            patient_id: None,
        },
        outcome: Outcome::SUCCESS,
        correlation: None,
        http: None,
        delegation: None,
        metadata: Metadata::new(),
        integrity: None,
    }
}

fn ledger(dir: &std::path::Path, n: u64, signer: Option<CheckpointSigner>) -> std::path::PathBuf {
    let p = dir.join("audit.jsonl");
    let l =
        LedgerSink::open_with(&p, LedgerOptions::new().signer(signer).checkpoint_every(2)).unwrap();
    for i in 0..n {
        l.write(&event(i)).unwrap();
    }
    l.close().unwrap();
    p
}

#[test]
fn verify_exit_codes() {
    let d = tempfile::tempdir().unwrap();
    let p = ledger(d.path(), 5, None);
    let ps = p.to_str().unwrap();
    let (c, out, _) = run(&["verify", ps], None);
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("Result: PASS"));
    let (c, out, _) = run(&["verify", ps, "--format", "json"], None);
    assert_eq!(c, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events_scanned"], 5);

    // Standard input.
    let bytes = fs::read(&p).unwrap();
    assert_eq!(run(&["verify", "-"], Some(&bytes)).0, 0);

    // Tampered: FAIL.
    let text = fs::read_to_string(&p)
        .unwrap()
        .replace("\"READ\"", "\"CREATE\"");
    let bad = d.path().join("bad.jsonl");
    fs::write(&bad, text).unwrap();
    let (c, out, _) = run(&["verify", bad.to_str().unwrap()], None);
    assert_eq!(c, 1);
    assert!(
        out.contains("hash_mismatch") && out.contains("line 1"),
        "{out}"
    );

    // Missing file, directory, garbage, malformed line, empty file, bad args.
    let (c, _, err) = run(&["verify", "/nonexistent/x.jsonl"], None);
    assert_eq!(c, 2);
    assert!(err.contains("cannot open"));
    assert_eq!(run(&["verify", d.path().to_str().unwrap()], None).0, 2);
    // Garbage and malformed lines: the content fails (1), named by line.
    let g = d.path().join("garbage.bin");
    fs::write(&g, [0u8, 159, 146, 150, 255, 10, 1, 2, 3]).unwrap();
    let (c, out, err) = run(&["verify", g.to_str().unwrap()], None);
    assert_eq!(c, 1);
    assert!(err.contains("not JSON objects"), "{err}");
    assert!(out.contains("not valid UTF-8"), "{out}");
    let mut mixed = fs::read(&p).unwrap();
    mixed.extend_from_slice(b"{not json\n");
    mixed.extend_from_slice(&fs::read(&p).unwrap());
    let (c, out, _) = run(&["verify", "-"], Some(&mixed));
    assert_eq!(c, 1);
    assert!(out.contains("malformed_line at line 6"), "{out}");
    let e = d.path().join("empty.jsonl");
    fs::write(&e, "").unwrap();
    let (c, out, _) = run(&["verify", e.to_str().unwrap()], None);
    assert_eq!(c, 1);
    assert!(out.contains("empty_ledger"));
    assert_eq!(run(&["verify"], None).0, 2);
    assert_eq!(run(&["frobnicate"], None).0, 2);
    let (c, out, _) = run(&["verify", "--help"], None);
    assert_eq!(c, 0);
    assert!(out.contains("Examples"));
}

#[test]
fn verify_with_public_key() {
    let d = tempfile::tempdir().unwrap();
    let signer = CheckpointSigner::from_seed([3; 32]);
    let p = ledger(d.path(), 6, Some(signer.clone()));
    let key = d.path().join("ledger.pub");
    fs::write(&key, signer.verifying_key().to_hex() + "\n").unwrap();
    let args = |p: &str| {
        vec![
            "verify".to_owned(),
            p.to_owned(),
            "--public-key".into(),
            key.to_str().unwrap().to_owned(),
        ]
    };
    let a = args(p.to_str().unwrap());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_eq!(run(&a, None).0, 0);
    // Cut the last event: the chain is fine, the checkpoint is not.
    let text = fs::read_to_string(&p).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    fs::write(&p, lines[..5].join("\n") + "\n").unwrap();
    assert_eq!(run(&["verify", p.to_str().unwrap()], None).0, 0);
    let (c, out, _) = run(&a, None);
    assert_eq!(c, 1);
    assert!(out.contains("truncated"), "{out}");
    // An unreadable key is an error.
    fs::write(&key, "nope").unwrap();
    assert_eq!(run(&a, None).0, 2);
}

#[test]
fn validate_exit_codes() {
    let d = tempfile::tempdir().unwrap();
    let p = ledger(d.path(), 3, None);
    let (c, out, _) = run(&["validate", p.to_str().unwrap()], None);
    assert_eq!(c, 0, "{out}");
    let mut v: serde_json::Value =
        serde_json::from_str(fs::read_to_string(&p).unwrap().lines().next().unwrap()).unwrap();
    v["actor"].as_object_mut().unwrap().remove("subject_id");
    let input = format!("{}\n{}\n", fs::read_to_string(&p).unwrap().trim_end(), v);
    let (c, out, _) = run(
        &["validate", "-", "--format", "json"],
        Some(input.as_bytes()),
    );
    assert_eq!(c, 1, "{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["invalid_events"][0]["line"], 4);
    assert_eq!(
        r["invalid_events"][0]["errors"][0]["path"],
        "/actor/subject_id"
    );
    let (c, out, _) = run(&["validate", "-"], Some(input.as_bytes()));
    assert_eq!(c, 1);
    assert!(out.contains("line 4: /actor/subject_id"), "{out}");
    assert_eq!(run(&["validate", "/nonexistent"], None).0, 2);
    // Content that is not events fails the check (1); bad UTF-8 is named
    // with its line.
    let (c, out, _) = run(&["validate", "-"], Some(b"\xff\xfe\x00garbage"));
    assert_eq!(c, 1);
    assert!(out.contains("line 1: (line): not valid UTF-8"), "{out}");
    assert_eq!(run(&["validate", "-", "--schema", "9.9"], Some(b"")).0, 2);
    // No events at all: 1, as for verify and report.
    let (c, _, err) = run(&["validate", "-", "--schema", "1.0"], Some(b""));
    assert_eq!(c, 1);
    assert!(err.contains("holds no events"), "{err}");
}
