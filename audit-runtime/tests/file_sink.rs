//! JsonlFileSink: whole lines, batching and flush, rotation, permissions.

mod common;

use std::fs;

use audit_runtime::*;

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
    let opts = JsonlOptions {
        fsync: FsyncPolicy::Never,
        ..JsonlOptions::default()
    };
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
    let s = JsonlFileSink::open_with(
        &p,
        JsonlOptions {
            fsync: FsyncPolicy::EveryN(3),
            ..Default::default()
        },
    )
    .unwrap();
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
    let opts = JsonlOptions {
        fsync: FsyncPolicy::Never,
        rotate_bytes: Some(2000),
        buffer_capacity: 1500,
    };
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
