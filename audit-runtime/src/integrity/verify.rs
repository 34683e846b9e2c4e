//! Streaming verification of a ledger's hash chain and signed checkpoints.
//!
//! [`verify_reader`] walks JSON lines in order with constant memory and
//! returns a [`VerifyReport`]. The report has every field of the JSON report
//! of bh-audit-logger's `bh-audit verify --format json`, with the same
//! meaning and counting rules (so `chain_gaps` and `hash_mismatches` agree
//! with it on the same file), plus:
//!
//! * each failure's 1-based `line` number;
//! * the report never repeats what the file says: failures identify events
//!   by `line` and `event_index`, never by their `event_id` or timestamp
//!   (so, unlike the reference's, they have no `event_id` and `timestamp`
//!   fields); `expected` and `actual` hold only hashes (hex digests of the
//!   algorithm's length; anything else is left out), key ids and counts;
//!   `time_range` holds only well-formed RFC 3339 timestamps;
//! * failure kinds the reference does not report (it passes such files):
//!   `unchained_event` (an event without an `integrity` block), `malformed_line`
//!   (not a JSON object), `torn_tail` (an unterminated, unparseable last line),
//!   `unknown_hash_alg`, `bad_integrity` (an `integrity` that is not an object),
//!   `empty_ledger` (no events at all), and the checkpoint kinds
//!   `checkpoint_missing`, `checkpoint_malformed`, `checkpoint_bad_signature`,
//!   `checkpoint_order`, `checkpoint_mismatch` and `truncated`;
//! * `lines_read`, `malformed_lines`, `failures_omitted` (failures beyond
//!   [`VerifyOptions::max_failures`] are counted, not listed), `anchor`, and a
//!   `checkpoints` summary.
//!
//! `result` is `PASS` only when there is no failure of any kind.
//!
//! ```
//! use phi_audit::verify::{verify_reader, VerifyOptions};
//! let report = verify_reader(&b""[..], None::<&[u8]>, &VerifyOptions::default()).unwrap();
//! assert_eq!(report.result, "FAIL");
//! assert_eq!(report.failures[0].failure_type, "empty_ledger");
//! ```

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::integrity::checkpoint::{checkpoint_path, Checkpoint, CheckpointVerifyingKey};
use crate::integrity::event_hash;
use crate::model::event::HashAlg;

/// Longest line read whole; longer lines are reported as malformed and
/// skipped without being held in memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One line from a [`JsonLines`] reader.
#[derive(Debug)]
pub struct Line<'a> {
    /// 1-based line number.
    pub number: u64,
    /// The line without its `\n` (empty when `too_long`).
    pub bytes: &'a [u8],
    /// Whether the line ended with `\n` (false only for the last line).
    pub terminated: bool,
    /// The line exceeded [`MAX_LINE_BYTES`] and was skipped.
    pub too_long: bool,
}

/// Reads `\n`-separated lines from any [`BufRead`] with one reused buffer
/// and a cap on line length, so memory stays bounded on any input.
#[derive(Debug)]
pub struct JsonLines<R> {
    reader: R,
    buf: Vec<u8>,
    number: u64,
    max: usize,
}

impl<R: BufRead> JsonLines<R> {
    /// Lines of `reader`, capped at [`MAX_LINE_BYTES`].
    pub fn new(reader: R) -> JsonLines<R> {
        JsonLines::with_max(reader, MAX_LINE_BYTES)
    }

    /// Lines of `reader`, capped at `max` bytes.
    pub fn with_max(reader: R, max: usize) -> JsonLines<R> {
        JsonLines {
            reader,
            buf: Vec::new(),
            number: 0,
            max,
        }
    }

    /// The next line, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        let terminated = loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break false;
            }
            any = true;
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if !too_long {
                if self.buf.len() + take > self.max {
                    too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(&chunk[..take]);
                }
            }
            self.reader.consume(take + usize::from(done));
            if done {
                break true;
            }
        };
        if !any {
            return Ok(None);
        }
        self.number += 1;
        Ok(Some(Line {
            number: self.number,
            bytes: &self.buf,
            terminated,
            too_long,
        }))
    }
}

/// How to verify.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Algorithm for events whose `integrity` has no `hash_alg` (SHA-256).
    pub default_alg: HashAlg,
    /// Expected `prev_event_hash` of the first event, to verify a slice of a
    /// chain (a rotated file, a time window). `None`: the first event must
    /// start a chain or is reported as a gap, as the reference does.
    pub anchor: Option<String>,
    /// Verify checkpoints with this key. Without it, checkpoints are not read.
    pub public_key: Option<CheckpointVerifyingKey>,
    /// Failures listed in the report; more are only counted.
    pub max_failures: usize,
    /// The `source` written in the report.
    pub source: String,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            default_alg: HashAlg::Sha256,
            anchor: None,
            public_key: None,
            max_failures: 1000,
            source: String::new(),
        }
    }
}

/// Builders: the struct is `#[non_exhaustive]` (options may be added), so
/// outside this crate it is built from [`VerifyOptions::new`] and these.
impl VerifyOptions {
    /// The defaults (as [`Default`]).
    pub fn new() -> VerifyOptions {
        VerifyOptions::default()
    }

    /// Sets [`default_alg`](VerifyOptions::default_alg).
    pub fn default_alg(mut self, alg: HashAlg) -> Self {
        self.default_alg = alg;
        self
    }

    /// Sets [`anchor`](VerifyOptions::anchor).
    pub fn anchor(mut self, prev_event_hash: Option<String>) -> Self {
        self.anchor = prev_event_hash;
        self
    }

    /// Sets [`public_key`](VerifyOptions::public_key) (`Some`: checkpoints
    /// are verified).
    pub fn public_key(mut self, key: Option<CheckpointVerifyingKey>) -> Self {
        self.public_key = key;
        self
    }

    /// Sets [`max_failures`](VerifyOptions::max_failures).
    pub fn max_failures(mut self, n: usize) -> Self {
        self.max_failures = n;
        self
    }

    /// Sets [`source`](VerifyOptions::source).
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }
}

/// First and last event timestamps (file order, as the reference reports).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TimeRange {
    /// Timestamp of the first event.
    pub start: Option<String>,
    /// Timestamp of the last event.
    pub end: Option<String>,
}

/// One integrity failure. It names the event by position (`line`,
/// `event_index`) and never holds text read from the ledger other than
/// hashes, key ids and counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyFailure {
    /// 0-based index among events (non-blank lines), as the reference counts.
    pub event_index: Option<u64>,
    /// The kind: `hash_mismatch`, `chain_gap`, or one of ours (module docs).
    pub failure_type: String,
    /// Expected value (a hash, a key id, a count), when there is one.
    pub expected: Option<String>,
    /// Value found (a hash, a key id, a count), when there is one and it
    /// has that form; other text found in the file is never copied here.
    pub actual: Option<String>,
    /// What it means, without event content.
    pub message: String,
    /// 1-based line number in the ledger (or in the checkpoint file for
    /// `checkpoint_malformed`, `checkpoint_bad_signature`, `checkpoint_order`).
    pub line: Option<u64>,
}

/// Checkpoint verification summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointSummary {
    /// A public key was given, so checkpoints were verified.
    pub checked: bool,
    /// Checkpoints read.
    pub read: u64,
    /// Checkpoints with a valid signature that matched the ledger.
    pub verified: u64,
    /// Checkpoints that failed (signature, order, mismatch, beyond the end).
    pub failed: u64,
    /// `count` of the last verified checkpoint.
    pub last_verified_count: Option<u64>,
    /// Events after the last verified checkpoint: a tail no checkpoint
    /// protects yet.
    pub events_after_last_checkpoint: Option<u64>,
}

/// The verification report. Serializes to the reference's JSON report
/// fields plus ours (module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Version of this crate.
    pub version: String,
    /// What was verified (a path or `-`).
    pub source: String,
    /// Events (non-blank lines) scanned.
    pub events_scanned: u64,
    /// First and last timestamps.
    pub time_range: TimeRange,
    /// Events with an `integrity` block.
    pub chain_length: u64,
    /// Missing or wrong `prev_event_hash` values.
    pub chain_gaps: u64,
    /// Events whose content does not match their `event_hash`.
    pub hash_mismatches: u64,
    /// Events without an `integrity` block.
    pub unchained_events: u64,
    /// `PASS` or `FAIL`.
    pub result: String,
    /// The failures, in order (at most `max_failures`).
    pub failures: Vec<VerifyFailure>,
    /// Physical lines read, blank ones included.
    pub lines_read: u64,
    /// Lines that are not a JSON object (torn tail included).
    pub malformed_lines: u64,
    /// Failures counted but not listed.
    pub failures_omitted: u64,
    /// The anchor used, if any.
    pub anchor: Option<String>,
    /// Checkpoint results.
    pub checkpoints: CheckpointSummary,
}

impl VerifyReport {
    /// True when `result` is `PASS`.
    pub fn passed(&self) -> bool {
        self.result == "PASS"
    }

    /// Total failures, listed or not.
    pub fn failure_count(&self) -> u64 {
        self.failures.len() as u64 + self.failures_omitted
    }
}

/// Why verification could not run at all.
#[derive(Debug)]
#[non_exhaustive]
pub enum VerifyError {
    /// The ledger could not be read.
    Ledger(io::Error),
    /// The checkpoint file exists but could not be read.
    Checkpoints(io::Error),
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::Ledger(e) => write!(f, "cannot read the ledger: {e}"),
            VerifyError::Checkpoints(e) => write!(f, "cannot read the checkpoint file: {e}"),
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VerifyError::Ledger(e) | VerifyError::Checkpoints(e) => Some(e),
        }
    }
}

/// Verifies the ledger at `path` and, with a public key, its checkpoint
/// file `<path>.checkpoints` (its absence is then a failure).
pub fn verify_path(path: &Path, options: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let f = File::open(path).map_err(VerifyError::Ledger)?;
    let cps = if options.public_key.is_some() {
        match File::open(checkpoint_path(path)) {
            Ok(c) => Some(BufReader::new(c)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(VerifyError::Checkpoints(e)),
        }
    } else {
        None
    };
    verify_reader(BufReader::with_capacity(256 * 1024, f), cps, options)
}

/// Verifies the JSON lines of `ledger` in order; with
/// [`VerifyOptions::public_key`], also the checkpoint lines of `checkpoints`
/// (`None`: no checkpoint file, reported as `checkpoint_missing`).
///
/// Never panics on any input; an I/O error of the ledger or checkpoint
/// reader is returned as [`VerifyError`].
pub fn verify_reader<R: BufRead, C: BufRead>(
    ledger: R,
    checkpoints: Option<C>,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let mut v = Walk::new(options);
    let mut cps = checkpoints.map(JsonLines::new);
    if options.public_key.is_some() {
        v.report.checkpoints.checked = true;
        if cps.is_none() {
            v.fail(
                Fail::global("checkpoint_missing")
                    .msg("A public key was given but the ledger has no checkpoint file; a deleted tail cannot be ruled out."),
            );
        } else {
            v.next_checkpoint(&mut cps)?;
        }
    }
    let mut lines = JsonLines::new(ledger);
    while let Some(line) = lines.next_line().map_err(VerifyError::Ledger)? {
        v.line(&line);
        while v.cp_due() {
            v.next_checkpoint(&mut cps)?;
        }
    }
    v.finish(&mut cps)
}

struct Fail {
    kind: &'static str,
    index: Option<u64>,
    line: Option<u64>,
    expected: Option<String>,
    actual: Option<String>,
    message: &'static str,
}

/// `s` when it is a hash as this crate writes them (lowercase hex of the
/// length of a SHA-256, -384 or -512 digest): the only text of a ledger a
/// report repeats.
fn digest(s: &str) -> Option<String> {
    let hex = s
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && matches!(s.len(), 64 | 96 | 128)).then(|| s.to_owned())
}

/// `s` when it is a checkpoint key id (16 lowercase hex digits).
fn key_id(s: &str) -> Option<String> {
    let hex = s
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && s.len() == 16).then(|| s.to_owned())
}

/// `s` when it is a well-formed RFC 3339 timestamp (digits and `-:.TZ+`
/// only).
fn timestamp(s: &str) -> Option<String> {
    let shape = !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b"-:.TZ+".contains(&b));
    (shape && crate::time::timestamp::Timestamp::parse_rfc3339(s).is_ok()).then(|| s.to_owned())
}

impl Fail {
    fn global(kind: &'static str) -> Fail {
        Fail {
            kind,
            index: None,
            line: None,
            expected: None,
            actual: None,
            message: "",
        }
    }
    fn msg(mut self, m: &'static str) -> Fail {
        self.message = m;
        self
    }
}

struct Walk<'o> {
    opts: &'o VerifyOptions,
    report: VerifyReport,
    prev: Option<String>,
    anchor_pending: bool,
    events: u64,
    /// Next checkpoint to compare: (checkpoint file line, count, hash).
    cp: Option<(u64, u64, String)>,
    cp_last_count: u64,
    /// The checkpoint at `cp` was compared and the next one must be read.
    cp_need_next: bool,
}

impl<'o> Walk<'o> {
    fn new(opts: &'o VerifyOptions) -> Walk<'o> {
        Walk {
            opts,
            report: VerifyReport {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                source: opts.source.clone(),
                events_scanned: 0,
                time_range: TimeRange::default(),
                chain_length: 0,
                chain_gaps: 0,
                hash_mismatches: 0,
                unchained_events: 0,
                result: "FAIL".to_owned(),
                failures: Vec::new(),
                lines_read: 0,
                malformed_lines: 0,
                failures_omitted: 0,
                anchor: opts.anchor.clone(),
                checkpoints: CheckpointSummary::default(),
            },
            prev: opts.anchor.clone(),
            anchor_pending: opts.anchor.is_some(),
            events: 0,
            cp: None,
            cp_last_count: 0,
            cp_need_next: false,
        }
    }

    fn fail(&mut self, f: Fail) {
        if self.report.failures.len() >= self.opts.max_failures {
            self.report.failures_omitted += 1;
            return;
        }
        self.report.failures.push(VerifyFailure {
            event_index: f.index,
            failure_type: f.kind.to_owned(),
            expected: f.expected,
            actual: f.actual,
            message: f.message.to_owned(),
            line: f.line,
        });
    }

    fn cp_due(&self) -> bool {
        self.cp_need_next
    }

    /// Reads checkpoint lines until a usable one is found (or the end).
    fn next_checkpoint<C: BufRead>(
        &mut self,
        cps: &mut Option<JsonLines<C>>,
    ) -> Result<(), VerifyError> {
        self.cp_need_next = false;
        self.cp = None;
        let Some(key) = self.opts.public_key.as_ref() else {
            return Ok(());
        };
        let Some(reader) = cps.as_mut() else {
            return Ok(());
        };
        while let Some(line) = reader.next_line().map_err(VerifyError::Checkpoints)? {
            let text = line.bytes.trim_ascii();
            if text.is_empty() && !line.too_long {
                continue;
            }
            let number = line.number;
            let parsed = if line.too_long {
                None
            } else {
                Checkpoint::parse(text).ok()
            };
            self.report.checkpoints.read += 1;
            let Some(cp) = parsed else {
                self.report.checkpoints.failed += 1;
                let mut f = Fail::global("checkpoint_malformed")
                    .msg("A line of the checkpoint file is not a checkpoint.");
                f.line = Some(number);
                self.fail(f);
                continue;
            };
            if cp.verify(key).is_err() {
                self.report.checkpoints.failed += 1;
                let mut f = Fail::global("checkpoint_bad_signature").msg(
                    "A checkpoint's signature does not verify with the public key: it was altered or signed with another key.",
                );
                f.line = Some(number);
                f.expected = Some(key.key_id());
                f.actual = key_id(&cp.key_id);
                self.fail(f);
                continue;
            }
            if cp.count <= self.cp_last_count || cp.count <= self.events {
                self.report.checkpoints.failed += 1;
                let mut f = Fail::global("checkpoint_order").msg(
                    "Checkpoint counts must increase; this checkpoint repeats or precedes an earlier one.",
                );
                f.line = Some(number);
                f.expected = Some(format!(">{}", self.cp_last_count.max(self.events)));
                f.actual = Some(cp.count.to_string());
                self.fail(f);
                continue;
            }
            self.cp_last_count = cp.count;
            self.cp = Some((number, cp.count, cp.last_event_hash));
            return Ok(());
        }
        Ok(())
    }

    fn line(&mut self, line: &Line<'_>) {
        self.report.lines_read += 1;
        let text = line.bytes.trim_ascii();
        if text.is_empty() && !line.too_long {
            return;
        }
        let index = self.events;
        self.events += 1;
        self.report.events_scanned += 1;
        let parsed = if line.too_long {
            None
        } else {
            serde_json::from_slice::<Value>(text)
                .ok()
                .filter(Value::is_object)
        };
        let Some(event) = parsed else {
            self.report.malformed_lines += 1;
            let torn = !line.terminated;
            let utf8 = line.too_long || std::str::from_utf8(text).is_ok();
            let mut f = Fail::global(if torn { "torn_tail" } else { "malformed_line" }).msg(
                if torn {
                    "The last line is unterminated and not a JSON object: a write was cut off. Opening the ledger with LedgerSink moves it aside."
                } else if line.too_long {
                    "The line is longer than the 16 MiB limit: it cannot be an event."
                } else if !utf8 {
                    "The line is not valid UTF-8, so not a JSON object."
                } else {
                    "The line is not a JSON object."
                },
            );
            f.index = Some(index);
            f.line = Some(line.number);
            self.fail(f);
            self.prev = None;
            self.anchor_pending = false;
            self.check_cp(index, line.number, None);
            return;
        };
        let ts = event
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(timestamp);
        if self.report.time_range.start.is_none() && index == 0 {
            self.report.time_range.start = ts.clone();
        }
        self.report.time_range.end = ts;
        let base = |kind: &'static str| Fail {
            kind,
            index: Some(index),
            line: Some(line.number),
            expected: None,
            actual: None,
            message: "",
        };
        let integrity = match event.get("integrity") {
            None | Some(Value::Null) => {
                self.report.unchained_events += 1;
                self.fail(base("unchained_event").msg(
                    "The event has no integrity block: it was written outside the chain, or its block was stripped.",
                ));
                self.prev = None;
                self.anchor_pending = false;
                self.check_cp(index, line.number, None);
                return;
            }
            Some(Value::Object(m)) => m,
            Some(_) => {
                self.report.chain_length += 1;
                self.fail(
                    base("bad_integrity").msg("The event's integrity field is not an object."),
                );
                self.prev = None;
                self.anchor_pending = false;
                self.check_cp(index, line.number, None);
                return;
            }
        };
        self.report.chain_length += 1;
        let as_text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let recorded = integrity.get("event_hash").map(as_text).unwrap_or_default();
        let alg = match integrity.get("hash_alg") {
            None => Some(self.opts.default_alg),
            Some(Value::String(s)) => HashAlg::from_str(s),
            Some(_) => None,
        };
        match alg {
            Some(alg) => {
                let recomputed = event_hash(&event, self.prev.as_deref(), alg);
                if recomputed != recorded {
                    self.report.hash_mismatches += 1;
                    let mut f = base("hash_mismatch").msg(
                        "Event content does not match its recorded hash: the event was modified after it was written.",
                    );
                    f.expected = Some(recomputed);
                    f.actual = digest(&recorded);
                    self.fail(f);
                }
            }
            None => {
                let mut f = base("unknown_hash_alg").msg(
                    "The integrity block names a hash algorithm other than sha256, sha384 or sha512; the event cannot be checked.",
                );
                f.expected = Some("sha256|sha384|sha512".into());
                self.fail(f);
            }
        }
        let recorded_prev = match integrity.get("prev_event_hash") {
            None | Some(Value::Null) => None,
            Some(v) => Some(as_text(v)),
        };
        let must_link = self.report.chain_length > 1 || self.anchor_pending;
        match recorded_prev {
            None if must_link => {
                self.report.chain_gaps += 1;
                let mut f = base("chain_gap").msg(
                    "The event has no prev_event_hash in the middle of a chain: it was emitted unchained or the chain restarted.",
                );
                f.expected = self.prev.as_deref().and_then(digest);
                self.fail(f);
            }
            Some(p) if Some(&p) != self.prev.as_ref() => {
                self.report.chain_gaps += 1;
                let mut f = base("chain_gap").msg(
                    "prev_event_hash does not match the previous event's hash: an event was deleted, inserted or reordered.",
                );
                f.expected = self.prev.as_deref().and_then(digest);
                f.actual = digest(&p);
                self.fail(f);
            }
            _ => {}
        }
        self.anchor_pending = false;
        self.check_cp(index, line.number, Some(&recorded));
        self.prev = Some(recorded);
    }

    /// Compares event number `index + 1` against the pending checkpoint.
    fn check_cp(&mut self, index: u64, line: u64, hash: Option<&str>) {
        let Some((_, count, cp_hash)) = self.cp.as_ref() else {
            return;
        };
        if *count != index + 1 {
            return;
        }
        if hash == Some(cp_hash.as_str()) {
            self.report.checkpoints.verified += 1;
            self.report.checkpoints.last_verified_count = Some(*count);
        } else {
            self.report.checkpoints.failed += 1;
            let f = Fail {
                kind: "checkpoint_mismatch",
                index: Some(index),
                line: Some(line),
                expected: digest(cp_hash),
                actual: hash.and_then(digest),
                message: "The event at a signed checkpoint's position is not the one the checkpoint signed: the ledger was replaced or rewritten up to here.",
            };
            self.fail(f);
        }
        self.cp_need_next = true;
    }

    fn finish<C: BufRead>(
        mut self,
        cps: &mut Option<JsonLines<C>>,
    ) -> Result<VerifyReport, VerifyError> {
        if self.events == 0 {
            self.fail(Fail::global("empty_ledger").msg(
                "The input holds no events: nothing was verified. An audit ledger that should hold events is missing them.",
            ));
        }
        if let Some((line, count, _)) = self.cp.take() {
            // The checkpoint (and any after it) lies beyond the ledger's end.
            self.report.checkpoints.failed += 1;
            let mut f = Fail::global("truncated").msg(
                "A signed checkpoint covers more events than the ledger holds: its tail was deleted or truncated.",
            );
            f.line = Some(line);
            f.expected = Some(count.to_string());
            f.actual = Some(self.events.to_string());
            self.fail(f);
            // Count (and check) the remaining checkpoints too.
            loop {
                self.next_checkpoint(cps)?;
                if self.cp.take().is_none() {
                    break;
                }
                self.report.checkpoints.failed += 1;
            }
        }
        if self.report.checkpoints.checked {
            if self.report.checkpoints.verified == 0
                && self.report.checkpoints.read > 0
                && self.events > 0
            {
                // Every checkpoint failed: already reported individually.
            } else if self.report.checkpoints.read == 0 && cps.is_some() && self.events > 0 {
                self.fail(Fail::global("checkpoint_missing").msg(
                    "A public key was given but the checkpoint file holds no checkpoint; a deleted tail cannot be ruled out.",
                ));
            }
            let last = self.report.checkpoints.last_verified_count.unwrap_or(0);
            self.report.checkpoints.events_after_last_checkpoint =
                Some(self.events.saturating_sub(last));
        }
        let total = self.report.failure_count();
        self.report.result = if total == 0 { "PASS" } else { "FAIL" }.to_owned();
        Ok(self.report)
    }
}
