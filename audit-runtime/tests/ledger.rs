//! LedgerSink: chaining, resume, torn-tail recovery, checkpoints, threads.

mod common;

use std::fs;
use std::io::Write;
use std::sync::Arc;

use common::event;
use phi_audit_runtime::checkpoint::checkpoint_path;
use phi_audit_runtime::integrity::{canonical_event_json, Canonicalizer};
use phi_audit_runtime::*;

fn verify(path: &std::path::Path, key: Option<CheckpointVerifyingKey>) -> VerifyReport {
    let opts = VerifyOptions::new().public_key(key);
    verify_path(path, &opts).unwrap()
}

fn kinds(r: &VerifyReport) -> Vec<&str> {
    r.failures.iter().map(|f| f.failure_type.as_str()).collect()
}

#[test]
fn writes_a_chain_that_verifies_and_matches_the_value_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let l = LedgerSink::open_with(&p, LedgerOptions::default()).unwrap();
    for i in 0..20 {
        l.write(&event(i)).unwrap();
    }
    assert_eq!(l.events_written(), 20);
    l.close().unwrap();
    assert!(matches!(l.write(&event(99)), Err(SinkError::Closed)));
    let r = verify(&p, None);
    assert!(r.passed(), "{r:?}");
    assert_eq!((r.events_scanned, r.chain_length), (20, 20));

    // Each line: integrity.event_hash equals the typed fast path's hash and
    // the Value path's hash; the first has no prev_event_hash.
    let text = fs::read_to_string(&p).unwrap();
    let mut prev: Option<String> = None;
    let mut c = Canonicalizer::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let integ = &v["integrity"];
        assert_eq!(integ["hash_alg"], "sha256");
        assert_eq!(
            integ.get("prev_event_hash").and_then(|p| p.as_str()),
            prev.as_deref()
        );
        let h = c
            .event_hash(&event(i as u64), prev.as_deref(), HashAlg::Sha256)
            .unwrap();
        assert_eq!(integ["event_hash"], h.as_str());
        assert_eq!(event_hash(&v, prev.as_deref(), HashAlg::Sha256), h);
        let mut a = Vec::new();
        canonical_event_json(&v, &mut a);
        assert_eq!(a, c.event_bytes(&event(i as u64)).unwrap());
        prev = Some(h);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn every_algorithm_and_buffered_policies_verify() {
    for alg in HashAlg::ALL {
        for fsync in [
            FsyncPolicy::Never,
            FsyncPolicy::EveryN(3),
            FsyncPolicy::EveryEvent,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("a.jsonl");
            let opts = LedgerOptions::new()
                .hash_alg(*alg)
                .fsync(fsync)
                .buffer_capacity(700);
            let l = LedgerSink::open_with(&p, opts).unwrap();
            for i in 0..10 {
                l.write(&event(i)).unwrap();
            }
            l.flush().unwrap();
            assert_eq!(l.events_written(), 10);
            drop(l);
            let r = verify(&p, None);
            assert!(r.passed(), "{alg:?} {fsync:?} {:?}", r.failures);
        }
    }
}

#[test]
fn resumes_the_chain_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let l = LedgerSink::open_with(&p, LedgerOptions::default()).unwrap();
    for i in 0..3 {
        l.write(&event(i)).unwrap();
    }
    let head = l.last_event_hash();
    drop(l);
    let l = LedgerSink::open_with(&p, LedgerOptions::default()).unwrap();
    assert_eq!(l.recovery().events, 3);
    assert_eq!(l.recovery().last_event_hash, head);
    assert!(l.recovery().torn_tail.is_none());
    for i in 3..6 {
        l.write(&event(i)).unwrap();
    }
    drop(l);
    let r = verify(&p, None);
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.chain_length, 6);
}

#[test]
fn torn_tail_is_moved_aside_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let l = LedgerSink::open_with(&p, LedgerOptions::default()).unwrap();
    for i in 0..4 {
        l.write(&event(i)).unwrap();
    }
    drop(l);
    let good = fs::read(&p).unwrap();
    let torn = b"{\"schema_version\":\"1.1\",\"event_id\":\"4000";
    fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(torn)
        .unwrap();
    // Before recovery the verifier reports the torn tail.
    let r = verify(&p, None);
    assert_eq!(kinds(&r), ["torn_tail"]);

    let l = LedgerSink::open_with(&p, LedgerOptions::default()).unwrap();
    let rec = l.recovery().clone();
    assert_eq!(rec.events, 4);
    let t = rec.torn_tail.expect("torn tail reported");
    assert_eq!(t.bytes, torn.len() as u64);
    assert_eq!(fs::read(&t.moved_to).unwrap(), torn);
    assert_eq!(fs::read(&p).unwrap(), good);
    l.write(&event(4)).unwrap();
    drop(l);
    let r = verify(&p, None);
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.chain_length, 5);
}

#[test]
fn refuses_to_resume_after_an_unchained_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    fs::write(&p, "{\"a\":1}\n").unwrap();
    let e = LedgerSink::open_with(&p, LedgerOptions::default()).unwrap_err();
    assert!(matches!(e, LedgerError::NotChained { line: 1 }), "{e}");
    assert!(e.to_string().contains("phi-audit verify"));
}

#[test]
fn threads_never_fork_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let opts = LedgerOptions::new().fsync(FsyncPolicy::Never);
    let l = Arc::new(LedgerSink::open_with(&p, opts).unwrap());
    let hs: Vec<_> = (0..8)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    l.write(&event(t * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    l.close().unwrap();
    let r = verify(&p, None);
    assert!(r.passed(), "{:?}", &r.failures[..r.failures.len().min(3)]);
    assert_eq!(r.chain_length, 1600);
}

#[test]
fn replaces_an_existing_integrity_block() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let l = LedgerSink::open_with(&p, LedgerOptions::default()).unwrap();
    let mut e = event(1);
    e.integrity = Some(Integrity {
        event_hash: Some("bogus".into()),
        prev_event_hash: None,
        hash_alg: None,
    });
    l.write(&e).unwrap();
    l.write(&event(2)).unwrap();
    drop(l);
    assert!(verify(&p, None).passed());
}

fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed([42; 32])
}

#[test]
fn checkpoints_detect_a_truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let opts = LedgerOptions::new()
        .signer(Some(signer()))
        .checkpoint_every(5);
    let l = LedgerSink::open_with(&p, opts.clone()).unwrap();
    for i in 0..12 {
        l.write(&event(i)).unwrap();
    }
    l.close().unwrap();
    let cps = fs::read_to_string(checkpoint_path(&p)).unwrap();
    let counts: Vec<u64> = cps
        .lines()
        .map(|l| Checkpoint::parse(l.as_bytes()).unwrap().count)
        .collect();
    assert_eq!(counts, [5, 10, 12]);

    let key = signer().verifying_key();
    let r = verify(&p, Some(key));
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.checkpoints.verified, 3);
    assert_eq!(r.checkpoints.events_after_last_checkpoint, Some(0));

    // Delete the last two lines: the chain alone still passes...
    let text = fs::read_to_string(&p).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    fs::write(&p, lines[..10].join("\n") + "\n").unwrap();
    assert!(verify(&p, None).passed());
    // ...the checkpoints do not.
    let r = verify(&p, Some(key));
    assert_eq!(kinds(&r), ["truncated"]);
    assert_eq!(r.failures[0].expected.as_deref(), Some("12"));
    assert_eq!(r.failures[0].actual.as_deref(), Some("10"));

    // A wrong key fails every checkpoint.
    let other = CheckpointSigner::from_seed([1; 32]).verifying_key();
    let r = verify(&p, Some(other));
    assert!(!r.passed());
    assert!(kinds(&r).iter().all(|k| *k == "checkpoint_bad_signature"));

    // No checkpoint file with a key: reported.
    fs::remove_file(checkpoint_path(&p)).unwrap();
    assert_eq!(kinds(&verify(&p, Some(key))), ["checkpoint_missing"]);
}

#[test]
fn checkpoints_detect_a_replaced_tail_and_continue_after_resume() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let opts = LedgerOptions::new()
        .signer(Some(signer()))
        .checkpoint_every(4);
    let l = LedgerSink::open_with(&p, opts.clone()).unwrap();
    for i in 0..6 {
        l.write(&event(i)).unwrap();
    }
    drop(l);
    let l = LedgerSink::open_with(&p, opts.clone()).unwrap();
    for i in 6..9 {
        l.write(&event(i)).unwrap();
    }
    drop(l);
    let key = signer().verifying_key();
    let r = verify(&p, Some(key));
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.checkpoints.verified, 3, "{:?}", r.checkpoints); // 4, 6 (close), 9 (close)

    // Rewrite events 3..: a new, internally valid chain from event 2.
    let text = fs::read_to_string(&p).unwrap();
    let keep: Vec<&str> = text.lines().take(2).collect();
    fs::write(&p, keep.join("\n") + "\n").unwrap();
    fs::remove_file(checkpoint_path(&p)).unwrap();
    let forged = LedgerSink::open_with(&p, LedgerOptions::default()).unwrap();
    for i in 100..107 {
        forged.write(&event(i)).unwrap();
    }
    drop(forged);
    // Chain passes; restore the genuine checkpoints and they catch it.
    assert!(verify(&p, None).passed());
    let genuine = {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("g.jsonl");
        let l = LedgerSink::open_with(&q, opts.clone()).unwrap();
        for i in 0..9 {
            l.write(&event(i)).unwrap();
        }
        drop(l);
        fs::read(checkpoint_path(&q)).unwrap()
    };
    fs::write(checkpoint_path(&p), genuine).unwrap();
    let r = verify(&p, Some(key));
    assert!(
        kinds(&r).contains(&"checkpoint_mismatch"),
        "{:?}",
        kinds(&r)
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_ledger_reserves_blocks_while_open_and_releases_them_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let l = LedgerSink::open_with(&p, LedgerOptions::default()).unwrap();
    for i in 0..5 {
        l.write(&event(i)).unwrap();
    }
    assert!(fs::metadata(&p).unwrap().len() < 8192);
    assert!(
        common::disk_bytes(&p) >= DEFAULT_PREALLOCATE,
        "reserved ahead"
    );
    l.close().unwrap();
    let len = fs::metadata(&p).unwrap().len();
    assert!(common::disk_bytes(&p) <= len.next_multiple_of(4096) + 4096);
    assert!(verify(&p, None).passed());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lines(p: &std::path::Path) -> Vec<serde_json::Value> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_garbage_last_line_is_set_aside_recorded_and_the_chain_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let l = LedgerSink::open(&p).unwrap();
    for i in 0..5 {
        l.write(&event(i)).unwrap();
    }
    let head = l.last_event_hash().unwrap();
    drop(l);
    let good = fs::read(&p).unwrap();
    // What a crash can leave: a block of zeros, then a newline.
    let mut garbage = vec![0u8; 300];
    garbage.push(b'\n');
    fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(&garbage)
        .unwrap();
    assert_eq!(kinds(&verify(&p, None)), ["malformed_line"]);

    let l = LedgerSink::open(&p).expect("a garbage tail no longer stops the service");
    let rec = l.recovery().clone();
    let d = rec.damaged_tail.clone().expect("damaged tail reported");
    assert_eq!((d.bytes, d.lines, d.first_line), (301, 1, 6));
    assert_eq!(d.sha256, sha256_hex(&garbage));
    assert_eq!(fs::read(&d.moved_to).unwrap(), garbage);
    assert!(d
        .moved_to
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("audit.jsonl.damaged-"));
    assert_eq!(rec.events, 5);
    assert_eq!(rec.last_event_hash.as_deref(), Some(head.as_str()));
    // The ledger records the move, chained to the last good event.
    let text = fs::read(&p).unwrap();
    assert!(text.starts_with(&good));
    let all = lines(&p);
    assert_eq!(all.len(), 6);
    let note = &all[5];
    assert_eq!(note["integrity"]["prev_event_hash"], head.as_str());
    assert_eq!(note["action"]["type"], "UPDATE");
    assert_eq!(note["action"]["name"], "set_aside_damaged_tail");
    assert_eq!(note["resource"]["type"], "AuditLedger");
    assert_eq!(note["service"]["name"], "intake-api");
    assert_eq!(note["metadata"]["damaged_sha256"], d.sha256.as_str());
    assert_eq!(note["metadata"]["damaged_bytes"], 301);
    assert_eq!(note["metadata"]["first_line"], 6);
    assert_eq!(
        note["metadata"]["moved_to"],
        d.moved_to.file_name().unwrap().to_str().unwrap()
    );
    // The record is a valid event of the ledger's schema.
    validate_value(note, None).unwrap();
    assert_eq!(l.events_written(), 6);
    l.write(&event(5)).unwrap();
    drop(l);
    let r = verify(&p, None);
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.chain_length, 7);
    // Reopening finds nothing more to recover.
    let l = LedgerSink::open(&p).unwrap();
    assert!(l.recovery().damaged_tail.is_none() && l.recovery().torn_tail.is_none());
    assert_eq!(l.recovery().events, 7);
}

#[test]
fn several_damaged_lines_and_a_torn_tail_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let l = LedgerSink::open(&p).unwrap();
    for i in 0..3 {
        l.write(&event(i)).unwrap();
    }
    drop(l);
    // Garbage lines, a blank one, an event line without a chain, then an
    // unterminated tail.
    let damaged = b"\xff\xfe\x00garbage\n\n{\"not\":\"chained\"}\n{\"truncated\":".to_vec();
    fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(&damaged)
        .unwrap();
    let l = LedgerSink::open(&p).unwrap();
    let rec = l.recovery().clone();
    let torn = rec.torn_tail.unwrap();
    assert_eq!(fs::read(&torn.moved_to).unwrap(), b"{\"truncated\":");
    let d = rec.damaged_tail.unwrap();
    let complete = &damaged[..damaged.len() - b"{\"truncated\":".len()];
    assert_eq!(fs::read(&d.moved_to).unwrap(), complete);
    assert_eq!((d.lines, d.first_line), (2, 4));
    assert_eq!(d.sha256, sha256_hex(complete));
    l.write(&event(3)).unwrap();
    drop(l);
    let r = verify(&p, None);
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.chain_length, 5);
}

#[test]
fn a_ledger_of_only_garbage_starts_a_new_chain_and_keeps_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let zeros = [vec![0u8; 4096], b"\n".to_vec()].concat();
    fs::write(&p, &zeros).unwrap();
    let l = LedgerSink::open(&p).unwrap();
    let d = l.recovery().damaged_tail.clone().unwrap();
    assert_eq!(fs::read(&d.moved_to).unwrap(), zeros);
    assert_eq!(d.first_line, 1);
    l.write(&event(0)).unwrap();
    drop(l);
    let all = lines(&p);
    assert_eq!(all.len(), 2);
    // No earlier event to take a service from: the sink's own.
    assert_eq!(all[0]["service"]["name"], "phi-audit");
    assert!(all[0]["integrity"].get("prev_event_hash").is_none());
    assert!(verify(&p, None).passed());
}

#[test]
fn a_damaged_tail_over_64_mib_is_left_for_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let l = LedgerSink::open(&p).unwrap();
    l.write(&event(0)).unwrap();
    drop(l);
    let before = fs::metadata(&p).unwrap().len();
    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
    let block = [b'x'; 1 << 20];
    for _ in 0..65 {
        f.write_all(&block).unwrap();
        f.write_all(b"\n").unwrap();
    }
    drop(f);
    let len = fs::metadata(&p).unwrap().len();
    let e = LedgerSink::open(&p).unwrap_err();
    assert!(matches!(e, LedgerError::NotChained { .. }), "{e}");
    // Nothing was moved or cut.
    assert_eq!(fs::metadata(&p).unwrap().len(), len);
    assert!(len > before);
}
