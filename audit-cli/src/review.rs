//! `phi-audit review`: anomaly rules over JSON-lines files, directories of
//! them, or the PostgreSQL table (phi_audit_runtime::review does the work).

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use phi_audit_runtime::report::InvalidReason;
use phi_audit_runtime::review::{
    self, scan_jsonl, EvidenceRef, ReviewEvent, ReviewReport, Reviewer, Rules, DEFAULT_RULES_TOML,
};
use phi_audit_runtime::Timestamp;

use crate::{error, open_input, open_regular, progress, shown, EXIT_FAIL, EXIT_OK};

/// Findings were reported.
pub(crate) const EXIT_FINDINGS: u8 = 3;

pub(crate) const REVIEW_HELP: &str = "Examples:
  phi-audit review /var/log/audit/audit.jsonl
  phi-audit review /var/log/audit/ --rules review.toml --format json
  phi-audit review a.jsonl b.jsonl --since 2026-08-01T00:00:00Z --format csv
  phi-audit review --postgres postgres://audit@db/app --time-zone America/New_York
  phi-audit review --print-default-rules > review.toml

Rules (thresholds in a TOML file, defaults built in; --print-default-rules
shows them): denials (actor, DENIED in a window), failed_logins (client IP),
exports (actor, per day), off_hours (PHI access outside office hours),
cross_org (actor org differs from owner org), distinct_patients (actor,
patients in a window), new_patient (opt-in: first-time access after a
baseline). A directory is read as its *.jsonl / *.ndjson / *.json files
(checkpoint and damaged-tail files left out), ordered by their first event.
Values are escaped: control characters, bidi overrides and line breaks never
reach the output raw; CSV cells that would run as formulas are defused.
Exit codes: 0 no findings, 3 findings (the report is written), 1 no findings
but lines were skipped or there were no events, 2 cannot read the input or
the rules, or bad usage.";

/// `phi-audit review` arguments.
#[derive(Args)]
pub(crate) struct ReviewArgs {
    /// Event files (JSON lines) or directories of them: PATH, jsonl:PATH,
    /// ledger:PATH, `-` for standard input, or a PostgreSQL URL (as --postgres).
    inputs: Vec<String>,
    /// Review the PostgreSQL table written by `PostgresSink` (the URL may
    /// carry `?schema=NAME`).
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Schema (namespace) of the audit table (with --postgres).
    #[arg(long = "pg-schema", value_name = "SCHEMA", default_value = "public")]
    pg_schema: String,
    /// Rules file (TOML) overriding the built-in thresholds.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Print the built-in rules (a TOML file to start from) and exit.
    #[arg(long)]
    print_default_rules: bool,
    /// Time zone for office hours and days (IANA name; overrides the rules file).
    #[arg(long, value_name = "TZ")]
    time_zone: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReviewFormat::Text)]
    format: ReviewFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReviewFormat {
    Text,
    Json,
    Csv,
}

/// Reads a rules file (at most 1 MiB of UTF-8) and applies `--time-zone`.
pub(crate) fn load_rules(path: Option<&Path>, time_zone: Option<&str>) -> Result<Rules, String> {
    let mut rules = match path {
        None => Rules::default(),
        Some(p) => {
            let name = shown(&p.to_string_lossy());
            let (f, _) = open_regular(p)?;
            let mut bytes = Vec::new();
            f.take(1 << 20 | 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read the rules file {name}: {e}"))?;
            if bytes.len() > 1 << 20 {
                return Err(format!("the rules file {name} is over 1 MiB"));
            }
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("the rules file {name} is not UTF-8"))?;
            Rules::from_toml_str(&text).map_err(|e| format!("{name}: {e}"))?
        }
    };
    if let Some(tz) = time_zone {
        rules.time_zone = tz.to_owned();
        rules.check().map_err(|e| format!("--time-zone: {e}"))?;
    }
    Ok(rules)
}

/// The time range of `--since` / `--until`.
#[derive(Clone, Copy, Default)]
pub(crate) struct Range {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl Range {
    pub(crate) fn parse(since: Option<&str>, until: Option<&str>) -> Result<Range, String> {
        let p = |flag: &str, v: Option<&str>| -> Result<Option<Timestamp>, String> {
            v.map(|s| {
                Timestamp::parse_rfc3339(s)
                    .map_err(|e| format!("--{flag}: {e} (expected e.g. 2026-08-01T00:00:00Z)"))
            })
            .transpose()
        };
        Ok(Range {
            since: p("since", since)?,
            until: p("until", until)?,
        })
    }

    pub(crate) fn contains(&self, t: Timestamp) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }
}

/// Where events come from.
pub(crate) enum Inputs {
    /// Files (or `-`), in reading order.
    Files(Vec<String>),
    /// PostgreSQL URL and table schema.
    Postgres(String, String),
}

/// Resolves positional inputs and `--postgres` into files (directories
/// expanded and ordered) or a PostgreSQL source.
pub(crate) fn resolve_inputs(
    inputs: &[String],
    postgres: Option<&str>,
    pg_schema: &str,
) -> Result<Inputs, String> {
    let mut files = Vec::new();
    let mut pg: Option<(String, Option<String>)> = match postgres {
        Some(url) => Some(crate::source::postgres_arg(url)?),
        None => None,
    };
    for arg in inputs {
        match crate::source::input(arg)? {
            crate::source::Input::Postgres(url, s) => {
                if pg.is_some() {
                    return Err("give one PostgreSQL source".into());
                }
                pg = Some((url, s));
            }
            crate::source::Input::File(f) => {
                let p = Path::new(&f);
                if f != "-" && p.is_dir() {
                    files.extend(directory_files(p)?);
                } else {
                    files.push(f);
                }
            }
        }
    }
    match pg {
        Some(_) if !files.is_empty() => Err("give files or a PostgreSQL source, not both".into()),
        Some((url, s)) => {
            let mut schema = pg_schema.to_owned();
            crate::source::schema(s, &mut schema)?;
            Ok(Inputs::Postgres(url, schema))
        }
        None if files.is_empty() => {
            Err("give event files or directories, `-` for standard input, or --postgres URL".into())
        }
        None => {
            if files.iter().filter(|f| *f == "-").count() > 1 {
                return Err("standard input (`-`) can be read once".into());
            }
            Ok(Inputs::Files(files))
        }
    }
}

/// The event files of directory `dir`: regular files named `*.jsonl*`,
/// `*.ndjson` or `*.json`, without checkpoint and damaged-tail files,
/// ordered by their first event's time, then by name.
fn directory_files(dir: &Path) -> Result<Vec<String>, String> {
    let d = shown(&dir.to_string_lossy());
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read the directory {d}: {e}"))?;
    let mut found: Vec<(Option<Timestamp>, String)> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| format!("cannot read the directory {d}: {e}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = !name.starts_with('.')
            && (name.contains(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json"))
            && !name.ends_with(".checkpoints")
            && !name.contains(".damaged-");
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if wanted && is_file {
            let path = entry.path();
            let Some(s) = path.to_str() else {
                return Err(format!("a file name in {d} is not UTF-8"));
            };
            found.push((first_timestamp(&path), s.to_owned()));
        }
    }
    if found.is_empty() {
        return Err(format!("the directory {d} holds no *.jsonl files"));
    }
    found.sort_by(|a, b| {
        (a.0.is_none(), a.0, natural_key(&a.1)).cmp(&(b.0.is_none(), b.0, natural_key(&b.1)))
    });
    Ok(found.into_iter().map(|(_, n)| n).collect())
}

/// The time of the first event among the first 1000 lines of `path`.
fn first_timestamp(path: &Path) -> Option<Timestamp> {
    let (f, _) = open_regular(path).ok()?;
    let mut lines = phi_audit_runtime::verify::JsonLines::with_max(BufReader::new(f), 1 << 20);
    for _ in 0..1000 {
        let l = lines.next_line().ok()??;
        if let Ok(text) = std::str::from_utf8(l.bytes.trim_ascii()) {
            if let Ok(e) = ReviewEvent::parse(text) {
                return Some(e.timestamp);
            }
        }
    }
    None
}

/// Digit runs compared as numbers (`a.jsonl.2` before `a.jsonl.10`).
fn natural_key(s: &str) -> Vec<(u8, u128, String)> {
    let mut out = Vec::new();
    let mut digits = String::new();
    let mut text = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                out.push((0, 0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                out.push((
                    1,
                    digits.parse().unwrap_or(u128::MAX),
                    std::mem::take(&mut digits),
                ));
            }
            text.push(c);
        }
    }
    if !text.is_empty() {
        out.push((0, 0, text));
    }
    if !digits.is_empty() {
        out.push((1, digits.parse().unwrap_or(u128::MAX), digits));
    }
    out
}

/// Lines skipped across sources: counted, the first 20 named on stderr.
#[derive(Default)]
pub(crate) struct Skipped {
    pub count: u64,
}

impl Skipped {
    pub(crate) fn note(&mut self, source: &str, line: u64, reason: &dyn std::fmt::Display) {
        self.count += 1;
        if self.count <= 20 {
            eprintln!("phi-audit: {} line {line} skipped: {reason}", shown(source));
        } else if self.count == 21 {
            eprintln!("phi-audit: (further skipped lines are counted, not listed)");
        }
    }
}

/// Streams every event of `inputs` in `range` to `f(event, evidence)`;
/// registers each source with `add_source`. Returns the events read (in
/// range or not).
pub(crate) fn for_each_event(
    inputs: &Inputs,
    range: Range,
    skipped: &mut Skipped,
    add_source: &mut dyn FnMut(&str) -> u32,
    f: &mut dyn FnMut(&ReviewEvent<'_>, EvidenceRef),
) -> Result<u64, String> {
    let mut events = 0u64;
    match inputs {
        Inputs::Files(files) => {
            for path in files {
                let src = add_source(path);
                let reader = open_input(path)?;
                let counts = scan_jsonl(
                    reader,
                    |e, line| {
                        if range.contains(e.timestamp) {
                            f(e, EvidenceRef::line(src, line, e.event_id));
                        }
                    },
                    |line, reason: InvalidReason| skipped.note(path, line, &reason),
                )
                .map_err(|e| format!("cannot read {}: {e}", shown(path)))?;
                events += counts.events;
            }
        }
        Inputs::Postgres(url, schema) => {
            let src = add_source("postgres");
            events += postgres_events(url, schema, range, src, skipped, f)?;
        }
    }
    Ok(events)
}

#[cfg(feature = "postgres")]
fn postgres_events(
    url: &str,
    schema: &str,
    range: Range,
    src: u32,
    skipped: &mut Skipped,
    f: &mut dyn FnMut(&ReviewEvent<'_>, EvidenceRef),
) -> Result<u64, String> {
    let mut store =
        phi_audit_runtime::PostgresStore::connect(url, schema).map_err(|e| e.to_string())?;
    let mut q = phi_audit_runtime::report::Query::all();
    q.since = range.since;
    q.until = range.until;
    let mut n = 0u64;
    store
        .query_each(&q, |row| {
            n += 1;
            match ReviewEvent::from_row(&row) {
                Some(e) => f(&e, EvidenceRef::id(src, row.event_id)),
                None => {
                    skipped.count += 1;
                    if skipped.count == 1 {
                        eprintln!(
                            "phi-audit: postgres rows with an action or outcome outside the schema are skipped (counted)"
                        );
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(n)
}

#[cfg(not(feature = "postgres"))]
fn postgres_events(
    _url: &str,
    _schema: &str,
    _range: Range,
    _src: u32,
    _skipped: &mut Skipped,
    _f: &mut dyn FnMut(&ReviewEvent<'_>, EvidenceRef),
) -> Result<u64, String> {
    Err("this phi-audit was built without the `postgres` feature".into())
}

/// Reviews `inputs` with `rules`; returns the report, the events read and
/// the lines skipped.
pub(crate) fn review_inputs(
    inputs: &Inputs,
    rules: Rules,
    range: Range,
) -> Result<(ReviewReport, u64, u64), String> {
    let mut reviewer = Reviewer::new(rules).map_err(|e| e.to_string())?;
    let mut skipped = Skipped::default();
    let reviewer_cell = std::cell::RefCell::new(&mut reviewer);
    let events = for_each_event(
        inputs,
        range,
        &mut skipped,
        &mut |name| reviewer_cell.borrow_mut().add_source(name),
        &mut |e, at| reviewer_cell.borrow_mut().observe(e, at),
    )?;
    Ok((reviewer.finish(), events, skipped.count))
}

/// Runs `phi-audit review`.
pub(crate) fn run(a: ReviewArgs) -> u8 {
    if a.print_default_rules {
        print!("{DEFAULT_RULES_TOML}");
        return EXIT_OK;
    }
    let rules = match load_rules(a.rules.as_deref(), a.time_zone.as_deref()) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    let range = match Range::parse(a.since.as_deref(), a.until.as_deref()) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    let inputs = match resolve_inputs(&a.inputs, a.postgres.as_deref(), &a.pg_schema) {
        Ok(i) => i,
        Err(e) => return error(e),
    };
    let (report, events, skipped) = match review_inputs(&inputs, rules, range) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    progress::clear();
    let format = match a.format {
        ReviewFormat::Text => review::Format::Text,
        ReviewFormat::Json => review::Format::Json,
        ReviewFormat::Csv => review::Format::Csv,
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = review::render(&report, format, &mut out).and_then(|_| out.flush());
    if let Err(e) = written {
        return error(format!("cannot write the report: {e}"));
    }
    let findings = report.findings.len() as u64 + report.findings_omitted;
    if skipped > 0 {
        eprintln!(
            "phi-audit: {skipped} line(s) were not events and were skipped; the review covers the rest"
        );
    }
    if findings > 0 {
        return EXIT_FINDINGS;
    }
    if events == 0 {
        eprintln!("phi-audit: the input holds no events");
        return EXIT_FAIL;
    }
    if skipped > 0 {
        return EXIT_FAIL;
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::natural_key;

    #[test]
    fn natural_order() {
        let mut v = vec!["a.jsonl.10", "a.jsonl.2", "a.jsonl", "a.jsonl.1"];
        v.sort_by_key(|s| natural_key(s));
        assert_eq!(v, ["a.jsonl", "a.jsonl.1", "a.jsonl.2", "a.jsonl.10"]);
    }
}
