//! Property tests: every single edit of a random ledger is detected; the
//! typed canonical fast path equals the Value path.

mod common;

use common::arb_event;
use phi_audit_runtime::checkpoint::checkpoint_path;
use phi_audit_runtime::integrity::{canonical_event_json, Canonicalizer};
use phi_audit_runtime::*;
use proptest::prelude::*;
use serde_json::Value;

fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed([9; 32])
}

/// Writes `events` to a fresh ledger with checkpoints; returns (lines, checkpoints).
fn make_ledger(events: &[AuditEvent], alg: HashAlg) -> (Vec<String>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.jsonl");
    let opts = LedgerOptions::new()
        .hash_alg(alg)
        .fsync(FsyncPolicy::Never)
        .signer(Some(signer()))
        .checkpoint_every(3);
    let l = LedgerSink::open_with(&p, opts).unwrap();
    for e in events {
        l.write(e).unwrap();
    }
    l.close().unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    let cps = std::fs::read(checkpoint_path(&p)).unwrap();
    (text.lines().map(str::to_owned).collect(), cps)
}

fn verify(lines: &[String], cps: Option<&[u8]>) -> VerifyReport {
    let body = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let opts = VerifyOptions::new().public_key(cps.map(|_| signer().verifying_key()));
    verify_reader(body.as_bytes(), cps, &opts).unwrap()
}

fn leaves(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            leaves(
                v,
                format!("{path}/{}", k.replace('~', "~0").replace('/', "~1")),
                out,
            )
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{path}/{i}"), out)),
        _ => out.push(path),
    }
}

fn mutate(v: &mut Value) {
    *v = match v.take() {
        Value::Null => Value::Bool(false),
        Value::Bool(b) => Value::Bool(!b),
        Value::String(mut s) => {
            s.push('x');
            Value::String(s)
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                (i ^ 1).into()
            } else if let Some(u) = n.as_u64() {
                (u ^ 1).into()
            } else {
                let f = n.as_f64().unwrap();
                (if f == 0.0 { 1.0 } else { -f }).into()
            }
        }
        other => other,
    };
}

#[derive(Debug, Clone)]
enum Edit {
    Field { line: usize, leaf: usize },
    RemoveKey { line: usize, leaf: usize },
    Delete(usize),
    Duplicate { from: usize, to: usize },
    Insert { at: usize },
    Swap(usize, usize),
    Truncate(usize),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(line, leaf)| Edit::Field { line, leaf }),
        (any::<usize>(), any::<usize>()).prop_map(|(line, leaf)| Edit::RemoveKey { line, leaf }),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Edit::Duplicate { from, to }),
        any::<usize>().prop_map(|at| Edit::Insert { at }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap(a, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// Applies the edit; returns whether the chain alone must detect it
/// (deleting or truncating the tail needs checkpoints), and the JSON pointer
/// of a removed key.
fn apply(lines: &mut Vec<String>, edit: &Edit, foreign: &str) -> (bool, Option<String>) {
    let n = lines.len();
    match *edit {
        Edit::Field { line, leaf } | Edit::RemoveKey { line, leaf } => {
            let i = line % n;
            let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
            let mut ls = Vec::new();
            leaves(&v, String::new(), &mut ls);
            let path = &ls[leaf % ls.len()];
            if matches!(edit, Edit::Field { .. }) {
                mutate(v.pointer_mut(path).unwrap());
            } else {
                let (parent, key) = path.rsplit_once('/').unwrap();
                let key = key.replace("~1", "/").replace("~0", "~");
                match v.pointer_mut(parent).unwrap() {
                    Value::Object(m) => {
                        m.remove(&key);
                    }
                    Value::Array(a) => {
                        a.remove(key.parse::<usize>().unwrap());
                    }
                    _ => unreachable!(),
                }
            }
            lines[i] = serde_json::to_string(&v).unwrap();
            (true, Some(path.clone()))
        }
        Edit::Delete(i) => {
            let i = i % n;
            lines.remove(i);
            (i + 1 < n, None)
        }
        Edit::Duplicate { from, to } => {
            let l = lines[from % n].clone();
            lines.insert(to % (n + 1), l);
            (true, None)
        }
        Edit::Insert { at } => {
            lines.insert(at % (n + 1), foreign.to_owned());
            (true, None)
        }
        Edit::Swap(a, b) => {
            let (a, b) = (a % n, b % n);
            let b = if a == b { (b + 1) % n } else { b };
            lines.swap(a, b);
            (true, None)
        }
        Edit::Truncate(k) => {
            lines.truncate(k % n);
            (false, None)
        }
    }
}

/// A valid chained line from another ledger, to insert.
fn foreign(alg: HashAlg) -> &'static str {
    static F: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = F.get_or_init(|| {
        HashAlg::ALL
            .iter()
            .map(|a| make_ledger(&[common::event(77)], *a).0.remove(0))
            .collect()
    });
    let i = HashAlg::ALL.iter().position(|a| *a == alg).unwrap_or(0);
    &all[i]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_single_edit_is_detected(
        events in prop::collection::vec(arb_event(), 2..7),
        alg in prop::sample::select(HashAlg::ALL.to_vec()),
        edit in edit_strategy(),
    ) {
        let (lines, cps) = make_ledger(&events, alg);
        let clean = verify(&lines, Some(&cps));
        prop_assert!(clean.passed(), "{:?}", clean.failures);
        prop_assert!(verify(&lines, None).passed());
        let mut edited = lines.clone();
        let (chain_detects, removed) = apply(&mut edited, &edit, foreign(alg));
        prop_assume!(edited != lines);
        // An absent hash_alg means sha256 (the reference's rule too), so
        // removing `"hash_alg":"sha256"` does not change what the line says.
        prop_assume!(!(alg == HashAlg::Sha256
            && matches!(edit, Edit::RemoveKey { .. })
            && removed.as_deref() == Some("/integrity/hash_alg")));
        let with_key = verify(&edited, Some(&cps));
        prop_assert!(!with_key.passed(), "undetected with checkpoints: {:?}", edit);
        if chain_detects {
            let without = verify(&edited, None);
            prop_assert!(!without.passed(), "undetected by the chain: {:?}", edit);
        }
    }

    #[test]
    fn typed_canonical_equals_value_canonical(event in arb_event()) {
        let mut c = Canonicalizer::new();
        let fast = c.event_bytes(&event).unwrap().to_vec();
        // Through the JSON line, as a verifier sees it.
        let line = event.to_json();
        let v: Value = serde_json::from_str(&line).unwrap();
        let mut slow = Vec::new();
        canonical_event_json(&v, &mut slow);
        prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
    }
}
