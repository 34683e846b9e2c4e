//! `phi-audit report --html`: the page's sections, escaping, verification
//! result and self-containment, and its rendering in headless Chromium
//! (Debian's `chromium`; PHI_AUDIT_CHROMIUM or /usr/bin/chromium, skipped
//! with a reason when absent).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use phi_audit_runtime::{
    with_dispatch, ActionType, Actor, Config, Dispatch, EventBuilder, LedgerSink, NonBlocking,
};
use serde_json::json;

const SECTIONS: [&str; 7] = [
    "summary",
    "verification",
    "events-per-day",
    "top-actors",
    "top-resources",
    "denials-failures",
    "findings",
];

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_phi-audit"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A ledger written by `LedgerSink`: reads by two clinicians, then twelve
/// denials for `dr-deny` (a review finding).
fn ledger(dir: &Path) -> PathBuf {
    let p = dir.join("ledger.jsonl");
    let sink = Arc::new(NonBlocking::new(LedgerSink::open(&p).unwrap()));
    let d = Dispatch::new(Config::new("chart").build().unwrap(), sink.clone());
    with_dispatch(&d, || {
        for i in 0..40 {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{}", i % 7))
                .actor(Actor::human(if i % 3 == 0 { "dr-b" } else { "dr-a" }))
                .emit();
        }
        for _ in 0..12 {
            EventBuilder::access_denied(ActionType::Read, "Chart", "RoleDenied")
                .actor(Actor::human("dr-deny"))
                .emit();
        }
    });
    d.flush().unwrap();
    p
}

/// Plain JSON lines over three days, one actor id hostile.
fn plain(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for (day, n) in [("2026-03-02", 30), ("2026-03-03", 12), ("2026-03-05", 25)] {
        for i in 0..n {
            let status = ["SUCCESS", "SUCCESS", "FAILURE", "DENIED"][i % 4];
            let actor = if i % 5 == 0 {
                "<script>alert(1)</script>\u{1b}[31m"
            } else {
                "dr-a"
            };
            let mut v = json!({
                "schema_version": "1.1",
                "event_id": uuid::Uuid::new_v4().to_string(),
                "timestamp": format!("{day}T10:{:02}:00.000Z", i),
                "service": {"name": "chart"},
                "actor": {"subject_id": actor, "subject_type": "human"},
                "action": {"type": "READ"},
                "resource": {"type": "Patient", "id": format!("p-{}", i % 4)},
                "outcome": {"status": status},
            });
            if status != "SUCCESS" {
                v["outcome"]["error_type"] = json!("Err\"<b>");
            }
            lines.push(v.to_string());
        }
    }
    let p = dir.join("plain.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn page(args: &[&str], out: &Path) -> (i32, String) {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--html", out.to_str().unwrap()]);
    let (c, stdout, stderr) = run(&all);
    assert!(c == 0 || c == 1, "{c}: {stdout}{stderr}");
    (c, std::fs::read_to_string(out).unwrap())
}

fn self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    for s in SECTIONS {
        assert!(
            html.contains(&format!("<section id=\"{s}\">")),
            "section {s}"
        );
    }
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script in the page");
    assert!(
        !lower.contains(" src=") && !lower.contains(" href="),
        "an external reference"
    );
    // The SVG namespace is the only URL, and it is not fetched.
    assert_eq!(
        lower.matches("http").count(),
        lower.matches("http://www.w3.org/2000/svg").count() + lower.matches("http-equiv").count()
    );
    assert!(html.contains("<svg"));
}

#[test]
fn a_ledger_page_has_every_section_and_passes_verification() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger(dir.path());
    let out = dir.path().join("ledger.html");
    let (c, html) = page(&[l.to_str().unwrap()], &out);
    assert_eq!(c, 0);
    self_contained(&html);
    assert!(
        html.contains("class=\"ok\">PASS</td>"),
        "verification result"
    );
    assert!(html.contains("52 event(s), chain length 52"));
    assert!(html.contains("<td>denials</td><td><code>dr-deny</code></td><td class=\"n\">12</td>"));
    assert!(html.contains("<code>dr-a</code></td><td class=\"n\">26</td>"));
    assert!(html.contains("DENIED / RoleDenied"));

    // A tampered ledger: the page says FAIL and the command exits 1.
    let text = std::fs::read_to_string(&l).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let changed = lines[3].replacen("\"p-3\"", "\"p-9\"", 1);
    assert_ne!(changed, lines[3]);
    lines[3] = &changed;
    let bad = dir.path().join("tampered.jsonl");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let (c, html) = page(&[bad.to_str().unwrap()], &dir.path().join("t.html"));
    assert_eq!(c, 1);
    assert!(html.contains("class=\"bad\">FAIL</td>"));
    assert!(
        html.contains("hash_mismatch at line 4"),
        "first failure named by line"
    );
}

#[test]
fn a_plain_file_is_not_a_ledger_and_values_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let p = plain(dir.path());
    let out = dir.path().join("plain.html");
    let (c, html) = page(&[p.to_str().unwrap()], &out);
    assert_eq!(c, 0);
    self_contained(&html);
    assert!(html.contains("NOT VERIFIED") && html.contains("not a ledger"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\u{1b}[31m"));
    assert!(!html.contains('\u{1b}'));
    assert!(html.contains("Err&quot;&lt;b&gt;"));
    // Three days with events (a gap on the 4th), bars stacked by outcome.
    assert_eq!(html.matches("<g><title>").count(), 3);
    assert!(
        html.contains("<title>2026-03-02: 30 event(s) (16 SUCCESS, 7 FAILURE, 7 DENIED)</title>")
    );
    // The time range narrows everything.
    let (_, html) = page(
        &[
            p.to_str().unwrap(),
            "--since",
            "2026-03-03T00:00:00Z",
            "--until",
            "2026-03-04T00:00:00Z",
        ],
        &dir.path().join("range.html"),
    );
    assert_eq!(html.matches("<g><title>").count(), 1);
    assert!(html.contains("events in range<b>12</b>"));
    assert!(html.contains("55 outside the time range"));
    // Usage errors.
    assert_eq!(
        run(&[
            "report",
            p.to_str().unwrap(),
            "--html",
            "/nonexistent/dir/x.html"
        ])
        .0,
        2
    );
    assert_eq!(
        run(&[
            "report",
            p.to_str().unwrap(),
            "--html",
            "x.html",
            "--query",
            "all"
        ])
        .0,
        2
    );
}

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PHI_AUDIT_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from("/usr/bin/chromium");
    p.exists().then_some(p)
}

fn headless(bin: &Path, profile: &Path, extra: &[&str], url: &str) -> (String, String) {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null());
    let out = cmd.output().expect("run chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_page_renders_in_headless_chromium() {
    let Some(bin) = chromium() else {
        phi_audit_test_env::skip_required(
            "the_page_renders_in_headless_chromium",
            "no Chromium (set PHI_AUDIT_CHROMIUM, or install Debian's chromium at /usr/bin/chromium; .ci/run does)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let l = ledger(dir.path());
    let out = dir.path().join("ledger.html");
    page(&[l.to_str().unwrap()], &out);
    let url = format!("file://{}", out.display());
    let profile = dir.path().join("profile");

    let png = dir.path().join("page.png");
    let (_, err) = headless(
        &bin,
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,2000",
        ],
        &url,
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}): {err}"));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(bytes.len() > 20_000, "a blank page? {} bytes", bytes.len());
    let console = |err: &str| {
        err.lines()
            .filter(|l| {
                l.contains("CONSOLE")
                    || l.contains("Uncaught")
                    || l.contains("Content Security Policy")
                    || l.contains("Refused to")
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        console(&err).is_empty(),
        "console errors: {:?}",
        console(&err)
    );

    let (dom, err) = headless(&bin, &profile, &["--dump-dom"], &url);
    assert!(
        console(&err).is_empty(),
        "console errors: {:?}",
        console(&err)
    );
    for s in SECTIONS {
        assert!(
            dom.contains(&format!("<section id=\"{s}\">")),
            "section {s} not in the DOM"
        );
    }
    for h in [
        "Summary",
        "Verification of the input",
        "Events per day by outcome",
        "Top actors",
        "Top resources",
        "Denials and failures",
        "Review findings",
    ] {
        assert!(dom.contains(&format!("<h2>{h}")), "heading {h}");
    }
    assert!(dom.contains("<svg"), "the chart");
    assert!(dom.contains(">PASS</td>"));
}
