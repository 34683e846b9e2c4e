//! `phi-audit report --html OUT.html`: one self-contained page (inline CSS,
//! inline SVG, no scripts, nothing fetched) summarizing a trail over a time
//! range: events per day by outcome, top actors and resources, denials and
//! failures, review findings, and the verification of the input.
//!
//! Everything shown comes from the trail or from the verifier; every value
//! is HTML-escaped after control and bidi characters are made visible.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufReader, Write};
use std::path::Path;

use phi_audit_runtime::report::escape_text;
use phi_audit_runtime::review::{Finding, ReviewReport, Reviewer};
use phi_audit_runtime::verify::{verify_reader, VerifyOptions};
use phi_audit_runtime::{OutcomeStatus, Timestamp};

use crate::review::{for_each_event, load_rules, resolve_inputs, Inputs, Range, Skipped};
use crate::{error, open_regular, progress, shown, EXIT_FAIL, EXIT_OK};

/// Distinct keys counted per table; later new keys go to "(other)".
const MAX_KEYS: usize = 200_000;
/// Days kept for the chart (the latest).
const MAX_DAYS: usize = 3_700;
/// Rows in each top-N table.
const TOP: usize = 15;

/// Counts with a cap on distinct keys.
#[derive(Default)]
struct Counter {
    counts: HashMap<String, u64>,
    other: u64,
}

impl Counter {
    fn add(&mut self, key: &str) {
        if let Some(c) = self.counts.get_mut(key) {
            *c += 1;
        } else if self.counts.len() < MAX_KEYS {
            self.counts.insert(key.to_owned(), 1);
        } else {
            self.other += 1;
        }
    }

    fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.counts.iter().map(|(k, c)| (k.as_str(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

#[derive(Default)]
struct Aggregate {
    events: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    /// UTC day -> [success, failure, denied].
    days: BTreeMap<i64, [u64; 3]>,
    days_dropped: bool,
    outcomes: [u64; 3],
    actors: Counter,
    resource_types: Counter,
    resources: Counter,
    /// "DENIED / error_type" and "FAILURE / error_type".
    errors: Counter,
    denied_actors: Counter,
    chained: u64,
}

fn outcome_index(o: OutcomeStatus) -> usize {
    match o {
        OutcomeStatus::Success => 0,
        OutcomeStatus::Failure => 1,
        OutcomeStatus::Denied => 2,
    }
}

/// Runs `phi-audit report --html OUT`.
pub(crate) fn run(
    out_path: &Path,
    inputs: &[String],
    postgres: Option<&str>,
    pg_schema: &str,
    since: Option<&str>,
    until: Option<&str>,
    rules: Option<&Path>,
) -> u8 {
    let rules = match load_rules(rules, None) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    let range = match Range::parse(since, until) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    let inputs = match resolve_inputs(inputs, postgres, pg_schema) {
        Ok(i) => i,
        Err(e) => return error(e),
    };
    let mut reviewer = match Reviewer::new(rules) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    let mut agg = Aggregate::default();
    let mut skipped = Skipped::default();
    let cell = std::cell::RefCell::new((&mut reviewer, &mut agg));
    let read = for_each_event(
        &inputs,
        range,
        &mut skipped,
        &mut |name| cell.borrow_mut().0.add_source(name),
        &mut |e, at| {
            let mut g = cell.borrow_mut();
            g.0.observe(e, at);
            let a = &mut *g.1;
            a.events += 1;
            a.first = Some(a.first.map_or(e.timestamp, |f| f.min(e.timestamp)));
            a.last = Some(a.last.map_or(e.timestamp, |l| l.max(e.timestamp)));
            let i = outcome_index(e.outcome);
            a.outcomes[i] += 1;
            let day = e.timestamp.unix_millis().div_euclid(86_400_000);
            if let Some(d) = a.days.get_mut(&day) {
                d[i] += 1;
            } else if a.days.len() < MAX_DAYS || a.days.keys().next().is_some_and(|&f| f < day) {
                let mut d = [0; 3];
                d[i] = 1;
                a.days.insert(day, d);
                if a.days.len() > MAX_DAYS {
                    a.days.pop_first();
                    a.days_dropped = true;
                }
            } else {
                a.days_dropped = true;
            }
            a.actors.add(&e.actor);
            a.resource_types.add(&e.resource_type);
            match &e.resource_id {
                Some(id) => a.resources.add(&format!("{}/{id}", e.resource_type)),
                None => a.resources.add(&e.resource_type),
            }
            if e.outcome != OutcomeStatus::Success {
                let et = e.error_type.as_deref().unwrap_or("(no error_type)");
                a.errors.add(&format!("{} / {et}", e.outcome.as_str()));
            }
            if e.outcome == OutcomeStatus::Denied {
                a.denied_actors.add(&e.actor);
            }
            if e.chained {
                a.chained += 1;
            }
        },
    );
    let read = match read {
        Ok(n) => n,
        Err(e) => return error(e),
    };
    let review = reviewer.finish();
    let verification = verify_inputs(&inputs, agg.chained);
    let page = render_page(&agg, &review, &verification, range, skipped.count, read);
    let written = std::fs::File::create(out_path).and_then(|mut f| {
        f.write_all(page.as_bytes())?;
        f.sync_all()
    });
    progress::clear();
    if let Err(e) = written {
        return error(format!(
            "cannot write {}: {e}",
            shown(&out_path.to_string_lossy())
        ));
    }
    println!(
        "wrote {} ({} event(s) in range, {} finding(s))",
        shown(&out_path.to_string_lossy()),
        agg.events,
        review.findings.len() as u64 + review.findings_omitted
    );
    if skipped.count > 0 {
        eprintln!(
            "phi-audit: {} line(s) were not events and were skipped; the report covers the rest",
            skipped.count
        );
        return EXIT_FAIL;
    }
    if read == 0 {
        eprintln!("phi-audit: the input holds no events");
        return EXIT_FAIL;
    }
    if verification.iter().any(|v| v.passed == Some(false)) {
        eprintln!("phi-audit: the input failed verification (see the report)");
        return EXIT_FAIL;
    }
    EXIT_OK
}

/// One verification result as the page shows it.
struct Verified {
    source: String,
    /// None: not verified (not a ledger, or read once from stdin).
    passed: Option<bool>,
    summary: String,
}

fn verify_inputs(inputs: &Inputs, chained: u64) -> Vec<Verified> {
    match inputs {
        Inputs::Files(files) => files.iter().map(|f| verify_file(f, chained)).collect(),
        Inputs::Postgres(url, schema) => verify_postgres(url, schema),
    }
}

fn verify_file(path: &str, chained: u64) -> Verified {
    let v = |passed, summary: String| Verified {
        source: path.to_owned(),
        passed,
        summary,
    };
    if chained == 0 {
        return v(
            None,
            "not a ledger: no event has an integrity block, so there is no hash chain to verify"
                .into(),
        );
    }
    if path == "-" {
        return v(
            None,
            "standard input is read once: verify it with `phi-audit verify`".into(),
        );
    }
    let file = match open_regular(Path::new(path)) {
        Ok((f, _)) => f,
        Err(e) => return v(Some(false), e),
    };
    let options = VerifyOptions {
        source: path.to_owned(),
        ..VerifyOptions::default()
    };
    match verify_reader(
        BufReader::with_capacity(256 * 1024, file),
        None::<&[u8]>,
        &options,
    ) {
        Ok(r) if r.chain_length == 0 => v(
            None,
            format!(
                "not a ledger: none of its {} event(s) is chained",
                r.events_scanned
            ),
        ),
        Ok(r) => {
            let mut s = format!(
                "{}: {} event(s), chain length {}, {} chain gap(s), {} hash mismatch(es), {} unchained, {} malformed line(s)",
                r.result,
                r.events_scanned,
                r.chain_length,
                r.chain_gaps,
                r.hash_mismatches,
                r.unchained_events,
                r.malformed_lines
            );
            if let Some(f) = r.failures.first() {
                let at = f.line.map(|l| format!(" at line {l}")).unwrap_or_default();
                let _ = write!(s, "; first failure: {}{at}", f.failure_type);
            }
            s.push_str(" (checkpoints not checked: use `phi-audit verify --public-key`)");
            v(Some(r.passed()), s)
        }
        Err(e) => v(Some(false), format!("cannot verify: {e}")),
    }
}

#[cfg(feature = "postgres")]
fn verify_postgres(url: &str, schema: &str) -> Vec<Verified> {
    let fail = |m: String| {
        vec![Verified {
            source: "postgres".into(),
            passed: Some(false),
            summary: m,
        }]
    };
    let mut store = match phi_audit_runtime::PostgresStore::connect(url, schema) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot connect: {e}")),
    };
    let services = match store.chained_services() {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot list chained services: {e}")),
    };
    if services.is_empty() {
        return vec![Verified {
            source: "postgres".into(),
            passed: None,
            summary: "no chained events (the table was written without integrity)".into(),
        }];
    }
    services
        .into_iter()
        .map(|svc| {
            let r = store.verify_chain(&svc);
            Verified {
                source: format!("postgres service {svc}"),
                passed: Some(matches!(r, Ok(n) if n > 0)),
                summary: match r {
                    Ok(n) => format!("PASS: {n} chained event(s) verified"),
                    Err(e) => format!("FAIL: {e}"),
                },
            }
        })
        .collect()
}

#[cfg(not(feature = "postgres"))]
fn verify_postgres(_url: &str, _schema: &str) -> Vec<Verified> {
    vec![Verified {
        source: "postgres".into(),
        passed: None,
        summary: "this phi-audit was built without the `postgres` feature".into(),
    }]
}

/// `s` safe in HTML text and attribute values: controls and bidi
/// characters made visible ([`escape_text`]), then `& < > " '` escaped.
pub(crate) fn h(s: &str) -> String {
    let s = escape_text(s);
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn date(day: i64) -> String {
    Timestamp::from_unix_millis(day.saturating_mul(86_400_000)).to_string()[..10].to_owned()
}

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85}
main{padding:8px 32px 40px;max-width:1150px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff2;vertical-align:top}
th{background:#f0f2f5;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ok{color:#176b2c;font-weight:600}.bad{color:#b3261e;font-weight:600}.na{color:#6b7280;font-weight:600}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{flex:1 1 150px;border:1px solid #dde1e6;border-radius:6px;padding:10px 12px}
.card b{display:block;font-size:22px}
.legend span{display:inline-block;margin-right:16px}
.sw{display:inline-block;width:11px;height:11px;margin-right:5px;vertical-align:-1px}
.muted{color:#6b7280}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px;word-break:break-all}
";

const COLORS: [&str; 3] = ["#3a8f5c", "#e08a1e", "#c23b32"];
const NAMES: [&str; 3] = ["SUCCESS", "FAILURE", "DENIED"];

fn chart(days: &BTreeMap<i64, [u64; 3]>) -> String {
    let mut s = String::new();
    let (w, ht, left, bottom, top) = (1080.0_f64, 260.0_f64, 56.0, 34.0, 10.0);
    let max = days
        .values()
        .map(|d| d.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (Some(&first), Some(&last)) = (days.keys().next(), days.keys().next_back()) else {
        return "<p class=\"muted\">No events in the range.</p>".into();
    };
    let n = (last - first + 1).max(1) as f64;
    let plot_w = w - left - 10.0;
    let plot_h = ht - top - bottom;
    let bw = plot_w / n;
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"Events per day by outcome\">"
    );
    // Grid and y labels.
    for k in 0..=4 {
        let v = max as f64 * f64::from(k) / 4.0;
        let y = top + plot_h - plot_h * f64::from(k) / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e5e7eb\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#6b7280\">{}</text>",
            w - 10.0,
            left - 6.0,
            y + 4.0,
            v.round() as u64
        );
    }
    for (&day, counts) in days {
        let x = left + (day - first) as f64 * bw;
        let mut y = top + plot_h;
        let total: u64 = counts.iter().sum();
        let _ = write!(
            s,
            "<g><title>{}: {total} event(s) ({} SUCCESS, {} FAILURE, {} DENIED)</title>",
            date(day),
            counts[0],
            counts[1],
            counts[2]
        );
        for (i, &c) in counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let hgt = plot_h * c as f64 / max as f64;
            y -= hgt;
            let bar = (bw * 0.8).clamp(0.5, 48.0);
            let _ = write!(
                s,
                "<rect x=\"{:.2}\" y=\"{y:.2}\" width=\"{bar:.2}\" height=\"{hgt:.2}\" fill=\"{}\"/>",
                x + (bw - bar) / 2.0,
                COLORS[i]
            );
        }
        s.push_str("</g>");
    }
    // X labels: first, last, and a few between.
    let ticks = 6.min(n as i64);
    for k in 0..ticks {
        let day = if ticks <= 1 {
            first
        } else {
            first + (last - first) * k / (ticks - 1)
        };
        let x = left + (day - first) as f64 * bw + bw / 2.0;
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#374151\">{}</text>",
            ht - 12.0,
            date(day)
        );
    }
    s.push_str("</svg>");
    s
}

fn top_table(title_key: &str, c: &Counter, total: u64) -> String {
    let mut s = format!(
        "<table><tr><th>{}</th><th>events</th><th>share</th></tr>",
        h(title_key)
    );
    let rows = c.top(TOP);
    if rows.is_empty() {
        s.push_str("<tr><td colspan=\"3\" class=\"muted\">none</td></tr>");
    }
    for (k, n) in rows {
        let pct = if total == 0 {
            0.0
        } else {
            n as f64 * 100.0 / total as f64
        };
        let _ = write!(
            s,
            "<tr><td><code>{}</code></td><td class=\"n\">{n}</td><td class=\"n\">{pct:.1}%</td></tr>",
            h(k)
        );
    }
    if c.other > 0 {
        let _ = write!(
            s,
            "<tr><td class=\"muted\">(others, past {MAX_KEYS} distinct values)</td><td class=\"n\">{}</td><td></td></tr>",
            c.other
        );
    }
    s.push_str("</table>");
    s
}

fn findings_table(r: &ReviewReport) -> String {
    if r.findings.is_empty() {
        return "<p class=\"ok\">No findings.</p>".into();
    }
    let mut s = String::from(
        "<table><tr><th>rule</th><th>subject</th><th>count</th><th>first</th><th>last</th><th>detail</th><th>evidence</th></tr>",
    );
    for f in &r.findings {
        let _ = write!(
            s,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            f.rule,
            h(&f.subject),
            f.count,
            f.first,
            f.last,
            h(&f.detail),
            evidence(f, &r.sources)
        );
    }
    s.push_str("</table>");
    if r.findings_omitted > 0 {
        let _ = write!(
            s,
            "<p class=\"muted\">… and {} more finding(s) (not kept in memory).</p>",
            r.findings_omitted
        );
    }
    s
}

fn evidence(f: &Finding, sources: &[String]) -> String {
    h(&f.evidence_summary(sources))
}

fn render_page(
    a: &Aggregate,
    review: &ReviewReport,
    verification: &[Verified],
    range: Range,
    skipped: u64,
    read: u64,
) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let sources = review
        .sources
        .iter()
        .map(|x| h(x))
        .collect::<Vec<_>>()
        .join(", ");
    let span = |given: Option<Timestamp>, seen: Option<Timestamp>| {
        given
            .map(|t| t.to_string())
            .or_else(|| seen.map(|t| format!("{t} (first/last event)")))
            .unwrap_or_else(|| "-".into())
    };
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Audit trail report</title><style>{CSS}</style></head><body>\
<header><h1>Audit trail report</h1><p>{sources} · from {} to {} · generated by phi-audit {} at {}</p></header><main>",
        h(&span(range.since, a.first)),
        h(&span(range.until, a.last)),
        env!("CARGO_PKG_VERSION"),
        Timestamp::now()
    );
    // Summary.
    let findings = review.findings.len() as u64 + review.findings_omitted;
    let _ = write!(
        s,
        "<section id=\"summary\"><h2>Summary</h2><div class=\"cards\">\
<div class=\"card\">events in range<b>{}</b></div>\
<div class=\"card\">SUCCESS<b>{}</b></div>\
<div class=\"card\">FAILURE<b>{}</b></div>\
<div class=\"card\">DENIED<b>{}</b></div>\
<div class=\"card\">distinct actors<b>{}</b></div>\
<div class=\"card\">review findings<b>{findings}</b></div></div>",
        a.events,
        a.outcomes[0],
        a.outcomes[1],
        a.outcomes[2],
        a.actors.counts.len() as u64 + u64::from(a.actors.other > 0),
    );
    let _ = write!(
        s,
        "<p class=\"muted\">{read} event(s) read; {} outside the time range; {skipped} line(s) skipped (not events).</p></section>",
        read.saturating_sub(a.events)
    );
    // Verification.
    s.push_str("<section id=\"verification\"><h2>Verification of the input</h2><table><tr><th>source</th><th>result</th><th>details</th></tr>");
    for v in verification {
        let (class, word) = match v.passed {
            Some(true) => ("ok", "PASS"),
            Some(false) => ("bad", "FAIL"),
            None => ("na", "NOT VERIFIED"),
        };
        let _ = write!(
            s,
            "<tr><td><code>{}</code></td><td class=\"{class}\">{word}</td><td>{}</td></tr>",
            h(&v.source),
            h(&v.summary)
        );
    }
    s.push_str("</table></section>");
    // Chart.
    s.push_str("<section id=\"events-per-day\"><h2>Events per day by outcome (UTC days)</h2><p class=\"legend\">");
    for i in 0..3 {
        let _ = write!(
            s,
            "<span><i class=\"sw\" style=\"background:{}\"></i>{}</span>",
            COLORS[i], NAMES[i]
        );
    }
    s.push_str("</p>");
    s.push_str(&chart(&a.days));
    if a.days_dropped {
        let _ = write!(
            s,
            "<p class=\"muted\">Only the latest {MAX_DAYS} days are drawn.</p>"
        );
    }
    s.push_str("</section>");
    // Top actors and resources.
    s.push_str("<section id=\"top-actors\"><h2>Top actors</h2>");
    s.push_str(&top_table("actor.subject_id", &a.actors, a.events));
    s.push_str("</section><section id=\"top-resources\"><h2>Top resources</h2>");
    s.push_str(&top_table("resource.type", &a.resource_types, a.events));
    s.push_str("<br>");
    s.push_str(&top_table("resource.type/id", &a.resources, a.events));
    s.push_str("</section>");
    // Denials and failures.
    let _ = write!(
        s,
        "<section id=\"denials-failures\"><h2>Denials and failures</h2><p>{} FAILURE and {} DENIED outcome(s).</p>",
        a.outcomes[1], a.outcomes[2]
    );
    s.push_str(&top_table("outcome / error_type", &a.errors, a.events));
    s.push_str("<br>");
    s.push_str(&top_table(
        "actor with DENIED outcomes",
        &a.denied_actors,
        a.outcomes[2],
    ));
    s.push_str("</section>");
    // Findings.
    let _ = write!(
        s,
        "<section id=\"findings\"><h2>Review findings</h2><p class=\"muted\">Rules as in <code>phi-audit review</code>; days and hours in {}.</p>",
        h(&review.time_zone)
    );
    s.push_str(&findings_table(review));
    s.push_str("<table><tr><th>rule</th><th>state</th><th>findings</th><th>notes</th></tr>");
    for r in &review.rules {
        let mut notes = Vec::new();
        if r.subjects_evicted > 0 {
            notes.push(format!(
                "{} subject(s) evicted at max_subjects",
                r.subjects_evicted
            ));
        }
        if let Some(n) = &r.note {
            notes.push(n.clone());
        }
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            r.rule,
            if r.enabled { "on" } else { "off" },
            r.findings,
            h(&notes.join("; "))
        );
    }
    s.push_str("</table></section></main></body></html>\n");
    s
}
