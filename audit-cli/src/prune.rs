//! `phi-audit prune`: retention for rotated ledgers. Removes whole rotated
//! files whose newest event is older than the retention period, oldest
//! first and only as a prefix of the chain (never the active file), and
//! records the new start of the chain in a signed anchor (`<ledger>.anchor`:
//! a checkpoint of the last removed event and the count of events before
//! the first remaining one), so `phi-audit verify DIR` of the rest passes
//! without `--anchor`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use phi_audit_runtime::fast_verify::{anchor_path, read_anchor};
use phi_audit_runtime::sink::{ledger_sequence, ledgers_in};
use phi_audit_runtime::{CheckpointSigner, HashAlg, Timestamp};
use serde_json::Value;

use crate::{error, shown, EXIT_FAIL, EXIT_OK};

/// The shortest retention accepted without `--force`: six years (HIPAA's
/// documentation retention, 45 CFR 164.316(b)(2)).
const SIX_YEARS_DAYS: i64 = 6 * 365 + 1;

/// Parses `6y`, `72m` (30.44-day months), `2192d` into days.
fn parse_age(s: &str) -> Option<i64> {
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = num.parse().ok().filter(|&n| n > 0)?;
    match unit {
        "y" => n.checked_mul(36525).map(|d| d / 100),
        "m" => n.checked_mul(3044).map(|d| d / 100),
        "d" => Some(n),
        _ => None,
    }
}

/// What the last line of a ledger file says.
struct Tail {
    hash: String,
    alg: HashAlg,
    timestamp: Timestamp,
}

fn last_event(path: &Path) -> io::Result<Option<Tail>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let take = len.min(16 * 1024 * 1024);
    f.seek(SeekFrom::Start(len - take))?;
    let mut buf = Vec::with_capacity(take as usize);
    f.take(take).read_to_end(&mut buf)?;
    for line in buf.split(|&b| b == b'\n').rev() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return Ok(None);
        };
        let integ = v.get("integrity");
        let hash = integ
            .and_then(|i| i.get("event_hash"))
            .and_then(Value::as_str);
        let alg = match integ.and_then(|i| i.get("hash_alg")) {
            None => Some(HashAlg::Sha256),
            Some(a) => a.as_str().and_then(HashAlg::from_str),
        };
        let ts = v
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| Timestamp::parse_rfc3339(t).ok());
        return Ok(match (hash, alg, ts) {
            (Some(h), Some(alg), Some(timestamp)) => Some(Tail {
                hash: h.to_owned(),
                alg,
                timestamp,
            }),
            _ => None,
        });
    }
    Ok(None)
}

fn count_events(path: &Path) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut count, mut content) = (0u64, false);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                count += u64::from(content);
                content = false;
            } else if !b.is_ascii_whitespace() {
                content = true;
            }
        }
    }
    Ok(count + u64::from(content))
}

/// A prune interrupted after it removed files leaves its anchor in
/// `<ledger>.anchor.tmp`: install it when the first file left links to it,
/// else (interrupted before any removal) drop it.
fn finish_interrupted(base: &Path, first: Option<&PathBuf>) -> io::Result<()> {
    let anchor = anchor_path(base);
    let mut tmp = anchor.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let Ok(text) = fs::read(&tmp) else {
        return Ok(());
    };
    let cp = phi_audit_runtime::Checkpoint::parse(text.trim_ascii()).ok();
    let links = match (cp, first) {
        (Some(cp), Some(f)) => first_prev(f)?.is_some_and(|p| p == cp.last_event_hash),
        _ => false,
    };
    if links {
        fs::rename(&tmp, &anchor)?;
        eprintln!("phi-audit: installed the anchor of an interrupted prune");
    } else {
        fs::remove_file(&tmp)?;
    }
    Ok(())
}

/// `integrity.prev_event_hash` of the first event of `path`.
fn first_prev(path: &Path) -> io::Result<Option<String>> {
    let mut f = File::open(path)?;
    let mut buf = Vec::new();
    (&mut f).take(16 * 1024 * 1024).read_to_end(&mut buf)?;
    let line = buf
        .split(|&b| b == b'\n')
        .find(|l| !l.trim_ascii().is_empty())
        .unwrap_or(&[]);
    Ok(serde_json::from_slice::<Value>(line).ok().and_then(|v| {
        v.get("integrity")?
            .get("prev_event_hash")?
            .as_str()
            .map(str::to_owned)
    }))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Runs `phi-audit prune`.
pub(crate) fn run(
    older_than: &str,
    target: &str,
    signing_key: Option<PathBuf>,
    dry_run: bool,
    force: bool,
) -> u8 {
    let Some(days) = parse_age(older_than) else {
        return error("--older-than must be a number with y, m or d (`6y`, `72m`, `2192d`)");
    };
    if days < SIX_YEARS_DAYS && !force {
        return error(format!(
            "--older-than {older_than} is under six years, the retention HIPAA requires for audit \
             documentation; pass --force to prune anyway"
        ));
    }
    let signer =
        match (&signing_key, dry_run) {
            (Some(k), _) => {
                let bytes = match crate::open_regular(k).and_then(|(f, _)| {
                    let mut b = Vec::new();
                    f.take(4096)
                        .read_to_end(&mut b)
                        .map(|_| b)
                        .map_err(|e| format!("cannot read the signing key: {e}"))
                }) {
                    Ok(b) => b,
                    Err(e) => return error(e),
                };
                match CheckpointSigner::from_key_bytes(&bytes) {
                    Ok(s) => Some(s),
                    Err(e) => return error(format!("{}: {e}", shown(&k.to_string_lossy()))),
                }
            }
            (None, true) => None,
            (None, false) => return error(
                "prune writes a signed anchor for the remaining files: pass --signing-key FILE \
                 (or --dry-run)",
            ),
        };
    let p = Path::new(target);
    let base = if p.is_dir() {
        match ledgers_in(p) {
            Ok(b) if b.len() == 1 => b[0].clone(),
            Ok(b) if b.is_empty() => return error(format!("{} holds no ledger", shown(target))),
            Ok(_) => {
                return error(format!(
                    "{} holds several ledgers; give the ledger's path (DIR/audit.jsonl)",
                    shown(target)
                ))
            }
            Err(e) => return error(format!("cannot read {}: {e}", shown(target))),
        }
    } else {
        p.to_path_buf()
    };
    let files = match ledger_sequence(&base) {
        Ok(f) => f,
        Err(e) => return error(format!("cannot read {}: {e}", shown(target))),
    };
    if !dry_run {
        if let Err(e) = finish_interrupted(&base, files.first()) {
            return error(format!("cannot finish an interrupted prune: {e}"));
        }
    }
    let cutoff = Timestamp::from_unix_millis(
        Timestamp::now()
            .unix_millis()
            .saturating_sub(days.saturating_mul(86_400_000)),
    );
    let previous = match read_anchor(&base, signer.as_ref().map(|s| s.verifying_key()).as_ref()) {
        Ok(a) => a,
        Err(e) => return error(format!("cannot use the existing anchor: {e}")),
    };
    // The oldest rotated files, while every event in them is old enough.
    let mut remove: Vec<(PathBuf, Tail)> = Vec::new();
    for f in files.iter().filter(|f| **f != base) {
        match last_event(f) {
            Ok(Some(t)) if t.timestamp < cutoff => remove.push((f.clone(), t)),
            Ok(_) => break,
            Err(e) => return error(format!("cannot read {}: {e}", shown(&f.to_string_lossy()))),
        }
    }
    if remove.is_empty() {
        println!("nothing to prune: no rotated file holds only events older than {older_than}");
        return EXIT_OK;
    }
    let mut removed_events = 0u64;
    for (f, _) in &remove {
        match count_events(f) {
            Ok(n) => removed_events += n,
            Err(e) => return error(format!("cannot read {}: {e}", shown(&f.to_string_lossy()))),
        }
    }
    let base_count = previous.as_ref().map_or(0, |c| c.count) + removed_events;
    for (f, _) in &remove {
        println!(
            "{} {}",
            if dry_run { "would remove" } else { "removing" },
            shown(&f.to_string_lossy())
        );
    }
    let Some(last) = remove.last().map(|(_, t)| t) else {
        return EXIT_OK;
    };
    if dry_run {
        println!(
            "dry run: {} file(s), {removed_events} event(s); the chain would start after event {base_count}",
            remove.len()
        );
        return EXIT_OK;
    }
    let Some(signer) = signer else {
        return EXIT_FAIL;
    };
    // Anchor first (to a side file), then the removals, then the rename:
    // an interrupted prune leaves either the old state or an anchor that
    // matches the files left.
    let anchor = anchor_path(&base);
    let mut tmp = anchor.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let ts = Timestamp::now().to_string();
    let line = signer.sign(base_count, &last.hash, last.alg, &ts).to_line();
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&line).and_then(|_| f.sync_all()));
    if let Err(e) = written {
        return error(format!("cannot write the anchor: {e}"));
    }
    let dir = base
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    for (f, _) in &remove {
        if let Err(e) = fs::remove_file(f) {
            return error(format!(
                "cannot remove {}: {e} (the new anchor is in {}; rerun prune)",
                shown(&f.to_string_lossy()),
                shown(&tmp.to_string_lossy())
            ));
        }
    }
    sync_dir(&dir);
    if let Err(e) = fs::rename(&tmp, &anchor) {
        return error(format!("cannot install the anchor: {e}"));
    }
    sync_dir(&dir);
    println!(
        "pruned {} file(s), {removed_events} event(s); the chain now starts after event {base_count} (signed anchor in {})",
        remove.len(),
        shown(&anchor.to_string_lossy())
    );
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("6y"), Some(2191));
        assert!(parse_age("6y").unwrap() >= SIX_YEARS_DAYS);
        assert!(parse_age("5y").unwrap() < SIX_YEARS_DAYS);
        assert_eq!(parse_age("30d"), Some(30));
        assert_eq!(parse_age("y"), None);
        assert_eq!(parse_age("-1d"), None);
        assert_eq!(parse_age("6w"), None);
    }
}
