//! [`JsonlFileSink`]: one compact JSON line per event, appended to a file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::model::event::AuditEvent;
use crate::record::{CallRecord, RecordRef};
use crate::sink::loss::{flush_result, LossTracker};
use crate::sink::rotate::{rotated_name, RotationNames};
use crate::sink::{lock, BatchError, Sink, SinkError};

/// When written lines are made durable with `fsync` (`File::sync_data`).
///
/// The policy also decides how long lines stay in the sink's memory buffer:
///
/// * [`FsyncPolicy::EveryEvent`] (the default): every `write` reaches the
///   file and is synced before it returns. Nothing acknowledged is lost on a
///   crash, at the cost of one `fsync` per event.
/// * [`FsyncPolicy::EveryN`]`(n)`: lines are buffered and written and synced
///   together every `n` events (and on [`Sink::flush`]). A crash loses at
///   most the last `n - 1` acknowledged events.
/// * [`FsyncPolicy::Never`]: lines are buffered and handed to the operating
///   system when the buffer fills or on [`Sink::flush`]; never synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Never sync; write when the buffer is full or on flush.
    Never,
    /// Write and sync every event before `write` returns.
    #[default]
    EveryEvent,
    /// Write and sync every `n` events (`0` behaves as `1`).
    EveryN(u32),
}

/// Options of a [`JsonlFileSink`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JsonlOptions {
    /// When lines are written and synced (default [`FsyncPolicy::EveryEvent`]).
    pub fsync: FsyncPolicy,
    /// Rotate when the file would grow beyond this many bytes (default: no
    /// rotation). A line is never split: a line longer than the limit goes
    /// alone into a fresh file.
    pub rotate_bytes: Option<u64>,
    /// Size of the in-memory batch buffer in bytes (default 256 KiB). With
    /// a buffering [`FsyncPolicy`] lines reach the file when it fills (or on
    /// flush); a bigger buffer means fewer system calls (on the bench
    /// machine, a 64 KiB buffer cost ~30 ns more per ~400-byte line than
    /// 256 KiB).
    pub buffer_capacity: usize,
    /// Disk space reserved ahead of the writes, in bytes (default
    /// [`DEFAULT_PREALLOCATE`]; `0` turns it off). See [`JsonlFileSink`].
    pub preallocate: u64,
}

/// The default of [`JsonlOptions::preallocate`] and
/// `LedgerOptions::preallocate`: 1 MiB.
///
/// On Linux the sink reserves the file's next blocks this many bytes at a
/// time (`fallocate` with `FALLOC_FL_KEEP_SIZE`: the file's length only ever
/// shows whole lines). Appending into reserved blocks skips the file
/// system's per-block allocation; on ext4 that made page-cache writes of
/// ~400-byte lines about a quarter cheaper. The reservation past the last
/// line is released when the file is closed or rotated.
pub const DEFAULT_PREALLOCATE: u64 = 1 << 20;

impl Default for JsonlOptions {
    fn default() -> Self {
        JsonlOptions {
            fsync: FsyncPolicy::EveryEvent,
            rotate_bytes: None,
            buffer_capacity: 256 * 1024,
            preallocate: DEFAULT_PREALLOCATE,
        }
    }
}

/// Builders: the struct is `#[non_exhaustive]` (options may be added), so
/// outside this crate it is built from [`JsonlOptions::new`] and these.
impl JsonlOptions {
    /// The defaults (as [`Default`]).
    pub fn new() -> JsonlOptions {
        JsonlOptions::default()
    }

    /// Sets [`fsync`](JsonlOptions::fsync).
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// Sets [`rotate_bytes`](JsonlOptions::rotate_bytes).
    pub fn rotate_bytes(mut self, limit: Option<u64>) -> Self {
        self.rotate_bytes = limit;
        self
    }

    /// Sets [`buffer_capacity`](JsonlOptions::buffer_capacity).
    pub fn buffer_capacity(mut self, bytes: usize) -> Self {
        self.buffer_capacity = bytes;
        self
    }

    /// Sets [`preallocate`](JsonlOptions::preallocate).
    pub fn preallocate(mut self, bytes: u64) -> Self {
        self.preallocate = bytes;
        self
    }
}

/// Appends line-oriented data to one file with batching, an fsync policy,
/// rollback of failed batches and optional size-based rotation.
#[derive(Debug)]
pub(crate) struct LineWriter {
    path: PathBuf,
    file: Option<File>,
    /// Bytes known to be in the file (every one of them a whole line).
    file_len: u64,
    buf: Vec<u8>,
    buffered_events: u64,
    unsynced_events: u64,
    fsync: FsyncPolicy,
    rotate_bytes: Option<u64>,
    /// Names of rotated files.
    rotate_names: RotationNames,
    /// UTC day of the events in the file (dated names, daily rotation).
    day: Option<i64>,
    capacity: usize,
    /// Events acknowledged earlier that were lost in a failed batch write.
    lost_events: u64,
    rotations: u64,
    /// Inside `begin_batch`..`end_batch`: lines collect in the buffer and are
    /// written (and synced) once, at the end.
    deferred: bool,
    batch_buffered: u64,
    /// Bytes reserved at a time past the end of the file (0: off).
    prealloc_chunk: u64,
    /// Where the reserved blocks end (at most `file_len` when none are).
    reserved_to: u64,
}

/// Opens `path` for appending, creating it with mode 0600 on unix.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true).read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Opens `path` for appending; if it ends inside a line (someone else's
/// unterminated write), ends that line first so it cannot swallow ours.
/// Returns the file and its length.
pub(crate) fn open_append_terminated(path: &Path) -> io::Result<(File, u64)> {
    let file = open_append(path)?;
    terminate(file)
}

/// Ends `file`'s last line if it is unterminated; returns it and its length.
fn terminate(mut file: File) -> io::Result<(File, u64)> {
    let mut len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
            len += 1;
        }
    }
    Ok((file, len))
}

/// Creates `path`'s parent directories.
pub(crate) fn create_parent(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent)?;
        }
    }
    Ok(())
}

impl LineWriter {
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Opens `path` for appending under the exclusive write lock (see
    /// [`crate::sink::FileLocked`]), ending an unterminated last line.
    pub(crate) fn open(
        path: &Path,
        fsync: FsyncPolicy,
        rotate_bytes: Option<u64>,
        capacity: usize,
        preallocate: u64,
    ) -> io::Result<LineWriter> {
        create_parent(path)?;
        let file = lock::open_locked(path)?;
        LineWriter::from_locked(path, file, fsync, rotate_bytes, capacity, preallocate)
    }

    /// A writer on `file`, already opened at `path` by
    /// [`lock::open_locked`].
    pub(crate) fn from_locked(
        path: &Path,
        file: File,
        fsync: FsyncPolicy,
        rotate_bytes: Option<u64>,
        capacity: usize,
        preallocate: u64,
    ) -> io::Result<LineWriter> {
        let (file, file_len) = terminate(file)?;
        Ok(LineWriter {
            path: path.to_path_buf(),
            file: Some(file),
            file_len,
            buf: Vec::with_capacity(capacity.clamp(1024, 16 * 1024 * 1024)),
            buffered_events: 0,
            unsynced_events: 0,
            fsync,
            rotate_bytes,
            rotate_names: RotationNames::Numbered,
            day: None,
            capacity: capacity.max(1),
            lost_events: 0,
            rotations: 0,
            deferred: false,
            batch_buffered: 0,
            prealloc_chunk: preallocate,
            reserved_to: file_len,
        })
    }

    /// Reserves blocks for the next `incoming` bytes if they would pass the
    /// reservation. Only a hint: a file system without the call, or a full
    /// disk, turns it off and the write goes ahead (and reports its own
    /// error).
    fn reserve_ahead(&mut self, incoming: u64) {
        if self.prealloc_chunk == 0 || self.file_len + incoming <= self.reserved_to {
            return;
        }
        let Some(file) = self.file.as_ref() else {
            return;
        };
        let start = self.reserved_to.max(self.file_len);
        let len = (self.file_len + incoming - start).max(self.prealloc_chunk);
        if preallocate(file, start, len) {
            self.reserved_to = start + len;
        } else {
            self.prealloc_chunk = 0;
        }
    }

    /// Gives back the blocks reserved past the last line. Only when the file
    /// is as long as this writer knows it to be: if someone else appended,
    /// cutting could take their lines, so the reservation is left in place.
    fn release_reserve(&mut self) {
        if self.reserved_to <= self.file_len {
            return;
        }
        if let Some(file) = self.file.as_ref() {
            if file.metadata().is_ok_and(|m| m.len() == self.file_len) {
                let _ = file.set_len(self.file_len);
            }
        }
        self.reserved_to = self.file_len;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.file.is_none()
    }

    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub(crate) fn lost_events(&self) -> u64 {
        self.lost_events
    }

    pub(crate) fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Rotation by size and the names of rotated files (see
    /// [`crate::sink::Rotation`]); `day` is the UTC day of the events
    /// already in the file.
    pub(crate) fn set_rotation(
        &mut self,
        max_bytes: Option<u64>,
        names: RotationNames,
        day: Option<i64>,
    ) {
        self.rotate_bytes = max_bytes;
        self.rotate_names = names;
        self.day = day;
    }

    /// Before a line of an event of UTC day `day`: rotates when the file
    /// holds events of an earlier day (lines in the buffer are written to
    /// the old file first).
    pub(crate) fn rotate_for_day(&mut self, day: i64) -> io::Result<()> {
        match self.day {
            Some(d) if day <= d => Ok(()),
            Some(_) if self.file_len > 0 || !self.buf.is_empty() => {
                self.write_out()?;
                self.sync_if_needed()?;
                self.rotate()?;
                self.day = Some(day);
                Ok(())
            }
            _ => {
                self.day = Some(day);
                Ok(())
            }
        }
    }

    /// Call after one whole line (ending in `\n`) was appended to
    /// [`LineWriter::buffer`] starting at `mark`. Rotates first if the line
    /// does not fit, then writes and syncs as the policy says. Returns true
    /// when the buffer reached the file.
    pub(crate) fn commit_line(&mut self, mark: usize) -> io::Result<bool> {
        if let Some(limit) = self.rotate_bytes {
            let before = self.file_len + mark as u64;
            if before > 0 && before + (self.buf.len() - mark) as u64 > limit {
                // Write what precedes the new line, then rotate.
                let tail = self.buf.split_off(mark);
                let r = self.write_out().and_then(|_| self.sync_if_needed());
                self.buf = tail;
                if let Err(e) = r {
                    self.buf.clear();
                    return Err(e);
                }
                if let Err(e) = self.rotate() {
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
        self.buffered_events += 1;
        self.unsynced_events += 1;
        if self.deferred {
            self.batch_buffered += 1;
            return Ok(false);
        }
        let (write, sync) = match self.fsync {
            FsyncPolicy::EveryEvent => (true, true),
            FsyncPolicy::EveryN(n) => {
                let due = self.unsynced_events >= u64::from(n.max(1));
                (due || self.buf.len() >= self.capacity, due)
            }
            FsyncPolicy::Never => (self.buf.len() >= self.capacity, false),
        };
        if write {
            // The line being committed is not acknowledged yet: if the write
            // fails it is reported to the caller, not counted as lost.
            self.write_out_with(1)?;
        }
        if sync {
            self.sync()?;
        }
        Ok(write)
    }

    /// Starts a batch: committed lines stay in the buffer until
    /// [`LineWriter::end_batch`].
    pub(crate) fn begin_batch(&mut self) {
        self.deferred = true;
        self.batch_buffered = 0;
    }

    /// Ends a batch: writes it with one system call and syncs once as the
    /// policy says (group commit). On failure returns how many lines of the
    /// batch did not make it (the batch is not acknowledged, so they are not
    /// counted as lost).
    pub(crate) fn end_batch(&mut self) -> Result<(), (u64, io::Error)> {
        self.deferred = false;
        let in_batch = std::mem::take(&mut self.batch_buffered);
        let (write, sync) = match self.fsync {
            FsyncPolicy::EveryEvent => (true, self.unsynced_events > 0),
            FsyncPolicy::EveryN(n) => {
                let due = self.unsynced_events >= u64::from(n.max(1));
                (due || self.buf.len() >= self.capacity, due)
            }
            FsyncPolicy::Never => (self.buf.len() >= self.capacity, false),
        };
        if write {
            self.write_out_with(in_batch).map_err(|e| (in_batch, e))?;
        }
        if sync {
            self.sync().map_err(|e| (in_batch, e))?;
        }
        Ok(())
    }

    /// Drops a line appended after `mark` that will not be committed.
    pub(crate) fn discard_from(&mut self, mark: usize) {
        self.buf.truncate(mark);
    }

    /// Writes the buffer to the file. On failure the file is cut back to its
    /// last whole line and the buffered events are counted as lost.
    pub(crate) fn write_out(&mut self) -> io::Result<()> {
        self.write_out_with(0)
    }

    fn write_out_with(&mut self, unacknowledged: u64) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.reserve_ahead(self.buf.len() as u64);
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the file sink is closed"));
        };
        // Count the bytes that reach the file, so a failure cuts back only
        // what this write appended.
        let mut done = 0usize;
        let result = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match file.write(&self.buf[done..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                self.file_len += self.buf.len() as u64;
                self.buf.clear();
                self.buffered_events = 0;
                Ok(())
            }
            Err(e) => {
                self.undo_partial(done as u64);
                self.lost_events += self.buffered_events.saturating_sub(unacknowledged);
                self.buffered_events = 0;
                self.buf.clear();
                Err(e)
            }
        }
    }

    /// After a failed write that appended `written` bytes (the first
    /// `written` of the buffer): cuts exactly those bytes off again, and
    /// gives back any reservation, when they are the file's last bytes.
    /// Never more: a writer only ever undoes its own bytes. If something
    /// else was appended after them (a program ignoring the lock), nothing
    /// is cut; a partial line of ours is then ended with a newline where
    /// possible, so it cannot swallow the next one.
    fn undo_partial(&mut self, written: u64) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return;
        };
        let ours_at_end = len >= written
            && (written == 0 || {
                let mut tail = vec![0u8; written as usize];
                file.seek(SeekFrom::Start(len - written)).is_ok()
                    && file.read_exact(&mut tail).is_ok()
                    && tail[..] == self.buf[..written as usize]
            });
        if ours_at_end {
            let keep = len - written;
            if keep == self.file_len || written > 0 {
                // Also gives back the blocks reserved past the end.
                let _ = file.set_len(keep);
                self.reserved_to = keep;
            }
            self.file_len = keep;
        } else {
            let mut last = [0u8; 1];
            let unterminated = file.seek(SeekFrom::Start(len - 1)).is_ok()
                && file.read_exact(&mut last).is_ok()
                && last[0] != b'\n';
            self.file_len = if unterminated && file.write_all(b"\n").is_ok() {
                len + 1
            } else {
                len
            };
            self.reserved_to = self.reserved_to.max(self.file_len);
        }
    }

    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if let Some(f) = self.file.as_ref() {
            f.sync_data()?;
        }
        self.unsynced_events = 0;
        Ok(())
    }

    fn sync_if_needed(&mut self) -> io::Result<()> {
        if self.fsync != FsyncPolicy::Never && self.unsynced_events > 0 {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes the buffer and syncs as the policy says.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.sync_if_needed()
    }

    pub(crate) fn close(&mut self) -> io::Result<()> {
        let r = self.flush();
        self.release_reserve();
        self.file = None;
        r
    }

    /// Moves the file to the next number and continues in a fresh one,
    /// keeping the write lock throughout: the fresh file is created and
    /// locked under a temporary name, the current file gets its numbered
    /// name as a second link, and the fresh file then replaces it at the
    /// path in one rename. So the path always names a file this writer
    /// locks; another process opening it fails. (Without hard links, two
    /// renames: the path is briefly absent.)
    ///
    /// On failure writing continues in the current file; nothing is lost.
    fn rotate(&mut self) -> io::Result<()> {
        let target = rotated_name(&self.path, self.rotate_names, self.day)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".rotating-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        // A leftover of a rotation by a killed process with our pid.
        let _ = fs::remove_file(&tmp);
        let fresh = lock::create_locked(&tmp)?;
        let swapped = match fs::hard_link(&self.path, &target) {
            Ok(()) => fs::rename(&tmp, &self.path).inspect_err(|_| {
                let _ = fs::remove_file(&target);
            }),
            Err(_) => fs::rename(&self.path, &target).and_then(|()| {
                fs::rename(&tmp, &self.path).inspect_err(|_| {
                    let _ = fs::rename(&target, &self.path);
                })
            }),
        };
        if let Err(e) = swapped {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.release_reserve();
        self.file = Some(fresh);
        self.file_len = 0;
        self.reserved_to = 0;
        self.rotations += 1;
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = self.flush();
            self.release_reserve();
        }
    }
}

/// Reserves `len` bytes of blocks from `offset` without changing the file's
/// length. False when the reservation could not be made.
#[cfg(target_os = "linux")]
fn preallocate(file: &File, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: `file` owns an open descriptor for the duration of the call;
    // fallocate reads no memory of ours.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) };
    rc == 0
}

/// Elsewhere there is no portable reservation that keeps the length.
#[cfg(not(target_os = "linux"))]
fn preallocate(_file: &File, _offset: u64, _len: u64) -> bool {
    false
}

/// A sink that appends each event as one compact JSON line to a file.
///
/// New files are created with mode 0600 (unix). Lines are batched in a
/// reused buffer and written whole; see [`FsyncPolicy`] for when they reach
/// the file and the disk. With [`JsonlOptions::rotate_bytes`] the file is
/// renamed to `<path>.1`, `<path>.2`, ... (the lowest number is the oldest)
/// when the next line would cross the limit; no line is split or lost.
///
/// **One writer per file.** Opening takes an exclusive advisory lock on the
/// file (`flock`, unix); a second open of the same path, by another process
/// or in this one, fails at once with an [`io::Error`] of kind
/// [`io::ErrorKind::WouldBlock`] holding a [`crate::sink::FileLocked`] that
/// names the path and, on Linux, the holder's pid. The kernel drops the lock
/// when the holder exits or is killed, so no stale lock is left. Rotation
/// keeps the lock: the fresh file is locked before it takes the path.
///
/// If a batch write fails, the bytes this write appended are cut off again
/// (never more: a writer only ever undoes its own bytes), the error is
/// returned, and events of earlier acknowledged batches lost with it are
/// counted in [`JsonlFileSink::lost_events`]. [`Sink::flush`] returns
/// [`SinkError::Lost`] with the count of every event that failed since the
/// previous flush.
///
/// On Linux the sink reserves disk blocks [`JsonlOptions::preallocate`]
/// bytes ahead of its writes (the file's length still only counts whole
/// lines) and gives back what is left when it closes or rotates the file.
/// If the file grew behind its back (a program ignoring the lock), the
/// reservation is left rather than risk cutting a line.
///
/// ```
/// use phi_audit::sink::{FsyncPolicy, JsonlFileSink, JsonlOptions};
/// let dir = std::env::temp_dir().join(format!("phi-audit-doc-{}", std::process::id()));
/// let opts = JsonlOptions::new().fsync(FsyncPolicy::Never);
/// let sink = JsonlFileSink::open_with(dir.join("audit.jsonl"), opts).unwrap();
/// // sink.write(&event)?; ... sink.flush()?;
/// # drop(sink); let _ = std::fs::remove_dir_all(dir);
/// ```
#[derive(Debug)]
pub struct JsonlFileSink {
    inner: Mutex<LineWriter>,
    path: PathBuf,
    losses: LossTracker,
}

impl JsonlFileSink {
    /// Opens (or creates, with parent directories) `path` for appending, with
    /// the default options (fsync every event, no rotation). See
    /// [`JsonlFileSink::open_with`].
    pub fn open(path: impl AsRef<Path>) -> io::Result<JsonlFileSink> {
        JsonlFileSink::open_with(path, JsonlOptions::default())
    }

    /// Opens (or creates, with parent directories) `path` for appending,
    /// taking its write lock (see [`JsonlFileSink`]).
    ///
    /// `{pid}` and `{hostname}` in `path` are replaced by the process id and
    /// the host name, so every process or replica of a service can be given
    /// a file of its own from one setting (`audit-{hostname}.jsonl`);
    /// [`JsonlFileSink::path`] is the result.
    pub fn open_with(path: impl AsRef<Path>, options: JsonlOptions) -> io::Result<JsonlFileSink> {
        let path = lock::expand_placeholders(path.as_ref());
        let w = LineWriter::open(
            &path,
            options.fsync,
            options.rotate_bytes,
            options.buffer_capacity,
            options.preallocate,
        )?;
        Ok(JsonlFileSink {
            inner: Mutex::new(w),
            path,
            losses: LossTracker::default(),
        })
    }

    /// The path of the current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Events that were accepted and then lost because a batch write failed.
    pub fn lost_events(&self) -> u64 {
        self.lock().map(|w| w.lost_events()).unwrap_or(0)
    }

    /// How many times the file was rotated since it was opened.
    pub fn rotations(&self) -> u64 {
        self.lock().map(|w| w.rotations()).unwrap_or(0)
    }

    /// Flushes, syncs (unless the policy is `Never`) and closes the file,
    /// releasing its lock; later writes fail with [`SinkError::Closed`].
    /// Like [`Sink::flush`], returns [`SinkError::Lost`] when events failed
    /// since the last flush.
    pub fn close(&self) -> Result<(), SinkError> {
        let mut w = self.lock()?;
        if w.is_closed() {
            return Ok(());
        }
        let lost_before = w.lost_events();
        let r = w.close().map_err(SinkError::Io);
        if let Err(e) = &r {
            self.losses.record(w.lost_events() - lost_before, e);
        }
        flush_result(r, self.losses.take())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, LineWriter>, SinkError> {
        self.inner
            .lock()
            .map_err(|_| SinkError::Other("file sink lock poisoned by a panic".into()))
    }
}

impl JsonlFileSink {
    /// Writes the line `encode` appends (without its newline).
    fn write_line(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), SinkError> {
        let mut w = self.lock()?;
        if w.is_closed() {
            return Err(SinkError::Closed);
        }
        let lost_before = w.lost_events();
        let buf = w.buffer();
        let mark = buf.len();
        encode(buf);
        buf.push(b'\n');
        let r = w.commit_line(mark).map(|_| ()).map_err(SinkError::Io);
        if let Err(e) = &r {
            self.losses.record(1 + (w.lost_events() - lost_before), e);
        }
        r
    }

    /// Writes one line per item, as one batch (one write, one sync as the
    /// policy says), encoding in place, and empties `items`.
    fn write_lines<T>(
        &self,
        items: &mut Vec<T>,
        encode: impl Fn(&T, &mut Vec<u8>),
    ) -> Result<(), BatchError> {
        let mut w = match self.lock() {
            Ok(w) if !w.is_closed() => w,
            Ok(_) => return Err(BatchError::all(items, SinkError::Closed)),
            Err(error) => return Err(BatchError::all(items, error)),
        };
        let lost_before = w.lost_events();
        w.begin_batch();
        let mut failed = 0;
        let mut first = None;
        for item in items.iter() {
            let buf = w.buffer();
            let mark = buf.len();
            encode(item, buf);
            buf.push(b'\n');
            if let Err(e) = w.commit_line(mark) {
                failed += 1;
                first.get_or_insert(SinkError::Io(e));
            }
        }
        items.clear();
        if let Err((n, e)) = w.end_batch() {
            failed += n;
            first.get_or_insert(SinkError::Io(e));
        }
        match first {
            None => Ok(()),
            Some(error) => {
                let lost = w.lost_events() - lost_before;
                self.losses.record(failed + lost, &error);
                Err(BatchError { failed, error })
            }
        }
    }
}

impl Sink for JsonlFileSink {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        self.write_line(|buf| event.write_json(buf))
    }

    fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
        self.write_lines(events, AuditEvent::write_json)
    }

    fn __takes_records(&self) -> bool {
        true
    }

    fn __write_record(&self, record: RecordRef<'_>) -> Result<(), SinkError> {
        self.write_line(|buf| record.write_json(buf))
    }

    fn __write_records(&self, records: &mut Vec<CallRecord>) -> Result<(), BatchError> {
        self.write_lines(records, CallRecord::write_json)
    }

    /// Writes and syncs what is buffered; then returns
    /// [`SinkError::Lost`] if any event handed to the sink since the last
    /// flush was not written.
    fn flush(&self) -> Result<(), SinkError> {
        let mut w = self.lock()?;
        let r = if w.is_closed() {
            Ok(())
        } else {
            let lost_before = w.lost_events();
            let r = w.flush().map_err(SinkError::Io);
            if let Err(e) = &r {
                self.losses.record(w.lost_events() - lost_before, e);
            }
            r
        };
        flush_result(r, self.losses.take())
    }

    fn lost_events(&self) -> u64 {
        JsonlFileSink::lost_events(self)
    }
}
