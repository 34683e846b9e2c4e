//! Fuzzing by proptest: the JSONL reader, the verifier and ledger recovery
//! never panic on arbitrary bytes.

mod common;

use phi_audit_runtime::verify::{JsonLines, VerifyOptions};
use phi_audit_runtime::*;
use proptest::prelude::*;

fn key() -> CheckpointVerifyingKey {
    CheckpointSigner::from_seed([5; 32]).verifying_key()
}

fn valid_ledger() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.jsonl");
    let l = LedgerSink::open_with(&p, LedgerOptions::new().fsync(FsyncPolicy::Never)).unwrap();
    for i in 0..4 {
        l.write(&common::event(i)).unwrap();
    }
    l.close().unwrap();
    std::fs::read(&p).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn verifier_never_panics_on_bytes(
        ledger in prop::collection::vec(any::<u8>(), 0..600),
        cps in prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        with_key in any::<bool>(),
    ) {
        let opts = VerifyOptions::new().public_key(with_key.then(key));
        let r = verify_reader(&ledger[..], cps.as_deref(), &opts).unwrap();
        prop_assert_eq!(r.passed(), false);
        let mut lines = JsonLines::with_max(&ledger[..], 64);
        let mut n = 0;
        while let Some(l) = lines.next_line().unwrap() {
            prop_assert!(l.bytes.len() <= 64);
            n += 1;
        }
        prop_assert_eq!(n, ledger.split(|&b| b == b'\n').count() - usize::from(ledger.last().is_none_or(|&b| b == b'\n')));
    }

    #[test]
    fn verifier_never_panics_on_corrupted_ledgers(
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut bytes = valid_ledger();
        for (i, b) in flips {
            let i = i % bytes.len();
            bytes[i] = b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let opts = VerifyOptions::default();
        let _ = verify_reader(&bytes[..], None::<&[u8]>, &opts).unwrap();
        // Opening a ledger on that file never panics either.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.jsonl");
        std::fs::write(&p, &bytes).unwrap();
        let _ = LedgerSink::open_with(&p, LedgerOptions::default());
    }
}
