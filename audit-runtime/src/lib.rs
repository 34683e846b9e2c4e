//! Runtime of [phi-audit](https://docs.rs/phi-audit): the bh-audit-schema event
//! model, request context, dispatch, sinks, validation and integrity.
//!
//! Users depend on the `phi-audit` facade, which re-exports this crate; the
//! `#[audited]` attribute generates calls into [`__private`].

#![warn(missing_docs)]

mod builder;
mod call;
mod config;
mod context;
mod dispatch;
pub mod event;
mod ids;
mod metadata;
mod phi;
pub mod report;
pub mod sanitize;
pub mod schema;
pub mod sink;
pub mod stats;
mod text;
mod timestamp;

pub use builder::EventBuilder;
pub use call::AuditError;
pub use config::{
    Config, ConfigBuilder, ConfigError, ErrorMessages, SinkFailurePolicy, ValidationPolicy,
    INTERNAL_TARGET,
};
pub use context::{AuditContext, Scoped};
pub use dispatch::{current, emit, flush, init, with_dispatch, Dispatch, DispatchScoped, Guard, InitError};
pub use event::{
    ActingAgent, Action, ActionType, Actor, AgentInfo, AgentInterface, AuditEvent,
    AuthorizingHuman, Correlation, DataClassification, Delegation, DelegationType, HashAlg, Http,
    HttpMethod, Integrity, Outcome, OutcomeStatus, Resource, SchemaVersion, Service, SubjectType,
};
pub use metadata::{MetaValue, Metadata, MetadataValue};
pub use phi::{AuditId, Phi, PseudonymKey, PseudonymSource, WeakKeyError};
pub use schema::DowngradePolicy;
pub use sink::{
    FanOut, FullPolicy, MemorySink, NonBlocking, NonBlockingBuilder, NonBlockingStats,
    ShutdownReport, Sink, SinkError, StdoutSink, TracingSink, TRACING_TARGET,
};
#[cfg(feature = "postgres")]
pub use sink::{
    ChainReadback, ChainVerifyError, PostgresError, PostgresOptions, PostgresSink, PostgresStats,
    PostgresStore, PurgeReport,
};
pub use stats::StatsSnapshot;
pub use text::Text;
pub use timestamp::{Timestamp, TimestampError};

/// What `#[audited]` and `record!` expand to. Not a public API: it may change
/// in any release, in step with the macro (the facade pins both).
#[doc(hidden)]
pub mod __private {
    pub use crate::call::{
        record, short_type_name, Call, CallSite, Entered, Instrumented, Probe, ViaAnyError,
        ViaAuditError, ViaDisplay, ViaValue,
    };
    pub use crate::event::{ActionType, Actor, DataClassification};
    pub use crate::metadata::{MetaValue, MetadataValue};
    pub use crate::phi::{AuditId, PseudonymSource};
    pub use crate::text::Text;

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

    /// `actor = expr`.
    #[inline]
    pub fn actor<T: IntoActor>(value: T) -> Option<Actor> {
        value.into_actor()
    }

    /// What `actor = expr` accepts: an [`Actor`], or an identifier of a human.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be used as the audit actor",
        note = "`actor = ..` takes a `phi_audit::Actor`, an `Option<Actor>`, or a string id (a human user)"
    )]
    pub trait IntoActor {
        /// The actor, or `None` to fall back to the context's.
        fn into_actor(self) -> Option<Actor>;
    }

    impl IntoActor for Actor {
        fn into_actor(self) -> Option<Actor> {
            Some(self)
        }
    }

    impl IntoActor for &Actor {
        fn into_actor(self) -> Option<Actor> {
            Some(self.clone())
        }
    }

    impl IntoActor for Option<Actor> {
        fn into_actor(self) -> Option<Actor> {
            self
        }
    }

    impl IntoActor for &str {
        fn into_actor(self) -> Option<Actor> {
            Some(Actor::human(self))
        }
    }

    impl IntoActor for String {
        fn into_actor(self) -> Option<Actor> {
            Some(Actor::human(self))
        }
    }

    impl IntoActor for &String {
        fn into_actor(self) -> Option<Actor> {
            Some(Actor::human(self.as_str()))
        }
    }

    impl IntoActor for Text {
        fn into_actor(self) -> Option<Actor> {
            Some(Actor::human(self))
        }
    }
}
