//! Rotated ledgers: `LedgerSink` rotation, `phi-audit verify DIR` over the
//! sequence (every single-file deletion, swap and truncation detected), and
//! `phi-audit prune`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use phi_audit_runtime::settings::SinkKind;
use phi_audit_runtime::sink::{ledger_sequence, Rotation, RotationNames};
use phi_audit_runtime::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_phi-audit"))
        .args(args)
        .output()
        .unwrap();
    let s = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        s(out.stdout),
        s(out.stderr),
    )
}

const DAY: i64 = 86_400_000;

fn event(i: u64, millis: i64) -> AuditEvent {
    AuditEvent {
        schema_version: SchemaVersion::V1_1,
        event_id: uuid::Uuid::from_u128(0x4000_0000_0000_4000_8000_0000_0000_0000 | u128::from(i)),
        timestamp: Timestamp::from_unix_millis(millis),
        service: Service {
            name: "svc".into(),
            environment: None,
            version: None,
        },
        actor: Actor::human(format!("u-{i}")),
        action: Action {
            kind: ActionType::Read,
            name: None,
            phi_touched: None,
            data_classification: None,
        },
        resource: Resource {
            kind: "Patient".into(),
            id: Some(format!("p-{i}").into()),
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

fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed([9; 32])
}

/// Writes `times.len()` events to a rotating ledger in `dir`; returns its path.
fn write(dir: &Path, rotation: Rotation, times: &[i64], first: u64) -> PathBuf {
    let p = dir.join("audit.jsonl");
    let l = LedgerSink::open_with(
        &p,
        LedgerOptions::new()
            .signer(Some(signer()))
            .checkpoint_every(4)
            .rotation(Some(rotation))
            .fsync(FsyncPolicy::Never),
    )
    .unwrap();
    for (k, &t) in times.iter().enumerate() {
        l.write(&event(first + k as u64, t)).unwrap();
    }
    l.close().unwrap();
    p
}

fn sized() -> Rotation {
    Rotation {
        max_bytes: Some(2000),
        ..Rotation::default()
    }
}

fn key_file(dir: &Path) -> (PathBuf, PathBuf) {
    let pk = dir.join("pub.key");
    fs::write(&pk, signer().verifying_key().to_hex()).unwrap();
    let sk = dir.join("sign.key");
    fs::write(&sk, "09".repeat(32)).unwrap();
    (pk, sk)
}

fn verify_dir(dir: &Path, pk: &Path) -> (i32, String) {
    let (c, out, err) = run(&[
        "verify",
        dir.to_str().unwrap(),
        "--public-key",
        pk.to_str().unwrap(),
    ]);
    (c, format!("{out}{err}"))
}

fn times(n: usize, start: i64) -> Vec<i64> {
    (0..n as i64).map(|i| start + i * 1000).collect()
}

#[test]
fn a_rotated_ledger_verifies_as_one_chain_and_every_damage_to_a_file_is_found() {
    let d = tempfile::tempdir().unwrap();
    let (pk, _) = key_file(d.path());
    let ledger_dir = d.path().join("ledger");
    fs::create_dir(&ledger_dir).unwrap();
    let base = write(&ledger_dir, sized(), &times(40, 1_780_000_000_000), 0);
    // Reopening continues the chain (also across a fresh active file).
    write(&ledger_dir, sized(), &times(10, 1_780_000_100_000), 40);
    let files = ledger_sequence(&base).unwrap();
    assert!(files.len() >= 4, "{files:?}");
    assert_eq!(files.last().unwrap(), &base);
    let (c, out) = verify_dir(&ledger_dir, &pk);
    assert_eq!(c, 0, "{out}");
    let (c, out, _) = run(&["verify", ledger_dir.to_str().unwrap(), "--format", "json"]);
    assert_eq!(c, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events_scanned"], 50);
    assert_eq!(
        v["files"].as_array().unwrap().len(),
        ledger_sequence(&base).unwrap().len()
    );
    // The files named one by one, in any order: the same.
    let mut names: Vec<String> = files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    names.reverse();
    let mut args = vec!["verify"];
    args.extend(names.iter().map(String::as_str));
    args.extend(["--public-key", pk.to_str().unwrap()]);
    let (c, out, err) = run(&args);
    assert_eq!(c, 0, "{out}{err}");

    let originals: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let restore = || {
        for (f, b) in files.iter().zip(&originals) {
            fs::write(f, b).unwrap();
        }
    };
    // Every single-file deletion (the last one caught by the checkpoints).
    for f in &files {
        fs::remove_file(f).unwrap();
        let (c, out) = verify_dir(&ledger_dir, &pk);
        assert_eq!(c, 1, "deleting {f:?} went unnoticed: {out}");
        restore();
    }
    // Every swap of two files.
    for i in 0..files.len() {
        for j in i + 1..files.len() {
            fs::write(&files[i], &originals[j]).unwrap();
            fs::write(&files[j], &originals[i]).unwrap();
            let (c, out) = verify_dir(&ledger_dir, &pk);
            assert_eq!(c, 1, "swapping {i} and {j} went unnoticed: {out}");
            restore();
        }
    }
    // Every truncation: the last line cut off whole, or cut in the middle.
    for (f, orig) in files.iter().zip(&originals) {
        let text = &orig[..orig.len() - 1];
        let last_nl = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for cut in [last_nl, last_nl + (orig.len() - last_nl) / 2] {
            fs::write(f, &orig[..cut]).unwrap();
            let (c, out) = verify_dir(&ledger_dir, &pk);
            assert_eq!(c, 1, "truncating {f:?} at {cut} went unnoticed: {out}");
        }
        restore();
    }
    // A middle file replaced by one from another chain of the same shape.
    let other_dir = d.path().join("other");
    fs::create_dir(&other_dir).unwrap();
    let other = write(&other_dir, sized(), &times(40, 1_780_000_000_000), 1000);
    let other_files = ledger_sequence(&other).unwrap();
    fs::write(&files[1], fs::read(&other_files[1]).unwrap()).unwrap();
    let (c, out) = verify_dir(&ledger_dir, &pk);
    assert_eq!(c, 1, "a replaced file went unnoticed: {out}");
    restore();
    assert_eq!(verify_dir(&ledger_dir, &pk).0, 0);
}

#[test]
fn daily_rotation_writes_dated_files_in_chain_order() {
    let d = tempfile::tempdir().unwrap();
    let (pk, _) = key_file(d.path());
    let day0 = 1_780_012_800_000 - 1_780_012_800_000 % DAY;
    let mut ts = Vec::new();
    for day in 0..3 {
        for k in 0..5 {
            ts.push(day0 + day * DAY + k * 60_000);
        }
    }
    let rotation = Rotation {
        daily: true,
        names: RotationNames::Dated,
        ..Rotation::default()
    };
    let base = write(d.path(), rotation, &ts, 0);
    let files = ledger_sequence(&base).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let day = |n: i64| Timestamp::from_unix_millis(day0 + n * DAY).to_string()[..10].to_owned();
    assert_eq!(
        names,
        vec![
            format!("audit.jsonl.{}.1", day(0)),
            format!("audit.jsonl.{}.1", day(1)),
            "audit.jsonl".to_owned(),
        ]
    );
    assert_eq!(fs::read_to_string(&files[0]).unwrap().lines().count(), 5);
    let (c, out) = verify_dir(d.path(), &pk);
    assert_eq!(c, 0, "{out}");
    // The spec form gives the same rotation.
    let spec: SinkSpec = "ledger:/tmp/x/audit.jsonl?rotate=100MB,daily&names=dated"
        .parse()
        .unwrap();
    let SinkKind::Ledger(l) = spec.kind else {
        panic!("not a ledger spec")
    };
    assert_eq!(
        l.rotation,
        Some(Rotation {
            max_bytes: Some(100_000_000),
            daily: true,
            names: RotationNames::Dated,
        })
    );
    assert!("ledger:/tmp/x/a.jsonl?names=dated"
        .parse::<SinkSpec>()
        .is_err());
    assert!("ledger:/tmp/x/a.jsonl?rotate=weekly"
        .parse::<SinkSpec>()
        .is_err());
}

#[test]
fn prune_removes_old_files_and_the_rest_verifies_from_the_signed_anchor() {
    let d = tempfile::tempdir().unwrap();
    let (pk, sk) = key_file(d.path());
    let dir = d.path().join("ledger");
    fs::create_dir(&dir).unwrap();
    let now = Timestamp::now().unix_millis();
    let eight_years = 8 * 365 * DAY;
    // Old events (eight years ago), then recent ones.
    let mut ts = times(30, now - eight_years);
    ts.extend(times(30, now - DAY));
    let base = write(&dir, sized(), &ts, 0);
    let before = ledger_sequence(&base).unwrap();
    let recent_day = Timestamp::from_unix_millis(now - DAY).to_string()[..10].to_owned();
    let holds_recent: Vec<bool> = before
        .iter()
        .map(|f| fs::read_to_string(f).unwrap().contains(&recent_day))
        .collect();
    assert_eq!(verify_dir(&dir, &pk).0, 0);
    let dir_s = dir.to_str().unwrap();
    let sk_s = sk.to_str().unwrap();

    // Under six years: refused (usage), nothing removed.
    let (c, _, err) = run(&["prune", "--older-than", "5y", dir_s, "--signing-key", sk_s]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("six years"), "{err}");
    // Without a key: refused.
    assert_eq!(run(&["prune", "--older-than", "6y", dir_s]).0, 2);
    // Dry run: nothing removed.
    let (c, out, _) = run(&["prune", "--older-than", "6y", dir_s, "--dry-run"]);
    assert_eq!(c, 0);
    assert!(out.contains("would remove"), "{out}");
    assert_eq!(ledger_sequence(&base).unwrap(), before);

    let (c, out, err) = run(&["prune", "--older-than", "6y", dir_s, "--signing-key", sk_s]);
    assert_eq!(c, 0, "{out}{err}");
    let after = ledger_sequence(&base).unwrap();
    assert!(after.len() < before.len(), "nothing was pruned: {out}");
    // Only files whose events are all old were removed.
    for (f, recent) in before.iter().zip(&holds_recent) {
        if !after.contains(f) {
            assert!(!recent, "{f:?} held recent events");
        }
    }
    // The rest verifies without --anchor, checkpoints included.
    let (c, out) = verify_dir(&dir, &pk);
    assert_eq!(c, 0, "{out}");
    // A tampered anchor is refused.
    let anchor = fast_verify::anchor_path(&base);
    let good = fs::read(&anchor).unwrap();
    let bad = String::from_utf8(good.clone())
        .unwrap()
        .replacen("\"count\":", "\"count\":1", 1);
    fs::write(&anchor, bad).unwrap();
    assert_eq!(verify_dir(&dir, &pk).0, 1);
    fs::write(&anchor, &good).unwrap();
    // Without the anchor the remainder is a slice with a gap at its start.
    fs::remove_file(&anchor).unwrap();
    assert_eq!(verify_dir(&dir, &pk).0, 1);
    fs::write(&anchor, &good).unwrap();
    // Nothing more to prune; --force allows a short period (all but the
    // active file then go).
    let (c, out, _) = run(&["prune", "--older-than", "6y", dir_s, "--signing-key", sk_s]);
    assert_eq!(c, 0);
    assert!(out.contains("nothing to prune"), "{out}");
    let (c, out, err) = run(&[
        "prune",
        "--older-than",
        "1d",
        dir_s,
        "--signing-key",
        sk_s,
        "--force",
    ]);
    assert_eq!(c, 0, "{out}{err}");
    let (c, out) = verify_dir(&dir, &pk);
    assert_eq!(c, 0, "{out}");
}
