//! Runtime of [phi-audit](https://docs.rs/phi-audit): the bh-audit-schema event
//! model, request context, dispatch, sinks, validation and integrity.
//!
//! Users depend on the `phi-audit` facade, which re-exports this crate; the
//! `#[audited]` attribute generates calls into [`__private`].

#![warn(missing_docs)]

pub mod checkpoint;
pub mod event;
pub mod integrity;
mod metadata;
pub mod sink;
mod text;
mod timestamp;
pub mod verify;

pub use checkpoint::{Checkpoint, CheckpointSigner, CheckpointVerifyingKey};
pub use event::{
    ActingAgent, Action, ActionType, Actor, AgentInfo, AgentInterface, AuditEvent,
    AuthorizingHuman, Correlation, DataClassification, Delegation, DelegationType, HashAlg, Http,
    HttpMethod, Integrity, Outcome, OutcomeStatus, Resource, SchemaVersion, Service, SubjectType,
};
pub use integrity::{event_hash, typed_event_hash, Canonicalizer};
pub use metadata::{MetaValue, Metadata, MetadataValue};
pub use sink::{
    FsyncPolicy, JsonlFileSink, JsonlOptions, LedgerError, LedgerOptions, LedgerSink, Recovery,
    Sink, SinkError, TornTail,
};
pub use text::Text;
pub use timestamp::{Timestamp, TimestampError};
pub use verify::{verify_path, verify_reader, VerifyFailure, VerifyOptions, VerifyReport};
