//! `AuditLayer` end to end: a real axum server on 127.0.0.1, a real HTTP
//! client (hyper, one TCP connection per client), events checked field by
//! field and against the schema validator.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get as on_get, post};
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use phi_audit::web::{route, AuditLayer, EXPORT, READ};
use phi_audit::{
    audited, validate, validate_value, Actor, AuditContext, AuditError, AuditEvent, Config,
    Dispatch, JsonlFileSink, MemorySink, NonBlocking, Outcome, OutcomeStatus,
};

// ---------------------------------------------------------------- the app

/// Errors of the demo handlers, with their audit outcome and response.
#[derive(Debug)]
enum ApiError {
    Unauthorized,
    Forbidden,
    NotFound,
}

impl AuditError for ApiError {
    fn audit_outcome(&self) -> Outcome {
        match self {
            ApiError::Unauthorized => Outcome::denied("Unauthorized"),
            ApiError::Forbidden => Outcome::denied("RoleDenied"),
            ApiError::NotFound => Outcome::failure("NotFound", "no such patient"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
        };
        status.into_response()
    }
}

/// Demo auth: `Authorization: Bearer <subject>[:<role>,<role>]`.
fn demo_actor(headers: &HeaderMap) -> Option<Actor> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let token = v.strip_prefix("Bearer ")?;
    let (subject, roles) = match token.split_once(':') {
        Some((s, r)) => (s, r.split(',').collect::<Vec<_>>()),
        None => (token, Vec::new()),
    };
    if subject.is_empty() {
        return None;
    }
    let actor = Actor::human(subject);
    Some(if roles.is_empty() {
        actor
    } else {
        actor.roles(roles)
    })
}

#[audited(action = "READ", resource = "Patient", id = id, patient = id)]
async fn read_patient(Path(id): Path<String>, headers: HeaderMap) -> Result<String, ApiError> {
    if demo_actor(&headers).is_none() {
        return Err(ApiError::Unauthorized);
    }
    if id == "missing" {
        return Err(ApiError::NotFound);
    }
    Ok("a patient".to_owned())
}

#[audited(action = "EXPORT", resource = "Patient", patient = id)]
async fn export_patient(Path(id): Path<String>) -> Result<&'static str, ApiError> {
    // The handler reads its actor from the request's context.
    let ctx = AuditContext::current().ok_or(ApiError::Unauthorized)?;
    let actor = ctx.actor_ref().ok_or(ApiError::Unauthorized)?;
    if actor.subject_id == "anonymous" {
        return Err(ApiError::Unauthorized);
    }
    let roles = actor.roles.as_deref().unwrap_or_default();
    if !roles.iter().any(|r| r == "exporter") {
        return Err(ApiError::Forbidden);
    }
    let _ = id;
    Ok("exported")
}

#[audited(action = "READ", resource = "Note", id = n)]
async fn read_note(n: u32) -> u32 {
    tokio::task::yield_now().await;
    n
}

#[audited(action = "READ", resource = "Lab", id = n)]
fn read_lab(n: u32) -> u32 {
    n
}

/// Spawns audited work three ways and reports what each task saw.
async fn fanout() -> String {
    let carried = phi_audit::spawn(read_note(1));
    let blocking = phi_audit::spawn_blocking(|| read_lab(2));
    let plain = tokio::spawn(async {
        (
            AuditContext::current().is_some(),
            phi_audit::current().is_some(),
        )
    });
    let (a, b, c) = (
        carried.await.unwrap(),
        blocking.await.unwrap(),
        plain.await.unwrap(),
    );
    format!("{a} {b} {c:?}")
}

/// `n` audited calls in one request.
async fn many(Path(n): Path<u32>) -> String {
    for i in 0..n {
        read_lab(i);
    }
    n.to_string()
}

/// Acts as another actor for part of the request (an edited copy of the
/// request's context).
async fn delegate() -> String {
    let ctx = AuditContext::current()
        .unwrap()
        .actor(Actor::service("batch-export"));
    let n = ctx.scope(read_note(3)).await;
    ctx.in_scope(|| read_lab(4));
    (n + 1).to_string()
}

async fn slow() -> &'static str {
    read_lab(7);
    tokio::time::sleep(Duration::from_secs(30)).await;
    "late"
}

fn routes() -> Router {
    Router::new()
        .route("/patients/{id}", on_get(read_patient))
        .route("/patients/{id}/export", post(export_patient))
        .route("/patients/{id}/fanout", on_get(fanout))
        .route("/many/{n}", on_get(many))
        .route("/slow", on_get(slow))
        .route("/delegate", on_get(delegate))
        .route("/health", on_get(|| async { "ok" }))
}

fn app_layer(dispatch: &Dispatch) -> AuditLayer {
    AuditLayer::new()
        .actor(|parts| demo_actor(&parts.headers))
        .session_header(HeaderName::from_static("x-session-id"))
        .route(
            route("/patients/{id}", READ, "Patient")
                .method("GET")
                .id_from_path("id")
                .patient_from_path("id"),
        )
        .route(
            route("/patients/{id}/export", EXPORT, "Patient")
                .method("POST")
                .patient_from_path("id"),
        )
        .route(route("/slow", READ, "Slow"))
        .dispatch(dispatch.clone())
}

fn memory() -> (Dispatch, MemorySink) {
    let sink = MemorySink::new();
    let d = Dispatch::new(Config::new("chart-service").build().unwrap(), sink.clone());
    (d, sink)
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

// ---------------------------------------------------------------- client

/// One HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    send: SendRequest<Empty<Bytes>>,
}

async fn connect(addr: SocketAddr) -> Conn {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    Conn { addr, send }
}

impl Conn {
    async fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send.ready().await.unwrap();
        let resp = self
            .send
            .send_request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn request_id(&self) -> &str {
        self.headers["x-request-id"].to_str().unwrap()
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    connect(addr).await.request("GET", path, headers).await
}

// ---------------------------------------------------------------- helpers

fn named<'a>(events: &'a [AuditEvent], name: &str) -> Vec<&'a AuditEvent> {
    events
        .iter()
        .filter(|e| e.action.name.as_deref() == Some(name))
        .collect()
}

fn assert_all_valid(events: &[AuditEvent]) {
    for e in events {
        if let Err(errors) = validate(e) {
            panic!("invalid event {}: {errors}", e.to_json());
        }
    }
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ---------------------------------------------------------------- tests

/// Handler events and route events carry the actor, the correlation ids
/// and the whole `http` block, with the final status code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_actor_correlation_and_http() {
    let (d, sink) = memory();
    let addr = serve(routes().layer(app_layer(&d))).await;
    let reply = get(
        addr,
        "/patients/p-42?name=Jane",
        &[
            ("authorization", "Bearer dr-house:clinician,oncall"),
            ("x-request-id", "req-given-1"),
            ("traceparent", TRACEPARENT),
            ("x-session-id", "sess-9"),
            ("user-agent", "chart-ui/1.0"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "a patient");
    assert_eq!(reply.request_id(), "req-given-1");

    let events = sink.events();
    assert_eq!(events.len(), 2, "one handler event and one route event");
    assert_all_valid(&events);
    for e in &events {
        assert_eq!(e.actor.subject_id, "dr-house");
        assert_eq!(
            e.actor.roles.as_deref().unwrap(),
            &[
                phi_audit::Text::from("clinician"),
                phi_audit::Text::from("oncall")
            ]
        );
        let c = e.correlation.as_ref().unwrap();
        assert_eq!(c.request_id.as_deref(), Some("req-given-1"));
        assert_eq!(
            c.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(c.session_id.as_deref(), Some("sess-9"));
        let h = e.http.as_ref().unwrap();
        assert_eq!(h.method.map(|m| m.as_str()), Some("GET"));
        assert_eq!(h.route_template.as_deref(), Some("/patients/{id}"));
        assert_eq!(h.status_code, Some(200));
        assert_eq!(h.client_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(h.user_agent.as_deref(), Some("chart-ui/1.0"));
        assert_eq!(e.resource.patient_id.as_deref(), Some("p-42"));
        assert_eq!(e.outcome.status, OutcomeStatus::Success);
        assert!(
            !e.to_json().contains("Jane"),
            "the query string is never read"
        );
    }
    assert_eq!(named(&events, "read_patient").len(), 1);
    let route = named(&events, "GET /patients/{id}");
    assert_eq!(route.len(), 1);
    assert_eq!(route[0].resource.id.as_deref(), Some("p-42"));
    assert_eq!(route[0].action.kind.as_str(), "READ");
}

/// Without an `x-request-id`, the layer makes a UUIDv4, records it and
/// sets it on the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_generated_when_absent() {
    let (d, sink) = memory();
    let addr = serve(routes().layer(app_layer(&d))).await;
    let mut conn = connect(addr).await;
    let a = conn
        .request("GET", "/patients/p-1", &[("authorization", "Bearer u1")])
        .await;
    let b = conn
        .request("GET", "/patients/p-1", &[("authorization", "Bearer u1")])
        .await;
    let (ida, idb) = (a.request_id().to_owned(), b.request_id().to_owned());
    assert_ne!(ida, idb);
    for id in [&ida, &idb] {
        let u = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(u.get_version_num(), 4);
    }
    let events = sink.events();
    assert_eq!(events.len(), 4);
    let ids: Vec<&str> = events
        .iter()
        .map(|e| {
            e.correlation
                .as_ref()
                .unwrap()
                .request_id
                .as_deref()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.iter().filter(|i| **i == ida).count(), 2);
    assert_eq!(ids.iter().filter(|i| **i == idb).count(), 2);
    // No traceparent, no session header: left out, not invented.
    assert!(events.iter().all(|e| {
        let c = e.correlation.as_ref().unwrap();
        c.trace_id.is_none() && c.session_id.is_none()
    }));
}

/// `X-Forwarded-For` is believed only from a trusted proxy network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_only_from_trusted_proxies() {
    let spoof = [
        ("authorization", "Bearer u1"),
        ("x-forwarded-for", "203.0.113.50"),
    ];
    // Untrusted peer (no trusted networks): the header is ignored.
    let (d, sink) = memory();
    let addr = serve(routes().layer(app_layer(&d))).await;
    get(addr, "/patients/p-1", &spoof).await;
    for e in sink.events() {
        assert_eq!(e.http.unwrap().client_ip.as_deref(), Some("127.0.0.1"));
    }
    // A peer in another network than the trusted one: still ignored.
    let (d, sink) = memory();
    let other = app_layer(&d).trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
    let addr = serve(routes().layer(other)).await;
    get(addr, "/patients/p-1", &spoof).await;
    for e in sink.events() {
        assert_eq!(e.http.unwrap().client_ip.as_deref(), Some("127.0.0.1"));
    }
    // Trusted peer: the forwarded client is used.
    let (d, sink) = memory();
    let trusted = app_layer(&d).trusted_proxies(["127.0.0.0/8".parse().unwrap()]);
    let addr = serve(routes().layer(trusted)).await;
    get(addr, "/patients/p-1", &spoof).await;
    let events = sink.events();
    assert_eq!(events.len(), 2);
    for e in events {
        assert_eq!(e.http.unwrap().client_ip.as_deref(), Some("203.0.113.50"));
    }
}

/// The raw path (ids, PHI) never becomes the route template: axum's
/// `MatchedPath` or the route table give the template, and a request that
/// matches neither has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_path_never_in_route_template() {
    const PHI_ID: &str = "JANE-DOE-1985-03-02";
    let check = |events: &[AuditEvent]| {
        for e in events {
            let json = e.to_json();
            if let Some(t) = e.http.as_ref().and_then(|h| h.route_template.as_deref()) {
                assert!(!t.contains(PHI_ID), "{json}");
                assert!(t.contains('{') || !t.contains("patients"), "{json}");
            }
        }
    };
    let (d, sink) = memory();
    let addr = serve(routes().layer(app_layer(&d))).await;
    let auth = [("authorization", "Bearer u1")];
    get(addr, &format!("/patients/{PHI_ID}"), &auth).await;
    get(addr, &format!("/patients/{PHI_ID}/fanout"), &auth).await;
    let events = sink.events();
    assert!(events.len() >= 4);
    check(&events);
    assert!(events
        .iter()
        .all(|e| e.http.as_ref().unwrap().route_template.is_some()));

    // The layer around the whole router (no MatchedPath at that point):
    // the route table's template, and none for routes it does not list.
    let (d, sink) = memory();
    let app = tower::ServiceBuilder::new()
        .layer(app_layer(&d))
        .service(routes());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, tower::make::Shared::new(app))
            .await
            .unwrap()
    });
    get(addr, &format!("/patients/{PHI_ID}"), &auth).await;
    get(addr, &format!("/patients/{PHI_ID}/fanout"), &auth).await;
    let events = sink.events();
    check(&events);
    for e in &events {
        let h = e.http.as_ref().unwrap();
        match e.action.name.as_deref() {
            Some("read_patient") | Some("GET /patients/{id}") => {
                assert_eq!(h.route_template.as_deref(), Some("/patients/{id}"))
            }
            _ => assert_eq!(h.route_template, None, "{}", e.to_json()),
        }
        // Without ConnectInfo and no SocketAddr extension: no client IP.
        assert_eq!(h.client_ip, None);
    }
}

/// 401 and 403 are DENIED on both the handler's and the route's event,
/// other errors FAILURE; the handler's event has the final status code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_and_failures_follow_the_status() {
    let (d, sink) = memory();
    let addr = serve(routes().layer(app_layer(&d))).await;
    let mut conn = connect(addr).await;

    let r = conn.request("GET", "/patients/p-1", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let events = sink.take();
    assert_all_valid(&events);
    let handler = named(&events, "read_patient")[0];
    assert_eq!(handler.outcome, Outcome::denied("Unauthorized"));
    assert_eq!(handler.actor.subject_id, "anonymous");
    assert_eq!(handler.http.as_ref().unwrap().status_code, Some(401));
    let route = named(&events, "GET /patients/{id}")[0];
    assert_eq!(route.outcome, Outcome::denied("Unauthorized"));
    assert_eq!(route.actor.subject_id, "anonymous", "never the service");

    let r = conn
        .request(
            "POST",
            "/patients/p-1/export",
            &[("authorization", "Bearer clerk:viewer")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let events = sink.take();
    assert_all_valid(&events);
    let handler = named(&events, "export_patient")[0];
    assert_eq!(handler.outcome, Outcome::denied("RoleDenied"));
    assert_eq!(handler.http.as_ref().unwrap().status_code, Some(403));
    let route = named(&events, "POST /patients/{id}/export")[0];
    assert_eq!(route.outcome, Outcome::denied("Forbidden"));
    assert_eq!(route.actor.subject_id, "clerk");

    let r = conn
        .request(
            "POST",
            "/patients/p-1/export",
            &[("authorization", "Bearer boss:exporter")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = sink.take();
    assert!(events.iter().all(|e| e.outcome == Outcome::SUCCESS));
    assert_eq!(events.len(), 2);

    let r = conn
        .request(
            "GET",
            "/patients/missing",
            &[("authorization", "Bearer u1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let events = sink.take();
    assert_all_valid(&events);
    assert_eq!(
        named(&events, "read_patient")[0].outcome,
        Outcome::failure("NotFound", "no such patient")
    );
    assert_eq!(
        named(&events, "GET /patients/{id}")[0].outcome,
        Outcome::failure("NotFound", "HTTP 404")
    );
    assert!(events
        .iter()
        .all(|e| e.http.as_ref().unwrap().status_code == Some(404)));

    // A path no route matches: no event at all.
    let r = conn.request("GET", "/nowhere/p-1", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(sink.take().is_empty());
}

/// Health checks pass through: no event, no request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_audited() {
    let (d, sink) = memory();
    let layer = app_layer(&d);
    let addr = serve(routes().layer(layer.clone())).await;
    let mut conn = connect(addr).await;
    for path in ["/health", "/health/"] {
        let r = conn.request("GET", path, &[]).await;
        assert!(r.status == StatusCode::OK || r.status == StatusCode::NOT_FOUND);
        assert!(!r.headers.contains_key("x-request-id"));
    }
    assert!(sink.events().is_empty());
    assert_eq!(layer.stats().skipped, 2);
    assert_eq!(layer.stats().requests, 0);
}

/// Headers of 300 characters (and worse) give valid events with every
/// value clamped to the schema, each cut counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_headers_give_valid_clamped_events() {
    let (d, sink) = memory();
    let layer = app_layer(&d);
    let addr = serve(routes().layer(layer.clone())).await;
    let long = "r".repeat(300);
    let subject = "s".repeat(300);
    let role = "x".repeat(70);
    let roles = vec![role.as_str(); 30].join(",");
    let auth = format!("Bearer {subject}:{roles}");
    let ua = "u".repeat(600);
    let long_trace = format!("{TRACEPARENT}{}", "-0".repeat(150));
    let reply = get(
        addr,
        "/patients/p-1",
        &[
            ("authorization", &auth),
            ("x-request-id", &long),
            ("x-session-id", &long),
            ("user-agent", &ua),
            ("traceparent", &long_trace),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.request_id().len(),
        256,
        "the id recorded is the one returned"
    );
    let events = sink.events();
    assert_eq!(events.len(), 2);
    assert_all_valid(&events);
    for e in &events {
        let c = e.correlation.as_ref().unwrap();
        assert_eq!(c.request_id.as_deref().unwrap().chars().count(), 256);
        assert_eq!(c.session_id.as_deref().unwrap().chars().count(), 256);
        assert_eq!(c.trace_id, None, "a malformed traceparent is ignored");
        let h = e.http.as_ref().unwrap();
        assert_eq!(h.user_agent.as_deref().unwrap().chars().count(), 512);
        assert_eq!(e.actor.subject_id.chars().count(), 256);
        let roles = e.actor.roles.as_deref().unwrap();
        assert_eq!(roles.len(), 25);
        assert!(roles.iter().all(|r| r.chars().count() == 64));
    }
    // request id, session id, user agent, subject, roles.
    assert_eq!(layer.stats().clamped, 5);

    // Multi-byte characters: characters are counted, never bytes cut.
    let (d, sink) = memory();
    let addr = serve(routes().layer(app_layer(&d))).await;
    let wide = "é".repeat(300);
    let mut req = Request::builder()
        .uri("/patients/p-1")
        .header("host", addr.to_string())
        .header("authorization", "Bearer u1");
    req = req.header(
        "user-agent",
        axum::http::HeaderValue::from_bytes(wide.as_bytes()).unwrap(),
    );
    let mut conn = connect(addr).await;
    conn.send.ready().await.unwrap();
    let resp = conn
        .send
        .send_request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let events = sink.events();
    assert_all_valid(&events);
    assert_eq!(
        events[0].http.as_ref().unwrap().user_agent.as_deref(),
        Some(wide.as_str()),
        "300 characters fit in 512"
    );
}

/// Calls made in `phi_audit::spawn` and `spawn_blocking` carry the
/// request's context (and are held for its status); a plain `tokio::spawn`
/// carries neither the context nor the layer's dispatcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_reaches_spawned_tasks() {
    let (d, sink) = memory();
    let addr = serve(routes().layer(app_layer(&d))).await;
    let r = get(
        addr,
        "/patients/p-5/fanout",
        &[
            ("authorization", "Bearer dr-x"),
            ("x-request-id", "req-fan"),
        ],
    )
    .await;
    assert_eq!(r.body, "1 2 (false, false)");
    let events = sink.events();
    assert_all_valid(&events);
    for name in ["read_note", "read_lab"] {
        let e = named(&events, name);
        assert_eq!(e.len(), 1, "{name}");
        let e = e[0];
        assert_eq!(e.actor.subject_id, "dr-x");
        assert_eq!(
            e.correlation.as_ref().unwrap().request_id.as_deref(),
            Some("req-fan")
        );
        let h = e.http.as_ref().unwrap();
        assert_eq!(h.status_code, Some(200));
        assert_eq!(h.route_template.as_deref(), Some("/patients/{id}/fanout"));
    }
}

/// A request holds at most `max_held_events` calls; the rest are emitted at
/// once without a status code, and counted. Nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_calls_are_bounded() {
    let (d, sink) = memory();
    let layer = app_layer(&d).max_held_events(10);
    let addr = serve(routes().layer(layer.clone())).await;
    let r = get(addr, "/many/25", &[]).await;
    assert_eq!(r.body, "25");
    let events = sink.events();
    assert_eq!(events.len(), 25);
    assert_all_valid(&events);
    let with_status = events
        .iter()
        .filter(|e| e.http.as_ref().unwrap().status_code == Some(200))
        .count();
    assert_eq!(with_status, 10);
    assert_eq!(layer.stats().held, 10);
    assert_eq!(layer.stats().emitted_without_status, 15);
    // The ones past the bound were written before the response.
    let first: Vec<_> = events.iter().take(15).collect();
    assert!(first
        .iter()
        .all(|e| e.http.as_ref().unwrap().status_code.is_none()));
}

/// A request dropped before its response (the client went away): its held
/// call and a FAILURE `Cancelled` route event are written all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_is_recorded() {
    let (d, sink) = memory();
    let layer = app_layer(&d);
    let addr = serve(routes().layer(layer.clone())).await;
    let mut conn = connect(addr).await;
    let req = Request::builder()
        .uri("/slow")
        .header("host", addr.to_string())
        .body(Empty::new())
        .unwrap();
    conn.send.ready().await.unwrap();
    let pending = conn.send.send_request(req);
    let _ = tokio::time::timeout(Duration::from_millis(300), pending).await;
    drop(conn);
    let mut waited = 0;
    while sink.len() < 2 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let events = sink.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_all_valid(&events);
    let route = named(&events, "/slow")[0];
    assert_eq!(
        route.outcome,
        Outcome::failure("Cancelled", "the request was dropped before a response")
    );
    assert_eq!(route.http.as_ref().unwrap().status_code, None);
    assert_eq!(named(&events, "read_lab").len(), 1);
    assert_eq!(layer.stats().cancelled, 1);
}

/// 10,000 requests over 64 concurrent connections, through a non-blocking
/// JSONL file (the fast path that writes pre-rendered JSON): exactly one
/// route event per request, every line valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_over_64_connections() {
    const REQUESTS: usize = 10_000;
    const CONNS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = NonBlocking::new(JsonlFileSink::open(&path).unwrap());
    let d = Dispatch::new(Config::new("chart-service").build().unwrap(), sink);
    let layer = app_layer(&d);
    let addr = serve(routes().layer(layer.clone())).await;

    let mut tasks = Vec::new();
    for c in 0..CONNS {
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(addr).await;
            let mut ids = Vec::new();
            let mut i = c;
            while i < REQUESTS {
                let auth = format!("Bearer user-{c}");
                let path = format!("/patients/p-{i}");
                let r = conn
                    .request("GET", &path, &[("authorization", &auth)])
                    .await;
                assert_eq!(r.status, StatusCode::OK);
                ids.push((r.request_id().to_owned(), i, c));
                i += CONNS;
            }
            ids
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.extend(t.await.unwrap());
    }
    assert_eq!(replies.len(), REQUESTS);
    d.flush().unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let mut routes: HashMap<String, serde_json::Value> = HashMap::new();
    let mut handler_events = 0;
    let mut lines = 0;
    for line in text.lines() {
        lines += 1;
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Err(e) = validate_value(&v, None) {
            panic!("invalid line {line}: {e}");
        }
        let rid = v["correlation"]["request_id"].as_str().unwrap().to_owned();
        assert_eq!(v["http"]["status_code"], 200);
        match v["action"]["name"].as_str().unwrap() {
            "GET /patients/{id}" => {
                assert!(
                    routes.insert(rid, v).is_none(),
                    "two route events for one request"
                );
            }
            "read_patient" => handler_events += 1,
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(lines, 2 * REQUESTS);
    assert_eq!(handler_events, REQUESTS);
    assert_eq!(routes.len(), REQUESTS);
    let mut seen = HashSet::new();
    for (rid, i, c) in &replies {
        let v = &routes[rid];
        assert_eq!(v["resource"]["id"], format!("p-{i}"));
        assert_eq!(v["actor"]["subject_id"], format!("user-{c}"));
        assert!(seen.insert(rid.clone()));
    }
    let stats = layer.stats();
    assert_eq!(stats.requests, REQUESTS as u64);
    assert_eq!(stats.route_events, REQUESTS as u64);
    assert_eq!(stats.held, REQUESTS as u64);
    assert_eq!(stats.emitted_without_status, 0);
    assert_eq!(d.stats().emitted, 2 * REQUESTS as u64);
}

/// The session id may come from a cookie, optionally as a digest; synthetic
/// PHI in the path, query and headers outside the recorded ones never
/// reaches an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_and_no_phi() {
    const PHI: &str = "SSN-123-45-6789";
    let (d, sink) = memory();
    let with_cookie = AuditLayer::new()
        .session_cookie("sid")
        .route(route("/patients/{id}", READ, "Patient"))
        .dispatch(d.clone());
    let addr = serve(routes().layer(with_cookie)).await;
    get(
        addr,
        &format!("/nowhere/{PHI}?q={PHI}"),
        &[("cookie", "theme=dark; sid=abc123"), ("x-note", PHI)],
    )
    .await;
    get(
        addr,
        &format!("/patients/p-1?q={PHI}"),
        &[("cookie", "theme=dark; sid=abc123"), ("x-note", PHI)],
    )
    .await;
    let events = sink.take();
    assert_eq!(events.len(), 2, "the handler's event and the route's");
    for e in &events {
        assert_eq!(
            e.correlation.as_ref().unwrap().session_id.as_deref(),
            Some("abc123")
        );
        assert!(!e.to_json().contains(PHI));
    }

    let digest = AuditLayer::new()
        .session_cookie("sid")
        .session_digest(true)
        .route(route("/patients/{id}", READ, "Patient"))
        .dispatch(d.clone());
    let addr = serve(routes().layer(digest)).await;
    get(addr, "/patients/p-1", &[("cookie", "sid=abc123")]).await;
    get(addr, "/patients/p-2", &[("cookie", "sid=abc123")]).await;
    let events = sink.take();
    let sessions: HashSet<_> = events
        .iter()
        .map(|e| e.correlation.as_ref().unwrap().session_id.clone().unwrap())
        .collect();
    assert_eq!(sessions.len(), 1, "one session, one digest");
    let s = sessions.into_iter().next().unwrap();
    assert_eq!(s.len(), 32);
    assert!(!s.contains("abc123"));
}

/// The explicit anonymous actor, and an extension set by an auth
/// middleware outside the layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_from_extension_and_anonymous() {
    #[derive(Clone)]
    struct AuthUser(Actor);
    impl phi_audit::web::AuditActor for AuthUser {
        fn audit_actor(&self) -> Option<Actor> {
            Some(self.0.clone())
        }
    }
    async fn auth(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
        if let Some(a) = demo_actor(req.headers()) {
            req.extensions_mut().insert(AuthUser(a));
        }
        next.run(req).await
    }
    let (d, sink) = memory();
    let layer = AuditLayer::new()
        .actor_from_extension::<AuthUser>()
        .anonymous_actor(Actor::human("unauthenticated").org("public"))
        .route(route("/patients/{id}", READ, "Patient"))
        .dispatch(d.clone());
    let app = routes().layer(layer).layer(axum::middleware::from_fn(auth));
    let addr = serve(app).await;
    get(
        addr,
        "/patients/p-1",
        &[("authorization", "Bearer ext-user:nurse")],
    )
    .await;
    get(addr, "/patients/p-1", &[]).await;
    let events = sink.events();
    assert_eq!(events.len(), 4);
    assert_all_valid(&events);
    assert!(events[..2].iter().all(|e| e.actor.subject_id == "ext-user"));
    assert!(events[2..].iter().all(|e| {
        e.actor.subject_id == "unauthenticated" && e.actor.org_id.as_deref() == Some("public")
    }));
}

/// The bound on the JSONL record path, which renders a context's JSON once
/// and caches it: the calls written early (past the bound) carry no
/// status, and must not fix the request's cached JSON without one; the
/// held ones carry the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_bound_on_the_jsonl_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let d = Dispatch::new(
        Config::new("chart-service").build().unwrap(),
        NonBlocking::new(JsonlFileSink::open(&path).unwrap()),
    );
    let layer = app_layer(&d).max_held_events(3);
    let addr = serve(routes().layer(layer.clone())).await;
    let r = get(addr, "/many/5", &[("x-request-id", "req-bound")]).await;
    assert_eq!(r.body, "5");
    d.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for v in &lines {
        validate_value(v, None).unwrap();
        assert_eq!(v["correlation"]["request_id"], "req-bound");
    }
    let statuses: Vec<_> = lines
        .iter()
        .map(|v| v["http"]["status_code"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            serde_json::Value::Null,
            serde_json::Value::Null,
            200.into(),
            200.into(),
            200.into()
        ]
    );
    assert_eq!(layer.stats().emitted_without_status, 2);
}

/// A handler acting as another actor for part of the request: those calls
/// keep the request's ids and `http` block, get the status, and name the
/// other actor; on both the record path and as events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_context_keeps_the_request_and_gets_the_status() {
    let (d, sink) = memory();
    let addr = serve(routes().layer(app_layer(&d))).await;
    let r = get(
        addr,
        "/delegate",
        &[
            ("authorization", "Bearer dr-y"),
            ("x-request-id", "req-del"),
        ],
    )
    .await;
    assert_eq!(r.body, "4");
    let events = sink.events();
    assert_eq!(events.len(), 2);
    assert_all_valid(&events);
    for e in &events {
        assert_eq!(e.actor.subject_id, "batch-export");
        assert_eq!(
            e.correlation.as_ref().unwrap().request_id.as_deref(),
            Some("req-del")
        );
        let h = e.http.as_ref().unwrap();
        assert_eq!(h.status_code, Some(200));
        assert_eq!(h.route_template.as_deref(), Some("/delegate"));
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let d = Dispatch::new(
        Config::new("chart-service").build().unwrap(),
        NonBlocking::new(JsonlFileSink::open(&path).unwrap()),
    );
    let addr = serve(routes().layer(app_layer(&d))).await;
    get(addr, "/delegate", &[("authorization", "Bearer dr-y")]).await;
    d.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2);
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        validate_value(&v, None).unwrap();
        assert_eq!(v["actor"]["subject_id"], "batch-export");
        assert_eq!(v["http"]["status_code"], 200);
    }
}

/// A plain tower service (no axum): an error instead of a response, a
/// panic inside `call`, and a panic in the future each write the held
/// call and a route event saying how the request ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_errors_and_panics_are_recorded() {
    use tower::{Layer, Service, ServiceExt};
    let (d, sink) = memory();
    let layer = AuditLayer::new()
        .route(route("/x/{id}", READ, "Thing").id_from_path("id"))
        .dispatch(d.clone());
    let req = |id: &str| Request::builder().uri(format!("/x/{id}")).body(()).unwrap();

    let failing = layer.layer(tower::service_fn(|_req: Request<()>| async {
        read_lab(1);
        Err::<Response<()>, &'static str>("backend down")
    }));
    assert!(failing.oneshot(req("e")).await.is_err());
    let events = sink.take();
    assert_eq!(events.len(), 2);
    assert_all_valid(&events);
    let route_event = events.iter().find(|e| e.resource.kind == "Thing").unwrap();
    assert_eq!(
        route_event.outcome,
        Outcome::failure("ServiceError", "the service failed before a response")
    );
    assert_eq!(layer.stats().service_errors, 1);

    // A panic inside `call` (before any future exists).
    let mut panicking_call = layer.layer(tower::service_fn(
        |_req: Request<()>| -> std::future::Ready<Result<Response<()>, ()>> {
            read_lab(2);
            panic!("bug in call");
        },
    ));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(panicking_call.call(req("p")));
    }));
    assert!(r.is_err());
    let events = sink.take();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_all_valid(&events);
    let route_event = events.iter().find(|e| e.resource.kind == "Thing").unwrap();
    assert_eq!(route_event.outcome.error_type.as_deref(), Some("Panic"));
    assert_eq!(route_event.resource.id.as_deref(), Some("p"));

    // A panic while the future is polled (as in a handler).
    let panicking_future = layer.layer(tower::service_fn(|_req: Request<()>| async {
        read_lab(3);
        if std::hint::black_box(true) {
            panic!("bug in handler");
        }
        Ok::<Response<()>, ()>(Response::new(()))
    }));
    let task = tokio::spawn(panicking_future.oneshot(req("f")));
    assert!(task.await.is_err());
    let events = sink.take();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_all_valid(&events);
    let route_event = events.iter().find(|e| e.resource.kind == "Thing").unwrap();
    assert_eq!(route_event.outcome.error_type.as_deref(), Some("Panic"));
    assert_eq!(layer.stats().cancelled, 2);
}

/// The user's functions over the request head: the actor from one header
/// (read once per value), the client address and the route template from
/// functions; each result lands on the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_functions_over_the_request_head() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reads);
    let (d, sink) = memory();
    let layer = AuditLayer::new().dispatch(d.clone()).actor_from_header(
        axum::http::header::AUTHORIZATION,
        move |v| {
            counted.fetch_add(1, Ordering::Relaxed);
            Some(Actor::human(v.strip_prefix("Bearer ")?).roles(["clinician"]))
        },
    );
    let addr = serve(routes().layer(layer)).await;
    let mut conn = connect(addr).await;
    for _ in 0..5 {
        let r = conn
            .request("GET", "/patients/p-7", &[("authorization", "Bearer dr-a")])
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = conn.request("GET", "/patients/p-7", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let events = sink.events();
    assert_eq!(events.len(), 6);
    for e in &events[..5] {
        assert_eq!(e.actor.subject_id, "dr-a");
        assert_eq!(e.actor.roles.as_deref().map(|r| r.len()), Some(1));
    }
    assert_eq!(events[5].actor.subject_id, "anonymous");
    // Read once per value and thread: at most once per server thread.
    let n = reads.load(Ordering::Relaxed);
    assert!((1..=2).contains(&n), "read {n} times");
    assert_all_valid(&events);

    // Client address and route template from functions (these take the
    // request head as `Parts`).
    let (d, sink) = memory();
    let layer = AuditLayer::new()
        .dispatch(d.clone())
        .actor(|parts| demo_actor(&parts.headers))
        .client_addr(|parts| {
            parts
                .headers
                .get("x-test-peer")?
                .to_str()
                .ok()?
                .parse()
                .ok()
        })
        .route_template(|parts| Some(format!("custom:{}", parts.method)));
    let addr = serve(routes().layer(layer)).await;
    get(
        addr,
        "/patients/p-8",
        &[
            ("authorization", "Bearer dr-b"),
            ("x-test-peer", "198.51.100.7"),
        ],
    )
    .await;
    let events = sink.events();
    assert_eq!(events.len(), 1);
    let h = events[0].http.as_ref().unwrap();
    assert_eq!(h.client_ip.as_deref(), Some("198.51.100.7"));
    assert_eq!(h.route_template.as_deref(), Some("custom:GET"));
    assert_eq!(events[0].actor.subject_id, "dr-b");
    assert_all_valid(&events);
}
