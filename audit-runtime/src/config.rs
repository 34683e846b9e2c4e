//! [`Config`]: how a dispatcher shapes events. Immutable once built; every
//! mistake is reported by [`ConfigBuilder::build`], never at emit time.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use crate::model::event::{Actor, SchemaVersion, Service};
use crate::model::limits::{ID, MESSAGE, META_KEY, NAME, ROLE, ROLES, SERVICE_TAG};
use crate::model::phi::PseudonymKey;
use crate::schema::DowngradePolicy;
use crate::time::timestamp::Timestamp;
use crate::util::text::Text;

/// What to do with an event that fails validate-on-emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidationPolicy {
    /// Drop it (counted as dropped and as a validation failure).
    Drop,
    /// Emit it anyway (counted as a validation failure).
    EmitAnyway,
}

/// What to do when the sink returns an error. Either way it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SinkFailurePolicy {
    /// Count it only.
    Ignore,
    /// Also log it through `tracing` at target [`INTERNAL_TARGET`] (the
    /// default): the number of failed events, the running total and the
    /// error's kind and description, never event content; at most one
    /// report a second, summing the failures in between.
    #[default]
    Report,
}

/// What an error's `Display` contributes to `outcome.error_message` for
/// error types that do not implement [`AuditError`](crate::AuditError).
///
/// An error's `Display` is the one place where an audited function's inputs
/// come back out unseen by the compile-time check: `NotFound(format!("no
/// chart for {name}"))`, a database error quoting a row, a `String` error.
/// A sanitizer knows patterns (SSNs, dates, e-mail addresses), not names or
/// diagnoses, so no sanitizer makes such a message safe. By default the
/// `Display` is therefore never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ErrorMessages {
    /// The default: the `Display` is never read. `error_type` is the error
    /// type's short name (for `std::io::Error`, its `ErrorKind`), and
    /// `error_message` the same fixed, PHI-free text (for `io::Error`, the
    /// kind's description, such as `entity not found`).
    #[default]
    TypeOnly,
    /// **A PHI risk; opt in only for error types whose messages you know to
    /// be free of PHI.** The sanitized `Display` (see [`crate::sanitize`]):
    /// patterns such as SSNs, dates and e-mail addresses become markers,
    /// but names, diagnoses and free text pass through.
    ///
    /// Even so, in a function with a `#[phi]` or `Phi<T>` parameter the
    /// `Display` is never read: only an [`AuditError`](crate::AuditError)
    /// implementation decides the message there.
    Sanitized,
}

/// The `tracing` target of the crate's own diagnostics (never event content).
pub const INTERNAL_TARGET: &str = "phi_audit::internal";

type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;
type IdSource = Arc<dyn Fn() -> Uuid + Send + Sync>;

/// Dispatcher configuration. Build with [`Config::new`].
///
/// ```
/// use phi_audit::{Actor, Config, SchemaVersion};
/// let config = Config::new("chart-service")
///     .environment("prod")
///     .version("1.4.2")
///     .default_actor(Actor::service("chart-service"))
///     .metadata_allowlist(["reason", "page"])
///     .target(SchemaVersion::V1_1)
///     .build()
///     .unwrap();
/// assert_eq!(config.service().name, "chart-service");
/// assert!(Config::new("").build().is_err());
/// ```
#[derive(Clone)]
pub struct Config(Arc<Inner>);

// A config is immutable; the clock and id source are plain functions.
impl std::panic::RefUnwindSafe for Config {}
impl std::panic::UnwindSafe for Config {}

// Aligned so the config, read on every call by callers and a sink's worker,
// shares no cache line with data another thread writes.
#[repr(align(128))]
pub(crate) struct Inner {
    pub(crate) service: Service,
    pub(crate) default_actor: Actor,
    pub(crate) allowlist: Option<BTreeSet<Text>>,
    pub(crate) max_metadata_string: usize,
    pub(crate) sanitize_errors: bool,
    pub(crate) error_messages: ErrorMessages,
    pub(crate) max_error_message: usize,
    pub(crate) target: SchemaVersion,
    pub(crate) downgrade: DowngradePolicy,
    pub(crate) validate: Option<ValidationPolicy>,
    pub(crate) sink_failure: SinkFailurePolicy,
    pub(crate) clock: Option<Clock>,
    pub(crate) ids: Option<IdSource>,
    pub(crate) pseudonym_key: Option<PseudonymKey>,
    /// The service and default actor as JSON, rendered by `build`.
    pub(crate) fragments: Fragments,
}

/// Parts of an event's JSON that come from the config, rendered once.
#[derive(Clone, Default)]
pub(crate) struct Fragments {
    /// `,"service":{..}`
    pub(crate) service: Box<[u8]>,
    /// `,"actor":{..}` of the default actor.
    pub(crate) default_actor: Box<[u8]>,
}

impl Clone for Inner {
    fn clone(&self) -> Self {
        Inner {
            service: self.service.clone(),
            default_actor: self.default_actor.clone(),
            allowlist: self.allowlist.clone(),
            max_metadata_string: self.max_metadata_string,
            sanitize_errors: self.sanitize_errors,
            error_messages: self.error_messages,
            max_error_message: self.max_error_message,
            target: self.target,
            downgrade: self.downgrade,
            validate: self.validate,
            sink_failure: self.sink_failure,
            clock: self.clock.clone(),
            ids: self.ids.clone(),
            pseudonym_key: self.pseudonym_key.clone(),
            fragments: self.fragments.clone(),
        }
    }
}

/// Builds a [`Config`]; see [`Config::new`].
#[derive(Clone)]
pub struct ConfigBuilder {
    inner: Inner,
}

/// The configuration mistakes [`ConfigBuilder::build`] found: every one of
/// them, not only the first, each with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Never empty.
    problems: Vec<(&'static str, String)>,
}

impl ConfigError {
    fn new(field: &'static str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            problems: vec![(field, problem.into())],
        }
    }

    /// The config field at fault (the first, when there are several).
    pub fn field(&self) -> &'static str {
        self.problems[0].0
    }

    /// What is wrong with it.
    pub(crate) fn problem(&self) -> &str {
        &self.problems[0].1
    }

    /// Every mistake found, as (field, what is wrong), in the order the
    /// fields are checked.
    pub fn problems(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.problems.iter().map(|(f, p)| (*f, p.as_str()))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid phi-audit config")?;
        for (i, (field, problem)) in self.problems.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}`{field}`: {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Starts a configuration for the service called `service_name`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(service_name: impl Into<Text>) -> ConfigBuilder {
        let name = service_name.into();
        ConfigBuilder {
            inner: Inner {
                default_actor: Actor::service(name.clone()),
                service: Service {
                    name,
                    environment: None,
                    version: None,
                },
                allowlist: None,
                max_metadata_string: 200,
                sanitize_errors: true,
                error_messages: ErrorMessages::TypeOnly,
                max_error_message: 200,
                target: SchemaVersion::V1_1,
                downgrade: DowngradePolicy::Reject,
                validate: None,
                sink_failure: SinkFailurePolicy::Report,
                clock: None,
                ids: None,
                pseudonym_key: None,
                fragments: Fragments::default(),
            },
        }
    }

    /// The service block every event carries.
    pub fn service(&self) -> &Service {
        &self.0.service
    }

    /// The actor used when neither the call nor the context names one.
    pub fn default_actor(&self) -> &Actor {
        &self.0.default_actor
    }

    /// The target schema version.
    pub fn target(&self) -> SchemaVersion {
        self.0.target
    }

    /// The pseudonym key, if configured.
    pub fn pseudonym_key(&self) -> Option<&PseudonymKey> {
        self.0.pseudonym_key.as_ref()
    }

    /// The metadata allowlist, if configured.
    pub fn metadata_allowlist(&self) -> Option<impl Iterator<Item = &str>> {
        self.0
            .allowlist
            .as_ref()
            .map(|s| s.iter().map(|t| t.as_str()))
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.0
    }

    /// The current time from the configured clock.
    pub fn now(&self) -> Timestamp {
        match &self.0.clock {
            Some(c) => c(),
            None => Timestamp::now(),
        }
    }

    /// A new event id from the configured source.
    pub fn new_event_id(&self) -> Uuid {
        match &self.0.ids {
            Some(f) => f(),
            None => crate::util::ids::fast_v4(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.0;
        f.debug_struct("Config")
            .field("service", &i.service)
            .field("default_actor", &i.default_actor.subject_id)
            .field("metadata_allowlist", &i.allowlist)
            .field("max_metadata_string", &i.max_metadata_string)
            .field("sanitize_errors", &i.sanitize_errors)
            .field("error_messages", &i.error_messages)
            .field("max_error_message", &i.max_error_message)
            .field("target", &i.target)
            .field("downgrade", &i.downgrade)
            .field("validate", &i.validate)
            .field("sink_failure", &i.sink_failure)
            .field("custom_clock", &i.clock.is_some())
            .field("custom_ids", &i.ids.is_some())
            .field("pseudonym_key", &i.pseudonym_key)
            .finish()
    }
}

impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigBuilder")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

impl ConfigBuilder {
    /// Deployment environment (`prod`, `staging`), at most 64 characters.
    pub fn environment(mut self, env: impl Into<Text>) -> Self {
        self.inner.service.environment = Some(env.into());
        self
    }

    /// Service version, at most 64 characters.
    pub fn version(mut self, version: impl Into<Text>) -> Self {
        self.inner.service.version = Some(version.into());
        self
    }

    /// The actor for calls with no actor of their own and no context.
    /// Defaults to `Actor::service(service_name)`.
    pub fn default_actor(mut self, actor: Actor) -> Self {
        self.inner.default_actor = actor;
        self
    }

    /// Only these metadata keys are kept; others are dropped and counted.
    /// Without an allowlist every key is kept (keys named in `#[audited]` are
    /// checked at compile time).
    pub fn metadata_allowlist<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Text>,
    {
        self.inner.allowlist = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// Longest metadata string kept, in characters (longer ones are cut and
    /// counted). Default 200, as in the reference implementation.
    pub fn max_metadata_string_len(mut self, chars: usize) -> Self {
        self.inner.max_metadata_string = chars;
        self
    }

    /// Sanitize error messages (default on). Turning it off is only for
    /// error types whose messages are known to be PHI-free.
    pub fn sanitize_errors(mut self, on: bool) -> Self {
        self.inner.sanitize_errors = on;
        self
    }

    /// What `Display` contributes for errors without `AuditError`. Default
    /// [`ErrorMessages::TypeOnly`]: never read. [`ErrorMessages::Sanitized`]
    /// is a PHI risk (see there).
    pub fn error_messages(mut self, policy: ErrorMessages) -> Self {
        self.inner.error_messages = policy;
        self
    }

    /// Longest error message kept, in characters (1..=500). Default 200, as
    /// in the reference implementation.
    pub fn max_error_message_len(mut self, chars: usize) -> Self {
        self.inner.max_error_message = chars;
        self
    }

    /// The schema version events are written as. Default 1.1.
    pub fn target(mut self, version: SchemaVersion) -> Self {
        self.inner.target = version;
        self
    }

    /// What to do with 2.0-only data when targeting 1.x. Default: reject
    /// (the event is dropped and counted).
    pub fn downgrade(mut self, policy: DowngradePolicy) -> Self {
        self.inner.downgrade = policy;
        self
    }

    /// Validate every event against the target schema before the sink.
    pub fn validate_on_emit(mut self, policy: ValidationPolicy) -> Self {
        self.inner.validate = Some(policy);
        self
    }

    /// What to do when the sink fails. Default: count and report
    /// ([`SinkFailurePolicy::Report`]).
    pub fn sink_failure(mut self, policy: SinkFailurePolicy) -> Self {
        self.inner.sink_failure = policy;
        self
    }

    /// A clock for timestamps (tests).
    pub fn clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.inner.clock = Some(Arc::new(clock));
        self
    }

    /// A source of event ids (tests). It is called where the event is
    /// written: for an audited call behind a [`crate::NonBlocking`] sink,
    /// on its worker thread.
    pub fn id_source(mut self, ids: impl Fn() -> Uuid + Send + Sync + 'static) -> Self {
        self.inner.ids = Some(Arc::new(ids));
        self
    }

    /// The key for keyed pseudonyms (`pseudonym(..)` in `#[audited]`).
    pub fn pseudonym_key(mut self, key: PseudonymKey) -> Self {
        self.inner.pseudonym_key = Some(key);
        self
    }

    /// Checks every setting and freezes the configuration. The error lists
    /// every mistake found, not only the first.
    ///
    /// ```
    /// use phi_audit::Config;
    ///
    /// let err = Config::new("chart-service")
    ///     .environment("e".repeat(65))
    ///     .version("v".repeat(65))
    ///     .build()
    ///     .unwrap_err();
    /// let fields: Vec<&str> = err.problems().map(|(field, _)| field).collect();
    /// assert_eq!(fields, ["service.environment", "service.version"]);
    /// assert_eq!(err.field(), "service.environment");
    /// ```
    pub fn build(self) -> Result<Config, ConfigError> {
        let i = &self.inner;
        // Every check runs: the error lists each mistake found.
        let mut errs: Vec<ConfigError> = Vec::new();
        let n = i.service.name.char_len();
        if n == 0 || i.service.name.trim().is_empty() {
            errs.push(ConfigError::new("service.name", "must not be empty"));
        }
        if n > NAME {
            errs.push(ConfigError::new(
                "service.name",
                format!("must be at most {NAME} characters (has {n})"),
            ));
        }
        for (field, v) in [
            ("service.environment", &i.service.environment),
            ("service.version", &i.service.version),
        ] {
            if let Some(v) = v {
                if v.char_len() > SERVICE_TAG {
                    errs.push(ConfigError::new(
                        field,
                        format!(
                            "must be at most {SERVICE_TAG} characters (has {})",
                            v.char_len()
                        ),
                    ));
                }
            }
        }
        let bad = "must not hold control, bidirectional-formatting or line-separator characters";
        for (field, v) in [
            ("service.name", Some(&i.service.name)),
            ("service.environment", i.service.environment.as_ref()),
            ("service.version", i.service.version.as_ref()),
            (
                "default_actor.subject_id",
                Some(&i.default_actor.subject_id),
            ),
            ("default_actor.org_id", i.default_actor.org_id.as_ref()),
            (
                "default_actor.owner_org_id",
                i.default_actor.owner_org_id.as_ref(),
            ),
        ] {
            if v.is_some_and(|v| crate::model::clamp::has_bad_chars(v)) {
                errs.push(ConfigError::new(field, bad));
            }
        }
        let a = &i.default_actor;
        if a.subject_id.is_empty() || a.subject_id.char_len() > ID {
            errs.push(ConfigError::new(
                "default_actor.subject_id",
                format!("must be 1..={ID} characters"),
            ));
        }
        for (field, v) in [
            ("default_actor.org_id", &a.org_id),
            ("default_actor.owner_org_id", &a.owner_org_id),
        ] {
            if v.as_ref()
                .is_some_and(|v| v.is_empty() || v.char_len() > NAME)
            {
                errs.push(ConfigError::new(
                    field,
                    format!("must be 1..={NAME} characters"),
                ));
            }
        }
        if let Some(roles) = &a.roles {
            if roles.len() > ROLES {
                errs.push(ConfigError::new(
                    "default_actor.roles",
                    format!("at most {ROLES} roles (has {})", roles.len()),
                ));
            }
            if roles.iter().any(|r| r.is_empty() || r.char_len() > ROLE) {
                errs.push(ConfigError::new(
                    "default_actor.roles",
                    format!("each role must be 1..={ROLE} characters"),
                ));
            }
            if roles.iter().any(|r| crate::model::clamp::has_bad_chars(r)) {
                errs.push(ConfigError::new("default_actor.roles", bad));
            }
        }
        if a.subject_type == crate::model::event::SubjectType::Agent {
            errs.push(ConfigError::new(
                "default_actor.subject_type",
                "an agent cannot be the default actor: agent events need a delegation block",
            ));
        }
        if let Some(list) = &i.allowlist {
            if list.iter().any(|k| crate::model::clamp::has_bad_chars(k)) {
                errs.push(ConfigError::new("metadata_allowlist", bad));
            }
            if let Some(bad) = list
                .iter()
                .find(|k| k.is_empty() || k.char_len() > META_KEY)
            {
                errs.push(ConfigError::new(
                    "metadata_allowlist",
                    format!(
                        "keys must be 1..={META_KEY} characters (found one of {})",
                        bad.char_len()
                    ),
                ));
            }
        }
        if !(1..=MESSAGE).contains(&i.max_error_message) {
            errs.push(ConfigError::new(
                "max_error_message_len",
                format!("must be between 1 and {MESSAGE} (the schema's limit)"),
            ));
        }
        if i.max_metadata_string == 0 {
            errs.push(ConfigError::new(
                "max_metadata_string_len",
                "must be at least 1",
            ));
        }
        if !errs.is_empty() {
            return Err(ConfigError {
                problems: errs.into_iter().flat_map(|e| e.problems).collect(),
            });
        }
        let mut inner = self.inner;
        inner.fragments = Fragments {
            service: crate::json::encode::rendered(|out| {
                crate::json::encode::service(out, &inner.service)
            }),
            default_actor: crate::json::encode::rendered(|out| {
                crate::json::encode::actor(out, &inner.default_actor)
            }),
        };
        Ok(Config(Arc::new(inner)))
    }
}
