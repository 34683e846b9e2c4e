//! Verification of a rotated ledger: its files as one chain.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use crate::integrity::checkpoint::{Checkpoint, CheckpointVerifyingKey};
use crate::integrity::verify::{VerifyError, VerifyOptions, VerifyReport};

use super::{verify_inner, ProgressFn, BLOCK};

/// Where one file's lines are in a multi-file report's line numbers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileLines {
    /// The file.
    pub path: PathBuf,
    /// Line number (in the report) of its first line.
    pub first_line: u64,
    /// Its lines (an unterminated last line counts).
    pub lines: u64,
}

/// The anchor of a pruned ledger (`<ledger>.anchor`, written by
/// `phi-audit prune`): a signed checkpoint of the last removed event.
pub fn anchor_path(ledger: &Path) -> PathBuf {
    let mut s = ledger.as_os_str().to_owned();
    s.push(".anchor");
    PathBuf::from(s)
}

/// Reads the anchor file of `ledger`, if there is one. With `key`, its
/// signature must verify.
pub fn read_anchor(
    ledger: &Path,
    key: Option<&CheckpointVerifyingKey>,
) -> io::Result<Option<Checkpoint>> {
    let path = anchor_path(ledger);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let cp = Checkpoint::parse(text.trim_ascii()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the ledger's .anchor file is not a checkpoint",
        )
    })?;
    if let Some(k) = key {
        if cp.verify(k).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the ledger's .anchor file does not verify with the public key",
            ));
        }
    }
    Ok(Some(cp))
}

/// Verifies `files` in order as one chain (the first event of each file
/// links to the last event of the one before), with the checkpoint lines of
/// `checkpoints`, whose counts run over the whole sequence. `count_base`
/// events precede the first file (removed by pruning; `options.anchor` is
/// then the hash of the last of them): checkpoints at or below it are
/// skipped. A file that does not end with a newline is ended with one, so
/// its cut last line stays a line of its own.
pub fn verify_files<C: BufRead>(
    files: &[PathBuf],
    checkpoints: Option<C>,
    options: &VerifyOptions,
    count_base: u64,
    progress: Option<ProgressFn<'_>>,
) -> Result<(VerifyReport, Vec<FileLines>), VerifyError> {
    let mut reader = Chain {
        files: files.to_vec(),
        next: 0,
        cur: None,
        last: None,
        pending_nl: false,
        spans: Vec::new(),
        line: 1,
    };
    // Open every file first: a missing or unreadable one is an error.
    for f in files {
        File::open(f).map_err(VerifyError::Ledger)?;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = verify_inner(
        &mut reader,
        checkpoints,
        options,
        progress,
        threads,
        BLOCK,
        count_base,
    )?;
    reader.close_current();
    Ok((report, reader.spans))
}

struct Chain {
    files: Vec<PathBuf>,
    next: usize,
    cur: Option<File>,
    /// Last byte read from the current file.
    last: Option<u8>,
    pending_nl: bool,
    spans: Vec<FileLines>,
    /// Line number of the next line.
    line: u64,
}

impl Chain {
    fn close_current(&mut self) {
        if self.cur.take().is_some() {
            if let Some(s) = self.spans.last_mut() {
                if self.last.is_some_and(|b| b != b'\n') {
                    s.lines += 1;
                }
                self.line = s.first_line + s.lines;
            }
        }
    }
}

impl Read for Chain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pending_nl {
                self.pending_nl = false;
                buf[0] = b'\n';
                return Ok(1);
            }
            let Some(f) = self.cur.as_mut() else {
                let Some(p) = self.files.get(self.next) else {
                    return Ok(0);
                };
                self.cur = Some(File::open(p)?);
                self.spans.push(FileLines {
                    path: p.clone(),
                    first_line: self.line,
                    lines: 0,
                });
                self.next += 1;
                self.last = None;
                continue;
            };
            let n = f.read(buf)?;
            if n == 0 {
                let unterminated = self.last.is_some_and(|b| b != b'\n');
                self.close_current();
                if unterminated && self.next < self.files.len() {
                    self.pending_nl = true;
                }
                continue;
            }
            let nl = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            if let Some(s) = self.spans.last_mut() {
                s.lines += nl;
            }
            self.last = Some(buf[n - 1]);
            return Ok(n);
        }
    }
}
