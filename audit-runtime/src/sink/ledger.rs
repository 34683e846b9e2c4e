//! [`LedgerSink`]: a JSONL file of hash-chained events, with resume, torn-tail
//! recovery and signed checkpoints.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::checkpoint::{checkpoint_path, Checkpoint, CheckpointSigner};
use crate::event::{AuditEvent, HashAlg};
use crate::integrity::{Canonicalizer, HexDigest};
use crate::sink::file::{open_append_terminated, FsyncPolicy, LineWriter};
use crate::sink::{BatchError, Sink, SinkError};
use crate::timestamp::Timestamp;

/// Options of a [`LedgerSink`].
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    /// Hash algorithm of new events (default SHA-256).
    pub hash_alg: HashAlg,
    /// When lines are written and synced (default [`FsyncPolicy::EveryEvent`]).
    pub fsync: FsyncPolicy,
    /// Signs checkpoints into `<ledger>.checkpoints` when set (default: none,
    /// no checkpoints).
    pub signer: Option<CheckpointSigner>,
    /// With a signer: a checkpoint after (at least) every this many events,
    /// and one at close (default 1000; `0` means only at close).
    pub checkpoint_every: u64,
    /// Size of the in-memory batch buffer in bytes (default 256 KiB). With
    /// a buffering [`FsyncPolicy`] lines reach the file when it fills (or on
    /// flush); a bigger buffer means fewer system calls (on the bench
    /// machine, a 64 KiB buffer cost ~30 ns more per ~400-byte line than
    /// 256 KiB).
    pub buffer_capacity: usize,
    /// Disk space reserved ahead of the writes, in bytes (default
    /// [`DEFAULT_PREALLOCATE`](crate::sink::DEFAULT_PREALLOCATE); `0` turns
    /// it off).
    pub preallocate: u64,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            hash_alg: HashAlg::Sha256,
            fsync: FsyncPolicy::EveryEvent,
            signer: None,
            checkpoint_every: 1000,
            buffer_capacity: 256 * 1024,
            preallocate: crate::sink::DEFAULT_PREALLOCATE,
        }
    }
}

/// What [`LedgerSink::open`] found in an existing ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Complete (non-blank) lines already in the ledger.
    pub events: u64,
    /// Hash of the last complete event: the chain continues from it.
    pub last_event_hash: Option<String>,
    /// An unterminated last line left by a crash mid-write, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// An unterminated last line that was moved out of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Its length in bytes.
    pub bytes: u64,
    /// The side file now holding those bytes (`<ledger>.torn-<millis>`).
    pub moved_to: PathBuf,
}

/// Why a ledger could not be opened.
#[derive(Debug)]
pub enum LedgerError {
    /// Reading, moving or writing a file failed.
    Io(io::Error),
    /// The last complete line is not a chained event, so the chain cannot
    /// be resumed safely.
    NotChained {
        /// 1-based line number of that line.
        line: u64,
    },
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::Io(e) => write!(f, "ledger I/O error: {e}"),
            LedgerError::NotChained { line } => write!(
                f,
                "cannot resume the ledger: line {line} (its last complete line) is not a chained \
                 event with integrity.event_hash; run `phi-audit verify` on the file and move it \
                 aside (or repair it) before opening a ledger at this path"
            ),
        }
    }
}

impl std::error::Error for LedgerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LedgerError::Io(e) => Some(e),
            LedgerError::NotChained { .. } => None,
        }
    }
}

impl From<io::Error> for LedgerError {
    fn from(e: io::Error) -> Self {
        LedgerError::Io(e)
    }
}

/// A sink writing a tamper-evident ledger: each event as one JSON line with
/// an `integrity` block chaining it to the event before (see
/// [`crate::integrity`] for the rule, shared with bh-audit-logger).
///
/// * **One chain, in write order.** Hashing, writing and advancing the chain
///   happen under one lock in [`Sink::write`]; concurrent writers (or a
///   non-blocking wrapper's worker) never fork the chain.
/// * **Advance after write.** The chain head moves only once the line reached
///   the file; a failed batch is cut from the file and the head goes back to
///   the last line in it, so no gap is left.
/// * **Resume.** Opening an existing ledger continues the chain from its last
///   complete line. An unterminated last line (a crash mid-write) is moved to
///   a side file and reported in [`LedgerSink::recovery`]; it is never hashed.
/// * **Checkpoints.** With [`LedgerOptions::signer`], signed checkpoints go to
///   `<ledger>.checkpoints` (format in [`crate::checkpoint`]).
///
/// Ledgers are not rotated; to verify a slice of a chain, pass the previous
/// hash as the verifier's anchor.
///
/// ```
/// use audit_runtime::sink::{LedgerOptions, LedgerSink};
/// let dir = std::env::temp_dir().join(format!("phi-audit-ledger-doc-{}", std::process::id()));
/// let ledger = LedgerSink::open_with(dir.join("audit.jsonl"), LedgerOptions::default()).unwrap();
/// assert_eq!(ledger.recovery().events, 0);
/// // ledger.write(&event)?; ... ledger.close()?;
/// # drop(ledger); let _ = std::fs::remove_dir_all(dir);
/// ```
#[derive(Debug)]
pub struct LedgerSink {
    inner: Mutex<State>,
    path: PathBuf,
    recovery: Recovery,
}

#[derive(Debug)]
struct State {
    w: LineWriter,
    canon: Canonicalizer,
    alg: HashAlg,
    /// Hash of the last line in the file.
    head: Option<String>,
    /// Lines in the file.
    count: u64,
    /// Head and count including lines still in the buffer.
    pending_head: Option<Head>,
    pending_count: u64,
    signer: Option<CheckpointSigner>,
    every: u64,
    checkpoint_path: PathBuf,
    checkpoint_file: Option<File>,
    last_checkpoint: u64,
    checkpoint_errors: u64,
    closed: bool,
}

/// Longest line the ledger reads back when resuming.
const MAX_LINE: u64 = 64 * 1024 * 1024;

impl LedgerSink {
    /// Opens (or creates) the ledger at `path` with the default options
    /// (sha256, fsync every event, no checkpoints).
    pub fn open(path: impl AsRef<Path>) -> Result<LedgerSink, LedgerError> {
        LedgerSink::open_with(path, LedgerOptions::default())
    }

    /// Opens (or creates) the ledger at `path`, recovering a torn tail and
    /// resuming the chain from the last complete line.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: LedgerOptions,
    ) -> Result<LedgerSink, LedgerError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                fs::create_dir_all(parent)?;
            }
        }
        let recovery = recover(&path)?;
        let cp_path = checkpoint_path(&path);
        let last_checkpoint = if options.signer.is_some() {
            last_checkpoint_count(&cp_path)?
        } else {
            0
        };
        let w = LineWriter::open(
            &path,
            options.fsync,
            None,
            options.buffer_capacity,
            options.preallocate,
        )?;
        let state = State {
            w,
            canon: Canonicalizer::new(),
            alg: options.hash_alg,
            head: recovery.last_event_hash.clone(),
            count: recovery.events,
            pending_head: recovery.last_event_hash.clone().map(Head::Found),
            pending_count: recovery.events,
            signer: options.signer,
            every: options.checkpoint_every,
            checkpoint_path: cp_path,
            checkpoint_file: None,
            last_checkpoint,
            checkpoint_errors: 0,
            closed: false,
        };
        Ok(LedgerSink {
            inner: Mutex::new(state),
            path,
            recovery,
        })
    }

    /// The ledger's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was found (and recovered) when the ledger was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Hash of the last event in the file (the chain head).
    pub fn last_event_hash(&self) -> Option<String> {
        self.lock().ok().and_then(|s| s.head.clone())
    }

    /// Events in the file, counting those present when it was opened.
    pub fn events_written(&self) -> u64 {
        self.lock().map(|s| s.count).unwrap_or(0)
    }

    /// Events that were acknowledged and then lost because a batch write
    /// failed (always 0 with [`FsyncPolicy::EveryEvent`]).
    pub fn lost_events(&self) -> u64 {
        self.lock().map(|s| s.w.lost_events()).unwrap_or(0)
    }

    /// Checkpoints that could not be written (each is retried later).
    pub fn checkpoint_errors(&self) -> u64 {
        self.lock().map(|s| s.checkpoint_errors).unwrap_or(0)
    }

    /// Flushes, syncs, writes a final checkpoint (with a signer) and closes.
    /// Later writes fail with [`SinkError::Closed`]. Dropping the sink closes
    /// it too, ignoring errors.
    pub fn close(&self) -> Result<(), SinkError> {
        let mut s = self.lock()?;
        if s.closed {
            return Ok(());
        }
        s.closed = true;
        let r = s.run_flush();
        let cp = if s.signer.is_some() && s.count > s.last_checkpoint {
            s.w.sync()
                .map_err(SinkError::Io)
                .and_then(|_| s.write_checkpoint())
        } else {
            Ok(())
        };
        let c = s.w.close().map_err(SinkError::Io);
        r.and(cp).and(c)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, SinkError> {
        self.inner
            .lock()
            .map_err(|_| SinkError::Other("ledger lock poisoned by a panic".into()))
    }
}

/// The hash the next line chains to: computed here (on the stack), or found
/// in the file when it was opened.
#[derive(Debug, Clone)]
enum Head {
    Computed(HexDigest),
    Found(String),
}

impl Head {
    fn as_str(&self) -> &str {
        match self {
            Head::Computed(h) => h.as_str(),
            Head::Found(s) => s,
        }
    }
}

impl State {
    /// After a write or flush attempt: lines that reached the file advance
    /// the head; lines that were discarded roll it back.
    fn settle(&mut self, len_before: u64) {
        if self.w.buffer().is_empty() {
            if self.w.file_len() > len_before || self.pending_count == self.count {
                self.head = self.pending_head.as_ref().map(|h| h.as_str().to_owned());
                self.count = self.pending_count;
            } else {
                self.pending_head = self.head.clone().map(Head::Found);
                self.pending_count = self.count;
            }
        }
    }

    fn run_flush(&mut self) -> Result<(), SinkError> {
        let before = self.w.file_len();
        let r = self.w.flush();
        self.settle(before);
        r.map_err(SinkError::Io)?;
        self.maybe_checkpoint();
        Ok(())
    }

    fn maybe_checkpoint(&mut self) {
        if self.signer.is_none() || self.every == 0 {
            return;
        }
        if self.count >= self.last_checkpoint + self.every {
            let r = self
                .w
                .sync()
                .map_err(SinkError::Io)
                .and_then(|_| self.write_checkpoint());
            if r.is_err() {
                self.checkpoint_errors += 1;
            }
        }
    }

    /// Appends a checkpoint of the current head. The ledger must be synced.
    fn write_checkpoint(&mut self) -> Result<(), SinkError> {
        let (Some(signer), Some(head)) = (self.signer.as_ref(), self.head.as_ref()) else {
            return Ok(());
        };
        let ts = Timestamp::now().to_string();
        let line = signer.sign(self.count, head, self.alg, &ts).to_line();
        if self.checkpoint_file.is_none() {
            self.checkpoint_file = Some(open_append_terminated(&self.checkpoint_path)?.0);
        }
        if let Some(f) = self.checkpoint_file.as_mut() {
            f.write_all(&line)?;
            f.sync_data()?;
        }
        self.last_checkpoint = self.count;
        Ok(())
    }
}

impl State {
    /// Hashes `event` onto the pending head and appends its line to the
    /// buffer; the head advances once the line reaches the file (`settle`).
    fn append(&mut self, event: &AuditEvent) -> Result<(), SinkError> {
        let s = self;
        let alg = s.alg;
        let hash = s
            .canon
            .event_digest(event, s.pending_head.as_ref().map(Head::as_str), alg)
            .map_err(|e| SinkError::Other(e.to_string()))?;
        let prev = s.pending_head.take();
        let buf = s.w.buffer();
        let mark = buf.len();
        if event.integrity.is_some() {
            // A chaining sink owns the integrity block: replace it.
            let mut e = event.clone();
            e.integrity = None;
            e.write_json(buf);
        } else {
            event.write_json(buf);
        }
        if buf.len() <= mark || buf.last() != Some(&b'}') {
            s.w.discard_from(mark);
            s.pending_head = prev;
            return Err(SinkError::Other(
                "the event did not serialize to a JSON object".into(),
            ));
        }
        buf.pop();
        buf.extend_from_slice(b",\"integrity\":{\"event_hash\":\"");
        buf.extend_from_slice(hash.as_str().as_bytes());
        buf.push(b'"');
        if let Some(p) = prev.as_ref().map(Head::as_str) {
            buf.extend_from_slice(b",\"prev_event_hash\":\"");
            buf.extend_from_slice(p.as_bytes());
            buf.push(b'"');
        }
        buf.extend_from_slice(b",\"hash_alg\":\"");
        buf.extend_from_slice(alg.as_str().as_bytes());
        buf.extend_from_slice(b"\"}}\n");
        s.pending_head = Some(Head::Computed(hash));
        s.pending_count += 1;
        let before = s.w.file_len();
        let r = s.w.commit_line(mark);
        s.settle(before);
        r.map(|_| ()).map_err(SinkError::Io)
    }
}

impl Sink for LedgerSink {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        let mut guard = self.lock()?;
        let s = &mut *guard;
        if s.closed {
            return Err(SinkError::Closed);
        }
        s.append(event)?;
        s.maybe_checkpoint();
        Ok(())
    }

    fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
        let mut guard = match self.lock() {
            Ok(g) if !g.closed => g,
            Ok(_) => return Err(BatchError::all(events, SinkError::Closed)),
            Err(error) => return Err(BatchError::all(events, error)),
        };
        let s = &mut *guard;
        s.w.begin_batch();
        let mut failed = 0;
        let mut first = None;
        // Hash and encode in place (no move of each event out of the vector).
        for event in events.iter() {
            if let Err(e) = s.append(event) {
                failed += 1;
                first.get_or_insert(e);
            }
        }
        events.clear();
        let before = s.w.file_len();
        let r = s.w.end_batch();
        s.settle(before);
        if let Err((n, e)) = r {
            failed += n;
            first.get_or_insert(SinkError::Io(e));
        }
        s.maybe_checkpoint();
        match first {
            None => Ok(()),
            Some(error) => Err(BatchError { failed, error }),
        }
    }

    fn flush(&self) -> Result<(), SinkError> {
        let mut s = self.lock()?;
        if s.closed {
            return Ok(());
        }
        s.run_flush()
    }
}

impl Drop for LedgerSink {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Finds the last `\n` before `end`, reading backwards. Returns the offset
/// just after it (0 when there is none).
fn line_start_before(f: &mut File, end: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = end;
    while pos > 0 {
        let n = (pos.min(buf.len() as u64)) as usize;
        pos -= n as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
    }
    Ok(0)
}

/// Counts lines with content before `end` (blank lines are not events).
fn count_events(f: &mut File, end: u64) -> io::Result<u64> {
    f.seek(SeekFrom::Start(0))?;
    let mut r = f.take(end);
    let mut buf = vec![0u8; 256 * 1024];
    let mut count = 0u64;
    let mut content = false;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                count += u64::from(content);
                content = false;
            } else if !b.is_ascii_whitespace() {
                content = true;
            }
        }
    }
    Ok(count + u64::from(content))
}

fn recover(path: &Path) -> Result<Recovery, LedgerError> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recovery::default()),
        Err(e) => return Err(e.into()),
    };
    let len = f.metadata()?.len();
    let mut rec = Recovery::default();
    if len == 0 {
        return Ok(rec);
    }
    let good_end = line_start_before(&mut f, len)?;
    if good_end < len {
        // Torn tail: copy it aside, make that durable, then cut it off.
        let torn_len = len - good_end;
        let side = side_path(path);
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut side_file = o.open(&side)?;
        f.seek(SeekFrom::Start(good_end))?;
        io::copy(&mut (&mut f).take(torn_len), &mut side_file)?;
        side_file.sync_all()?;
        f.set_len(good_end)?;
        f.sync_all()?;
        tracing::warn!(
            target: "phi_audit::ledger",
            torn_bytes = torn_len,
            moved_to = %side.display(),
            "ledger had an unterminated last line (crash mid-write); moved it aside"
        );
        rec.torn_tail = Some(TornTail {
            bytes: torn_len,
            moved_to: side,
        });
    }
    // The last line with content before good_end.
    let mut end = good_end;
    loop {
        if end == 0 {
            return Ok(rec);
        }
        let start = line_start_before(&mut f, end - 1)?;
        let line_len = end - 1 - start;
        if line_len > MAX_LINE {
            let line = count_events(&mut f, start)? + 1;
            return Err(LedgerError::NotChained { line });
        }
        let mut line = vec![0u8; line_len as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut line)?;
        if line.trim_ascii().is_empty() {
            end = start;
            continue;
        }
        rec.events = count_events(&mut f, good_end)?;
        let hash = serde_json::from_slice::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| {
                v.get("integrity")?
                    .get("event_hash")?
                    .as_str()
                    .map(str::to_owned)
            });
        match hash {
            Some(h) => {
                rec.last_event_hash = Some(h);
                return Ok(rec);
            }
            None => {
                let line_no = count_events(&mut f, start)? + 1;
                return Err(LedgerError::NotChained { line: line_no });
            }
        }
    }
}

fn side_path(path: &Path) -> PathBuf {
    let ms = Timestamp::now().unix_millis();
    let mut i = 0u32;
    loop {
        let mut p = path.as_os_str().to_owned();
        if i == 0 {
            p.push(format!(".torn-{ms}"));
        } else {
            p.push(format!(".torn-{ms}-{i}"));
        }
        let p = PathBuf::from(p);
        if !p.exists() {
            return p;
        }
        i += 1;
    }
}

/// `count` of the last parseable checkpoint in the file (0 when none).
fn last_checkpoint_count(path: &Path) -> io::Result<u64> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut end = f.metadata()?.len();
    while end > 0 {
        let start = line_start_before(&mut f, end - 1)?;
        let len = (end - start).min(64 * 1024);
        let mut line = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut line)?;
        if let Ok(cp) = Checkpoint::parse(line.trim_ascii()) {
            return Ok(cp.count);
        }
        end = start;
    }
    Ok(0)
}
