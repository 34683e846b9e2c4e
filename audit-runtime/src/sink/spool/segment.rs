//! The spool's files: numbered segment files of JSON lines, an
//! acknowledgement offset beside each, and what opening a spool directory
//! finds in them (segments left by an earlier process, a torn last line).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Name of the lock file that makes one process the spool's only writer.
pub(super) const LOCK_FILE: &str = "spool.lock";

const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".jsonl";
const ACK_SUFFIX: &str = ".ack";

/// Width of an acknowledgement file: 20 decimal digits and a newline, so
/// every update overwrites the same bytes.
const ACK_LEN: usize = 21;

/// `<dir>/seg-<id>.jsonl`, the id zero-padded so names sort in order.
pub(super) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{id:020}{SEGMENT_SUFFIX}"))
}

/// `<dir>/seg-<id>.ack`: how many bytes of the segment the inner sink
/// acknowledged.
pub(super) fn ack_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{id:020}{ACK_SUFFIX}"))
}

/// The id of a segment file name, if it is one.
fn segment_id(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment found when the spool was opened.
#[derive(Debug)]
pub(super) struct Found {
    pub(super) id: u64,
    /// Bytes of whole lines in it (a torn last line was cut off).
    pub(super) len: u64,
    /// Bytes already acknowledged by the inner sink.
    pub(super) acked: u64,
    /// Lines after `acked`: events still to deliver.
    pub(super) pending_events: u64,
}

/// What opening the directory found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Segments with events still to deliver, oldest first.
    pub(super) segments: Vec<Found>,
    /// The highest segment id seen (0 when none).
    pub(super) max_id: u64,
    /// Partial last lines cut off (a process killed in the middle of an
    /// append: never acknowledged to its caller).
    pub(super) torn_tails: u64,
}

/// Reads the acknowledged offset of segment `id`; 0 when the file is
/// missing, unreadable or not an offset at a line boundary of `data` (the
/// whole segment is then sent again; the inner sink drops what it already
/// has by `event_id`).
fn read_ack(dir: &Path, id: u64, data: &[u8]) -> u64 {
    let Ok(text) = fs::read(ack_path(dir, id)) else {
        return 0;
    };
    let Some(n) = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
    else {
        return 0;
    };
    let at_boundary = n == 0 || (n as usize <= data.len() && data[n as usize - 1] == b'\n');
    if at_boundary {
        n
    } else {
        0
    }
}

/// Lists the segments in `dir`: cuts a torn last line off each (counted),
/// deletes segments whose every event was acknowledged, and returns the
/// rest with their acknowledged offsets and event counts.
pub(super) fn scan(dir: &Path) -> io::Result<Scan> {
    let mut ids: Vec<u64> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(id) = entry.file_name().to_str().and_then(segment_id) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let mut scan = Scan {
        max_id: ids.last().copied().unwrap_or(0),
        ..Scan::default()
    };
    for id in ids {
        let path = segment_path(dir, id);
        let data = fs::read(&path)?;
        let whole = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < data.len() {
            // Bytes after the last newline: an append cut short by a crash.
            // Its caller was never told it succeeded (an append is
            // acknowledged after the whole line is written).
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(whole as u64)?;
            f.sync_data()?;
            scan.torn_tails += 1;
        }
        let data = &data[..whole];
        let acked = read_ack(dir, id, data);
        let pending_events = data[acked as usize..]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        if pending_events == 0 {
            remove_segment(dir, id)?;
            continue;
        }
        scan.segments.push(Found {
            id,
            len: whole as u64,
            acked,
            pending_events,
        });
    }
    Ok(scan)
}

/// Deletes segment `id` and its acknowledgement file.
pub(super) fn remove_segment(dir: &Path, id: u64) -> io::Result<()> {
    match fs::remove_file(segment_path(dir, id)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match fs::remove_file(ack_path(dir, id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The acknowledgement file of the segment being drained, kept open.
pub(super) struct AckFile {
    pub(super) id: u64,
    file: File,
}

impl AckFile {
    /// Opens (creating) the acknowledgement file of segment `id`.
    pub(super) fn open(dir: &Path, id: u64) -> io::Result<AckFile> {
        let mut o = OpenOptions::new();
        o.create(true).write(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        Ok(AckFile {
            id,
            file: o.open(ack_path(dir, id))?,
        })
    }

    /// Records that the first `offset` bytes were acknowledged. Not synced:
    /// the page cache survives the process, and after a power loss an older
    /// offset only sends events again, which the inner sink drops by
    /// `event_id`.
    pub(super) fn store(&self, offset: u64) -> io::Result<()> {
        let text = format!("{offset:020}\n");
        debug_assert_eq!(text.len(), ACK_LEN);
        write_at(&self.file, text.as_bytes(), 0)
    }
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

/// Reads `len` bytes of `file` from `offset` (fewer at its end).
pub(super) fn read_range(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = read_at(file, &mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match file.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse_back() {
        let dir = Path::new("/x");
        let p = segment_path(dir, 42);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "seg-00000000000000000042.jsonl");
        assert_eq!(segment_id(name), Some(42));
        assert_eq!(segment_id("seg-42.jsonl"), None);
        assert_eq!(segment_id("seg-00000000000000000042.ack"), None);
    }

    #[test]
    fn scan_cuts_torn_tails_and_honours_acks() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 1), b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        fs::write(ack_path(dir.path(), 1), b"00000000000000000008\n").unwrap();
        fs::write(segment_path(dir.path(), 2), b"{\"a\":3}\n{\"a\":").unwrap();
        // Fully acknowledged: deleted.
        fs::write(segment_path(dir.path(), 3), b"{\"a\":4}\n").unwrap();
        fs::write(ack_path(dir.path(), 3), b"00000000000000000008\n").unwrap();
        // An offset inside a line: ignored (everything sent again).
        fs::write(segment_path(dir.path(), 4), b"{\"a\":5}\n").unwrap();
        fs::write(ack_path(dir.path(), 4), b"00000000000000000003\n").unwrap();
        let s = scan(dir.path()).unwrap();
        assert_eq!(s.max_id, 4);
        assert_eq!(s.torn_tails, 1);
        let got: Vec<(u64, u64, u64, u64)> = s
            .segments
            .iter()
            .map(|f| (f.id, f.len, f.acked, f.pending_events))
            .collect();
        assert_eq!(got, vec![(1, 16, 8, 1), (2, 8, 0, 1), (4, 8, 0, 1)]);
        assert_eq!(
            fs::read(segment_path(dir.path(), 2)).unwrap(),
            b"{\"a\":3}\n"
        );
        assert!(!segment_path(dir.path(), 3).exists());
        assert!(!ack_path(dir.path(), 3).exists());
    }
}
