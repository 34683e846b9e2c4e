//! Settings: where events go and what the service is called, chosen at
//! start-up from the environment or a configuration file, as `RUST_LOG`
//! chooses what `tracing` prints.
//!
//! ```no_run
//! // PHI_AUDIT_SERVICE=chart-service PHI_AUDIT_SINK=ledger:/var/log/audit.jsonl ./chart-service
//! let _guard = audit_runtime::init_from_env()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! | variable | `[phi_audit]` key | meaning |
//! |---|---|---|
//! | `PHI_AUDIT_SERVICE` | `service` | **required**: the service's name (1 to 128 characters) |
//! | `PHI_AUDIT_ENVIRONMENT` | `environment` | `prod`, `staging`, ... (at most 64 characters) |
//! | `PHI_AUDIT_VERSION` | `version` | the service's version (at most 64 characters) |
//! | `PHI_AUDIT_SCHEMA` | `schema` | `1.0`, `1.1` (default) or `2.0` |
//! | `PHI_AUDIT_PSEUDONYM_KEY_FILE` | `pseudonym_key_file` | a file holding the pseudonym key (at least 16 bytes; one trailing newline is not part of the key) |
//! | `PHI_AUDIT_SINK` | `sink` | one or more [sink specs](spec), separated by `,` (default `stdout`) |
//! | `PHI_AUDIT_CONFIG` | | a TOML file whose `[phi_audit]` table holds the settings above; the variables override it |
//!
//! ```toml
//! [phi_audit]
//! service = "chart-service"
//! environment = "prod"
//! schema = "1.1"
//! pseudonym_key_file = "/run/secrets/phi-audit-pseudonym-key"
//! sink = ["ledger:/var/log/audit/ledger.jsonl?alg=sha384&checkpoint_key=/run/secrets/ckpt.key",
//!         "postgres://audit@db.internal/app?schema=audit&sslmode=require"]
//! ```
//!
//! In the file, `sink` is a string (split at commas, like the variable) or an
//! array of specs (not split: the way to write a spec holding a comma, such
//! as a PostgreSQL URL with several hosts). An empty variable counts as
//! unset. A `PHI_AUDIT_*` variable that is a near miss of a known name
//! (`PHI_AUDIT_SINKS`) is an error, and so is `PHI_AUDIT_PSEUDONYM_KEY`: the
//! key belongs in a file.
//!
//! Every mistake is reported at start-up, all at once, by one
//! [`SettingsError`] naming the variable or key, the bad value's position
//! and the accepted forms, never a secret's value; nothing fails later at
//! emit time.
//!
//! A service that loads its own configuration embeds [`Settings`] in it
//! (serde, no feature needed) and calls [`Settings::init`]:
//!
//! ```
//! #[derive(serde::Deserialize)]
//! struct AppConfig {
//!     listen: String,
//!     phi_audit: audit_runtime::Settings,
//! }
//!
//! let app: AppConfig = serde_json::from_str(r#"{
//!     "listen": "0.0.0.0:8080",
//!     "phi_audit": { "service": "chart-service", "sink": ["stdout", "jsonl:audit.jsonl?fsync=never"] }
//! }"#)?;
//! assert_eq!(app.phi_audit.sinks.len(), 2);
//! // let _guard = app.phi_audit.init()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;

use crate::config::{Config, ConfigBuilder};
use crate::dispatch::{self, Dispatch, Guard, InitError};
use crate::model::event::SchemaVersion;
use crate::sink::{FanOut, Sink};

mod error;
mod load;
mod open;
pub mod spec;

pub(crate) use error::Origin;
pub use error::{Problem, SettingsError};
#[cfg(feature = "postgres")]
pub use spec::PostgresSpec;
pub use spec::{Delivery, JsonlSpec, LedgerSpec, SinkKind, SinkSpec, SpoolSpec};

/// What a service's audit trail needs at start-up: the service block of its
/// events, the schema version, the pseudonym key file and the sinks.
///
/// Read it with [`Settings::from_env`] (or let [`init_from_env`] do it all),
/// deserialize it from the service's own configuration (the keys are
/// `service`, `environment`, `version`, `schema`, `pseudonym_key_file` and
/// `sink`; see the [module docs](self)), or build it in code with
/// [`Settings::new`]. Then [`Settings::init`] installs the global
/// dispatcher.
#[derive(Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The service's name (required; 1 to 128 characters).
    pub service: String,
    /// Deployment environment, at most 64 characters.
    pub environment: Option<String>,
    /// Service version, at most 64 characters.
    pub version: Option<String>,
    /// The schema version events are written as (default 1.1).
    pub schema: SchemaVersion,
    /// The file holding the pseudonym key, read by [`Settings::init`].
    pub pseudonym_key_file: Option<PathBuf>,
    /// Where events go (several: each gets every event, as with
    /// [`FanOut`]). Default: `stdout`.
    pub sinks: Vec<SinkSpec>,
    /// Where each setting came from, for messages.
    origins: Origins,
}

/// Where the settings came from (the variables, the file's keys, or the
/// deserialized keys), to name them in messages.
#[derive(Clone, Debug)]
pub(crate) struct Origins {
    pub(crate) service: Origin,
    pub(crate) environment: Origin,
    pub(crate) version: Origin,
    pub(crate) pseudonym_key_file: Origin,
    pub(crate) sinks: Vec<Origin>,
}

impl Default for Origins {
    fn default() -> Self {
        Origins {
            service: Origin::key("service"),
            environment: Origin::key("environment"),
            version: Origin::key("version"),
            pseudonym_key_file: Origin::key("pseudonym_key_file"),
            sinks: Vec::new(),
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("service", &self.service)
            .field("environment", &self.environment)
            .field("version", &self.version)
            .field("schema", &self.schema)
            .field("pseudonym_key_file", &self.pseudonym_key_file)
            .field("sinks", &self.sinks)
            .finish()
    }
}

impl Settings {
    /// Settings for `service`: schema 1.1, no pseudonym key, events to
    /// standard output through a queue.
    pub fn new(service: impl Into<String>) -> Settings {
        Settings {
            service: service.into(),
            environment: None,
            version: None,
            schema: SchemaVersion::default(),
            pseudonym_key_file: None,
            sinks: vec![SinkSpec::new(SinkKind::Stdout)],
            origins: Origins::default(),
        }
    }

    /// The settings of the process's environment: the `PHI_AUDIT_*`
    /// variables over the `[phi_audit]` table of the file `PHI_AUDIT_CONFIG`
    /// names, if any. Reads no key file and opens no sink (see
    /// [`Settings::init`]).
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_env_map(std::env::vars_os())
    }

    /// Like [`Settings::from_env`], with the variables given as pairs (for
    /// tests, and for variables gathered elsewhere). Variables not starting
    /// with `PHI_AUDIT_` are ignored; of several with one name, the last
    /// counts.
    ///
    /// ```
    /// use audit_runtime::Settings;
    /// let s = Settings::from_env_map([
    ///     ("PHI_AUDIT_SERVICE", "chart-service"),
    ///     ("PHI_AUDIT_SINK", "stdout,jsonl:/var/log/audit.jsonl?fsync=100"),
    /// ])?;
    /// assert_eq!(s.sinks.len(), 2);
    ///
    /// let err = Settings::from_env_map([("PHI_AUDIT_SCHEMA", "3.0")]).unwrap_err();
    /// assert_eq!(err.problems().len(), 2); // no service, bad schema
    /// # Ok::<(), audit_runtime::SettingsError>(())
    /// ```
    pub fn from_env_map<I, K, V>(vars: I) -> Result<Settings, SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let (settings, problems) = load::from_vars(vars);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError::new(problems))
        }
    }

    /// Checks the settings that need no file or sink: service, environment
    /// and version lengths, the key file path, an empty sink list and sinks
    /// written twice. The loader, which reports a missing service and specs
    /// it could not parse itself, skips those checks (`service_missing`,
    /// `loaded`).
    pub(crate) fn check(&self, service_missing: bool, loaded: bool) -> Vec<Problem> {
        let mut problems = Vec::new();
        let o = &self.origins;
        if !service_missing {
            if let Err(e) = Config::new(self.service.as_str()).build() {
                problems.push(o.service.problem(e.problem()));
            }
        }
        if let Some(env) = &self.environment {
            if let Err(e) = Config::new("x").environment(env.as_str()).build() {
                problems.push(o.environment.problem(e.problem()));
            }
        }
        if let Some(version) = &self.version {
            if let Err(e) = Config::new("x").version(version.as_str()).build() {
                problems.push(o.version.problem(e.problem()));
            }
        }
        if self
            .pseudonym_key_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push(
                o.pseudonym_key_file
                    .problem("is empty: give the path of the file holding the key"),
            );
        }
        if self.sinks.is_empty() && !loaded {
            problems.push(Origin::key("sink").problem(format!(
                "lists no sink; accepted: one or more of {}",
                spec::ACCEPTED_FORMS
            )));
        }
        for (j, b) in self.sinks.iter().enumerate() {
            if let Some(i) = self.sinks[..j].iter().position(|a| same_target(a, b)) {
                problems.push(self.sink_origin(j).problem(format!(
                    "writes where sink {} already writes: list each destination once",
                    i + 1
                )));
            }
        }
        problems
    }

    fn sink_origin(&self, i: usize) -> Origin {
        self.origins
            .sinks
            .get(i)
            .cloned()
            .unwrap_or_else(|| Origin::key(&format!("sink[{i}]")))
    }

    /// Reads the key files, collecting every problem.
    fn keys(&self, problems: &mut Vec<Problem>) -> open::Keys {
        let pseudonym = self.pseudonym_key_file.as_ref().and_then(|path| {
            open::pseudonym_key(path)
                .map_err(|m| problems.push(self.origins.pseudonym_key_file.problem(m)))
                .ok()
        });
        let checkpoint = self
            .sinks
            .iter()
            .enumerate()
            .map(|(i, spec)| match &spec.kind {
                SinkKind::Ledger(LedgerSpec {
                    checkpoint_key: Some(path),
                    ..
                }) => open::checkpoint_signer(path)
                    .map_err(|m| problems.push(self.sink_origin(i).problem(m)))
                    .ok(),
                _ => None,
            })
            .collect();
        open::Keys {
            pseudonym,
            checkpoint,
        }
    }

    /// The problems of the key files (for a report that also lists the
    /// settings' other mistakes).
    pub(crate) fn key_file_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.keys(&mut problems);
        problems
    }

    /// The configuration: service block, schema version and the pseudonym
    /// key (read from its file now). Further options (metadata allowlist,
    /// validation, ...) can be set on the builder before
    /// [`ConfigBuilder::build`].
    pub fn config_builder(&self) -> Result<ConfigBuilder, SettingsError> {
        let mut problems = self.check(false, false);
        let keys = self.keys(&mut problems);
        if !problems.is_empty() {
            return Err(SettingsError::new(problems));
        }
        Ok(self.builder(keys.pseudonym))
    }

    fn builder(&self, key: Option<crate::PseudonymKey>) -> ConfigBuilder {
        let mut b = Config::new(self.service.as_str()).target(self.schema);
        if let Some(env) = &self.environment {
            b = b.environment(env.as_str());
        }
        if let Some(version) = &self.version {
            b = b.version(version.as_str());
        }
        if let Some(key) = key {
            b = b.pseudonym_key(key);
        }
        b
    }

    /// Opens the sinks (reading the checkpoint key files): one sink, or a
    /// [`FanOut`] of several, each behind its queue unless `?sync`.
    pub fn open_sink(&self) -> Result<Box<dyn Sink>, SettingsError> {
        self.parts().map(|(_, sink)| sink)
    }

    /// Everything checked, every key file read, every sink opened; or every
    /// problem found. Sinks are opened only when nothing else is wrong.
    fn parts(&self) -> Result<(Config, Box<dyn Sink>), SettingsError> {
        let mut problems = self.check(false, false);
        let keys = self.keys(&mut problems);
        if !problems.is_empty() {
            return Err(SettingsError::new(problems));
        }
        let config = self
            .builder(keys.pseudonym)
            .build()
            .map_err(|e| SettingsError::new(vec![Origin::key(e.field()).problem(e.problem())]))?;
        let mut sinks = Vec::with_capacity(self.sinks.len());
        for ((i, spec), signer) in self.sinks.iter().enumerate().zip(keys.checkpoint) {
            match open::open(spec, signer) {
                Ok(s) => sinks.push(s),
                Err(m) => problems.push(self.sink_origin(i).problem(m)),
            }
        }
        if !problems.is_empty() {
            return Err(SettingsError::new(problems));
        }
        let sink = if sinks.len() == 1 {
            sinks.pop().expect("one sink")
        } else {
            Box::new(sinks.into_iter().fold(FanOut::new(), FanOut::with))
        };
        Ok((config, sink))
    }

    /// A dispatcher for these settings, not installed anywhere (for
    /// [`with_dispatch`](crate::with_dispatch), tests and tools).
    pub fn dispatch(&self) -> Result<Dispatch, SettingsError> {
        let (config, sink) = self.parts()?;
        Ok(Dispatch::from_boxed(config, sink))
    }

    /// Reads the key files, opens the sinks and installs the global
    /// dispatcher, as [`init`](crate::init) does. Keep the guard alive
    /// until the process ends: its drop flushes the sinks.
    ///
    /// Fails without opening anything when a global dispatcher is already
    /// installed.
    pub fn init(&self) -> Result<Guard, InitError> {
        if dispatch::global().is_some() {
            return Err(InitError::already_installed());
        }
        let (config, sink) = self.parts()?;
        dispatch::install(Dispatch::from_boxed(config, sink))
    }
}

/// Whether two specs write to the same place.
fn same_target(a: &SinkSpec, b: &SinkSpec) -> bool {
    match (&a.kind, &b.kind) {
        (SinkKind::Stdout, SinkKind::Stdout) | (SinkKind::Tracing, SinkKind::Tracing) => true,
        (SinkKind::Jsonl(x), SinkKind::Jsonl(y)) => x.path == y.path,
        (SinkKind::Ledger(x), SinkKind::Ledger(y)) => x.path == y.path,
        (SinkKind::Jsonl(x), SinkKind::Ledger(y)) | (SinkKind::Ledger(y), SinkKind::Jsonl(x)) => {
            x.path == y.path
        }
        #[cfg(feature = "postgres")]
        (SinkKind::Postgres(x), SinkKind::Postgres(y)) => {
            x.url() == y.url() && x.schema == y.schema
        }
        _ => false,
    }
}

/// Installs the global dispatcher from the environment: the `PHI_AUDIT_*`
/// variables over the file `PHI_AUDIT_CONFIG` names (see the
/// [settings module](self)). Keep the guard alive until the process ends.
///
/// Every mistake (settings, key files, sinks that cannot be opened) is in
/// one error; calling it when a global dispatcher is installed (a second
/// time, or after [`init`](crate::init)) is an error too.
///
/// ```no_run
/// // PHI_AUDIT_SERVICE=chart-service PHI_AUDIT_SINK=stdout,jsonl:/var/log/audit.jsonl
/// let _guard = audit_runtime::init_from_env()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn init_from_env() -> Result<Guard, InitError> {
    if dispatch::global().is_some() {
        return Err(InitError::already_installed());
    }
    let (settings, mut problems) = load::from_vars(std::env::vars_os());
    if problems.is_empty() {
        return settings.init();
    }
    // Report the key files' problems too, not just on the next attempt.
    problems.extend(settings.key_file_problems());
    Err(SettingsError::new(problems).into())
}

/// The raw shape of deserialized settings.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    service: Option<String>,
    environment: Option<String>,
    version: Option<String>,
    schema: Option<String>,
    pseudonym_key_file: Option<PathBuf>,
    sink: Option<RawSinks>,
}

/// `sink`: a string of comma-separated specs, or a list of specs.
enum RawSinks {
    One(String),
    Many(Vec<String>),
}

impl<'de> serde::Deserialize<'de> for RawSinks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawSinks, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawSinks;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sink spec, comma-separated sink specs, or a list of sink specs")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawSinks, E> {
                Ok(RawSinks::One(s.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawSinks, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(RawSinks::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for Settings {
    /// From a map with the keys `service` (required), `environment`,
    /// `version`, `schema`, `pseudonym_key_file` and `sink` (a string of
    /// comma-separated specs or a list of specs). The error lists every
    /// mistake.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Settings, D::Error> {
        let raw = Raw::deserialize(d)?;
        let val = |v: Option<String>, key: &str| {
            v.map(|value| load::Val {
                value,
                origin: Origin::key(key),
            })
        };
        let layer = load::Layer {
            service: val(raw.service, "service"),
            environment: val(raw.environment, "environment"),
            version: val(raw.version, "version"),
            schema: val(raw.schema, "schema"),
            pseudonym_key_file: raw.pseudonym_key_file.map(|value| load::Val {
                value,
                origin: Origin::key("pseudonym_key_file"),
            }),
            sink: raw.sink.map(|s| match s {
                RawSinks::One(s) => load::pieces(&s, &Origin::key("sink")),
                RawSinks::Many(v) => v
                    .iter()
                    .enumerate()
                    .map(|(i, s)| load::Piece::whole(s, Origin::key(&format!("sink[{i}]"))))
                    .collect(),
            }),
        };
        let missing =
            Origin::key("service").problem("is required: the service's name (1 to 128 characters)");
        let missing = Some(missing);
        let (settings, problems) = load::build(layer, missing);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(serde::de::Error::custom(SettingsError::new(problems)))
        }
    }
}
