//! An axum service audited by one layer: every request gets its
//! `AuditContext` (actor, request and trace ids, the `http` block), every
//! `#[audited]` handler's event carries the response status, and a route
//! table records one event per matched request.
//!
//! ```text
//! cargo run -p phi-audit-tests --example axum_service --features axum,tokio
//! curl -i -H 'Authorization: Bearer dr-house:clinician' localhost:3000/patients/p-42
//! curl -i -X POST -H 'Authorization: Bearer dr-house:clinician' localhost:3000/patients/p-42/export
//! curl -i -X POST -H 'Authorization: Bearer cm-1:exporter' localhost:3000/patients/p-42/export
//! curl -i localhost:3000/patients/p-42        # 401: recorded as the anonymous actor, DENIED
//! curl -i localhost:3000/health               # not audited
//! ```
//!
//! `PHI_AUDIT_ADDR` sets the address (default `127.0.0.1:3000`) and
//! `PHI_AUDIT_FILE` the JSONL file the events go to (default
//! `audit.jsonl`), through a `NonBlocking` queue. Ctrl-C or SIGTERM stops
//! accepting requests, lets the ones in flight finish, and flushes every
//! event before the process exits.
//!
//! The authentication here is a demo only: `Authorization: Bearer
//! <subject>[:<role>,<role>]` is believed as it stands. A real service
//! verifies a token and hands the layer what it established.

use std::net::SocketAddr;

use axum::extract::Path;
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use phi_audit::web::{route, AuditLayer, EXPORT, READ};
use phi_audit::{
    audited, Actor, AuditContext, AuditError, Config, JsonlFileSink, NonBlocking, Outcome,
};

/// The actor recorded for requests without credentials.
const ANONYMOUS: &str = "anonymous";

/// DEMO ONLY: `Bearer <subject>[:<role>,<role>]`, unverified. The actor
/// follows from the header's value alone, so the layer reads each value
/// once per thread (`AuditLayer::actor_from_header`).
fn demo_auth(value: &str) -> Option<Actor> {
    let token = value.strip_prefix("Bearer ")?.trim();
    let (subject, roles) = token.split_once(':').unwrap_or((token, ""));
    if subject.is_empty() || subject == ANONYMOUS {
        return None;
    }
    let actor = Actor::human(subject).org("demo-clinic");
    let roles: Vec<&str> = roles.split(',').filter(|r| !r.is_empty()).collect();
    Some(if roles.is_empty() {
        actor
    } else {
        actor.roles(roles)
    })
}

/// The handlers' errors: each knows its audit outcome and its response.
#[derive(Debug)]
enum ApiError {
    Unauthorized,
    Forbidden,
}

impl AuditError for ApiError {
    fn audit_outcome(&self) -> Outcome {
        match self {
            ApiError::Unauthorized => Outcome::denied("Unauthenticated"),
            ApiError::Forbidden => Outcome::denied("RoleDenied"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED.into_response(),
            ApiError::Forbidden => StatusCode::FORBIDDEN.into_response(),
        }
    }
}

/// The request's actor, from the context the layer installed.
fn caller() -> Result<Actor, ApiError> {
    let ctx = AuditContext::current().ok_or(ApiError::Unauthorized)?;
    match ctx.actor_ref() {
        Some(a) if a.subject_id != ANONYMOUS => Ok(a.clone()),
        _ => Err(ApiError::Unauthorized),
    }
}

#[audited(action = "READ", resource = "Patient", id = id, patient = id)]
async fn read_patient(Path(id): Path<String>) -> Result<String, ApiError> {
    caller()?;
    Ok(format!("{{\"id\":\"{id}\",\"chart\":\"...\"}}\n"))
}

#[audited(action = "EXPORT", resource = "Patient", patient = id)]
async fn export_patient(Path(id): Path<String>) -> Result<String, ApiError> {
    let actor = caller()?;
    let roles = actor.roles.as_deref().unwrap_or_default();
    if !roles.iter().any(|r| r == "exporter") {
        return Err(ApiError::Forbidden);
    }
    Ok(format!("export of {id} queued\n"))
}

/// The application: routes, and the audit layer around them.
fn app() -> Router {
    let audit = AuditLayer::new()
        .actor_from_header(AUTHORIZATION, demo_auth)
        .anonymous_actor(Actor::human(ANONYMOUS))
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
        );
    Router::new()
        .route("/patients/{id}", get(read_patient))
        .route("/patients/{id}/export", post(export_patient))
        .route("/health", get(|| async { "ok\n" }))
        .layer(audit)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("PHI_AUDIT_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let file = std::env::var("PHI_AUDIT_FILE").unwrap_or_else(|_| "audit.jsonl".to_owned());

    let config = Config::new("chart-service").environment("demo").build()?;
    let guard = phi_audit::init(config, NonBlocking::new(JsonlFileSink::open(&file)?))?;
    phi_audit::flush_on_panic();

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "listening on http://{}, audit events to {file}",
        listener.local_addr()?
    );
    axum::serve(
        listener,
        app().into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;

    // Every request has finished: write what is still queued.
    guard.flush()?;
    println!("stopped; every audit event is in {file}");
    Ok(())
}
