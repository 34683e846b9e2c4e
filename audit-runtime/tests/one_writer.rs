//! One writer per file, enforced by the kernel, with real processes: the
//! test binary re-executes itself as the other process (`CHILD_ENV` names
//! the role).
//!
//! - a second process opening a ledger or JSONL path fails at once, naming
//!   the path and the holder's pid; the first keeps writing; nothing lost;
//! - SIGKILL of the holder frees the lock;
//! - rotation keeps the lock;
//! - disk full on a small tmpfs, with a second writer trying meanwhile:
//!   every acknowledged event is in the file and the ledger verifies.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use phi_audit_runtime::sink::FileLocked;
use phi_audit_runtime::*;

const CHILD_ENV: &str = "PHI_AUDIT_ONE_WRITER_CHILD";

/// The child's side. Roles (in `CHILD_ENV`, `role:arg1:arg2`):
/// - `try:<ledger>:<jsonl>`: open both, print one line per result, exit;
/// - `hold:<ledger>:<jsonl>`: open both, print `ready <pid>`, then write an
///   event to each per line read on stdin, printing `ack <n>`, until stdin
///   closes; print `done <n>`;
/// - `fill:<ledger>:<jsonl>`: write to both until 200 writes in a row
///   failed, printing `ack L <n>` / `ack J <n>` per acknowledged write; then
///   flush both and print the results.
#[test]
fn one_writer_child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = role.splitn(3, ':');
    let (what, ledger, jsonl) = (
        parts.next().unwrap().to_owned(),
        PathBuf::from(parts.next().unwrap()),
        PathBuf::from(parts.next().unwrap()),
    );
    let mut out = std::io::stdout().lock();
    match what.as_str() {
        "try" => {
            match LedgerSink::open(&ledger) {
                Ok(_) => writeln!(out, "ledger opened").unwrap(),
                Err(LedgerError::Locked(l)) => {
                    writeln!(out, "ledger locked {:?} {l}", l.holder_pid).unwrap()
                }
                Err(e) => writeln!(out, "ledger error {e}").unwrap(),
            }
            match JsonlFileSink::open(&jsonl) {
                Ok(_) => writeln!(out, "jsonl opened").unwrap(),
                Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<FileLocked>()) {
                    Some(l) => {
                        writeln!(out, "jsonl locked {:?} {:?} {l}", l.holder_pid, e.kind()).unwrap()
                    }
                    None => writeln!(out, "jsonl error {e}").unwrap(),
                },
            }
        }
        "hold" => {
            let l = LedgerSink::open(&ledger).unwrap();
            let j = JsonlFileSink::open(&jsonl).unwrap();
            let start = l.recovery().events;
            writeln!(out, "ready {}", std::process::id()).unwrap();
            out.flush().unwrap();
            let mut n = start;
            for line in std::io::stdin().lock().lines() {
                if line.is_err() {
                    break;
                }
                l.write(&common::event(n)).unwrap();
                j.write(&common::event(n)).unwrap();
                writeln!(out, "ack {n}").unwrap();
                out.flush().unwrap();
                n += 1;
            }
            l.close().unwrap();
            j.close().unwrap();
            writeln!(out, "done {n}").unwrap();
        }
        "fill" => {
            let l = LedgerSink::open(&ledger).unwrap();
            let j = JsonlFileSink::open(&jsonl).unwrap();
            writeln!(out, "ready {}", std::process::id()).unwrap();
            out.flush().unwrap();
            let mut failed_in_a_row = 0;
            let mut n = 0u64;
            // 50 events per line read on stdin, until 200 writes in a row
            // failed.
            for line in std::io::stdin().lock().lines() {
                if line.is_err() {
                    break;
                }
                for _ in 0..50 {
                    let e = common::event(n);
                    let mut ok = false;
                    if l.write(&e).is_ok() {
                        writeln!(out, "ack L {n}").unwrap();
                        ok = true;
                    }
                    if j.write(&e).is_ok() {
                        writeln!(out, "ack J {n}").unwrap();
                        ok = true;
                    }
                    failed_in_a_row = if ok { 0 } else { failed_in_a_row + 1 };
                    n += 1;
                }
                if failed_in_a_row >= 200 {
                    break;
                }
                writeln!(out, "batch").unwrap();
                out.flush().unwrap();
            }
            let show = |r: Result<(), SinkError>| match r {
                Err(SinkError::Lost { events, .. }) => format!("lost {events}"),
                Err(e) => format!("error {e}"),
                Ok(()) => "ok".to_owned(),
            };
            writeln!(out, "flush L {}", show(l.flush())).unwrap();
            writeln!(out, "flush J {}", show(j.flush())).unwrap();
            writeln!(out, "flush again L {}", show(l.flush())).unwrap();
            writeln!(out, "done").unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

fn child(role: &str, ledger: &Path, jsonl: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "one_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{role}:{}:{}", ledger.display(), jsonl.display()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// A child's stdout, read line by line on a thread of its own, so a
/// silent child fails the test after a deadline instead of hanging it.
struct Lines(std::sync::mpsc::Receiver<String>);

impl Lines {
    fn of(out: ChildStdout) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line, `None` when the child closed its stdout.
    fn next(&self) -> Option<String> {
        match self.0.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => Some(l),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the child printed nothing for 120 s")
            }
        }
    }

    /// Lines until one holds `prefix`; returns it from there (the test
    /// harness may print on the same line first).
    fn wait_for(&self, prefix: &str) -> String {
        loop {
            let line = self
                .next()
                .unwrap_or_else(|| panic!("child ended before {prefix:?}"));
            if let Some(i) = line.find(prefix) {
                return line[i..].trim_end().to_owned();
            }
        }
    }
}

fn try_in_child(ledger: &Path, jsonl: &Path) -> String {
    let c = child("try", ledger, jsonl);
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn is_locked_by(e: &std::io::Error, pid: u32) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        && e.get_ref()
            .and_then(|i| i.downcast_ref::<FileLocked>())
            .is_some_and(|l| l.holder_pid == Some(pid))
}

fn seqs(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["metadata"]["seq"].as_u64())
        .collect()
}

#[test]
fn a_second_process_cannot_open_what_the_first_writes() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (lp, jp) = (
        dir.path().join("audit.ledger"),
        dir.path().join("audit.jsonl"),
    );
    let me = std::process::id();

    // This process writes; another one tries to open both files.
    let l = LedgerSink::open(&lp).unwrap();
    let j = JsonlFileSink::open(&jp).unwrap();
    for i in 0..10 {
        l.write(&common::event(i)).unwrap();
        j.write(&common::event(i)).unwrap();
    }
    let seen = try_in_child(&lp, &jp);
    assert!(
        seen.contains(&format!("ledger locked Some({me})")),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("jsonl locked Some({me}) WouldBlock")),
        "{seen}"
    );
    assert!(seen.contains(&lp.display().to_string()), "{seen}");
    assert!(seen.contains(&format!("(process {me})")), "{seen}");
    // A second sink in this process is refused too.
    assert!(matches!(LedgerSink::open(&lp), Err(LedgerError::Locked(_))));
    assert!(is_locked_by(&JsonlFileSink::open(&jp).unwrap_err(), me));
    // The first keeps writing; nothing lost.
    for i in 10..20 {
        l.write(&common::event(i)).unwrap();
        j.write(&common::event(i)).unwrap();
    }
    l.close().unwrap();
    j.close().unwrap();
    assert_eq!(seqs(&lp), (0..20).collect::<Vec<_>>());
    assert_eq!(seqs(&jp), (0..20).collect::<Vec<_>>());
    assert!(verify_path(&lp, &VerifyOptions::default())
        .unwrap()
        .passed());
    // Closed: the lock is gone.
    let opened = try_in_child(&lp, &jp);
    assert!(
        opened.contains("ledger opened") && opened.contains("jsonl opened"),
        "{opened}"
    );

    // Now another process writes and this one tries.
    let mut c = child("hold", &lp, &jp);
    let out = Lines::of(c.stdout.take().unwrap());
    let pid: u32 = out.wait_for("ready ")[6..].parse().unwrap();
    let mut stdin = c.stdin.take().unwrap();
    for round in 0..5 {
        writeln!(stdin, "go").unwrap();
        stdin.flush().unwrap();
        out.wait_for("ack ");
        match LedgerSink::open(&lp) {
            Err(LedgerError::Locked(locked)) => {
                assert_eq!(locked.holder_pid, Some(pid), "round {round}");
                assert_eq!(locked.path, lp);
            }
            other => panic!("round {round}: {other:?}"),
        }
        assert!(is_locked_by(&JsonlFileSink::open(&jp).unwrap_err(), pid));
    }
    drop(stdin);
    assert_eq!(out.wait_for("done "), "done 25");
    assert!(c.wait().unwrap().success());
    assert_eq!(seqs(&lp), (0..25).collect::<Vec<_>>());
    assert_eq!(seqs(&jp), (0..25).collect::<Vec<_>>());
    let r = verify_path(&lp, &VerifyOptions::default()).unwrap();
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.chain_length, 25);
}

#[test]
fn sigkill_of_the_holder_frees_the_lock() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (lp, jp) = (
        dir.path().join("audit.ledger"),
        dir.path().join("audit.jsonl"),
    );
    let mut c = child("hold", &lp, &jp);
    let out = Lines::of(c.stdout.take().unwrap());
    let pid: u32 = out.wait_for("ready ")[6..].parse().unwrap();
    let mut stdin = c.stdin.take().unwrap();
    for _ in 0..3 {
        writeln!(stdin, "go").unwrap();
        stdin.flush().unwrap();
        out.wait_for("ack ");
    }
    assert!(
        matches!(LedgerSink::open(&lp), Err(LedgerError::Locked(ref l)) if l.holder_pid == Some(pid))
    );
    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
    // No stale lock: both open at once, and the chain resumes.
    let l = LedgerSink::open(&lp).unwrap();
    let j = JsonlFileSink::open(&jp).unwrap();
    assert_eq!(l.recovery().events, 3);
    l.write(&common::event(3)).unwrap();
    j.write(&common::event(3)).unwrap();
    drop((l, j));
    assert_eq!(seqs(&lp), vec![0, 1, 2, 3]);
    assert_eq!(seqs(&jp), vec![0, 1, 2, 3]);
    assert!(verify_path(&lp, &VerifyOptions::default())
        .unwrap()
        .passed());
}

#[test]
fn rotation_keeps_the_lock_on_the_new_file() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("rot.jsonl");
    let lp = dir.path().join("unused.ledger");
    let opts = JsonlOptions::new().rotate_bytes(Some(2_000));
    let j = JsonlFileSink::open_with(&jp, opts).unwrap();
    let me = std::process::id();
    for i in 0..40 {
        j.write(&common::event(i)).unwrap();
        if i % 10 == 9 {
            let seen = try_in_child(&lp, &jp);
            assert!(
                seen.contains(&format!("jsonl locked Some({me})")),
                "after {} rotations: {seen}",
                j.rotations()
            );
        }
    }
    assert!(j.rotations() >= 5, "{}", j.rotations());
    j.close().unwrap();
    // Every line once, in order, across the rotated files; no temporary
    // file left behind.
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            assert!(!name.contains("rotating"), "left behind: {name}");
            if name == "rot.jsonl" {
                Some((u64::MAX, p))
            } else {
                let n = name.strip_prefix("rot.jsonl.")?.parse().ok()?;
                Some((n, p))
            }
        })
        .collect();
    files.sort();
    let all: Vec<u64> = files.iter().flat_map(|(_, p)| seqs(p)).collect();
    assert_eq!(all, (0..40).collect::<Vec<_>>());
}

/// Mounts a tmpfs of `size` at a fresh directory; unmounts on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn disk_full_with_a_second_writer_keeps_every_acknowledged_event() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let fs = match Tmpfs::mount("1m") {
        Ok(f) => f,
        Err(why) => {
            phi_audit_test_env::skip(
                "one_writer::disk_full_with_a_second_writer_keeps_every_acknowledged_event",
                &format!("needs a small tmpfs ({why}); run as root"),
            );
            return;
        }
    };
    let (lp, jp) = (
        fs.path().join("audit.ledger"),
        fs.path().join("audit.jsonl"),
    );
    // Some space taken by someone else, freed later.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 200 * 1024]).unwrap();

    let mut a = child("fill", &lp, &jp);
    let out = Lines::of(a.stdout.take().unwrap());
    let pid: u32 = out.wait_for("ready ")[6..].parse().unwrap();
    // A second writer tries while the first fills the disk: refused, and
    // it never touches the files.
    let mut stdin = a.stdin.take().unwrap();
    let mut tries = 0;
    let mut rest = String::new();
    let (mut acked_l, mut acked_j) = (Vec::new(), Vec::new());
    let mut full = false;
    writeln!(stdin, "go").unwrap();
    while let Some(line) = out.next() {
        if let Some(n) = line.find("ack L ").map(|i| &line[i + 6..]) {
            acked_l.push(n.trim().parse::<u64>().unwrap());
        } else if let Some(n) = line.find("ack J ").map(|i| &line[i + 6..]) {
            acked_j.push(n.trim().parse::<u64>().unwrap());
        } else if line.contains("batch") && !full {
            // The first process is between batches, holding both files.
            tries += 1;
            let seen = try_in_child(&lp, &jp);
            assert!(
                seen.contains(&format!("ledger locked Some({pid})"))
                    && seen.contains(&format!("jsonl locked Some({pid})")),
                "{seen}"
            );
            writeln!(stdin, "go").unwrap();
        } else {
            full |= line.contains("flush");
            rest.push_str(&line);
            rest.push('\n');
        }
    }
    drop(stdin);
    assert!(a.wait().unwrap().success(), "{rest}");
    assert!(tries > 0);
    // The disk filled: writes failed, and flush said so, with a count.
    assert!(!acked_l.is_empty() && !acked_j.is_empty());
    assert!(rest.contains("flush L lost "), "{rest}");
    assert!(rest.contains("flush J lost "), "{rest}");
    assert!(rest.contains("flush again L ok"), "{rest}");

    // Every acknowledged event is there, in order, once; the ledger
    // verifies.
    assert_eq!(seqs(&lp), acked_l);
    assert_eq!(seqs(&jp), acked_j);
    let r = verify_path(&lp, &VerifyOptions::default()).unwrap();
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.chain_length, acked_l.len() as u64);

    // With space again, the ledger resumes and still verifies.
    std::fs::remove_file(&filler).unwrap();
    let l = LedgerSink::open(&lp).unwrap();
    assert_eq!(l.recovery().events, acked_l.len() as u64);
    assert!(l.recovery().torn_tail.is_none() && l.recovery().damaged_tail.is_none());
    l.write(&common::event(1_000_000)).unwrap();
    l.close().unwrap();
    let r = verify_path(&lp, &VerifyOptions::default()).unwrap();
    assert!(r.passed(), "{:?}", r.failures);
    drop(fs);
}

/// A program that ignores the lock appends while the disk is filling: the
/// sink's failed write cuts back its own bytes only, never the other line.
#[test]
fn a_failed_write_never_cuts_what_another_program_appended() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let fs = match Tmpfs::mount("256k") {
        Ok(f) => f,
        Err(why) => {
            phi_audit_test_env::skip(
                "one_writer::a_failed_write_never_cuts_what_another_program_appended",
                &format!("needs a small tmpfs ({why}); run as root"),
            );
            return;
        }
    };
    for other_appends in [false, true] {
        let p = fs.path().join(format!("cut-{other_appends}.jsonl"));
        let opts = JsonlOptions::new()
            .fsync(FsyncPolicy::Never)
            .buffer_capacity(4 << 20)
            .preallocate(0);
        let s = JsonlFileSink::open_with(&p, opts).unwrap();
        for i in 0..10 {
            s.write(&common::event(i)).unwrap();
        }
        s.flush().unwrap();
        let before = std::fs::read(&p).unwrap();
        let other = b"{\"written_by\":\"another program\"}\n";
        if other_appends {
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            f.write_all(other).unwrap();
        }
        // More than the disk holds, in one buffered write.
        for i in 10..2_000 {
            s.write(&common::event(i)).unwrap();
        }
        match s.flush() {
            Err(SinkError::Lost { events, .. }) => assert_eq!(events, 1_990),
            r => panic!("flush on a full disk: {r:?}"),
        }
        assert_eq!(s.lost_events(), 1_990);
        drop(s);
        let after = std::fs::read(&p).unwrap();
        assert!(
            after.starts_with(&before),
            "the acknowledged lines were cut"
        );
        if other_appends {
            assert_eq!(&after[before.len()..before.len() + other.len()], other);
        } else {
            assert_eq!(after, before, "our partial write was not cut back");
        }
        std::fs::remove_file(&p).unwrap();
    }
    drop(fs);
}

/// `{pid}` and `{hostname}` in a path give each process a file of its own
/// from one setting.
#[test]
fn placeholders_give_each_process_its_own_file() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lp = dir.path().join("ledger-{hostname}-{pid}.jsonl");
    let jp = dir.path().join("audit-{pid}.jsonl");
    let me = std::process::id().to_string();
    let l = LedgerSink::open(&lp).unwrap();
    let j = JsonlFileSink::open(&jp).unwrap();
    let lname = l.path().file_name().unwrap().to_str().unwrap().to_owned();
    assert!(lname.ends_with(&format!("-{me}.jsonl")), "{lname}");
    assert!(!lname.contains('{') && !lname.contains('/'), "{lname}");
    assert_eq!(
        j.path().file_name().unwrap().to_str().unwrap(),
        format!("audit-{me}.jsonl")
    );
    l.write(&common::event(0)).unwrap();
    j.write(&common::event(0)).unwrap();
    // Another process with the same setting opens files of its own.
    let seen = try_in_child(&lp, &jp);
    assert!(
        seen.contains("ledger opened") && seen.contains("jsonl opened"),
        "{seen}"
    );
    drop((l, j));
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 4, "one ledger and one JSONL file per process");
}
