//! `validate` on all cores: lines are read in large blocks, each block is
//! split on line boundaries into one chunk per core, and each line's verdict
//! is computed on its chunk's thread; verdicts come back in file order, so
//! the output is the same as checking line by line. Each line is checked by
//! `schema::validate_json` (borrowed parsing, no JSON tree), whose verdicts
//! are `validate_value`'s.

use std::io::{self, Read};

use phi_audit_runtime::schema::JsonError;
use phi_audit_runtime::verify::MAX_LINE_BYTES;
use phi_audit_runtime::SchemaVersion;

const BLOCK: usize = 4 * 1024 * 1024;

/// What one non-blank line is.
pub(crate) enum Verdict {
    /// A valid event.
    Valid,
    /// Not an event at all (the reason).
    NotJson(&'static str),
    /// A JSON value that breaks the schema: (JSON pointer, message) pairs.
    Invalid(Vec<(String, String)>),
}

/// Verdicts of the non-blank lines of a reader, in order.
pub(crate) struct Verdicts<R> {
    input: R,
    schema: Option<SchemaVersion>,
    threads: usize,
    buf: Vec<u8>,
    eof: bool,
    skipping: bool,
    line: u64,
    ready: std::vec::IntoIter<(u64, Verdict)>,
}

impl<R: Read> Verdicts<R> {
    pub(crate) fn new(input: R, schema: Option<SchemaVersion>) -> Verdicts<R> {
        Verdicts {
            input,
            schema,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            buf: Vec::new(),
            eof: false,
            skipping: false,
            line: 0,
            ready: Vec::new().into_iter(),
        }
    }

    /// The next non-blank line's number and verdict.
    pub(crate) fn next_verdict(&mut self) -> io::Result<Option<(u64, Verdict)>> {
        loop {
            if let Some(v) = self.ready.next() {
                return Ok(Some(v));
            }
            if self.eof && self.buf.is_empty() && !self.skipping {
                return Ok(None);
            }
            let out = self.block()?;
            self.ready = out.into_iter();
        }
    }

    fn fill(&mut self, want: usize) -> io::Result<()> {
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        let n = loop {
            match self.input.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(old + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(())
    }

    /// Reads on and checks the next block's lines.
    fn block(&mut self) -> io::Result<Vec<(u64, Verdict)>> {
        while !self.eof && self.buf.len() < BLOCK {
            self.fill(BLOCK - self.buf.len())?;
        }
        let mut out = Vec::new();
        if self.skipping {
            match memchr::memchr(b'\n', &self.buf) {
                Some(i) => {
                    self.buf.drain(..=i);
                    self.skipping = false;
                    self.line += 1;
                    out.push((self.line, too_long()));
                }
                None => {
                    self.buf.clear();
                    if self.eof {
                        self.skipping = false;
                        self.line += 1;
                        out.push((self.line, too_long()));
                    }
                    return Ok(out);
                }
            }
        }
        let end = if self.eof {
            self.buf.len()
        } else {
            match memchr::memrchr(b'\n', &self.buf) {
                Some(i) => i + 1,
                None if self.buf.len() > MAX_LINE_BYTES => {
                    self.skipping = true;
                    self.buf.clear();
                    return Ok(out);
                }
                None => {
                    self.fill(BLOCK)?;
                    return Ok(out);
                }
            }
        };
        let data = &self.buf[..end];
        let mut bounds = vec![0usize];
        for k in 1..self.threads {
            let prev = *bounds.last().unwrap_or(&0);
            let target = (data.len() * k / self.threads).max(prev);
            let at = match memchr::memchr(b'\n', &data[target.min(data.len())..]) {
                Some(i) => target + i + 1,
                None => data.len(),
            };
            bounds.push(at);
        }
        bounds.push(data.len());
        let schema = self.schema;
        let parts: Vec<Vec<(u64, Verdict)>> = std::thread::scope(|s| {
            let handles: Vec<_> = bounds
                .windows(2)
                .map(|w| {
                    let chunk = &data[w[0]..w[1]];
                    s.spawn(move || check_chunk(chunk, schema))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        // Chunk-local line numbers become file line numbers.
        for (part, w) in parts.into_iter().zip(bounds.windows(2)) {
            let chunk = &data[w[0]..w[1]];
            for (local, v) in part {
                out.push((self.line + local, v));
            }
            self.line += lines_in(chunk);
        }
        self.buf.drain(..end);
        Ok(out)
    }
}

fn lines_in(chunk: &[u8]) -> u64 {
    let nl = memchr::memchr_iter(b'\n', chunk).count() as u64;
    nl + u64::from(chunk.last().is_some_and(|&b| b != b'\n'))
}

fn too_long() -> Verdict {
    Verdict::NotJson("line is longer than the 16 MiB limit: it cannot be an event")
}

/// Verdicts of the non-blank lines of `chunk`, numbered from 1.
fn check_chunk(chunk: &[u8], schema: Option<SchemaVersion>) -> Vec<(u64, Verdict)> {
    let mut out = Vec::new();
    let mut number = 0u64;
    let mut pos = 0;
    while pos < chunk.len() {
        let (end, next, terminated) = match memchr::memchr(b'\n', &chunk[pos..]) {
            Some(i) => (pos + i, pos + i + 1, true),
            None => (chunk.len(), chunk.len(), false),
        };
        number += 1;
        let raw = &chunk[pos..end];
        pos = next;
        if raw.len() > MAX_LINE_BYTES {
            out.push((number, too_long()));
            continue;
        }
        let text = raw.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let v = match phi_audit_runtime::schema::validate_json(text, schema) {
            Err(JsonError::Utf8) => Verdict::NotJson("not valid UTF-8"),
            Err(_) if !terminated => {
                Verdict::NotJson("unterminated last line that is not JSON (a write cut off)")
            }
            Err(_) => Verdict::NotJson("not valid JSON"),
            Ok(Ok(_)) => Verdict::Valid,
            Ok(Err(errs)) => Verdict::Invalid(
                errs.into_violations()
                    .into_iter()
                    .map(|e| (e.path, e.message))
                    .collect(),
            ),
        };
        out.push((number, v));
    }
    out
}
