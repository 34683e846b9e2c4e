//! A one-line progress indicator on stderr for large inputs (only when
//! stderr is a terminal; the caller decides).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static SHOWN: AtomicBool = AtomicBool::new(false);

/// Wraps a reader and redraws `read N of M MiB (P%)` at most 5 times a second.
pub struct Progress<R> {
    inner: R,
    total: u64,
    done: u64,
    last: Instant,
}

impl<R: Read> Progress<R> {
    pub fn new(inner: R, total: u64) -> Progress<R> {
        Progress {
            inner,
            total: total.max(1),
            done: 0,
            last: Instant::now(),
        }
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.last.elapsed() >= Duration::from_millis(200) {
            self.last = Instant::now();
            SHOWN.store(true, Ordering::Relaxed);
            let pct = self.done.saturating_mul(100) / self.total;
            let mut e = io::stderr().lock();
            let _ = write!(
                e,
                "\r\x1b[2Kverifying: {} of {} MiB ({pct}%)",
                self.done >> 20,
                self.total >> 20
            );
            let _ = e.flush();
        }
        Ok(n)
    }
}

/// Erases the progress line if one was drawn.
pub fn clear() {
    if SHOWN.swap(false, Ordering::Relaxed) {
        let mut e = io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K");
        let _ = e.flush();
    }
}
