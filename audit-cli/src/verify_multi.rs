//! `verify` of a file or standard input on all cores
//! ([`phi_audit_runtime::fast_verify`]), with a progress bar on a terminal.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use phi_audit_runtime::checkpoint::checkpoint_path;
use phi_audit_runtime::fast_verify::{self, read_anchor};
use phi_audit_runtime::sink::{ledger_sequence, ledgers_in};
use phi_audit_runtime::verify::{VerifyOptions, VerifyReport};
use phi_audit_runtime::CheckpointVerifyingKey;

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

/// The files to verify as one chain, in chain order, and the ledger's base
/// path (for its `.checkpoints` and `.anchor` files): a directory holding
/// one rotated ledger, or several files (ordered by their rotation names
/// when they are one ledger's, else as given).
pub(crate) fn resolve_files(paths: &[String]) -> Result<(Vec<PathBuf>, PathBuf), String> {
    if paths.len() == 1 {
        let p = Path::new(&paths[0]);
        let meta = std::fs::metadata(p)
            .map_err(|e| format!("cannot open {}: {e}", crate::shown(&paths[0])))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", crate::shown(&paths[0])));
        }
        let bases =
            ledgers_in(p).map_err(|e| format!("cannot read {}: {e}", crate::shown(&paths[0])))?;
        let base = match bases.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(format!(
                    "{} is a directory holding no ledger files (JSON lines)",
                    crate::shown(&paths[0])
                ))
            }
            _ => {
                return Err(format!(
                    "{} is a directory holding {} ledgers; name the files of one (e.g. `phi-audit verify DIR/audit.jsonl.* DIR/audit.jsonl`)",
                    crate::shown(&paths[0]),
                    bases.len()
                ))
            }
        };
        let files = ledger_sequence(&base)
            .map_err(|e| format!("cannot read {}: {e}", crate::shown(&paths[0])))?;
        return Ok((files, base));
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        if p == "-" {
            return Err("`-` (standard input) verifies alone, not with other files".into());
        }
        let (_, _) = crate::open_regular(Path::new(p))?;
        files.push(PathBuf::from(p));
    }
    // One ledger's files (same base): chain order from the names.
    let base = files
        .iter()
        .find_map(|f| {
            let name = f.file_name()?.to_str()?;
            let dir = f.parent()?;
            ledgers_in_names(name).map(|b| dir.join(b))
        })
        .unwrap_or_else(|| files[files.len() - 1].clone());
    if let Ok(seq) = ledger_sequence(&base) {
        let canon = |p: &Path| std::fs::canonicalize(p).ok();
        let all: Vec<Option<PathBuf>> = seq.iter().map(|p| canon(p)).collect();
        let mut order: Vec<(usize, PathBuf)> = Vec::new();
        let mut complete = true;
        for f in &files {
            match all.iter().position(|c| c.is_some() && *c == canon(f)) {
                Some(i) => order.push((i, f.clone())),
                None => complete = false,
            }
        }
        if complete {
            order.sort_by_key(|(i, _)| *i);
            files = order.into_iter().map(|(_, f)| f).collect();
        }
    }
    Ok((files, base))
}

/// The base name of a rotated file name (`audit.jsonl.3` → `audit.jsonl`).
fn ledgers_in_names(name: &str) -> Option<String> {
    let (head, last) = name.rsplit_once('.')?;
    if last.is_empty() || !last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match head.rsplit_once('.') {
        Some((base, day))
            if day.len() == 10 && day.as_bytes()[4] == b'-' && day.as_bytes()[7] == b'-' =>
        {
            Some(base.to_owned())
        }
        _ => Some(head.to_owned()),
    }
}

/// `phi-audit verify` of several files or a directory: one chain.
pub(crate) fn run_files(
    paths: &[String],
    key: Option<CheckpointVerifyingKey>,
    checkpoints: Option<PathBuf>,
    anchor: Option<String>,
    format: crate::Format,
) -> u8 {
    let (files, base) = match resolve_files(paths) {
        Ok(f) => f,
        Err(e) => return crate::error(e),
    };
    if files.is_empty() {
        return crate::error("no ledger files to verify");
    }
    // A pruned ledger starts at its signed anchor.
    let (anchor, count_base) = match (&anchor, read_anchor(&base, key.as_ref())) {
        (Some(a), _) => (Some(a.clone()), 0),
        (None, Ok(Some(cp))) => (Some(cp.last_event_hash.clone()), cp.count),
        (None, Ok(None)) => (None, 0),
        (None, Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
            eprintln!("phi-audit: {e}");
            return crate::EXIT_FAIL;
        }
        (None, Err(e)) => return crate::error(format!("cannot read the anchor file: {e}")),
    };
    let cp_reader = if key.is_some() {
        let p = checkpoints
            .clone()
            .unwrap_or_else(|| checkpoint_path(&base));
        match crate::open_regular(&p) {
            Ok((f, _)) => Some(BufReader::new(f)),
            Err(_) if checkpoints.is_none() && !p.exists() => None,
            Err(e) => return crate::error(format!("checkpoint file: {e}")),
        }
    } else {
        None
    };
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let opts = VerifyOptions::new()
        .anchor(anchor)
        .public_key(key)
        .source(base.to_string_lossy().into_owned());
    let bar = (io::stderr().is_terminal() && total >= PROGRESS_MIN).then(|| bar(total));
    let mut tick = |done: u64| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    };
    let r = fast_verify::verify_files(&files, cp_reader, &opts, count_base, Some(&mut tick));
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let (report, spans) = match r {
        Ok(r) => r,
        Err(e) => return crate::error(e),
    };
    match format {
        crate::Format::Json => {
            let mut v = match serde_json::to_value(&report) {
                Ok(v) => v,
                Err(e) => return crate::error(e),
            };
            v["files"] = serde_json::json!(spans
                .iter()
                .map(|s| serde_json::json!({
                    "path": s.path.to_string_lossy(),
                    "first_line": s.first_line,
                    "lines": s.lines,
                }))
                .collect::<Vec<_>>());
            v["events_before_first_file"] = serde_json::json!(count_base);
            crate::print_json(&v);
        }
        crate::Format::Text => {
            let mut text = crate::text_report(&report);
            text.push_str(&format!("files ({}), in chain order:\n", spans.len()));
            for s in &spans {
                text.push_str(&format!(
                    "  lines {}..{}: {}\n",
                    s.first_line,
                    s.first_line + s.lines.max(1) - 1,
                    crate::shown(&s.path.to_string_lossy())
                ));
            }
            if count_base > 0 {
                text.push_str(&format!(
                    "{count_base} earlier event(s) were pruned; the chain starts at the signed anchor\n"
                ));
            }
            crate::print(text.trim_end());
        }
    }
    if report.passed() {
        crate::EXIT_OK
    } else {
        crate::EXIT_FAIL
    }
}
