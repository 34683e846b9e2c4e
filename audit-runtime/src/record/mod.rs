//! What the call guard hands to sinks: the [`CallSite`] (the constant part
//! of an audited function), the [`CallRecord`] of a finished call, passed by
//! reference as a [`RecordRef`], and the record encoder ([`encode`]).
//!
//! Sinks, the dispatcher and the guard all import this layer; it imports
//! none of them.

pub(crate) mod encode;

use std::mem::ManuallyDrop;

use crate::config::Config;
use crate::context::AuditContext;
use crate::model::event::{
    Action, ActionType, Actor, AuditEvent, DataClassification, Outcome, Resource, SchemaVersion,
    Service,
};
use crate::model::metadata::Metadata;
use crate::time::timestamp::Timestamp;
use crate::util::text::Text;

/// The constant part of an audited function, built at compile time.
#[derive(Debug)]
pub struct CallSite {
    /// `action.type`.
    pub action: ActionType,
    /// `resource.type`.
    pub resource: &'static str,
    /// `action.name`.
    pub name: &'static str,
    /// `action.phi_touched`.
    pub phi_touched: Option<bool>,
    /// `action.data_classification`.
    pub classification: Option<DataClassification>,
}

/// A [`CallRecord`] handed on by reference but owned all the same: the code
/// that keeps it moves it out once ([`RecordRef::into_record`]), and one
/// that does not drops it.
///
/// Passing a record by value through the dispatcher, a smart pointer and a
/// queue copied all of its bytes at every step (measured: a quarter of an
/// audited call's time); this way it is copied once, into its place in the
/// queue.
pub struct RecordRef<'a>(&'a mut ManuallyDrop<CallRecord>);

impl RecordRef<'_> {
    /// Runs `f` with `record` passed to it by reference.
    #[inline(always)]
    pub(crate) fn pass<R>(record: CallRecord, f: impl FnOnce(RecordRef<'_>) -> R) -> R {
        let mut slot = ManuallyDrop::new(record);
        // The slot is never touched again: the record is dropped or moved
        // out through the reference, exactly once.
        f(RecordRef(&mut slot))
    }

    /// Takes the record.
    #[inline]
    pub fn into_record(self) -> CallRecord {
        let me = ManuallyDrop::new(self);
        // SAFETY: the slot holds a live record (only this reference can take
        // or drop it, and it is consumed here without running its `Drop`).
        unsafe { std::ptr::read(&**me.0) }
    }

    /// Moves the record to the end of `records`: one copy, straight into
    /// the vector's memory.
    #[inline]
    pub(crate) fn push_to(self, records: &mut Vec<CallRecord>) {
        records.reserve(1);
        let me = ManuallyDrop::new(self);
        // SAFETY: `reserve` made room for one more element past `len`; the
        // record is live and, `self` being consumed without its `Drop`,
        // nothing else reads or drops it after this copy.
        unsafe {
            let len = records.len();
            std::ptr::copy_nonoverlapping(&**me.0, records.as_mut_ptr().add(len), 1);
            records.set_len(len + 1);
        }
    }
}

impl Drop for RecordRef<'_> {
    fn drop(&mut self) {
        // SAFETY: the record was neither taken nor dropped (both consume
        // `self` without running this).
        unsafe { ManuallyDrop::drop(self.0) }
    }
}

impl std::ops::Deref for RecordRef<'_> {
    type Target = CallRecord;
    fn deref(&self) -> &CallRecord {
        self.0
    }
}

impl std::ops::DerefMut for RecordRef<'_> {
    fn deref_mut(&mut self) -> &mut CallRecord {
        self.0
    }
}

/// The config a [`CallRecord`] is emitted under: borrowed from the global
/// dispatcher, or shared with a scoped one.
pub(crate) enum ConfigRef {
    Static(&'static Config),
    Shared(Config),
}

impl ConfigRef {
    pub(crate) fn get(&self) -> &Config {
        match self {
            ConfigRef::Static(c) => c,
            ConfigRef::Shared(c) => c,
        }
    }
}

/// A finished audited call on its way to a sink, before it is an
/// [`AuditEvent`].
///
/// It holds what varies per call and points at what does not (the call
/// site, the config, the request's context), so handing it to a queue moves
/// about half the bytes of an event, and a sink that writes JSON lines can
/// copy the constant parts as pre-rendered text. Any sink can turn it into
/// the event with [`CallRecord::into_event`]; where the dispatcher hands a
/// record on as it is (a 1.1 config without validation), both forms produce
/// the same JSON, byte for byte. The event id is drawn (from the config's source)
/// when the record is written or turned into the event, which happens once.
/// Sinks receive records only through the hidden `Sink` methods used by the
/// crate's own sinks.
pub struct CallRecord {
    pub(crate) site: &'static CallSite,
    pub(crate) config: ConfigRef,
    pub(crate) context: Option<AuditContext>,
    pub(crate) started: Timestamp,
    pub(crate) resource_id: Option<Text>,
    pub(crate) patient_id: Option<Text>,
    /// The actor named in the attribute, over the context's (boxed: it is
    /// rare, and 96 bytes inline would make every record half as big again).
    pub(crate) actor: Option<Box<Actor>>,
    pub(crate) outcome: Outcome,
    pub(crate) metadata: Metadata,
}

impl std::fmt::Debug for CallRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Identifiers and messages are left out, as everywhere in this crate.
        f.debug_struct("CallRecord")
            .field("site", &self.site.name)
            .field("status", &self.outcome.status)
            .finish_non_exhaustive()
    }
}

impl CallRecord {
    /// The event this call stands for (schema 1.1, before the dispatcher's
    /// retargeting and validation).
    pub fn into_event(self) -> AuditEvent {
        let cfg = self.config.get();
        let site = self.site;
        let ctx = self.context.as_ref();
        let actor = match self.actor {
            Some(a) => *a,
            None => match ctx.and_then(AuditContext::actor_ref) {
                Some(a) => a.clone(),
                None => cfg.default_actor().clone(),
            },
        };
        AuditEvent {
            schema_version: SchemaVersion::V1_1,
            event_id: cfg.new_event_id(),
            timestamp: self.started,
            service: Service::clone(cfg.service()),
            actor,
            action: Action {
                kind: site.action,
                name: Some(Text::from_static(site.name)),
                phi_touched: site.phi_touched,
                data_classification: site.classification,
            },
            resource: Resource {
                kind: Text::from_static(site.resource),
                id: self.resource_id,
                patient_id: self.patient_id,
            },
            outcome: self.outcome,
            correlation: ctx.and_then(|c| c.correlation().cloned()),
            http: ctx.and_then(|c| c.http_for_event().map(std::borrow::Cow::into_owned)),
            delegation: None,
            metadata: self.metadata,
            integrity: None,
        }
    }

    /// True when the record's JSON is the 1.1 event as it is, with no
    /// rewriting by the dispatcher: a config targeting 1.1 without
    /// validation, and nothing 1.1 lacks (agent actors, OVERRIDE actions).
    pub(crate) fn writes_as_is(&self) -> bool {
        use crate::model::event::SubjectType;
        let cfg = self.config.get();
        let inner = cfg.inner();
        if inner.target != SchemaVersion::V1_1
            || inner.validate.is_some()
            || self.site.action == ActionType::Override
        {
            return false;
        }
        let actor = match &self.actor {
            Some(a) => a,
            None => match self.context.as_ref().and_then(AuditContext::actor_ref) {
                Some(a) => a,
                None => cfg.default_actor(),
            },
        };
        actor.subject_type != SubjectType::Agent
    }

    /// Appends the record's compact JSON (what [`CallRecord::into_event`]
    /// would encode to), copying the pre-rendered parts: the config's service
    /// and default actor, the context's actor and correlation, and the call
    /// site's action (rendered once per site per thread).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        encode::record(out, self);
    }
}

#[cfg(test)]
mod tests;
