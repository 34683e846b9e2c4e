//! The JetStream stream audit events are stored in, created on first use.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::NatsError;

/// A JetStream stream for audit events: subjects `<prefix>.>`, file
/// storage, retention by limits (nothing is removed when consumed), a
/// number of replicas and a duplicate window (publishes repeating a
/// `Nats-Msg-Id` seen within it are acknowledged as duplicates and not
/// stored again).
#[derive(Clone, Debug)]
pub struct NatsStream {
    name: String,
    replicas: usize,
    duplicate_window: Duration,
    max_age: Duration,
}

impl NatsStream {
    /// A stream named `name` (letters, digits, `-` and `_`), one replica, a
    /// 2 minute duplicate window, no age limit.
    pub fn new(name: impl Into<String>) -> NatsStream {
        NatsStream {
            name: name.into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::ZERO,
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replicas (1 to 5; 3 in a cluster of three keeps every
    /// acknowledged event through the loss of one server).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// How long JetStream remembers message ids to drop repeated publishes
    /// (default 2 minutes).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Remove messages older than this (default: never; `Duration::ZERO`).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    fn check(&self, prefix: &str) -> Result<(), NatsError> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 255
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(NatsError::InvalidOption(
                "a stream name is 1-255 characters of letters, digits, `-` and `_`".into(),
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(NatsError::InvalidOption(
                "replicas must be between 1 and 5".into(),
            ));
        }
        if !super::valid_prefix(prefix) {
            return Err(NatsError::InvalidOption(
                "the prefix must be one or more subject tokens separated by `.`, without `*`, `>` or spaces".into(),
            ));
        }
        Ok(())
    }

    /// Returns the stream, creating it when absent. An existing stream must
    /// take the subjects `<prefix>.>` (its other settings are left as they
    /// are).
    pub async fn ensure(
        &self,
        js: &jetstream::Context,
        prefix: &str,
    ) -> Result<stream::Stream, NatsError> {
        self.check(prefix)?;
        let subject = format!("{prefix}.>");
        let config = stream::Config {
            name: self.name.clone(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            ..Default::default()
        };
        let mut s = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| NatsError::Stream(format!("cannot create or open the stream: {e}")))?;
        let info = s
            .info()
            .await
            .map_err(|e| NatsError::Stream(format!("cannot read the stream's settings: {e}")))?;
        if !info.config.subjects.contains(&subject) {
            return Err(NatsError::Stream(format!(
                "the stream exists without the subjects `{subject}`; add them or choose another stream"
            )));
        }
        Ok(s)
    }
}
