//! Speed of `phi-audit review`'s engine over a ledger, next to today's
//! streaming report aggregate (`report --query failed-logins`, which parses
//! whole events) and the verifier, on the same file in the same run.
//!
//! `cargo bench --bench review` writes ledgers of 200,000 and 1,000,000
//! events with `LedgerSink` (varied actors, patients, outcomes, exports,
//! off-hours and cross-organization access, so every rule has work), reads
//! each once to warm the page cache, then times each variant (best of 3)
//! and prints one JSON line per variant and size, then the ratios.
//! `cargo bench --bench review -- --n 200000` runs one size.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use phi_audit_runtime::report::{self, FailedLoginsByIp};
use phi_audit_runtime::review::{scan_jsonl, EvidenceRef, Reviewer, Rules};
use phi_audit_runtime::verify::{verify_reader, VerifyOptions};
use phi_audit_runtime::{
    ActionType, Actor, Config, Dispatch, EventBuilder, Http, LedgerSink, MemorySink, Outcome, Sink,
    Timestamp,
};

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn generate(path: &Path, n: u64) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("jsonl.checkpoints"));
    let sink = LedgerSink::open(path).expect("open the ledger");
    let d = Dispatch::new(
        Config::new("chart").environment("bench").build().unwrap(),
        Arc::new(MemorySink::new()),
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // 2026-03-02T00:00Z, ~2 events a second: 200k events span ~1.2 days,
    // 1M ~6 days.
    let start = 1_772_409_600_000i64;
    let mut batch = Vec::with_capacity(4096);
    for i in 0..n {
        let ts = Timestamp::from_unix_millis(start + i as i64 * 500);
        let a = rng.below(500);
        let actor = Actor::human(format!("dr-{a:04}"))
            .org(if a % 97 == 0 { "org-b" } else { "org-a" })
            .owner_org("org-a")
            .roles(["clinician"]);
        let roll = rng.below(1000);
        let b = if roll < 20 {
            EventBuilder::login_failure(Actor::human("anon"), "BadCredentials").http(Http {
                client_ip: Some(format!("203.0.113.{}", rng.below(40)).into()),
                ..Http::default()
            })
        } else {
            let patient = format!("pat-{:06}", rng.below(20_000));
            let kind = if roll < 30 {
                ActionType::Export
            } else if roll < 100 {
                ActionType::Update
            } else {
                ActionType::Read
            };
            let mut b = EventBuilder::access(kind, "Patient", patient.clone())
                .patient_id(patient)
                .phi_touched(true)
                .actor(actor);
            if roll >= 970 {
                b = b.outcome(Outcome::denied("RoleDenied"));
            } else if roll >= 960 {
                b = b.outcome(Outcome::failure("DbError", "database unavailable"));
            }
            b
        };
        batch.push(b.timestamp(ts).build(&d));
        if batch.len() == 4096 {
            sink.write_batch(&mut batch).expect("write");
            batch.clear();
        }
    }
    sink.write_batch(&mut batch).expect("write");
    sink.flush().expect("flush");
}

fn reader(path: &Path) -> BufReader<File> {
    BufReader::with_capacity(256 * 1024, File::open(path).unwrap())
}

/// Best of `runs` wall times of `f`, and its last result.
fn best<R>(runs: usize, mut f: impl FnMut() -> R) -> (f64, R) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.unwrap())
}

fn line(variant: &str, n: u64, bytes: u64, secs: f64, extra: &str) {
    println!(
        "{{\"bench\":\"review\",\"variant\":\"{variant}\",\"events\":{n},\"bytes\":{bytes},\"secs\":{secs:.4},\"events_per_s\":{:.0},\"mb_per_s\":{:.1}{extra}}}",
        n as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<u64> = match args.iter().position(|a| a == "--n") {
        Some(i) => args
            .get(i + 1)
            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_default(),
        None => vec![200_000, 1_000_000],
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("review-bench");
    std::fs::create_dir_all(&dir).unwrap();
    for n in sizes {
        let path = dir.join(format!("ledger-{n}.jsonl"));
        generate(&path, n);
        let bytes = std::fs::metadata(&path).unwrap().len();
        // Warm the page cache.
        let _ = std::io::copy(&mut reader(&path), &mut std::io::sink());

        let (t_review, (events, findings)) = best(3, || {
            let mut r = Reviewer::new(Rules::default()).unwrap();
            let src = r.add_source("bench");
            let counts = scan_jsonl(
                reader(&path),
                |e, l| r.observe(e, EvidenceRef::line(src, l, e.event_id)),
                |_, _| {},
            )
            .unwrap();
            let report = r.finish();
            (counts.events, report.findings.len())
        });
        assert_eq!(events, n);
        line(
            "review (default rules)",
            n,
            bytes,
            t_review,
            &format!(",\"findings\":{findings}"),
        );

        let (t_scan, (events, phi)) = best(3, || {
            let mut phi = 0u64;
            let c = scan_jsonl(reader(&path), |e, _| phi += u64::from(e.phi), |_, _| {}).unwrap();
            (c.events, phi)
        });
        assert_eq!(events, n);
        line(
            "review's event parsing alone (no rules)",
            n,
            bytes,
            t_scan,
            &format!(",\"phi_events\":{phi}"),
        );

        let (t_report, groups) = best(3, || {
            report::failed_logins_jsonl(reader(&path), &FailedLoginsByIp::over(5))
                .unwrap()
                .0
                .len()
        });
        line(
            "report --query failed-logins (streaming aggregate, whole events)",
            n,
            bytes,
            t_report,
            &format!(",\"groups\":{groups}"),
        );

        let (t_verify, passed) = best(3, || {
            verify_reader(reader(&path), None::<&[u8]>, &VerifyOptions::default())
                .unwrap()
                .passed()
        });
        assert!(passed);
        line("verify", n, bytes, t_verify, "");
        println!(
            "{{\"bench\":\"review\",\"variant\":\"ratio\",\"events\":{n},\"review_speedup_vs_report\":{:.2},\"review_speedup_vs_verify\":{:.2}}}",
            t_report / t_review,
            t_verify / t_review
        );
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(path.with_extension("jsonl.checkpoints"));
    }
}
