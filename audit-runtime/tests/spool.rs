//! `Spool` without a server: order, durability across reopen, torn and
//! damaged lines, the full policies, permanent refusals, the one-writer
//! lock, and a remote outage that callers never wait for.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phi_audit_runtime::sink::FileLocked;
use phi_audit_runtime::{
    AuditEvent, BatchError, FsyncPolicy, MemorySink, Sink, SinkError, Spool, SpoolFull,
    SpoolOptions,
};
use uuid::Uuid;

/// An inner sink that can be switched off (an outage), counts every id it
/// stored and drops repeats by `event_id`, as a remote store does.
#[derive(Default)]
struct Remote {
    down: AtomicBool,
    /// Ids rejected for good (a conflict).
    reject: Mutex<Vec<Uuid>>,
    stored: Mutex<Vec<Uuid>>,
    seen: Mutex<HashMap<Uuid, u32>>,
    attempts: AtomicU64,
    /// Sleeps this long per batch (a slow remote).
    delay_ms: AtomicU64,
}

impl Remote {
    fn ids(&self) -> Vec<Uuid> {
        self.stored.lock().unwrap().clone()
    }
}

impl Sink for Remote {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        let mut v = vec![event.clone()];
        self.write_batch(&mut v).map_err(|b| b.error)
    }

    fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let d = self.delay_ms.load(Ordering::Relaxed);
        if d > 0 {
            std::thread::sleep(Duration::from_millis(d));
        }
        if self.down.load(Ordering::Relaxed) {
            let failed = events.len() as u64;
            events.clear();
            return Err(BatchError {
                failed,
                error: SinkError::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "remote down",
                )),
            });
        }
        let reject = self.reject.lock().unwrap().clone();
        let mut rejected = 0;
        for e in events.drain(..) {
            if reject.contains(&e.event_id) {
                rejected += 1;
                continue;
            }
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(e.event_id).or_insert(0);
            *n += 1;
            if *n == 1 {
                self.stored.lock().unwrap().push(e.event_id);
            }
        }
        if rejected > 0 {
            return Err(BatchError {
                failed: rejected,
                error: SinkError::Rejected("id taken by another event".into()),
            });
        }
        Ok(())
    }
}

fn ids(range: std::ops::Range<u64>) -> Vec<Uuid> {
    range.map(|i| common::event(i).event_id).collect()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let e = e.as_ref().unwrap();
            e.file_name().to_string_lossy().ends_with(".jsonl")
        })
        .count()
}

#[test]
fn delivers_in_order_and_deletes_segments() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(MemorySink::new());
    let opts = SpoolOptions {
        segment_bytes: 4096,
        batch_events: 7,
        ..SpoolOptions::default()
    };
    let spool = Spool::open_with(dir.path(), remote.clone(), opts).unwrap();
    for i in 0..200 {
        spool.write(&common::event(i)).unwrap();
    }
    let mut batch: Vec<AuditEvent> = (200..300).map(common::event).collect();
    spool.write_batch(&mut batch).unwrap();
    spool.drain(Duration::from_secs(30)).unwrap();
    let got: Vec<Uuid> = remote.events().iter().map(|e| e.event_id).collect();
    assert_eq!(got, ids(0..300));
    assert_eq!(remote.events()[5], common::event(5));
    let st = spool.stats();
    assert_eq!(
        (st.appended, st.delivered, st.depth, st.bytes),
        (300, 300, 0, 0)
    );
    assert_eq!(st.oldest_age, None);
    assert!(spool.flush().is_ok());
    drop(spool);
    // Every segment was delivered: only the current one may remain (and
    // is deleted by the next open).
    assert!(segment_files(dir.path()) <= 1);
    let again = Spool::open(dir.path(), MemorySink::new()).unwrap();
    assert_eq!(again.stats().recovered, 0);
    assert_eq!(segment_files(dir.path()), 0);
}

#[test]
fn an_outage_keeps_events_on_disk_and_callers_unblocked() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(Remote::default());
    remote.down.store(true, Ordering::Relaxed);
    let opts = SpoolOptions {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(20),
        ..SpoolOptions::default()
    };
    let spool = Spool::open_with(dir.path(), remote.clone(), opts).unwrap();
    for i in 0..100 {
        spool.write(&common::event(i)).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || spool
        .stats()
        .inner_errors
        >= 3));
    let st = spool.stats();
    assert_eq!(st.depth, 100);
    assert!(st.bytes > 100 * 100, "{st:?}");
    // The time the oldest event has waited in the spool (not its age).
    let age = st.oldest_age.unwrap();
    assert!(age < Duration::from_secs(30), "{age:?}");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(spool.stats().oldest_age.unwrap() >= Duration::from_secs(1));
    assert!(st.last_error.as_deref().unwrap().contains("remote down"));
    // Durable locally: flush is Ok, nothing was lost.
    spool.flush().unwrap();
    // drain reports what still waits, not a loss.
    match spool.drain(Duration::from_millis(50)) {
        Err(SinkError::Other(m)) => assert!(m.contains("100 audit event(s) still in the spool")),
        other => panic!("{other:?}"),
    }
    remote.down.store(false, Ordering::Relaxed);
    spool.drain(Duration::from_secs(30)).unwrap();
    assert_eq!(remote.ids(), ids(0..100));
    assert_eq!(spool.stats().depth, 0);
}

#[test]
fn reopening_sends_what_was_not_acknowledged_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(Remote::default());
    let opts = || SpoolOptions {
        segment_bytes: 8192,
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(10),
        shutdown_wait: Duration::from_secs(2),
        ..SpoolOptions::default()
    };
    {
        let spool = Spool::open_with(dir.path(), remote.clone(), opts()).unwrap();
        for i in 0..50 {
            spool.write(&common::event(i)).unwrap();
        }
        spool.drain(Duration::from_secs(30)).unwrap();
        remote.down.store(true, Ordering::Relaxed);
        for i in 50..150 {
            spool.write(&common::event(i)).unwrap();
        }
    }
    remote.down.store(false, Ordering::Relaxed);
    let spool = Spool::open_with(dir.path(), remote.clone(), opts()).unwrap();
    assert_eq!(spool.stats().recovered, 100);
    spool.drain(Duration::from_secs(30)).unwrap();
    assert_eq!(remote.ids(), ids(0..150));
    // Each event reached the remote once (the ack files were current).
    assert!(remote.seen.lock().unwrap().values().all(|&n| n == 1));
}

#[test]
fn a_stale_acknowledgement_only_repeats_events_the_remote_drops() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(Remote::default());
    {
        let spool = Spool::open(dir.path(), remote.clone()).unwrap();
        for i in 0..20 {
            spool.write(&common::event(i)).unwrap();
        }
        spool.drain(Duration::from_secs(30)).unwrap();
        // Keep the segment: the next write after drop would go elsewhere.
    }
    // As after a power loss before the acknowledgement reached the disk:
    // the segment is there, its acknowledgement file is not.
    let seg: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for p in &seg {
        if p.extension().is_some_and(|e| e == "ack") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let has_segment = seg
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "jsonl"));
    let spool = Spool::open(dir.path(), remote.clone()).unwrap();
    if has_segment {
        assert_eq!(spool.stats().recovered, 20);
    }
    spool.drain(Duration::from_secs(30)).unwrap();
    assert_eq!(remote.ids(), ids(0..20));
}

#[test]
fn a_torn_last_line_is_cut_and_a_damaged_line_is_a_counted_loss() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(MemorySink::new());
    let mut text = Vec::new();
    for i in 0..3 {
        common::event(i).write_json(&mut text);
        text.push(b'\n');
    }
    // Zeros where a crash left unwritten blocks, then the other events.
    text.extend_from_slice(&[0u8; 40]);
    text.push(b'\n');
    for i in 3..5 {
        common::event(i).write_json(&mut text);
        text.push(b'\n');
    }
    // A line the crash cut short.
    let mut torn = Vec::new();
    common::event(5).write_json(&mut torn);
    text.extend_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(dir.path().join("seg-00000000000000000007.jsonl"), &text).unwrap();

    let spool = Spool::open(dir.path(), remote.clone()).unwrap();
    let st = spool.stats();
    assert_eq!((st.recovered, st.torn_tails), (6, 1));
    match spool.drain(Duration::from_secs(30)) {
        Err(SinkError::Lost { events: 1, cause }) => assert!(cause.contains("damaged")),
        other => panic!("{other:?}"),
    }
    let got: Vec<Uuid> = remote.events().iter().map(|e| e.event_id).collect();
    assert_eq!(got, ids(0..5));
    let st = spool.stats();
    assert_eq!((st.corrupt, st.delivered, st.depth), (1, 5, 0));
    assert_eq!(spool.lost_events(), 1);
    // Reported once.
    assert!(spool.flush().is_ok());
    // New writes go to a new segment after the recovered one.
    spool.write(&common::event(9)).unwrap();
    spool.drain(Duration::from_secs(30)).unwrap();
    assert_eq!(remote.len(), 6);
}

#[test]
fn refuse_when_full_counts_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(Remote::default());
    remote.down.store(true, Ordering::Relaxed);
    let line = common::event(0).to_json().len() as u64 + 1;
    let opts = SpoolOptions {
        max_bytes: line * 10,
        full: SpoolFull::Refuse,
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(10),
        ..SpoolOptions::default()
    };
    let spool = Spool::open_with(dir.path(), remote.clone(), opts).unwrap();
    let mut refused = 0;
    for i in 0..15 {
        match spool.write(&common::event(i)) {
            Ok(()) => {}
            Err(SinkError::QueueFull) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 4, "{refused}");
    let st = spool.stats();
    assert_eq!(st.refused, refused);
    assert_eq!(st.depth, 15 - refused);
    match spool.flush() {
        Err(SinkError::Lost { events, .. }) => assert_eq!(events, refused),
        other => panic!("{other:?}"),
    }
    remote.down.store(false, Ordering::Relaxed);
    spool.drain(Duration::from_secs(30)).unwrap();
    assert_eq!(remote.ids().len() as u64, 15 - refused);
}

#[test]
fn block_when_full_waits_for_room_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(Remote::default());
    remote.down.store(true, Ordering::Relaxed);
    let line = common::event(0).to_json().len() as u64 + 1;
    let opts = SpoolOptions {
        max_bytes: line * 5,
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(10),
        ..SpoolOptions::default()
    };
    let spool = Arc::new(Spool::open_with(dir.path(), remote.clone(), opts).unwrap());
    let writer = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            for i in 0..30 {
                spool.write(&common::event(i)).unwrap();
            }
        })
    };
    assert!(wait_until(Duration::from_secs(10), || spool
        .stats()
        .blocked
        >= 1));
    assert!(spool.stats().depth <= 5);
    remote.down.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    spool.drain(Duration::from_secs(30)).unwrap();
    assert_eq!(remote.ids(), ids(0..30));
}

#[test]
fn events_the_remote_rejects_for_good_are_counted_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(Remote::default());
    remote
        .reject
        .lock()
        .unwrap()
        .push(common::event(3).event_id);
    let spool = Spool::open(dir.path(), remote.clone()).unwrap();
    for i in 0..6 {
        spool.write(&common::event(i)).unwrap();
    }
    match spool.drain(Duration::from_secs(30)) {
        Err(SinkError::Lost { events: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    let mut want = ids(0..6);
    want.remove(3);
    assert_eq!(remote.ids(), want);
    let st = spool.stats();
    assert_eq!((st.undeliverable, st.depth, st.inner_errors), (1, 0, 0));
}

#[test]
fn give_up_after_counts_the_batch_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(Remote::default());
    remote.down.store(true, Ordering::Relaxed);
    let opts = SpoolOptions {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(10),
        give_up_after: Some(Duration::from_millis(100)),
        ..SpoolOptions::default()
    };
    let spool = Spool::open_with(dir.path(), remote.clone(), opts).unwrap();
    for i in 0..4 {
        spool.write(&common::event(i)).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || spool.stats().depth == 0));
    let st = spool.stats();
    assert_eq!(st.undeliverable, 4);
    match spool.flush() {
        Err(SinkError::Lost { events: 4, cause }) => assert!(cause.contains("gave up")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_writer_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Spool::open(dir.path(), MemorySink::new()).unwrap();
    let err = Spool::open(dir.path(), MemorySink::new()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    let locked = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<FileLocked>())
        .unwrap();
    assert_eq!(locked.holder_pid, Some(std::process::id()));
}

#[test]
fn concurrent_writers_share_syncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(Remote::default());
    let spool = Arc::new(Spool::open(dir.path(), remote.clone()).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    spool.write(&common::event(t * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    spool.drain(Duration::from_secs(30)).unwrap();
    let mut got = remote.ids();
    got.sort();
    let mut want: Vec<Uuid> = (0..4u64)
        .flat_map(|t| ids(t * 1000..t * 1000 + 100))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn fsync_never_still_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(Remote::default());
    remote.down.store(true, Ordering::Relaxed);
    let opts = SpoolOptions {
        fsync: FsyncPolicy::Never,
        shutdown_wait: Duration::from_millis(200),
        ..SpoolOptions::default()
    };
    {
        let spool = Spool::open_with(dir.path(), remote.clone(), opts.clone()).unwrap();
        for i in 0..10 {
            spool.write(&common::event(i)).unwrap();
        }
    }
    remote.down.store(false, Ordering::Relaxed);
    let spool = Spool::open_with(dir.path(), remote.clone(), opts).unwrap();
    spool.drain(Duration::from_secs(30)).unwrap();
    assert_eq!(remote.ids(), ids(0..10));
}
