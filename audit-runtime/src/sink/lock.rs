//! One writer per file: the exclusive advisory lock the file and ledger
//! sinks hold on the file they append to.
//!
//! On unix the lock is `flock(LOCK_EX | LOCK_NB)` on the open file. The
//! kernel releases it when the last descriptor of that open file closes,
//! so a writer that is killed (SIGKILL included) never leaves a stale lock.
//! It is per open file, not per process: two sinks in one process on one
//! path exclude each other too.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The error inside the [`io::Error`] (kind [`io::ErrorKind::WouldBlock`])
/// or [`crate::sink::LedgerError::Locked`] returned when a file sink or
/// ledger is opened on a file another writer holds.
///
/// ```
/// use phi_audit::sink::{FileLocked, JsonlFileSink};
/// let dir = std::env::temp_dir().join(format!("phi-audit-lock-doc-{}", std::process::id()));
/// let first = JsonlFileSink::open(dir.join("audit.jsonl")).unwrap();
/// let err = JsonlFileSink::open(dir.join("audit.jsonl")).unwrap_err();
/// let locked = err.get_ref().and_then(|e| e.downcast_ref::<FileLocked>()).unwrap();
/// assert_eq!(locked.holder_pid, Some(std::process::id()));
/// # drop(first); let _ = std::fs::remove_dir_all(dir);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLocked {
    /// The file.
    pub path: PathBuf,
    /// The process holding the lock, where the system tells (Linux:
    /// `/proc/locks`).
    pub holder_pid: Option<u32>,
}

impl fmt::Display for FileLocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is locked by another writer", self.path.display())?;
        match self.holder_pid {
            Some(pid) if pid == std::process::id() => {
                write!(f, " in this process (pid {pid})")?;
            }
            Some(pid) => write!(f, " (process {pid})")?,
            None => f.write_str(" (another process)")?,
        }
        f.write_str(
            ": one writer per audit file; give each process (each replica) a file of its own, \
             e.g. with a {pid} or {hostname} placeholder in the path",
        )
    }
}

impl std::error::Error for FileLocked {}

/// `path` with `{pid}` replaced by this process's id and `{hostname}` by the
/// host's name (characters other than letters, digits, `.`, `-` and `_`
/// become `_`), so each process or replica can be given a file of its own
/// from one setting. Paths without them (or not UTF-8) are returned as
/// they are.
pub(crate) fn expand_placeholders(path: &Path) -> PathBuf {
    let Some(text) = path.to_str() else {
        return path.to_path_buf();
    };
    if !text.contains("{pid}") && !text.contains("{hostname}") {
        return path.to_path_buf();
    }
    let mut out = text.replace("{pid}", &std::process::id().to_string());
    if out.contains("{hostname}") {
        out = out.replace("{hostname}", &hostname());
    }
    PathBuf::from(out)
}

/// The host's name, safe as part of a file name (`localhost` if unknown).
fn hostname() -> String {
    #[cfg(unix)]
    let raw = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    #[cfg(not(unix))]
    let raw = std::env::var("COMPUTERNAME").unwrap_or_default();
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        "localhost".to_owned()
    } else {
        clean
    }
}

/// Opens `path` for appending (and reading), creating it with mode 0600 on
/// unix, and takes the exclusive write lock on it. Fails at once, with a
/// [`FileLocked`] inside an error of kind [`io::ErrorKind::WouldBlock`],
/// when another writer holds it.
///
/// The lock is checked to be on the file that is at `path` after it was
/// taken: a file renamed away meanwhile (a rotation by the previous holder)
/// is let go and `path` opened again.
pub(crate) fn open_locked(path: &Path) -> io::Result<File> {
    let mut attempts = 0;
    loop {
        let file = append_options(true).open(path)?;
        lock_exclusive(&file, path)?;
        if same_file_at(&file, path)? {
            return Ok(file);
        }
        attempts += 1;
        if attempts >= 100 {
            return Err(io::Error::other(format!(
                "{} keeps being replaced while it is opened; is another program rotating it?",
                path.display()
            )));
        }
    }
}

/// Creates `path` (it must not exist) for appending and takes the lock on
/// it: the fresh file of a rotation, locked before it takes the log's name.
pub(crate) fn create_locked(path: &Path) -> io::Result<File> {
    let file = append_options(false).create_new(true).open(path)?;
    lock_exclusive(&file, path)?;
    Ok(file)
}

fn append_options(create: bool) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.create(create).append(true).read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Whether `file` is the file at `path` now.
#[cfg(unix)]
fn same_file_at(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let mine = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(there) => Ok(mine.dev() == there.dev() && mine.ino() == there.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn same_file_at(_file: &File, _path: &Path) -> io::Result<bool> {
    Ok(true)
}

/// Takes the exclusive lock without waiting.
#[cfg(unix)]
pub(crate) fn lock_exclusive(file: &File, path: &Path) -> io::Result<()> {
    use rustix::fs::{flock, FlockOperation};
    loop {
        match flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    FileLocked {
                        path: path.to_path_buf(),
                        holder_pid: holder_pid(file),
                    },
                ))
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!(
                        "cannot lock {} for writing ({e}); the audit file must be on a file \
                         system with flock support so that only one process writes it",
                        path.display()
                    ),
                ))
            }
        }
    }
}

/// Elsewhere there is no lock: one writer per file is up to the deployment.
#[cfg(not(unix))]
pub(crate) fn lock_exclusive(_file: &File, _path: &Path) -> io::Result<()> {
    Ok(())
}

/// The pid holding an exclusive `flock` on `file`, from `/proc/locks`.
#[cfg(target_os = "linux")]
fn holder_pid(file: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let dev = meta.dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let mut by_inode = None;
    for line in text.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5390488 0 EOF"; waiters
        // have "->" after the number.
        let mut fields = line.split_whitespace().skip(1);
        let (Some(kind), Some(_), Some(mode), Some(pid), Some(id)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        if kind != "FLOCK" || mode != "WRITE" {
            continue;
        }
        let mut parts = id.split(':');
        let (Some(maj), Some(min), Some(ino)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ino.parse::<u64>().ok() != Some(meta.ino()) {
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let same_dev = u32::from_str_radix(maj, 16).ok() == Some(major)
            && u32::from_str_radix(min, 16).ok() == Some(minor);
        if same_dev && pid != 0 {
            return Some(pid);
        }
        if pid != 0 {
            by_inode.get_or_insert(pid);
        }
    }
    by_inode
}

#[cfg(all(unix, not(target_os = "linux")))]
fn holder_pid(_file: &File) -> Option<u32> {
    None
}
