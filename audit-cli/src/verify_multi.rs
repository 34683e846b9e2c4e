//! `verify` of a file or standard input on all cores
//! ([`audit_runtime::fast_verify`]), with a progress bar on a terminal.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal};
use std::path::Path;

use audit_runtime::fast_verify;
use audit_runtime::verify::{VerifyOptions, VerifyReport};
use indicatif::{ProgressBar, ProgressStyle};

/// Files smaller than this get no progress bar.
const PROGRESS_MIN: u64 = 64 * 1024 * 1024;

/// Verifies `path` (a regular file, or `-` for standard input) with the
/// checkpoint lines of `cps`.
pub(crate) fn verify_input(
    path: &str,
    cps: Option<BufReader<File>>,
    opts: &VerifyOptions,
) -> Result<VerifyReport, String> {
    if path == "-" {
        return fast_verify::verify_read(io::stdin().lock(), cps, opts, None)
            .map_err(|e| format!("-: {e}"));
    }
    let (f, len) = crate::open_regular(Path::new(path))?;
    let bar = (io::stderr().is_terminal() && len >= PROGRESS_MIN).then(|| bar(len));
    let mut tick = |done: u64| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    };
    let r = fast_verify::verify_read(f, cps, opts, Some(&mut tick));
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    r.map_err(|e| format!("{}: {e}", crate::shown(path)))
}

fn bar(len: u64) -> ProgressBar {
    let b = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "verifying {bar:40} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    b
}
