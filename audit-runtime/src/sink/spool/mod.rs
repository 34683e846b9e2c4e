//! [`Spool`]: a durable local queue in front of any sink, so that callers
//! wait only for a local append whatever the remote sink is doing.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::file::{create_parent, open_append};
use super::lock;
use super::loss::{flush_result, LossTracker};
use super::{BatchError, FsyncPolicy, Sink, SinkError};
use crate::model::event::AuditEvent;
use crate::record::{CallRecord, RecordRef};

mod drain;
mod segment;

/// What a [`Spool`] does with a write when its unacknowledged bytes reached
/// [`SpoolOptions::max_bytes`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpoolFull {
    /// Wait until the inner sink acknowledged enough to make room
    /// (lossless; the default). Counted in [`SpoolStats::blocked`].
    #[default]
    Block,
    /// Refuse the event at once with [`SinkError::QueueFull`]; it is counted
    /// in [`SpoolStats::refused`] and as a loss (the next
    /// [`Sink::flush`] returns [`SinkError::Lost`]).
    Refuse,
}

/// Options of a [`Spool`].
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// Most bytes of events not yet acknowledged by the inner sink (default
    /// 1 GiB). The files on disk hold at most this plus one segment of
    /// acknowledged events not yet deleted.
    pub max_bytes: u64,
    /// A segment file is closed and a new one started when it reaches this
    /// many bytes (default 16 MiB). A segment is deleted once every event in
    /// it was acknowledged.
    pub segment_bytes: u64,
    /// What a write does when the spool is full (default [`SpoolFull::Block`]).
    pub full: SpoolFull,
    /// When appends are synced to disk (default [`FsyncPolicy::EveryEvent`]):
    ///
    /// * `EveryEvent`: a write returns after its line is written and synced
    ///   (group commit: callers writing at the same time share one `fsync`),
    ///   so an acknowledged event survives a crash of the process and of
    ///   the machine.
    /// * `EveryN(n)`: a write returns after its line is written (it
    ///   survives a crash of the process); every `n`th write also syncs.
    /// * `Never`: written, never synced (survives a crash of the process,
    ///   not of the machine).
    pub fsync: FsyncPolicy,
    /// Most events handed to the inner sink at once (default 500).
    pub batch_events: usize,
    /// First and longest wait before a failed delivery is tried again
    /// (default 50 ms doubling to 5 s).
    pub retry_initial: Duration,
    /// See [`SpoolOptions::retry_initial`].
    pub retry_max: Duration,
    /// Give up on a batch the inner sink keeps failing after this long and
    /// count its events as lost (default `None`: retry until it succeeds;
    /// the events stay on disk meanwhile).
    pub give_up_after: Option<Duration>,
    /// How long dropping the spool waits for the worker to finish the
    /// delivery attempt under way (default 5 s). Past it the worker is left
    /// to finish on its own; unacknowledged events stay in the segment
    /// files and are sent by the next process that opens the directory.
    pub shutdown_wait: Duration,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            full: SpoolFull::Block,
            fsync: FsyncPolicy::EveryEvent,
            batch_events: 500,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            give_up_after: None,
            shutdown_wait: Duration::from_secs(5),
        }
    }
}

/// Counters of a [`Spool`]; see [`Spool::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Events written to the spool by this process.
    pub appended: u64,
    /// Events the inner sink acknowledged (written and flushed) since the
    /// spool was opened, including those left by an earlier process.
    pub delivered: u64,
    /// Events in the spool not yet acknowledged by the inner sink.
    pub depth: u64,
    /// Bytes of those events.
    pub bytes: u64,
    /// Segment files holding them.
    pub segments: u64,
    /// How long the oldest of them has been waiting (`None` when the spool
    /// is empty).
    pub oldest_age: Option<Duration>,
    /// Events found unacknowledged when the spool was opened (left by an
    /// earlier process), sent again.
    pub recovered: u64,
    /// Partial last lines cut off when the spool was opened: appends a
    /// crash interrupted, never acknowledged to their callers.
    pub torn_tails: u64,
    /// Complete lines in a segment that are not events (damage on disk),
    /// skipped. Each is a loss.
    pub corrupt: u64,
    /// Events refused because the spool was full ([`SpoolFull::Refuse`]).
    /// Each is a loss.
    pub refused: u64,
    /// Writes that waited for room ([`SpoolFull::Block`]).
    pub blocked: u64,
    /// Writes that failed locally (the append or its sync). Each is a loss.
    pub write_errors: u64,
    /// Delivery attempts the inner sink failed (retried).
    pub inner_errors: u64,
    /// Events the inner sink refused for good ([`SinkError::Rejected`]) or
    /// that were given up on ([`SpoolOptions::give_up_after`]). Each is a
    /// loss.
    pub undeliverable: u64,
    /// The last error (local or of the inner sink), without event content.
    pub last_error: Option<String>,
}

/// One segment with events still to deliver.
#[derive(Debug)]
struct Seg {
    id: u64,
    /// Bytes of whole lines written.
    len: u64,
    /// Bytes acknowledged by the inner sink.
    acked: u64,
    /// Lines after `acked`.
    pending_events: u64,
}

/// The state shared by writers and the worker, under one mutex.
struct State {
    /// The segment being appended to (`None` until the first write, and
    /// after a write error that could not be undone).
    file: Option<Arc<File>>,
    /// Its id; segments with a lower id are no longer written.
    cur_id: u64,
    cur_len: u64,
    /// Segments with events to deliver, oldest first.
    segs: VecDeque<Seg>,
    pending_bytes: u64,
    pending_events: u64,
    /// Appends written (this process), and how many of them are synced.
    written_seq: u64,
    synced_seq: u64,
    /// Writes since the last sync (for [`FsyncPolicy::EveryN`]).
    unsynced: u64,
    /// A writer is syncing outside the lock (group commit leader).
    syncing: bool,
    /// Appends up to this sequence number failed to sync.
    sync_failed_to: u64,
    /// When bytes were appended, oldest first: `(segment, end offset, unix
    /// ms)` means the segment's bytes up to the offset were there by then.
    /// At most one mark a second; marks of acknowledged bytes are dropped,
    /// so the first one dates the oldest event waiting (to within a
    /// second, never younger).
    marks: VecDeque<(u64, u64, i64)>,
    /// The spool is being dropped.
    closing: bool,
}

#[derive(Default)]
struct Counters {
    appended: AtomicU64,
    delivered: AtomicU64,
    recovered: AtomicU64,
    torn_tails: AtomicU64,
    corrupt: AtomicU64,
    refused: AtomicU64,
    blocked: AtomicU64,
    write_errors: AtomicU64,
    inner_errors: AtomicU64,
    undeliverable: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, e: &dyn fmt::Display) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }
}

struct Shared {
    dir: PathBuf,
    inner: Box<dyn Sink>,
    options: SpoolOptions,
    state: Mutex<State>,
    /// Signalled when events are appended (the worker waits on it) or the
    /// spool closes.
    work: Condvar,
    /// Signalled when events are acknowledged (room for blocked writers,
    /// progress for [`Spool::drain`]).
    progress: Condvar,
    /// Signalled when a group sync ends.
    synced: Condvar,
    counters: Counters,
    losses: LossTracker,
    /// Kept open for the spool's lifetime: the directory's write lock.
    _lock: File,
    worker_done: AtomicBool,
}

/// A durable spool in front of any sink: events are appended to segment
/// files in a local directory, and a worker thread delivers them in order
/// to the inner sink, deleting a segment once the inner sink acknowledged
/// every event in it.
///
/// **What a caller waits for.** [`Sink::write`] (and the batch and record
/// forms) appends the event's JSON line to the current segment with one
/// `write` and, under the default [`FsyncPolicy::EveryEvent`], waits for it
/// to be synced: writers that arrive together share one `fsync` (group
/// commit). It never waits for the inner sink. Put a [`crate::NonBlocking`]
/// queue in front (what the `?spool=DIR` setting does) and callers wait only
/// for the queue while its worker appends whole batches with one `write` and
/// one `fsync`.
///
/// **Acknowledged means durable.** A write that returned `Ok` is in a
/// segment file (synced, under `EveryEvent`). If the process dies (even by
/// `SIGKILL`) the next [`Spool::open`] of the directory finds the events the
/// inner sink had not acknowledged and sends them again. Each segment keeps
/// its acknowledged offset in a small `.ack` file; events between a stale
/// offset and the real one are sent twice, so the inner sink must drop
/// repeats by `event_id` ([`crate::PostgresSink`] does, and counts them as
/// duplicates, not losses).
///
/// **Delivery.** The worker hands the inner sink up to
/// [`SpoolOptions::batch_events`] events at a time through
/// [`Sink::write_batch`], then calls its [`Sink::flush`]; both `Ok` is an
/// acknowledgement. A failed attempt is counted ([`SpoolStats::inner_errors`],
/// [`SpoolStats::last_error`]) and the same events are tried again with
/// backoff, in order, for as long as it takes (or until
/// [`SpoolOptions::give_up_after`]). Events the inner sink refuses for good
/// ([`SinkError::Rejected`]) are counted as lost and skipped.
///
/// **Bounded.** At most [`SpoolOptions::max_bytes`] of unacknowledged
/// events; then [`SpoolFull`] decides: block the writer until there is room,
/// or refuse the event and count it.
///
/// **Flush.** [`Sink::flush`] makes everything written so far durable
/// locally (synced, unless the policy is [`FsyncPolicy::Never`]) and returns
/// [`SinkError::Lost`] when events were lost since the previous flush
/// (refused, failed to append, damaged on disk, undeliverable); it does not
/// wait for the inner sink. [`Spool::drain`] waits for that.
///
/// **One writer per directory**: opening takes an exclusive lock on
/// `spool.lock` in it (see [`crate::sink::FileLocked`]).
///
/// A partial last line (an append a crash interrupted: never acknowledged)
/// is cut off when the directory is opened ([`SpoolStats::torn_tails`]); a
/// complete line that is not an event is skipped and counted as lost
/// ([`SpoolStats::corrupt`]).
///
/// ```
/// use phi_audit_runtime::{MemorySink, Sink, Spool};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let dir = std::env::temp_dir().join(format!("phi-audit-spool-doc-{}", std::process::id()));
/// let remote = Arc::new(MemorySink::new());
/// let spool = Spool::open(&dir, remote.clone())?;
/// // spool.write(&event)?;      returns once the event is on local disk
/// spool.drain(Duration::from_secs(5))?; // waits until the inner sink has it all
/// println!("{:?}", spool.stats());
/// # drop(spool); let _ = std::fs::remove_dir_all(dir);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Spool {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.shared.dir)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// A writer's encoding buffer, reused between writes.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Spool {
    /// Opens (creating) the spool directory `dir` in front of `inner`, with
    /// the default [`SpoolOptions`]. See [`Spool::open_with`].
    pub fn open(dir: impl AsRef<Path>, inner: impl Sink) -> io::Result<Spool> {
        Spool::open_with(dir, inner, SpoolOptions::default())
    }

    /// Opens (creating, mode 0700 on unix) the spool directory `dir` in
    /// front of `inner`: takes the directory's write lock, cuts torn last
    /// lines, and starts the worker, which first sends the events an
    /// earlier process left unacknowledged. `{pid}` and `{hostname}` in
    /// `dir` are replaced as in [`crate::JsonlFileSink::open_with`].
    ///
    /// Fails when another spool holds the directory (an error of kind
    /// [`io::ErrorKind::WouldBlock`] holding a [`crate::sink::FileLocked`]),
    /// or when the directory cannot be created or read.
    pub fn open_with(
        dir: impl AsRef<Path>,
        inner: impl Sink,
        options: SpoolOptions,
    ) -> io::Result<Spool> {
        let dir = lock::expand_placeholders(dir.as_ref());
        create_parent(&dir.join(segment::LOCK_FILE))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        let lock_file = lock::open_locked(&dir.join(segment::LOCK_FILE))?;
        let scan = segment::scan(&dir)?;
        let counters = Counters::default();
        counters
            .torn_tails
            .store(scan.torn_tails, Ordering::Relaxed);
        let mut segs = VecDeque::new();
        let (mut pending_bytes, mut pending_events) = (0, 0);
        for f in scan.segments {
            pending_bytes += f.len - f.acked;
            pending_events += f.pending_events;
            segs.push_back(Seg {
                id: f.id,
                len: f.len,
                acked: f.acked,
                pending_events: f.pending_events,
            });
        }
        counters.recovered.store(pending_events, Ordering::Relaxed);
        // Events left by an earlier process wait from the time they are
        // found.
        let found_at = now_ms();
        let marks = segs.iter().map(|s| (s.id, s.len, found_at)).collect();
        let options = SpoolOptions {
            batch_events: options.batch_events.max(1),
            segment_bytes: options.segment_bytes.max(1),
            retry_max: options.retry_max.max(options.retry_initial),
            ..options
        };
        let shared = Arc::new(Shared {
            dir,
            inner: Box::new(inner),
            options,
            state: Mutex::new(State {
                file: None,
                cur_id: scan.max_id + 1,
                cur_len: 0,
                segs,
                pending_bytes,
                pending_events,
                written_seq: 0,
                synced_seq: 0,
                unsynced: 0,
                syncing: false,
                sync_failed_to: 0,
                marks,
                closing: false,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            synced: Condvar::new(),
            counters,
            losses: LossTracker::default(),
            _lock: lock_file,
            worker_done: AtomicBool::new(false),
        });
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("phi-audit-spool".into())
            .spawn(move || drain::run(&worker_shared))?;
        Ok(Spool {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// The spool directory (placeholders replaced).
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The inner sink.
    pub fn inner(&self) -> &dyn Sink {
        &*self.shared.inner
    }

    /// Current counters: depth, bytes and age of what waits for the inner
    /// sink, and every loss and error.
    pub fn stats(&self) -> SpoolStats {
        let s = &self.shared;
        let c = &s.counters;
        let (depth, bytes, segments, oldest_ms) = {
            let st = s.lock();
            (
                st.pending_events,
                st.pending_bytes,
                st.segs.len() as u64,
                st.marks.front().map(|m| m.2),
            )
        };
        SpoolStats {
            appended: c.appended.load(Ordering::Acquire),
            delivered: c.delivered.load(Ordering::Acquire),
            depth,
            bytes,
            segments,
            oldest_age: if depth == 0 {
                None
            } else {
                oldest_ms.map(|t| Duration::from_millis(now_ms().saturating_sub(t).max(0) as u64))
            },
            recovered: c.recovered.load(Ordering::Acquire),
            torn_tails: c.torn_tails.load(Ordering::Acquire),
            corrupt: c.corrupt.load(Ordering::Acquire),
            refused: c.refused.load(Ordering::Acquire),
            blocked: c.blocked.load(Ordering::Acquire),
            write_errors: c.write_errors.load(Ordering::Acquire),
            inner_errors: c.inner_errors.load(Ordering::Acquire),
            undeliverable: c.undeliverable.load(Ordering::Acquire),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Makes everything written durable locally ([`Sink::flush`]), then
    /// waits up to `timeout` until the inner sink acknowledged every event
    /// in the spool.
    ///
    /// `Ok` when the spool is empty and nothing was lost since the previous
    /// flush; [`SinkError::Lost`] after a loss (as [`Sink::flush`]);
    /// otherwise [`SinkError::Other`] saying how many events still wait
    /// (they stay on disk and are delivered later, or by the next process)
    /// and the last delivery error.
    pub fn drain(&self, timeout: Duration) -> Result<(), SinkError> {
        let synced = self.shared.flush_local().map_err(SinkError::Io);
        let deadline = Instant::now() + timeout;
        let s = &self.shared;
        let mut st = s.lock();
        while st.pending_events > 0 && !s.worker_done.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = s
                .progress
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(100)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let left = st.pending_events;
        drop(st);
        // Losses since the last flush, those found while waiting included.
        flush_result(synced, s.losses.take())?;
        if left == 0 {
            return Ok(());
        }
        let last = s
            .counters
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Err(SinkError::Other(format!(
            "{left} audit event(s) still in the spool after {timeout:?}, not yet acknowledged by \
             the inner sink (kept on disk; last error: {})",
            last.as_deref().unwrap_or("none")
        )))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the lines in `bytes` (`events` of them, each ending in a
    /// newline, `ends[i]` the end of line `i`) and waits as the fsync
    /// policy says. Returns how many lines were refused (full, Refuse) and
    /// the first error.
    fn append(&self, bytes: &[u8], ends: &[usize]) -> Result<(), (u64, SinkError)> {
        let mut st = self.lock();
        // Room: a write that does not fit waits (Block) or refuses the
        // lines that do not fit (Refuse). A spool holding nothing takes any
        // write, however large, so one oversized batch cannot wedge it.
        let mut take = ends.len();
        let mut waited = false;
        loop {
            if st.closing {
                return Err((ends.len() as u64, SinkError::Closed));
            }
            let room = self.options.max_bytes.saturating_sub(st.pending_bytes);
            if st.pending_bytes == 0 || bytes.len() as u64 <= room {
                break;
            }
            match self.options.full {
                SpoolFull::Block => {
                    if !waited {
                        waited = true;
                        self.counters.blocked.fetch_add(1, Ordering::AcqRel);
                    }
                    st = self
                        .progress
                        .wait_timeout(st, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                SpoolFull::Refuse => {
                    take = ends.iter().take_while(|&&e| e as u64 <= room).count();
                    break;
                }
            }
        }
        let refused = (ends.len() - take) as u64;
        let len = if take == 0 { 0 } else { ends[take - 1] };
        let result = if take == 0 {
            Ok(0)
        } else {
            self.write_locked(&mut st, &bytes[..len], take as u64)
        };
        let seq = match result {
            Ok(seq) => seq,
            Err(e) => {
                self.counters
                    .write_errors
                    .fetch_add(take as u64, Ordering::AcqRel);
                self.counters.error(&e);
                let e = SinkError::Io(e);
                self.losses.record(ends.len() as u64, &e);
                return Err((ends.len() as u64, e));
            }
        };
        let synced = if take == 0 {
            Ok(())
        } else {
            self.wait_durable(st, seq)
        };
        match synced {
            Ok(()) if refused == 0 => Ok(()),
            Ok(()) => {
                self.counters.refused.fetch_add(refused, Ordering::AcqRel);
                let e = SinkError::QueueFull;
                self.losses
                    .record(refused, &"the spool is full (policy: refuse)");
                Err((refused, e))
            }
            Err(e) => {
                self.counters
                    .write_errors
                    .fetch_add(take as u64, Ordering::AcqRel);
                self.counters.refused.fetch_add(refused, Ordering::AcqRel);
                self.counters.error(&e);
                let e = SinkError::Io(e);
                self.losses.record(ends.len() as u64, &e);
                Err((ends.len() as u64, e))
            }
        }
    }

    /// Writes `bytes` (`events` whole lines) to the current segment, starting
    /// a new one first when it would pass the segment size. Returns the
    /// sequence number of the last line. On failure the bytes written are
    /// cut off again; if that fails, the segment is closed and the next
    /// write starts a new one (the worker never reads past the bytes known
    /// to be whole lines).
    fn write_locked(&self, st: &mut State, bytes: &[u8], events: u64) -> io::Result<u64> {
        if st.file.is_some()
            && st.cur_len > 0
            && st.cur_len + bytes.len() as u64 > self.options.segment_bytes
        {
            self.seal_locked(st)?;
        }
        if st.file.is_none() {
            let path = segment::segment_path(&self.dir, st.cur_id);
            let f = open_append(&path)?;
            // A segment left half-written by a failed write is sealed, and
            // this one is new: whole lines only.
            st.cur_len = f.metadata()?.len();
            st.file = Some(Arc::new(f));
            st.segs.push_back(Seg {
                id: st.cur_id,
                len: st.cur_len,
                acked: st.cur_len,
                pending_events: 0,
            });
        }
        let Some(file) = st.file.clone() else {
            return Err(io::Error::other("the spool segment is not open"));
        };
        if let Err(e) = (&*file).write_all(bytes) {
            let undone = file.set_len(st.cur_len).is_ok();
            if !undone {
                // Bytes of a partial line may follow the whole ones: write
                // no more into this segment.
                self.seal_locked(st).ok();
                st.file = None;
            }
            return Err(e);
        }
        st.cur_len += bytes.len() as u64;
        st.written_seq += events;
        st.unsynced += events;
        let now = now_ms();
        let (id, len) = (st.cur_id, st.cur_len);
        match st.marks.back_mut() {
            Some(m) if m.0 == id && now - m.2 < 1000 => m.1 = len,
            _ => st.marks.push_back((id, len, now)),
        }
        st.pending_bytes += bytes.len() as u64;
        st.pending_events += events;
        if let Some(seg) = st.segs.back_mut().filter(|s| s.id == st.cur_id) {
            seg.len = st.cur_len;
            seg.pending_events += events;
        }
        self.counters.appended.fetch_add(events, Ordering::AcqRel);
        self.work.notify_one();
        Ok(st.written_seq)
    }

    /// Closes the current segment (synced first, unless the policy is
    /// Never): later writes go to a new one, and the worker may delete it
    /// once it is acknowledged.
    fn seal_locked(&self, st: &mut State) -> io::Result<()> {
        if let Some(f) = st.file.take() {
            if self.options.fsync != FsyncPolicy::Never && st.unsynced > 0 {
                if let Err(e) = f.sync_data() {
                    st.file = Some(f);
                    return Err(e);
                }
                st.synced_seq = st.written_seq;
                st.unsynced = 0;
                self.synced.notify_all();
            }
        }
        st.cur_id += 1;
        st.cur_len = 0;
        self.work.notify_one();
        Ok(())
    }

    /// Waits until append `seq` is as durable as the policy asks. Under
    /// `EveryEvent` the first writer to find no sync under way syncs for
    /// everyone written so far (group commit); the others wait for it.
    fn wait_durable<'a>(&'a self, st: MutexGuard<'a, State>, seq: u64) -> io::Result<()> {
        let must_sync = match self.options.fsync {
            FsyncPolicy::EveryEvent => true,
            FsyncPolicy::EveryN(n) => st.unsynced >= u64::from(n.max(1)),
            FsyncPolicy::Never => false,
        };
        if must_sync {
            self.sync_to(st, seq)
        } else {
            Ok(())
        }
    }

    /// Syncs until `seq` is durable (leading or following a group sync).
    fn sync_to<'a>(&'a self, mut st: MutexGuard<'a, State>, seq: u64) -> io::Result<()> {
        loop {
            if st.synced_seq >= seq {
                return Ok(());
            }
            if st.sync_failed_to >= seq {
                return Err(io::Error::other(
                    "syncing the spool segment failed; the event may not be durable",
                ));
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let Some(file) = st.file.clone() else {
                // The segment was sealed, and sealing synced it.
                return if st.synced_seq >= seq {
                    Ok(())
                } else {
                    Err(io::Error::other(
                        "the spool segment was closed before its sync",
                    ))
                };
            };
            st.syncing = true;
            let target = st.written_seq;
            drop(st);
            let r = file.sync_data();
            st = self.lock();
            st.syncing = false;
            match &r {
                Ok(()) => {
                    st.synced_seq = st.synced_seq.max(target);
                    if st.written_seq == target {
                        st.unsynced = 0;
                    }
                }
                Err(_) => st.sync_failed_to = st.sync_failed_to.max(target),
            }
            self.synced.notify_all();
            r?;
        }
    }

    /// Syncs everything written so far (unless the policy is Never).
    fn flush_local(&self) -> io::Result<()> {
        if self.options.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        let st = self.lock();
        let seq = st.written_seq;
        if seq == 0 || st.synced_seq >= seq {
            return Ok(());
        }
        self.sync_to(st, seq)
    }
}

impl Spool {
    /// Encodes with `encode` (one line per item) and appends.
    fn write_lines<T>(
        &self,
        items: &[T],
        encode: impl Fn(&T, &mut Vec<u8>),
    ) -> Result<(), (u64, SinkError)> {
        LINE.with(|cell| {
            let mut taken;
            let mut borrowed = cell.try_borrow_mut();
            let buf: &mut Vec<u8> = match borrowed.as_deref_mut() {
                Ok(b) => b,
                Err(_) => {
                    taken = Vec::new();
                    &mut taken
                }
            };
            buf.clear();
            let mut ends = Vec::with_capacity(items.len());
            for item in items {
                encode(item, buf);
                buf.push(b'\n');
                ends.push(buf.len());
            }
            let r = self.shared.append(buf, &ends);
            if buf.capacity() > 4 << 20 {
                *buf = Vec::new();
            }
            r
        })
    }
}

impl Sink for Spool {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        self.write_lines(std::slice::from_ref(event), |e, b| e.write_json(b))
            .map_err(|(_, e)| e)
    }

    fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
        let r = self.write_lines(events, |e, b| e.write_json(b));
        events.clear();
        r.map_err(|(failed, error)| BatchError { failed, error })
    }

    /// Syncs what was written (unless the policy is
    /// [`FsyncPolicy::Never`]): flush means durable locally, not delivered
    /// (see [`Spool::drain`]). Returns [`SinkError::Lost`] when events were
    /// lost since the previous flush.
    fn flush(&self) -> Result<(), SinkError> {
        let r = self.shared.flush_local().map_err(SinkError::Io);
        if let Err(e) = &r {
            self.shared.counters.error(e);
        }
        flush_result(r, self.shared.losses.take())
    }

    /// Events acknowledged by the spool and lost afterwards: damaged on
    /// disk, refused for good by the inner sink, or given up on.
    fn lost_events(&self) -> u64 {
        let c = &self.shared.counters;
        c.corrupt.load(Ordering::Acquire) + c.undeliverable.load(Ordering::Acquire)
    }

    fn __takes_records(&self) -> bool {
        true
    }

    fn __write_record(&self, record: RecordRef<'_>) -> Result<(), SinkError> {
        self.write_lines(std::slice::from_ref(&*record), |r, b| r.write_json(b))
            .map_err(|(_, e)| e)
    }

    fn __write_records(&self, records: &mut Vec<CallRecord>) -> Result<(), BatchError> {
        let r = self.write_lines(records, |r, b| r.write_json(b));
        records.clear();
        r.map_err(|(failed, error)| BatchError { failed, error })
    }
}

impl Drop for Spool {
    /// Syncs what was written, stops the worker after the delivery attempt
    /// under way (waiting at most [`SpoolOptions::shutdown_wait`]), and
    /// releases the directory. Unacknowledged events stay on disk.
    fn drop(&mut self) {
        let s = &self.shared;
        let _ = s.flush_local();
        {
            let mut st = s.lock();
            st.closing = true;
            if let Some(f) = st.file.take() {
                drop(f);
            }
        }
        s.work.notify_all();
        s.progress.notify_all();
        let handle = self
            .worker
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let deadline = Instant::now() + s.options.shutdown_wait;
            while !s.worker_done.load(Ordering::Acquire) && Instant::now() < deadline {
                let st = s.lock();
                if s.worker_done.load(Ordering::Acquire) {
                    break;
                }
                let _ = s
                    .progress
                    .wait_timeout(st, Duration::from_millis(20))
                    .unwrap_or_else(|p| p.into_inner());
            }
            if s.worker_done.load(Ordering::Acquire) {
                let _ = handle.join();
            }
            // Else the worker is inside the inner sink; it stops when that
            // returns, and holds the directory's lock until then.
        }
    }
}
