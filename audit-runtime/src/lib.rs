//! Runtime of [phi-audit](https://docs.rs/phi-audit): the bh-audit-schema event
//! model, request context, dispatch, sinks, validation and integrity.
//!
//! Users depend on the `phi-audit` facade, which re-exports this crate; the
//! `#[audited]` attribute generates calls into [`__private`].

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

// The layers, bottom up (see docs/ARCHITECTURE.md; `tests::layering`
// checks the rules): util, time → model → json → schema, integrity, config,
// context, sanitize, stats, report (review over it) → record → sink → dispatch → call,
// builder → settings, task, web.
mod builder;
mod call;
mod config;
mod context;
mod dispatch;

pub mod integrity;
mod json;
mod model;
mod record;
pub mod report;
#[cfg(feature = "review")]
pub mod review;
pub mod sanitize;
pub mod schema;
pub mod settings;
pub mod sink;
pub mod stats;
mod task;
mod time;
mod util;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod web;

pub use integrity::{checkpoint, fast_verify, verify};
pub use model::event;

pub use builder::EventBuilder;
pub use call::flush_on_panic;
pub use checkpoint::{Checkpoint, CheckpointSigner, CheckpointVerifyingKey};
pub use config::{
    Config, ConfigBuilder, ConfigError, ErrorMessages, SinkFailurePolicy, ValidationPolicy,
    INTERNAL_TARGET,
};
pub use context::{AuditContext, Scoped};
pub use dispatch::{
    current, emit, flush, init, with_dispatch, Dispatch, DispatchScoped, Guard, InitError,
};
pub use event::{
    ActingAgent, Action, ActionType, Actor, AgentInfo, AgentInterface, AuditEvent,
    AuthorizingHuman, Correlation, DataClassification, Delegation, DelegationType, HashAlg, Http,
    HttpMethod, Integrity, Outcome, OutcomeStatus, Resource, SchemaVersion, Service, SubjectType,
};
pub use integrity::{event_hash, typed_event_hash, Canonicalizer};
pub use model::metadata::{MetaValue, Metadata, MetadataValue};
pub use model::outcome::AuditError;
pub use model::phi::{AuditId, Phi, PseudonymKey, PseudonymSource, WeakKeyError};
pub use schema::{
    retarget, validate, validate_as, validate_value, DowngradePolicy, RetargetError,
    ValidationErrors, Violation,
};
pub use settings::{init_from_env, Settings, SettingsError, SinkSpec};
pub use sink::{
    BatchError, FanOut, FsyncPolicy, FullPolicy, JsonlFileSink, JsonlOptions, LedgerError,
    LedgerOptions, LedgerSink, MemorySink, NonBlocking, NonBlockingBuilder, NonBlockingStats,
    Recovery, ShutdownReport, Sink, SinkError, Spool, SpoolFull, SpoolOptions, SpoolStats,
    StdoutSink, TornTail, TracingSink, DEFAULT_PREALLOCATE, TRACING_TARGET,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use sink::{
    ChainReadback, ChainVerifyError, PostgresError, PostgresOptions, PostgresSink, PostgresStats,
    PostgresStore, PostgresTls, PurgeReport,
};
#[cfg(feature = "nats")]
pub use sink::{CloudEvents, NatsError, NatsOptions, NatsSink, NatsStats, NatsStream};
pub use stats::StatsSnapshot;
pub use task::{carry, Carried, CurrentScope};
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use task::{spawn, spawn_blocking};
pub use time::timestamp::{Timestamp, TimestampError};
pub use util::text::Text;
pub use verify::{verify_path, verify_reader, VerifyFailure, VerifyOptions, VerifyReport};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use web::AuditLayer;

/// What `#[audited]` and `record!` expand to. Not a public API: it may change
/// in any release, in step with the macro (the facade pins both).
#[doc(hidden)]
pub mod __private {
    pub use crate::call::{
        record, short_type_name, Call, Instrumented, Probe, UnfollowedFuture, ViaAnyError,
        ViaAuditError, ViaDisplay, ViaFuture, ViaValue,
    };
    pub use crate::model::event::{ActionType, Actor, DataClassification};
    pub use crate::model::metadata::{MetaValue, MetadataValue};
    pub use crate::model::phi::{AuditId, PseudonymSource};
    pub use crate::record::CallSite;
    pub use crate::util::text::Text;

    /// `id = expr`, `patient = expr`: the identifier text of `value`.
    #[inline]
    pub fn id<T: AuditId + ?Sized>(value: &T) -> Option<Text> {
        value.to_audit_id()
    }

    /// `metadata(key = expr)` and `record!(key = expr)`: the scalar of `value`.
    #[inline]
    pub fn meta<T: MetadataValue + ?Sized>(value: &T) -> MetaValue {
        value.to_meta_value()
    }

    /// `actor = expr`. Takes the value by reference, so an attribute
    /// expression never moves an argument the body still needs.
    #[inline]
    pub fn actor<T: IntoActor + ?Sized>(value: &T) -> Option<Actor> {
        value.to_actor()
    }

    /// What `actor = expr` accepts: an [`Actor`], or an identifier of a human.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be used as the audit actor",
        note = "`actor = ..` takes a `phi_audit::Actor`, an `Option<Actor>`, or a string id (a human user)"
    )]
    pub trait IntoActor {
        /// The actor, or `None` to fall back to the context's.
        fn to_actor(&self) -> Option<Actor>;
    }

    impl<T: IntoActor + ?Sized> IntoActor for &T {
        fn to_actor(&self) -> Option<Actor> {
            (**self).to_actor()
        }
    }

    impl IntoActor for Actor {
        fn to_actor(&self) -> Option<Actor> {
            Some(self.clone())
        }
    }

    impl IntoActor for Option<Actor> {
        fn to_actor(&self) -> Option<Actor> {
            self.clone()
        }
    }

    impl IntoActor for str {
        fn to_actor(&self) -> Option<Actor> {
            Some(Actor::human(self))
        }
    }

    impl IntoActor for String {
        fn to_actor(&self) -> Option<Actor> {
            Some(Actor::human(self.as_str()))
        }
    }

    impl IntoActor for Text {
        fn to_actor(&self) -> Option<Actor> {
            Some(Actor::human(self.clone()))
        }
    }
}
