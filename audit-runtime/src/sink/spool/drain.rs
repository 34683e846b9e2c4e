//! The spool's worker: reads the oldest unacknowledged events, hands them to
//! the inner sink, records the acknowledgement, deletes finished segments.

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::segment::{self, AckFile};
use super::{Shared, SinkError};
use crate::model::event::AuditEvent;

/// Bytes read from a segment at a time (a batch is usually far smaller).
const READ_BYTES: usize = 1 << 20;

/// What one delivery attempt came to.
enum Attempt {
    /// The inner sink acknowledged every event.
    Delivered,
    /// The inner sink refused `n` events for good; the rest were delivered.
    Rejected(u64, SinkError),
    /// Nothing acknowledged; try again.
    Failed(SinkError),
}

/// The events of one batch and where they end in the segment.
struct Batch {
    events: Vec<AuditEvent>,
    /// Bytes of the segment the batch covers (whole lines).
    bytes: u64,
    /// Lines it covers (events and corrupt lines).
    lines: u64,
    corrupt: u64,
}

/// Runs until the spool closes.
pub(super) fn run(s: &Shared) {
    let mut reader: Option<(u64, File)> = None;
    let mut ack: Option<AckFile> = None;
    let mut backoff = s.options.retry_initial;
    let mut failing_since: Option<Instant> = None;
    while let Some((id, from, to)) = next_range(s, &mut reader, &mut ack) {
        let batch = match read_batch(s, &mut reader, id, from, to) {
            Ok(b) => b,
            Err(e) => {
                s.counters
                    .error(&format_args!("reading a spool segment failed: {e}"));
                if !pause(s, &mut backoff) {
                    break;
                }
                continue;
            }
        };
        let n = batch.events.len() as u64;
        let info = batch_info(&batch);
        match deliver(s, batch.events) {
            Attempt::Delivered => {
                backoff = s.options.retry_initial;
                failing_since = None;
                acknowledge(s, &mut ack, id, from, &info, n, 0);
            }
            Attempt::Rejected(refused, e) => {
                backoff = s.options.retry_initial;
                failing_since = None;
                s.counters.error(&e);
                s.losses.record(refused, &e);
                s.counters
                    .undeliverable
                    .fetch_add(refused, Ordering::AcqRel);
                acknowledge(s, &mut ack, id, from, &info, n, refused);
            }
            Attempt::Failed(e) => {
                s.counters.inner_errors.fetch_add(1, Ordering::AcqRel);
                s.counters.error(&e);
                let since = *failing_since.get_or_insert_with(Instant::now);
                if s.options
                    .give_up_after
                    .is_some_and(|l| since.elapsed() >= l)
                {
                    let cause = format!("gave up delivering after {:?}: {e}", since.elapsed());
                    s.losses.record(n, &cause);
                    s.counters.undeliverable.fetch_add(n, Ordering::AcqRel);
                    failing_since = None;
                    acknowledge(s, &mut ack, id, from, &info, n, n);
                    continue;
                }
                if !pause(s, &mut backoff) {
                    break;
                }
            }
        }
    }
    s.worker_done.store(true, Ordering::Release);
    // Wake a drop or drain waiting for the worker.
    let _st = s.lock();
    s.progress.notify_all();
}

/// The counts of a batch, once its events were handed over.
struct BatchInfo {
    bytes: u64,
    lines: u64,
    corrupt: u64,
}

fn batch_info(b: &Batch) -> BatchInfo {
    BatchInfo {
        bytes: b.bytes,
        lines: b.lines,
        corrupt: b.corrupt,
    }
}

/// Waits before the next attempt (backoff doubling to the maximum); false
/// when the spool closed meanwhile.
fn pause(s: &Shared, backoff: &mut Duration) -> bool {
    let deadline = Instant::now() + *backoff;
    *backoff = (*backoff * 2).min(s.options.retry_max);
    let mut st = s.lock();
    loop {
        if st.closing {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        st = s
            .work
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// The next segment range to deliver: deletes acknowledged segments that
/// are no longer written, waits for events. `None` when the spool closes.
fn next_range(
    s: &Shared,
    reader: &mut Option<(u64, File)>,
    ack: &mut Option<AckFile>,
) -> Option<(u64, u64, u64)> {
    let mut st = s.lock();
    loop {
        if st.closing {
            return None;
        }
        let cur_id = st.cur_id;
        match st.segs.front() {
            Some(f) if f.acked < f.len => return Some((f.id, f.acked, f.len)),
            Some(f) if f.id < cur_id => {
                let id = f.id;
                st.segs.pop_front();
                if reader.as_ref().is_some_and(|(r, _)| *r == id) {
                    *reader = None;
                }
                if ack.as_ref().is_some_and(|a| a.id == id) {
                    *ack = None;
                }
                if let Err(e) = segment::remove_segment(&s.dir, id) {
                    s.counters.error(&format_args!(
                        "deleting a delivered spool segment failed: {e}"
                    ));
                }
                s.progress.notify_all();
            }
            _ => {
                st = s
                    .work
                    .wait_timeout(st, Duration::from_millis(200))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
}

/// Reads and parses up to a batch of lines of segment `id` from `from`.
fn read_batch(
    s: &Shared,
    reader: &mut Option<(u64, File)>,
    id: u64,
    from: u64,
    to: u64,
) -> std::io::Result<Batch> {
    if reader.as_ref().is_none_or(|(r, _)| *r != id) {
        *reader = Some((id, File::open(segment::segment_path(&s.dir, id))?));
    }
    let Some((_, file)) = reader.as_ref() else {
        return Err(std::io::Error::other("no segment open"));
    };
    let avail = usize::try_from(to - from).unwrap_or(usize::MAX);
    let mut data = segment::read_range(file, from, avail.min(READ_BYTES))?;
    if !data.contains(&b'\n') && avail > data.len() {
        // One line longer than the window: read all of it.
        data = segment::read_range(file, from, avail)?;
    }
    let mut batch = Batch {
        events: Vec::new(),
        bytes: 0,
        lines: 0,
        corrupt: 0,
    };
    for line in data.split_inclusive(|&b| b == b'\n') {
        if batch.events.len() >= s.options.batch_events || !line.ends_with(b"\n") {
            break;
        }
        batch.bytes += line.len() as u64;
        batch.lines += 1;
        match serde_json::from_slice::<AuditEvent>(&line[..line.len() - 1]) {
            Ok(e) => batch.events.push(e),
            Err(_) => batch.corrupt += 1,
        }
    }
    if batch.lines == 0 && !data.is_empty() {
        return Err(std::io::Error::other(
            "a spool segment holds bytes past its last whole line",
        ));
    }
    Ok(batch)
}

/// One attempt: the batch through `write_batch`, then `flush`.
fn deliver(s: &Shared, mut events: Vec<AuditEvent>) -> Attempt {
    if events.is_empty() {
        return Attempt::Delivered;
    }
    let inner = &s.inner;
    let result = catch_unwind(AssertUnwindSafe(|| {
        // A report of earlier attempts' failures (this batch, retried) is
        // not about this attempt.
        let _ = inner.flush();
        let written = inner.write_batch(&mut events);
        let flushed = inner.flush();
        (written, flushed)
    }));
    match result {
        Err(_) => Attempt::Failed(SinkError::Other(
            "the inner sink panicked; the batch is retried".into(),
        )),
        Ok((Ok(()), Ok(()))) => Attempt::Delivered,
        Ok((Ok(()), Err(e))) => Attempt::Failed(e),
        Ok((Err(b), _)) if matches!(b.error, SinkError::Rejected(_)) => {
            Attempt::Rejected(b.failed, b.error)
        }
        Ok((Err(b), _)) => Attempt::Failed(b.error),
    }
}

/// Records that the batch's bytes were acknowledged (`lost` of its `events`
/// not delivered).
fn acknowledge(
    s: &Shared,
    ack: &mut Option<AckFile>,
    id: u64,
    from: u64,
    b: &BatchInfo,
    events: u64,
    lost: u64,
) {
    if ack.as_ref().is_none_or(|a| a.id != id) {
        match AckFile::open(&s.dir, id) {
            Ok(a) => *ack = Some(a),
            Err(e) => {
                *ack = None;
                s.counters.error(&format_args!(
                    "opening a spool acknowledgement file failed: {e}"
                ));
            }
        }
    }
    if let Some(a) = ack.as_ref() {
        if let Err(e) = a.store(from + b.bytes) {
            s.counters
                .error(&format_args!("writing a spool acknowledgement failed: {e}"));
        }
    }
    if b.corrupt > 0 {
        s.counters.corrupt.fetch_add(b.corrupt, Ordering::AcqRel);
        s.losses.record(
            b.corrupt,
            &"a line in a spool segment is not an audit event (damaged on disk)",
        );
    }
    s.counters
        .delivered
        .fetch_add(events - lost.min(events), Ordering::AcqRel);
    let mut st = s.lock();
    if let Some(seg) = st.segs.front_mut().filter(|f| f.id == id) {
        seg.acked += b.bytes;
        seg.pending_events = seg.pending_events.saturating_sub(b.lines);
    }
    st.pending_bytes = st.pending_bytes.saturating_sub(b.bytes);
    st.pending_events = st.pending_events.saturating_sub(b.lines);
    let acked_to = from + b.bytes;
    while st
        .marks
        .front()
        .is_some_and(|m| m.0 < id || (m.0 == id && m.1 <= acked_to))
    {
        st.marks.pop_front();
    }
    s.progress.notify_all();
}
