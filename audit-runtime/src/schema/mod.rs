//! Validation of audit events against bh-audit-schema 1.0, 1.1 and 2.0, and
//! version targeting (2.0 → 1.1 → 1.0).
//!
//! The validator is hand-written: it enforces every rule of the three schema
//! files (required members, types, enums, constants, `additionalProperties:
//! false`, string lengths in characters, array and object sizes, formats,
//! `dependentRequired` and the `allOf` conditionals) and reports *all*
//! violations at once, each with the JSON Pointer of the offending member.
//!
//! Messages never contain a field's value, since values may be PHI: they name
//! the rule ("must be at most 256 characters (has 300)", "unknown property
//! (not allowed by schema 1.1)", "must be one of READ, CREATE, ..."), never
//! the data. Paths do hold member names as written (a JSON Pointer); a tool
//! printing them for untrusted input escapes or hides the names it does not
//! know (the `phi-audit` command does).
//!
//! Where the schema leaves room for interpretation, the validator accepts
//! exactly what the reference implementation (bh-audit-logger 2.0.0 with
//! `jsonschema`'s format checker) accepts:
//!
//! - `type: integer` accepts numbers with a zero fraction (`200.0`, `2e2`).
//! - `date-time`: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, case-insensitive
//!   `T` and `Z`, year 0001..9999, no leap second (`:60`), no space separator,
//!   an offset is mandatory. Like the reference's regular expression, one
//!   trailing line feed is tolerated.
//! - `ipv4`: four decimal octets without leading zeros; `ipv6`: RFC 4291 text
//!   forms (including an IPv4 tail), never a zone id (`%eth0`).
//! - `uuid`: hyphens at positions 8, 13, 18 and 23 and a value Python's
//!   `uuid.UUID` parses. That parser is lenient (`+`, `0x`, `_` between
//!   digits and surrounding whitespace inside the 32 digits); the lenience is
//!   reproduced, except that non-ASCII decimal digits are rejected here.
//!
//! ```
//! use phi_audit::schema::validate_value;
//! use phi_audit::SchemaVersion;
//!
//! let event = serde_json::json!({
//!     "schema_version": "1.1",
//!     "event_id": "6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10",
//!     "timestamp": "2026-01-02T03:04:05.678Z",
//!     "service": {"name": "charts"},
//!     "actor": {"subject_id": "u-1", "subject_type": "human"},
//!     "action": {"type": "READ"},
//!     "resource": {"type": "Patient"},
//!     "outcome": {"status": "FAILURE", "error_type": "Timeout"}
//! });
//! let errors = validate_value(&event, None).unwrap_err();
//! assert_eq!(errors.len(), 1);
//! assert_eq!(errors.violations()[0].path, "/outcome/error_message");
//!
//! let mut fixed = event.clone();
//! fixed["outcome"]["error_message"] = "upstream timed out".into();
//! assert_eq!(validate_value(&fixed, None).unwrap(), SchemaVersion::V1_1);
//! ```

use std::fmt;

use serde_json::{Map, Value};

use crate::model::event::{ActionType, AuditEvent, OutcomeStatus, SubjectType};
use crate::model::limits::{
    CHAIN_DEPTH, EVENT_ID, HTTP_TEXT, ID, MESSAGE, METADATA, NAME, ROLE, ROLES, SERVICE_TAG, STATUS,
};
use crate::util::text::Text;
use crate::SchemaVersion;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One rule an event breaks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Violation {
    /// JSON Pointer (RFC 6901) of the offending member, or of the missing
    /// member for a required one: `/outcome/error_type`, `/actor/roles/3`,
    /// `` (empty) for the event itself.
    pub path: String,
    /// What is wrong, without the member's value.
    pub message: String,
}

impl Violation {
    /// The JSON Pointer of the offending member (empty for the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong. Never contains the member's value.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// Every violation found in one event (never empty).
///
/// `Display` writes one violation per line, as `path: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors {
    violations: Vec<Violation>,
}

impl ValidationErrors {
    /// The violations, in the order found.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Number of violations (at least 1).
    pub fn len(&self) -> usize {
        self.violations.len()
    }

    /// Always false: a `ValidationErrors` holds at least one violation.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// Iterates over the violations.
    pub fn iter(&self) -> std::slice::Iter<'_, Violation> {
        self.violations.iter()
    }

    /// True if some violation is at exactly `path`.
    pub fn has_path(&self, path: &str) -> bool {
        self.violations.iter().any(|v| v.path == path)
    }

    /// The violations, by value.
    pub fn into_violations(self) -> Vec<Violation> {
        self.violations
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl IntoIterator for ValidationErrors {
    type Item = Violation;
    type IntoIter = std::vec::IntoIter<Violation>;
    fn into_iter(self) -> Self::IntoIter {
        self.violations.into_iter()
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a Violation;
    type IntoIter = std::slice::Iter<'a, Violation>;
    fn into_iter(self) -> Self::IntoIter {
        self.violations.iter()
    }
}

// ---------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------

/// Validates a raw JSON value as an audit event.
///
/// With `version` set, the event is checked against that version's rules
/// (so its `schema_version` must say the same). With `None`, the version is
/// the one the event's `schema_version` names; when that is missing or not
/// one of `"1.0"`, `"1.1"`, `"2.0"` (a number such as `1.1` does not count),
/// that is a violation and the rest of the event is checked against the
/// newest rules (2.0), so every other problem is reported too.
///
/// Returns the version checked against, or every violation found. Never
/// panics, whatever the input.
pub fn validate_value(
    value: &Value,
    version: Option<SchemaVersion>,
) -> Result<SchemaVersion, ValidationErrors> {
    let mut cx = Checker {
        version: version.unwrap_or(SchemaVersion::V2_0),
        skip_version_member: false,
        path: String::new(),
        out: Vec::new(),
    };
    let Some(root) = value.as_object() else {
        cx.push(format!("must be an object (found {})", kind(value)));
        return Err(cx.finish_err());
    };
    if version.is_none() {
        match root.get("schema_version") {
            Some(Value::String(s)) if SchemaVersion::from_str(s).is_some() => {
                if let Some(v) = SchemaVersion::from_str(s) {
                    cx.version = v;
                }
            }
            other => {
                cx.skip_version_member = true;
                cx.child("schema_version", |cx| {
                    let what = if other.is_none() {
                        "is required"
                    } else {
                        "is not a supported version"
                    };
                    cx.push(format!(
                        "{what}: must be one of \"1.0\", \"1.1\", \"2.0\" (a string); \
                         checked against the 2.0 rules"
                    ));
                });
            }
        }
    }
    cx.object(root_of(cx.version), root);
    cx.conditionals(root);
    if cx.out.is_empty() {
        Ok(cx.version)
    } else {
        Err(cx.finish_err())
    }
}

/// Validates a typed event against the version its `schema_version` names.
///
/// The typed model already rules out many mistakes (wrong types, unknown
/// members); this checks the rest: lengths, sizes, formats, version-specific
/// enums (DENIED in 1.0, OVERRIDE before 2.0, ...) and conditionals.
pub fn validate(event: &AuditEvent) -> Result<(), ValidationErrors> {
    validate_as(event, event.schema_version)
}

/// Validates a typed event against `version`, whatever its `schema_version`
/// says (a mismatch is a violation at `/schema_version`).
pub fn validate_as(event: &AuditEvent, version: SchemaVersion) -> Result<(), ValidationErrors> {
    match serde_json::to_value(event) {
        Ok(v) => validate_value(&v, Some(version)).map(|_| ()),
        Err(_) => Err(ValidationErrors {
            violations: vec![Violation {
                path: String::new(),
                message: "the event could not be serialized to JSON".to_owned(),
            }],
        }),
    }
}

// ---------------------------------------------------------------------------
// Rule tables
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Format {
    Uuid,
    DateTime,
    Ip,
}

#[derive(Clone, Copy)]
enum Node {
    /// `type: string` with length bounds (characters) and an optional format.
    Str {
        min: usize,
        max: Option<usize>,
        format: Option<Format>,
    },
    /// `type: string` with an `enum`.
    Enum(&'static [&'static str]),
    /// `type: string` with a `const`.
    Const(&'static str),
    Bool,
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
    Array {
        items: &'static Node,
        max_items: Option<usize>,
    },
    Object(&'static Obj),
    /// `metadata`: an object whose values are free (1.0) or scalar (1.1+).
    Metadata {
        scalar_only: bool,
        max_props: Option<usize>,
    },
}

struct Obj {
    props: &'static [(&'static str, Node)],
    required: &'static [&'static str],
    min_props: usize,
    /// `dependentRequired`: when the first member is present, so must be the others.
    dependent: &'static [(&'static str, &'static [&'static str])],
}

const fn text() -> Node {
    Node::Str {
        min: 0,
        max: None,
        format: None,
    }
}

const fn text_min(min: usize) -> Node {
    Node::Str {
        min,
        max: None,
        format: None,
    }
}

const fn text_max(max: usize) -> Node {
    Node::Str {
        min: 0,
        max: Some(max),
        format: None,
    }
}

const fn text_len(min: usize, max: usize) -> Node {
    Node::Str {
        min,
        max: Some(max),
        format: None,
    }
}

const fn int(min: Option<i64>, max: Option<i64>) -> Node {
    Node::Int { min, max }
}

const ACTIONS_1: &[&str] = &[
    "READ", "CREATE", "UPDATE", "DELETE", "EXPORT", "LOGIN", "LOGOUT", "PRINT", "OTHER",
];
const ACTIONS_2: &[&str] = &[
    "READ", "CREATE", "UPDATE", "DELETE", "EXPORT", "LOGIN", "LOGOUT", "PRINT", "OVERRIDE", "OTHER",
];
const STATUSES_1_0: &[&str] = &["SUCCESS", "FAILURE"];
const STATUSES: &[&str] = &["SUCCESS", "FAILURE", "DENIED"];
const CLASSIFICATIONS: &[&str] = &["PHI", "PII", "NONE", "UNKNOWN"];
const SUBJECTS_1: &[&str] = &["human", "service"];
const SUBJECTS_2: &[&str] = &["human", "service", "agent"];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
const HASH_ALGS: &[&str] = &["sha256", "sha384", "sha512"];
const INTERFACES: &[&str] = &["ui_driving", "api", "mcp", "cli", "sdk"];
const DELEGATION_TYPES: &[&str] = &["supervised", "autonomous", "scheduled"];

const REQUIRED_ROOT: &[&str] = &[
    "schema_version",
    "event_id",
    "timestamp",
    "service",
    "actor",
    "action",
    "resource",
    "outcome",
];

// --- 1.0 ---

static SERVICE_1_0: Obj = Obj {
    props: &[
        ("name", text_min(1)),
        ("environment", text()),
        ("version", text()),
    ],
    required: &["name"],
    min_props: 0,
    dependent: &[],
};

static CORRELATION_1_0: Obj = Obj {
    props: &[
        ("request_id", text()),
        ("trace_id", text()),
        ("session_id", text()),
    ],
    required: &[],
    min_props: 0,
    dependent: &[],
};

static ROLE_1_0: Node = text();

static ACTOR_1_0: Obj = Obj {
    props: &[
        ("subject_id", text_min(1)),
        ("subject_type", Node::Enum(SUBJECTS_1)),
        ("org_id", text()),
        (
            "roles",
            Node::Array {
                items: &ROLE_1_0,
                max_items: None,
            },
        ),
    ],
    required: &["subject_id", "subject_type"],
    min_props: 0,
    dependent: &[],
};

static ACTION_1_0: Obj = Obj {
    props: &[
        ("type", Node::Enum(ACTIONS_1)),
        ("name", text()),
        ("phi_touched", Node::Bool),
        ("data_classification", Node::Enum(CLASSIFICATIONS)),
    ],
    required: &["type"],
    min_props: 0,
    dependent: &[],
};

static RESOURCE_1_0: Obj = Obj {
    props: &[
        ("type", text_min(1)),
        ("id", text()),
        ("patient_id", text()),
    ],
    required: &["type"],
    min_props: 0,
    dependent: &[],
};

static HTTP_1_0: Obj = Obj {
    props: &[
        ("method", text()),
        ("route_template", text()),
        ("status_code", int(None, None)),
        ("client_ip", text()),
        ("user_agent", text()),
    ],
    required: &[],
    min_props: 0,
    dependent: &[],
};

static OUTCOME_1_0: Obj = Obj {
    props: &[
        ("status", Node::Enum(STATUSES_1_0)),
        ("error_type", text()),
        ("error_message", text()),
    ],
    required: &["status"],
    min_props: 0,
    dependent: &[],
};

static INTEGRITY_1_0: Obj = Obj {
    props: &[
        ("event_hash", text()),
        ("prev_event_hash", text()),
        ("hash_alg", text()),
    ],
    required: &[],
    min_props: 0,
    dependent: &[],
};

static ROOT_1_0: Obj = Obj {
    props: &[
        ("schema_version", Node::Const("1.0")),
        ("event_id", text_min(16)),
        (
            "timestamp",
            Node::Str {
                min: 0,
                max: None,
                format: Some(Format::DateTime),
            },
        ),
        ("service", Node::Object(&SERVICE_1_0)),
        ("correlation", Node::Object(&CORRELATION_1_0)),
        ("actor", Node::Object(&ACTOR_1_0)),
        ("action", Node::Object(&ACTION_1_0)),
        ("resource", Node::Object(&RESOURCE_1_0)),
        ("http", Node::Object(&HTTP_1_0)),
        ("outcome", Node::Object(&OUTCOME_1_0)),
        ("integrity", Node::Object(&INTEGRITY_1_0)),
        (
            "metadata",
            Node::Metadata {
                scalar_only: false,
                max_props: None,
            },
        ),
    ],
    required: REQUIRED_ROOT,
    min_props: 0,
    dependent: &[],
};

/// The rule table of the root object of `version`.
fn root_of(version: SchemaVersion) -> &'static Obj {
    match version {
        SchemaVersion::V1_0 => &ROOT_1_0,
        SchemaVersion::V1_1 => &ROOT_1_1,
        SchemaVersion::V2_0 => &ROOT_2_0,
    }
}

// --- 1.1 (and the parts 2.0 shares) ---

const EVENT_ID_1_1: Node = Node::Str {
    min: EVENT_ID,
    max: Some(EVENT_ID),
    format: Some(Format::Uuid),
};

const TIMESTAMP: Node = Node::Str {
    min: 0,
    max: None,
    format: Some(Format::DateTime),
};

const METADATA_1_1: Node = Node::Metadata {
    scalar_only: true,
    max_props: Some(METADATA),
};

static SERVICE_1_1: Obj = Obj {
    props: &[
        ("name", text_len(1, NAME)),
        ("environment", text_max(SERVICE_TAG)),
        ("version", text_max(SERVICE_TAG)),
    ],
    required: &["name"],
    min_props: 0,
    dependent: &[],
};

static CORRELATION_1_1: Obj = Obj {
    props: &[
        ("request_id", text_len(1, ID)),
        ("trace_id", text_len(1, ID)),
        ("session_id", text_len(1, ID)),
    ],
    required: &[],
    min_props: 1,
    dependent: &[],
};

static ROLE_1_1: Node = text_len(1, ROLE);

const ROLES_1_1: Node = Node::Array {
    items: &ROLE_1_1,
    max_items: Some(ROLES),
};

static ACTOR_1_1: Obj = Obj {
    props: &[
        ("subject_id", text_len(1, ID)),
        ("subject_type", Node::Enum(SUBJECTS_1)),
        ("org_id", text_len(1, NAME)),
        ("owner_org_id", text_len(1, NAME)),
        ("roles", ROLES_1_1),
    ],
    required: &["subject_id", "subject_type"],
    min_props: 0,
    dependent: &[],
};

static ACTION_1_1: Obj = Obj {
    props: &[
        ("type", Node::Enum(ACTIONS_1)),
        ("name", text_max(NAME)),
        ("phi_touched", Node::Bool),
        ("data_classification", Node::Enum(CLASSIFICATIONS)),
    ],
    required: &["type"],
    min_props: 0,
    dependent: &[],
};

static RESOURCE_1_1: Obj = Obj {
    props: &[
        ("type", text_len(1, NAME)),
        ("id", text_len(1, ID)),
        ("patient_id", text_len(1, ID)),
    ],
    required: &["type"],
    min_props: 0,
    dependent: &[],
};

static HTTP_1_1: Obj = Obj {
    props: &[
        ("method", Node::Enum(METHODS)),
        ("route_template", text_max(HTTP_TEXT)),
        ("status_code", int(Some(STATUS.0), Some(STATUS.1))),
        (
            "client_ip",
            Node::Str {
                min: 0,
                max: None,
                format: Some(Format::Ip),
            },
        ),
        ("user_agent", text_max(HTTP_TEXT)),
    ],
    required: &[],
    min_props: 0,
    dependent: &[],
};

static OUTCOME_1_1: Obj = Obj {
    props: &[
        ("status", Node::Enum(STATUSES)),
        ("error_type", text_len(1, NAME)),
        ("error_message", text_max(MESSAGE)),
    ],
    required: &["status"],
    min_props: 0,
    dependent: &[],
};

static INTEGRITY_1_1: Obj = Obj {
    props: &[
        ("event_hash", text_len(1, ID)),
        ("prev_event_hash", text_len(1, ID)),
        ("hash_alg", Node::Enum(HASH_ALGS)),
    ],
    required: &[],
    min_props: 0,
    dependent: &[
        ("event_hash", &["hash_alg"]),
        ("prev_event_hash", &["hash_alg", "event_hash"]),
    ],
};

static ROOT_1_1: Obj = Obj {
    props: &[
        ("schema_version", Node::Const("1.1")),
        ("event_id", EVENT_ID_1_1),
        ("timestamp", TIMESTAMP),
        ("service", Node::Object(&SERVICE_1_1)),
        ("correlation", Node::Object(&CORRELATION_1_1)),
        ("actor", Node::Object(&ACTOR_1_1)),
        ("action", Node::Object(&ACTION_1_1)),
        ("resource", Node::Object(&RESOURCE_1_1)),
        ("http", Node::Object(&HTTP_1_1)),
        ("outcome", Node::Object(&OUTCOME_1_1)),
        ("integrity", Node::Object(&INTEGRITY_1_1)),
        ("metadata", METADATA_1_1),
    ],
    required: REQUIRED_ROOT,
    min_props: 0,
    dependent: &[],
};

// --- 2.0 ---

static ACTOR_2_0: Obj = Obj {
    props: &[
        ("subject_id", text_len(1, ID)),
        ("subject_type", Node::Enum(SUBJECTS_2)),
        ("org_id", text_len(1, NAME)),
        ("owner_org_id", text_len(1, NAME)),
        ("roles", ROLES_1_1),
    ],
    required: &["subject_id", "subject_type"],
    min_props: 0,
    dependent: &[],
};

static ACTION_2_0: Obj = Obj {
    props: &[
        ("type", Node::Enum(ACTIONS_2)),
        ("name", text_max(NAME)),
        ("phi_touched", Node::Bool),
        ("data_classification", Node::Enum(CLASSIFICATIONS)),
    ],
    required: &["type"],
    min_props: 0,
    dependent: &[],
};

static AGENT_INFO: Obj = Obj {
    props: &[
        ("interface", Node::Enum(INTERFACES)),
        ("vendor", text_len(1, NAME)),
        ("model_family", text_len(1, NAME)),
        ("model_version", text_len(1, NAME)),
        ("harness", text_len(1, NAME)),
        ("harness_version", text_len(1, NAME)),
    ],
    required: &["interface"],
    min_props: 0,
    dependent: &[],
};

static ACTING: Obj = Obj {
    props: &[
        ("subject_id", text_len(1, ID)),
        ("subject_type", Node::Const("agent")),
        ("agent", Node::Object(&AGENT_INFO)),
    ],
    required: &["subject_id", "subject_type", "agent"],
    min_props: 0,
    dependent: &[],
};

static AUTHORIZING: Obj = Obj {
    props: &[
        ("subject_id", text_len(1, ID)),
        ("subject_type", Node::Const("human")),
        ("org_id", text_len(1, NAME)),
    ],
    required: &["subject_id", "subject_type"],
    min_props: 0,
    dependent: &[],
};

static DELEGATION: Obj = Obj {
    props: &[
        ("acting", Node::Object(&ACTING)),
        ("authorizing", Node::Object(&AUTHORIZING)),
        ("delegation_type", Node::Enum(DELEGATION_TYPES)),
        ("agent_session_id", text_len(1, ID)),
        ("chain_depth", int(Some(CHAIN_DEPTH.0), Some(CHAIN_DEPTH.1))),
        ("parent_agent_session_id", text_len(1, ID)),
    ],
    required: &[
        "acting",
        "authorizing",
        "delegation_type",
        "agent_session_id",
    ],
    min_props: 0,
    dependent: &[],
};

static ROOT_2_0: Obj = Obj {
    props: &[
        ("schema_version", Node::Const("2.0")),
        ("event_id", EVENT_ID_1_1),
        ("timestamp", TIMESTAMP),
        ("service", Node::Object(&SERVICE_1_1)),
        ("correlation", Node::Object(&CORRELATION_1_1)),
        ("actor", Node::Object(&ACTOR_2_0)),
        ("delegation", Node::Object(&DELEGATION)),
        ("action", Node::Object(&ACTION_2_0)),
        ("resource", Node::Object(&RESOURCE_1_1)),
        ("http", Node::Object(&HTTP_1_1)),
        ("outcome", Node::Object(&OUTCOME_1_1)),
        ("integrity", Node::Object(&INTEGRITY_1_1)),
        ("metadata", METADATA_1_1),
    ],
    required: REQUIRED_ROOT,
    min_props: 0,
    dependent: &[],
};

// ---------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------

struct Checker {
    version: SchemaVersion,
    /// Set when `schema_version` was already reported as unusable.
    skip_version_member: bool,
    /// JSON Pointer of the member being checked.
    path: String,
    out: Vec<Violation>,
}

impl Checker {
    fn push(&mut self, message: String) {
        self.out.push(Violation {
            path: self.path.clone(),
            message,
        });
    }

    fn finish_err(self) -> ValidationErrors {
        ValidationErrors {
            violations: self.out,
        }
    }

    /// Runs `f` with the path extended by `key` (escaped per RFC 6901).
    fn child<R>(&mut self, key: &str, f: impl FnOnce(&mut Checker) -> R) -> R {
        let len = self.path.len();
        self.path.push('/');
        if !key.contains(['~', '/']) {
            self.path.push_str(key);
        } else {
            self.escaped(key);
        }
        let r = f(self);
        self.path.truncate(len);
        r
    }

    /// Appends `key` to the path, escaped per RFC 6901.
    fn escaped(&mut self, key: &str) {
        for c in key.chars() {
            match c {
                '~' => self.path.push_str("~0"),
                '/' => self.path.push_str("~1"),
                c => self.path.push(c),
            }
        }
    }

    fn index<R>(&mut self, i: usize, f: impl FnOnce(&mut Checker) -> R) -> R {
        use std::fmt::Write;
        let len = self.path.len();
        let _ = write!(self.path, "/{i}");
        let r = f(self);
        self.path.truncate(len);
        r
    }

    fn node(&mut self, node: &Node, v: &Value) {
        match *node {
            Node::Str { min, max, format } => {
                let Value::String(s) = v else {
                    return self.push(format!("must be a string (found {})", kind(v)));
                };
                self.length(s, min, max);
                if let Some(fmt) = format {
                    self.format(fmt, s);
                }
            }
            Node::Enum(options) => {
                if !matches!(v, Value::String(s) if options.contains(&s.as_str())) {
                    self.push(format!("must be one of {}", options.join(", ")));
                }
            }
            Node::Const(c) => {
                if !matches!(v, Value::String(s) if s == c) {
                    self.push(format!("must be \"{c}\""));
                }
            }
            Node::Bool => {
                if !v.is_boolean() {
                    self.push(format!("must be a boolean (found {})", kind(v)));
                }
            }
            Node::Int { min, max } => match as_integer(v) {
                Some(n) => {
                    if let Some(min) = min {
                        if n < min as f64 {
                            self.push(format!("must be at least {min}"));
                        }
                    }
                    if let Some(max) = max {
                        if n > max as f64 {
                            self.push(format!("must be at most {max}"));
                        }
                    }
                }
                None => {
                    let found = if v.is_number() {
                        "a number with a fraction"
                    } else {
                        kind(v)
                    };
                    self.push(format!("must be an integer (found {found})"));
                }
            },
            Node::Array { items, max_items } => {
                let Value::Array(a) = v else {
                    return self.push(format!("must be an array (found {})", kind(v)));
                };
                if let Some(max) = max_items {
                    if a.len() > max {
                        self.push(format!("must have at most {max} items (has {})", a.len()));
                    }
                }
                for (i, item) in a.iter().enumerate() {
                    self.index(i, |cx| cx.node(items, item));
                }
            }
            Node::Object(obj) => match v {
                Value::Object(m) => self.object(obj, m),
                _ => self.push(format!("must be an object (found {})", kind(v))),
            },
            Node::Metadata {
                scalar_only,
                max_props,
            } => {
                let Value::Object(m) = v else {
                    return self.push(format!("must be an object (found {})", kind(v)));
                };
                if let Some(max) = max_props {
                    if m.len() > max {
                        self.push(format!(
                            "must have at most {max} properties (has {})",
                            m.len()
                        ));
                    }
                }
                if scalar_only {
                    for (k, val) in m {
                        if val.is_array() || val.is_object() {
                            self.child(k, |cx| {
                                cx.push(format!(
                                    "must be a scalar: string, number, boolean or null (found {})",
                                    kind(val)
                                ))
                            });
                        }
                    }
                }
            }
        }
    }

    fn object(&mut self, obj: &Obj, m: &Map<String, Value>) {
        let at_root = self.path.is_empty();
        for &req in obj.required {
            if at_root && self.skip_version_member && req == "schema_version" {
                continue;
            }
            if !m.contains_key(req) {
                self.child(req, |cx| cx.push("is required".to_owned()));
            }
        }
        if m.len() < obj.min_props {
            self.push(format!(
                "must have at least {} propert{}",
                obj.min_props,
                if obj.min_props == 1 { "y" } else { "ies" }
            ));
        }
        for (k, v) in m {
            if at_root && self.skip_version_member && k == "schema_version" {
                continue;
            }
            match obj.props.iter().find(|(name, _)| *name == k.as_str()) {
                Some((_, node)) => self.child(k, |cx| cx.node(node, v)),
                None => self.child(k, |cx| {
                    // The name is in the path; the message does not repeat it.
                    cx.push(format!(
                        "unknown property (not allowed by schema {})",
                        cx.version
                    ))
                }),
            }
        }
        for &(trigger, needs) in obj.dependent {
            if !m.contains_key(trigger) {
                continue;
            }
            for &need in needs {
                if !m.contains_key(need) {
                    self.child(need, |cx| {
                        cx.push(format!("is required when `{trigger}` is present"))
                    });
                }
            }
        }
    }

    fn length(&mut self, s: &str, min: usize, max: Option<usize>) {
        if min == 0 && max.is_none() {
            return;
        }
        // A string of n bytes has at most n characters (and at least one
        // when n > 0): skip counting when the byte length settles it.
        let bytes = s.len();
        if min <= 1.min(bytes) && max.is_none_or(|max| bytes <= max) {
            return;
        }
        let n = s.chars().count();
        if n < min {
            self.push(format!(
                "must be at least {min} character{} (has {n})",
                if min == 1 { "" } else { "s" }
            ));
        }
        if let Some(max) = max {
            if n > max {
                self.push(format!("must be at most {max} characters (has {n})"));
            }
        }
    }

    fn format(&mut self, fmt: Format, s: &str) {
        match fmt {
            Format::Uuid => {
                if !is_uuid(s) {
                    self.push("must be a UUID (8-4-4-4-12 hexadecimal digits)".to_owned());
                }
            }
            Format::DateTime => {
                if !is_date_time(s) {
                    self.push(
                        "must be an RFC 3339 date-time with an offset, \
                         like 2026-01-02T03:04:05.678Z"
                            .to_owned(),
                    );
                }
            }
            Format::Ip => {
                if !is_ip(s) {
                    self.push("must be an IPv4 or IPv6 address".to_owned());
                }
            }
        }
    }

    /// The `allOf` conditionals of 1.1 and 2.0 (1.0 has none).
    fn conditionals(&mut self, root: &Map<String, Value>) {
        if self.version == SchemaVersion::V1_0 {
            return;
        }
        if let Some(Value::Object(outcome)) = root.get("outcome") {
            let status = outcome.get("status").and_then(Value::as_str);
            let needs: &[&str] = match status {
                Some("FAILURE") => &["error_type", "error_message"],
                Some("DENIED") => &["error_type"],
                _ => &[],
            };
            for &need in needs {
                if !outcome.contains_key(need) {
                    self.child("outcome", |cx| {
                        cx.child(need, |cx| {
                            cx.push(format!(
                                "is required when outcome.status is {}",
                                status.unwrap_or_default()
                            ))
                        })
                    });
                }
            }
        }
        if self.version != SchemaVersion::V2_0 {
            return;
        }
        let delegation = root.get("delegation");
        if let Some(Value::Object(actor)) = root.get("actor") {
            if actor.get("subject_type").and_then(Value::as_str) == Some("agent")
                && delegation.is_none()
            {
                self.child("delegation", |cx| {
                    cx.push("is required when actor.subject_type is agent".to_owned())
                });
            }
        }
        if let Some(Value::Object(d)) = delegation {
            let depth = d.get("chain_depth");
            let depth_n = depth.and_then(as_integer);
            let deep = depth_n.is_some_and(|n| n >= 2.0);
            let has_parent = d.contains_key("parent_agent_session_id");
            if deep && !has_parent {
                self.child("delegation", |cx| {
                    cx.child("parent_agent_session_id", |cx| {
                        cx.push("is required when chain_depth is 2 or more".to_owned())
                    })
                });
            }
            if has_parent {
                self.child("delegation", |cx| {
                    cx.child("chain_depth", |cx| match depth {
                        None => cx
                            .push("is required when parent_agent_session_id is present".to_owned()),
                        // Non-integers are already reported by the type check.
                        Some(_) if depth_n.is_some_and(|n| n < 2.0) => cx.push(
                            "must be at least 2 when parent_agent_session_id is present".to_owned(),
                        ),
                        Some(_) => {}
                    })
                });
            }
        }
        if let Some(Value::Object(action)) = root.get("action") {
            if action.get("type").and_then(Value::as_str) == Some("OVERRIDE") {
                self.override_rules(root);
            }
        }
    }

    fn override_rules(&mut self, root: &Map<String, Value>) {
        const WHY: &str = "when action.type is OVERRIDE";
        if let Some(Value::Object(actor)) = root.get("actor") {
            if let Some(t) = actor.get("subject_type") {
                if t.as_str() != Some("human") {
                    self.child("actor", |cx| {
                        cx.child("subject_type", |cx| {
                            cx.push(format!("must be \"human\" {WHY}"))
                        })
                    });
                }
            }
        }
        if let Some(Value::Object(resource)) = root.get("resource") {
            if let Some(t) = resource.get("type") {
                if t.as_str() != Some("AgentSession") {
                    self.child("resource", |cx| {
                        cx.child("type", |cx| {
                            cx.push(format!("must be \"AgentSession\" {WHY}"))
                        })
                    });
                }
            }
            if !resource.contains_key("id") {
                self.child("resource", |cx| {
                    cx.child("id", |cx| cx.push(format!("is required {WHY}")))
                });
            }
        }
        if root.contains_key("delegation") {
            self.child("delegation", |cx| cx.push(format!("must be absent {WHY}")));
        }
    }
}

/// The JSON type of a value, for messages (never the value itself).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value as a number if it is a JSON Schema integer (a number whose
/// fraction is zero, as `jsonschema` decides: `200.0` counts).
fn as_integer(v: &Value) -> Option<f64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i as f64);
    }
    if let Some(u) = n.as_u64() {
        return Some(u as f64);
    }
    as_integer_f64(n.as_f64()?)
}

/// A float as a JSON Schema integer: finite with a zero fraction.
fn as_integer_f64(f: f64) -> Option<f64> {
    (f.is_finite() && f.fract() == 0.0).then_some(f)
}

// ---------------------------------------------------------------------------
// Formats (matching the reference's format checker)
// ---------------------------------------------------------------------------

/// `format: ipv4` or `format: ipv6` as Python's `ipaddress` decides, which
/// `std::net` matches: no leading zeros in IPv4 octets, no zone id.
fn is_ip(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok() || s.parse::<std::net::Ipv6Addr>().is_ok()
}

/// `format: date-time` as `rfc3339-validator` decides (after `jsonschema`
/// upper-cases the string).
fn is_date_time(s: &str) -> bool {
    // Python's `$` also matches before one final line feed.
    let s = s.strip_suffix('\n').unwrap_or(s);
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        let mut v = 0u32;
        for &c in part {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    };
    let at = |i: usize, want: &[u8]| b.get(i).is_some_and(|c| want.contains(c));
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":")) {
        return false;
    }
    let (Some(h), Some(mi), Some(sec)) = (digits(11..13), digits(14..16), digits(17..19)) else {
        return false;
    };
    if year == 0 || !(1..=12).contains(&month) || h > 23 || mi > 59 || sec > 59 {
        return false;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let max_day = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=max_day).contains(&day) {
        return false;
    }
    let mut i = 19;
    if at(i, b".") {
        let start = i + 1;
        i = start;
        while at(i, b"0123456789") {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i + 6 == b.len()
                && at(i + 3, b":")
                && digits(i + 1..i + 3).is_some_and(|oh| oh <= 23)
                && digits(i + 4..i + 6).is_some_and(|om| om <= 59)
        }
        _ => false,
    }
}

/// `format: uuid` as `jsonschema` decides: hyphens at character positions
/// 8, 13, 18 and 23, and Python's `uuid.UUID(s)` accepts the string.
fn is_uuid(s: &str) -> bool {
    // The usual form, 8-4-4-4-12 hexadecimal digits, settles it at once.
    let b = s.as_bytes();
    if b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
    {
        return true;
    }
    let hyphens_ok = [8usize, 13, 18, 23]
        .iter()
        .all(|&i| s.chars().nth(i) == Some('-'));
    hyphens_ok && python_uuid_parses(s)
}

/// Python's `uuid.UUID(hex)`: drop `urn:` and `uuid:`, strip braces, drop
/// hyphens, then 32 characters that `int(x, 16)` accepts.
fn python_uuid_parses(s: &str) -> bool {
    let h = s.replace("urn:", "").replace("uuid:", "");
    let h = h.trim_matches(|c| c == '{' || c == '}').replace('-', "");
    h.chars().count() == 32 && python_int16(&h)
}

/// Python's `int(x, 16)` for a string: surrounding whitespace, a sign, an
/// optional `0x` prefix (one `_` may follow it) and hex digits with single
/// underscores between them. Non-ASCII decimal digits, which Python also
/// accepts, are rejected.
fn python_int16(x: &str) -> bool {
    let t = x.trim_matches(char::is_whitespace);
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let t = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(rest) => rest.strip_prefix('_').unwrap_or(rest),
        None => t,
    };
    if t.is_empty() || t.starts_with('_') || t.ends_with('_') || t.contains("__") {
        return false;
    }
    t.chars().all(|c| c.is_ascii_hexdigit() || c == '_')
}

// ---------------------------------------------------------------------------
// Version targeting
// ---------------------------------------------------------------------------

/// What [`retarget`] does with data only schema 2.0 can express when the
/// target is 1.0 or 1.1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DowngradePolicy {
    /// Refuse: [`retarget`] returns a [`RetargetError`] naming the 2.0-only
    /// data and leaves the event unchanged. The default: nothing is lost
    /// silently.
    #[default]
    Reject,
    /// Rewrite the event into its closest 1.x form:
    ///
    /// - an `agent` actor becomes a `service` actor with the same subject id,
    ///   organization and roles: the actor records the identity that
    ///   authenticated, and an agent is non-human code acting under its own
    ///   credentials. (The reference implementation instead collapses the
    ///   actor into the authorizing human; this crate does not attribute to a
    ///   person an action the person did not perform.)
    /// - the `delegation` block is dropped (1.x has no place for it);
    /// - the `OVERRIDE` action becomes `OTHER`, and its `action.name` is set
    ///   to `override` when it had none, so the event still says what
    ///   happened. (The reference refuses OVERRIDE for 1.x in every mode.)
    Downgrade,
}

/// Something only schema 2.0 can express.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum V2Feature {
    /// `actor.subject_type` is `agent`.
    AgentActor,
    /// `action.type` is `OVERRIDE`.
    OverrideAction,
    /// A `delegation` block is present.
    Delegation,
}

impl V2Feature {
    /// Short description, as used in error messages.
    pub const fn describe(self) -> &'static str {
        match self {
            V2Feature::AgentActor => "an agent actor",
            V2Feature::OverrideAction => "the OVERRIDE action",
            V2Feature::Delegation => "a delegation block",
        }
    }
}

impl fmt::Display for V2Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// [`retarget`] refused an event that uses 2.0-only data under
/// [`DowngradePolicy::Reject`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetargetError {
    target: SchemaVersion,
    features: Vec<V2Feature>,
}

impl RetargetError {
    /// The version that was targeted.
    pub fn target(&self) -> SchemaVersion {
        self.target
    }

    /// The 2.0-only data the event uses (at least one).
    pub fn features(&self) -> &[V2Feature] {
        &self.features
    }
}

impl fmt::Display for RetargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "schema {} cannot represent ", self.target)?;
        for (i, feat) in self.features.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(feat.describe())?;
        }
        f.write_str(" (2.0-only); target schema 2.0, or use DowngradePolicy::Downgrade to map them")
    }
}

impl std::error::Error for RetargetError {}

/// Rewrites `event` so it can conform to schema `target`, and sets its
/// `schema_version` to `target`.
///
/// - Targeting 1.0: `DENIED` becomes `FAILURE` (1.0 has no DENIED, as the
///   reference implementation does); a missing `error_type` becomes
///   `AccessDenied` and a missing `error_message` falls back to the
///   `error_type`, so the event also satisfies the FAILURE rule of later
///   versions. `actor.owner_org_id` (absent from 1.0) is dropped.
/// - Targeting 1.1 or later: an empty `correlation` block (which 1.1 forbids)
///   is dropped.
/// - Targeting 1.x with 2.0-only data (agent actor, OVERRIDE, delegation):
///   see [`DowngradePolicy`]. Under `Reject` the event is left unchanged and
///   the error names every 2.0-only item found.
///
/// Data that is merely out of bounds for the target (a string too long for
/// 1.1, say) is not changed: call [`validate`] afterwards.
///
/// ```
/// use phi_audit::schema::{retarget, validate, DowngradePolicy};
/// use phi_audit::{AuditEvent, Outcome, SchemaVersion};
/// # fn event() -> AuditEvent {
/// #     serde_json::from_value(serde_json::json!({
/// #         "schema_version": "1.1",
/// #         "event_id": "6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10",
/// #         "timestamp": "2026-01-02T03:04:05.678Z",
/// #         "service": {"name": "charts"},
/// #         "actor": {"subject_id": "u-1", "subject_type": "human"},
/// #         "action": {"type": "READ"},
/// #         "resource": {"type": "Patient"},
/// #         "outcome": {"status": "SUCCESS"}
/// #     })).unwrap()
/// # }
/// let mut e = event();
/// e.outcome = Outcome::denied("RoleDenied");
/// retarget(&mut e, SchemaVersion::V1_0, DowngradePolicy::Reject).unwrap();
/// assert_eq!(e.outcome, Outcome::failure("RoleDenied", "RoleDenied"));
/// assert!(validate(&e).is_ok());
/// ```
pub fn retarget(
    event: &mut AuditEvent,
    target: SchemaVersion,
    policy: DowngradePolicy,
) -> Result<(), RetargetError> {
    if target != SchemaVersion::V2_0 {
        let mut features = Vec::new();
        if event.actor.subject_type == SubjectType::Agent {
            features.push(V2Feature::AgentActor);
        }
        if event.action.kind == ActionType::Override {
            features.push(V2Feature::OverrideAction);
        }
        if event.delegation.is_some() {
            features.push(V2Feature::Delegation);
        }
        if !features.is_empty() {
            if policy == DowngradePolicy::Reject {
                return Err(RetargetError { target, features });
            }
            if event.actor.subject_type == SubjectType::Agent {
                event.actor.subject_type = SubjectType::Service;
            }
            if event.action.kind == ActionType::Override {
                event.action.kind = ActionType::Other;
                if event.action.name.is_none() {
                    event.action.name = Some(Text::from_static("override"));
                }
            }
            event.delegation = None;
        }
    }
    if target == SchemaVersion::V1_0 {
        let outcome = &mut event.outcome;
        if outcome.status == OutcomeStatus::Denied {
            outcome.status = OutcomeStatus::Failure;
            let error_type = outcome
                .error_type
                .get_or_insert_with(|| Text::from_static("AccessDenied"))
                .clone();
            outcome.error_message.get_or_insert(error_type);
        }
        event.actor.owner_org_id = None;
    } else if event.correlation.as_ref().is_some_and(|c| c.is_empty()) {
        event.correlation = None;
    }
    event.schema_version = target;
    Ok(())
}

mod borrowed;
#[cfg(test)]
mod vendored;

pub use borrowed::{validate_json, JsonError};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::model::event::{
        ActingAgent, AgentInfo, AgentInterface, AuthorizingHuman, Correlation, Delegation,
        DelegationType, Outcome,
    };
    use crate::Actor;

    const V10: SchemaVersion = SchemaVersion::V1_0;
    const V11: SchemaVersion = SchemaVersion::V1_1;
    const V20: SchemaVersion = SchemaVersion::V2_0;
    /// A synthetic PHI token: must never appear in any message.
    const PHI: &str = "PHI-Jane-Doe-123-45-6789";

    fn minimal(v: SchemaVersion) -> Value {
        json!({
            "schema_version": v.as_str(),
            "event_id": "6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10",
            "timestamp": "2026-01-02T03:04:05.678Z",
            "service": {"name": "charts"},
            "actor": {"subject_id": "u-1", "subject_type": "human"},
            "action": {"type": "READ"},
            "resource": {"type": "Patient"},
            "outcome": {"status": "SUCCESS"}
        })
    }

    fn delegation() -> Value {
        json!({
            "acting": {"subject_id": "agent-7", "subject_type": "agent",
                       "agent": {"interface": "mcp", "vendor": "acme"}},
            "authorizing": {"subject_id": "dr-1", "subject_type": "human"},
            "delegation_type": "supervised",
            "agent_session_id": "s-1"
        })
    }

    /// Sets (or, with `None`, removes) the member at `pointer`, creating
    /// nothing: the parent must exist.
    fn edit(v: &mut Value, pointer: &str, new: Option<Value>) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = v.pointer_mut(parent).unwrap();
        match parent {
            Value::Object(m) => match new {
                Some(n) => {
                    m.insert(key.replace("~1", "/").replace("~0", "~"), n);
                }
                None => {
                    m.remove(key);
                }
            },
            Value::Array(a) => {
                let i: usize = key.parse().unwrap();
                match new {
                    Some(n) => a[i] = n,
                    None => {
                        a.remove(i);
                    }
                }
            }
            _ => panic!("parent of {pointer} is a scalar"),
        }
    }

    fn paths(v: &Value, version: Option<SchemaVersion>) -> Vec<String> {
        match validate_value(v, version) {
            Ok(_) => Vec::new(),
            Err(e) => {
                let text = e.to_string();
                assert!(!text.contains(PHI), "value leaked into: {text}");
                assert_eq!(text.lines().count(), e.len());
                assert!(!e.is_empty());
                e.iter().map(|v| v.path.clone()).collect()
            }
        }
    }

    /// Applies the edits to the minimal event of `version` and asserts the
    /// violations are exactly at `expected` (in any order).
    #[track_caller]
    fn check(version: SchemaVersion, edits: &[(&str, Option<Value>)], expected: &[&str]) {
        let mut v = minimal(version);
        for (p, n) in edits {
            edit(&mut v, p, n.clone());
        }
        let mut got = paths(&v, Some(version));
        got.sort();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "version {version}, edits {edits:?}");
    }

    fn set(p: &str, v: Value) -> (&str, Option<Value>) {
        (p, Some(v))
    }

    fn del(p: &str) -> (&str, Option<Value>) {
        (p, None)
    }

    fn s(n: usize) -> Value {
        // Multi-byte characters: lengths must count characters, not bytes.
        Value::String("é".repeat(n))
    }

    fn phi() -> Value {
        Value::String(PHI.repeat(20))
    }

    #[test]
    fn minimal_events_are_valid() {
        for v in SchemaVersion::ALL {
            assert_eq!(validate_value(&minimal(*v), None), Ok(*v));
            assert_eq!(validate_value(&minimal(*v), Some(*v)), Ok(*v));
        }
    }

    #[test]
    fn root_must_be_an_object() {
        for bad in [json!(null), json!([1]), json!("x"), json!(1.5), json!(true)] {
            assert_eq!(paths(&bad, None), [""]);
            assert_eq!(paths(&bad, Some(V11)), [""]);
        }
    }

    #[test]
    fn version_selection() {
        let mut v = minimal(V11);
        edit(&mut v, "/schema_version", Some(json!(1.1)));
        assert_eq!(paths(&v, None), ["/schema_version"]);
        edit(&mut v, "/schema_version", Some(json!("3.0")));
        assert_eq!(paths(&v, None), ["/schema_version"]);
        edit(&mut v, "/schema_version", None);
        assert_eq!(paths(&v, None), ["/schema_version"]);
        // Unknown version: the rest is still checked (against 2.0).
        edit(&mut v, "/actor/subject_id", Some(json!("")));
        assert_eq!(paths(&v, None), ["/schema_version", "/actor/subject_id"]);
        // Explicit version: the const must match.
        check(
            V11,
            &[set("/schema_version", json!("2.0"))],
            &["/schema_version"],
        );
        check(
            V20,
            &[set("/schema_version", json!("1.1"))],
            &["/schema_version"],
        );
        check(
            V10,
            &[set("/schema_version", json!(1.0))],
            &["/schema_version"],
        );
    }

    #[test]
    fn required_and_unknown_members() {
        for v in SchemaVersion::ALL {
            for req in REQUIRED_ROOT {
                let p = format!("/{req}");
                check(*v, &[del(&p)], &[&p]);
            }
            check(*v, &[set("/foo", phi())], &["/foo"]);
            check(*v, &[del("/service/name")], &["/service/name"]);
            check(*v, &[del("/actor/subject_id")], &["/actor/subject_id"]);
            check(*v, &[del("/actor/subject_type")], &["/actor/subject_type"]);
            check(*v, &[del("/action/type")], &["/action/type"]);
            check(*v, &[del("/resource/type")], &["/resource/type"]);
            check(*v, &[del("/outcome/status")], &["/outcome/status"]);
            for block in ["service", "actor", "action", "resource", "outcome"] {
                let p = format!("/{block}/x~1y");
                check(*v, &[set(&p, json!(1))], &[&p]);
                let p = format!("/{block}");
                check(*v, &[set(&p, json!([]))], &[&p]);
            }
            for (block, known, val) in [
                ("correlation", "request_id", "r"),
                ("http", "method", "GET"),
                ("integrity", "hash_alg", "sha256"),
            ] {
                let p = format!("/{block}");
                let zz = format!("/{block}/zz");
                check(*v, &[set(&p, json!({"zz": 1, known: val}))], &[&zz]);
                if *v != V10 || block != "correlation" {
                    check(*v, &[set(&p, json!({"zz": 1}))], &[&format!("/{block}/zz")]);
                }
                check(*v, &[set(&p, json!("x"))], &[&p]);
            }
            check(*v, &[set("/metadata", json!([]))], &["/metadata"]);
        }
        // 1.0 has no owner_org_id.
        check(
            V10,
            &[set("/actor/owner_org_id", json!("o"))],
            &["/actor/owner_org_id"],
        );
        check(V11, &[set("/actor/owner_org_id", json!("o"))], &[]);
        // delegation is 2.0 only.
        check(V11, &[set("/delegation", delegation())], &["/delegation"]);
        check(V20, &[set("/delegation", delegation())], &[]);
    }

    #[test]
    fn types_and_enums() {
        for v in SchemaVersion::ALL {
            check(
                *v,
                &[set("/event_id", json!(12345678901234567u64))],
                &["/event_id"],
            );
            check(*v, &[set("/timestamp", json!(0))], &["/timestamp"]);
            check(*v, &[set("/service/name", json!(null))], &["/service/name"]);
            check(
                *v,
                &[set("/actor/subject_type", json!("robot"))],
                &["/actor/subject_type"],
            );
            check(
                *v,
                &[set("/actor/subject_type", json!(1))],
                &["/actor/subject_type"],
            );
            check(
                *v,
                &[set("/actor/roles", json!("admin"))],
                &["/actor/roles"],
            );
            check(
                *v,
                &[set("/actor/roles", json!(["a", "b", "c", 4]))],
                &["/actor/roles/3"],
            );
            check(*v, &[set("/action/type", json!("read"))], &["/action/type"]);
            check(
                *v,
                &[set("/action/phi_touched", json!("true"))],
                &["/action/phi_touched"],
            );
            check(*v, &[set("/action/phi_touched", json!(false))], &[]);
            check(
                *v,
                &[set("/action/data_classification", json!("SECRET"))],
                &["/action/data_classification"],
            );
            check(
                *v,
                &[set("/outcome/status", json!("OK"))],
                &["/outcome/status"],
            );
            check(
                *v,
                &[set("/http", json!({"status_code": "200"}))],
                &["/http/status_code"],
            );
            check(
                *v,
                &[set("/http", json!({"status_code": 200.5}))],
                &["/http/status_code"],
            );
            check(
                *v,
                &[set("/http", json!({"status_code": true}))],
                &["/http/status_code"],
            );
            // jsonschema counts 200.0 as an integer.
            check(*v, &[set("/http", json!({"status_code": 200.0}))], &[]);
            check(
                *v,
                &[set("/http", json!({"user_agent": 7}))],
                &["/http/user_agent"],
            );
            check(
                *v,
                &[set("/integrity", json!({"hash_alg": 256}))],
                &["/integrity/hash_alg"],
            );
        }
        // DENIED does not exist in 1.0; OVERRIDE and agent only in 2.0.
        let denied = [
            set("/outcome/status", json!("DENIED")),
            set("/outcome/error_type", json!("RoleDenied")),
        ];
        check(V10, &denied, &["/outcome/status"]);
        check(V11, &denied, &[]);
        check(V20, &denied, &[]);
        check(
            V10,
            &[set("/action/type", json!("OVERRIDE"))],
            &["/action/type"],
        );
        check(
            V11,
            &[set("/action/type", json!("OVERRIDE"))],
            &["/action/type"],
        );
        check(
            V10,
            &[set("/actor/subject_type", json!("agent"))],
            &["/actor/subject_type"],
        );
        check(
            V11,
            &[set("/actor/subject_type", json!("agent"))],
            &["/actor/subject_type"],
        );
    }

    #[test]
    fn one_zero_is_loose() {
        let loose = [
            set("/event_id", json!("not-a-uuid-but-16")),
            set("/service/environment", s(1000)),
            set("/actor/subject_id", s(1000)),
            set("/actor/org_id", json!("")),
            set("/actor/roles", json!(vec![""; 40])),
            set("/resource/id", json!("")),
            set("/correlation", json!({})),
            set(
                "/http",
                json!({"method": "BREW", "status_code": 999, "client_ip": "x"}),
            ),
            set("/outcome/status", json!("FAILURE")),
            set(
                "/integrity",
                json!({"prev_event_hash": "", "hash_alg": "md5"}),
            ),
            set("/metadata", json!({"nested": {"a": [1, {"b": 2}]}})),
        ];
        check(V10, &loose, &[]);
        check(
            V10,
            &[set("/event_id", json!("123456789012345"))],
            &["/event_id"],
        );
        check(V10, &[set("/event_id", s(16))], &[]);
        check(V10, &[set("/service/name", json!(""))], &["/service/name"]);
        check(
            V10,
            &[set("/actor/subject_id", json!(""))],
            &["/actor/subject_id"],
        );
        check(
            V10,
            &[set("/resource/type", json!(""))],
            &["/resource/type"],
        );
        let many: Map<String, Value> = (0..30).map(|i| (format!("k{i}"), json!(i))).collect();
        check(V10, &[set("/metadata", Value::Object(many))], &[]);
    }

    #[test]
    fn lengths_count_characters() {
        let bounds: &[(&str, usize, usize)] = &[
            ("/service/name", 1, 128),
            ("/service/environment", 0, 64),
            ("/service/version", 0, 64),
            ("/actor/subject_id", 1, 256),
            ("/actor/org_id", 1, 128),
            ("/actor/owner_org_id", 1, 128),
            ("/action/name", 0, 128),
            ("/resource/type", 1, 128),
            ("/resource/id", 1, 256),
            ("/resource/patient_id", 1, 256),
            ("/outcome/error_type", 1, 128),
            ("/outcome/error_message", 0, 500),
        ];
        for v in [V11, V20] {
            for &(p, min, max) in bounds {
                check(v, &[set(p, s(max))], &[]);
                check(v, &[set(p, s(max + 1))], &[p]);
                let at_p = [p];
                check(
                    v,
                    &[set(p, phi())],
                    if PHI.len() * 20 > max { &at_p[..] } else { &[] },
                );
                if min == 1 {
                    check(v, &[set(p, json!(""))], &[p]);
                } else {
                    check(v, &[set(p, json!(""))], &[]);
                }
            }
            for (block, keys, max) in [
                (
                    "correlation",
                    &["request_id", "trace_id", "session_id"][..],
                    256,
                ),
                ("integrity", &["event_hash"][..], 256),
                ("http", &["route_template", "user_agent"][..], 512),
            ] {
                for key in keys {
                    let p = format!("/{block}");
                    let mut ok = json!({ *key: s(max) });
                    if block == "integrity" {
                        ok["hash_alg"] = json!("sha256");
                    }
                    check(v, &[set(&p, ok.clone())], &[]);
                    ok[*key] = s(max + 1);
                    check(v, &[set(&p, ok.clone())], &[&format!("{p}/{key}")]);
                    if block != "http" {
                        ok[*key] = json!("");
                        check(v, &[set(&p, ok)], &[&format!("{p}/{key}")]);
                    }
                }
            }
            // Roles: items 1..=64 characters, at most 25 of them.
            check(v, &[set("/actor/roles", json!(vec![s(64); 25]))], &[]);
            check(
                v,
                &[set("/actor/roles", json!(vec!["r"; 26]))],
                &["/actor/roles"],
            );
            check(
                v,
                &[set("/actor/roles", json!(["a", "", "b", s(65)]))],
                &["/actor/roles/1", "/actor/roles/3"],
            );
            check(v, &[set("/actor/roles", json!([]))], &[]);
            // event_id: exactly 36 characters and a UUID.
            check(
                v,
                &[set(
                    "/event_id",
                    json!("6F1C2A34-9B7E-4D21-8A55-0C3E9F4B7A10"),
                )],
                &[],
            );
            check(
                v,
                &[set(
                    "/event_id",
                    json!("6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a1"),
                )],
                &["/event_id", "/event_id"],
            );
            check(
                v,
                &[set(
                    "/event_id",
                    json!("6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a1g"),
                )],
                &["/event_id"],
            );
            check(
                v,
                &[set("/event_id", json!("6f1c2a349b7e4d218a550c3e9f4b7a10"))],
                &["/event_id", "/event_id"],
            );
        }
    }

    #[test]
    fn correlation_and_metadata_shapes() {
        for v in [V11, V20] {
            check(v, &[set("/correlation", json!({}))], &["/correlation"]);
            check(v, &[set("/correlation", json!({"trace_id": "t"}))], &[]);
            let scalars = json!({"n": null, "b": true, "i": -3, "u": u64::MAX, "f": 0.5,
                                 "s": "x", "e": "", "big": 1e300});
            check(v, &[set("/metadata", scalars)], &[]);
            check(
                v,
                &[set("/metadata", json!({"a": [1], "b": {"c": 1}, "ok": 1}))],
                &["/metadata/a", "/metadata/b"],
            );
            let twenty: Map<String, Value> = (0..20).map(|i| (format!("k{i}"), json!(i))).collect();
            check(v, &[set("/metadata", Value::Object(twenty.clone()))], &[]);
            let mut more = twenty;
            more.insert("k20".into(), json!(null));
            check(v, &[set("/metadata", Value::Object(more))], &["/metadata"]);
            check(v, &[set("/metadata", json!({}))], &[]);
        }
    }

    #[test]
    fn http_rules() {
        for v in [V11, V20] {
            let h = |x: Value| [set("/http", x)];
            check(v, &h(json!({"method": "GET", "status_code": 100})), &[]);
            check(v, &h(json!({"method": "get"})), &["/http/method"]);
            check(v, &h(json!({"status_code": 599})), &[]);
            check(v, &h(json!({"status_code": 99})), &["/http/status_code"]);
            check(v, &h(json!({"status_code": 600})), &["/http/status_code"]);
            check(
                v,
                &h(json!({"status_code": -1e300})),
                &["/http/status_code"],
            );
            check(v, &h(json!({})), &[]);
            for ok in [
                "192.168.0.1",
                "0.0.0.0",
                "::1",
                "::",
                "2001:db8::8a2e:370:7334",
                "::ffff:10.0.0.1",
                "1:2:3:4:5:6:7::",
                "0000:0000:0000:0000:0000:0000:0000:0001",
            ] {
                check(v, &h(json!({ "client_ip": ok })), &[]);
            }
            for bad in [
                "",
                "010.0.0.1",
                "256.1.1.1",
                "1.2.3",
                "fe80::1%eth0",
                "fe80::1%",
                "1::2::3",
                " 1.2.3.4",
                "1.2.3.4\n",
                "localhost",
                "12345::",
            ] {
                check(v, &h(json!({ "client_ip": bad })), &["/http/client_ip"]);
            }
            check(v, &h(json!({"client_ip": 1})), &["/http/client_ip"]);
        }
    }

    #[test]
    fn timestamps_follow_the_reference_checker() {
        for v in SchemaVersion::ALL {
            for ok in [
                "2026-01-02T03:04:05Z",
                "2026-01-02t03:04:05z",
                "2026-01-02T03:04:05.1+05:30",
                "2026-01-02T03:04:05.123456789-23:59",
                "2024-02-29T23:59:59.999Z",
                "0001-01-01T00:00:00Z",
                "2026-01-02T03:04:05Z\n",
            ] {
                check(*v, &[set("/timestamp", json!(ok))], &[]);
            }
            for bad in [
                "",
                "2026-01-02 03:04:05Z",
                "2026-01-02T03:04:05",
                "2026-01-02T03:04:60Z",
                "2026-01-02T24:00:00Z",
                "2023-02-29T00:00:00Z",
                "0000-01-01T00:00:00Z",
                "2026-13-01T00:00:00Z",
                "2026-00-01T00:00:00Z",
                "2026-01-00T00:00:00Z",
                "2026-01-02T03:04:05.Z",
                "2026-01-02T03:04:05+24:00",
                "2026-01-02T03:04:05+0100",
                "2026-01-02T03:04:05Z\n\n",
                "2026-01-02T03:04:05Zjunk",
                "２026-01-02T03:04:05Z",
                "2026-1-02T03:04:05Z",
            ] {
                check(*v, &[set("/timestamp", json!(bad))], &["/timestamp"]);
            }
        }
    }

    #[test]
    fn every_instant_the_clock_can_hold_is_written_as_a_valid_date_time() {
        use crate::time::timestamp::Timestamp;
        let year_one = -62_135_596_800_000i64;
        let after_9999 = 253_402_300_800_000i64;
        let mut instants = vec![i64::MIN, i64::MAX, 0, -1, year_one, year_one - 1];
        instants.extend([after_9999 - 1, after_9999, -62_167_219_200_000]);
        // Spread over the whole range, too.
        instants.extend((-2048i64..2048).map(|i| i * (i64::MAX / 2048)));
        for ms in instants {
            let b = Timestamp::from_unix_millis(ms).rfc3339_bytes();
            let s = std::str::from_utf8(&b).unwrap();
            assert!(is_date_time(s), "{ms} -> {s}");
        }
    }

    #[test]
    fn uuid_follows_the_reference_checker() {
        for ok in [
            "00000000-0000-0000-0000-000000000000",
            " 0000000-0000-0000-0000-000000000000",
            "0x000000-0000-0000-0000-000000000000",
            "0X_00000-0000-0000-0000-000000000000",
            "+0000000-0000-0000-0000-00000000000\u{3000}",
            "00000000-0000-0000-0000-0000000000_0",
        ] {
            assert!(is_uuid(ok), "{ok:?}");
        }
        for bad in [
            "00000000-0000-0000-0000-00000000000g",
            "00000000-0000-0000-0000-0000000000__",
            "00000000-0000-0000-0000-00000000000_",
            "_0000000-0000-0000-0000-000000000000",
            "0000000000000-0000-0000-000000000000",
            "00000000-0000-0000-0000-00000000000\u{1c}",
            "{0000000-0000-0000-0000-00000000000}",
            "urn:uuid:00000000-0000-0000-0000-000000000000",
        ] {
            assert!(!is_uuid(bad), "{bad:?}");
        }
    }

    #[test]
    fn integrity_dependencies() {
        for v in [V11, V20] {
            let i = |x: Value| [set("/integrity", x)];
            check(v, &i(json!({})), &[]);
            check(v, &i(json!({"hash_alg": "sha512"})), &[]);
            check(
                v,
                &i(json!({"event_hash": "ab", "hash_alg": "sha384"})),
                &[],
            );
            check(v, &i(json!({"event_hash": "ab"})), &["/integrity/hash_alg"]);
            check(
                v,
                &i(json!({"prev_event_hash": "ab"})),
                &["/integrity/hash_alg", "/integrity/event_hash"],
            );
            check(
                v,
                &i(json!({"prev_event_hash": "a", "event_hash": "b", "hash_alg": "md5"})),
                &["/integrity/hash_alg"],
            );
        }
        check(
            V10,
            &[set("/integrity", json!({"prev_event_hash": "ab"}))],
            &[],
        );
    }

    #[test]
    fn outcome_conditionals() {
        for v in [V11, V20] {
            let failure = set("/outcome/status", json!("FAILURE"));
            let denied = set("/outcome/status", json!("DENIED"));
            check(
                v,
                std::slice::from_ref(&failure),
                &["/outcome/error_type", "/outcome/error_message"],
            );
            check(
                v,
                &[failure.clone(), set("/outcome/error_type", json!("E"))],
                &["/outcome/error_message"],
            );
            check(
                v,
                &[
                    failure,
                    set("/outcome/error_type", json!("E")),
                    set("/outcome/error_message", json!("")),
                ],
                &[],
            );
            check(v, std::slice::from_ref(&denied), &["/outcome/error_type"]);
            check(
                v,
                &[denied, set("/outcome/error_type", json!("RoleDenied"))],
                &[],
            );
        }
        // 1.0 has no conditionals.
        check(V10, &[set("/outcome/status", json!("FAILURE"))], &[]);
    }

    #[test]
    fn delegation_rules() {
        let agent = set("/actor/subject_type", json!("agent"));
        check(V20, std::slice::from_ref(&agent), &["/delegation"]);
        check(V20, &[agent.clone(), set("/delegation", delegation())], &[]);
        // A delegation block without an agent actor is allowed.
        check(V20, &[set("/delegation", delegation())], &[]);

        let with = |edits: &[(&str, Option<Value>)], expected: &[&str]| {
            let mut all = vec![agent.clone(), set("/delegation", delegation())];
            all.extend(edits.iter().cloned());
            check(V20, &all, expected);
        };
        for req in [
            "acting",
            "authorizing",
            "delegation_type",
            "agent_session_id",
        ] {
            let p = format!("/delegation/{req}");
            with(&[del(&p)], &[&p]);
        }
        with(
            &[del("/delegation/acting/agent")],
            &["/delegation/acting/agent"],
        );
        with(
            &[del("/delegation/acting/agent/interface")],
            &["/delegation/acting/agent/interface"],
        );
        with(
            &[set(
                "/delegation/acting/agent/interface",
                json!("telepathy"),
            )],
            &["/delegation/acting/agent/interface"],
        );
        with(
            &[set("/delegation/acting/agent/prompt", phi())],
            &["/delegation/acting/agent/prompt"],
        );
        with(
            &[set("/delegation/acting/agent/model_family", s(129))],
            &["/delegation/acting/agent/model_family"],
        );
        with(
            &[set("/delegation/acting/agent/harness", json!(""))],
            &["/delegation/acting/agent/harness"],
        );
        with(
            &[set("/delegation/acting/subject_type", json!("human"))],
            &["/delegation/acting/subject_type"],
        );
        with(
            &[set("/delegation/authorizing/subject_type", json!("agent"))],
            &["/delegation/authorizing/subject_type"],
        );
        with(
            &[set("/delegation/authorizing/org_id", s(129))],
            &["/delegation/authorizing/org_id"],
        );
        with(
            &[set("/delegation/delegation_type", json!("manual"))],
            &["/delegation/delegation_type"],
        );
        with(
            &[set("/delegation/agent_session_id", s(257))],
            &["/delegation/agent_session_id"],
        );
        with(
            &[set("/delegation/extra", json!(1))],
            &["/delegation/extra"],
        );
        // chain_depth: integer 1..=32; >= 2 exactly when a parent is named.
        with(&[set("/delegation/chain_depth", json!(1))], &[]);
        with(
            &[set("/delegation/chain_depth", json!(0))],
            &["/delegation/chain_depth"],
        );
        with(
            &[
                set("/delegation/chain_depth", json!(33)),
                set("/delegation/parent_agent_session_id", json!("p")),
            ],
            &["/delegation/chain_depth"],
        );
        with(
            &[set("/delegation/chain_depth", json!(1.5))],
            &["/delegation/chain_depth"],
        );
        with(
            &[set("/delegation/chain_depth", json!(2))],
            &["/delegation/parent_agent_session_id"],
        );
        with(
            &[set("/delegation/chain_depth", json!(2.0))],
            &["/delegation/parent_agent_session_id"],
        );
        with(
            &[
                set("/delegation/chain_depth", json!(2.0)),
                set("/delegation/parent_agent_session_id", json!("p")),
            ],
            &[],
        );
        with(
            &[set("/delegation/parent_agent_session_id", json!("p"))],
            &["/delegation/chain_depth"],
        );
        with(
            &[
                set("/delegation/chain_depth", json!(1)),
                set("/delegation/parent_agent_session_id", json!("p")),
            ],
            &["/delegation/chain_depth"],
        );
        with(
            &[
                set("/delegation/chain_depth", json!("3")),
                set("/delegation/parent_agent_session_id", json!("p")),
            ],
            &["/delegation/chain_depth"],
        );
        with(
            &[
                set("/delegation/chain_depth", json!(3)),
                set("/delegation/parent_agent_session_id", json!("")),
            ],
            &["/delegation/parent_agent_session_id"],
        );
    }

    #[test]
    fn override_rules() {
        let ov = [
            set("/action/type", json!("OVERRIDE")),
            set("/resource", json!({"type": "AgentSession", "id": "s-1"})),
        ];
        check(V20, &ov, &[]);
        let with = |edits: &[(&str, Option<Value>)], expected: &[&str]| {
            let mut all = ov.to_vec();
            all.extend(edits.iter().cloned());
            check(V20, &all, expected);
        };
        with(
            &[set("/actor/subject_type", json!("service"))],
            &["/actor/subject_type"],
        );
        with(
            &[set("/resource/type", json!("Patient"))],
            &["/resource/type"],
        );
        with(&[del("/resource/id")], &["/resource/id"]);
        with(&[set("/delegation", delegation())], &["/delegation"]);
        with(
            &[
                set("/actor/subject_type", json!("agent")),
                set("/delegation", delegation()),
            ],
            &["/actor/subject_type", "/delegation"],
        );
    }

    #[test]
    fn messages_name_rules_not_values() {
        let mut v = minimal(V11);
        edit(&mut v, "/actor/subject_id", Some(json!("x".repeat(300))));
        edit(&mut v, "/foo", Some(phi()));
        edit(&mut v, "/action/type", Some(phi()));
        let e = validate_value(&v, None).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/actor/subject_id: must be at most 256 characters (has 300)"));
        assert!(text.contains("/foo: unknown property (not allowed by schema 1.1)"));
        assert!(text.contains("/action/type: must be one of READ, CREATE, UPDATE"));
        assert!(!text.contains(PHI) && !text.contains("xxx"), "{text}");
        assert!(e.has_path("/foo"));
        let root = validate_value(&json!([]), None).unwrap_err();
        assert_eq!(root.to_string(), "(root): must be an object (found array)");
        let _: &dyn std::error::Error = &root;
    }

    // --- typed events and retarget ---

    fn typed(v: SchemaVersion) -> AuditEvent {
        serde_json::from_value(minimal(v)).unwrap()
    }

    fn typed_delegation() -> Delegation {
        Delegation {
            acting: ActingAgent {
                subject_id: "agent-7".into(),
                subject_type: SubjectType::Agent,
                agent: AgentInfo {
                    interface: AgentInterface::Api,
                    vendor: None,
                    model_family: None,
                    model_version: None,
                    harness: None,
                    harness_version: None,
                },
            },
            authorizing: AuthorizingHuman {
                subject_id: "dr-1".into(),
                subject_type: SubjectType::Human,
                org_id: None,
            },
            delegation_type: DelegationType::Autonomous,
            agent_session_id: "s-1".into(),
            chain_depth: Some(1),
            parent_agent_session_id: None,
        }
    }

    #[test]
    fn typed_validation() {
        for v in SchemaVersion::ALL {
            assert_eq!(validate(&typed(*v)), Ok(()));
        }
        let mut e = typed(V11);
        e.actor = Actor::human("h".repeat(257));
        let err = validate(&e).unwrap_err();
        assert_eq!(err.violations()[0].path(), "/actor/subject_id");
        assert!(validate_as(&e, V10)
            .unwrap_err()
            .has_path("/schema_version"));
        e.schema_version = V10;
        assert_eq!(validate(&e), Ok(()));
        let mut e = typed(V11);
        e.correlation = Some(Correlation::default());
        assert!(validate(&e).unwrap_err().has_path("/correlation"));
    }

    #[test]
    fn retarget_denied_to_one_zero() {
        let mut e = typed(V11);
        e.outcome = Outcome::denied("RoleDenied");
        e.actor = Actor::human("u").owner_org("org-2");
        retarget(&mut e, V10, DowngradePolicy::Reject).unwrap();
        assert_eq!(e.schema_version, V10);
        assert_eq!(e.outcome, Outcome::failure("RoleDenied", "RoleDenied"));
        assert_eq!(e.actor.owner_org_id, None);
        assert_eq!(validate(&e), Ok(()));
        // An existing message is kept; a missing type gets a category.
        let mut e = typed(V20);
        e.outcome = Outcome {
            status: OutcomeStatus::Denied,
            error_type: None,
            error_message: Some("no consent".into()),
        };
        retarget(&mut e, V10, DowngradePolicy::Reject).unwrap();
        assert_eq!(e.outcome, Outcome::failure("AccessDenied", "no consent"));
        // 1.1 keeps DENIED and owner_org_id.
        let mut e = typed(V20);
        e.outcome = Outcome::denied("RoleDenied");
        e.actor = Actor::human("u").owner_org("org-2");
        retarget(&mut e, V11, DowngradePolicy::Reject).unwrap();
        assert_eq!(e.outcome, Outcome::denied("RoleDenied"));
        assert!(e.actor.owner_org_id.is_some());
        assert_eq!(validate(&e), Ok(()));
    }

    #[test]
    fn retarget_rejects_v2_data() {
        let mut e = typed(V20);
        e.actor = Actor::agent("agent-7");
        e.delegation = Some(Box::new(typed_delegation()));
        assert_eq!(validate(&e), Ok(()));
        let before = e.clone();
        for target in [V10, V11] {
            let err = retarget(&mut e, target, DowngradePolicy::default()).unwrap_err();
            assert_eq!(err.target(), target);
            assert_eq!(
                err.features(),
                [V2Feature::AgentActor, V2Feature::Delegation]
            );
            let msg = err.to_string();
            assert!(msg.contains("an agent actor") && msg.contains("a delegation block"));
            assert!(!msg.contains("agent-7") && !msg.contains("dr-1"), "{msg}");
            assert_eq!(e, before, "a rejected event is left unchanged");
        }
        let mut o = typed(V20);
        o.action.kind = ActionType::Override;
        let err = retarget(&mut o, V11, DowngradePolicy::Reject).unwrap_err();
        assert_eq!(err.features(), [V2Feature::OverrideAction]);
    }

    #[test]
    fn retarget_downgrades_v2_data() {
        for target in [V10, V11] {
            let mut e = typed(V20);
            e.actor = Actor::agent("agent-7").org("org-1").roles(["bot"]);
            e.delegation = Some(Box::new(typed_delegation()));
            retarget(&mut e, target, DowngradePolicy::Downgrade).unwrap();
            assert_eq!(
                e.actor,
                Actor::service("agent-7").org("org-1").roles(["bot"])
            );
            assert_eq!(e.delegation, None);
            assert_eq!(validate(&e), Ok(()), "{target}");

            let mut o = typed(V20);
            o.action.kind = ActionType::Override;
            o.resource.kind = "AgentSession".into();
            o.resource.id = Some("s-1".into());
            assert_eq!(validate(&o), Ok(()));
            retarget(&mut o, target, DowngradePolicy::Downgrade).unwrap();
            assert_eq!(o.action.kind, ActionType::Other);
            assert_eq!(o.action.name.as_deref(), Some("override"));
            assert_eq!(validate(&o), Ok(()));

            let mut named = typed(V20);
            named.action.kind = ActionType::Override;
            named.action.name = Some("cancel_agent_session".into());
            retarget(&mut named, target, DowngradePolicy::Downgrade).unwrap();
            assert_eq!(named.action.name.as_deref(), Some("cancel_agent_session"));
        }
    }

    #[test]
    fn retarget_upward_and_plain() {
        let mut e = typed(V10);
        e.correlation = Some(Correlation::default());
        retarget(&mut e, V20, DowngradePolicy::Reject).unwrap();
        assert_eq!(e.schema_version, V20);
        assert_eq!(e.correlation, None);
        assert_eq!(validate(&e), Ok(()));
        let mut e = typed(V20);
        e.correlation = Some(Correlation::default());
        retarget(&mut e, V10, DowngradePolicy::Reject).unwrap();
        assert_eq!(e.correlation, Some(Correlation::default()));
        assert_eq!(validate(&e), Ok(()));
        // 2.0 → 2.0 leaves 2.0 data alone.
        let mut a = typed(V20);
        a.actor = Actor::agent("a");
        a.delegation = Some(Box::new(typed_delegation()));
        let before = a.clone();
        retarget(&mut a, V20, DowngradePolicy::Downgrade).unwrap();
        assert_eq!(a, before);
    }
}
