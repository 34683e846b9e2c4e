//! Start-up work of the settings: reading key files and opening sinks. The
//! messages never contain a key, a file's contents or a URL's password.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::spec::{Delivery, SinkKind, SinkSpec};
use crate::integrity::checkpoint::CheckpointSigner;
use crate::model::phi::PseudonymKey;
use crate::sink::{
    JsonlFileSink, LedgerOptions, LedgerSink, NonBlocking, Sink, StdoutSink, TracingSink,
};

/// The keys read from their files: the pseudonym key, and the checkpoint
/// signer of each sink (in the order of the sinks).
pub(crate) struct Keys {
    pub(crate) pseudonym: Option<PseudonymKey>,
    pub(crate) checkpoint: Vec<Option<CheckpointSigner>>,
}

/// Largest key file read: keys are tens of bytes.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The bytes of a key file: a regular file of at most 64 KiB (never a pipe
/// or a device a read could hang on).
fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let f = File::open(path).map_err(|e| format!("cannot open the key file: {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read the key file: {e}"))?;
    if !meta.is_file() {
        return Err("the key file is not a regular file".into());
    }
    let mut bytes = Vec::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the key file: {e}"))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        wipe(&mut bytes);
        return Err("the key file is larger than 64 KiB: not a key".into());
    }
    Ok(bytes)
}

/// Overwrites a copy of key material before it is freed.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// The pseudonym key in the file at `path`: its bytes, less one trailing
/// newline (`\n` or `\r\n`), at least 16 of them.
pub(crate) fn pseudonym_key(path: &Path) -> Result<PseudonymKey, String> {
    let mut bytes = read_key_file(path)?;
    let mut len = bytes.len();
    if bytes.ends_with(b"\r\n") {
        len -= 2;
    } else if bytes.ends_with(b"\n") {
        len -= 1;
    }
    let key = PseudonymKey::new(&bytes[..len]);
    wipe(&mut bytes);
    key.map_err(|e| format!("the key in the key file is too weak: {e}"))
}

/// The checkpoint signing key in the file at `path` (32 raw bytes or 64 hex
/// characters).
pub(crate) fn checkpoint_signer(path: &Path) -> Result<CheckpointSigner, String> {
    let mut bytes = read_key_file(path).map_err(|m| format!("`checkpoint_key`: {m}"))?;
    let signer = CheckpointSigner::from_key_bytes(&bytes);
    wipe(&mut bytes);
    signer.map_err(|e| format!("`checkpoint_key`: {e}"))
}

/// Opens the sink `spec` names, behind its queue unless `?sync`.
pub(crate) fn open(
    spec: &SinkSpec,
    signer: Option<CheckpointSigner>,
) -> Result<Box<dyn Sink>, String> {
    let sink: Box<dyn Sink> = match &spec.kind {
        SinkKind::Stdout => Box::new(StdoutSink::new()),
        SinkKind::Tracing => Box::new(TracingSink::new()),
        SinkKind::Jsonl(j) => Box::new(
            JsonlFileSink::open_with(&j.path, j.options())
                .map_err(|e| format!("cannot open the file: {e}"))?,
        ),
        SinkKind::Ledger(l) => {
            let options = LedgerOptions {
                hash_alg: l.alg,
                fsync: l.fsync,
                signer,
                checkpoint_every: l.checkpoint_every,
                ..LedgerOptions::default()
            };
            Box::new(
                LedgerSink::open_with(&l.path, options)
                    .map_err(|e| format!("cannot open the ledger: {e}"))?,
            )
        }
        #[cfg(feature = "nats")]
        SinkKind::Nats(n) => {
            Box::new(crate::NatsSink::connect(n.url(), n.options()).map_err(|e| e.to_string())?)
        }
        #[cfg(feature = "postgres")]
        SinkKind::Postgres(p) => {
            let mut options = p.options();
            if spec.spool.is_some() {
                // The spool retries; a batch failing for 10 s comes back
                // to it (and shows in its stats), its events on disk.
                options = options.give_up_after(Some(std::time::Duration::from_secs(10)));
            }
            Box::new(
                crate::sink::PostgresSink::connect(p.url(), options).map_err(|e| e.to_string())?,
            )
        }
    };
    let sink: Box<dyn Sink> = match &spec.spool {
        None => sink,
        Some(spool) => Box::new(
            crate::sink::Spool::open_with(&spool.dir, sink, spool.options())
                .map_err(|e| format!("cannot open the spool directory: {e}"))?,
        ),
    };
    Ok(match spec.delivery {
        Delivery::Sync => sink,
        Delivery::Queued { capacity, full } => Box::new(
            NonBlocking::builder(sink)
                .capacity(capacity)
                .full_policy(full)
                .thread_name(format!("phi-audit-{}", spec.scheme()))
                .build(),
        ),
    })
}
