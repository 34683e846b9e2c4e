//! `phi-audit review` through the binary: exit codes, formats, hostile
//! values, directories, rules files, and PostgreSQL.

use std::path::Path;
use std::sync::Arc;

use phi_audit_runtime::{
    with_dispatch, ActionType, Actor, Config, Dispatch, EventBuilder, NonBlocking,
};
use serde_json::{json, Value};

mod support;
use support::run;

fn ev(ts: &str, actor: &str, status: &str) -> String {
    let mut v = json!({
        "schema_version": "1.1",
        "event_id": uuid::Uuid::new_v4().to_string(),
        "timestamp": ts,
        "service": {"name": "chart"},
        "actor": {"subject_id": actor, "subject_type": "human"},
        "action": {"type": "READ"},
        "resource": {"type": "Chart"},
        "outcome": {"status": status},
    });
    if status != "SUCCESS" {
        v["outcome"]["error_type"] = json!("RoleDenied");
    }
    v.to_string()
}

/// 11 DENIED for `actor` from 10:00, a minute apart.
fn burst(actor: &str) -> Vec<String> {
    (0..11)
        .map(|i| ev(&format!("2026-03-04T10:{i:02}:00.000Z"), actor, "DENIED"))
        .collect()
}

fn clean() -> Vec<String> {
    (0..30)
        .map(|i| {
            ev(
                &format!("2026-03-04T{:02}:{:02}:00.000Z", 9 + i / 10, i % 60),
                "dr-a",
                "SUCCESS",
            )
        })
        .collect()
}

fn write(dir: &Path, name: &str, lines: &[String]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let clean_f = write(dir.path(), "clean.jsonl", &clean());
    let mut planted = clean();
    planted.extend(burst("dr-x"));
    let planted_f = write(dir.path(), "planted.jsonl", &planted);

    let (c, out, err) = run(&["review", &clean_f], None);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("30 event(s), 0 finding(s)"), "{out}");

    let (c, out, err) = run(&["review", &planted_f], None);
    assert_eq!(c, 3, "{out}{err}");
    assert!(
        out.contains(
            "[denials] dr-x: 11 from 2026-03-04T10:00:00.000Z to 2026-03-04T10:10:00.000Z"
        ),
        "{out}"
    );
    assert!(out.contains("planted.jsonl lines 31, 32, 33"), "{out}");

    // Lines that are not events, no findings: 1 (the review still printed).
    let mut skipped = clean();
    skipped.push("{not json".into());
    let skipped_f = write(dir.path(), "skipped.jsonl", &skipped);
    let (c, out, err) = run(&["review", &skipped_f], None);
    assert_eq!(c, 1, "{out}{err}");
    assert!(err.contains("line 31 skipped"), "{err}");
    assert!(out.contains("0 finding(s)"));
    // Findings win over skipped lines: 3.
    planted.push("garbage".into());
    let both = write(dir.path(), "both.jsonl", &planted);
    assert_eq!(run(&["review", &both], None).0, 3);
    // No events at all: 1.
    let empty = write(dir.path(), "empty.jsonl", &[]);
    assert_eq!(run(&["review", &empty], None).0, 1);
    // Unreadable input, bad rules, bad usage: 2.
    let missing = dir.path().join("missing.jsonl");
    assert_eq!(run(&["review", missing.to_str().unwrap()], None).0, 2);
    assert_eq!(run(&["review"], None).0, 2);
    assert_eq!(run(&["review", &clean_f, "--format", "xml"], None).0, 2);
    assert_eq!(
        run(&["review", &clean_f, "--since", "yesterday"], None).0,
        2
    );
    let (c, _, err) = run(&["review", &clean_f, "--time-zone", "Mars/Olympus"], None);
    assert_eq!(c, 2);
    assert!(err.contains("unknown time zone"), "{err}");
    let bad_rules = dir.path().join("bad.toml");
    std::fs::write(&bad_rules, "[denials]\nthreshhold = 1\n").unwrap();
    let (c, _, err) = run(
        &["review", &clean_f, "--rules", bad_rules.to_str().unwrap()],
        None,
    );
    assert_eq!(c, 2);
    assert!(err.contains("threshhold"), "{err}");
    let (c, _, _) = run(
        &["review", &clean_f, "--rules", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(c, 2);
    // Standard input.
    let (c, out, _) = run(&["review", "-"], Some(planted.join("\n").as_bytes()));
    assert_eq!(c, 3);
    assert!(out.contains("- lines 31"), "{out}");
}

#[test]
fn rules_file_and_print_default_rules() {
    let (c, out, _) = run(&["review", "--print-default-rules"], None);
    assert_eq!(c, 0);
    assert_eq!(out, phi_audit_runtime::review::DEFAULT_RULES_TOML);
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "e.jsonl", &burst("dr-x")[..4]);
    assert_eq!(run(&["review", &f], None).0, 0);
    // The printed defaults with one threshold lowered.
    let rules = dir.path().join("r.toml");
    std::fs::write(&rules, out.replace("threshold = 10\n", "threshold = 3\n")).unwrap();
    let (c, out, _) = run(&["review", &f, "--rules", rules.to_str().unwrap()], None);
    assert_eq!(c, 3, "{out}");
    assert!(out.contains("[denials] dr-x: 4"), "{out}");
    assert!(
        out.contains("more than 3 DENIED outcomes within 1h"),
        "{out}"
    );
    // The time range narrows the review.
    let (c, _, _) = run(
        &[
            "review",
            &f,
            "--rules",
            rules.to_str().unwrap(),
            "--until",
            "2026-03-04T10:03:00Z",
        ],
        None,
    );
    assert_eq!(c, 0);
}

#[test]
fn json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "e.jsonl", &burst("dr-x"));
    let (c, out, _) = run(&["review", &f, "--format", "json"], None);
    assert_eq!(c, 3);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"], 11);
    let finding = &v["findings"][0];
    assert_eq!(finding["rule"], "denials");
    assert_eq!(finding["subject"], "dr-x");
    assert_eq!(finding["count"], 11);
    assert_eq!(finding["first"], "2026-03-04T10:00:00.000Z");
    assert_eq!(finding["last"], "2026-03-04T10:10:00.000Z");
    assert_eq!(finding["evidence"].as_array().unwrap().len(), 11);
    assert_eq!(finding["evidence"][10]["line"], 11);
    assert!(finding["evidence"][0]["event_id"].as_str().unwrap().len() == 36);
    assert_eq!(v["rules"].as_array().unwrap().len(), 7);

    let (c, out, _) = run(&["review", &f, "--format", "csv"], None);
    assert_eq!(c, 3);
    let rows: Vec<&str> = out.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        rows[0],
        "rule,subject,count,first,last,detail,evidence,evidence_omitted"
    );
    assert!(
        rows[1].starts_with("denials,dr-x,11,2026-03-04T10:00:00.000Z,2026-03-04T10:10:00.000Z,"),
        "{}",
        rows[1]
    );
    assert_eq!(rows.len(), 2);
}

#[test]
fn hostile_values_are_escaped_and_never_echoed_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let nasty = "=HYPERLINK(\"x\")\u{1b}]0;pwned\u{7}\n\u{202e}evil,\"q\"";
    let mut lines = burst(nasty);
    lines.push(format!(
        "{{\"secret-in-garbage\u{1b}[2J\": {}",
        "1".repeat(50)
    ));
    lines.push(String::from_utf8_lossy(b"\xff").into_owned());
    let p = dir.path().join("h.jsonl");
    let mut bytes = lines.join("\n").into_bytes();
    bytes.extend_from_slice(b"\n\xff\xfe\n");
    std::fs::write(&p, bytes).unwrap();
    let p = p.to_str().unwrap();
    for format in ["text", "csv", "json"] {
        let (c, out, err) = run(&["review", p, "--format", format], None);
        assert_eq!(c, 3, "{format}: {out}{err}");
        for raw in ['\u{1b}', '\u{7}', '\u{202e}'] {
            assert!(!out.contains(raw), "{format}: raw {raw:?} in {out}");
            assert!(!err.contains(raw), "{format}: raw {raw:?} in {err}");
        }
        assert!(!err.contains("secret-in-garbage"), "{err}");
        assert!(!err.contains("HYPERLINK"), "{err}");
        match format {
            "text" => assert!(
                out.contains("\\u{1b}]0;pwned\\u{7}\\n\\u{202e}evil"),
                "{out}"
            ),
            "csv" => {
                let row = out.split("\r\n").nth(1).unwrap();
                assert!(row.starts_with("denials,\"'=HYPERLINK(\"\"x\"\")"), "{row}");
                assert_eq!(out.matches("\r\n").count(), 2, "a value split a row: {out}");
            }
            _ => {
                let v: Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v["findings"][0]["subject"], nasty);
                assert!(out.contains("\\u001b") && out.contains("\\u202e"));
            }
        }
    }
}

#[test]
fn a_directory_is_read_in_event_order_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let b = burst("dr-x");
    // Named against time order: "a" holds the later half of the burst.
    write(dir.path(), "a.jsonl", &b[6..]);
    write(dir.path(), "b.jsonl", &b[..6]);
    std::fs::write(dir.path().join("a.jsonl.checkpoints"), "not events\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not events\n").unwrap();
    let (c, out, err) = run(
        &["review", dir.path().to_str().unwrap(), "--format", "json"],
        None,
    );
    assert_eq!(c, 3, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"], 11);
    assert_eq!(v["sources"].as_array().unwrap().len(), 2);
    assert!(v["sources"][0].as_str().unwrap().ends_with("b.jsonl"));
    let f = &v["findings"][0];
    assert_eq!(f["count"], 11);
    let ev = f["evidence"].as_array().unwrap();
    assert!(ev[0]["source"].as_str().unwrap().ends_with("b.jsonl"));
    assert!(ev[10]["source"].as_str().unwrap().ends_with("a.jsonl"));
    assert_eq!(ev[10]["line"], 5);
    // An empty directory is unreadable input.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(run(&["review", empty.path().to_str().unwrap()], None).0, 2);
}

#[test]
fn review_a_postgresql_table() {
    let Some(url) = phi_audit_test_env::server(
        phi_audit_test_env::PG_URL,
        "review_a_postgresql_table",
        "PostgreSQL URL",
    ) else {
        return;
    };
    let schema = format!("cli_review_{}", std::process::id());
    let sink = phi_audit_runtime::PostgresSink::connect(
        &url,
        phi_audit_runtime::PostgresOptions::new().schema(schema.clone()),
    )
    .unwrap();
    let nb = Arc::new(NonBlocking::new(sink));
    let d = Dispatch::new(Config::new("review-svc").build().unwrap(), nb.clone());
    with_dispatch(&d, || {
        for i in 0..5 {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}"))
                .actor(Actor::human("dr-ok"))
                .emit();
        }
        for _ in 0..12 {
            EventBuilder::access_denied(ActionType::Read, "Chart", "RoleDenied")
                .actor(Actor::human("dr-pg"))
                .emit();
        }
    });
    d.flush().unwrap();
    let (c, out, err) = run(
        &[
            "review",
            "--postgres",
            &url,
            "--pg-schema",
            &schema,
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(c, 3, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"], 17);
    let f = &v["findings"][0];
    assert_eq!(
        (
            f["rule"].as_str(),
            f["subject"].as_str(),
            f["count"].as_u64()
        ),
        (Some("denials"), Some("dr-pg"), Some(12))
    );
    assert_eq!(f["evidence"][0]["source"], "postgres");
    assert!(f["evidence"][0]["line"].is_null());
    assert_eq!(f["evidence"][0]["event_id"].as_str().unwrap().len(), 36);
    // A URL with ?schema= as the input, like a PHI_AUDIT_SINK spec.
    let spec = format!("{url}?schema={schema}");
    assert_eq!(run(&["review", &spec], None).0, 3);
    // An unreachable database is unreadable input.
    assert_eq!(
        run(
            &[
                "review",
                "--postgres",
                "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"
            ],
            None
        )
        .0,
        2
    );
}
