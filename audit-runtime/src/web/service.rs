//! [`AuditService`]: what [`AuditLayer`](super::AuditLayer) wraps around a
//! service, and its per-request work.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use ::http::header::HeaderValue;
use ::http::request::Parts;
use ::http::{HeaderMap, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};

use super::headers::{self, clamp_counted, MAX_HTTP_TEXT, MAX_ID};
use super::{SessionSource, Shared};
use crate::context::AuditContext;
use crate::dispatch::{self, Dispatch};
use crate::model::event::{Actor, Correlation, Http, Outcome};
use crate::model::metadata::Metadata;
use crate::record::{CallRecord, CallSite, ConfigRef, RecordRef};
use crate::time::timestamp::Timestamp;
use crate::util::text::Text;

/// The service [`AuditLayer`](super::AuditLayer) makes of an inner service.
pub struct AuditService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> AuditService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> AuditService<S> {
        AuditService { inner, shared }
    }
}

impl<S: Clone> Clone for AuditService<S> {
    fn clone(&self) -> Self {
        AuditService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for AuditService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, RB> tower_service::Service<Request<B>> for AuditService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> ResponseFuture<S::Future> {
        let shared = &self.shared;
        if shared.skips(req.uri().path()) {
            shared.counters.add(&shared.counters.skipped);
            return ResponseFuture {
                inner: self.inner.call(req),
                pending: None,
            };
        }
        let pending = if shared.needs_parts() {
            // A user function takes the request head as `Parts`.
            let (parts, body) = req.into_parts();
            let pending = Pending::start(shared, &View::of_parts(&parts));
            req = Request::from_parts(parts, body);
            pending
        } else {
            // Read in place: splitting the request and putting it back
            // together copied its head twice.
            Pending::start(shared, &View::of_request(&req))
        };
        let inner = pending.run(|| self.inner.call(req));
        ResponseFuture {
            inner,
            pending: Some(pending),
        }
    }
}

/// What the layer reads of a request's head: in place, or from its
/// `Parts` when a user function needs those.
pub(super) struct View<'a> {
    headers: &'a HeaderMap,
    extensions: &'a ::http::Extensions,
    method: &'a ::http::Method,
    uri: &'a ::http::Uri,
    /// Set when [`Shared::needs_parts`].
    parts: Option<&'a Parts>,
}

impl<'a> View<'a> {
    fn of_parts(parts: &'a Parts) -> View<'a> {
        View {
            headers: &parts.headers,
            extensions: &parts.extensions,
            method: &parts.method,
            uri: &parts.uri,
            parts: Some(parts),
        }
    }

    fn of_request<B>(req: &'a Request<B>) -> View<'a> {
        View {
            headers: req.headers(),
            extensions: req.extensions(),
            method: req.method(),
            uri: req.uri(),
            parts: None,
        }
    }
}

impl Shared {
    /// Whether a user function reads the request head as `Parts`.
    fn needs_parts(&self) -> bool {
        self.actor.is_some() || self.client_addr.is_some() || self.route_template.is_some()
    }

    pub(super) fn skips(&self, path: &str) -> bool {
        // The list holds its paths without the trailing slash already.
        let path = super::skip_form(path);
        if self.skip_lens & super::skip_len_bit(path) == 0 {
            return false;
        }
        self.skips.iter().any(|s| s == path)
    }

    fn client_ip(&self, req: &View<'_>) -> Option<IpAddr> {
        let peer = self
            .client_addr
            .as_ref()
            .zip(req.parts)
            .and_then(|(f, parts)| f(parts))
            .or_else(|| connect_info(req.extensions))
            .or_else(|| req.extensions.get::<SocketAddr>().map(SocketAddr::ip))?;
        Some(self.trusted.client(peer, req.headers))
    }

    fn session_id(&self, headers: &HeaderMap) -> Option<Text> {
        let raw: std::borrow::Cow<'_, str> = match self.session.as_ref()? {
            SessionSource::Header(name) => headers::header_text(headers, name)?,
            SessionSource::Cookie(name) => {
                std::borrow::Cow::Borrowed(headers::cookie(headers, name)?)
            }
        };
        if self.session_digest {
            let digest = Sha256::digest(raw.as_bytes());
            let mut hex = String::with_capacity(32);
            for b in &digest[..16] {
                hex.push_str(&format!("{b:02x}"));
            }
            return Some(Text::from(hex));
        }
        Some(clamp_counted(&raw, MAX_ID, &self.counters))
    }

    fn route_template(&self, req: &View<'_>) -> Option<Text> {
        if let (Some(f), Some(parts)) = (&self.route_template, req.parts) {
            return f(parts).map(|t| clamp_counted(&t, MAX_HTTP_TEXT, &self.counters));
        }
        matched_path(req.extensions).map(|t| clamp_counted(t, MAX_HTTP_TEXT, &self.counters))
    }
}

#[cfg(feature = "axum")]
fn connect_info(extensions: &::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

#[cfg(not(feature = "axum"))]
fn connect_info(_extensions: &::http::Extensions) -> Option<IpAddr> {
    None
}

#[cfg(feature = "axum")]
fn matched_path(extensions: &::http::Extensions) -> Option<&str> {
    extensions
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str())
}

#[cfg(not(feature = "axum"))]
fn matched_path(_extensions: &::http::Extensions) -> Option<&str> {
    None
}

/// `actor` within the schema's bounds (`None` when its subject is empty),
/// and the number of values cut or dropped (for [`HttpStats::clamped`](super::HttpStats::clamped)).
pub(super) fn clamp_actor(mut actor: Actor) -> (Option<Actor>, u64) {
    if actor.subject_id.trim().is_empty() {
        return (None, 0);
    }
    let mut cuts = 0;
    let mut cut = |t: &Text, max: usize| {
        let (t, was_cut) = headers::clamp(t, max);
        cuts += u64::from(was_cut);
        t
    };
    // Byte lengths first: no more bytes than the limit, no more characters.
    let over = |t: &Text, max: usize| t.len() > max && t.chars().count() > max;
    if over(&actor.subject_id, MAX_ID) {
        actor.subject_id = cut(&actor.subject_id, MAX_ID);
    }
    let mut dropped = 0;
    for org in [&mut actor.org_id, &mut actor.owner_org_id] {
        if let Some(o) = org {
            if o.is_empty() {
                *org = None;
                dropped += 1;
            } else if over(o, 128) {
                *o = cut(o, 128);
            }
        }
    }
    if let Some(roles) = &actor.roles {
        let fits = roles.len() <= 25 && roles.iter().all(|r| !r.is_empty() && !over(r, 64));
        if !fits {
            dropped += 1;
            let kept: Vec<Text> = roles
                .iter()
                .filter(|r| !r.is_empty())
                .take(25)
                .map(|r| headers::clamp(r, 64).0)
                .collect();
            actor.roles = Some(kept.into());
        }
    }
    (Some(actor), cuts + dropped)
}

/// One request in flight.
struct Pending {
    shared: Arc<Shared>,
    ctx: AuditContext,
    /// Installed while the request is handled: the layer's, or the scoped
    /// dispatcher of the thread that started the request.
    dispatch: Option<Dispatch>,
    route: Option<RouteHit>,
    /// The request id to set on the response.
    request_id: Option<HeaderValue>,
    /// Set by [`Pending::complete`]; a request dropped without it (the
    /// client went away, a timeout, a panic) is completed by `Drop`.
    done: bool,
}

struct RouteHit {
    site: &'static CallSite,
    resource_id: Option<Text>,
    patient_id: Option<Text>,
    started: Timestamp,
}

impl Pending {
    fn start(shared: &Arc<Shared>, req: &View<'_>) -> Pending {
        let c = &shared.counters;
        c.add(&c.requests);
        let dispatch = shared.dispatch.clone().or_else(dispatch::local);
        let head = headers::Head::scan(
            req.headers,
            shared.actor_header.as_ref().map(|a| &a.name),
            &shared.request_id_header,
        );
        let actor = match &shared.actor_header {
            Some(from) => super::actors::from_header(from, head.actor, shared),
            None => {
                let extracted = shared.actor.as_ref().zip(req.parts).and_then(|(f, p)| f(p));
                super::actors::ready(extracted, shared)
            }
        };

        let given = head
            .request_id
            .and_then(|v| Some((v, headers::value_text(v)?)));
        let (request_id, response_id) = match given {
            Some((value, given)) => {
                let id = clamp_counted(&given, MAX_ID, c);
                // The request's own value when it is the id as is (no
                // copy), else the id.
                let value = if value.as_bytes() == id.as_bytes() {
                    Some(value.clone())
                } else {
                    headers::value_of(id.as_bytes())
                };
                (id, value)
            }
            None => {
                let buf = crate::util::hex::uuid_hyphenated(crate::util::ids::fast_v4().as_bytes());
                debug_assert!(buf.iter().all(|b| *b == b'-' || b.is_ascii_hexdigit()));
                // SAFETY: a hyphenated UUID is hex digits and dashes, ASCII.
                let id = unsafe { std::str::from_utf8_unchecked(&buf) };
                (Text::new(id), Some(headers::uuid_value(id)))
            }
        };
        let correlation = Correlation {
            request_id: Some(request_id),
            trace_id: headers::trace_id(head.traceparent),
            session_id: shared.session_id(req.headers),
        };

        let matched = shared.routes.find(req.uri.path(), req.method, c);
        let route_template = shared
            .route_template(req)
            .or_else(|| matched.as_ref().map(|m| m.route.pattern.clone()));
        let http = Http {
            method: headers::method(req.method),
            route_template,
            status_code: None,
            client_ip: shared.client_ip(req).map(headers::ip_text),
            user_agent: headers::user_agent(head.user_agent, c),
        };
        // A route event's start time (only a matched request writes one).
        let route = matched.map(|m| RouteHit {
            site: m.route.site,
            resource_id: m.resource_id,
            patient_id: m.patient_id,
            started: match dispatch.as_ref().or_else(|| dispatch::global()) {
                Some(d) => d.config().now(),
                None => Timestamp::now(),
            },
        });

        let ctx =
            AuditContext::for_request(actor, Some(correlation), Some(http), Some(shared.max_held));
        Pending {
            shared: Arc::clone(shared),
            ctx,
            dispatch,
            route,
            request_id: response_id,
            done: false,
        }
    }

    /// Runs `f` with the request's context (and dispatcher) installed.
    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        self.ctx.in_scope(|| match &self.dispatch {
            Some(d) => dispatch::with_dispatch(d, f),
            None => f(),
        })
    }

    /// The request ended with `status` (`None`: no response), as `outcome`.
    fn complete(
        &mut self,
        status: Option<StatusCode>,
        outcome: Outcome,
        headers: Option<&mut HeaderMap>,
    ) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = status.map(|s| s.as_u16());
        // The status goes on the context before anything with it is
        // written (its JSON is rendered once, then cached).
        self.ctx.set_status(code);
        let finished = match self.ctx.request_scope() {
            Some(scope) => scope.finish(code),
            None => super::scope::Finished {
                held: 0,
                overflow: 0,
            },
        };
        let c = &self.shared.counters;
        c.held.add(finished.held);
        c.emitted_without_status.add(finished.overflow);
        if let (Some(h), Some(v)) = (headers, self.request_id.take()) {
            // One lookup: set unless the service set its own.
            if let ::http::header::Entry::Vacant(e) = h.entry(self.shared.request_id_header.clone())
            {
                e.insert(v);
            }
        }
        if let Some(hit) = self.route.take() {
            c.add(&c.route_events);
            let (d, config) = match &self.dispatch {
                Some(d) => (d, ConfigRef::Shared(d.config().clone())),
                None => match dispatch::global() {
                    Some(g) => (g, ConfigRef::Static(g.config())),
                    None => {
                        crate::stats::add_undispatched();
                        return;
                    }
                },
            };
            let record = CallRecord {
                site: hit.site,
                config,
                context: Some(self.ctx.clone()),
                started: hit.started,
                resource_id: hit.resource_id,
                patient_id: hit.patient_id,
                actor: None,
                outcome,
                metadata: Metadata::new(),
            };
            RecordRef::pass(record, |r| d.emit_record(r));
        }
    }
}

impl Drop for Pending {
    /// A request that ends without a response (dropped: the client went
    /// away, a timeout; or a panic in the handler) still writes its held
    /// calls, and a matched route records FAILURE `Cancelled` (`Panic`).
    fn drop(&mut self) {
        if self.done {
            self.ctx.recycle();
            return;
        }
        let c = Arc::clone(&self.shared.counters);
        c.add(&c.cancelled);
        let outcome = if std::thread::panicking() {
            Outcome::failure("Panic", "the request's handler panicked")
        } else {
            Outcome::failure("Cancelled", "the request was dropped before a response")
        };
        self.complete(None, outcome, None);
        self.ctx.recycle();
    }
}

pin_project! {
    /// The future of an [`AuditService`] call: the inner future, run inside
    /// the request's context; on completion (or drop) it emits the
    /// request's events. The inner future is dropped first, so calls it
    /// cancels are held and written with the rest.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F: fmt::Debug> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(pending) = this.pending.as_ref() else {
            return this.inner.poll(cx);
        };
        let inner = this.inner;
        let out = match pending.run(|| inner.poll(cx)) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(out) => out,
        };
        let Some(mut pending) = this.pending.take() else {
            return Poll::Ready(out);
        };
        Poll::Ready(match out {
            Ok(mut resp) => {
                let status = resp.status();
                pending.complete(
                    Some(status),
                    super::outcome_for_status(status),
                    Some(resp.headers_mut()),
                );
                Ok(resp)
            }
            Err(e) => {
                let c = Arc::clone(&pending.shared.counters);
                c.add(&c.service_errors);
                pending.complete(
                    None,
                    Outcome::failure("ServiceError", "the service failed before a response"),
                    None,
                );
                Err(e)
            }
        })
    }
}
