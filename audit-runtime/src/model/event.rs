//! The audit event of bh-audit-schema (1.0, 1.1, 2.0) as serde types.
//!
//! Field names are the schema's; optional fields are omitted when unset; the
//! JSON is compact and deserializes back into the same value. Every block
//! rejects unknown properties, as the schema does.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::model::metadata::Metadata;
use crate::time::timestamp::Timestamp;
use crate::util::text::Text;

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $s:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $s)] $variant ),+
        }

        impl $name {
            /// Every value, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as the schema spells it.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            /// Parses the schema's spelling (exact, case-sensitive).
            #[allow(clippy::should_implement_trait)]
            pub fn from_str(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// What was done (`action.type`). `Override` exists only in schema 2.0.
    pub enum ActionType {
        /// Data was read or viewed.
        Read => "READ",
        /// A record was created.
        Create => "CREATE",
        /// A record was changed.
        Update => "UPDATE",
        /// A record was deleted.
        Delete => "DELETE",
        /// Data left the system (download, report, transfer).
        Export => "EXPORT",
        /// A sign-in.
        Login => "LOGIN",
        /// A sign-out.
        Logout => "LOGOUT",
        /// Data was printed.
        Print => "PRINT",
        /// A human interrupted or reversed an agent's action (schema 2.0 only).
        Override => "OVERRIDE",
        /// Anything else.
        Other => "OTHER",
    }
}

string_enum! {
    /// How the action ended (`outcome.status`). `Denied` does not exist in 1.0.
    pub enum OutcomeStatus {
        /// The action completed.
        Success => "SUCCESS",
        /// The action failed for an operational reason.
        Failure => "FAILURE",
        /// The system correctly refused the action.
        Denied => "DENIED",
    }
}

string_enum! {
    /// Regulatory class of the data the action touched.
    #[derive(Default)]
    pub enum DataClassification {
        /// Protected health information.
        Phi => "PHI",
        /// Personally identifiable information.
        Pii => "PII",
        /// Neither.
        None => "NONE",
        /// Not known (the schema's default).
        #[default]
        Unknown => "UNKNOWN",
    }
}

string_enum! {
    /// Identity class of an actor. `Agent` exists only in schema 2.0.
    pub enum SubjectType {
        /// An authenticated human user.
        Human => "human",
        /// A service principal.
        Service => "service",
        /// An AI agent acting under delegated human authority (schema 2.0 only).
        Agent => "agent",
    }
}

string_enum! {
    /// HTTP method of the request that caused the action.
    pub enum HttpMethod {
        /// GET
        Get => "GET",
        /// HEAD
        Head => "HEAD",
        /// POST
        Post => "POST",
        /// PUT
        Put => "PUT",
        /// PATCH
        Patch => "PATCH",
        /// DELETE
        Delete => "DELETE",
        /// OPTIONS
        Options => "OPTIONS",
    }
}

string_enum! {
    /// Hash algorithm of a chained event.
    #[derive(Default)]
    pub enum HashAlg {
        /// SHA-256 (the default).
        #[default]
        Sha256 => "sha256",
        /// SHA-384.
        Sha384 => "sha384",
        /// SHA-512.
        Sha512 => "sha512",
    }
}

string_enum! {
    /// Surface through which an agent acts (schema 2.0 delegation).
    pub enum AgentInterface {
        /// Drives a user interface.
        UiDriving => "ui_driving",
        /// Calls an API.
        Api => "api",
        /// Through the Model Context Protocol.
        Mcp => "mcp",
        /// Runs commands.
        Cli => "cli",
        /// Through an SDK.
        Sdk => "sdk",
    }
}

string_enum! {
    /// Human oversight at the time of an agent action (schema 2.0 delegation).
    pub enum DelegationType {
        /// A human watches and can intervene.
        Supervised => "supervised",
        /// No real-time human observation.
        Autonomous => "autonomous",
        /// Started by a timer or trigger, no human present.
        Scheduled => "scheduled",
    }
}

string_enum! {
    /// A version of bh-audit-schema (default 1.1).
    #[derive(Default)]
    pub enum SchemaVersion {
        /// 1.0: no DENIED, no length bounds.
        V1_0 => "1.0",
        /// 1.1: the default target.
        #[default]
        V1_1 => "1.1",
        /// 2.0: agents, OVERRIDE and delegation.
        V2_0 => "2.0",
    }
}

/// The service that emitted the event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Service name, 1..=128 characters.
    pub name: Text,
    /// Deployment environment (`prod`, `staging`, ...), at most 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Text>,
    /// Version or build identifier, at most 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Text>,
}

/// Who acted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Subject identifier, 1..=256 characters.
    pub subject_id: Text,
    /// Human, service, or (2.0) agent.
    pub subject_type: SubjectType,
    /// The actor's organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<Text>,
    /// The organization owning the resource (cross-org access detection; 1.1+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_org_id: Option<Text>,
    /// Roles at the time of access: at most 25, each 1..=64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Arc<[Text]>>,
}

impl Actor {
    /// A human user.
    pub fn human(subject_id: impl Into<Text>) -> Actor {
        Actor::new(subject_id.into(), SubjectType::Human)
    }

    /// A service principal.
    pub fn service(subject_id: impl Into<Text>) -> Actor {
        Actor::new(subject_id.into(), SubjectType::Service)
    }

    /// An AI agent (schema 2.0; needs a `delegation` block).
    pub fn agent(subject_id: impl Into<Text>) -> Actor {
        Actor::new(subject_id.into(), SubjectType::Agent)
    }

    fn new(subject_id: Text, subject_type: SubjectType) -> Actor {
        Actor {
            subject_id,
            subject_type,
            org_id: None,
            owner_org_id: None,
            roles: None,
        }
    }

    /// Sets the actor's organization.
    pub fn org(mut self, org_id: impl Into<Text>) -> Actor {
        self.org_id = Some(org_id.into());
        self
    }

    /// Sets the organization that owns the accessed resource.
    pub fn owner_org(mut self, owner_org_id: impl Into<Text>) -> Actor {
        self.owner_org_id = Some(owner_org_id.into());
        self
    }

    /// Sets the roles.
    pub fn roles<I, S>(mut self, roles: I) -> Actor
    where
        I: IntoIterator<Item = S>,
        S: Into<Text>,
    {
        self.roles = Some(collect_roles(roles.into_iter().map(Into::into)));
        self
    }
}

/// The roles in one allocation of their exact size: up to eight are
/// gathered on the stack first (collecting an iterator of unknown length
/// into an `Arc<[_]>` builds a vector and then copies it).
fn collect_roles(mut roles: impl Iterator<Item = Text>) -> Arc<[Text]> {
    const ON_STACK: usize = 8;
    let mut first: [Option<Text>; ON_STACK] = Default::default();
    let mut n = 0;
    for slot in &mut first {
        match roles.next() {
            Some(r) => {
                *slot = Some(r);
                n += 1;
            }
            None => break,
        }
    }
    // Each of the first `n` slots holds a role (never the placeholder).
    let taken = first[..n]
        .iter_mut()
        .map(|r| r.take().unwrap_or(Text::EMPTY));
    if n < ON_STACK {
        // A slice iterator's length is known: one allocation.
        return taken.collect();
    }
    taken.chain(roles).collect()
}

/// What was done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The action type.
    #[serde(rename = "type")]
    pub kind: ActionType,
    /// A specific action name (`read_chart`), at most 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text>,
    /// Whether regulated PHI was touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phi_touched: Option<bool>,
    /// Classification of the data touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_classification: Option<DataClassification>,
}

/// What it was done to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// Resource type (`Patient`, `Note`), 1..=128 characters.
    #[serde(rename = "type")]
    pub kind: Text,
    /// Resource identifier, 1..=256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Text>,
    /// Patient identifier, 1..=256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<Text>,
}

/// How it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// SUCCESS, FAILURE or DENIED.
    pub status: OutcomeStatus,
    /// Error category, 1..=128 characters; required on FAILURE and DENIED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<Text>,
    /// Sanitized message, at most 500 characters; required on FAILURE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<Text>,
}

impl Outcome {
    /// A successful outcome.
    pub const SUCCESS: Outcome = Outcome {
        status: OutcomeStatus::Success,
        error_type: None,
        error_message: None,
    };

    /// A failure with its error type and (PHI-free) message.
    pub fn failure(error_type: impl Into<Text>, message: impl Into<Text>) -> Outcome {
        Outcome {
            status: OutcomeStatus::Failure,
            error_type: Some(error_type.into()),
            error_message: Some(message.into()),
        }
    }

    /// A denial with its category (`RoleDenied`, `CrossOrg`, `Consent`, ...).
    pub fn denied(error_type: impl Into<Text>) -> Outcome {
        Outcome {
            status: OutcomeStatus::Denied,
            error_type: Some(error_type.into()),
            error_message: None,
        }
    }

    /// Adds a (PHI-free) message, e.g. to a denial.
    pub fn with_message(mut self, message: impl Into<Text>) -> Outcome {
        self.error_message = Some(message.into());
        self
    }
}

/// Correlation identifiers; at least one must be set when the block is present.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correlation {
    /// Request identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Text>,
    /// Distributed trace identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<Text>,
    /// Session identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Text>,
}

impl Correlation {
    /// True when no identifier is set.
    pub fn is_empty(&self) -> bool {
        self.request_id.is_none() && self.trace_id.is_none() && self.session_id.is_none()
    }
}

/// The HTTP request that caused the action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Route template (`/patients/{id}`), never the raw path; at most 512 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_template: Option<Text>,
    /// Response status, 100..=599.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Client IPv4 or IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<Text>,
    /// User agent, at most 512 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Text>,
}

/// Tamper-evident chaining fields, written by a chaining sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integrity {
    /// Hex digest of this event (see the `integrity` module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_hash: Option<Text>,
    /// Hex digest of the previous event in the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_event_hash: Option<Text>,
    /// Algorithm of both digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_alg: Option<HashAlg>,
}

/// Agent delegation (schema 2.0): who acted on whose authority.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    /// The acting agent.
    pub acting: ActingAgent,
    /// The authorizing human.
    pub authorizing: AuthorizingHuman,
    /// Oversight state.
    pub delegation_type: DelegationType,
    /// Agent session identifier, 1..=256 characters.
    pub agent_session_id: Text,
    /// 1 for an agent delegated directly by a human, 2+ for sub-agents (max 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_depth: Option<u32>,
    /// Parent agent session; present exactly when `chain_depth >= 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_agent_session_id: Option<Text>,
}

/// The agent that acted under delegation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActingAgent {
    /// Agent identity.
    pub subject_id: Text,
    /// Always [`SubjectType::Agent`].
    pub subject_type: SubjectType,
    /// Agent descriptor.
    pub agent: AgentInfo,
}

/// Describes an agent; no field may carry prompt or configuration text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    /// Interaction surface.
    pub interface: AgentInterface,
    /// Vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<Text>,
    /// Model family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_family: Option<Text>,
    /// Model version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<Text>,
    /// Harness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness: Option<Text>,
    /// Harness version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness_version: Option<Text>,
}

/// The human on whose authority an agent acted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizingHuman {
    /// Human identity.
    pub subject_id: Text,
    /// Always [`SubjectType::Human`].
    pub subject_type: SubjectType,
    /// The human's organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<Text>,
}

/// One audit event.
///
/// Build events with [`crate::EventBuilder`] (or let `#[audited]` do it); a
/// dispatcher fills in the service, timestamp and identifiers, applies the
/// config and hands the event to its sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// The schema version this event conforms to.
    pub schema_version: SchemaVersion,
    /// UUIDv4, written hyphenated (36 characters).
    #[serde(serialize_with = "ser_uuid", deserialize_with = "de_uuid")]
    pub event_id: Uuid,
    /// When the action happened, UTC, milliseconds.
    pub timestamp: Timestamp,
    /// The emitting service.
    pub service: Service,
    /// Who acted.
    pub actor: Actor,
    /// What was done.
    pub action: Action,
    /// To what.
    pub resource: Resource,
    /// How it ended.
    pub outcome: Outcome,
    /// Correlation identifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Correlation>,
    /// The HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
    /// Agent delegation (2.0 only). Boxed: it is rare and large, and events
    /// move through queues by value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Box<Delegation>>,
    /// Scalar metadata, at most 20 keys.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// Chain hashes, set by a chaining sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Integrity>,
}

fn ser_uuid<S: Serializer>(u: &Uuid, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 36];
    s.serialize_str(u.hyphenated().encode_lower(&mut buf))
}

fn de_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    if s.len() != 36 {
        return Err(serde::de::Error::custom(
            "event_id must be a hyphenated UUID of 36 characters",
        ));
    }
    Uuid::parse_str(&s).map_err(serde::de::Error::custom)
}

impl AuditEvent {
    /// True if the event uses something only schema 2.0 has: an agent actor,
    /// the OVERRIDE action or a delegation block.
    pub fn uses_v2_features(&self) -> bool {
        self.actor.subject_type == SubjectType::Agent
            || self.action.kind == ActionType::Override
            || self.delegation.is_some()
    }
}
