//! Findings as text, JSON or CSV, every trail value escaped.

use std::borrow::Cow;
use std::io::{self, Write};

use serde::Serialize;

use super::{Finding, ReviewReport, RuleSummary};
use crate::report::{escape_text, write_json};

/// Output format of a review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// A summary, then each finding on a few lines.
    #[default]
    Text,
    /// One JSON document (`events`, `sources`, `findings`, `rules`, ...).
    Json,
    /// RFC 4180 CSV, one finding per row: `rule, subject, count, first,
    /// last, detail, evidence, evidence_omitted` (evidence `file:line`
    /// entries joined by `;`).
    Csv,
}

#[derive(Serialize)]
struct JsonEvidence<'a> {
    source: &'a str,
    line: Option<u64>,
    event_id: Option<String>,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    rule: &'static str,
    subject: &'a str,
    count: u64,
    first: String,
    last: String,
    detail: &'a str,
    evidence: Vec<JsonEvidence<'a>>,
    evidence_omitted: u64,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    events: u64,
    time_zone: &'a str,
    sources: &'a [String],
    findings: Vec<JsonFinding<'a>>,
    findings_omitted: u64,
    rules: &'a [RuleSummary],
}

fn evidence_list(f: &Finding, sources: &[String]) -> Vec<String> {
    f.evidence.iter().map(|e| e.describe(sources)).collect()
}

impl Finding {
    /// The evidence grouped by source, `a.jsonl lines 1, 2, 5; b.jsonl
    /// lines 7`, with `(+N more)` for what was not kept. Holds source names
    /// as given: escape it for display.
    pub fn evidence_summary(&self, sources: &[String]) -> String {
        let mut s = text_evidence(self, sources);
        if self.evidence_omitted > 0 {
            s.push_str(&format!(" (+{} more)", self.evidence_omitted));
        }
        s
    }
}

fn text_evidence(f: &Finding, sources: &[String]) -> String {
    let mut out = String::new();
    let mut current: Option<u32> = None;
    for e in &f.evidence {
        let name = sources.get(e.source as usize).map_or("?", String::as_str);
        let item = match (e.line, e.event_id) {
            (Some(l), _) => l.to_string(),
            (None, Some(id)) => id.to_string(),
            (None, None) => "?".to_owned(),
        };
        if current == Some(e.source) {
            out.push_str(", ");
        } else {
            if current.is_some() {
                out.push_str("; ");
            }
            current = Some(e.source);
            out.push_str(name);
            out.push_str(if e.line.is_some() {
                " lines "
            } else {
                " events "
            });
        }
        out.push_str(&item);
    }
    out
}

/// Writes `report` to `out` in `format`. Nothing from the trail reaches
/// `out` unescaped.
pub fn render<W: Write + ?Sized>(
    report: &ReviewReport,
    format: Format,
    out: &mut W,
) -> io::Result<()> {
    match format {
        Format::Json => {
            let doc = JsonReport {
                events: report.events,
                time_zone: &report.time_zone,
                sources: &report.sources,
                findings: report
                    .findings
                    .iter()
                    .map(|f| JsonFinding {
                        rule: f.rule.as_str(),
                        subject: &f.subject,
                        count: f.count,
                        first: f.first.to_string(),
                        last: f.last.to_string(),
                        detail: &f.detail,
                        evidence: f
                            .evidence
                            .iter()
                            .map(|e| JsonEvidence {
                                source: report
                                    .sources
                                    .get(e.source as usize)
                                    .map_or("?", String::as_str),
                                line: e.line,
                                event_id: e.event_id.map(|u| u.to_string()),
                            })
                            .collect(),
                        evidence_omitted: f.evidence_omitted,
                    })
                    .collect(),
                findings_omitted: report.findings_omitted,
                rules: &report.rules,
            };
            write_json(&mut *out, &doc, true)?;
            out.write_all(b"\n")
        }
        Format::Csv => {
            write_csv_record(
                out,
                [
                    "rule",
                    "subject",
                    "count",
                    "first",
                    "last",
                    "detail",
                    "evidence",
                    "evidence_omitted",
                ]
                .into_iter(),
            )?;
            for f in &report.findings {
                let (count, first, last, omitted) = (
                    f.count.to_string(),
                    f.first.to_string(),
                    f.last.to_string(),
                    f.evidence_omitted.to_string(),
                );
                let ev = evidence_list(f, &report.sources).join(";");
                write_csv_record(
                    out,
                    [
                        f.rule.as_str(),
                        f.subject.as_str(),
                        &count,
                        &first,
                        &last,
                        &f.detail,
                        &ev,
                        &omitted,
                    ]
                    .into_iter(),
                )?;
            }
            Ok(())
        }
        Format::Text => {
            let n = report.findings.len() as u64 + report.findings_omitted;
            writeln!(
                out,
                "phi-audit review: {} event(s), {n} finding(s) (days and hours in {})",
                report.events,
                escape_text(&report.time_zone)
            )?;
            for f in &report.findings {
                writeln!(out)?;
                writeln!(
                    out,
                    "[{}] {}: {} from {} to {}",
                    f.rule,
                    escape_text(&f.subject),
                    f.count,
                    f.first,
                    f.last
                )?;
                writeln!(out, "  {}", escape_text(&f.detail))?;
                writeln!(
                    out,
                    "  evidence: {}",
                    escape_text(&f.evidence_summary(&report.sources))
                )?;
            }
            if report.findings_omitted > 0 {
                writeln!(
                    out,
                    "\n... and {} more finding(s) not kept in memory",
                    report.findings_omitted
                )?;
            }
            writeln!(out)?;
            for r in &report.rules {
                let state = if r.enabled {
                    format!("{} finding(s)", r.findings)
                } else {
                    "off".to_owned()
                };
                write!(out, "  {:<18} {state}", r.rule.as_str())?;
                if r.subjects_evicted > 0 {
                    write!(
                        out,
                        "; {} subject(s) evicted at max_subjects (results may be incomplete)",
                        r.subjects_evicted
                    )?;
                }
                if let Some(n) = &r.note {
                    write!(out, "; {}", escape_text(n))?;
                }
                writeln!(out)?;
            }
            Ok(())
        }
    }
}

/// One CSV record (RFC 4180). Cells a spreadsheet would run as a formula
/// (starting with `=`, `+`, `-`, `@`, tab or CR) get a `'` first; control,
/// bidi and line-break characters are escaped ([`escape_text`]) and such
/// cells quoted, so no value splits a row or reaches a terminal raw.
pub(crate) fn write_csv_record<'a, W: Write + ?Sized>(
    out: &mut W,
    cells: impl Iterator<Item = &'a str>,
) -> io::Result<()> {
    for (i, raw) in cells.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        let c = escape_text(raw);
        let formula = raw.starts_with(['=', '+', '-', '@', '\t', '\r']);
        let quote = formula || matches!(c, Cow::Owned(_)) || c.contains([',', '"']);
        if quote {
            out.write_all(b"\"")?;
            if formula {
                out.write_all(b"'")?;
            }
            out.write_all(c.replace('"', "\"\"").as_bytes())?;
            out.write_all(b"\"")?;
        } else {
            out.write_all(c.as_bytes())?;
        }
    }
    out.write_all(b"\r\n")
}
