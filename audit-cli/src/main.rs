//! `phi-audit`: verify ledgers, validate event files, report on them.
//!
//! Safe to point at hostile files: nothing read from a file is printed
//! except in `report`'s output, where every value is escaped; bad events are
//! named by line number and position; every command reads only regular
//! files or standard input (`-`), caps lines at 16 MiB, and follows one
//! exit-code contract (see `EXIT_CODES`).

#[cfg(feature = "nats")]
mod collect;
mod html;
mod progress;
mod review;
mod source;

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use phi_audit_runtime::checkpoint::checkpoint_path;
use phi_audit_runtime::report::{self, escape_text, write_json, FailedLoginsByIp, Query};
use phi_audit_runtime::verify::{verify_reader, JsonLines, VerifyOptions, VerifyReport};
use phi_audit_runtime::{ActionType, CheckpointVerifyingKey, SchemaVersion, Timestamp};

use crate::progress::Progress;

/// All good.
const EXIT_OK: u8 = 0;
/// The content fails a check.
const EXIT_FAIL: u8 = 1;
/// The input cannot be read, or bad usage.
const EXIT_ERROR: u8 = 2;

/// The exit-code contract, shared by every command (also in README).
const EXIT_CODES: &str = "Exit codes (every command):
  0  all good
  1  the content fails a check: integrity or validation failures, malformed or
     truncated lines (including invalid UTF-8 and lines over 16 MiB), no events
     at all, or (report) lines that were skipped
  2  the input cannot be read (missing, unreadable, a directory, a FIFO or
     device not given as `-`, an I/O error, an unreachable database) or bad usage
  3  (review) findings were reported

Inputs are regular files, or standard input as `-` (for pipes, FIFOs and
devices: `phi-audit verify - < /path/to/fifo`). Nothing read from a file is
printed except in report output, where control characters, bidi overrides and
line breaks are escaped (text, CSV) or written as \\u escapes (JSON).";

#[derive(Parser)]
#[command(
    name = "phi-audit",
    version,
    about = "Verify, validate and report on phi-audit / bh-audit-schema audit ledgers",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify the hash chain (and, with a public key, the signed checkpoints) of a ledger.
    #[command(after_help = "Examples:
  phi-audit verify /var/log/audit/audit.jsonl
  phi-audit verify ledger:/var/log/audit/audit.jsonl?alg=sha384
  phi-audit verify audit.jsonl --public-key ledger.pub --format json
  phi-audit verify audit.jsonl.2 --anchor <last event_hash of audit.jsonl.1>
  cat audit.jsonl | phi-audit verify -
  phi-audit verify --postgres postgres://audit@db/app --service chart-service
  phi-audit verify postgres://audit@db/app?schema=audit --service chart-service

Checkpoints are read from PATH.checkpoints when --public-key is given.
Failures name events by line number and position, never by their content.
Exit codes: 0 PASS, 1 FAIL (including malformed or truncated lines and an
empty ledger), 2 cannot read the input or bad usage. `phi-audit --help` has
the details.")]
    Verify {
        /// Ledger file (JSON lines): PATH or ledger:PATH (a PHI_AUDIT_SINK spec), `-` for
        /// standard input, or a PostgreSQL URL (as --postgres).
        #[arg(required_unless_present = "postgres")]
        path: Option<String>,
        /// Verify the chain of one service read back from a PostgreSQL table
        /// written by `PostgresSink` (needs --service). The URL may carry
        /// `?schema=NAME`, as in PHI_AUDIT_SINK.
        #[arg(long, value_name = "URL", requires = "service", conflicts_with_all = ["path", "public_key", "checkpoints", "anchor"])]
        postgres: Option<String>,
        /// Service whose chain to verify (with --postgres).
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Schema (namespace) of the audit table (with --postgres).
        #[arg(long = "pg-schema", value_name = "SCHEMA", default_value = "public")]
        pg_schema: String,
        /// Ed25519 public key file (32 raw bytes or 64 hex characters).
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Checkpoint file (default PATH.checkpoints; needed with `-`).
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
        /// Expected prev_event_hash of the first event (verifying a slice of a chain).
        #[arg(long, value_name = "HASH")]
        anchor: Option<String>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Access-review reports over a JSONL file or the PostgreSQL table.
    #[command(after_help = "Examples:
  phi-audit report audit.jsonl --query patient --patient p-42 --since 2026-08-01T00:00:00Z
  phi-audit report audit.jsonl --query failures --format csv
  phi-audit report --postgres postgres://audit@db/app --query cross-org --format json
  phi-audit report --postgres postgres://audit@db/app --query failed-logins --threshold 5
  phi-audit report audit.jsonl --html report.html --since 2026-08-01T00:00:00Z

Queries: all, patient (--patient), actor (--actor), exports, failures (FAILURE and DENIED),
resource (--resource-type), phi-24h, cross-org, failed-logins (per client IP over --threshold).
--since/--until (RFC 3339) narrow any query. Lines that are not events are skipped and
counted (line numbers on stderr). Values are escaped: control characters, bidi overrides and
line breaks never reach the output raw.
Exit codes: 0 done, 1 lines were skipped or the input holds no events (the report is still
written), 2 cannot read the input or bad usage. `phi-audit --help` has the details.")]
    Report {
        /// Event file (JSON lines): PATH, jsonl:PATH or ledger:PATH, `-` for standard input,
        /// or a PostgreSQL URL (as --postgres).
        #[arg(required_unless_present = "postgres")]
        path: Option<String>,
        /// Read from the PostgreSQL table written by `PostgresSink` (the URL may
        /// carry `?schema=NAME`, as in PHI_AUDIT_SINK).
        #[arg(long, value_name = "URL", conflicts_with = "path")]
        postgres: Option<String>,
        /// Schema (namespace) of the audit table (with --postgres).
        #[arg(long = "pg-schema", value_name = "SCHEMA", default_value = "public")]
        pg_schema: String,
        /// Which report (not with --html).
        #[arg(long, value_enum, required_unless_present = "html")]
        query: Option<ReportQuery>,
        /// Write one self-contained HTML page instead (inline CSS and SVG, no
        /// scripts): events per day, top actors and resources, denials and
        /// failures, review findings, verification of the input.
        #[arg(long, value_name = "OUT.html", conflicts_with_all = ["query", "format"])]
        html: Option<PathBuf>,
        /// Review rules for --html's findings (TOML, as `review --rules`).
        #[arg(long, value_name = "FILE", requires = "html")]
        rules: Option<PathBuf>,
        /// Patient id (for `patient`).
        #[arg(long)]
        patient: Option<String>,
        /// Actor subject id (for `actor`).
        #[arg(long)]
        actor: Option<String>,
        /// Resource type (for `resource`).
        #[arg(long = "resource-type")]
        resource_type: Option<String>,
        /// Only events at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only events before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Failed logins per IP above this count (for `failed-logins`).
        #[arg(long, default_value_t = 5)]
        threshold: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Look for anomalies: rules with thresholds (denials, failed logins, exports,
    /// off-hours PHI access, cross-organization access, many patients) over event files,
    /// directories or PostgreSQL. Exit 3 when there are findings.
    #[command(after_help = review::REVIEW_HELP)]
    Review(review::ReviewArgs),
    /// Validate every event against bh-audit-schema.
    #[command(after_help = "Examples:
  phi-audit validate events.jsonl
  phi-audit validate jsonl:/var/log/audit/events.jsonl
  phi-audit validate events.jsonl --schema 1.0 --format json
  cat events.jsonl | phi-audit validate -

Without --schema each event is validated against its own schema_version.
Member names the schema does not define are shown as <key>.
Exit codes: 0 all valid, 1 some invalid (including lines that are not JSON,
invalid UTF-8, truncated or over 16 MiB) or no events, 2 cannot read the input
or bad usage. `phi-audit --help` has the details.")]
    Validate {
        /// Event file (JSON lines): PATH, jsonl:PATH or ledger:PATH, or `-` for standard input.
        path: String,
        /// Schema version to validate against.
        #[arg(long, value_enum)]
        schema: Option<Schema>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Store the events of a NATS JetStream stream in PostgreSQL, exactly once.
    #[cfg(feature = "nats")]
    #[command(after_help = "Examples:
  phi-audit collect --nats nats://127.0.0.1:4222 --stream AUDIT --postgres postgres://audit@db/app
  phi-audit collect --nats nats://n1:4222,nats://n2:4222,nats://n3:4222 --stream AUDIT \\
      --replicas 3 --postgres postgres://audit@db/app --schema audit

Runs until SIGINT or SIGTERM. A durable pull consumer fetches batches; each batch is
written in one transaction (chained per service) and acknowledged after the commit, so a
restart at any point stores every event once. Progress and lag on stderr when it is a
terminal; a stats line (counts only) on SIGUSR1 and at exit.
Exit codes: 0 stopped cleanly, 1 messages that could not be stored (not audit events, or an
event_id held by another event; counted), 2 cannot reach NATS, the stream or PostgreSQL, or
bad usage.")]
    Collect(collect::CollectArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ReportQuery {
    All,
    Patient,
    Actor,
    Exports,
    Failures,
    Resource,
    #[value(name = "phi-24h")]
    Phi24h,
    CrossOrg,
    FailedLogins,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    Csv,
}

impl From<ReportFormat> for report::Format {
    fn from(f: ReportFormat) -> report::Format {
        match f {
            ReportFormat::Text => report::Format::Text,
            ReportFormat::Json => report::Format::Json,
            ReportFormat::Csv => report::Format::Csv,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Schema {
    #[value(name = "1.0")]
    V1_0,
    #[value(name = "1.1")]
    V1_1,
    #[value(name = "2.0")]
    V2_0,
}

impl From<Schema> for SchemaVersion {
    fn from(s: Schema) -> SchemaVersion {
        match s {
            Schema::V1_0 => SchemaVersion::V1_0,
            Schema::V1_1 => SchemaVersion::V1_1,
            Schema::V2_0 => SchemaVersion::V2_0,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    let command = match source::resolve(cli.command) {
        Ok(c) => c,
        Err(e) => return ExitCode::from(error(e)),
    };
    let code = match command {
        Command::Verify {
            postgres: Some(url),
            service,
            pg_schema,
            format,
            ..
        } => run_verify_postgres(
            &url,
            &pg_schema,
            service.as_deref().unwrap_or_default(),
            format,
        ),
        Command::Verify {
            path,
            public_key,
            checkpoints,
            anchor,
            format,
            ..
        } => run_verify(
            path.as_deref().unwrap_or("-"),
            public_key,
            checkpoints,
            anchor,
            format,
        ),
        Command::Report {
            html: Some(out),
            path,
            postgres,
            pg_schema,
            since,
            until,
            rules,
            ..
        } => html::run(
            &out,
            &path.into_iter().collect::<Vec<_>>(),
            postgres.as_deref(),
            &pg_schema,
            since.as_deref(),
            until.as_deref(),
            rules.as_deref(),
        ),
        Command::Report {
            path,
            postgres,
            pg_schema,
            query,
            patient,
            actor,
            resource_type,
            since,
            until,
            threshold,
            format,
            ..
        } => {
            let query = query.unwrap_or(ReportQuery::All);
            let source = match (&postgres, path) {
                (Some(url), _) => Source::Postgres(url.clone(), pg_schema),
                (None, p) => Source::File(p.unwrap_or_else(|| "-".into())),
            };
            let args = ReportArgs {
                query,
                patient,
                actor,
                resource_type,
                since,
                until,
                threshold,
            };
            run_report(source, &args, format.into())
        }
        Command::Review(a) => review::run(a),
        Command::Validate {
            path,
            schema,
            format,
        } => run_validate(&path, schema.map(Into::into), format),
        #[cfg(feature = "nats")]
        Command::Collect(args) => collect::run(args),
    };
    ExitCode::from(code)
}

fn error(msg: impl std::fmt::Display) -> u8 {
    progress::clear();
    eprintln!("phi-audit: error: {msg}");
    EXIT_ERROR
}

/// A path as it may be shown: escaped (it came from the command line, but a
/// file name can hold anything).
fn shown(path: &str) -> String {
    escape_text(path).into_owned()
}

/// What kind of non-regular file `meta` is.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Opens `path` if it is a regular file, without ever blocking on a FIFO or
/// reading a device: its type is checked before it is opened, and again on
/// the open file.
fn open_regular(path: &Path) -> Result<(File, u64), String> {
    let p = shown(&path.to_string_lossy());
    let refuse = |meta: &std::fs::Metadata| {
        let kind = kind_of(meta);
        if meta.is_dir() {
            format!("{p} is a directory, not a JSON lines file")
        } else {
            format!(
                "{p} is {kind}, not a regular file; to read a stream, pass `-` and redirect it \
                 (e.g. `phi-audit verify - < {p}`)"
            )
        }
    };
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot open {p}: {e}"))?;
    if !meta.is_file() {
        return Err(refuse(&meta));
    }
    let f = File::open(path).map_err(|e| format!("cannot open {p}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot read {p}: {e}"))?;
    if !meta.is_file() {
        return Err(refuse(&meta));
    }
    Ok((f, meta.len()))
}

/// Opens PATH (a regular file) or stdin for `-`, with a progress line for
/// large files.
fn open_input(path: &str) -> Result<Box<dyn BufRead>, String> {
    if path == "-" {
        return Ok(Box::new(BufReader::with_capacity(
            256 * 1024,
            io::stdin().lock(),
        )));
    }
    let (f, len) = open_regular(Path::new(path))?;
    let reader: Box<dyn Read> = if io::stderr().is_terminal() && len >= 64 * 1024 * 1024 {
        Box::new(Progress::new(f, len))
    } else {
        Box::new(f)
    };
    Ok(Box::new(BufReader::with_capacity(256 * 1024, reader)))
}

/// Writes `out` and a newline to stdout.
fn print(out: &str) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{out}");
}

/// Writes `value` as safe JSON (see [`write_json`]) to stdout.
fn print_json<T: serde::Serialize>(value: &T) {
    let mut stdout = io::stdout().lock();
    let _ = write_json(&mut stdout, value, true);
    let _ = writeln!(stdout);
}

fn run_verify(
    path: &str,
    public_key: Option<PathBuf>,
    checkpoints: Option<PathBuf>,
    anchor: Option<String>,
    format: Format,
) -> u8 {
    let key = match public_key {
        None => None,
        Some(k) => {
            let kp = shown(&k.to_string_lossy());
            let bytes = open_regular(&k).and_then(|(f, _)| {
                let mut b: Vec<u8> = Vec::new();
                Read::take(f, 4096)
                    .read_to_end(&mut b)
                    .map(|_| b)
                    .map_err(|e| format!("cannot read the public key {kp}: {e}"))
            });
            match bytes {
                Err(e) => return error(e),
                Ok(bytes) => match CheckpointVerifyingKey::from_key_bytes(&bytes) {
                    Ok(key) => Some(key),
                    Err(e) => return error(format!("{kp}: {e}")),
                },
            }
        }
    };
    if let Some(a) = &anchor {
        if a.is_empty() || !a.bytes().all(|b| b.is_ascii_hexdigit()) {
            return error("--anchor must be a hex event hash");
        }
    }
    let input = match open_input(path) {
        Ok(i) => i,
        Err(e) => return error(e),
    };
    let cp_reader = if key.is_some() {
        let cp_path = match (&checkpoints, path) {
            (Some(p), _) => Some(p.clone()),
            (None, "-") => None,
            (None, p) => Some(checkpoint_path(Path::new(p))),
        };
        match cp_path {
            None => None,
            Some(p) => match open_regular(&p) {
                Ok((f, _)) => Some(BufReader::new(f)),
                Err(_) if checkpoints.is_none() && !p.exists() => None,
                Err(e) => return error(format!("checkpoint file: {e}")),
            },
        }
    } else {
        None
    };
    let opts = VerifyOptions {
        anchor,
        public_key: key,
        source: path.to_owned(),
        ..VerifyOptions::default()
    };
    let report = match verify_reader(input, cp_reader, &opts) {
        Ok(r) => r,
        Err(e) => return error(format!("{}: {e}", shown(path))),
    };
    progress::clear();
    match format {
        Format::Json => print_json(&report),
        Format::Text => print(&text_report(&report)),
    }
    if report.malformed_lines > 0 {
        eprintln!(
            "phi-audit: {} line(s) of {} are not JSON objects (first at line {}); the input is not a clean JSON lines ledger",
            report.malformed_lines,
            shown(path),
            report
                .failures
                .iter()
                .find(|f| f.failure_type == "malformed_line" || f.failure_type == "torn_tail")
                .and_then(|f| f.line)
                .map_or_else(|| "?".to_owned(), |l| l.to_string())
        );
    }
    if report.passed() {
        EXIT_OK
    } else {
        EXIT_FAIL
    }
}

fn text_report(r: &VerifyReport) -> String {
    let mut s = String::new();
    let mut line = |t: String| {
        s.push_str(&t);
        s.push('\n');
    };
    line(format!("phi-audit verify v{}", r.version));
    line(String::new());
    line(format!("Source: {}", shown(&r.source)));
    line(format!("Events scanned: {}", r.events_scanned));
    if let (Some(a), Some(b)) = (&r.time_range.start, &r.time_range.end) {
        // Only well-formed timestamps get here (see VerifyReport).
        line(format!(
            "Time range: {} to {}",
            escape_text(a),
            escape_text(b)
        ));
    }
    line(String::new());
    line("Chain verification:".into());
    line(format!("  Chain length:      {}", r.chain_length));
    line(format!("  Chain gaps:        {}", r.chain_gaps));
    line(format!("  Hash mismatches:   {}", r.hash_mismatches));
    line(format!("  Unchained events:  {}", r.unchained_events));
    line(format!("  Malformed lines:   {}", r.malformed_lines));
    if r.checkpoints.checked {
        line(String::new());
        line("Checkpoints:".into());
        line(format!("  Read:              {}", r.checkpoints.read));
        line(format!("  Verified:          {}", r.checkpoints.verified));
        line(format!("  Failed:            {}", r.checkpoints.failed));
        if let Some(n) = r.checkpoints.events_after_last_checkpoint {
            line(format!(
                "  Unprotected tail:  {n} event(s) after the last checkpoint"
            ));
        }
    }
    for f in &r.failures {
        line(String::new());
        let at = match (f.line, f.event_index) {
            (Some(l), Some(i)) => format!(" at line {l} (event {i})"),
            (Some(l), None) => format!(" at line {l}"),
            (None, _) => String::new(),
        };
        line(format!("FAILURE {}{at}:", f.failure_type));
        if let Some(e) = &f.expected {
            line(format!("  expected:       {}", escape_text(e)));
        }
        if let Some(a) = &f.actual {
            line(format!("  actual:         {}", escape_text(a)));
        }
        line(format!("  detail:         {}", f.message));
    }
    if r.failures_omitted > 0 {
        line(format!("\n... and {} more failure(s)", r.failures_omitted));
    }
    line(String::new());
    if r.passed() {
        line("Result: PASS - audit chain is intact".into());
    } else {
        line("Result: FAIL - integrity violation detected".into());
    }
    s.pop();
    s
}

#[derive(serde::Serialize)]
struct Invalid {
    line: u64,
    errors: Vec<PathError>,
}

#[derive(serde::Serialize)]
struct PathError {
    path: String,
    message: String,
}

/// Member names of bh-audit-schema (1.0, 1.1, 2.0): the only names from an
/// event that `validate` shows.
const SCHEMA_NAMES: &[&str] = &[
    "acting",
    "action",
    "actor",
    "agent",
    "agent_session_id",
    "authorizing",
    "chain_depth",
    "client_ip",
    "correlation",
    "data_classification",
    "delegation",
    "delegation_type",
    "environment",
    "error_message",
    "error_type",
    "event_hash",
    "event_id",
    "harness",
    "harness_version",
    "hash_alg",
    "http",
    "id",
    "integrity",
    "interface",
    "metadata",
    "method",
    "model_family",
    "model_version",
    "name",
    "org_id",
    "outcome",
    "owner_org_id",
    "parent_agent_session_id",
    "patient_id",
    "phi_touched",
    "prev_event_hash",
    "request_id",
    "resource",
    "roles",
    "route_template",
    "schema_version",
    "service",
    "session_id",
    "status",
    "status_code",
    "subject_id",
    "subject_type",
    "timestamp",
    "trace_id",
    "type",
    "user_agent",
    "vendor",
    "version",
];

/// A JSON Pointer from the validator with every member name the schema
/// does not define (metadata keys, unknown members: text from the file)
/// shown as `<key>`; array indices are kept.
fn safe_pointer(pointer: &str) -> String {
    if pointer.is_empty() {
        return "(event)".to_owned();
    }
    pointer
        .split('/')
        .skip(1)
        .map(|seg| {
            let name = seg.replace("~1", "/").replace("~0", "~");
            if SCHEMA_NAMES.contains(&name.as_str())
                || (!seg.is_empty() && seg.len() <= 10 && seg.bytes().all(|b| b.is_ascii_digit()))
            {
                format!("/{seg}")
            } else {
                "/<key>".to_owned()
            }
        })
        .collect()
}

fn run_validate(path: &str, schema: Option<SchemaVersion>, format: Format) -> u8 {
    let input = match open_input(path) {
        Ok(i) => i,
        Err(e) => return error(e),
    };
    let mut lines = JsonLines::new(input);
    let mut events = 0u64;
    let mut valid = 0u64;
    let mut invalid: Vec<Invalid> = Vec::new();
    let mut invalid_count = 0u64;
    let mut not_json = 0u64;
    let mut stdout = io::stdout().lock();
    let whole = |m: &str| {
        vec![PathError {
            path: "(line)".into(),
            message: m.to_owned(),
        }]
    };
    loop {
        let line = match lines.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return error(format!("cannot read {}: {e}", shown(path))),
        };
        let text = line.bytes.trim_ascii();
        if text.is_empty() && !line.too_long {
            continue;
        }
        events += 1;
        let errors: Vec<PathError> = if line.too_long {
            not_json += 1;
            whole("line is longer than the 16 MiB limit: it cannot be an event")
        } else if std::str::from_utf8(text).is_err() {
            not_json += 1;
            whole("not valid UTF-8")
        } else {
            match serde_json::from_slice::<serde_json::Value>(text) {
                Err(_) if !line.terminated => {
                    not_json += 1;
                    whole("unterminated last line that is not JSON (a write cut off)")
                }
                Err(_) => {
                    not_json += 1;
                    whole("not valid JSON")
                }
                Ok(v) => match phi_audit_runtime::schema::validate_value(&v, schema) {
                    Ok(_) => {
                        valid += 1;
                        continue;
                    }
                    Err(errs) => errs
                        .iter()
                        .map(|e| PathError {
                            path: safe_pointer(&e.path),
                            message: e.message.clone(),
                        })
                        .collect(),
                },
            }
        };
        invalid_count += 1;
        let item = Invalid {
            line: line.number,
            errors,
        };
        match format {
            // Text output streams; JSON collects (capped) for one document.
            Format::Text => {
                for e in &item.errors {
                    let _ = writeln!(
                        stdout,
                        "line {}: {}: {}",
                        item.line,
                        e.path,
                        escape_text(&e.message)
                    );
                }
            }
            Format::Json => {
                if invalid.len() < 10_000 {
                    invalid.push(item);
                }
            }
        }
    }
    drop(stdout);
    progress::clear();
    if format == Format::Json {
        let doc = serde_json::json!({
            "source": path,
            "schema": schema.map(|s| s.as_str()),
            "events": events,
            "valid": valid,
            "invalid": invalid_count,
            "not_json": not_json,
            "invalid_events": invalid,
            "invalid_events_omitted": invalid_count.saturating_sub(invalid.len() as u64),
        });
        print_json(&doc);
    } else {
        print(&format!(
            "{events} event(s): {valid} valid, {invalid_count} invalid ({not_json} not JSON)"
        ));
    }
    if events == 0 {
        eprintln!("phi-audit: {} holds no events", shown(path));
        return EXIT_FAIL;
    }
    if invalid_count > 0 {
        EXIT_FAIL
    } else {
        EXIT_OK
    }
}

enum Source {
    File(String),
    Postgres(String, String),
}

struct ReportArgs {
    query: ReportQuery,
    patient: Option<String>,
    actor: Option<String>,
    resource_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    threshold: u64,
}

fn parse_time(flag: &str, v: &Option<String>) -> Result<Option<Timestamp>, String> {
    match v {
        None => Ok(None),
        Some(s) => Timestamp::parse_rfc3339(s)
            .map(Some)
            .map_err(|e| format!("--{flag}: {e} (expected e.g. 2026-08-01T00:00:00Z)")),
    }
}

fn build_query(a: &ReportArgs) -> Result<Query, String> {
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .ok_or_else(|| format!("this query needs --{flag}"))
    };
    let mut q = match a.query {
        ReportQuery::All | ReportQuery::FailedLogins => Query::all(),
        ReportQuery::Patient => Query {
            patient_id: Some(need(&a.patient, "patient")?),
            ..Query::all()
        },
        ReportQuery::Actor => Query {
            actor_subject_id: Some(need(&a.actor, "actor")?),
            ..Query::all()
        },
        ReportQuery::Exports => Query::all().action(ActionType::Export),
        ReportQuery::Failures => Query::failures_and_denials(),
        ReportQuery::Resource => Query::resource_type(need(&a.resource_type, "resource-type")?),
        ReportQuery::Phi24h => Query::phi_last_24h(Timestamp::now()),
        ReportQuery::CrossOrg => Query::cross_org(),
    };
    if let Some(t) = parse_time("since", &a.since)? {
        q = q.since(t);
    }
    if let Some(t) = parse_time("until", &a.until)? {
        q = q.until(t);
    }
    Ok(q)
}

/// Lines a file report skipped: how many, and the first few to name.
#[derive(Default)]
struct Skipped {
    count: u64,
    first: Option<u64>,
}

impl Skipped {
    /// Counts line `line`, naming it on stderr (the first 20).
    fn note(&mut self, line: u64, reason: report::InvalidReason) {
        self.count += 1;
        self.first.get_or_insert(line);
        if self.count <= 20 {
            eprintln!("phi-audit: line {line} skipped: {reason}");
        } else if self.count == 21 {
            eprintln!("phi-audit: (further skipped lines are counted, not listed)");
        }
    }
}

fn run_report(source: Source, a: &ReportArgs, format: report::Format) -> u8 {
    let query = match build_query(a) {
        Ok(q) => q,
        Err(e) => return error(e),
    };
    let mut logins = FailedLoginsByIp::over(a.threshold);
    logins.since = query.since;
    logins.until = query.until;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut skipped = Skipped::default();
    let mut events_read = None;
    let result: Result<(), String> = match &source {
        Source::File(path) => {
            let reader = match open_input(path) {
                Ok(r) => r,
                Err(e) => return error(e),
            };
            if a.query == ReportQuery::FailedLogins {
                report::failed_logins_jsonl_with(reader, &logins, |l, r| skipped.note(l, r))
                    .map_err(|e| e.to_string())
                    .and_then(|scan| {
                        events_read = Some(scan.events);
                        report::render_groups(&scan.groups, "client_ip", format, &mut out)
                            .map_err(|e| e.to_string())
                    })
            } else {
                let mut failure = None;
                let mut q = report::query_jsonl(reader, &query);
                let rows = std::iter::from_fn(|| loop {
                    match q.next()? {
                        Ok(row) => return Some(row),
                        Err(report::ReportError::InvalidLine { line, reason }) => {
                            skipped.note(line, reason)
                        }
                        Err(e) => {
                            failure = Some(e.to_string());
                            return None;
                        }
                    }
                });
                let r = report::render(rows, format, &mut out).map_err(|e| e.to_string());
                events_read = Some(q.events_read());
                match failure {
                    Some(f) => Err(f),
                    None => r.map(|_| ()),
                }
            }
        }
        Source::Postgres(url, schema) => {
            report_postgres(url, schema, a, &query, &logins, format, &mut out)
        }
    };
    if skipped.count > 0 && format == report::Format::Text {
        let _ = writeln!(
            out,
            "{} line(s) skipped: not events (first at line {})",
            skipped.count,
            skipped.first.unwrap_or(0)
        );
    }
    let flushed = out.flush().map_err(|e| e.to_string());
    progress::clear();
    if let Err(e) = result.and(flushed) {
        return error(e);
    }
    let name = match &source {
        Source::File(p) => shown(p),
        Source::Postgres(..) => String::new(),
    };
    if skipped.count > 0 {
        eprintln!(
            "phi-audit: {} line(s) of {name} were not events and were skipped (first at line {}); the report covers the rest",
            skipped.count,
            skipped.first.unwrap_or(0)
        );
        return EXIT_FAIL;
    }
    if events_read == Some(0) {
        eprintln!("phi-audit: {name} holds no events");
        return EXIT_FAIL;
    }
    EXIT_OK
}

#[cfg(feature = "postgres")]
fn report_postgres(
    url: &str,
    schema: &str,
    a: &ReportArgs,
    query: &Query,
    logins: &FailedLoginsByIp,
    format: report::Format,
    out: &mut dyn Write,
) -> Result<(), String> {
    let mut store =
        phi_audit_runtime::PostgresStore::connect(url, schema).map_err(|e| e.to_string())?;
    if a.query == ReportQuery::FailedLogins {
        let groups = store
            .failed_logins_by_ip(logins)
            .map_err(|e| e.to_string())?;
        report::render_groups(&groups, "client_ip", format, out).map_err(|e| e.to_string())
    } else {
        let rows = store.query(query).map_err(|e| e.to_string())?;
        report::render(rows, format, out)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(not(feature = "postgres"))]
fn report_postgres(
    _url: &str,
    _schema: &str,
    _a: &ReportArgs,
    _query: &Query,
    _logins: &FailedLoginsByIp,
    _format: report::Format,
    _out: &mut dyn Write,
) -> Result<(), String> {
    Err("this phi-audit was built without the `postgres` feature".into())
}

#[cfg(feature = "postgres")]
fn run_verify_postgres(url: &str, schema: &str, service: &str, format: Format) -> u8 {
    let mut store = match phi_audit_runtime::PostgresStore::connect(url, schema) {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    let chain = match store.read_chain(service) {
        Ok(c) => c,
        Err(e) => return error(e),
    };
    let (result, code) = match chain.verify() {
        Ok(0) => (
            format!(
                "FAIL: service {} has no chained events",
                shown(&format!("{service:?}"))
            ),
            EXIT_FAIL,
        ),
        Ok(n) => (
            format!(
                "PASS: {n} chained event(s) of service {} verified",
                shown(&format!("{service:?}"))
            ),
            EXIT_OK,
        ),
        Err(e) => (format!("FAIL: {e}"), EXIT_FAIL),
    };
    match format {
        Format::Text => print(&result),
        Format::Json => print_json(
            &serde_json::json!({"source": "postgres", "service": service, "result": if code == EXIT_OK { "PASS" } else { "FAIL" }, "message": result}),
        ),
    }
    code
}

#[cfg(not(feature = "postgres"))]
fn run_verify_postgres(_url: &str, _schema: &str, _service: &str, _format: Format) -> u8 {
    error("this phi-audit was built without the `postgres` feature")
}
