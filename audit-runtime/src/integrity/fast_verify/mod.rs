//! Ledger verification at disk speed: the same report as
//! [`crate::integrity::verify::verify_reader`], computed on all cores.
//!
//! The input is read in large blocks (bounded memory: two blocks and one
//! record per line of a block). Each block is split on line boundaries into
//! one chunk per core; each chunk's lines are checked on their own thread:
//!
//! * a line already in canonical form (what [`LedgerSink`](crate::sink::LedgerSink)
//!   writes) is checked by a single byte scan, and its chain hash is taken
//!   over its own bytes minus the `integrity` member, without parsing it
//!   into a tree;
//! * any other line (written by the reference implementation or an older
//!   version, or damaged) goes through the general parser, exactly as
//!   [`crate::verify`] reads it.
//!
//! Every line carries its previous hash, so chunks are independent: the
//! first event of a chunk is hashed against the `prev_event_hash` it
//! records, and when the merge (in file order, on one thread, with the
//! checkpoint checks of [`crate::verify`]) finds that the chain state at that
//! point differs, that event is hashed again against the real state. The
//! result is identical to [`crate::integrity::verify::verify_reader`]'s on every input
//! (a differential property test holds them to it).
//!
//! ```
//! use phi_audit_runtime::fast_verify::verify_read;
//! use phi_audit_runtime::verify::VerifyOptions;
//! let report = verify_read(&b""[..], None::<&[u8]>, &VerifyOptions::default(), None).unwrap();
//! assert_eq!(report.failures[0].failure_type, "empty_ledger");
//! ```

mod files;
mod scan;

pub use files::{anchor_path, read_anchor, verify_files, FileLines};

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::integrity::canonical_event_json;
use crate::integrity::checkpoint::{checkpoint_path, Checkpoint};
use crate::integrity::verify::{
    CheckpointSummary, JsonLines, TimeRange, VerifyError, VerifyFailure, VerifyOptions,
    VerifyReport, MAX_LINE_BYTES,
};
use crate::model::event::HashAlg;

use scan::{scan_line, Integrity, Span};

pub(crate) use scan::insert_position;

/// Bytes read per block (each block is split among the threads).
const BLOCK: usize = 4 * 1024 * 1024;

/// Called with the number of ledger bytes read so far.
pub type ProgressFn<'a> = &'a mut dyn FnMut(u64);

/// Verifies the ledger at `path` (and, with a public key, its checkpoint
/// file `<path>.checkpoints`) on all cores: the same report as
/// [`crate::integrity::verify::verify_path`].
pub fn verify_path(
    path: &Path,
    options: &VerifyOptions,
    progress: Option<ProgressFn<'_>>,
) -> Result<VerifyReport, VerifyError> {
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
    verify_read(f, cps, options, progress)
}

/// Verifies the ledger read from `ledger` with the checkpoint lines of
/// `checkpoints` (see [`crate::integrity::verify::verify_reader`], whose report this
/// is), using every available core.
pub fn verify_read<R: Read, C: BufRead>(
    ledger: R,
    checkpoints: Option<C>,
    options: &VerifyOptions,
    progress: Option<ProgressFn<'_>>,
) -> Result<VerifyReport, VerifyError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    verify_read_with(ledger, checkpoints, options, progress, threads, BLOCK)
}

/// [`verify_read`] with a given thread count and block size (tests use
/// small blocks to put chunk boundaries everywhere).
#[doc(hidden)]
pub fn verify_read_with<R: Read, C: BufRead>(
    ledger: R,
    checkpoints: Option<C>,
    options: &VerifyOptions,
    progress: Option<ProgressFn<'_>>,
    threads: usize,
    block: usize,
) -> Result<VerifyReport, VerifyError> {
    verify_inner(ledger, checkpoints, options, progress, threads, block, 0)
}

fn verify_inner<R: Read, C: BufRead>(
    mut ledger: R,
    checkpoints: Option<C>,
    options: &VerifyOptions,
    mut progress: Option<ProgressFn<'_>>,
    threads: usize,
    block: usize,
    count_base: u64,
) -> Result<VerifyReport, VerifyError> {
    let threads = threads.max(1);
    let block = block.max(1);
    let mut w = Walk::new(options);
    w.count_base = count_base;
    let mut cps = checkpoints.map(JsonLines::new);
    if options.public_key.is_some() {
        w.report.checkpoints.checked = true;
        if cps.is_none() {
            w.fail(Fail::global("checkpoint_missing").msg(
                "A public key was given but the ledger has no checkpoint file; a deleted tail cannot be ruled out.",
            ));
        } else {
            w.next_checkpoint(&mut cps)?;
        }
    }
    let alg = options.default_alg;
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            s.spawn(move || worker(job_rx, &done_tx, alg));
        }
        drop(done_tx);
        let mut p = Pipeline {
            jobs: job_tx,
            done: done_rx,
            threads,
            next_seq: 0,
            inflight: VecDeque::new(),
            early: HashMap::new(),
            pool: Vec::new(),
        };
        p.run(&mut ledger, &mut w, &mut cps, &mut progress, block)
        // `p` drops here: the job channel closes and the workers end.
    })?;
    w.finish(&mut cps)
}

/// `threads + 1` offsets splitting `data` into chunks that end after a
/// newline (or at the end).
fn split(data: &[u8], threads: usize) -> Vec<usize> {
    let mut b = Vec::with_capacity(threads + 1);
    b.push(0);
    for k in 1..threads {
        let prev = *b.last().unwrap_or(&0);
        let target = (data.len() * k / threads).max(prev);
        let at = match data.get(target..).and_then(|t| memchr(b'\n', t)) {
            Some(i) => target + i + 1,
            None => data.len(),
        };
        b.push(at);
    }
    b.push(data.len());
    b
}

/// Lines of a block for one worker: `data[..end]`, lines `a..b`.
struct Job {
    seq: u64,
    data: Arc<Vec<u8>>,
    end: usize,
    a: usize,
    b: usize,
}

/// A worker's records for one [`Job`] (the block comes back with them, so
/// the reader can reuse its buffer once every chunk of it is merged).
struct Done {
    seq: u64,
    data: Arc<Vec<u8>>,
    recs: std::thread::Result<Vec<Rec>>,
}

fn worker(jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>, alg: HashAlg) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let mut recs = Vec::new();
        let data = &job.data[..job.end];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_chunk(data, job.a, job.b, alg, &mut recs)
        }));
        let done_job = Done {
            seq: job.seq,
            recs: r.map(|()| recs),
            data: job.data,
        };
        if done.send(done_job).is_err() {
            return;
        }
    }
}

/// Blocks read but not merged yet: at most this many (bounded memory).
const IN_FLIGHT: usize = 2;

/// The reader and merger (on the calling thread): reads blocks, hands their
/// chunks to the workers, and merges the records in file order while the
/// workers check the next blocks.
struct Pipeline {
    jobs: Sender<Job>,
    done: Receiver<Done>,
    threads: usize,
    next_seq: u64,
    /// Per block read and not merged: the sequence numbers of its chunks.
    inflight: VecDeque<std::ops::Range<u64>>,
    /// Records that came back before their turn.
    early: HashMap<u64, Done>,
    /// Buffers of merged blocks, for reuse (already initialized: never
    /// zeroed again).
    pool: Vec<Vec<u8>>,
}

impl Pipeline {
    fn run<R: Read, C: BufRead>(
        &mut self,
        ledger: &mut R,
        w: &mut Walk<'_>,
        cps: &mut Option<JsonLines<C>>,
        progress: &mut Option<ProgressFn<'_>>,
        block: usize,
    ) -> Result<(), VerifyError> {
        let mut buf = self.buffer(0);
        let mut filled = 0usize;
        let mut read_total = 0u64;
        let mut eof = false;
        // Skipping the rest of a line longer than MAX_LINE_BYTES.
        let mut skipping = false;
        loop {
            // Fill the block.
            while !eof && filled < block {
                let n = read_into(ledger, &mut buf, filled)?;
                filled += n;
                read_total += n as u64;
                eof = n == 0;
            }
            if let Some(p) = progress.as_mut() {
                p(read_total);
            }
            if skipping {
                match memchr(b'\n', &buf[..filled]) {
                    Some(i) => {
                        self.merge_all(w, cps)?;
                        buf.copy_within(i + 1..filled, 0);
                        filled -= i + 1;
                        skipping = false;
                        w.too_long(true);
                        w.after_line(cps)?;
                    }
                    None => {
                        filled = 0;
                        if eof {
                            self.merge_all(w, cps)?;
                            w.too_long(false);
                            w.after_line(cps)?;
                            break;
                        }
                        continue;
                    }
                }
            }
            // Complete lines of the block (all of it at the end of the input).
            let end = if eof {
                filled
            } else {
                match memrchr(b'\n', &buf[..filled]) {
                    Some(i) => i + 1,
                    None => {
                        if filled > MAX_LINE_BYTES {
                            skipping = true;
                            filled = 0;
                        } else {
                            // A line longer than the block: read on.
                            let n = read_into(ledger, &mut buf, filled)?;
                            filled += n;
                            read_total += n as u64;
                            eof = n == 0;
                        }
                        continue;
                    }
                }
            };
            if end == 0 {
                break;
            }
            // The partial last line starts the next buffer.
            let mut next = self.buffer(filled - end);
            next[..filled - end].copy_from_slice(&buf[end..filled]);
            let data = Arc::new(std::mem::replace(&mut buf, next));
            filled -= end;
            self.submit(data, end);
            while self.inflight.len() > IN_FLIGHT {
                self.merge_oldest(w, cps)?;
            }
            if eof && filled == 0 {
                break;
            }
        }
        self.merge_all(w, cps)
    }

    /// A buffer of at least `len` initialized bytes, more for reading on.
    /// A new one starts small (a short ledger is not charged for zeroing a
    /// whole block); [`read_into`] doubles it as it fills.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        let want = len + 64 * 1024;
        if b.len() < want {
            b.resize(want, 0);
        }
        b
    }

    /// Hands the lines of `data[..end]` to the workers, one chunk each.
    fn submit(&mut self, data: Arc<Vec<u8>>, end: usize) {
        let bounds = split(&data[..end], self.threads);
        let first = self.next_seq;
        for k in 0..self.threads {
            let (a, b) = (bounds[k], bounds[k + 1]);
            if a >= b {
                continue;
            }
            let job = Job {
                seq: self.next_seq,
                data: Arc::clone(&data),
                end,
                a,
                b,
            };
            self.next_seq += 1;
            // The workers live as long as `self`: sending cannot fail.
            let _ = self.jobs.send(job);
        }
        self.inflight.push_back(first..self.next_seq);
    }

    fn merge_all<C: BufRead>(
        &mut self,
        w: &mut Walk<'_>,
        cps: &mut Option<JsonLines<C>>,
    ) -> Result<(), VerifyError> {
        while !self.inflight.is_empty() {
            self.merge_oldest(w, cps)?;
        }
        Ok(())
    }

    /// Merges the records of the oldest block, in file order.
    fn merge_oldest<C: BufRead>(
        &mut self,
        w: &mut Walk<'_>,
        cps: &mut Option<JsonLines<C>>,
    ) -> Result<(), VerifyError> {
        let Some(seqs) = self.inflight.pop_front() else {
            return Ok(());
        };
        let mut block: Option<Arc<Vec<u8>>> = None;
        for seq in seqs {
            let done = match self.early.remove(&seq) {
                Some(d) => d,
                None => loop {
                    let Ok(d) = self.done.recv() else {
                        // Every worker is gone without answering: only a
                        // panic does that, and it was re-raised already.
                        unreachable!("verify workers ended early");
                    };
                    if d.seq == seq {
                        break d;
                    }
                    self.early.insert(d.seq, d);
                },
            };
            let recs = done.recs.unwrap_or_else(|p| std::panic::resume_unwind(p));
            let data = &done.data[..];
            for rec in recs {
                w.record(rec, data);
                w.after_line(cps)?;
            }
            block = Some(done.data);
        }
        if let Some(data) = block {
            w.settle_ts(&data);
            if let Ok(buf) = Arc::try_unwrap(data) {
                self.pool.push(buf);
            }
        }
        Ok(())
    }
}

/// Reads into `buf[filled..]` (growing it when full); 0 at the end.
fn read_into<R: Read>(
    ledger: &mut R,
    buf: &mut Vec<u8>,
    filled: usize,
) -> Result<usize, VerifyError> {
    if filled == buf.len() {
        let more = buf.len().max(64 * 1024);
        buf.resize(buf.len() + more, 0);
    }
    loop {
        match ledger.read(&mut buf[filled..]) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(VerifyError::Ledger(e)),
        }
    }
}

fn memchr(c: u8, s: &[u8]) -> Option<usize> {
    memchr::memchr(c, s)
}

fn memrchr(c: u8, s: &[u8]) -> Option<usize> {
    memchr::memrchr(c, s)
}

// ---------------------------------------------------------------------------
// Per-line records (built on the worker threads).
// ---------------------------------------------------------------------------

/// Text of the ledger: a span of the block, or owned (from the parser).
#[derive(Debug)]
enum Txt {
    Span(u32, u32),
    Own(String),
}

impl Txt {
    fn get<'a>(&'a self, data: &'a [u8]) -> &'a [u8] {
        match self {
            Txt::Span(a, b) => &data[*a as usize..*b as usize],
            Txt::Own(s) => s.as_bytes(),
        }
    }
}

/// A digest, raw.
#[derive(Clone, Copy)]
struct Raw {
    bytes: [u8; 64],
    len: u8,
}

impl Raw {
    fn hex(&self) -> String {
        crate::integrity::to_hex(&self.bytes[..usize::from(self.len)])
    }

    /// Whether `text` is this digest's lowercase hex.
    fn is(&self, text: &[u8]) -> bool {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = usize::from(self.len);
        text.len() == 2 * n
            && self.bytes[..n]
                .iter()
                .zip(text.chunks_exact(2))
                .all(|(&b, p)| {
                    p[0] == HEX[usize::from(b >> 4)] && p[1] == HEX[usize::from(b & 0xf)]
                })
    }
}

fn hash_parts(alg: HashAlg, parts: &[&[u8]]) -> Raw {
    fn run<D: Digest>(parts: &[&[u8]]) -> Raw {
        let mut h = D::new();
        for p in parts {
            h.update(p);
        }
        let out = h.finalize();
        let mut bytes = [0u8; 64];
        let n = out.len().min(64);
        bytes[..n].copy_from_slice(&out[..n]);
        Raw {
            bytes,
            len: n as u8,
        }
    }
    match alg {
        HashAlg::Sha256 => run::<Sha256>(parts),
        HashAlg::Sha384 => run::<Sha384>(parts),
        HashAlg::Sha512 => run::<Sha512>(parts),
    }
}

/// The chain hash of the event on `text` after `prev`: over the line minus
/// `cut` when the line is canonical, else over its canonical form.
fn hash_line(text: &[u8], cut: Option<Span>, prev: Option<&[u8]>, alg: HashAlg) -> Raw {
    let p = prev.unwrap_or(&[]);
    match cut {
        Some((a, b)) => hash_parts(alg, &[p, &text[..a], &text[b..]]),
        None => {
            let mut canon = Vec::with_capacity(text.len());
            if let Ok(v) = serde_json::from_slice::<Value>(text) {
                canonical_event_json(&v, &mut canon);
            }
            hash_parts(alg, &[p, &canon])
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Ts {
    None,
    Span(u32, u32),
}

enum Kind {
    Blank,
    Malformed {
        torn: bool,
        message: &'static str,
    },
    Unchained {
        ts: TsVal,
    },
    BadIntegrity {
        ts: TsVal,
    },
    Chained {
        ts: TsVal,
        recorded: Txt,
        prev: Option<Txt>,
        alg: Option<HashAlg>,
        hash: Option<Raw>,
        /// Hashed against the line's own `prev_event_hash` (the first event
        /// of a chunk): the merge checks that guess.
        guessed: bool,
        /// The canonical line's `integrity` member (None: parsed).
        cut: Option<Span>,
    },
}

/// A timestamp: a span of the block or, from the parser, already checked.
enum TsVal {
    Raw(Ts),
    Own(Option<String>),
}

struct Rec {
    /// The trimmed line in the block.
    start: u32,
    end: u32,
    kind: Kind,
}

/// Checks the lines of `data[a..b]` into `out`.
fn check_chunk(data: &[u8], a: usize, b: usize, default_alg: HashAlg, out: &mut Vec<Rec>) {
    out.clear();
    // The chain state: None = unknown (start of chunk), Some(None) = no
    // previous hash, Some(Some(..)) = the previous event's recorded hash.
    let mut known = false;
    let mut prev: Option<Vec<u8>> = None;
    let mut pos = a;
    while pos < b {
        let (line_end, next, terminated) = match memchr(b'\n', &data[pos..b]) {
            Some(i) => (pos + i, pos + i + 1, true),
            None => (b, b, false),
        };
        let raw = &data[pos..line_end];
        let (ts, te) = trim(raw);
        let start = pos + ts;
        let end = pos + te;
        pos = next;
        let text = &data[start..end];
        let mk = |kind| Rec {
            start: start as u32,
            end: end as u32,
            kind,
        };
        if raw.len() > MAX_LINE_BYTES {
            out.push(mk(Kind::Malformed {
                torn: !terminated,
                message: too_long_message(!terminated),
            }));
            known = true;
            prev = None;
            continue;
        }
        if text.is_empty() {
            out.push(mk(Kind::Blank));
            continue;
        }
        let span = |s: Span| Txt::Span((start + s.0) as u32, (start + s.1) as u32);
        let rec = if let Some(sc) = scan_line(text) {
            let ts = TsVal::Raw(match sc.timestamp {
                Some(s) => Ts::Span((start + s.0) as u32, (start + s.1) as u32),
                None => Ts::None,
            });
            match sc.integrity {
                Integrity::Absent | Integrity::Null => Kind::Unchained { ts },
                Integrity::Object {
                    event_hash,
                    hash_alg,
                    prev: rprev,
                } => {
                    let alg = match hash_alg {
                        None => Some(default_alg),
                        Some((x, y)) => std::str::from_utf8(&text[x..y])
                            .ok()
                            .and_then(HashAlg::from_str),
                    };
                    let guessed = !known;
                    let hash = alg.map(|alg| {
                        let p: Option<&[u8]> = if known {
                            prev.as_deref()
                        } else {
                            rprev.map(|(x, y)| &text[x..y])
                        };
                        hash_line(text, sc.cut, p, alg)
                    });
                    let recorded = event_hash.map(span).unwrap_or(Txt::Own(String::new()));
                    Kind::Chained {
                        ts,
                        recorded,
                        prev: rprev.map(span),
                        alg,
                        hash,
                        guessed,
                        cut: sc.cut,
                    }
                }
            }
        } else {
            parsed(text, terminated, default_alg, known, prev.as_deref())
        };
        match &rec {
            Kind::Chained { recorded, .. } => {
                let r = recorded.get(data);
                let p = prev.get_or_insert_with(Vec::new);
                p.clear();
                p.extend_from_slice(r);
            }
            Kind::Blank => {}
            _ => prev = None,
        }
        known = true;
        out.push(mk(rec));
    }
}

/// Offsets of `s` without leading and trailing ASCII whitespace.
fn trim(s: &[u8]) -> (usize, usize) {
    let t = s.trim_ascii_start();
    let a = s.len() - t.len();
    let t = t.trim_ascii_end();
    (a, a + t.len())
}

fn too_long_message(torn: bool) -> &'static str {
    if torn {
        TORN
    } else {
        "The line is longer than the 16 MiB limit: it cannot be an event."
    }
}

const TORN: &str = "The last line is unterminated and not a JSON object: a write was cut off. Opening the ledger with LedgerSink moves it aside.";

/// A line that is not canonical, read as [`crate::verify`] reads it.
fn parsed(
    text: &[u8],
    terminated: bool,
    default_alg: HashAlg,
    known: bool,
    prev: Option<&[u8]>,
) -> Kind {
    let event = serde_json::from_slice::<Value>(text)
        .ok()
        .filter(Value::is_object);
    let Some(event) = event else {
        let torn = !terminated;
        let message = if torn {
            TORN
        } else if std::str::from_utf8(text).is_err() {
            "The line is not valid UTF-8, so not a JSON object."
        } else {
            "The line is not a JSON object."
        };
        return Kind::Malformed { torn, message };
    };
    let ts = TsVal::Own(
        event
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(timestamp),
    );
    let integrity = match event.get("integrity") {
        None | Some(Value::Null) => return Kind::Unchained { ts },
        Some(Value::Object(m)) => m,
        Some(_) => return Kind::BadIntegrity { ts },
    };
    let as_text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let recorded = integrity.get("event_hash").map(as_text).unwrap_or_default();
    let alg = match integrity.get("hash_alg") {
        None => Some(default_alg),
        Some(Value::String(s)) => HashAlg::from_str(s),
        Some(_) => None,
    };
    let rprev = match integrity.get("prev_event_hash") {
        None | Some(Value::Null) => None,
        Some(v) => Some(as_text(v)),
    };
    let hash = alg.map(|alg| {
        let p = if known {
            prev
        } else {
            rprev.as_deref().map(str::as_bytes)
        };
        let mut canon = Vec::with_capacity(text.len());
        canonical_event_json(&event, &mut canon);
        hash_parts(alg, &[p.unwrap_or(&[]), &canon])
    });
    Kind::Chained {
        ts,
        recorded: Txt::Own(recorded),
        prev: rprev.map(Txt::Own),
        alg,
        hash,
        guessed: !known,
        cut: None,
    }
}

// ---------------------------------------------------------------------------
// The merge: the walk of crate::verify over records, in file order.
// ---------------------------------------------------------------------------

struct Fail {
    kind: &'static str,
    index: Option<u64>,
    line: Option<u64>,
    expected: Option<String>,
    actual: Option<String>,
    message: &'static str,
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

/// `s` when it is a hash as this crate writes them.
fn digest(s: &[u8]) -> Option<String> {
    let hex = s
        .iter()
        .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && matches!(s.len(), 64 | 96 | 128)).then(|| String::from_utf8_lossy(s).into_owned())
}

fn key_id(s: &str) -> Option<String> {
    let hex = s
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && s.len() == 16).then(|| s.to_owned())
}

fn timestamp(s: &str) -> Option<String> {
    let shape = !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b"-:.TZ+".contains(&b));
    (shape && crate::time::timestamp::Timestamp::parse_rfc3339(s).is_ok()).then(|| s.to_owned())
}

/// Where the last timestamp seen is (until the block is settled).
enum Pending {
    Nothing,
    Raw(Ts),
}

struct Walk<'o> {
    opts: &'o VerifyOptions,
    report: VerifyReport,
    /// The previous event's recorded hash (valid when `has_prev`).
    prev: Vec<u8>,
    has_prev: bool,
    anchor_pending: bool,
    events: u64,
    line_no: u64,
    cp: Option<(u64, u64, String)>,
    cp_last_count: u64,
    cp_need_next: bool,
    /// The last event's timestamp, still a span of the current block.
    pending_end: Pending,
    /// `time_range.start` is still to be set from a span of this block.
    pending_start: Option<Ts>,
    /// Events before the input (pruned): checkpoint counts are offset by it.
    count_base: u64,
}

impl<'o> Walk<'o> {
    fn new(opts: &'o VerifyOptions) -> Walk<'o> {
        let (prev, has_prev) = match &opts.anchor {
            Some(a) => (a.as_bytes().to_vec(), true),
            None => (Vec::new(), false),
        };
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
            prev,
            has_prev,
            anchor_pending: opts.anchor.is_some(),
            events: 0,
            line_no: 0,
            cp: None,
            cp_last_count: 0,
            cp_need_next: false,
            pending_end: Pending::Nothing,
            pending_start: None,
            count_base: 0,
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

    fn prev_str(&self) -> Option<&[u8]> {
        self.has_prev.then_some(&self.prev[..])
    }

    fn after_line<C: BufRead>(
        &mut self,
        cps: &mut Option<JsonLines<C>>,
    ) -> Result<(), VerifyError> {
        while self.cp_need_next {
            self.next_checkpoint(cps)?;
        }
        Ok(())
    }

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
            let Some(mut cp) = parsed else {
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
            if self.count_base > 0 {
                if cp.count <= self.count_base {
                    // Covers pruned events only: the anchor stands for it.
                    self.report.checkpoints.read -= 1;
                    continue;
                }
                cp.count -= self.count_base;
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

    /// A line longer than [`MAX_LINE_BYTES`] that was skipped while reading.
    fn too_long(&mut self, terminated: bool) {
        self.line_no += 1;
        let rec = Rec {
            start: 0,
            end: 0,
            kind: Kind::Malformed {
                torn: !terminated,
                message: too_long_message(!terminated),
            },
        };
        self.record_at(rec, &[]);
    }

    fn record(&mut self, rec: Rec, data: &[u8]) {
        self.line_no += 1;
        self.record_at(rec, data);
    }

    fn set_ts(&mut self, index: u64, ts: &TsVal) {
        match ts {
            TsVal::Raw(t) => {
                if index == 0 && self.report.time_range.start.is_none() {
                    self.pending_start = Some(*t);
                }
                self.pending_end = Pending::Raw(*t);
            }
            TsVal::Own(s) => {
                if index == 0 && self.report.time_range.start.is_none() {
                    self.report.time_range.start = s.clone();
                    self.pending_start = None;
                }
                self.report.time_range.end = s.clone();
                self.pending_end = Pending::Nothing;
            }
        }
    }

    /// Resolves timestamps that are still spans of the block `data`.
    fn settle_ts(&mut self, data: &[u8]) {
        let resolve = |t: Ts| match t {
            Ts::None => None,
            Ts::Span(a, b) => std::str::from_utf8(&data[a as usize..b as usize])
                .ok()
                .and_then(timestamp),
        };
        if let Some(t) = self.pending_start.take() {
            self.report.time_range.start = resolve(t);
        }
        if let Pending::Raw(t) = std::mem::replace(&mut self.pending_end, Pending::Nothing) {
            self.report.time_range.end = resolve(t);
        }
    }

    fn record_at(&mut self, rec: Rec, data: &[u8]) {
        self.report.lines_read += 1;
        let line_no = self.line_no;
        if matches!(rec.kind, Kind::Blank) {
            return;
        }
        let index = self.events;
        self.events += 1;
        self.report.events_scanned += 1;
        let base = |kind: &'static str| Fail {
            kind,
            index: Some(index),
            line: Some(line_no),
            expected: None,
            actual: None,
            message: "",
        };
        match rec.kind {
            Kind::Blank => {}
            Kind::Malformed { torn, message } => {
                self.report.malformed_lines += 1;
                let f = base(if torn { "torn_tail" } else { "malformed_line" }).msg(message);
                self.fail(f);
                self.has_prev = false;
                self.anchor_pending = false;
                self.check_cp(index, line_no, None);
            }
            Kind::Unchained { ts } => {
                self.set_ts(index, &ts);
                self.report.unchained_events += 1;
                self.fail(base("unchained_event").msg(
                    "The event has no integrity block: it was written outside the chain, or its block was stripped.",
                ));
                self.has_prev = false;
                self.anchor_pending = false;
                self.check_cp(index, line_no, None);
            }
            Kind::BadIntegrity { ts } => {
                self.set_ts(index, &ts);
                self.report.chain_length += 1;
                self.fail(
                    base("bad_integrity").msg("The event's integrity field is not an object."),
                );
                self.has_prev = false;
                self.anchor_pending = false;
                self.check_cp(index, line_no, None);
            }
            Kind::Chained {
                ts,
                recorded,
                prev,
                alg,
                hash,
                guessed,
                cut,
            } => {
                self.set_ts(index, &ts);
                self.report.chain_length += 1;
                let recorded = recorded.get(data);
                let rprev = prev.as_ref().map(|p| p.get(data));
                match (alg, hash) {
                    (Some(alg), Some(mut h)) => {
                        if guessed && rprev != self.prev_str() {
                            // The guess was wrong: hash against the real state.
                            let text = &data[rec.start as usize..rec.end as usize];
                            h = hash_line(text, cut, self.prev_str(), alg);
                        }
                        if !h.is(recorded) {
                            self.report.hash_mismatches += 1;
                            let mut f = base("hash_mismatch").msg(
                                "Event content does not match its recorded hash: the event was modified after it was written.",
                            );
                            f.expected = Some(h.hex());
                            f.actual = digest(recorded);
                            self.fail(f);
                        }
                    }
                    _ => {
                        let mut f = base("unknown_hash_alg").msg(
                            "The integrity block names a hash algorithm other than sha256, sha384 or sha512; the event cannot be checked.",
                        );
                        f.expected = Some("sha256|sha384|sha512".into());
                        self.fail(f);
                    }
                }
                let must_link = self.report.chain_length > 1 || self.anchor_pending;
                match rprev {
                    None if must_link => {
                        self.report.chain_gaps += 1;
                        let mut f = base("chain_gap").msg(
                            "The event has no prev_event_hash in the middle of a chain: it was emitted unchained or the chain restarted.",
                        );
                        f.expected = self.prev_str().and_then(digest);
                        self.fail(f);
                    }
                    Some(p) if Some(p) != self.prev_str() => {
                        self.report.chain_gaps += 1;
                        let mut f = base("chain_gap").msg(
                            "prev_event_hash does not match the previous event's hash: an event was deleted, inserted or reordered.",
                        );
                        f.expected = self.prev_str().and_then(digest);
                        f.actual = digest(p);
                        self.fail(f);
                    }
                    _ => {}
                }
                self.anchor_pending = false;
                self.check_cp(index, line_no, Some(recorded));
                self.prev.clear();
                self.prev.extend_from_slice(recorded);
                self.has_prev = true;
            }
        }
    }

    fn check_cp(&mut self, index: u64, line: u64, hash: Option<&[u8]>) {
        let Some((_, count, cp_hash)) = self.cp.as_ref() else {
            return;
        };
        if *count != index + 1 {
            return;
        }
        if hash == Some(cp_hash.as_bytes()) {
            self.report.checkpoints.verified += 1;
            self.report.checkpoints.last_verified_count = Some(*count);
        } else {
            self.report.checkpoints.failed += 1;
            let f = Fail {
                kind: "checkpoint_mismatch",
                index: Some(index),
                line: Some(line),
                expected: digest(cp_hash.as_bytes()),
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
            self.report.checkpoints.failed += 1;
            let mut f = Fail::global("truncated").msg(
                "A signed checkpoint covers more events than the ledger holds: its tail was deleted or truncated.",
            );
            f.line = Some(line);
            f.expected = Some(count.to_string());
            f.actual = Some(self.events.to_string());
            self.fail(f);
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
