//! JsonlFileSink: whole lines, batching and flush, rotation, permissions.

mod common;

use std::fs;

use phi_audit_runtime::*;

fn read_all_lines(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // Oldest first: audit.jsonl.1, .2, ..., then audit.jsonl.
    files.sort_by_key(|p| {
        let n = p
            .extension()
            .and_then(|e| e.to_str())
            .and_then(|e| e.parse::<u64>().ok());
        n.unwrap_or(u64::MAX)
    });
    files
        .iter()
        .flat_map(|p| {
            let t = fs::read_to_string(p).unwrap();
            assert!(
                t.is_empty() || t.ends_with('\n'),
                "{} ends mid-line",
                p.display()
            );
            t.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn buffered_lines_reach_the_file_on_flush() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let opts = JsonlOptions::new().fsync(FsyncPolicy::Never);
    let s = JsonlFileSink::open_with(&p, opts).unwrap();
    for i in 0..10 {
        s.write(&common::event(i)).unwrap();
    }
    assert_eq!(fs::read(&p).unwrap().len(), 0, "Never buffers until flush");
    s.flush().unwrap();
    let lines = read_all_lines(dir.path());
    assert_eq!(lines.len(), 10);
    for (i, l) in lines.iter().enumerate() {
        let e: AuditEvent = serde_json::from_str(l).unwrap();
        assert_eq!(e, common::event(i as u64));
    }
    s.close().unwrap();
    assert!(matches!(s.write(&common::event(0)), Err(SinkError::Closed)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn every_event_and_every_n_write_through() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.jsonl");
    let s = JsonlFileSink::open_with(&p, JsonlOptions::default()).unwrap();
    s.write(&common::event(1)).unwrap();
    assert_eq!(read_all_lines(dir.path()).len(), 1);
    drop(s);
    let s =
        JsonlFileSink::open_with(&p, JsonlOptions::new().fsync(FsyncPolicy::EveryN(3))).unwrap();
    s.write(&common::event(2)).unwrap();
    s.write(&common::event(3)).unwrap();
    assert_eq!(read_all_lines(dir.path()).len(), 1);
    s.write(&common::event(4)).unwrap();
    assert_eq!(read_all_lines(dir.path()).len(), 4);
    drop(s); // drop flushes
}

#[test]
fn rotation_never_splits_or_loses_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let opts = JsonlOptions::new()
        .fsync(FsyncPolicy::Never)
        .rotate_bytes(Some(2000))
        .buffer_capacity(1500);
    let s = JsonlFileSink::open_with(&p, opts.clone()).unwrap();
    for i in 0..100 {
        s.write(&common::event(i)).unwrap();
    }
    s.close().unwrap();
    assert!(s.rotations() > 5);
    // Reopen and continue: numbering continues after the highest file.
    let s = JsonlFileSink::open_with(&p, opts).unwrap();
    for i in 100..150 {
        s.write(&common::event(i)).unwrap();
    }
    s.close().unwrap();
    let lines = read_all_lines(dir.path());
    assert_eq!(lines.len(), 150);
    for (i, l) in lines.iter().enumerate() {
        let e: AuditEvent = serde_json::from_str(l).unwrap();
        assert_eq!(e.metadata.get("seq"), Some(&MetaValue::Int(i as i64)));
    }
    for f in fs::read_dir(dir.path()).unwrap() {
        let len = f.unwrap().metadata().unwrap().len();
        assert!(len <= 2000, "a file grew to {len} bytes");
    }
}

#[test]
fn an_unterminated_foreign_line_does_not_swallow_ours() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    fs::write(&p, "{\"torn\":").unwrap();
    let s = JsonlFileSink::open_with(&p, JsonlOptions::default()).unwrap();
    s.write(&common::event(1)).unwrap();
    let text = fs::read_to_string(&p).unwrap();
    let last = text.lines().last().unwrap();
    assert!(serde_json::from_str::<AuditEvent>(last).is_ok());
}

#[cfg(target_os = "linux")]
#[test]
fn blocks_are_reserved_ahead_and_released_at_close_and_rotation() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let opts = JsonlOptions::new()
        .fsync(FsyncPolicy::Never)
        .rotate_bytes(Some(3 * MIB));
    assert_eq!(opts.preallocate, DEFAULT_PREALLOCATE);
    let s = JsonlFileSink::open_with(&p, opts).unwrap();
    for i in 0..10 {
        s.write(&common::event(i)).unwrap();
    }
    s.flush().unwrap();
    // The length shows whole lines only; the disk holds the reservation.
    let len = fs::metadata(&p).unwrap().len();
    assert_eq!(len, fs::read(&p).unwrap().len() as u64);
    assert_eq!(read_all_lines(dir.path()).len(), 10);
    assert!(len < 8192, "ten lines: {len} bytes");
    assert!(
        common::disk_bytes(&p) >= MIB,
        "{} bytes reserved",
        common::disk_bytes(&p)
    );
    // Enough lines to rotate twice: every file lets go of its reservation.
    for i in 10..20_000 {
        s.write(&common::event(i)).unwrap();
    }
    s.close().unwrap();
    assert!(s.rotations() >= 2);
    let lines = read_all_lines(dir.path());
    assert_eq!(lines.len(), 20_000);
    for f in fs::read_dir(dir.path()).unwrap() {
        let f = f.unwrap().path();
        let len = fs::metadata(&f).unwrap().len();
        assert!(
            common::disk_bytes(&f) <= len.next_multiple_of(4096) + 4096,
            "{} keeps {} bytes of disk for {len} bytes",
            f.display(),
            common::disk_bytes(&f)
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn preallocation_off_reserves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let opts = JsonlOptions::new().fsync(FsyncPolicy::Never).preallocate(0);
    let s = JsonlFileSink::open_with(&p, opts).unwrap();
    for i in 0..10 {
        s.write(&common::event(i)).unwrap();
    }
    s.flush().unwrap();
    assert!(
        common::disk_bytes(&p) <= 8192,
        "{} bytes on disk",
        common::disk_bytes(&p)
    );
    drop(s);
    assert_eq!(read_all_lines(dir.path()).len(), 10);
}

#[cfg(target_os = "linux")]
#[test]
fn a_reservation_is_kept_rather_than_cut_a_line_someone_else_appended() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let opts = JsonlOptions::new().fsync(FsyncPolicy::Never);
    let s = JsonlFileSink::open_with(&p, opts).unwrap();
    s.write(&common::event(1)).unwrap();
    s.flush().unwrap();
    let other = serde_json::to_string(&common::event(2)).unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
    writeln!(f, "{other}").unwrap();
    drop(f);
    s.close().unwrap();
    let lines = read_all_lines(dir.path());
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1], other);
}
