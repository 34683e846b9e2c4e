//! The route table: request-level events for matched routes.

use std::collections::HashMap;
use std::fmt;

use ::http::Method;

use super::headers::{clamp, MAX_ID};
use super::Counters;
use crate::model::event::{ActionType, DataClassification};
use crate::record::CallSite;
use crate::util::text::Text;

/// A route of [`AuditLayer::route`](super::AuditLayer::route): every request
/// matching it emits one event, whatever the handler does.
///
/// ```
/// use phi_audit::web::{route, EXPORT, READ};
/// let read = route("/patients/{id}", READ, "Patient").id_from_path("id").patient_from_path("id");
/// let export = route("/patients/{id}/export", EXPORT, "Patient")
///     .method("POST")
///     .patient_from_path("id")
///     .name("export_patient");
/// # let _ = (read, export);
/// ```
#[derive(Clone, Debug)]
pub struct RouteSpec {
    pattern: String,
    action: ActionType,
    resource: &'static str,
    method: Option<Method>,
    id_param: Option<String>,
    patient_param: Option<String>,
    name: Option<String>,
    phi_touched: Option<bool>,
    classification: Option<DataClassification>,
}

/// A route for the layer's table: requests whose path matches `pattern`
/// (axum's syntax: `/patients/{id}`, `/files/{*path}`) emit one event with
/// `action` on a resource of type `resource`.
pub fn route(pattern: impl Into<String>, action: ActionType, resource: &'static str) -> RouteSpec {
    RouteSpec {
        pattern: pattern.into(),
        action,
        resource,
        method: None,
        id_param: None,
        patient_param: None,
        name: None,
        phi_touched: None,
        classification: None,
    }
}

impl RouteSpec {
    /// Only requests with this method (default: any). A route pattern may
    /// appear once per method; the first matching entry wins.
    pub fn method(mut self, method: impl AsRef<str>) -> RouteSpec {
        self.method = Method::from_bytes(method.as_ref().to_ascii_uppercase().as_bytes()).ok();
        self
    }

    /// `resource.id` from the path parameter `param` (percent-decoded, at
    /// most 256 characters).
    pub fn id_from_path(mut self, param: impl Into<String>) -> RouteSpec {
        self.id_param = Some(param.into());
        self
    }

    /// `resource.patient_id` from the path parameter `param`.
    pub fn patient_from_path(mut self, param: impl Into<String>) -> RouteSpec {
        self.patient_param = Some(param.into());
        self
    }

    /// `action.name` (default: `"METHOD pattern"`, or the pattern when the
    /// route takes any method), at most 128 characters.
    pub fn name(mut self, name: impl Into<String>) -> RouteSpec {
        self.name = Some(name.into());
        self
    }

    /// `action.phi_touched`.
    pub fn phi_touched(mut self, touched: bool) -> RouteSpec {
        self.phi_touched = Some(touched);
        self
    }

    /// `action.data_classification`.
    pub fn classification(mut self, class: DataClassification) -> RouteSpec {
        self.classification = Some(class);
        self
    }
}

/// Why a route was refused.
#[derive(Debug)]
pub struct RouteError {
    pattern: String,
    reason: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid audit route {:?}: {}; write routes as axum does (`/patients/{{id}}`, `/files/{{*path}}`)",
            self.pattern, self.reason
        )
    }
}

impl std::error::Error for RouteError {}

/// One compiled route.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) pattern: Text,
    pub(crate) method: Option<Method>,
    /// Leaked once per route and layer: a call site is identified by its
    /// address (the JSON of its action is cached per site), so it must
    /// live as long as the program.
    pub(crate) site: &'static CallSite,
    id_param: Option<String>,
    patient_param: Option<String>,
}

/// The routes, compiled for matching.
#[derive(Clone, Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
    /// Pattern → its group in `groups`.
    by_pattern: HashMap<String, usize>,
    /// Per pattern, indexes into `routes` (one per method).
    groups: Vec<Vec<usize>>,
    matcher: matchit::Router<usize>,
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|r| &r.pattern))
            .finish()
    }
}

/// A request's match in the table.
pub(crate) struct Matched<'a> {
    pub(crate) route: &'a Route,
    pub(crate) resource_id: Option<Text>,
    pub(crate) patient_id: Option<Text>,
}

impl RouteTable {
    pub(crate) fn add(&mut self, spec: RouteSpec) -> Result<(), RouteError> {
        let err = |reason: String| RouteError {
            pattern: spec.pattern.clone(),
            reason,
        };
        if !spec.pattern.starts_with('/') {
            return Err(err("a route starts with `/`".into()));
        }
        if spec.resource.is_empty() || spec.resource.chars().count() > 128 {
            return Err(err("the resource type must have 1 to 128 characters".into()));
        }
        let group = match self.by_pattern.get(&spec.pattern) {
            Some(&g) => g,
            None => {
                let g = self.groups.len();
                self.matcher
                    .insert(spec.pattern.clone(), g)
                    .map_err(|e| err(e.to_string()))?;
                self.groups.push(Vec::new());
                self.by_pattern.insert(spec.pattern.clone(), g);
                g
            }
        };
        let name = match (&spec.name, &spec.method) {
            (Some(n), _) => n.clone(),
            (None, Some(m)) => format!("{m} {}", spec.pattern),
            (None, None) => spec.pattern.clone(),
        };
        let name = clamp(&name, 128).0;
        let site: &'static CallSite = Box::leak(Box::new(CallSite {
            action: spec.action,
            resource: spec.resource,
            name: Box::leak(name.as_str().to_owned().into_boxed_str()),
            phi_touched: spec.phi_touched,
            classification: spec.classification,
        }));
        self.groups[group].push(self.routes.len());
        self.routes.push(Route {
            pattern: clamp(&spec.pattern, super::headers::MAX_HTTP_TEXT).0,
            method: spec.method,
            site,
            id_param: spec.id_param,
            patient_param: spec.patient_param,
        });
        Ok(())
    }

    /// The route matching a request's path and method.
    pub(crate) fn find(
        &self,
        path: &str,
        method: &Method,
        counters: &Counters,
    ) -> Option<Matched<'_>> {
        if self.routes.is_empty() {
            return None;
        }
        let m = self.matcher.at(path).ok()?;
        let route = self.groups.get(*m.value)?.iter().find_map(|&i| {
            let r = &self.routes[i];
            r.method.as_ref().is_none_or(|rm| rm == method).then_some(r)
        })?;
        let param = |name: &Option<String>| -> Option<Text> {
            let raw = m.params.get(name.as_deref()?)?;
            let decoded = if raw.contains('%') {
                percent_encoding::percent_decode_str(raw).decode_utf8_lossy()
            } else {
                std::borrow::Cow::Borrowed(raw)
            };
            if decoded.is_empty() {
                return None;
            }
            let (t, cut) = clamp(&decoded, MAX_ID);
            if cut {
                counters.add(&counters.clamped);
            }
            Some(t)
        };
        Some(Matched {
            route,
            resource_id: param(&route.id_param),
            patient_id: param(&route.patient_param),
        })
    }
}
