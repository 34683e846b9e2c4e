//! [`LedgerSink`]: a JSONL file of hash-chained events, with resume, torn-tail
//! recovery and signed checkpoints.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::integrity::checkpoint::{checkpoint_path, Checkpoint, CheckpointSigner};
use crate::integrity::{Canonicalizer, HexDigest};
use crate::model::event::{
    Action, ActionType, Actor, AuditEvent, DataClassification, HashAlg, Outcome, Resource,
    SchemaVersion, Service,
};
use crate::model::metadata::{MetaValue, Metadata};
use crate::sink::file::{create_parent, open_append_terminated, FsyncPolicy, LineWriter};
use crate::sink::lock::{self, FileLocked};
use crate::sink::loss::{flush_result, LossTracker};
use crate::sink::rotate::{day_of, ledger_sequence, Rotation};
use crate::sink::{BatchError, Sink, SinkError};
use crate::time::timestamp::Timestamp;
use crate::util::text::Text;

/// Options of a [`LedgerSink`].
#[derive(Clone, Debug)]
#[non_exhaustive]
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
    /// Rotation by size and/or UTC day (default: none). The chain continues
    /// across files; checkpoints count the events of the whole sequence
    /// (see [`crate::sink::ledger_sequence`]).
    pub rotation: Option<Rotation>,
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
            rotation: None,
        }
    }
}

/// Builders: the struct is `#[non_exhaustive]` (options may be added), so
/// outside this crate it is built from [`LedgerOptions::new`] and these.
impl LedgerOptions {
    /// The defaults (as [`Default`]).
    pub fn new() -> LedgerOptions {
        LedgerOptions::default()
    }

    /// Sets [`hash_alg`](LedgerOptions::hash_alg).
    pub fn hash_alg(mut self, alg: HashAlg) -> Self {
        self.hash_alg = alg;
        self
    }

    /// Sets [`fsync`](LedgerOptions::fsync).
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// Sets [`signer`](LedgerOptions::signer) (`Some`: checkpoints are
    /// written).
    pub fn signer(mut self, signer: Option<CheckpointSigner>) -> Self {
        self.signer = signer;
        self
    }

    /// Sets [`checkpoint_every`](LedgerOptions::checkpoint_every).
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.checkpoint_every = events;
        self
    }

    /// Sets [`buffer_capacity`](LedgerOptions::buffer_capacity).
    pub fn buffer_capacity(mut self, bytes: usize) -> Self {
        self.buffer_capacity = bytes;
        self
    }

    /// Sets [`preallocate`](LedgerOptions::preallocate).
    pub fn preallocate(mut self, bytes: u64) -> Self {
        self.preallocate = bytes;
        self
    }

    /// Sets [`rotation`](LedgerOptions::rotation) (`None`: one file).
    pub fn rotation(mut self, rotation: Option<Rotation>) -> Self {
        self.rotation = rotation;
        self
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
    /// Complete lines after the last chained event that were not chained
    /// events (garbage such as the zeros a crash can leave), if there were
    /// any: moved aside, and recorded in the ledger by an event of its own.
    pub damaged_tail: Option<DamagedTail>,
}

/// Complete lines at the end of a ledger that were not chained events,
/// moved out of the ledger when it was opened.
///
/// The chain resumes from the last chained event, and the sink appends a
/// chained audit event of its own recording the move (action `UPDATE`,
/// resource type `AuditLedger`, action name `set_aside_damaged_tail`,
/// metadata `damaged_bytes`, `damaged_lines`, `first_line`,
/// `damaged_sha256` and `moved_to`, the side file's name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedTail {
    /// Its length in bytes.
    pub bytes: u64,
    /// Lines with content in it.
    pub lines: u64,
    /// 1-based line number in the ledger where it started.
    pub first_line: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// The side file now holding those bytes (`<ledger>.damaged-<millis>`).
    pub moved_to: PathBuf,
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
#[non_exhaustive]
pub enum LedgerError {
    /// Reading, moving or writing a file failed.
    Io(io::Error),
    /// The ledger holds no chained event to resume from but does hold JSON
    /// lines (an event file that is not a ledger), or its damaged tail is
    /// too large to move aside on its own (over 64 MiB).
    NotChained {
        /// 1-based line number of its last line with content.
        line: u64,
    },
    /// Another writer (another process, or another sink in this one) has
    /// the ledger open.
    Locked(FileLocked),
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::Io(e) => write!(f, "ledger I/O error: {e}"),
            LedgerError::NotChained { line } => write!(
                f,
                "cannot resume the ledger: line {line} (its last complete line) is not a chained \
                 event with integrity.event_hash, and no chained event precedes it within 64 MiB; \
                 run `phi-audit verify` on the file and move it aside (or repair it) before \
                 opening a ledger at this path"
            ),
            LedgerError::Locked(l) => write!(f, "cannot open the ledger: {l}"),
        }
    }
}

impl std::error::Error for LedgerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LedgerError::Io(e) => Some(e),
            LedgerError::NotChained { .. } => None,
            LedgerError::Locked(l) => Some(l),
        }
    }
}

impl From<io::Error> for LedgerError {
    fn from(e: io::Error) -> Self {
        match e.get_ref().and_then(|i| i.downcast_ref::<FileLocked>()) {
            Some(l) => LedgerError::Locked(l.clone()),
            None => LedgerError::Io(e),
        }
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
/// * **One writer.** Opening takes an exclusive advisory lock on the file
///   (`flock`, unix) before anything is read or repaired; a second open, by
///   another process or in this one, fails at once with
///   [`LedgerError::Locked`] naming the path and, on Linux, the holder's pid.
///   The kernel drops the lock when the holder exits or is killed.
/// * **Resume.** Opening an existing ledger continues the chain from its last
///   complete line. An unterminated last line (a crash mid-write) is moved to
///   a side file and reported in [`LedgerSink::recovery`]; it is never hashed.
///   Complete lines after the last chained event that are not chained events
///   (garbage) are moved to `<ledger>.damaged-<millis>`, reported in
///   [`Recovery::damaged_tail`] and through `tracing`, and recorded in the
///   ledger by a chained event of the sink's own (see [`DamagedTail`]).
/// * **Losses are never silent.** A failed write is cut back to this
///   writer's own bytes; [`Sink::flush`] returns [`SinkError::Lost`] with
///   the count of events that failed since the previous flush.
/// * **Checkpoints.** With [`LedgerOptions::signer`], signed checkpoints go to
///   `<ledger>.checkpoints` (format in [`crate::integrity::checkpoint`]).
///
/// * **Rotation.** With [`LedgerOptions::rotation`] the file is renamed when
///   it reaches a size or when the UTC day of the events changes (names in
///   [`crate::sink::Rotation`]); the chain continues across the files and
///   `phi-audit verify DIR` checks the whole sequence. Without rotation, to
///   verify a slice of a chain, pass the previous hash as the verifier's
///   anchor.
///
/// ```
/// use phi_audit::sink::{LedgerOptions, LedgerSink};
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
    losses: LossTracker,
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
    /// Rotate when the UTC day of the events changes.
    daily: bool,
}

/// Longest line the ledger reads back when resuming.
const MAX_LINE: u64 = 64 * 1024 * 1024;

impl LedgerSink {
    /// Opens (or creates) the ledger at `path` with the default options
    /// (sha256, fsync every event, no checkpoints).
    pub fn open(path: impl AsRef<Path>) -> Result<LedgerSink, LedgerError> {
        LedgerSink::open_with(path, LedgerOptions::default())
    }

    /// Opens (or creates) the ledger at `path` under its write lock,
    /// recovering a torn or damaged tail and resuming the chain from the last
    /// chained line.
    ///
    /// `{pid}` and `{hostname}` in `path` are replaced by the process id and
    /// the host name (one ledger per process or replica from one setting;
    /// `{hostname}` keeps the same ledger across restarts);
    /// [`LedgerSink::path`] is the result.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: LedgerOptions,
    ) -> Result<LedgerSink, LedgerError> {
        let path = lock::expand_placeholders(path.as_ref());
        create_parent(&path)?;
        // Lock first: recovery must never cut what a live writer is appending.
        let mut file = lock::open_locked(&path)?;
        let (recovery, last_event) = recover(&mut file, &path)?;
        let cp_path = checkpoint_path(&path);
        let last_checkpoint = if options.signer.is_some() {
            last_checkpoint_count(&cp_path)?
        } else {
            0
        };
        let mut w = LineWriter::from_locked(
            &path,
            file,
            options.fsync,
            None,
            options.buffer_capacity,
            options.preallocate,
        )?;
        // A rotated ledger: the chain and the count go on from the files
        // before this one.
        let mut head = recovery.last_event_hash.clone();
        let mut count = recovery.events;
        if let Some(rot) = options.rotation {
            let day = last_event
                .as_ref()
                .and_then(|v| v.get("timestamp"))
                .and_then(Value::as_str)
                .and_then(|t| Timestamp::parse_rfc3339(t).ok())
                .map(day_of);
            w.set_rotation(rot.max_bytes, rot.names, day);
            let earlier: Vec<PathBuf> = ledger_sequence(&path)?
                .into_iter()
                .filter(|p| p != &path)
                .collect();
            if head.is_none() && recovery.events == 0 {
                if let Some(last) = earlier.last() {
                    head = last_hash_in(last)?;
                }
            }
            if options.signer.is_some() {
                for p in &earlier {
                    let mut f = File::open(p)?;
                    let len = f.metadata()?.len();
                    count += count_events(&mut f, len)?;
                }
            }
        }
        let mut state = State {
            w,
            canon: Canonicalizer::new(),
            alg: options.hash_alg,
            head: head.clone(),
            count,
            pending_head: head.map(Head::Found),
            pending_count: count,
            daily: options.rotation.is_some_and(|r| r.daily),
            signer: options.signer,
            every: options.checkpoint_every,
            checkpoint_path: cp_path,
            checkpoint_file: None,
            last_checkpoint,
            checkpoint_errors: 0,
            closed: false,
        };
        if let Some(d) = &recovery.damaged_tail {
            // The record of the move, chained and made durable now.
            let event = damaged_tail_event(d, last_event.as_ref());
            state.append(&event).map_err(sink_to_ledger)?;
            state.run_flush().map_err(sink_to_ledger)?;
            state.w.sync()?;
        }
        Ok(LedgerSink {
            inner: Mutex::new(state),
            path,
            recovery,
            losses: LossTracker::default(),
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

    /// Flushes, syncs, writes a final checkpoint (with a signer) and closes,
    /// releasing the lock. Later writes fail with [`SinkError::Closed`].
    /// Like [`Sink::flush`], returns [`SinkError::Lost`] when events failed
    /// since the last flush. Dropping the sink closes it too, ignoring
    /// errors.
    pub fn close(&self) -> Result<(), SinkError> {
        let mut s = self.lock()?;
        if s.closed {
            return Ok(());
        }
        s.closed = true;
        let lost_before = s.w.lost_events();
        let r = s.run_flush();
        let cp = if s.signer.is_some() && s.count > s.last_checkpoint {
            s.w.sync()
                .map_err(SinkError::Io)
                .and_then(|_| s.write_checkpoint())
        } else {
            Ok(())
        };
        let c = s.w.close().map_err(SinkError::Io);
        let r = r.and(cp).and(c);
        if let Err(e) = &r {
            self.losses.record(s.w.lost_events() - lost_before, e);
        }
        flush_result(r, self.losses.take())
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
        if s.daily {
            s.w.rotate_for_day(day_of(event.timestamp))
                .map_err(SinkError::Io)?;
        }
        let hash = s
            .canon
            .event_digest(event, s.pending_head.as_ref().map(Head::as_str), alg)
            .map_err(|e| SinkError::Other(e.to_string()))?;
        let prev = s.pending_head.take();
        let (canon, at) = s.canon.last();
        let buf = s.w.buffer();
        let mark = buf.len();
        if let Some(at) = at.filter(|&a| a > 0 && a < canon.len()) {
            // The line is the hashed canonical form with the integrity
            // member at its sorted place: a verifier checks it with one scan.
            let bare = canon[at - 1] == b'{';
            buf.extend_from_slice(&canon[..at]);
            if !bare {
                buf.push(b',');
            }
            buf.extend_from_slice(b"\"integrity\":{\"event_hash\":\"");
            buf.extend_from_slice(hash.as_str().as_bytes());
            buf.extend_from_slice(b"\",\"hash_alg\":\"");
            buf.extend_from_slice(alg.as_str().as_bytes());
            buf.push(b'"');
            if let Some(p) = prev.as_ref().map(Head::as_str) {
                buf.extend_from_slice(b",\"prev_event_hash\":\"");
                buf.extend_from_slice(p.as_bytes());
                buf.push(b'"');
            }
            buf.push(b'}');
            if bare && canon[at] != b'}' {
                buf.push(b',');
            }
            buf.extend_from_slice(&canon[at..]);
            buf.push(b'\n');
        } else {
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
        }
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
        let lost_before = s.w.lost_events();
        if let Err(e) = s.append(event) {
            self.losses
                .record(1 + (s.w.lost_events() - lost_before), &e);
            return Err(e);
        }
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
        let lost_before = s.w.lost_events();
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
            Some(error) => {
                let lost = s.w.lost_events() - lost_before;
                self.losses.record(failed + lost, &error);
                Err(BatchError { failed, error })
            }
        }
    }

    /// Writes and syncs what is buffered; then returns
    /// [`SinkError::Lost`] if any event handed to the sink since the last
    /// flush was not written.
    fn flush(&self) -> Result<(), SinkError> {
        let mut s = self.lock()?;
        let r = if s.closed {
            Ok(())
        } else {
            let lost_before = s.w.lost_events();
            let r = s.run_flush();
            if let Err(e) = &r {
                self.losses.record(s.w.lost_events() - lost_before, e);
            }
            r
        };
        flush_result(r, self.losses.take())
    }

    fn lost_events(&self) -> u64 {
        LedgerSink::lost_events(self)
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

/// The `integrity.event_hash` of the last line of a closed ledger file.
fn last_hash_in(path: &Path) -> io::Result<Option<String>> {
    let mut f = File::open(path)?;
    let mut end = f.metadata()?.len();
    loop {
        if end == 0 {
            return Ok(None);
        }
        let start = line_start_before(&mut f, end - 1)?;
        let mut line = vec![0u8; (end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut line)?;
        match classify(&line) {
            Tail::Blank => end = start,
            Tail::Chained(h, _) => return Ok(Some(h)),
            _ => return Ok(None),
        }
    }
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

/// Longest damaged tail moved aside on its own; a longer one is left for a
/// person to look at ([`LedgerError::NotChained`]).
const MAX_DAMAGED: u64 = 64 * 1024 * 1024;

/// What a line at the end of a ledger is.
enum Tail {
    Blank,
    /// A JSON object with `integrity.event_hash`: the chain resumes here.
    Chained(String, Value),
    /// A JSON object without a chain hash (an event, but not a ledger's).
    Unchained,
    /// Not a JSON object at all.
    Garbage,
}

fn classify(line: &[u8]) -> Tail {
    if line.trim_ascii().is_empty() {
        return Tail::Blank;
    }
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return Tail::Garbage;
    };
    if !v.is_object() {
        return Tail::Garbage;
    }
    let hash = v
        .get("integrity")
        .and_then(|i| i.get("event_hash"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    match hash {
        Some(h) => Tail::Chained(h, v),
        None => Tail::Unchained,
    }
}

/// Recovers the ledger open (and locked) in `f`: moves a torn tail and a
/// damaged tail aside, and finds the chain head. Also returns the last
/// chained event (for the record of a damaged tail).
fn recover(f: &mut File, path: &Path) -> Result<(Recovery, Option<Value>), LedgerError> {
    let len = f.metadata()?.len();
    let mut rec = Recovery::default();
    if len == 0 {
        return Ok((rec, None));
    }
    let good_end = line_start_before(f, len)?;
    if good_end < len {
        // Torn tail: copy it aside, make that durable, then cut it off.
        let torn_len = len - good_end;
        let (side, _) = move_aside(f, path, good_end, len, "torn")?;
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
    // Walk back over the complete lines to the last chained event.
    let mut end = good_end;
    let mut damaged_from: Option<u64> = None;
    let mut unchained_json = false;
    let mut last_content_start = None;
    let mut head = None;
    while end > 0 {
        let start = line_start_before(f, end - 1)?;
        let line_len = end - 1 - start;
        let kind = if line_len > MAX_LINE {
            Tail::Garbage
        } else {
            let mut line = vec![0u8; line_len as usize];
            f.seek(SeekFrom::Start(start))?;
            f.read_exact(&mut line)?;
            classify(&line)
        };
        match kind {
            Tail::Blank => {}
            Tail::Chained(hash, v) => {
                head = Some((end, hash, v));
                break;
            }
            Tail::Unchained | Tail::Garbage => {
                unchained_json |= matches!(kind, Tail::Unchained);
                last_content_start.get_or_insert(start);
                damaged_from = Some(start);
                if good_end - start > MAX_DAMAGED {
                    let line = count_events(f, start)? + 1;
                    return Err(LedgerError::NotChained { line });
                }
            }
        }
        end = start;
    }
    if head.is_none() && unchained_json {
        // Event lines without a chain: not a ledger (or not ours to cut).
        let start = last_content_start.unwrap_or(0);
        let line = count_events(f, start)? + 1;
        return Err(LedgerError::NotChained { line });
    }
    let (chain_end, last) = match head {
        Some((end, hash, v)) => {
            rec.last_event_hash = Some(hash);
            (end, Some(v))
        }
        None => (0, None),
    };
    if damaged_from.is_some() {
        let first_line = count_lines(f, chain_end)? + 1;
        let lines = count_events(f, good_end)? - count_events(f, chain_end)?;
        let (side, sha256) = move_aside(f, path, chain_end, good_end, "damaged")?;
        let bytes = good_end - chain_end;
        tracing::warn!(
            target: "phi_audit::ledger",
            damaged_bytes = bytes,
            damaged_lines = lines,
            first_line,
            sha256 = %sha256,
            moved_to = %side.display(),
            "ledger ended in lines that are not chained events; moved them aside, the chain \
             resumes from the last chained event and the ledger records the move"
        );
        rec.damaged_tail = Some(DamagedTail {
            bytes,
            lines,
            first_line,
            sha256,
            moved_to: side,
        });
    }
    let now = f.metadata()?.len();
    rec.events = count_events(f, now)?;
    Ok((rec, last))
}

/// Copies bytes `from..to` of `f` (its end) to a new side file
/// `<path>.<what>-<millis>`, makes that durable, then cuts them off `f`.
/// Returns the side file and the SHA-256 of the bytes.
fn move_aside(
    f: &mut File,
    path: &Path,
    from: u64,
    to: u64,
    what: &str,
) -> Result<(PathBuf, String), LedgerError> {
    let side = side_path(path, what);
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut side_file = o.open(&side)?;
    f.seek(SeekFrom::Start(from))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = to - from;
    while left > 0 {
        let n = (left.min(buf.len() as u64)) as usize;
        f.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        side_file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    side_file.sync_all()?;
    sync_parent(&side);
    f.set_len(from)?;
    f.sync_all()?;
    let sha = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((side, sha))
}

/// Makes a new directory entry durable (best effort).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Physical lines (newlines) before `end`.
fn count_lines(f: &mut File, end: u64) -> io::Result<u64> {
    f.seek(SeekFrom::Start(0))?;
    let mut r = f.take(end);
    let mut buf = vec![0u8; 256 * 1024];
    let mut count = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(count);
        }
        count += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

fn sink_to_ledger(e: SinkError) -> LedgerError {
    match e {
        SinkError::Io(e) => LedgerError::Io(e),
        other => LedgerError::Io(io::Error::other(other.to_string())),
    }
}

/// The ledger's record of a damaged tail it set aside: a chained event of
/// the service that wrote the last chained event (its schema version and
/// service block when they are valid), by the `phi-audit` service actor.
fn damaged_tail_event(d: &DamagedTail, last: Option<&Value>) -> AuditEvent {
    let name = d
        .moved_to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut metadata = Metadata::new();
    let mut put = |k: &'static str, v: MetaValue| metadata.insert_value(Text::from_static(k), v);
    put("damaged_bytes", MetaValue::UInt(d.bytes));
    put("damaged_lines", MetaValue::UInt(d.lines));
    put("first_line", MetaValue::UInt(d.first_line));
    put(
        "damaged_sha256",
        MetaValue::Str(Text::from(d.sha256.as_str())),
    );
    put("moved_to", MetaValue::Str(Text::from(name.as_str())));
    let fallback = Service {
        name: Text::from_static("phi-audit"),
        environment: None,
        version: None,
    };
    let mut event = AuditEvent {
        schema_version: SchemaVersion::V1_1,
        event_id: uuid::Uuid::new_v4(),
        timestamp: Timestamp::now(),
        service: fallback.clone(),
        actor: Actor::service("phi-audit"),
        action: Action {
            kind: ActionType::Update,
            name: Some(Text::from_static("set_aside_damaged_tail")),
            phi_touched: Some(false),
            data_classification: Some(DataClassification::None),
        },
        resource: Resource {
            kind: Text::from_static("AuditLedger"),
            id: None,
            patient_id: None,
        },
        outcome: Outcome::SUCCESS,
        correlation: None,
        http: None,
        delegation: None,
        metadata,
        integrity: None,
    };
    let version = last
        .and_then(|v| v.get("schema_version"))
        .and_then(|v| serde_json::from_value::<SchemaVersion>(v.clone()).ok());
    let service = last
        .and_then(|v| v.get("service"))
        .and_then(|v| serde_json::from_value::<Service>(v.clone()).ok());
    let mut like_the_ledger = event.clone();
    if let Some(v) = version {
        like_the_ledger.schema_version = v;
    }
    if let Some(s) = service {
        like_the_ledger.service = s;
    }
    if crate::schema::validate(&like_the_ledger).is_ok() {
        event = like_the_ledger;
    }
    event
}

fn side_path(path: &Path, what: &str) -> PathBuf {
    let ms = Timestamp::now().unix_millis();
    let mut i = 0u32;
    loop {
        let mut p = path.as_os_str().to_owned();
        if i == 0 {
            p.push(format!(".{what}-{ms}"));
        } else {
            p.push(format!(".{what}-{ms}-{i}"));
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
