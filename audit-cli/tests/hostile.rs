//! `phi-audit` pointed at hostile files: control characters, bidi
//! overrides, NUL, CRLF, a 50 MB line, `/dev/zero`, a FIFO, a directory, an
//! empty file, a truncated line. Every case checks the exit code, that no
//! input byte sequence reaches the output unescaped, and that no synthetic
//! PHI token from the input appears in any message (everything but a
//! report's own output).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use phi_audit_runtime::*;

/// Synthetic PHI tokens planted in the input.
const PHI: &[&str] = &[
    "Jane Doe",
    "123-45-6789",
    "jane.doe@example.com",
    "MRN-0042",
];

/// A terminal attack: retitle the window, clear the screen, C1 CSI.
const ESC: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m";

/// Every hostile piece of text, joined with a PHI token.
fn hostile(i: usize) -> String {
    let pieces = [
        ESC,
        "\r\nforged,row,\"x\"\n",
        "\u{0}nul",
        "\u{202e}gnirts desrever\u{202c}",
        "\u{2028}\u{2029}\u{7f}\u{200b}\u{feff}",
        "=cmd|' /C calc'!A0",
    ];
    format!("{} {}", PHI[i % PHI.len()], pieces[i % pieces.len()])
}

struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Out {
    fn out(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }
    fn err(&self) -> String {
        String::from_utf8(self.stderr.clone()).expect("stderr is UTF-8")
    }
}

/// Runs the binary with a deadline (a hang fails the test).
fn run(args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phi-audit"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.map(<[u8]>::to_vec);
    let writer = std::thread::spawn(move || {
        if let Some(d) = data {
            let _ = input.write_all(&d);
        }
    });
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("phi-audit {args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// Fails if `bytes` holds anything a terminal would act on or hide: C0
/// controls other than LF (and CR only in CSV's CRLF), DEL, C1, bidi and
/// invisible format characters, line separators; or invalid UTF-8.
fn assert_terminal_safe(bytes: &[u8], what: &str, csv: bool) {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|_| panic!("{what}: not UTF-8"));
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let ok = match c {
            '\n' => true,
            '\r' => csv && chars.get(i + 1) == Some(&'\n'),
            c => !report::needs_escape(c),
        };
        assert!(
            ok,
            "{what}: raw U+{:04X} at char {i} in {:?}",
            c as u32,
            &text[..text.len().min(2000)]
        );
    }
}

fn assert_no_phi(text: &str, what: &str) {
    for t in PHI {
        assert!(
            !text.contains(t),
            "{what} holds the PHI token {t:?}: {text}"
        );
    }
}

/// Checks a run: exit code, terminal safety of both streams, and no PHI in
/// messages (stderr always; stdout too unless it is a report's output).
fn check(o: &Out, code: i32, what: &str, stdout_is_report: bool, csv: bool) {
    assert_eq!(
        o.code,
        code,
        "{what}: exit code; stdout: {} stderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_terminal_safe(&o.stdout, &format!("{what} stdout"), csv);
    assert_terminal_safe(&o.stderr, &format!("{what} stderr"), false);
    assert_no_phi(&o.err(), &format!("{what} stderr"));
    if !stdout_is_report {
        assert_no_phi(&o.out(), &format!("{what} stdout"));
    }
}

fn event(i: usize) -> AuditEvent {
    let t = |k: usize| Text::from(hostile(i + k).as_str());
    let mut metadata = Metadata::new();
    metadata.insert_value(t(7), MetaValue::Str(t(8)));
    AuditEvent {
        schema_version: SchemaVersion::V1_1,
        event_id: uuid::Uuid::from_u128(0x4000_0000_0000_4000_8000_0000_0000_0000 | i as u128),
        timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + i as i64),
        service: Service {
            name: t(0),
            environment: None,
            version: None,
        },
        actor: Actor::human(t(1)).org(t(2)).owner_org(t(3)),
        action: Action {
            kind: if i % 2 == 0 {
                ActionType::Read
            } else {
                ActionType::Login
            },
            // A formula a spreadsheet would run.
            name: (i == 0).then(|| Text::from("=HYPERLINK(\"http://x\",\"Jane Doe\")")),
            phi_touched: Some(true),
            data_classification: None,
        },
        resource: Resource {
            kind: t(4),
            id: Some(t(5)),
            patient_id: Some(t(6)),
        },
        outcome: if i % 2 == 0 {
            Outcome::SUCCESS
        } else {
            Outcome::failure(hostile(i + 9).as_str(), "bad password")
        },
        correlation: Some(Correlation {
            request_id: Some(t(10)),
            ..Correlation::default()
        }),
        http: Some(Http {
            client_ip: Some(t(11)),
            ..Http::default()
        }),
        delegation: None,
        metadata,
        integrity: None,
    }
}

/// A valid ledger whose values are all hostile.
fn hostile_ledger(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join("hostile.jsonl");
    let l = LedgerSink::open(&p).unwrap();
    for i in 0..n {
        l.write(&event(i)).unwrap();
    }
    l.close().unwrap();
    p
}

/// Replaces field `pointer` of line `n` with `value` (breaking its hash).
fn tamper(path: &Path, n: usize, pointer: &str, value: serde_json::Value) -> PathBuf {
    let text = fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut v: serde_json::Value = serde_json::from_str(&lines[n]).unwrap();
    *v.pointer_mut(pointer).unwrap() = value;
    lines[n] = serde_json::to_string(&v).unwrap();
    let out = path.with_extension(format!("t{n}.jsonl"));
    fs::write(&out, lines.join("\n") + "\n").unwrap();
    out
}

const QUERIES: &[&str] = &["all", "failures", "failed-logins", "cross-org", "phi-24h"];

/// Every command and format over `path`; verify and validate expected to
/// exit `verify_code`/`validate_code`, report `report_code`.
fn every_command(path: &str, stdin: Option<&[u8]>, codes: (i32, i32, i32), what: &str) {
    let (vc, lc, rc) = codes;
    for fmt in ["text", "json"] {
        let o = run(&["verify", path, "--format", fmt], stdin);
        check(&o, vc, &format!("{what}: verify {fmt}"), false, false);
        if fmt == "json" && !o.stdout.is_empty() {
            serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("verify JSON");
        }
        let o = run(&["validate", path, "--format", fmt], stdin);
        check(&o, lc, &format!("{what}: validate {fmt}"), false, false);
    }
    for q in QUERIES {
        for fmt in ["text", "csv", "json"] {
            let mut args = vec!["report", path, "--query", q, "--format", fmt];
            if *q == "failed-logins" {
                args.extend(["--threshold", "0"]);
            }
            let o = run(&args, stdin);
            check(
                &o,
                rc,
                &format!("{what}: report {q} {fmt}"),
                true,
                fmt == "csv",
            );
            if fmt == "json" {
                serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("report JSON");
            }
        }
    }
}

#[test]
fn hostile_values_never_reach_the_terminal_raw() {
    let d = tempfile::tempdir().unwrap();
    let p = hostile_ledger(d.path(), 12);
    let ps = p.to_str().unwrap();
    // A valid chain: verify passes; validate finds only what the schema
    // refuses (control characters are allowed in strings); reports escape.
    let o = run(&["verify", ps], None);
    check(&o, 0, "verify", false, false);
    every_command(ps, None, (0, 1, 0), "hostile values");

    // The report shows the values, escaped, and JSON that parses back to
    // them exactly.
    let o = run(&["report", ps, "--query", "all", "--format", "json"], None);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 12);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["resource_id"], hostile(i + 5), "row {i}");
        assert_eq!(r["actor_subject_id"], hostile(i + 1));
    }
    let o = run(&["report", ps, "--query", "all", "--format", "text"], None);
    let text = o.out();
    assert_eq!(text.lines().count(), 13, "one line per row: {text}");
    assert!(text.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"), "{text}");
    assert!(text.contains("\\r\\nforged,row"), "{text}");
    assert!(text.contains("\\u{202e}gnirts"), "{text}");
    // CSV: a header and one record per row; line breaks never split one.
    let o = run(&["report", ps, "--query", "all", "--format", "csv"], None);
    let csv = o.out();
    assert_eq!(csv.matches("\r\n").count(), 13, "{csv}");
    assert_eq!(csv.lines().count(), 13, "{csv}");
    // Formula defusing survives escaping.
    assert!(csv.contains(",\"'=HYPERLINK("), "{csv}");
    assert!(!csv.contains(",=HYPERLINK"), "{csv}");

    // Failures: event_id, timestamp and hash_alg holding PHI and escape
    // sequences; named by line and position, never by their text.
    let bad = tamper(&p, 3, "/event_id", hostile(0).into());
    let bad = tamper(&bad, 5, "/timestamp", hostile(1).into());
    let bad = tamper(&bad, 7, "/integrity/hash_alg", hostile(2).into());
    let bad = tamper(
        &bad,
        8,
        "/integrity/event_hash",
        format!("{ESC}{}", PHI[1]).into(),
    );
    let bs = bad.to_str().unwrap();
    let o = run(&["verify", bs], None);
    check(&o, 1, "tampered verify", false, false);
    let out = o.out();
    assert!(out.contains("hash_mismatch at line 4 (event 3)"), "{out}");
    assert!(
        out.contains("unknown_hash_alg at line 8 (event 7)"),
        "{out}"
    );
    // The lines whose id or timestamp is not one are not events: the report
    // skips them.
    every_command(bs, None, (1, 1, 1), "tampered");
    // The first and last timestamps are the file's when well-formed only.
    let first_bad = tamper(&p, 0, "/timestamp", hostile(1).into());
    let o = run(
        &["verify", first_bad.to_str().unwrap(), "--format", "json"],
        None,
    );
    check(&o, 1, "bad first timestamp", false, false);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["time_range"]["start"].is_null(), "{v}");
    assert_eq!(v["time_range"]["end"], "2023-11-14T22:13:20.011Z");
}

/// Raw bytes in a line (not JSON-escaped): control characters, bidi, NUL,
/// invalid UTF-8, all with PHI.
#[test]
fn raw_hostile_bytes_and_crlf() {
    let d = tempfile::tempdir().unwrap();
    let p = hostile_ledger(d.path(), 4);
    let good = fs::read(&p).unwrap();
    let mut raw = good.clone();
    for i in 0..6 {
        raw.extend_from_slice(hostile(i).as_bytes());
        raw.push(b'\n');
    }
    // Lines so far, and those with content after the good ones.
    let bad_line = raw.iter().filter(|&&b| b == b'\n').count() + 1;
    let bad_lines = raw[good.len()..]
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count()
        + 1;
    raw.extend_from_slice(b"\xff\xfe Jane Doe \x1b[2J\x00\n");
    let rp = d.path().join("raw.jsonl");
    fs::write(&rp, &raw).unwrap();
    let rs = rp.to_str().unwrap();
    every_command(rs, None, (1, 1, 1), "raw bytes");
    every_command("-", Some(&raw), (1, 1, 1), "raw bytes on stdin");
    // Bad UTF-8 is named with its line number.
    let o = run(&["validate", rs], None);
    assert!(
        o.out()
            .contains(&format!("line {bad_line}: (line): not valid UTF-8")),
        "{}",
        o.out()
    );
    let o = run(&["report", rs, "--query", "all"], None);
    assert!(
        o.err()
            .contains(&format!("line {bad_line} skipped: not valid UTF-8")),
        "{}",
        o.err()
    );
    // The report still covers the good lines, and says what it skipped.
    assert!(o.out().contains("4 event(s)"), "{}", o.out());
    assert!(
        o.out().contains(&format!("{bad_lines} line(s) skipped")),
        "{}",
        o.out()
    );
    let o = run(&["verify", rs], None);
    assert!(o.out().contains("not valid UTF-8"), "{}", o.out());

    // CRLF line ends: the same events.
    let crlf: Vec<u8> = String::from_utf8(good)
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes();
    let cp = d.path().join("crlf.jsonl");
    fs::write(&cp, &crlf).unwrap();
    every_command(cp.to_str().unwrap(), None, (0, 1, 0), "CRLF");
}

#[test]
fn empty_truncated_and_huge_inputs() {
    let d = tempfile::tempdir().unwrap();
    // Empty: every command fails the check.
    let e = d.path().join("empty.jsonl");
    fs::write(&e, "").unwrap();
    every_command(e.to_str().unwrap(), None, (1, 1, 1), "empty file");
    every_command("-", Some(b""), (1, 1, 1), "empty stdin");
    let o = run(&["report", e.to_str().unwrap(), "--query", "all"], None);
    assert!(o.err().contains("holds no events"), "{}", o.err());

    // A truncated last line (a write cut off): 1, the rest reported.
    let p = hostile_ledger(d.path(), 3);
    let mut t = fs::read(&p).unwrap();
    let cut = {
        let last = fs::read_to_string(&p).unwrap();
        let last = last.lines().last().unwrap().to_owned();
        last[..last.len() / 2].to_owned()
    };
    t.extend_from_slice(cut.as_bytes());
    let tp = d.path().join("truncated.jsonl");
    fs::write(&tp, &t).unwrap();
    let ts = tp.to_str().unwrap();
    every_command(ts, None, (1, 1, 1), "truncated line");
    let o = run(&["verify", ts], None);
    assert!(o.out().contains("torn_tail at line 4"), "{}", o.out());
    let o = run(&["report", ts, "--query", "all", "--format", "csv"], None);
    assert_eq!(o.out().lines().count(), 4, "{}", o.out());
    assert!(o.err().contains("line 4 skipped"), "{}", o.err());

    // A 50 MB line between good ones: skipped past with bounded memory.
    let mut big = fs::read(&p).unwrap();
    big.extend_from_slice(b"{\"pad\":\"");
    big.extend(std::iter::repeat_n(b'A', 50 * 1024 * 1024));
    big.extend_from_slice(b"Jane Doe\"}\n");
    big.extend_from_slice(&fs::read(&p).unwrap());
    let bp = d.path().join("big.jsonl");
    fs::write(&bp, &big).unwrap();
    let bs = bp.to_str().unwrap();
    for (args, code) in [
        (vec!["verify", bs], 1),
        (vec!["validate", bs], 1),
        (vec!["report", bs, "--query", "all"], 1),
        (vec!["report", bs, "--query", "failed-logins"], 1),
    ] {
        let o = run(&args, None);
        check(
            &o,
            code,
            &format!("50 MB line: {args:?}"),
            args[0] == "report",
            false,
        );
    }
    let o = run(&["report", bs, "--query", "all"], None);
    assert!(o.out().contains("6 event(s)"), "{}", o.out());
    assert!(
        o.err().contains("line 4 skipped: longer than"),
        "{}",
        o.err()
    );
    let o = run(&["validate", bs], None);
    assert!(
        o.out().contains("line 4: (line): line is longer"),
        "{}",
        o.out()
    );
}

#[cfg(unix)]
#[test]
fn fifo_device_directory_and_missing_paths_are_refused_at_once() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("audit.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status();
    let fifo_made = matches!(st, Ok(s) if s.success());
    if !fifo_made {
        phi_audit_test_env::skip(
            "hostile::fifo_device_directory_and_missing_paths_are_refused_at_once",
            "mkfifo is not available; the FIFO case only",
        );
    }
    let dir = d.path().to_str().unwrap().to_owned();
    let mut paths = vec![
        ("/dev/zero".to_owned(), "a device"),
        ("/dev/null".to_owned(), "a device"),
        (dir, "a directory"),
    ];
    if fifo_made {
        paths.push((fifo.to_str().unwrap().to_owned(), "a FIFO"));
    }
    for (path, kind) in &paths {
        for args in [
            vec!["verify", path.as_str()],
            vec!["validate", path.as_str()],
            vec!["report", path.as_str(), "--query", "all"],
        ] {
            // A blocked open or an endless read would hit the deadline.
            let started = Instant::now();
            let o = run(&args, None);
            check(&o, 2, &format!("{args:?}"), false, false);
            assert!(o.err().contains(kind), "{args:?}: {}", o.err());
            assert!(started.elapsed() < Duration::from_secs(30));
        }
    }
    // A key or checkpoint file that is a device is refused too.
    let p = hostile_ledger(d.path(), 2);
    let o = run(
        &["verify", p.to_str().unwrap(), "--public-key", "/dev/zero"],
        None,
    );
    check(&o, 2, "device as key", false, false);
    // Missing.
    let o = run(&["verify", "/nonexistent/Jane Doe.jsonl"], None);
    assert_eq!(o.code, 2);
    assert!(o.err().contains("cannot open"), "{}", o.err());
}

#[test]
fn help_documents_the_exit_code_contract() {
    for args in [
        vec!["--help"],
        vec!["verify", "--help"],
        vec!["validate", "--help"],
        vec!["report", "--help"],
    ] {
        let o = run(&args, None);
        assert_eq!(o.code, 0);
        let out = o.out();
        assert!(out.contains("Exit codes"), "{args:?}: {out}");
        assert!(
            out.contains("0 ") && out.contains("1 ") && out.contains("2 "),
            "{args:?}: {out}"
        );
    }
    assert_eq!(run(&["verify"], None).code, 2);
    assert_eq!(run(&["report", "-"], None).code, 2);
}
