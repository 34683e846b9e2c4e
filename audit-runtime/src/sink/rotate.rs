//! Rotated ledgers: names of the files a rotating [`LedgerSink`](super::LedgerSink)
//! leaves behind, and the sequence they form.
//!
//! A ledger at `audit.jsonl` that rotates keeps writing to `audit.jsonl`;
//! each full file is renamed, in order:
//!
//! * numbered ([`RotationNames::Numbered`]): `audit.jsonl.1`, `audit.jsonl.2`, ...
//! * dated ([`RotationNames::Dated`]): `audit.jsonl.2026-11-29.1`,
//!   `audit.jsonl.2026-11-29.2`, `audit.jsonl.2026-11-30.1`, ... (the UTC
//!   day of the events the file holds, then a number within the day).
//!
//! The chain continues across files: the first event of a file links to the
//! last event of the file before it. [`ledger_sequence`] lists the files in
//! chain order (rotated files, then the active file).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::time::timestamp::Timestamp;

/// How rotated files are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RotationNames {
    /// `<path>.<n>`, n = 1, 2, ...
    #[default]
    Numbered,
    /// `<path>.<YYYY-MM-DD>.<n>`: the UTC day of the file's events.
    Dated,
}

/// When a [`LedgerSink`](super::LedgerSink) rotates its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Rotate before a line would make the file larger than this (bytes).
    pub max_bytes: Option<u64>,
    /// Rotate when an event's UTC day is later than the day of the events
    /// in the file.
    pub daily: bool,
    /// How rotated files are named.
    pub names: RotationNames,
}

/// Position of a file in a rotated sequence (sorts in chain order).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Seq {
    /// A rotated file: (UTC day, or 0 for numbered names; number).
    Rotated(i64, u64),
    /// The active file.
    Active,
}

/// UTC day number (days since 1970-01-01) of `t`.
pub(crate) fn day_of(t: Timestamp) -> i64 {
    t.unix_millis().div_euclid(86_400_000)
}

/// `YYYY-MM-DD` of a day number.
pub(crate) fn day_name(day: i64) -> String {
    let b = Timestamp::from_unix_millis(day.saturating_mul(86_400_000)).rfc3339_bytes();
    String::from_utf8_lossy(&b[..10]).into_owned()
}

fn parse_day(s: &str) -> Option<i64> {
    let ts = Timestamp::parse_rfc3339(&format!("{s}T00:00:00.000Z")).ok()?;
    (s.len() == 10).then(|| day_of(ts))
}

/// Where `name` sits in the sequence of the ledger named `base`
/// (`None`: not one of its files).
pub(crate) fn seq_of(base: &str, name: &str) -> Option<Seq> {
    if name == base {
        return Some(Seq::Active);
    }
    let rest = name.strip_prefix(base)?.strip_prefix('.')?;
    if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
        return rest.parse().ok().map(|n| Seq::Rotated(0, n));
    }
    let (day, n) = rest.split_once('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Seq::Rotated(parse_day(day)?, n.parse().ok()?))
}

/// The files of the ledger at `path` in chain order: rotated files (by
/// number, or by day then number), then `path` itself if it exists.
pub fn ledger_sequence(path: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Err(io::Error::other(
            "the ledger's file name is not valid UTF-8",
        ));
    };
    let mut found: Vec<(Seq, PathBuf)> = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = seq_of(base, name) {
            if entry.file_type()?.is_file() {
                found.push((seq, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The ledgers in `dir`: base names (the active file's name) of every
/// sequence found, sorted. A base is named by its rotated files even when
/// its active file is gone; a file without rotated siblings counts when its
/// first non-blank byte is `{` (JSON lines).
pub fn ledgers_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_owned());
        }
    }
    names.sort();
    let mut bases: Vec<String> = Vec::new();
    for n in &names {
        // A rotated name: strip `.N` or `.DAY.N`.
        let candidates = rotated_base(n);
        if let Some(b) = candidates {
            if !bases.contains(&b) {
                bases.push(b);
            }
        }
    }
    for n in &names {
        let side = [".checkpoints", ".anchor", ".anchor.tmp"]
            .iter()
            .any(|s| n.ends_with(s))
            || n.contains(".torn-")
            || n.contains(".damaged-")
            || n.contains(".rotating-");
        if !side
            && rotated_base(n).is_none()
            && !bases.contains(n)
            && looks_like_jsonl(&dir.join(n))
        {
            bases.push(n.clone());
        }
    }
    bases.sort();
    Ok(bases.into_iter().map(|b| dir.join(b)).collect())
}

fn looks_like_jsonl(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 256];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    buf[..n].trim_ascii_start().first() == Some(&b'{')
}

fn rotated_base(name: &str) -> Option<String> {
    let (head, last) = name.rsplit_once('.')?;
    if last.is_empty() || !last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some((base, day)) = head.rsplit_once('.') {
        if parse_day(day).is_some() && !base.is_empty() {
            return Some(base.to_owned());
        }
    }
    (!head.is_empty()).then(|| head.to_owned())
}

/// The rotated name for a file of `path` holding events of `day`.
pub(crate) fn rotated_name(
    path: &Path,
    names: RotationNames,
    day: Option<i64>,
) -> io::Result<PathBuf> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Err(io::Error::other(
            "the ledger's file name is not valid UTF-8",
        ));
    };
    let want_day = match names {
        RotationNames::Numbered => 0,
        RotationNames::Dated => day.unwrap_or_else(|| day_of(Timestamp::now())),
    };
    let mut max = 0u64;
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        if let Some(Seq::Rotated(d, n)) = entry.file_name().to_str().and_then(|n| seq_of(base, n)) {
            if d == want_day {
                max = max.max(n);
            }
        }
    }
    let name = match names {
        RotationNames::Numbered => format!("{base}.{}", max + 1),
        RotationNames::Dated => format!("{base}.{}.{}", day_name(want_day), max + 1),
    };
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_chain_order() {
        let b = "audit.jsonl";
        let mut v = vec![
            seq_of(b, "audit.jsonl").unwrap(),
            seq_of(b, "audit.jsonl.10").unwrap(),
            seq_of(b, "audit.jsonl.2").unwrap(),
        ];
        v.sort();
        assert_eq!(
            v,
            vec![Seq::Rotated(0, 2), Seq::Rotated(0, 10), Seq::Active]
        );
        let d1 = seq_of(b, "audit.jsonl.2026-11-29.2").unwrap();
        let d2 = seq_of(b, "audit.jsonl.2026-11-30.1").unwrap();
        assert!(d1 < d2);
        assert_eq!(seq_of(b, "audit.jsonl.checkpoints"), None);
        assert_eq!(seq_of(b, "audit.jsonl.torn-123"), None);
        assert_eq!(seq_of(b, "audit.jsonl.2026-13-01.1"), None);
        assert_eq!(day_name(parse_day("2026-11-29").unwrap()), "2026-11-29");
        assert_eq!(
            rotated_base("audit.jsonl.2026-11-29.3").as_deref(),
            Some("audit.jsonl")
        );
        assert_eq!(
            rotated_base("audit.jsonl.3").as_deref(),
            Some("audit.jsonl")
        );
    }
}
