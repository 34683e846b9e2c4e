//! Counters of what happened to events: every loss is visible here.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one dispatcher (lock-free; shared by all threads).
#[derive(Debug, Default)]
pub struct Stats {
    emitted: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    validation_failures: AtomicU64,
    metadata_dropped: AtomicU64,
    truncated: AtomicU64,
    empty_fields: AtomicU64,
    chars_replaced: AtomicU64,
    invalid_fields: AtomicU64,
    unkeyed_pseudonyms: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Events the sink accepted. For a non-blocking sink this means queued;
    /// its own stats tell how many reached the medium.
    pub emitted: u64,
    /// Events that did not reach the sink's medium: refused with an error
    /// (I/O, closed, queue full) when handed over, or accepted and lost
    /// later (`sink_lost` of them).
    pub failed: u64,
    /// Events not handed to any sink: rejected by validation with the drop
    /// policy, or using 2.0-only data while targeting 1.x without downgrade.
    pub dropped: u64,
    /// Events that failed validate-on-emit (dropped or emitted anyway, per policy).
    pub validation_failures: u64,
    /// Metadata entries removed: keys outside the allowlist, non-finite floats,
    /// entries over the 20-key limit.
    pub metadata_dropped: u64,
    /// Strings cut to a configured or schema length limit (on a character
    /// boundary), and lists (roles) cut to the schema's size.
    pub truncated: u64,
    /// Empty strings where the schema needs at least one character: the
    /// field was left out (an identifier, an organization, a role, a
    /// correlation id, a metadata entry), or, where the field is required,
    /// given a fixed placeholder (`Error` for an error type, `Unknown` for a
    /// resource type). An actor without an id gives way to the context's
    /// or the default actor.
    pub empty_fields: u64,
    /// Strings in which characters no event holds were replaced by U+FFFD:
    /// control characters (C0, DEL, C1), bidirectional-formatting
    /// characters, and the Unicode line and paragraph separators.
    pub chars_replaced: u64,
    /// Values their format or range rejects, left out: a client IP that is
    /// not an IP address, a status code outside 100..=599, a delegation's
    /// depth out of range or without its parent, an integrity block handed
    /// in incomplete.
    pub invalid_fields: u64,
    /// `pseudonym(..)` values left out because the config has no pseudonym key.
    pub unkeyed_pseudonyms: u64,
    /// Events the sink accepted and lost afterwards (a non-blocking sink's
    /// worker could not write them; a buffered batch failed), from
    /// [`crate::Sink::lost_events`]. Included in `failed`. Filled by
    /// [`crate::Dispatch::stats`].
    pub sink_lost: u64,
}

impl Stats {
    /// A copy of the current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            emitted: self.emitted.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            validation_failures: self.validation_failures.load(Ordering::Relaxed),
            metadata_dropped: self.metadata_dropped.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            empty_fields: self.empty_fields.load(Ordering::Relaxed),
            chars_replaced: self.chars_replaced.load(Ordering::Relaxed),
            invalid_fields: self.invalid_fields.load(Ordering::Relaxed),
            unkeyed_pseudonyms: self.unkeyed_pseudonyms.load(Ordering::Relaxed),
            sink_lost: 0,
        }
    }

    pub(crate) fn add_emitted(&self) {
        self.emitted.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_validation_failure(&self) {
        self.validation_failures.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_metadata_dropped(&self, n: u64) {
        if n > 0 {
            self.metadata_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
    pub(crate) fn add_unkeyed_pseudonym(&self) {
        self.unkeyed_pseudonyms.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds the corrections of one event.
    pub(crate) fn add_fixes(&self, f: crate::model::clamp::Fixes) {
        for (counter, n) in [
            (&self.empty_fields, f.empty),
            (&self.truncated, f.truncated),
            (&self.chars_replaced, f.replaced),
            (&self.invalid_fields, f.invalid),
        ] {
            if n > 0 {
                counter.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
    }
}

static UNDISPATCHED: AtomicU64 = AtomicU64::new(0);

/// Events emitted while no dispatcher was installed (neither a scoped one nor
/// the global one). They were not written anywhere.
pub fn undispatched() -> u64 {
    UNDISPATCHED.load(Ordering::Relaxed)
}

pub(crate) fn add_undispatched() {
    UNDISPATCHED.fetch_add(1, Ordering::Relaxed);
}
