//! [`EventBuilder`]: manual events, and the conveniences for common cases.

use uuid::Uuid;

use crate::context::AuditContext;
use crate::dispatch::{self, Dispatch};
use crate::model::event::{
    Action, ActionType, Actor, AuditEvent, Correlation, DataClassification, Delegation, Http,
    Outcome, Resource, Service,
};
use crate::model::metadata::{Metadata, MetadataValue};
use crate::time::timestamp::Timestamp;
use crate::util::text::Text;
use crate::SchemaVersion;

/// Builds one audit event. The dispatcher fills in what the builder leaves
/// open: event id, timestamp, service, actor (from the [`AuditContext`] or the
/// config's default actor) and correlation ids (from the context).
///
/// ```
/// use phi_audit::{with_dispatch, Actor, ActionType, Config, Dispatch, EventBuilder, MemorySink};
/// let sink = MemorySink::new();
/// let d = Dispatch::new(Config::new("chart-service").build().unwrap(), sink.clone());
/// with_dispatch(&d, || {
///     EventBuilder::access(ActionType::Read, "Patient", "p-1")
///         .actor(Actor::human("dr-1"))
///         .metadata("reason", "treatment")
///         .emit();
///     EventBuilder::access_denied(ActionType::Export, "Chart", "RoleDenied").emit();
/// });
/// let events = sink.events();
/// assert_eq!(events[0].resource.id.as_deref(), Some("p-1"));
/// assert_eq!(events[1].outcome.status.as_str(), "DENIED");
/// ```
#[derive(Clone, Debug)]
#[must_use = "an event builder does nothing until `.emit()`"]
pub struct EventBuilder {
    action: Action,
    resource: Resource,
    actor: Option<Actor>,
    outcome: Outcome,
    correlation: Option<Correlation>,
    http: Option<Http>,
    delegation: Option<Box<Delegation>>,
    metadata: Metadata,
    timestamp: Option<Timestamp>,
    event_id: Option<Uuid>,
}

impl EventBuilder {
    /// An event for `action` on a resource of type `resource_type`; outcome
    /// SUCCESS until told otherwise.
    pub fn new(action: ActionType, resource_type: impl Into<Text>) -> EventBuilder {
        EventBuilder {
            action: Action {
                kind: action,
                name: None,
                phi_touched: None,
                data_classification: None,
            },
            resource: Resource {
                kind: resource_type.into(),
                id: None,
                patient_id: None,
            },
            actor: None,
            outcome: Outcome::SUCCESS,
            correlation: None,
            http: None,
            delegation: None,
            metadata: Metadata::new(),
            timestamp: None,
            event_id: None,
        }
    }

    /// A successful access to one resource.
    pub fn access(
        action: ActionType,
        resource_type: impl Into<Text>,
        resource_id: impl Into<Text>,
    ) -> EventBuilder {
        EventBuilder::new(action, resource_type).resource_id(resource_id)
    }

    /// A refused access; `error_type` names the denial category
    /// (`RoleDenied`, `CrossOrg`, `NoConsent`, ...).
    pub fn access_denied(
        action: ActionType,
        resource_type: impl Into<Text>,
        error_type: impl Into<Text>,
    ) -> EventBuilder {
        EventBuilder::new(action, resource_type).outcome(Outcome::denied(error_type))
    }

    /// A successful sign-in of `actor`.
    pub fn login_success(actor: Actor) -> EventBuilder {
        EventBuilder::new(ActionType::Login, "Session").actor(actor)
    }

    /// A failed sign-in of `actor`; `error_type` says why (`BadCredentials`,
    /// `Locked`, `MfaFailed`).
    pub fn login_failure(actor: Actor, error_type: impl Into<Text>) -> EventBuilder {
        let t = error_type.into();
        EventBuilder::new(ActionType::Login, "Session")
            .actor(actor)
            .outcome(Outcome::failure(t.clone(), t))
    }

    /// Specific action name (`read_chart`).
    pub fn name(mut self, name: impl Into<Text>) -> Self {
        self.action.name = Some(name.into());
        self
    }

    /// Whether regulated PHI was touched.
    pub fn phi_touched(mut self, touched: bool) -> Self {
        self.action.phi_touched = Some(touched);
        self
    }

    /// Classification of the data touched.
    pub fn classification(mut self, c: DataClassification) -> Self {
        self.action.data_classification = Some(c);
        self
    }

    /// The resource id.
    pub fn resource_id(mut self, id: impl Into<Text>) -> Self {
        self.resource.id = Some(id.into());
        self
    }

    /// The patient id.
    pub fn patient_id(mut self, id: impl Into<Text>) -> Self {
        self.resource.patient_id = Some(id.into());
        self
    }

    /// The actor (overrides the context's).
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    /// The outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Correlation ids (override the context's).
    pub fn correlation(mut self, c: Correlation) -> Self {
        self.correlation = Some(c);
        self
    }

    /// HTTP details (override the context's).
    pub fn http(mut self, http: Http) -> Self {
        self.http = Some(http);
        self
    }

    /// Agent delegation (schema 2.0).
    pub fn delegation(mut self, d: Delegation) -> Self {
        self.delegation = Some(Box::new(d));
        self
    }

    /// Adds one metadata entry (a scalar; see [`MetadataValue`]).
    pub fn metadata(mut self, key: impl Into<Text>, value: impl MetadataValue) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// A fixed timestamp (default: the config's clock at build time).
    pub fn timestamp(mut self, t: Timestamp) -> Self {
        self.timestamp = Some(t);
        self
    }

    /// A fixed event id (default: a new UUIDv4).
    pub fn event_id(mut self, id: Uuid) -> Self {
        self.event_id = Some(id);
        self
    }

    /// The finished event as `dispatch` would complete it (before the config's
    /// limits and version targeting, which [`Dispatch::emit`] applies).
    pub fn build(self, dispatch: &Dispatch) -> AuditEvent {
        let cfg = dispatch.config();
        let ctx = AuditContext::current();
        let actor = self
            .actor
            .or_else(|| ctx.as_ref().and_then(|c| c.actor_ref().cloned()))
            .unwrap_or_else(|| cfg.default_actor().clone());
        let correlation = self
            .correlation
            .or_else(|| ctx.as_ref().and_then(|c| c.correlation().cloned()))
            .filter(|c| !c.is_empty());
        let http = self.http.or_else(|| {
            ctx.as_ref()
                .and_then(|c| c.http_for_event().map(std::borrow::Cow::into_owned))
        });
        AuditEvent {
            schema_version: SchemaVersion::default(),
            event_id: self.event_id.unwrap_or_else(|| cfg.new_event_id()),
            timestamp: self.timestamp.unwrap_or_else(|| cfg.now()),
            service: Service::clone(cfg.service()),
            actor,
            action: self.action,
            resource: self.resource,
            outcome: self.outcome,
            correlation,
            http,
            delegation: self.delegation,
            metadata: self.metadata,
            integrity: None,
        }
    }

    /// Emits through the current dispatcher (counted as undispatched when
    /// there is none).
    pub fn emit(self) {
        match dispatch::current() {
            Some(d) => self.emit_to(&d),
            None => crate::stats::add_undispatched(),
        }
    }

    /// Emits through `dispatch`.
    pub fn emit_to(self, dispatch: &Dispatch) {
        let event = self.build(dispatch);
        dispatch.emit(event);
    }
}
