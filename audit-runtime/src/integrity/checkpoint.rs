//! Signed checkpoints: detect a deleted or replaced ledger tail.
//!
//! A hash chain detects edited, inserted and reordered events, but not a
//! tail cut off the end. A [`crate::sink::LedgerSink`] configured with a
//! [`CheckpointSigner`] therefore writes, every N events and when it closes,
//! a checkpoint signed with Ed25519 into a file beside the ledger. The
//! verifier needs only the public key ([`CheckpointVerifyingKey`]).
//!
//! # File format
//!
//! The checkpoints of `audit.jsonl` live in `audit.jsonl.checkpoints`
//! ([`checkpoint_path`]), one JSON object per line, in the order written:
//!
//! ```text
//! {"checkpoint":1,"count":1000,"last_event_hash":"<hex>","hash_alg":"sha256","timestamp":"2026-01-02T03:04:05.678Z","key_id":"<16 hex>","signature":"<128 hex>"}
//! ```
//!
//! * `checkpoint`: format version, `1`.
//! * `count`: number of events (non-blank lines) in the ledger, from its
//!   first line, up to and including the one whose hash is `last_event_hash`.
//! * `last_event_hash`: `integrity.event_hash` of event number `count`.
//! * `hash_alg`: that event's hash algorithm.
//! * `timestamp`: when the checkpoint was made (UTC, RFC 3339, milliseconds).
//! * `key_id`: lowercase hex of the first 8 bytes of SHA-256 of the 32-byte
//!   public key; informational (lets a reader pick the right key).
//! * `signature`: lowercase hex of the 64-byte Ed25519 signature over the
//!   UTF-8 bytes of
//!   `"phi-audit-checkpoint-v1\n" + count + "\n" + hash_alg + "\n" + last_event_hash + "\n" + timestamp + "\n"`
//!   (`count` in decimal without leading zeros).
//!
//! A checkpoint is written only after the ledger lines it covers were synced
//! to disk, so a crash never leaves a checkpoint ahead of its ledger.
//!
//! # Keys
//!
//! The private key is a 32-byte Ed25519 seed; the public key 32 bytes. Both
//! can be given as raw bytes or as 64 hex characters (a key file may end with
//! a newline). Create a seed with `head -c 32 /dev/urandom > ledger.key` and
//! print its public key with [`CheckpointSigner::verifying_key`].

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::integrity::to_hex;
use crate::model::event::HashAlg;

/// The checkpoint file of a ledger: `<ledger path>.checkpoints`.
pub fn checkpoint_path(ledger: &Path) -> PathBuf {
    let mut p = ledger.as_os_str().to_owned();
    p.push(".checkpoints");
    PathBuf::from(p)
}

/// A key or checkpoint that cannot be used. Never holds event content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointError(String);

impl CheckpointError {
    fn new(msg: impl Into<String>) -> Self {
        CheckpointError(msg.into())
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckpointError {}

/// Parses 32 key bytes given raw or as 64 hex characters (surrounding
/// whitespace allowed).
fn key_bytes(input: &[u8], what: &str) -> Result<[u8; 32], CheckpointError> {
    if let Ok(raw) = <[u8; 32]>::try_from(input) {
        return Ok(raw);
    }
    let text = input.trim_ascii();
    if text.len() != 64 {
        return Err(CheckpointError::new(format!(
            "{what} must be 32 raw bytes or 64 hex characters"
        )));
    }
    let v = from_hex(text).ok_or_else(|| {
        CheckpointError::new(format!(
            "{what} is not valid hex (expected 64 hex characters)"
        ))
    })?;
    <[u8; 32]>::try_from(v.as_slice())
        .map_err(|_| CheckpointError::new(format!("{what} must be 32 bytes")))
}

pub(crate) fn from_hex(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    fn nib(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    s.chunks(2)
        .map(|c| Some(nib(c[0])? << 4 | nib(c[1])?))
        .collect()
}

/// The private Ed25519 key that signs checkpoints. Its `Debug` output never
/// shows the key.
#[derive(Clone)]
pub struct CheckpointSigner(SigningKey);

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.verifying_key().key_id())
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// A signer from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> CheckpointSigner {
        CheckpointSigner(SigningKey::from_bytes(&seed))
    }

    /// A signer from key file contents: 32 raw bytes or 64 hex characters.
    pub fn from_key_bytes(input: &[u8]) -> Result<CheckpointSigner, CheckpointError> {
        key_bytes(input, "the checkpoint signing key").map(CheckpointSigner::from_seed)
    }

    /// The matching public key, for the verifier.
    pub fn verifying_key(&self) -> CheckpointVerifyingKey {
        CheckpointVerifyingKey(self.0.verifying_key())
    }

    /// Signs a checkpoint of `count` events ending in `last_event_hash`.
    pub fn sign(
        &self,
        count: u64,
        last_event_hash: &str,
        hash_alg: HashAlg,
        timestamp: &str,
    ) -> Checkpoint {
        let msg = signed_message(count, hash_alg.as_str(), last_event_hash, timestamp);
        let sig = self.0.sign(&msg);
        Checkpoint {
            checkpoint: 1,
            count,
            last_event_hash: last_event_hash.to_owned(),
            hash_alg: hash_alg.as_str().to_owned(),
            timestamp: timestamp.to_owned(),
            key_id: self.verifying_key().key_id(),
            signature: to_hex(&sig.to_bytes()),
        }
    }
}

/// The public Ed25519 key that verifies checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointVerifyingKey(VerifyingKey);

impl CheckpointVerifyingKey {
    /// A key from public key file contents: 32 raw bytes or 64 hex characters.
    pub fn from_key_bytes(input: &[u8]) -> Result<CheckpointVerifyingKey, CheckpointError> {
        let b = key_bytes(input, "the checkpoint public key")?;
        VerifyingKey::from_bytes(&b)
            .map(CheckpointVerifyingKey)
            .map_err(|_| {
                CheckpointError::new("the checkpoint public key is not a valid Ed25519 point")
            })
    }

    /// The key as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        to_hex(self.0.as_bytes())
    }

    /// Lowercase hex of the first 8 bytes of SHA-256 of the key.
    pub fn key_id(&self) -> String {
        let d = Sha256::digest(self.0.as_bytes());
        to_hex(&d[..8])
    }
}

fn signed_message(count: u64, alg: &str, hash: &str, ts: &str) -> Vec<u8> {
    format!("phi-audit-checkpoint-v1\n{count}\n{alg}\n{hash}\n{ts}\n").into_bytes()
}

/// One checkpoint line (see the [module docs](self) for the format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version, 1.
    pub checkpoint: u32,
    /// Number of events covered, from the ledger's first line.
    pub count: u64,
    /// Hash of event number `count`.
    pub last_event_hash: String,
    /// Hash algorithm of that event.
    pub hash_alg: String,
    /// When the checkpoint was made.
    pub timestamp: String,
    /// Identifier of the signing key.
    pub key_id: String,
    /// Hex Ed25519 signature.
    pub signature: String,
}

impl Checkpoint {
    /// Parses one line of a checkpoint file.
    pub fn parse(line: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let cp: Checkpoint = serde_json::from_slice(line)
            .map_err(|_| CheckpointError::new("the checkpoint line is not a checkpoint object"))?;
        if cp.checkpoint != 1 {
            return Err(CheckpointError::new(
                "unsupported checkpoint format version (expected 1)",
            ));
        }
        Ok(cp)
    }

    /// The checkpoint as one JSON line (with the trailing newline).
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Checks the signature with `key`.
    pub fn verify(&self, key: &CheckpointVerifyingKey) -> Result<(), CheckpointError> {
        let sig = from_hex(self.signature.as_bytes())
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| {
                CheckpointError::new("the checkpoint signature is not 128 hex characters")
            })?;
        let sig = Signature::from_bytes(&sig);
        let msg = signed_message(
            self.count,
            &self.hash_alg,
            &self.last_event_hash,
            &self.timestamp,
        );
        key.0.verify(&msg, &sig).map_err(|_| {
            CheckpointError::new("the checkpoint signature does not match the public key")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_roundtrip_and_tamper() {
        let s = CheckpointSigner::from_seed([7; 32]);
        let k = s.verifying_key();
        let cp = s.sign(3, "abc", HashAlg::Sha256, "2026-01-01T00:00:00.000Z");
        let back = Checkpoint::parse(&cp.to_line()).unwrap();
        assert_eq!(back, cp);
        back.verify(&k).unwrap();
        let mut bad = cp.clone();
        bad.count = 2;
        assert!(bad.verify(&k).is_err());
        let other = CheckpointSigner::from_seed([8; 32]).verifying_key();
        assert!(cp.verify(&other).is_err());
        assert!(!format!("{s:?}").contains(&to_hex(&[7; 32])));
    }

    #[test]
    fn key_parsing() {
        let s = CheckpointSigner::from_seed([1; 32]);
        let hex = s.verifying_key().to_hex();
        let k = CheckpointVerifyingKey::from_key_bytes(format!("{hex}\n").as_bytes()).unwrap();
        assert_eq!(k, s.verifying_key());
        assert!(CheckpointVerifyingKey::from_key_bytes(b"zz").is_err());
        assert!(CheckpointSigner::from_key_bytes(&[9u8; 32]).is_ok());
        assert!(CheckpointSigner::from_key_bytes(&[b'g'; 64]).is_err());
    }
}
