//! Interop with the reference implementation (bh-audit-logger 2.0.0).
//!
//! Needs `PHI_AUDIT_REF_PYTHON`: a venv python with
//! `bh-audit-logger[jsonschema,cli]==2.0.0`; its `bh-audit` script must sit
//! beside it. Unset: the tests say why and return. Set: they must pass.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use phi_audit_runtime::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

fn reference() -> Option<(PathBuf, PathBuf)> {
    let py = phi_audit_test_env::server(
        phi_audit_test_env::REF_PYTHON,
        "phi-audit-cli --test interop",
        "venv python with bh-audit-logger[cli]==2.0.0",
    )?;
    let py = PathBuf::from(py);
    let bh = py.with_file_name("bh-audit");
    assert!(bh.exists(), "bh-audit not found beside {}", py.display());
    Some((py, bh))
}

fn bh_verify(bh: &Path, ledger: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(bh)
        .args(["--source", "file", "--path"])
        .arg(ledger)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

fn phi_verify(ledger: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_phi-audit"))
        .arg("verify")
        .arg(ledger)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{1,10}",
        "[\\x00-\\x1f\"\\\\\u{7f}\u{e9}\u{2028}\u{1F600}\u{4e2d}a-z]{1,10}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
    ]
}

fn meta() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(MetaValue::Float),
        prop::sample::select(vec![
            1e16,
            1e-5,
            1.0,
            0.1,
            -0.0,
            123456789012345.0,
            1e15,
            1e-4,
            5e-324,
            1e22
        ])
        .prop_map(MetaValue::Float),
        any::<i64>().prop_map(MetaValue::Int),
        any::<u64>().prop_map(|u| MetaValue::UInt(u | (1 << 63))),
        any::<bool>().prop_map(MetaValue::Bool),
        Just(MetaValue::Null),
        text().prop_map(|s| MetaValue::Str(s.into())),
    ]
}

fn random_events(n: usize) -> Vec<AuditEvent> {
    let strat = (
        any::<u128>(),
        text(),
        prop::collection::vec((text(), meta()), 0..8),
    );
    let mut runner = TestRunner::deterministic();
    (0..n)
        .map(|i| {
            let (id, who, m) = strat.new_tree(&mut runner).unwrap().current();
            let mut metadata = Metadata::new();
            for (k, v) in m {
                metadata.insert_value(k.into(), v);
            }
            AuditEvent {
                schema_version: SchemaVersion::V1_1,
                event_id: uuid::Uuid::from_u128(id),
                timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + i as i64),
                service: Service {
                    name: "svc".into(),
                    environment: None,
                    version: None,
                },
                actor: Actor::human(who).roles(["r1", "r2"]),
                action: Action {
                    kind: ActionType::Read,
                    name: None,
                    phi_touched: Some(true),
                    data_classification: None,
                },
                resource: Resource {
                    kind: "Patient".into(),
                    id: Some("p-1".into()),
                    patient_id: None,
                },
                outcome: Outcome::SUCCESS,
                correlation: None,
                http: None,
                delegation: None,
                metadata,
                integrity: None,
            }
        })
        .collect()
}

/// Changes one value inside line `n` (0-based) without breaking its JSON.
fn tamper(path: &Path, n: usize) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut v: serde_json::Value = serde_json::from_str(&lines[n]).unwrap();
    v["resource"]["type"] = "Tampered".into();
    lines[n] = serde_json::to_string(&v).unwrap();
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn our_ledger_verifies_with_the_reference_pass_and_fail() {
    let Some((_py, bh)) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    for alg in HashAlg::ALL {
        let p = dir.path().join(format!("ours-{alg}.jsonl"));
        let opts = LedgerOptions::new()
            .hash_alg(*alg)
            .fsync(FsyncPolicy::Never);
        let l = LedgerSink::open_with(&p, opts).unwrap();
        for e in random_events(300) {
            l.write(&e).unwrap();
        }
        l.close().unwrap();
        let (code, report) = bh_verify(&bh, &p);
        assert_eq!(code, 0, "{alg}: {report:#}");
        assert_eq!(report["result"], "PASS");
        assert_eq!(report["chain_length"], 300);
        // Same report fields, same numbers.
        let (code2, ours) = phi_verify(&p);
        assert_eq!(code2, 0);
        for k in [
            "events_scanned",
            "time_range",
            "chain_length",
            "chain_gaps",
            "hash_mismatches",
            "unchained_events",
            "result",
        ] {
            assert_eq!(ours[k], report[k], "{k}");
        }
        tamper(&p, 150);
        let (code, report) = bh_verify(&bh, &p);
        assert_eq!(code, 1, "{report:#}");
        assert_eq!(report["hash_mismatches"], 1);
        let (code, ours) = phi_verify(&p);
        assert_eq!(code, 1);
        assert_eq!(ours["failures"][0]["line"], 151);
        assert_eq!(ours["failures"][0]["failure_type"], "hash_mismatch");
    }
}

const PY_WRITER: &str = r#"
import sys, math
from bh_audit_logger import LedgerSink
path, alg = sys.argv[1], sys.argv[2]
floats = [1e16, 1e-05, 1.0, 0.1, -0.0, 123456789012345.0, 5e-324, 1.7976931348623157e308, 2.5e-7]
texts = ["plain", "é中😀", "ctl\x00\x01\x1f\x7f", "q\"b\\n\n\t\b\f", "\u2028"]
with LedgerSink(path, algorithm=alg) as sink:
    for i in range(120):
        sink.emit({
            "schema_version": "1.1",
            "event_id": "00000000-0000-4000-8000-%012d" % i,
            "timestamp": "2026-01-01T00:00:%02d.000Z" % (i % 60),
            "service": {"name": "py-svc"},
            "actor": {"subject_id": texts[i % len(texts)], "subject_type": "human"},
            "action": {"type": "READ"},
            "resource": {"type": "Patient"},
            "outcome": {"status": "SUCCESS"},
            "metadata": {"f": floats[i % len(floats)], "g": float(i) / 3, "n": i * 10**15, "big": 2**64 - 1 - i, "neg": -(2**63) + i, "s": texts[(i + 1) % len(texts)]},
        })
"#;

#[test]
fn reference_ledger_verifies_with_ours_pass_and_fail() {
    let Some((py, bh)) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    for alg in ["sha256", "sha384", "sha512"] {
        let p = dir.path().join(format!("ref-{alg}.jsonl"));
        let st = Command::new(&py)
            .args(["-c", PY_WRITER])
            .arg(&p)
            .arg(alg)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(bh_verify(&bh, &p).0, 0);
        let (code, ours) = phi_verify(&p);
        assert_eq!(code, 0, "{ours:#}");
        assert_eq!(ours["chain_length"], 120);
        tamper(&p, 3);
        let (code, ours) = phi_verify(&p);
        assert_eq!(code, 1, "{ours:#}");
        assert_eq!(bh_verify(&bh, &p).0, 1);
    }
}
