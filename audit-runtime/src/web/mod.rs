//! HTTP services (feature `tower`): [`AuditLayer`] audits every request of a
//! tower service (axum, hyper, tonic) and gives its handlers their
//! [`AuditContext`](crate::AuditContext).
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use phi_audit::web::{route, AuditLayer, EXPORT, READ};
//! use phi_audit::Actor;
//!
//! let layer = AuditLayer::new()
//!     // Who is asking: from the request head (or `actor_from_extension`).
//!     .actor(|parts| {
//!         let user = parts.headers.get("x-demo-user")?.to_str().ok()?;
//!         Some(Actor::human(user))
//!     })
//!     // One event per matched request, even when no #[audited] call ran.
//!     .route(route("/patients/{id}", READ, "Patient").method("GET").id_from_path("id"))
//!     .route(route("/patients/{id}/export", EXPORT, "Patient").method("POST").patient_from_path("id"));
//! // axum: Router::new().route(..).layer(layer)
//! # let _ = layer; }
//! ```
//!
//! # Per request
//!
//! The layer builds an [`AuditContext`](crate::AuditContext) and runs the
//! inner service's future inside it, so every `#[audited]` call made while
//! handling the request (and in tasks started with `phi_audit::spawn` /
//! `spawn_blocking`, feature `tokio`) records:
//!
//! - **actor**: what the configured extractor returns
//!   ([`AuditLayer::actor`], [`AuditLayer::actor_from_header`],
//!   [`AuditLayer::actor_from_extension`]), clamped to the schema (subject
//!   256 characters, organizations 128, at most 25 roles of 64); a request
//!   without one is recorded as the anonymous actor
//!   ([`AuditLayer::anonymous_actor`], default human `anonymous`), never as
//!   the service. Each thread keeps the last actors it fitted (512) with
//!   their rendered JSON, so a user's next request reuses them (with
//!   `actor_from_header`, without running the extractor); their cuts are
//!   counted on every request all the same.
//! - **correlation**: `request_id` from the `x-request-id` header
//!   ([`AuditLayer::request_id_header`]), else a new UUIDv4, which is also
//!   set on the response; `trace_id` from a valid W3C `traceparent`;
//!   `session_id` from a configured header or cookie. Each at most 256
//!   characters.
//! - **http**: method; `route_template` from [`AuditLayer::route_template`],
//!   else axum's `MatchedPath` (feature `axum`), else the matching route
//!   table entry, and otherwise left out: the raw path (which carries ids,
//!   sometimes PHI) is never recorded; `status_code` of the response;
//!   `client_ip` from the connection (axum's `ConnectInfo<SocketAddr>`, a
//!   `SocketAddr` request extension, or [`AuditLayer::client_addr`]),
//!   replaced by what `Forwarded` / `X-Forwarded-For` say only when the peer
//!   is in a [trusted proxy network](AuditLayer::trusted_proxies);
//!   `user_agent`, at most 512 characters.
//!
//! Bodies are never read. Paths on the skip list (default `/health`,
//! `/healthz`, `/live`, `/livez`, `/liveness`, `/ready`, `/readyz`,
//! `/readiness`, `/metrics`) pass through untouched. Every value cut or
//! replaced is counted in [`HttpStats::clamped`].
//!
//! # Status codes on `#[audited]` events
//!
//! An audited call ends before its handler's response exists, so the layer
//! holds the calls made during a request (at most
//! [`AuditLayer::max_held_events`], default 256, about 190 bytes each) and
//! emits them when the response head is known, with `http.status_code` set.
//! Past the bound a call is emitted at once without a status code and
//! counted ([`HttpStats::emitted_without_status`]), so a request making
//! thousands of calls holds at most the bound. Calls made after the response
//! (a spawned task that outlives the request) are emitted at once with the
//! final status. When the inner service fails or the request is dropped
//! before a response (client gone, timeout), the held calls are emitted
//! without a status code. Events built with [`EventBuilder`](crate::EventBuilder)
//! are not held: they carry the `http` block without a status code.
//!
//! # Request-level events
//!
//! [`AuditLayer::route`] adds a route table: each request matching an entry
//! emits one event (action and resource type from the entry, `resource.id`
//! and `patient_id` from path parameters), with the outcome from the status
//! ([`outcome_for_status`]: 1xx-3xx SUCCESS, 401/403 DENIED with
//! `Unauthorized`/`Forbidden`, other 4xx/5xx FAILURE), FAILURE `Cancelled`
//! when the request is dropped before a response and `ServiceError` when the
//! inner service fails.
//!
//! # Where events go
//!
//! To the dispatcher given with [`AuditLayer::dispatch`], else the thread's
//! scoped dispatcher when the request started, else the global one.

mod actors;
mod client_ip;
mod headers;
mod routes;
mod scope;
mod service;
mod status;

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use ::http::header::HeaderName;
use ::http::request::Parts;

use crate::dispatch::Dispatch;
use crate::model::event::{ActionType, Actor};

pub use ipnet::IpNet;
pub use routes::{route, RouteError, RouteSpec};
pub(crate) use scope::{RequestScope, Target};
pub use service::{AuditService, ResponseFuture};
pub use status::outcome_for_status;

/// `action.type` READ, for [`route`].
pub const READ: ActionType = ActionType::Read;
/// `action.type` CREATE, for [`route`].
pub const CREATE: ActionType = ActionType::Create;
/// `action.type` UPDATE, for [`route`].
pub const UPDATE: ActionType = ActionType::Update;
/// `action.type` DELETE, for [`route`].
pub const DELETE: ActionType = ActionType::Delete;
/// `action.type` EXPORT, for [`route`].
pub const EXPORT: ActionType = ActionType::Export;
/// `action.type` LOGIN, for [`route`].
pub const LOGIN: ActionType = ActionType::Login;
/// `action.type` LOGOUT, for [`route`].
pub const LOGOUT: ActionType = ActionType::Logout;
/// `action.type` PRINT, for [`route`].
pub const PRINT: ActionType = ActionType::Print;
/// `action.type` OTHER, for [`route`].
pub const OTHER: ActionType = ActionType::Other;

/// Paths skipped by default.
pub const DEFAULT_SKIPS: &[&str] = &[
    "/health",
    "/healthz",
    "/live",
    "/livez",
    "/liveness",
    "/ready",
    "/readyz",
    "/readiness",
    "/metrics",
];

/// Calls held per request by default (see [`AuditLayer::max_held_events`]).
pub const DEFAULT_MAX_HELD: usize = 256;

/// A value a request extension can hold that names the actor; see
/// [`AuditLayer::actor_from_extension`].
pub trait AuditActor {
    /// The actor, or `None` for an unauthenticated request.
    fn audit_actor(&self) -> Option<Actor>;
}

impl AuditActor for Actor {
    fn audit_actor(&self) -> Option<Actor> {
        Some(self.clone())
    }
}

impl<T: AuditActor> AuditActor for Option<T> {
    fn audit_actor(&self) -> Option<Actor> {
        self.as_ref().and_then(AuditActor::audit_actor)
    }
}

/// A path as the skip list holds it and compares it: without its trailing
/// slash (`/` itself stays).
pub(crate) fn skip_form(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    }
}

/// `path`'s bit in `Shared::skip_lens`.
pub(crate) fn skip_len_bit(path: &str) -> u64 {
    1 << path.len().min(63)
}

type ActorFn = Arc<dyn Fn(&Parts) -> Option<Actor> + Send + Sync>;
type AddrFn = Arc<dyn Fn(&Parts) -> Option<IpAddr> + Send + Sync>;
type TemplateFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

#[derive(Clone, Debug)]
enum SessionSource {
    Header(HeaderName),
    Cookie(String),
}

/// A [`tower` layer](tower_layer::Layer) that audits every HTTP request; see
/// the [module documentation](self).
///
/// Cheap to clone; clones share their counters ([`AuditLayer::stats`]).
#[derive(Clone)]
pub struct AuditLayer {
    shared: Arc<Shared>,
}

// Aligned so that its fields start a cache line apart from the reference
// counts before them in the `Arc`: every request clones and drops the
// `Arc` (axum clones the service, the request's future keeps one), from
// both worker threads, and reads the fields; on one line, each count's
// update took the fields away from the other thread's core.
#[derive(Clone)]
#[repr(align(128))]
pub(crate) struct Shared {
    actor: Option<ActorFn>,
    /// Set instead of `actor` by [`AuditLayer::actor_from_header`].
    actor_header: Option<actors::HeaderActor>,
    anonymous: Actor,
    request_id_header: HeaderName,
    session: Option<SessionSource>,
    session_digest: bool,
    trusted: client_ip::TrustedProxies,
    client_addr: Option<AddrFn>,
    route_template: Option<TemplateFn>,
    routes: routes::RouteTable,
    skips: Vec<String>,
    /// Bit `n` set when a path of `n` bytes (0..=63) is on the skip list,
    /// bit 63 also for every longer one: most paths are told apart by
    /// their length alone.
    skip_lens: u64,
    max_held: usize,
    dispatch: Option<Dispatch>,
    counters: Arc<Counters>,
}

impl fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("AuditLayer")
            .field("request_id_header", &s.request_id_header)
            .field("session", &s.session)
            .field("trusted_proxies", &s.trusted)
            .field("routes", &s.routes)
            .field("skips", &s.skips)
            .field("max_held", &s.max_held)
            .finish_non_exhaustive()
    }
}

impl Default for AuditLayer {
    fn default() -> Self {
        AuditLayer::new()
    }
}

impl AuditLayer {
    /// A layer with the defaults: no actor extractor (every request is the
    /// anonymous actor until one is set), request ids from `x-request-id`,
    /// no session id, no trusted proxies, no route table, the default skip
    /// list, 256 held calls per request, events to the current dispatcher.
    pub fn new() -> AuditLayer {
        AuditLayer {
            shared: Arc::new(Shared {
                actor: None,
                actor_header: None,
                anonymous: Actor::human("anonymous"),
                request_id_header: HeaderName::from_static("x-request-id"),
                session: None,
                session_digest: false,
                trusted: client_ip::TrustedProxies::default(),
                client_addr: None,
                route_template: None,
                routes: routes::RouteTable::default(),
                skips: DEFAULT_SKIPS
                    .iter()
                    .map(|s| skip_form(s).to_owned())
                    .collect(),
                skip_lens: DEFAULT_SKIPS
                    .iter()
                    .fold(0, |m, s| m | skip_len_bit(skip_form(s))),
                max_held: DEFAULT_MAX_HELD,
                dispatch: None,
                counters: Arc::default(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> AuditLayer {
        f(Arc::make_mut(&mut self.shared));
        self
    }

    /// How to tell who is asking, from the request head (after the layers
    /// outside this one ran). `None` means unauthenticated: the request is
    /// recorded with the [anonymous actor](AuditLayer::anonymous_actor).
    ///
    /// The extractor runs on every request: keep it cheap, and let it read
    /// what your authentication already established (a verified token's
    /// claims, an extension) rather than verify credentials again.
    pub fn actor<F>(self, extract: F) -> AuditLayer
    where
        F: Fn(&Parts) -> Option<Actor> + Send + Sync + 'static,
    {
        self.edit(|s| {
            s.actor = Some(Arc::new(extract));
            s.actor_header = None;
        })
    }

    /// How to tell who is asking, from one request header (a bearer token,
    /// say): `read` gets the header's value (a request without the header,
    /// or with a value that is not visible ASCII, is unauthenticated) and
    /// returns the actor, or `None` for an unauthenticated request. Replaces
    /// [`AuditLayer::actor`].
    ///
    /// The actor must follow from the value alone: each thread calls `read`
    /// once per distinct value and reuses its answer (fitted to the schema
    /// and rendered) while the value stays among the 512 it saw last, so a
    /// user's requests cost a table lookup instead of parsing the header
    /// (or decoding a token) again. Values are kept as they are, in this
    /// process's memory, for that time; values over 4 KiB are read on every
    /// request.
    ///
    /// ```
    /// # #[cfg(feature = "tower")] {
    /// use phi_audit::web::AuditLayer;
    /// use phi_audit::Actor;
    /// use http::header::AUTHORIZATION;
    ///
    /// // Demo only: "Bearer <subject>" names the subject.
    /// let layer = AuditLayer::new().actor_from_header(AUTHORIZATION, |value| {
    ///     Some(Actor::human(value.strip_prefix("Bearer ")?))
    /// });
    /// # let _ = layer; }
    /// ```
    pub fn actor_from_header<F>(self, name: HeaderName, read: F) -> AuditLayer
    where
        F: Fn(&str) -> Option<Actor> + Send + Sync + 'static,
    {
        self.edit(|s| {
            s.actor = None;
            s.actor_header = Some(actors::HeaderActor::new(name, Arc::new(read)));
        })
    }

    /// The actor from a request extension of type `T` that the
    /// application's authentication middleware inserted (for axum: a
    /// `middleware::from_fn` layered *outside* this one, i.e. added after it
    /// with `Router::layer`, which identifies the user and leaves rejecting
    /// to the handlers, so that rejected requests are audited too).
    pub fn actor_from_extension<T>(self) -> AuditLayer
    where
        T: AuditActor + Send + Sync + 'static,
    {
        self.actor(|parts| parts.extensions.get::<T>()?.audit_actor())
    }

    /// The actor recorded for requests without one (default: human
    /// `anonymous`).
    pub fn anonymous_actor(self, actor: Actor) -> AuditLayer {
        self.edit(|s| s.anonymous = actor)
    }

    /// The header carrying the request id (default `x-request-id`). A
    /// request without it gets a new UUIDv4, also set on the response.
    pub fn request_id_header(self, name: HeaderName) -> AuditLayer {
        self.edit(|s| s.request_id_header = name)
    }

    /// `correlation.session_id` from this request header.
    pub fn session_header(self, name: HeaderName) -> AuditLayer {
        self.edit(|s| s.session = Some(SessionSource::Header(name)))
    }

    /// `correlation.session_id` from this cookie.
    ///
    /// A session cookie is usually a credential: whoever reads the audit
    /// trail could replay it. Name a cookie that identifies the session
    /// without granting it, or turn on [`AuditLayer::session_digest`].
    pub fn session_cookie(self, name: impl Into<String>) -> AuditLayer {
        let name = name.into();
        self.edit(|s| s.session = Some(SessionSource::Cookie(name)))
    }

    /// Record a digest of the session id (the first 32 hex digits of its
    /// SHA-256) instead of the id: requests of one session still correlate,
    /// and the trail holds nothing that opens the session.
    pub fn session_digest(self, on: bool) -> AuditLayer {
        self.edit(|s| s.session_digest = on)
    }

    /// Networks of the reverse proxies whose `Forwarded` /
    /// `X-Forwarded-For` headers are believed (default: none, so the
    /// connection's peer is always the client). Use it exactly for your own
    /// load balancers: any peer in these networks can name any client.
    ///
    /// ```
    /// # use phi_audit::web::AuditLayer;
    /// let layer = AuditLayer::new()
    ///     .trusted_proxies(["10.0.0.0/8".parse()?, "::1/128".parse()?]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trusted_proxies(self, nets: impl IntoIterator<Item = IpNet>) -> AuditLayer {
        self.edit(|s| {
            for n in nets {
                s.trusted.add(n);
            }
        })
    }

    /// How to find the connection's peer address when neither axum's
    /// `ConnectInfo<SocketAddr>` nor a `SocketAddr` extension is on the
    /// request (a hyper server, a test).
    pub fn client_addr<F>(self, peer: F) -> AuditLayer
    where
        F: Fn(&Parts) -> Option<IpAddr> + Send + Sync + 'static,
    {
        self.edit(|s| s.client_addr = Some(Arc::new(peer)))
    }

    /// `http.route_template` from your own function (it must return a
    /// template such as `/patients/{id}`, never the raw path); consulted
    /// before axum's `MatchedPath` and the route table.
    pub fn route_template<F>(self, template: F) -> AuditLayer
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.edit(|s| s.route_template = Some(Arc::new(template)))
    }

    /// Adds a route to the table (see [`route`]).
    ///
    /// # Panics
    ///
    /// When the pattern is not a valid route (as axum's `Router::route`
    /// does); [`AuditLayer::try_route`] returns the error instead.
    pub fn route(self, spec: RouteSpec) -> AuditLayer {
        match self.try_route(spec) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }

    /// Adds a route to the table, or says why the pattern is not valid.
    pub fn try_route(mut self, spec: RouteSpec) -> Result<AuditLayer, RouteError> {
        Arc::make_mut(&mut self.shared).routes.add(spec)?;
        Ok(self)
    }

    /// Adds a path to the skip list (exact match, with or without a
    /// trailing slash).
    pub fn skip(self, path: impl Into<String>) -> AuditLayer {
        let path = path.into();
        let path = skip_form(&path).to_owned();
        self.edit(|s| {
            s.skip_lens |= skip_len_bit(&path);
            s.skips.push(path);
        })
    }

    /// Empties the skip list (the defaults included).
    pub fn no_skips(self) -> AuditLayer {
        self.edit(|s| {
            s.skips.clear();
            s.skip_lens = 0;
        })
    }

    /// Most audited calls held per request until its status is known
    /// (default 256; 0 emits every call at once, without a status code).
    pub fn max_held_events(self, n: usize) -> AuditLayer {
        self.edit(|s| s.max_held = n)
    }

    /// Sends this layer's events (and those of the audited calls under it)
    /// to `dispatch`, installed as the scoped dispatcher while the request
    /// is handled.
    pub fn dispatch(self, dispatch: Dispatch) -> AuditLayer {
        self.edit(|s| s.dispatch = Some(dispatch))
    }

    /// The counters of this layer and its clones.
    pub fn stats(&self) -> HttpStats {
        self.shared.counters.snapshot()
    }
}

impl<S> tower_layer::Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> AuditService<S> {
        AuditService::new(inner, Arc::clone(&self.shared))
    }
}

/// A counter split over cache lines: each thread adds to its own stripe
/// (requests on different cores do not contend for one line), a snapshot
/// sums them.
#[derive(Default)]
pub(crate) struct Counter([Stripe; STRIPES]);

const STRIPES: usize = 8;

#[derive(Default)]
#[repr(align(64))]
struct Stripe(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
        }
        if n > 0 {
            let i = MINE.try_with(|m| *m).unwrap_or(0);
            self.0[i].0.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

/// The counters behind [`HttpStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: Counter,
    pub(crate) skipped: Counter,
    pub(crate) route_events: Counter,
    pub(crate) held: Counter,
    pub(crate) emitted_without_status: Counter,
    pub(crate) clamped: Counter,
    pub(crate) cancelled: Counter,
    pub(crate) service_errors: Counter,
}

impl Counters {
    pub(crate) fn add(&self, c: &Counter) {
        c.add(1);
    }

    fn snapshot(&self) -> HttpStats {
        HttpStats {
            requests: self.requests.get(),
            skipped: self.skipped.get(),
            route_events: self.route_events.get(),
            held: self.held.get(),
            emitted_without_status: self.emitted_without_status.get(),
            clamped: self.clamped.get(),
            cancelled: self.cancelled.get(),
            service_errors: self.service_errors.get(),
        }
    }
}

/// Counters of an [`AuditLayer`] (and its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Requests audited (given a context).
    pub requests: u64,
    /// Requests on the skip list, passed through.
    pub skipped: u64,
    /// Route-table events emitted (one per matched request).
    pub route_events: u64,
    /// Audited calls held until their request's status was known.
    pub held: u64,
    /// Audited calls emitted without a status code because their request
    /// already held [`AuditLayer::max_held_events`] calls.
    pub emitted_without_status: u64,
    /// Values cut or replaced to fit the schema: request, session and path
    /// ids over 256 characters, user agents over 512, actor fields.
    pub clamped: u64,
    /// Requests dropped before their response (held calls emitted without
    /// a status code; a matched route records FAILURE `Cancelled`).
    pub cancelled: u64,
    /// Requests whose inner service returned an error instead of a
    /// response.
    pub service_errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length mask never hides a listed path: defaults, added ones
    /// (with or without their slash), paths over 63 bytes; `no_skips`
    /// empties both.
    #[test]
    fn skip_list() {
        let long = format!("/{}", "x".repeat(80));
        let layer = AuditLayer::new()
            .skip("/internal/status/")
            .skip(long.clone());
        let s = &layer.shared;
        for p in [
            "/health",
            "/health/",
            "/metrics",
            "/internal/status",
            "/internal/status/",
        ] {
            assert!(s.skips(p), "{p}");
        }
        assert!(s.skips(&long));
        assert!(s.skips(&format!("{long}/")));
        for p in [
            "/",
            "/patients/1",
            "/healthy",
            "/internal/statu",
            &format!("{long}y"),
        ] {
            assert!(!s.skips(p), "{p}");
        }
        let none = AuditLayer::new().no_skips();
        assert!(!none.shared.skips("/health"));
        let root = AuditLayer::new().no_skips().skip("/");
        assert!(root.shared.skips("/"));
        assert!(!root.shared.skips("/x"));
    }
}
