//! Differential tests: `fast_verify` (parallel, canonical fast path) gives
//! exactly the report of `verify::verify_reader` (the oracle) on damaged,
//! reordered, truncated, foreign-algorithm and mixed ledgers, canonical and
//! non-canonical lines, with chunk boundaries everywhere.

use phi_audit_runtime::fast_verify::verify_read_with;
use phi_audit_runtime::integrity::{canonical_json, event_hash};
use phi_audit_runtime::verify::{verify_reader, VerifyOptions, VerifyReport};
use phi_audit_runtime::{CheckpointSigner, HashAlg};
use proptest::prelude::*;
use serde_json::{json, Value};

/// How an event line is written.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// Canonical: what LedgerSink writes.
    Canonical,
    /// serde_json's compact form (floats differ from Python's).
    Serde,
    /// `integrity` first (keys out of order).
    IntegrityFirst,
    /// A space after `{`.
    Spaced,
}

#[derive(Debug, Clone)]
struct EventSpec {
    n: i64,
    f: Option<f64>,
    s: String,
    ts_ok: bool,
    alg: u8,
    nested: bool,
    form: Form,
}

fn event_spec() -> impl Strategy<Value = EventSpec> {
    (
        any::<i64>(),
        prop::option::of(prop_oneof![
            Just(1e16),
            Just(1e-5),
            Just(0.5),
            Just(-0.0),
            Just(1.0),
            Just(123456.789),
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
        ]),
        "[a-z\"\\\\\n\u{1}\u{7f}é😀 ]{0,12}",
        prop::bool::weighted(0.9),
        prop::sample::select(vec![0u8, 0, 0, 0, 1, 2, 3, 4]),
        any::<bool>(),
        prop::sample::select(vec![
            Form::Canonical,
            Form::Canonical,
            Form::Canonical,
            Form::Serde,
            Form::IntegrityFirst,
            Form::Spaced,
        ]),
    )
        .prop_map(|(n, f, s, ts_ok, alg, nested, form)| EventSpec {
            n,
            f,
            s,
            ts_ok,
            alg,
            nested,
            form,
        })
}

fn alg_of(code: u8) -> (Option<&'static str>, HashAlg) {
    match code {
        1 => (Some("sha384"), HashAlg::Sha384),
        2 => (Some("sha512"), HashAlg::Sha512),
        3 => (None, HashAlg::Sha256),
        4 => (Some("md5"), HashAlg::Sha256),
        _ => (Some("sha256"), HashAlg::Sha256),
    }
}

/// Writes the ledger's lines and returns them with the event hashes.
fn ledger(specs: &[EventSpec]) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut prev: Option<String> = None;
    let mut lines = Vec::new();
    let mut hashes = Vec::new();
    for (i, sp) in specs.iter().enumerate() {
        let mut v = json!({
            "event_id": format!("e-{i}"),
            "n": sp.n,
            "s": sp.s,
            "timestamp": if sp.ts_ok { format!("2026-01-0{}T00:00:00.{:03}Z", 1 + i % 9, i % 1000) } else { "yesterday".into() },
            "action": {"type": "READ", "phi_touched": true},
        });
        if let Some(f) = sp.f {
            v["f"] = json!(f);
        }
        if sp.nested {
            v["metadata"] = json!({"list": [1, "two", null, [], {}], "z": {"y": false}});
        }
        let (name, alg) = alg_of(sp.alg);
        let h = event_hash(&v, prev.as_deref(), alg);
        let mut integ = serde_json::Map::new();
        integ.insert("event_hash".into(), json!(h));
        if let Some(p) = &prev {
            integ.insert("prev_event_hash".into(), json!(p));
        }
        if let Some(n) = name {
            integ.insert("hash_alg".into(), json!(n));
        }
        v["integrity"] = Value::Object(integ.clone());
        let line = match sp.form {
            Form::Canonical => {
                let mut out = Vec::new();
                canonical_json(&v, &mut out);
                out
            }
            Form::Serde => serde_json::to_vec(&v).unwrap(),
            Form::IntegrityFirst => {
                let mut rest = v.clone();
                rest.as_object_mut().unwrap().remove("integrity");
                let rest = serde_json::to_string(&rest).unwrap();
                format!(
                    "{{\"integrity\":{},{}",
                    serde_json::to_string(&integ).unwrap(),
                    &rest[1..]
                )
                .into_bytes()
            }
            Form::Spaced => {
                let mut out = b"{ ".to_vec();
                out.extend_from_slice(&serde_json::to_vec(&v).unwrap()[1..]);
                out
            }
        };
        lines.push(line);
        prev = Some(h.clone());
        hashes.push(h);
    }
    (lines, hashes)
}

#[derive(Debug, Clone)]
enum Damage {
    FlipByte(usize, u8),
    DeleteLine(usize),
    SwapLines(usize, usize),
    DuplicateLine(usize),
    InsertBlank(usize, &'static str),
    InsertGarbage(usize, &'static str),
    StripIntegrity(usize),
    IntegrityNotObject(usize),
    Crlf(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Damage::FlipByte(a, b)),
        any::<usize>().prop_map(Damage::DeleteLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Damage::SwapLines(a, b)),
        any::<usize>().prop_map(Damage::DuplicateLine),
        (
            any::<usize>(),
            prop::sample::select(vec!["", "   ", "\t", "\r"])
        )
            .prop_map(|(a, s)| Damage::InsertBlank(a, s)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "not json",
                "[1,2]",
                "{\"a\":1",
                "\u{0}\u{0}\u{0}",
                "{\"integrity\":{\"event_hash\":5,\"prev_event_hash\":7}}",
                "{\"a\":\"\\ud800\"}",
                "{\"a\":1e999}",
                "{\"a\":1,\"a\":2,\"integrity\":null}",
                "{\"x\":12345678901234567890123}",
                // Raw control bytes inside strings (never canonical, never
                // JSON) and their escaped forms (canonical).
                "{\"a\":\"x\u{1}y\",\"integrity\":null}",
                "{\"a\":\"0123456\t89abcdef\"}",
                "{\"a\":\"x\\u0001y\\n\\\"\",\"integrity\":null}",
            ])
        )
            .prop_map(|(a, s)| Damage::InsertGarbage(a, s)),
        any::<usize>().prop_map(Damage::StripIntegrity),
        any::<usize>().prop_map(Damage::IntegrityNotObject),
        any::<usize>().prop_map(Damage::Crlf),
    ]
}

fn apply(lines: &mut Vec<Vec<u8>>, d: &Damage) {
    if lines.is_empty() {
        return;
    }
    let n = lines.len();
    match *d {
        Damage::FlipByte(at, b) => {
            let l = &mut lines[at % n];
            if !l.is_empty() {
                let i = (at / n) % l.len();
                l[i] = b;
            }
        }
        Damage::DeleteLine(at) => {
            lines.remove(at % n);
        }
        Damage::SwapLines(a, b) => lines.swap(a % n, b % n),
        Damage::DuplicateLine(a) => {
            let l = lines[a % n].clone();
            lines.insert(a % n, l);
        }
        Damage::InsertBlank(a, s) => lines.insert(a % (n + 1), s.as_bytes().to_vec()),
        Damage::InsertGarbage(a, s) => lines.insert(a % (n + 1), s.as_bytes().to_vec()),
        Damage::StripIntegrity(a) => {
            if let Ok(mut v) = serde_json::from_slice::<Value>(&lines[a % n]) {
                if let Some(o) = v.as_object_mut() {
                    o.remove("integrity");
                }
                let mut out = Vec::new();
                canonical_json(&v, &mut out);
                lines[a % n] = out;
            }
        }
        Damage::IntegrityNotObject(a) => {
            if let Ok(mut v) = serde_json::from_slice::<Value>(&lines[a % n]) {
                if let Some(o) = v.as_object_mut() {
                    o.insert("integrity".into(), json!("x"));
                }
                lines[a % n] = serde_json::to_vec(&v).unwrap();
            }
        }
        Damage::Crlf(a) => lines[a % n].push(b'\r'),
    }
}

fn join(lines: &[Vec<u8>], cut_tail: Option<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    if let Some(c) = cut_tail {
        let keep = out.len().saturating_sub(c % 200);
        out.truncate(keep);
    }
    out
}

fn both(
    data: &[u8],
    cps: Option<&[u8]>,
    opts: &VerifyOptions,
    threads: usize,
    block: usize,
) -> (VerifyReport, VerifyReport) {
    let oracle = verify_reader(data, cps, opts).unwrap();
    let fast = verify_read_with(data, cps, opts, None, threads, block).unwrap();
    (oracle, fast)
}

fn check_all_splits(data: &[u8], cps: Option<&[u8]>, opts: &VerifyOptions, blocks: &[usize]) {
    for &threads in &[1usize, 2, 3] {
        for &block in blocks {
            let (oracle, fast) = both(data, cps, opts, threads, block);
            assert_eq!(
                fast,
                oracle,
                "threads {threads}, block {block}, input:\n{}",
                String::from_utf8_lossy(data)
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn fast_verify_matches_the_oracle(
        specs in prop::collection::vec(event_spec(), 0..12),
        damages in prop::collection::vec(damage(), 0..3),
        cut_tail in prop::option::weighted(0.15, any::<usize>()),
        use_anchor in prop::option::weighted(0.2, any::<bool>()),
        checkpoints in prop::option::weighted(0.3, (1u64..4, any::<bool>())),
        block in 1usize..400,
        max_failures in prop::sample::select(vec![1000usize, 2]),
    ) {
        let (mut lines, hashes) = ledger(&specs);
        // Anchor: the first event's real predecessor (drop it), or a wrong one.
        let anchor = match use_anchor {
            Some(true) if lines.len() > 1 => {
                lines.remove(0);
                Some(hashes[0].clone())
            }
            Some(_) => Some("ab".repeat(32)),
            None => None,
        };
        let signer = CheckpointSigner::from_seed([7; 32]);
        let cps = checkpoints.map(|(every, garbage)| {
            let mut out = Vec::new();
            for (i, h) in hashes.iter().enumerate() {
                if (i as u64 + 1) % every == 0 {
                    out.extend_from_slice(&signer.sign(i as u64 + 1, h, HashAlg::Sha256, "2026-01-01T00:00:00.000Z").to_line());
                }
            }
            if garbage {
                out.extend_from_slice(b"garbage\n");
            }
            out
        });
        for d in &damages {
            apply(&mut lines, d);
        }
        let data = join(&lines, cut_tail);
        let opts = VerifyOptions::new()
            .anchor(anchor)
            .public_key(checkpoints.map(|_| signer.verifying_key()))
            .max_failures(max_failures);
        check_all_splits(&data, cps.as_deref(), &opts, &[block, 1 << 20]);
    }
}

#[test]
fn clean_canonical_ledger_passes_and_matches() {
    let specs: Vec<EventSpec> = (0..500)
        .map(|i| EventSpec {
            n: i,
            f: (i % 7 == 0).then_some(i as f64 * 1.5e10),
            s: format!("s{i} é\n"),
            ts_ok: true,
            alg: 0,
            nested: i % 3 == 0,
            form: Form::Canonical,
        })
        .collect();
    let (lines, _) = ledger(&specs);
    let data = join(&lines, None);
    let opts = VerifyOptions::default();
    let (oracle, fast) = both(&data, None, &opts, 2, 4096);
    assert!(oracle.passed());
    assert_eq!(fast, oracle);
}

#[test]
fn a_missing_checkpoint_file_and_no_events_match() {
    let signer = CheckpointSigner::from_seed([1; 32]);
    let opts = VerifyOptions::new().public_key(Some(signer.verifying_key()));
    for data in [&b""[..], b"\n\n", b"{}\n"] {
        let oracle = verify_reader(data, None::<&[u8]>, &opts).unwrap();
        let fast = verify_read_with(data, None::<&[u8]>, &opts, None, 2, 3).unwrap();
        assert_eq!(fast, oracle);
    }
}

/// Every line LedgerSink writes is already canonical (the line is the hashed
/// text plus the integrity block at its sorted place), so the verifier's
/// fast path takes it; the fast verifier and the oracle agree on it.
#[test]
fn ledger_sink_writes_canonical_lines() {
    use phi_audit_runtime::sink::{FsyncPolicy, LedgerOptions, LedgerSink};
    use phi_audit_runtime::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink =
        LedgerSink::open_with(&path, LedgerOptions::new().fsync(FsyncPolicy::Never)).unwrap();
    for i in 0..200u64 {
        let mut metadata = Metadata::new();
        metadata.insert("n", i as i64);
        metadata.insert("ratio", i as f64 * 1e15 + 0.5);
        metadata.insert("note", "é \"quoted\" \u{1} tab\t");
        let event = AuditEvent {
            schema_version: SchemaVersion::V1_1,
            event_id: uuid::Uuid::from_u128(u128::from(i) + 1),
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + i as i64),
            service: Service {
                name: "svc".into(),
                environment: Some("prod".into()),
                version: None,
            },
            actor: Actor::human(format!("u-{i}")),
            action: Action {
                kind: ActionType::Read,
                name: Some("read".into()),
                phi_touched: Some(true),
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
            metadata: if i % 3 == 0 {
                Metadata::new()
            } else {
                metadata
            },
            integrity: None,
        };
        sink.write(&event).unwrap();
    }
    sink.close().unwrap();
    let data = std::fs::read(&path).unwrap();
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).unwrap();
        let mut out = Vec::new();
        canonical_json(&v, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(line),
            "a LedgerSink line is not canonical"
        );
    }
    let opts = VerifyOptions::default();
    let (oracle, fast) = both(&data, None, &opts, 2, 1 << 16);
    assert!(oracle.passed(), "{oracle:?}");
    assert_eq!(fast, oracle);
}
